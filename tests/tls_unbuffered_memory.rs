//! What an idle TLS connection would cost on rustls' unbuffered API
//! (`UnbufferedServerConnection`, whose caller owns the buffers, so that
//! an idle connection needs none), next to the buffered `ServerConnection`
//! the server uses: heap counted inside the server's calls only, after a
//! full handshake in memory. A measurement for the choice between the two
//! (`cargo test --test tls_unbuffered_memory -- --nocapture`).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

struct Tracking;

static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as i64, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` with the server's heap counted.
fn server<T>(f: impl FnOnce() -> T) -> T {
    COUNTED.with(|c| c.set(true));
    let r = f();
    COUNTED.with(|c| c.set(false));
    r
}

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn client_output(c: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

fn client_input(c: &mut ClientConnection, bytes: &[u8]) {
    let mut rd = bytes;
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
    }
}

/// A handshake with the unbuffered server; the buffers are the caller's
/// (here temporary: a loop would share one). Returns the server.
fn unbuffered(sc: &Arc<ServerConfig>, cc: &Arc<ClientConfig>) -> UnbufferedServerConnection {
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut conn = server(|| UnbufferedServerConnection::new(sc.clone()).unwrap());
    let mut incoming = Vec::new();
    let mut outgoing = vec![0u8; 16 << 10];
    for _ in 0..100 {
        incoming.extend(client_output(&mut client));
        let mut sent = Vec::new();
        loop {
            let (state, discard) = server(|| {
                let st = conn.process_tls_records(&mut incoming);
                let discard = st.discard;
                let state = match st.state.unwrap() {
                    ConnectionState::EncodeTlsData(mut e) => {
                        let n = e.encode(&mut outgoing).unwrap();
                        sent.extend_from_slice(&outgoing[..n]);
                        "encode"
                    }
                    ConnectionState::TransmitTlsData(t) => {
                        t.done();
                        "transmit"
                    }
                    ConnectionState::BlockedHandshake => "blocked",
                    ConnectionState::WriteTraffic(_) => "traffic",
                    other => panic!("{other:?}"),
                };
                (state, discard)
            });
            incoming.drain(..discard);
            if state == "blocked" || state == "traffic" {
                break;
            }
        }
        client_input(&mut client, &sent);
        if !client.is_handshaking() && incoming.is_empty() && !client.wants_write() {
            // The client's Finished has been processed: one echo each way.
            client.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            incoming.extend(client_output(&mut client));
            server(|| {
                let st = conn.process_tls_records(&mut incoming);
                let discard = st.discard;
                if let Ok(ConnectionState::ReadTraffic(mut r)) = st.state {
                    while let Some(rec) = r.next_record() {
                        assert!(!rec.unwrap().payload.is_empty());
                    }
                }
                discard
            });
            return conn;
        }
    }
    panic!("no handshake");
}

/// The same with the buffered server, as wsloop runs it.
fn buffered(sc: &Arc<ServerConfig>, cc: &Arc<ClientConfig>) -> ServerConnection {
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut conn = server(|| ServerConnection::new(sc.clone()).unwrap());
    for _ in 0..100 {
        let bytes = client_output(&mut client);
        let mut out = Vec::new();
        server(|| {
            let mut rd = &bytes[..];
            while !rd.is_empty() {
                conn.read_tls(&mut rd).unwrap();
                conn.process_new_packets().unwrap();
            }
            // The final read that says WouldBlock: rustls sizes its buffer
            // then (4 KiB when nothing is partial).
            let _ = conn.read_tls(&mut std::io::empty().take_would_block());
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
        });
        client_input(&mut client, &out);
        if !client.is_handshaking() && !conn.is_handshaking() && !client.wants_write() {
            return conn;
        }
    }
    panic!("no handshake");
}

trait WouldBlock {
    fn take_would_block(self) -> Blocked;
}
struct Blocked;
impl std::io::Read for Blocked {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}
impl WouldBlock for std::io::Empty {
    fn take_would_block(self) -> Blocked {
        Blocked
    }
}

#[test]
fn idle_tls_connection_heap_buffered_and_unbuffered() {
    let (sc, cc) = configs();
    const N: i64 = 100;
    // Warm-up: the configs' lazily made parts.
    let _ = buffered(&sc, &cc);
    let _ = unbuffered(&sc, &cc);
    let before = LIVE.load(Relaxed);
    let kept: Vec<_> = (0..N).map(|_| buffered(&sc, &cc)).collect();
    let buffered_per = (LIVE.load(Relaxed) - before) / N;
    server(|| drop(kept));
    let before = LIVE.load(Relaxed);
    let kept: Vec<_> = (0..N).map(|_| unbuffered(&sc, &cc)).collect();
    let unbuffered_per = (LIVE.load(Relaxed) - before) / N;
    server(|| drop(kept));
    let (bs, us) = (
        std::mem::size_of::<ServerConnection>() as i64,
        std::mem::size_of::<UnbufferedServerConnection>() as i64,
    );
    println!(
        "per idle TLS connection: ServerConnection {bs} + {buffered_per} heap = {} bytes; \
         UnbufferedServerConnection {us} + {unbuffered_per} heap = {} bytes",
        bs + buffered_per,
        us + unbuffered_per
    );
    assert!(unbuffered_per < buffered_per);
}
