//! The TLS transports without sockets: a rustls client and the server's
//! stream over in-memory pipes with a capacity, so that the socket being
//! empty or full, short reads and bytes arriving one at a time are all
//! exact. Every test runs on both: [`TlsServer`] (unbuffered rustls, what
//! the daemon uses) and [`TlsStream`] (buffered rustls, wsflood's).

use super::io::{tls_failure, Transport};
use super::tls::TlsFiles;
use super::tls_server::TlsServer;
use super::transport::TlsStream;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

/// One direction: bytes in flight, at most `cap`.
#[derive(Debug)]
struct Pipe {
    bytes: VecDeque<u8>,
    cap: usize,
    shut: bool,
}

type Shared = Rc<RefCell<Pipe>>;

fn pipe(cap: usize) -> Shared {
    Rc::new(RefCell::new(Pipe {
        bytes: VecDeque::new(),
        cap,
        shut: false,
    }))
}

/// The server's socket.
struct Mem {
    rx: Shared,
    tx: Shared,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.rx.borrow_mut();
        if p.bytes.is_empty() {
            return if p.shut {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(p.bytes.len());
        for (b, v) in buf.iter_mut().zip(p.bytes.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut p = self.tx.borrow_mut();
        assert!(!p.shut, "write after shutdown");
        let n = buf.len().min(p.cap - p.bytes.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        p.bytes.extend(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Mem {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tx.borrow_mut().shut = true;
        Ok(())
    }
}

/// A certificate for `localhost`, the server's configuration for it, and
/// a client configuration that trusts it.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "wsloop-tls-unit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
    let server = files.load().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(cert.cert.der().to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, Arc::new(client))
}

/// A server-side TLS transport under test.
trait Server: Transport + Sized {
    fn make(mem: Mem, config: Arc<ServerConfig>) -> Self;
    fn handshaking(&self) -> bool;
}

impl Server for TlsStream<Mem> {
    fn make(mem: Mem, config: Arc<ServerConfig>) -> Self {
        TlsStream::new(mem, ServerConnection::new(config).unwrap())
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

impl Server for TlsServer<Mem> {
    fn make(mem: Mem, config: Arc<ServerConfig>) -> Self {
        TlsServer::new(mem, rustls::server::UnbufferedServerConnection::new(config).unwrap())
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

/// Runs a generic test on both transports.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn unbuffered() {
                super::$name::<super::TlsServer<super::Mem>>()
            }
            #[test]
            fn buffered() {
                super::$name::<super::TlsStream<super::Mem>>()
            }
        }
    )*};
}

on_both!(
    handshake_whole_and_one_byte_at_a_time_then_data_both_ways,
    a_short_read_means_the_socket_is_empty,
    records_the_socket_did_not_take_go_out_on_flush_pending,
    what_rustls_keeps_when_the_socket_is_full_is_bounded,
    plaintext_http_fails_the_handshake_with_an_alert,
    shutdown_sends_close_notify_before_the_fin_even_when_the_socket_is_full,
    the_peers_close_notify_and_a_bare_fin_are_both_the_end,
    many_small_writes_and_vectored_writes_arrive_in_order,
    a_cut_handshake_message_then_the_end_then_shutdown,
    a_huge_handshake_in_tiny_records_is_refused,
);

/// A client and the server's stream, connected by pipes: the client writes
/// into `c2s` (unbounded) and reads `s2c` (at most `cap` in flight).
struct Pair<T> {
    client: ClientConnection,
    server: T,
    c2s: Shared,
    s2c: Shared,
}

impl<T: Server> Pair<T> {
    fn new(cap: usize) -> Pair<T> {
        let (server_config, client_config) = configs();
        let (c2s, s2c) = (pipe(usize::MAX), pipe(cap));
        let mem = Mem {
            rx: c2s.clone(),
            tx: s2c.clone(),
        };
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: ClientConnection::new(client_config, name).unwrap(),
            server: T::make(mem, server_config),
            c2s,
            s2c,
        }
    }

    /// The client encrypts `data`; returns its records.
    fn client_encrypts(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in data.chunks(16 << 10) {
            self.client.writer().write_all(piece).unwrap();
            out.extend(self.client_output());
        }
        out
    }

    /// The client's pending records, as bytes.
    fn client_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The server reads (as the loop does on a readable edge) until
    /// `WouldBlock`; returns the plaintext.
    fn server_reads(&mut self) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0; 64 << 10];
        loop {
            match self.server.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        assert!(self.c2s.borrow().bytes.is_empty(), "a short read left input behind");
                        return Ok(got);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }

    /// The client takes what the server sent and returns the plaintext.
    fn client_reads(&mut self) -> Vec<u8> {
        let bytes: Vec<u8> = self.s2c.borrow_mut().bytes.drain(..).collect();
        let mut rd = &bytes[..];
        let mut got = Vec::new();
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets().unwrap();
            let _ = self.client.reader().read_to_end(&mut got);
        }
        got
    }

