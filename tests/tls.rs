//! wss:// over real sockets: the daemon with `--tls-cert`/`--tls-key`
//! (certificates made here with rcgen, never committed), a rustls client
//! under tungstenite or driven by hand.

mod common;
use common::{rss, Daemon, DEADLINE};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A certificate for localhost and its key, in PEM files of their own.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The certificate, for clients to trust.
    der: Vec<u8>,
}

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("wsloop-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            der: Vec::new(),
        };
        c.renew();
        c
    }

    /// Writes a new certificate and key over the files.
    fn renew(&mut self) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&self.cert, made.cert.pem()).unwrap();
        std::fs::write(&self.key, made.key_pair.serialize_pem()).unwrap();
        self.der = made.cert.der().to_vec();
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A client configuration that trusts this certificate only.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(certs: &Certs, extra: &[&str]) -> Daemon {
    let mut args = certs.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    sock.set_nodelay(true).unwrap();
    sock
}

/// Connects and completes the TLS handshake.
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Tls> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut sock = tcp(addr);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// A WebSocket over TLS on `path`.
fn wss(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> WebSocket<Tls> {
    let stream = tls_connect(addr, config).unwrap();
    let url = format!("wss://localhost:{}{path}", addr.port());
    tungstenite::client(url, stream).expect("WebSocket handshake").0
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// The address of the probe listener, from the daemon's log.
fn probe_addr(d: &Daemon) -> SocketAddr {
    let line = d.wait_log("plain listener for /healthz and /metrics on ");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A metric's value from /metrics on the probe listener.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    common::metric_at(addr, name)
}

/// Reads until the server closes; a reset counts as closed. Returns what
/// arrived.
fn read_to_close(sock: &mut TcpStream) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            // A signal, not the server: read again (std::io::Read's rule).
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no close after {:?}: {e}", start.elapsed()),
        }
    }
}

