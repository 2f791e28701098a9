//! Broadcast rooms over real sockets: fan-out correctness, isolation,
//! slow consumers under both policies, ping floods, and HTTP publish.

mod common;
use common::{http, rss, Daemon, Raw};
use std::io::Write;
use std::time::{Duration, Instant};

/// Parses "sender:seq" payloads.
fn tag(payload: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(payload).unwrap();
    let (a, b) = s.split_once(':').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn fan_out_reaches_every_other_member_once_in_order_and_rooms_do_not_leak() {
    let d = Daemon::start(&[]);
    const N: usize = 50;
    const M: usize = 20;
    let mut members: Vec<Raw> = (0..N).map(|_| Raw::open_path(d.addr, "/broadcast/one")).collect();
    let mut others: Vec<Raw> = (0..3).map(|_| Raw::open_path(d.addr, "/broadcast/two")).collect();
    for seq in 0..M {
        for (i, c) in members.iter_mut().enumerate() {
            c.send_frame(true, 1, format!("{i}:{seq}").as_bytes());
        }
    }
    others[0].send_frame(true, 1, b"only for room two");
    for (i, c) in members.iter_mut().enumerate() {
        let mut next = [0usize; N];
        for _ in 0..(N - 1) * M {
            let f = c.read_frame();
            assert_eq!(f.opcode, 1);
            let (from, seq) = tag(&f.payload);
            assert_ne!(from, i, "a sender does not get its own message by default");
            assert_eq!(seq, next[from], "per-sender order for recipient {i}");
            next[from] += 1;
        }
        // Nothing more: a ping is answered before any stray message.
        c.send_frame(true, 9, b"end");
        assert_eq!(c.read_frame().opcode, 0xA, "member {i} got more than expected");
    }
    for c in others.iter_mut().skip(1) {
        assert_eq!(c.read_frame().payload, b"only for room two");
        c.send_frame(true, 9, b"end");
        assert_eq!(c.read_frame().opcode, 0xA, "room two must not see room one");
    }
    others[0].send_frame(true, 9, b"end");
    assert_eq!(others[0].read_frame().opcode, 0xA);
}

#[test]
fn broadcast_to_sender_includes_the_sender_and_default_room() {
    let d = Daemon::start(&["--broadcast-to-sender"]);
    let mut a = Raw::open_path(d.addr, "/broadcast");
    let mut b = Raw::open_path(d.addr, "/broadcast/default");
    a.send_frame(true, 2, b"\x00\x01binary");
    for c in [&mut a, &mut b] {
        let f = c.read_frame();
        assert_eq!((f.opcode, f.payload.as_slice()), (2, &b"\x00\x01binary"[..]));
    }
}

#[test]
fn invalid_room_names_are_400() {
    let d = Daemon::start(&[]);
    for path in [
        "/broadcast/",
        "/broadcast/%FF",
        &format!("/broadcast/{}", "x".repeat(129)),
    ] {
        let mut c = Raw::connect(d.addr);
        c.send(common::REQUEST.replacen("/echo", path, 1).as_bytes());
        assert_eq!(c.read_response().0, 400, "{path}");
        c.expect_eof();
    }
    Raw::open_path(d.addr, &format!("/broadcast/{}", "x".repeat(128)));
    Raw::open_path(d.addr, "/broadcast/caf%C3%A9");
}

/// One publisher sends `count` 1 KiB messages to the room while `readers`
/// read everything and a member with a tiny receive buffer never reads.
/// The publisher stays at most about 1 MB ahead of the readers (well under
/// the 4 MiB cap the tests set), so that only the member that never reads
/// can fall behind, however fast the server fans out. Returns the slow
/// member and the readers' received counts.
fn flood_with_a_slow_member(d: &Daemon, count: usize) -> (Raw, Vec<usize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let room = "/broadcast/slow";
    let slow = Raw::open_small_rcvbuf(d.addr, room, 4096);
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let readers: Vec<_> = progress
        .iter()
        .map(|read| {
            let mut c = Raw::open_path(d.addr, room);
            let read = Arc::clone(read);
            std::thread::spawn(move || {
                for seq in 0..count {
                    let f = c.read_frame();
                    assert_eq!(
                        tag(&f.payload[..f.payload.iter().position(|&b| b == b' ').unwrap()]),
                        (0, seq)
                    );
                    read.store(seq + 1, Ordering::Relaxed);
                }
                count
            })
        })
        .collect();
    let mut publisher = Raw::open_path(d.addr, room);
    let mut batch = Vec::new();
    for seq in 0..count {
        let mut payload = format!("0:{seq} ").into_bytes();
        payload.resize(1024, b'.');
        batch.extend_from_slice(&common::masked_frame(true, 1, &payload));
        if batch.len() > 64 << 10 {
            publisher.send(&batch);
            batch.clear();
            let start = Instant::now();
            while progress.iter().any(|r| r.load(Ordering::Relaxed) + 1000 < seq) {
                assert!(start.elapsed() < common::DEADLINE, "a reader stopped reading");
                std::thread::yield_now(); // pacing the publisher, bounded by the deadline
            }
        }
    }
    publisher.send(&batch);
    let got = readers.into_iter().map(|t| t.join().unwrap()).collect();
    (slow, got)
}

#[test]
fn slow_consumer_is_closed_with_1008_and_others_get_everything() {
    let d = Daemon::start(&["--max-backpressure", "4194304"]);
    let (mut slow, got) = flood_with_a_slow_member(&d, 20_000);
    assert_eq!(got, [20_000, 20_000]);
    // The slow member now reads: what made it out, then Close 1008.
    loop {
        let f = slow.read_frame();
        if f.opcode == 8 {
            assert_eq!(f.close_code(), Some(1008));
            assert_eq!(&f.payload[2..], b"slow consumer");
            break;
        }
        assert_eq!(f.opcode, 1);
    }
    slow.send_frame(true, 8, &1008u16.to_be_bytes());
    slow.expect_eof();
}

#[test]
fn slow_consumer_under_drop_stays_connected_with_bounded_memory() {
    let mut d = Daemon::start(&["--slow-consumer", "drop", "--max-backpressure", "4194304"]);
    // (A cap well above one iteration's batch, so that the two members who
    // read everything are never counted as slow.)
    let before = rss(d.pid());
    let (mut slow, got) = flood_with_a_slow_member(&d, 20_000);
    assert_eq!(got, [20_000, 20_000]);
    let after = rss(d.pid());
    println!(
        "daemon RSS {} KiB before, {} KiB after 20 MB through a non-reading member",
        before / 1024,
        after / 1024
    );
    // 20 MB went through; the slow member may hold the cap (4 MiB) queued,
    // the others nothing by now. Bounded means: the cap and a margin for
    // the allocator, well under the traffic.
    let bound = (4 << 20) + (6 << 20);
    assert!(after < before + bound, "RSS grew by {} KiB", (after - before) / 1024);
    let drops = metric(&d, "wsloop_slow_consumer_drops_total");
    assert!(drops > 0, "messages were dropped for the slow member");
    assert!(d.alive());
    // Still connected: it gets some messages, in order; what it got and
    // what was dropped add up to what was sent.
    slow.send_frame(true, 9, b"still here?");
    let mut seqs = Vec::new();
    loop {
        let f = slow.read_frame();
        if f.opcode == 0xA {
            break;
        }
        let (_, seq) = tag(&f.payload[..f.payload.iter().position(|&b| b == b' ').unwrap()]);
        seqs.push(seq);
    }
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "in order");
    assert_eq!(seqs.len() as u64 + drops, 20_000);
}