    /// Runs the handshake, the client's bytes fed `step` at a time, the
    /// server reading after each.
    fn handshake(&mut self, step: usize) {
        for _ in 0..10 {
            if !self.client.is_handshaking() && !self.server.handshaking() {
                return;
            }
            let out = self.client_output();
            for chunk in out.chunks(step) {
                self.c2s.borrow_mut().bytes.extend(chunk);
                assert_eq!(self.server_reads().unwrap(), b"");
            }
            self.client_reads();
        }
        panic!("the handshake did not complete");
    }
}

fn handshake_whole_and_one_byte_at_a_time_then_data_both_ways<T: Server>() {
    for step in [usize::MAX, 1, 7] {
        let mut p = Pair::<T>::new(1 << 20);
        p.handshake(step);
        assert!(!p.server.handshaking(), "step {step}");
        p.client.writer().write_all(b"hello over TLS").unwrap();
        let out = p.client_output();
        for b in out.chunks(step) {
            p.c2s.borrow_mut().bytes.extend(b);
        }
        assert_eq!(p.server_reads().unwrap(), b"hello over TLS");
        assert_eq!(p.server.write(b"and back").unwrap(), 8);
        assert!(!p.server.has_pending());
        assert_eq!(p.client_reads(), b"and back");
    }
}

fn a_short_read_means_the_socket_is_empty<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    // Three full records and a bit: far more than one read_tls takes.
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    p.client.writer().write_all(&data).unwrap();
    let out = p.client_output();
    p.c2s.borrow_mut().bytes.extend(&out);
    let mut buf = vec![0; 64 << 10];
    let n = p.server.read(&mut buf).unwrap();
    assert_eq!(n, data.len(), "one read takes every record in the socket");
    assert!(p.c2s.borrow().bytes.is_empty());
    assert_eq!(&buf[..n], &data[..]);
    // A buffer smaller than the input: full reads until the last one.
    p.client.writer().write_all(&data).unwrap();
    let out = p.client_output();
    p.c2s.borrow_mut().bytes.extend(&out);
    let mut small = vec![0; 10_007];
    let mut got = Vec::new();
    loop {
        let n = p.server.read(&mut small).unwrap();
        got.extend_from_slice(&small[..n]);
        if n < small.len() {
            break;
        }
    }
    assert_eq!(got, data);
    assert!(p.c2s.borrow().bytes.is_empty());
}

fn records_the_socket_did_not_take_go_out_on_flush_pending<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    p.s2c.borrow_mut().cap = 1000;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if sent < data.len() {
            match p.server.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(p.server.has_pending() || sent == data.len() || p.s2c.borrow().bytes.len() < 1000);
        got.extend(p.client_reads());
        // The writable edge.
        p.server.flush_pending().unwrap();
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(got, data);
    assert!(!p.server.has_pending());
}

fn what_rustls_keeps_when_the_socket_is_full_is_bounded<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    p.s2c.borrow_mut().cap = 0;
    let data = vec![7u8; 1 << 20];
    let n = p.server.write(&data).unwrap();
    assert!(n > 0 && n <= 64 << 10, "took {n} bytes with nowhere to send them");
    assert!(p.server.has_pending());
    let e = p.server.write(&data[n..]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "nothing more while records wait");
}

fn plaintext_http_fails_the_handshake_with_an_alert<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.c2s
        .borrow_mut()
        .bytes
        .extend(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let e = p.server_reads().unwrap_err();
    let failure = tls_failure(&e).expect("a TLS failure");
    assert!(failure.during_handshake);
    let sent: Vec<u8> = p.s2c.borrow().bytes.iter().copied().collect();
    assert_eq!(sent.first(), Some(&21), "an alert record: {sent:?}");
}

fn shutdown_sends_close_notify_before_the_fin_even_when_the_socket_is_full<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    p.s2c.borrow_mut().cap = 0;
    p.server.shutdown_write().unwrap();
    assert!(p.server.has_pending());
    assert!(!p.s2c.borrow().shut, "no FIN before close_notify is out");
    p.s2c.borrow_mut().cap = 1 << 20;
    p.server.flush_pending().unwrap();
    assert!(!p.server.has_pending());
    assert!(p.s2c.borrow().shut);
    p.client_reads();
    let mut buf = [0u8; 1];
    assert_eq!(p.client.reader().read(&mut buf).unwrap(), 0, "close_notify received");
}

fn the_peers_close_notify_and_a_bare_fin_are_both_the_end<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    p.client.writer().write_all(b"last").unwrap();
    p.client.send_close_notify();
    let out = p.client_output();
    p.c2s.borrow_mut().bytes.extend(&out);
    let mut buf = vec![0; 1024];
    assert_eq!(p.server.read(&mut buf).unwrap(), 4);
    assert_eq!(p.server.read(&mut buf).unwrap(), 0);

    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    p.c2s.borrow_mut().shut = true;
    assert_eq!(p.server.read(&mut buf).unwrap(), 0);
}

