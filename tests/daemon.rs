//! The daemon as an operator runs it: timeouts, limits, Origin checks,
//! descriptor exhaustion, graceful shutdown, health and metrics. Timeouts
//! are configured short so that each test takes well under a second of
//! waiting; every wait is a read with a deadline.

mod common;
use common::{close_payload, http, Daemon, Raw, REQUEST};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn handshake_timeout_answers_408_or_just_closes() {
    let d = Daemon::start(&["--handshake-timeout", "0.3"]);
    let start = Instant::now();
    let mut partial = Raw::connect(d.addr);
    partial.send(&REQUEST.as_bytes()[..40]);
    let mut silent = Raw::connect(d.addr);
    let (status, head, _) = partial.read_response();
    assert_eq!(status, 408, "{head}");
    partial.expect_eof();
    silent.expect_eof();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the timeout"
    );
}

#[test]
fn keepalive_pings_then_closes_a_silent_client_with_1001() {
    let d = Daemon::start(&[
        "--ping-interval",
        "0.2",
        "--idle-timeout",
        "0.5",
        "--close-timeout",
        "0.3",
    ]);
    let mut silent = Raw::open(d.addr);
    let start = Instant::now();
    let ping = silent.read_frame();
    assert_eq!(ping.opcode, 9, "{ping:?}");
    assert!(start.elapsed() >= Duration::from_millis(150));
    let close = silent.read_frame();
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert!(start.elapsed() >= Duration::from_millis(450));
    // It never answers the Close: the server drops it after the close timeout.
    silent.expect_eof();

    // A client that answers its pings outlives the idle timeout.
    let mut lively = Raw::open(d.addr);
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        let f = lively.read_frame();
        assert_eq!(f.opcode, 9, "only pings for a client that answers them: {f:?}");
        lively.send_frame(true, 0xA, &f.payload);
        pings += 1;
    }
    assert!(pings >= 3);
    lively.send_frame(true, 1, b"still here");
    loop {
        let f = lively.read_frame();
        if f.opcode != 9 {
            assert_eq!(f.payload, b"still here");
            break;
        }
    }
}

#[test]
fn max_connections_answers_503_and_recovers() {
    let d = Daemon::start(&["--max-connections", "3"]);
    let mut open: Vec<Raw> = (0..3).map(|_| Raw::open(d.addr)).collect();
    let mut extra = Raw::connect(d.addr);
    extra.send(REQUEST.as_bytes());
    let (status, head, _) = extra.read_response();
    assert_eq!(status, 503, "{head}");
    extra.expect_eof();
    // Free a slot: the next connection is admitted.
    let mut leaving = open.pop().unwrap();
    leaving.send_frame(true, 8, &close_payload(1000, ""));
    leaving.expect_close_echo();
    drop(leaving);
    // The slot frees when the server sees our FIN; until then a newcomer
    // may still get 503 (each attempt waits on a read).
    let start = Instant::now();
    let mut again = loop {
        let mut c = Raw::connect(d.addr);
        c.send(REQUEST.as_bytes());
        match c.read_response().0 {
            101 => break c,
            503 => assert!(start.elapsed() < Duration::from_secs(2), "slot never freed"),
            other => panic!("{other}"),
        }
    };
    again.send_frame(true, 1, b"in");
    assert_eq!(again.read_frame().payload, b"in");
}

#[test]
fn a_refused_connection_that_stays_is_closed_when_its_linger_ends() {
    // The server keeps a refused connection open (its 503 written, its
    // sending side shut) until the peer closes or 500 ms pass.
    let d = Daemon::start(&["--max-connections", "1"]);
    let _held = Raw::open(d.addr);
    let baseline = open_fds(d.pid());
    let mut extra = Raw::connect(d.addr);
    extra.send(REQUEST.as_bytes());
    let (status, head, _) = extra.read_response();
    assert_eq!(status, 503, "{head}");
    extra.expect_eof();
    // Read the 503 and the FIN but stay: the server still holds the
    // connection, then lets it go at the end of the linger.
    let held_for = fds_back_to(d.pid(), baseline, Duration::from_secs(5));
    assert!(
        held_for >= Duration::from_millis(300),
        "closed after {held_for:?}, before the linger ended"
    );
    println!("refused connection closed {held_for:?} after its 503");
}