/// One sample of a counter from `/metrics`.
fn metric(d: &Daemon, name: &str) -> u64 {
    common::metric_at(d.addr, name)
}

#[test]
fn ping_flood_without_reading_cannot_grow_server_memory() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open_small_rcvbuf(d.addr, "/echo", 4096);
    let before = rss(d.pid());
    c.stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let ping = common::masked_frame(true, 9, &[b'p'; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 512).collect();
    let start = Instant::now();
    let mut sent = 0usize;
    // 50 MB of pings would be 50 MB of pongs; the server stops reading
    // once 1 MiB of them are queued, so our writes soon stall.
    while sent < 50 << 20 && start.elapsed() < Duration::from_secs(10) {
        match c.stream.write(&burst) {
            Ok(n) => sent += n,
            // Our writes stall: the server stopped reading. Anything else
            // (a reset) is a failure, not a stall.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let after = rss(d.pid());
    println!(
        "sent {} KiB of pings; daemon RSS {} -> {} KiB",
        sent / 1024,
        before / 1024,
        after / 1024
    );
    assert!(sent < 50 << 20, "the server kept reading");
    assert!(
        after < before + (8 << 20),
        "RSS grew by {} KiB",
        (after - before) / 1024
    );
}

fn publish(d: &Daemon, room: &str, extra: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut req = format!(
        "POST /broadcast/{room} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    http(d.addr, &req)
}

#[test]
fn http_publish() {
    let d = Daemon::start(&["--publish-token", "s3cret", "--max-message-size", "1000"]);
    let mut a = Raw::open_path(d.addr, "/broadcast/news");
    let mut b = Raw::open_path(d.addr, "/broadcast/news");
    let auth = "Authorization: Bearer s3cret\r\n";

    let (status, _, body) = publish(&d, "news", auth, b"extra! extra!");
    assert_eq!((status, body.as_slice()), (202, &b"{\"recipients\":2}\n"[..]));
    for c in [&mut a, &mut b] {
        let f = c.read_frame();
        assert_eq!((f.opcode, f.payload.as_slice()), (1, &b"extra! extra!"[..]));
    }
    // Binary when not UTF-8, or when the Content-Type says so.
    publish(&d, "news", auth, b"\xff\x00");
    assert_eq!(a.read_frame().opcode, 2);
    publish(
        &d,
        "news",
        &format!("{auth}Content-Type: application/octet-stream\r\n"),
        b"abc",
    );
    assert_eq!(a.read_frame().opcode, 2);
    // An empty room has no recipients.
    assert_eq!(publish(&d, "nobody", auth, b"x").2, b"{\"recipients\":0}\n");

    assert_eq!(publish(&d, "news", "", b"x").0, 401);
    assert_eq!(publish(&d, "news", "Authorization: Bearer wrong\r\n", b"x").0, 401);
    assert_eq!(publish(&d, "news", auth, &[b'x'; 1001]).0, 413);
    let (status, _, _) = http(
        d.addr,
        format!("POST /broadcast/news HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 411);
    let (status, _, body) = http(
        d.addr,
        format!("POST /broadcast/news HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 411, "chunked bodies are refused");
    // ...as chunked (not merely for the missing Content-Length, which would
    // also be 411): the answer says what to send instead.
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("not chunked"), "{body}");

    // A body (and head) arriving one byte at a time.
    let body = "split into many segments";
    let req = format!(
        "POST /broadcast/news HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = Raw::connect(d.addr);
    for byte in req.as_bytes() {
        c.send(std::slice::from_ref(byte));
    }
    let (status, head, _) = c.read_response();
    assert_eq!(status, 202);
    assert!(!head.contains("Connection: close"), "HTTP/1.1 keeps the connection");
    assert_eq!(a.read_frame().payload, body.as_bytes());
    // ...and the connection takes a second request.
    c.send(format!("POST /broadcast/news HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\n\r\nok").as_bytes());
    assert_eq!(c.read_response().0, 202);
    assert_eq!(a.read_frame().payload, b"ok");
}

#[test]
fn presence_notices_go_only_to_those_who_ask() {
    let d = Daemon::start(&[]);
    let mut plain = Raw::open_path(d.addr, "/broadcast/chat");
    let mut ann = Raw::open_path(d.addr, "/broadcast/chat?presence=1&name=Ann");
    let text = |c: &mut Raw| String::from_utf8(c.read_frame().payload).unwrap();
    assert_eq!(
        text(&mut ann),
        r#"{"type":"presence","event":"join","name":"Ann","members":2}"#
    );
    let mut bob = Raw::open_path(d.addr, "/broadcast/chat?presence=1&name=B%C3%B6b");
    let bob_joined = r#"{"type":"presence","event":"join","name":"Böb","members":3}"#;
    assert_eq!(text(&mut ann), bob_joined);
    assert_eq!(text(&mut bob), bob_joined);
    bob.send_frame(true, 8, &common::close_payload(1000, ""));
    bob.expect_close_echo();
    assert_eq!(
        text(&mut ann),
        r#"{"type":"presence","event":"leave","name":"Böb","members":2}"#
    );
    // Messages still flow as usual, and the plain member saw no notices.
    ann.send_frame(true, 1, b"hello");
    assert_eq!(text(&mut plain), "hello");
    plain.send_frame(true, 9, b"");
    assert_eq!(plain.read_frame().opcode, 0xA);
}

/// A member that vanishes with a reset (no Close, no FIN: the server's read
/// fails rather than ends) is announced as gone all the same.
#[test]
fn presence_leave_is_announced_when_a_member_resets() {
    let d = Daemon::start(&[]);
    let mut ann = Raw::open_path(d.addr, "/broadcast/chat?presence=1&name=Ann");
    let text = |c: &mut Raw| String::from_utf8(c.read_frame().payload).unwrap();
    assert_eq!(
        text(&mut ann),
        r#"{"type":"presence","event":"join","name":"Ann","members":1}"#
    );
    let mut bob = Raw::open_path(d.addr, "/broadcast/chat?presence=1&name=Bob");
    let bob_joined = r#"{"type":"presence","event":"join","name":"Bob","members":2}"#;
    assert_eq!(text(&mut ann), bob_joined);
    // Bob has his own notice too: nothing more is being written to him, so
    // the reset is seen by a read.
    assert_eq!(text(&mut bob), bob_joined);
    let s = socket2::Socket::from(bob.stream);
    s.set_linger(Some(Duration::ZERO)).unwrap(); // close = RST
    drop(s);
    assert_eq!(
        text(&mut ann),
        r#"{"type":"presence","event":"leave","name":"Bob","members":1}"#
    );
}

#[test]
fn the_chat_page_is_served_at_the_root() {
    let d = Daemon::start(&[]);
    let (status, head, body) = http(d.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(String::from_utf8(body)
        .unwrap()
        .to_lowercase()
        .contains("<!doctype html>"));
    // An upgrade at the root still echoes.
    let mut c = Raw::open_path(d.addr, "/");
    c.send_frame(true, 1, b"echo");
    assert_eq!(c.read_frame().payload, b"echo");
}

#[test]
fn a_message_larger_than_the_backpressure_cap_reaches_every_member() {
    // Default cap 1 MiB; messages may be up to 16 MiB. A big message is not
    // a reason to call its recipients slow.
    let d = Daemon::start(&[]);
    let mut a = Raw::open_path(d.addr, "/broadcast/big");
    let mut b = Raw::open_path(d.addr, "/broadcast/big");
    let mut c = Raw::open_path(d.addr, "/broadcast/big");
    let big: Vec<u8> = (0..1_100_000u32).map(|i| (i % 251) as u8).collect();
    a.send_frame(true, 2, &big);
    for r in [&mut b, &mut c] {
        let f = r.read_frame();
        assert_eq!(f.opcode, 2, "got {:?}", &f.payload[..f.payload.len().min(20)]);
        assert!(f.payload == big);
    }
}

/// The adversarial review's repro: a member that never reads sends large
/// messages while another sends tiny ones, in the same loop iterations.
/// The non-reader's queue must keep alive only what is charged to it.
#[test]
fn a_non_reader_cannot_pin_other_peoples_large_messages() {
    const CAP: u64 = 65_536;
    let d = Daemon::start(&["--max-backpressure", "65536", "--slow-consumer", "drop"]);
    let mut m = Raw::open_small_rcvbuf(d.addr, "/broadcast/amp", 4096);
    let mut a = Raw::open_path(d.addr, "/broadcast/amp");
    // A reads and discards everything, on its own thread.
    let mut reader = a.stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
            total += n as u64;
        }
        total
    });
    // Until something is queued for M.
    let mut sent = 0;
    while metric(&d, "wsloop_queued_bytes") == 0 {
        a.send_frame(true, 2, &[b'a'; 4000]);
        sent += 1;
        assert!(sent < 10_000, "nothing ever queued");
    }
    let before = rss(d.pid());
    let big = common::masked_frame(true, 2, &vec![b'm'; 240 << 10]);
    // Once M's own queue passes its cap the server stops reading M (its
    // writes then stall): from there on only A sends.
    m.stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut m_sends, mut big_sent) = (true, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if m_sends {
            m_sends = m.stream.write_all(&big).is_ok();
            big_sent += u64::from(m_sends);
        }
        a.send_frame(true, 1, b"x");
        std::thread::sleep(Duration::from_micros(500)); // pacing, as in the repro
    }
    let after = rss(d.pid());
    let bound = 2 * (CAP * 2) + (16 << 20);
    println!(
        "RSS {} KiB before, {} KiB after 3 s of 240 KiB messages from a non-reader (bound +{} KiB); {} bytes charged, {} queued, {} big messages read",
        before / 1024,
        after / 1024,
        bound / 1024,
        metric(&d, "wsloop_memory_bytes"),
        metric(&d, "wsloop_queued_bytes"),
        metric(&d, "wsloop_messages_in_total"),
    );
    assert!(after < before + bound, "RSS grew by {} KiB", (after - before) / 1024);
    assert!(metric(&d, "wsloop_memory_bytes") < 2 * CAP);
    drop(a);
    drop(m);
    drop(d);
    // The scenario ran: M's large messages went out, and A got them.
    assert!(big_sent >= 100, "only {big_sent} large messages sent");
    assert!(drain.join().unwrap() >= 100 * (240 << 10));
}
