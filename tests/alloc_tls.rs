//! What TLS costs the server in heap: allocations per echo, heap per idle
//! TLS connection, and proof that the heap does not grow with the number
//! of messages. A tracking allocator counts the server thread only (the
//! rustls client in the same process allocates too).
//!
//! Figures are printed (`cargo test --test alloc_tls -- --nocapture`).

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

struct Tracking;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// Set on the server's thread: only its heap is counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCATIONS.fetch_add(1, Relaxed);
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
            ALLOCATIONS.fetch_add(1, Relaxed);
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Lets the server's loop settle (it holds no lock the client waits on).
fn quiet() {
    std::thread::sleep(Duration::from_millis(200));
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut v = vec![0x82];
    match payload.len() {
        n if n < 126 => v.push(0x80 | n as u8),
        n if n < 65536 => {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

/// Sends a binary message and reads its echo.
fn echo(s: &mut Tls, out: &[u8], payload_len: usize, buf: &mut Vec<u8>) {
    s.write_all(out).unwrap();
    let head = if payload_len < 126 {
        2
    } else if payload_len < 65536 {
        4
    } else {
        10
    };
    buf.resize(head + payload_len, 0);
    s.read_exact(buf).unwrap();
}

#[test]
fn tls_heap_per_idle_connection_allocations_per_echo_and_no_growth() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wsloop-alloc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = wsloop::net::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, made.cert.pem()).unwrap();
    std::fs::write(&files.key, made.key_pair.serialize_pem()).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let config = wsloop::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(files),
            ..Default::default()
        };
        let mut server = wsloop::net::Server::bind(config).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        server.run().unwrap();
    });
    let addr = rx.recv().unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(made.cert.der().to_vec())).unwrap();
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect = || -> Tls {
        let mut conn = ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        let mut s = StreamOwned::new(conn, sock);
        s.write_all(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut head = [0u8; 129];
        s.read_exact(&mut head).unwrap();
        assert!(head.starts_with(b"HTTP/1.1 101 "));
        s
    };
    let mut buf = Vec::new();
    let small = frame(b"twenty bytes, exact!");
    let sizes = [20usize, 16 << 10, 100_000];
    let frames: Vec<Vec<u8>> = sizes.iter().map(|&n| frame(&vec![7u8; n])).collect();

    // Heap per idle TLS connection: handshake done, one message each way.
    let mut first = connect();
    echo(&mut first, &small, 20, &mut buf);
    quiet();
    const N: usize = 200;
    let before = LIVE.load(Relaxed);
    let mut conns: Vec<Tls> = (0..N).map(|_| connect()).collect();
    for c in &mut conns {
        echo(c, &small, 20, &mut buf);
    }
    quiet();
    let per_conn = (LIVE.load(Relaxed) - before) / N as i64;
    println!("heap per idle TLS connection: {per_conn} bytes (handshake done, one echo)");
    // rustls' unbuffered API, the loop's buffers: about 3.8 KB (the
    // buffered ServerConnection would keep 7.9 KB, its 4 KiB receive
    // buffer included).
    assert!(per_conn < 5_000, "{per_conn} bytes per idle TLS connection");

    // Allocations per echo of 20 bytes, in steady state.
    for _ in 0..1_000 {
        echo(&mut first, &small, 20, &mut buf);
    }
    const E: u64 = 5_000;
    let a = ALLOCATIONS.load(Relaxed);
    for _ in 0..E {
        echo(&mut first, &small, 20, &mut buf);
    }
    let per_echo = (ALLOCATIONS.load(Relaxed) - a) as f64 / E as f64;
    println!("allocations per TLS echo of 20 bytes: {per_echo:.2}");
    assert!(per_echo <= 4.0, "{per_echo} allocations per echo");

    // No growth with the number of messages, large ones included.
    let round = |conns: &mut Vec<Tls>, buf: &mut Vec<u8>| {
        for c in conns.iter_mut() {
            for (f, &n) in frames.iter().zip(&sizes) {
                echo(c, f, n, buf);
            }
        }
    };
    round(&mut conns, &mut buf);
    quiet();
    let before = LIVE.load(Relaxed);
    for _ in 0..10 {
        round(&mut conns, &mut buf);
    }
    quiet();
    let grew = LIVE.load(Relaxed) - before;
    println!(
        "heap after 30 more messages on each of {N} TLS connections: {grew:+} bytes ({} per connection)",
        grew / N as i64
    );
    assert!(grew.abs() < (N as i64) * 256, "{grew} bytes");
    let _ = std::fs::remove_dir_all(&dir);
}