#[test]
fn origin_allowlist() {
    let d = Daemon::start(&["--allow-origin", "https://good.example,https://also.example"]);
    let with_origin = |o: &str| REQUEST.replacen("\r\n\r\n", &format!("\r\nOrigin: {o}\r\n\r\n"), 1);
    for (origin, status) in [
        ("https://good.example", 101),
        ("https://also.example", 101),
        ("https://evil.example", 403),
    ] {
        let mut c = Raw::connect(d.addr);
        c.send(with_origin(origin).as_bytes());
        assert_eq!(c.read_response().0, status, "{origin}");
    }
    // No Origin (not a browser): allowed.
    Raw::open(d.addr);
}

#[test]
fn healthz_and_metrics_move_with_traffic() {
    let d = Daemon::start(&[]);
    let (status, _, body) = http(d.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    // Every scrape on one kept-alive connection, so that the gauges are
    // exact.
    let mut scraper = Raw::connect(d.addr);
    let mut metric = |name: &str| -> u64 {
        scraper.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, head, body) = scraper.read_response();
        assert_eq!(status, 200);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        assert!(!head.contains("Connection: close"), "{head}");
        let body = String::from_utf8(body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing from\n{body}"))
            .parse()
            .unwrap()
    };
    let before_in = metric("wsloop_messages_in_total");
    let before_out = metric("wsloop_messages_out_total");
    let mut c = Raw::open(d.addr);
    for _ in 0..5 {
        c.send_frame(true, 1, b"count me");
        assert_eq!(c.read_frame().payload, b"count me");
    }
    assert_eq!(metric("wsloop_messages_in_total"), before_in + 5);
    assert_eq!(metric("wsloop_messages_out_total"), before_out + 5);
    assert_eq!(metric("wsloop_connections_open"), 2, "the scraper and the echo client");
    assert_eq!(metric("wsloop_timer_entries"), 2, "one deadline per connection");
    let mut bad = Raw::connect(d.addr);
    bad.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bad.read_response().0, 404);
    assert_eq!(metric("wsloop_http_errors_total{status=\"404\"}"), 1);
    let iterations = metric("wsloop_loop_iterations_total");
    assert!(iterations > 0 && iterations < metric("wsloop_loop_iterations_total"));
}

#[test]
fn sigterm_drains_queued_messages_then_closes_1001_and_exits_0() {
    let mut d = Daemon::start(&["--shutdown-grace", "5", "--max-backpressure", "8388608"]);
    // A reader that is behind: it has ~2 MB queued for it when the
    // signal arrives, and must still get all of it before the Close.
    let mut slow = Raw::open_small_rcvbuf(d.addr, "/broadcast/drain", 4096);
    let mut publisher = Raw::open_path(d.addr, "/broadcast/drain");
    let mut echo = Raw::open(d.addr);
    const N: usize = 1500;
    let mut burst = Vec::new();
    for seq in 0..N {
        let mut payload = format!("{seq} ").into_bytes();
        payload.resize(1000, b'.');
        burst.extend_from_slice(&common::masked_frame(true, 2, &payload));
    }
    publisher.send(&burst);
    // Round trip on the publisher: the server has read the whole burst.
    publisher.send_frame(true, 9, b"sync");
    assert_eq!(publisher.read_frame().opcode, 0xA);
    echo.send_frame(true, 1, b"before the signal");
    assert_eq!(echo.read_frame().payload, b"before the signal");

    d.signal("TERM");
    for seq in 0..N {
        let f = slow.read_frame();
        assert_eq!(f.opcode, 2, "message {seq} before the close");
        assert!(f.payload.starts_with(format!("{seq} ").as_bytes()));
    }
    for mut c in [slow, publisher, echo] {
        let f = c.read_frame();
        assert_eq!(f.close_code(), Some(1001), "{f:?}");
        assert_eq!(&f.payload[2..], b"going away");
        c.send_frame(true, 8, &f.payload[..2]);
        c.expect_eof();
        // Our FIN: the server waits for it (or for the close timeout) before
        // it lets the connection go.
        drop(c);
    }
    // All closed: the daemon exits at once, well before the grace period
    // (5 s) or the close timeout (5 s) could end it.
    let start = Instant::now();
    assert_eq!(d.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    // And it no longer listens.
    assert!(TcpStream::connect(d.addr).is_err());
}

#[test]
fn a_sigterm_as_soon_as_the_daemon_says_it_listens_is_a_graceful_shutdown() {
    // "listening on" is the daemon's word that it is ready: a supervisor may
    // signal it at once. Its handlers (and their descriptors) must exist by
    // then, or SIGTERM's default action kills it (no exit 0, no shutdown
    // line) and a descriptor count taken at that moment is short by the
    // signal pipe's two, which made a test here flaky.
    // Busy threads on both cores, so that the daemon is often preempted
    // between its lines (a window of microseconds otherwise).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut spinners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let _stop_spinning = Defer(move || {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinners.drain(..).for_each(|t| t.join().unwrap());
    });
    for round in 0..20 {
        let mut d = Daemon::start(&[]);
        let sockets = open_sockets(d.pid());
        d.signal("TERM");
        assert_eq!(
            d.wait_exit(Duration::from_secs(5)),
            Some(0),
            "round {round}: killed, not shut down"
        );
        d.wait_log("shutdown complete"); // panics if the line never comes
                                         // The listener and the signal pipe's two ends.
        assert!(sockets >= 3, "round {round}: {sockets} sockets when it said it listens");
    }
}