fn many_small_writes_and_vectored_writes_arrive_in_order<T: Server>() {
    let mut p = Pair::<T>::new(1 << 20);
    p.handshake(usize::MAX);
    let mut want = Vec::new();
    for i in 0..300u32 {
        let piece = format!("message {i};");
        assert_eq!(p.server.write(piece.as_bytes()).unwrap(), piece.len());
        want.extend_from_slice(piece.as_bytes());
    }
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
    let parts = [&b"head"[..], &big[..], &b"tail"[..], &big[..100]];
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let n = p.server.write_vectored(&iov).unwrap();
    assert_eq!(n, parts.iter().map(|p| p.len()).sum::<usize>());
    for part in parts {
        want.extend_from_slice(part);
    }
    assert_eq!(p.client_reads(), want);
}

#[test]
fn an_idle_unbuffered_connection_holds_no_buffer() {
    let mut p = Pair::<TlsServer<Mem>>::new(1 << 20);
    p.handshake(1);
    assert_eq!(p.server.buffered(), 0, "after the handshake");
    // A large message in pieces, the server reading between them: a record
    // is cut, carried, completed.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let out = p.client_encrypts(&data);
    let mut got = Vec::new();
    for chunk in out.chunks(3000) {
        p.c2s.borrow_mut().bytes.extend(chunk);
        got.extend(p.server_reads().unwrap());
    }
    assert_eq!(got, data);
    p.server.write_all(&data).unwrap();
    assert_eq!(p.client_reads(), data);
    assert_eq!(p.server.buffered(), 0, "after a large message each way");
    // A reader with a small buffer: the rest is stashed, then handed out.
    let out = p.client_encrypts(&data);
    p.c2s.borrow_mut().bytes.extend(&out);
    let mut small = [0u8; 1000];
    assert_eq!(p.server.read(&mut small).unwrap(), 1000);
    assert!(p.server.buffered() > 0, "the rest waits");
    let mut got = small.to_vec();
    got.extend(p.server_reads().unwrap());
    assert_eq!(got, data);
    assert_eq!(p.server.buffered(), 0, "once handed out");
}

fn a_cut_handshake_message_then_the_end_then_shutdown<T: Server>() {
    // A handshake record holding the start of a handshake message: rustls
    // keeps its place in the input it has not discarded.
    let mut p = Pair::<T>::new(1 << 20);
    p.c2s
        .borrow_mut()
        .bytes
        .extend(b"\x16\x03\x01\x00\x05\x01\x00\x01\x00\x03");
    assert_eq!(p.server_reads().unwrap(), b"");
    p.c2s.borrow_mut().shut = true;
    let mut buf = [0u8; 64];
    assert_eq!(p.server.read(&mut buf).unwrap(), 0);
    p.server.shutdown_write().unwrap();
    assert!(p.s2c.borrow().shut);
    let _ = p.server.write(b"late");
}

#[test]
fn no_panic_on_a_hello_cut_anywhere_or_corrupted_then_any_call() {
    let mut hello = {
        let p = Pair::<TlsServer<Mem>>::new(1 << 20);
        let mut c = p.client;
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    };
    let len = hello.len();
    for cut in (0..len).step_by(7).chain([len - 1, len]) {
        for step in [1, 3, 1000] {
            let mut p = Pair::<TlsServer<Mem>>::new(1 << 20);
            for chunk in hello[..cut].chunks(step) {
                p.c2s.borrow_mut().bytes.extend(chunk);
                let _ = p.server_reads();
            }
            let _ = p.server.write(b"x");
            p.c2s.borrow_mut().shut = true;
            let _ = p.server_reads();
            let _ = p.server.shutdown_write();
            let _ = p.server.flush_pending();
            let _ = p.server.write(b"y");
        }
    }
    // Corrupt one byte at a time (every 5th offset), fed whole.
    for at in (0..len).step_by(5) {
        hello[at] ^= 0x5a;
        let mut p = Pair::<TlsServer<Mem>>::new(1 << 20);
        p.c2s.borrow_mut().bytes.extend(&hello);
        let _ = p.server_reads();
        let _ = p.server.write(b"x");
        let _ = p.server.shutdown_write();
        hello[at] ^= 0x5a;
    }
}

fn a_huge_handshake_in_tiny_records_is_refused<T: Server>() {
    // A ClientHello header announcing 65,000 bytes, then its body one byte
    // per record: six bytes on the wire per byte of message.
    let mut p = Pair::<T>::new(1 << 20);
    let mut wire = Vec::new();
    for b in [1u8, 0x00, 0xfd, 0xe8] {
        wire.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, b]);
    }
    for i in 0..65_000u32 {
        wire.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, i as u8]);
    }
    let mut failed = None;
    for chunk in wire.chunks(30_000) {
        p.c2s.borrow_mut().bytes.extend(chunk);
        if let Err(e) = p.server_reads() {
            failed = Some(e);
            break;
        }
        assert!(p.server.held() <= 200 << 10, "held {}", p.server.held());
    }
    let e = failed.expect("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}