#[test]
fn echo_over_wss_at_boundary_and_large_sizes_and_many_small_messages() {
    let certs = Certs::new("echo");
    let d = start(&certs, &[]);
    let config = certs.client();
    let mut ws = wss(d.addr, &config, "/echo");
    for len in [0, 1, 125, 126, 16_383, 16_384, 16_385, 65_535, 65_536, 1 << 20, 4 << 20] {
        let data = pattern(len);
        ws.send(Message::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(data), "binary of {len} bytes");
    }
    ws.send(Message::text("héllo über TLS")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo über TLS"));
    for i in 0..1000 {
        ws.write(Message::text(format!("{i:020}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..1000 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("{i:020}")));
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
}

#[test]
fn broadcast_over_wss() {
    let certs = Certs::new("broadcast");
    let d = start(&certs, &[]);
    let config = certs.client();
    let mut members: Vec<_> = (0..5).map(|_| wss(d.addr, &config, "/broadcast/tls")).collect();
    let big = pattern(100_000);
    for (i, m) in members.iter_mut().enumerate() {
        m.send(Message::text(format!("from {i}"))).unwrap();
    }
    members[0].send(Message::binary(big.clone())).unwrap();
    for (i, m) in members.iter_mut().enumerate() {
        let mut texts = Vec::new();
        let mut got_big = i == 0;
        while texts.len() < 4 || !got_big {
            match m.read().unwrap() {
                Message::Text(t) => texts.push(t.to_string()),
                Message::Binary(b) => {
                    assert_eq!(&b[..], &big[..]);
                    got_big = true;
                }
                other => panic!("{other:?}"),
            }
        }
        texts.sort();
        let want: Vec<String> = (0..5).filter(|&j| j != i).map(|j| format!("from {j}")).collect();
        assert_eq!(texts, want, "member {i}");
    }
}

/// Reads text frames until one parses as JSON with this `type`.
fn read_json(ws: &mut WebSocket<Tls>, kind: &str) -> serde_json::Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn pubsub_over_wss_reaches_subscribers_and_room_members() {
    let certs = Certs::new("pubsub");
    let d = start(&certs, &[]);
    let config = certs.client();
    let mut sub = wss(d.addr, &config, "/pubsub");
    for (id, topic) in [(1, "prices.A"), (2, "prices.B")] {
        let req = format!(r#"{{"type":"subscribe","topic":"{topic}","id":{id}}}"#);
        sub.send(Message::text(req)).unwrap();
        assert_eq!(read_json(&mut sub, "ack")["id"], id);
    }
    let mut member = wss(d.addr, &config, "/broadcast/prices.A");
    let mut publisher = wss(d.addr, &config, "/pubsub");
    for (id, topic, n) in [(7, "prices.A", 1), (8, "prices.B", 2), (9, "prices.C", 3)] {
        let req = format!(r#"{{"type":"publish","topic":"{topic}","data":{{"n":{n}}},"id":{id}}}"#);
        publisher.send(Message::text(req)).unwrap();
        assert_eq!(read_json(&mut publisher, "ack")["id"], id);
    }
    let a = read_json(&mut sub, "message");
    assert_eq!(
        (a["topic"].as_str(), a["data"]["n"].as_u64()),
        (Some("prices.A"), Some(1))
    );
    let b = read_json(&mut sub, "message");
    assert_eq!(
        (b["topic"].as_str(), b["data"]["n"].as_u64()),
        (Some("prices.B"), Some(2))
    );
    // The room member gets the bare payload of its topic only.
    assert_eq!(member.read().unwrap(), Message::text(r#"{"n":1}"#));
    member.send(Message::text("from the room")).unwrap();
    let c = read_json(&mut sub, "message");
    assert_eq!(
        (c["topic"].as_str(), c["data"].as_str()),
        (Some("prices.A"), Some("from the room"))
    );
}

#[test]
fn a_tls_handshake_sent_one_byte_at_a_time_completes() {
    let certs = Certs::new("bytewise");
    let d = start(&certs, &[]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(certs.client(), name).unwrap();
    let mut sock = tcp(d.addr);
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello");
    for b in &hello {
        sock.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let url = format!("wss://localhost:{}/echo", d.addr.port());
    let mut ws = tungstenite::client(url, StreamOwned::new(conn, sock)).unwrap().0;
    ws.send(Message::text("after a slow hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after a slow hello"));
}

#[test]
fn a_client_that_stalls_mid_handshake_is_dropped_at_the_handshake_timeout() {
    let certs = Certs::new("stall");
    // Long enough for a full TLS handshake on a loaded machine.
    let d = start(&certs, &["--handshake-timeout", "1.5", "--listen-plain", "127.0.0.1:0"]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(certs.client(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut sock = tcp(d.addr);
    sock.write_all(&hello[..hello.len() / 2]).unwrap();
    let start = Instant::now();
    let got = read_to_close(&mut sock);
    let took = start.elapsed();
    assert!(got.is_empty(), "nothing to say to half a hello: {got:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
    // A complete TLS handshake, then silence: the same deadline.
    let start = Instant::now();
    let mut stalled = tls_connect(d.addr, &certs.client()).expect("a TLS handshake within the timeout");
    let mut buf = [0u8; 64];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{e}"),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
    let probes = probe_addr(&d);
    assert_eq!(metric(probes, "wsloop_connections_open"), 1, "only the scrape is open");
}

#[test]
fn plaintext_http_to_the_tls_port_gets_an_alert_and_a_close() {
    let certs = Certs::new("plaintext");
    let d = start(&certs, &["--listen-plain", "127.0.0.1:0"]);
    let probes = probe_addr(&d);
    for request in [
        &b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n"[..],
        b"\x16\x03\x01\x00\x05hello",
        b"\x00",
    ] {
        let mut sock = tcp(d.addr);
        sock.write_all(request).unwrap();
        let start = Instant::now();
        let got = read_to_close(&mut sock);
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        if let Some(&first) = got.first() {
            assert_eq!(first, 21, "only a TLS alert may come back: {got:?}");
        }
    }
    assert_eq!(metric(probes, "wsloop_tls_handshake_failures_total"), 3);
}

#[test]
fn the_plain_listener_answers_probes_only_and_the_tls_port_serves_http_too() {
    let certs = Certs::new("probes");
    let d = start(&certs, &["--listen-plain", "127.0.0.1:0"]);
    let probes = probe_addr(&d);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(common::http(probes, get("/healthz").as_bytes()).0, 200);
    assert_eq!(common::http(probes, get("/metrics?x=1").as_bytes()).0, 200);
    assert_eq!(common::http(probes, get("/").as_bytes()).0, 404);
    assert_eq!(common::http(probes, common::REQUEST.as_bytes()).0, 404);
    let mut tls = tls_connect(d.addr, &certs.client()).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), None, "no ALPN offered, none chosen");
    tls.write_all(get("/healthz").as_bytes()).unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[test]
fn alpn_http_1_1_is_chosen_and_h2_is_not() {
    let certs = Certs::new("alpn");
    let d = start(&certs, &[]);
    let mut config = (*certs.client()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = tls_connect(d.addr, &Arc::new(config)).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut config = (*certs.client()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        tls_connect(d.addr, &Arc::new(config)).is_err(),
        "h2 only: no common protocol"
    );
}

#[test]
fn a_bad_certificate_or_key_is_a_clear_error_at_start() {
    let good = Certs::new("bad-good");
    let other = Certs::new("bad-other");
    let garbage = good.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let missing = good.dir.join("missing.pem");
    let cases = [
        (missing.clone(), good.key.clone(), "missing.pem"),
        (garbage.clone(), good.key.clone(), "garbage.pem"),
        (good.cert.clone(), garbage.clone(), "garbage.pem"),
        (good.cert.clone(), other.key.clone(), "do not make a usable pair"),
    ];
    for (cert, key, says) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("the daemon started with {cert:?} and {key:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains("cannot use the TLS certificate") && err.contains(says),
            "{err}"
        );
    }
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let mut certs = Certs::new("reload");
    let d = start(&certs, &[]);
    let old = certs.client();
    let mut open = wss(d.addr, &old, "/echo");
    certs.renew();
    let new = certs.client();
    assert!(tls_connect(d.addr, &new).is_err(), "not reloaded yet");
    d.signal("HUP");
    d.wait_log("TLS certificate reloaded");
    let mut fresh = wss(d.addr, &new, "/echo");
    assert!(
        tls_connect(d.addr, &old).is_err(),
        "new handshakes use the new certificate"
    );
    for ws in [&mut open, &mut fresh] {
        ws.send(Message::text("still here")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("still here"));
    }
    // A bad new certificate: the last good one stays.
    std::fs::write(&certs.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    d.signal("HUP");
    d.wait_log("not reloaded, keeping the old one");
    let mut again = wss(d.addr, &new, "/echo");
    again.send(Message::text("same cert")).unwrap();
    assert_eq!(again.read().unwrap(), Message::text("same cert"));
    assert_eq!(d.log_count("TLS certificate reloaded"), 1);
}

/// RSS flat over many messages (the heap proof, with large messages too,
/// is in tests/alloc_tls.rs: glibc's RSS creeps a little with large
/// messages from fragmentation while the live heap stays exactly flat).
#[test]
fn idle_tls_memory_is_flat_in_the_number_of_messages() {
    let certs = Certs::new("flat");
    let d = start(&certs, &[]);
    let config = certs.client();
    const N: usize = 100;
    let mut conns: Vec<_> = (0..N).map(|_| wss(d.addr, &config, "/echo")).collect();
    let round = |conns: &mut Vec<WebSocket<Tls>>, sizes: &[usize]| {
        for ws in conns.iter_mut() {
            for &len in sizes {
                let data = pattern(len);
                ws.send(Message::binary(data.clone())).unwrap();
                assert_eq!(ws.read().unwrap(), Message::binary(data));
            }
        }
    };
    round(&mut conns, &[20, 16 << 10, 100_000, 20]);
    std::thread::sleep(Duration::from_millis(100));
    let before = rss(d.pid());
    round(&mut conns, &[20; 300]);
    std::thread::sleep(Duration::from_millis(100));
    let after = rss(d.pid());
    let per_conn = after.saturating_sub(before) / N as u64;
    assert!(
        per_conn < 256,
        "RSS grew {per_conn} bytes per connection over 300 more messages each ({before} -> {after})"
    );
}

#[test]
fn a_tls_member_that_does_not_read_is_closed_as_a_slow_consumer() {
    let certs = Certs::new("slow");
    let d = start(
        &certs,
        &["--max-backpressure", "4194304", "--listen-plain", "127.0.0.1:0"],
    );
    let probes = probe_addr(&d);
    let config = certs.client();
    // Never reads: the kernel's buffers fill, then its queue passes the cap.
    let _slow = wss(d.addr, &config, "/broadcast/slow");
    let mut reader = wss(d.addr, &config, "/broadcast/slow");
    let mut publisher = wss(d.addr, &config, "/broadcast/slow");
    const N: usize = 2000;
    let payload = pattern(10_000);
    let want = payload.clone();
    // The publisher stays at most 100 messages (1 MB) ahead of the reader,
    // well under the cap: only the member that never reads falls behind.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = std::sync::Arc::clone(&read);
    let reading = std::thread::spawn(move || {
        for i in 0..N {
            match reader.read().unwrap() {
                Message::Binary(b) => assert_eq!(&b[..], &want[..], "message {i}"),
                other => panic!("{other:?}"),
            }
            progress.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    for i in 0..N {
        publisher.send(Message::binary(payload.clone())).unwrap();
        let start = Instant::now();
        while read.load(std::sync::atomic::Ordering::Relaxed) + 100 < i {
            assert!(start.elapsed() < DEADLINE, "the reader stopped reading");
            std::thread::yield_now(); // pacing the publisher, bounded by the deadline
        }
    }
    reading.join().unwrap();
    let start = Instant::now();
    while metric(probes, "wsloop_slow_consumer_disconnects_total") == 0 {
        assert!(start.elapsed() < DEADLINE, "the slow member was not closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(probes, "wsloop_queued_bytes") <= (4 << 20) + 20_000);
}