#[test]
fn second_signal_exits_at_once() {
    // Neither the close timeout nor the grace period can end this run: only
    // the second signal can.
    let mut d = Daemon::start(&["--shutdown-grace", "30", "--close-timeout", "60"]);
    let mut stubborn = Raw::open(d.addr); // never answers the Close
    d.signal("INT");
    assert_eq!(stubborn.read_frame().close_code(), Some(1001));
    assert!(d.alive(), "still waiting for the client");
    let start = Instant::now();
    d.signal("INT");
    assert_eq!(d.wait_exit(Duration::from_secs(2)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_listener_closes_at_the_signal_and_the_grace_period_ends_the_wait() {
    let mut d = Daemon::start(&["--shutdown-grace", "0.5", "--close-timeout", "60"]);
    let mut stubborn = Raw::open(d.addr);
    let start = Instant::now();
    d.signal("TERM");
    assert_eq!(stubborn.read_frame().close_code(), Some(1001));
    // During the grace period: still running, no longer listening.
    assert!(d.alive());
    assert!(TcpStream::connect(d.addr).is_err(), "listening during the grace period");
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "exited after {waited:?}, before the grace period"
    );
}

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning_and_recovers() {
    // 64 descriptors: stdin/out/err, epoll, the listener, the signal pipe
    // and a few spare leave room for about 55 connections.
    let d = Daemon::start_with_nofile(64, &[]);
    let mut all: Vec<Raw> = Vec::new();
    for _ in 0..70 {
        // The kernel completes TCP handshakes into the backlog even when
        // the daemon cannot accept, so connect() succeeds either way.
        let mut c = Raw::connect(d.addr);
        c.send(REQUEST.as_bytes());
        all.push(c);
    }
    // Those the daemon could take answer 101 at once; the rest wait in the
    // backlog (after the first silent one, the others are checked briefly).
    let (mut held, mut waiting) = (Vec::new(), Vec::new());
    let mut patience = Duration::from_millis(300);
    for mut c in all {
        c.stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0u8; 1];
        if let Ok(1) = c.stream.peek(&mut byte) {
            c.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
            assert_eq!(c.read_response().0, 101);
            held.push(c);
        } else {
            patience = Duration::from_millis(20);
            waiting.push(c);
        }
    }
    assert!(!waiting.is_empty(), "all 70 fit in 64 descriptors?");
    assert!(held.len() > 40, "only {} accepted", held.len());
    // Meanwhile the daemon sleeps between retries instead of spinning.
    let ticks = d.cpu_ticks();
    let mut probe = [0u8; 1];
    let _ = waiting[0].stream.peek(&mut probe); // waits out its 300 ms timeout
    std::thread::sleep(Duration::from_millis(700));
    let used = d.cpu_ticks() - ticks;
    assert!(
        used <= 10,
        "daemon used {used} ticks (1/100 s) of CPU in 1 s while out of descriptors"
    );
    // Free ten descriptors: the waiting clients get in within a second.
    held.truncate(held.len() - 10);
    let start = Instant::now();
    for c in waiting.iter_mut().take(5) {
        c.stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(c.read_response().0, 101);
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn pipelined_requests_cannot_grow_server_memory() {
    let d = Daemon::start(&[]);
    let before = common::rss(d.pid());
    // Each ~30-byte request asks for the ~20 KB page: 4,000 of them would be
    // 80 MB of answers, and the client reads none of them until it is done
    // sending.
    let burst = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4000);
    let mut clients: Vec<Raw> = (0..5).map(|_| Raw::open_small_rcvbuf_http(d.addr, 4096)).collect();
    for c in clients.iter_mut() {
        c.send(burst.as_bytes());
    }
    let after = common::rss(d.pid());
    // The server answers in order until its queue passes the cap; that
    // response says `Connection: close` and is the last: then a FIN.
    for c in clients.iter_mut() {
        let mut answered = 0;
        loop {
            let (status, head, body) = c.read_response();
            assert_eq!(status, 200);
            assert!(body.starts_with(b"<!doctype html>") || body.starts_with(b"<!DOCTYPE html>"));
            answered += 1;
            if head.contains("Connection: close") {
                break;
            }
        }
        assert!((2..4000).contains(&answered), "{answered} answered");
        c.expect_eof();
    }
    println!("RSS {} -> {} KiB", before / 1024, after / 1024);
    assert!(
        after < before + (16 << 20),
        "RSS grew by {} KiB",
        (after - before) / 1024
    );
}

#[test]
fn head_sends_the_get_length_and_no_body() {
    let d = Daemon::start(&[]);
    let mut c = Raw::connect(d.addr);
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, head, _) = c.read_response_head();
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: 3\r\n"), "{head}");
    // The next bytes are the GET's response, not a body.
    let (status, _, body) = c.read_response();
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
}

#[test]
fn unfinished_messages_stay_within_the_memory_budget_then_time_out() {
    let d = Daemon::start(&["--max-memory", "33554432", "--message-timeout", "1"]);
    let before = common::rss(d.pid());
    // Eight messages of which 8 MiB arrive and the rest never does, kept
    // alive by pings: 64 MiB asked for, 32 MiB allowed.
    let fragment = common::masked_frame(false, 2, &vec![b'x'; 8 << 20]);
    let mut clients: Vec<Raw> = (0..8).map(|_| Raw::open(d.addr)).collect();
    let writers: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut s = c.stream.try_clone().unwrap();
            let f = fragment.clone();
            // A refused client's socket may be closed under its writer.
            std::thread::spawn(move || std::io::Write::write_all(&mut s, &f).is_ok())
        })
        .collect();
    for w in writers {
        assert!(w.join().unwrap(), "the server read every fragment");
    }
    // The first answer to a ping after its fragment: by then the server has
    // read the fragment (a Pong), or refused it (a Close, maybe after the
    // Pong if the ping came in the same read).
    let mut first = Vec::new();
    for c in clients.iter_mut() {
        c.send_frame(true, 9, b"alive?");
        first.push(c.read_frame());
    }
    let peak = common::rss(d.pid());
    let mut codes = Vec::new();
    for (c, f) in clients.iter_mut().zip(first) {
        let close = if f.opcode == 8 { f } else { c.read_frame() };
        codes.push(close.close_code().unwrap());
    }
    let refused = codes.iter().filter(|&&c| c == 1013).count();
    println!(
        "{refused} of 8 refused with 1013; RSS {} -> {} KiB",
        before / 1024,
        peak / 1024
    );
    assert!(refused >= 4, "{refused} refused: more than 32 MiB held");
    assert!(
        peak < before + (32 << 20) + (16 << 20),
        "RSS grew by {} KiB",
        (peak - before) / 1024
    );
    // Those held stopped growing: after the message timeout they were
    // closed with 1008 (what they held is free).
    assert!(codes.iter().all(|&c| c == 1013 || c == 1008), "{codes:?}");
    assert!(refused < 8, "some were held");
    let mut scrape = Raw::connect(d.addr);
    scrape.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8(scrape.read_response().2).unwrap();
    assert!(body.contains("\nwsloop_memory_bytes 0\n"), "{body}");
}

/// Descriptors the daemon holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Runs its closure when dropped (also when a test's assertion fails).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Sockets among the daemon's descriptors (whatever else it inherited).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn max_connections_bounds_descriptors_under_a_connection_flood() {
    // Within the listen backlog (1,024), so that no connect waits for a SYN
    // retransmission (WSLOOP_FLOOD_CLIENTS=2000 for the full figure).
    let clients: usize = std::env::var("WSLOOP_FLOOD_CLIENTS").map_or(1000, |v| v.parse().unwrap());
    let d = Daemon::start(&["--max-connections", "50"]);
    let baseline = open_fds(d.pid());
    let _held: Vec<Raw> = (0..50).map(|_| Raw::open(d.addr)).collect();
    // The clients connect and send their request; the server may refuse
    // them, but holds no more than the cap plus its margin of refused
    // connections lingering for their 503.
    let flood = std::thread::spawn({
        let addr = d.addr;
        move || {
            let mut answered = 0;
            let clients: Vec<TcpStream> = (0..clients)
                .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
                .collect();
            for mut c in clients {
                let _ = std::io::Write::write_all(&mut c, REQUEST.as_bytes());
                c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let mut head = [0u8; 12];
                if std::io::Read::read_exact(&mut c, &mut head).is_ok() && &head[9..12] == b"503" {
                    answered += 1;
                }
            }
            answered
        }
    });
    let mut peak = 0;
    while !flood.is_finished() {
        peak = peak.max(open_fds(d.pid()));
        std::thread::sleep(Duration::from_millis(5)); // sampling, not synchronisation
    }
    let refused = flood.join().unwrap();
    println!("fds: {baseline} at rest, peak {peak} with 50 held and {clients} connecting; {refused} got 503");
    assert!(peak <= baseline + 50 + 64 + 2, "peak {peak} descriptors");
    assert!(refused > 0, "some were told 503");
}

/// Waits (bounded) until the daemon holds at most `fds` descriptors;
/// returns how long that took.
fn fds_back_to(pid: u32, fds: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while open_fds(pid) > fds {
        assert!(
            start.elapsed() < within,
            "{} descriptors after {within:?}, {fds} expected",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(1)); // sampling, not synchronisation
    }
    start.elapsed()
}

#[test]
fn peers_that_leave_with_their_last_bytes_are_let_go_at_once() {
    use socket2::{Domain, Socket, Type};
    let d = Daemon::start(&[]);
    let baseline = open_fds(d.pid());
    type Client = fn(std::net::SocketAddr);
    let shapes: [(&str, Client); 3] = [
        ("upgrade, then FIN in the same segment", |addr| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.connect(&addr.into()).unwrap();
            s.set_tcp_cork(true).unwrap(); // the request and the FIN in one segment
            let mut s: TcpStream = s.into();
            std::io::Write::write_all(&mut s, REQUEST.as_bytes()).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            std::mem::forget(s); // keep our socket open: only the server may close
        }),
        ("half a frame, then a reset", |addr| {
            let mut c = Raw::open(addr);
            c.send(&common::masked_frame(true, 1, b"hello")[..4]);
            let s = Socket::from(c.stream);
            s.set_linger(Some(Duration::ZERO)).unwrap(); // close = RST
        }),
        ("half a request head, then FIN", |addr| {
            let mut s = TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut s, &REQUEST.as_bytes()[..30]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            std::mem::forget(s);
        }),
    ];
    for (shape, client) in shapes {
        for _ in 0..250 {
            client(d.addr);
        }
        let took = fds_back_to(d.pid(), baseline, Duration::from_secs(2));
        println!("{shape}: 250 connections gone within {} ms", took.as_millis());
    }
}
