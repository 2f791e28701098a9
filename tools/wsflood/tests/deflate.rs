//! permessage-deflate (RFC 7692) in wsflood: short runs against the wsloop
//! daemon in each of its modes, and against raw servers that answer or
//! compress wrongly.

mod common;
use common::{wsflood, Daemon, Run};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use wsloop::proto::deflate::Compressor;
use wsloop::proto::handshake::accept_key;

const SHARED_ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn echo_json(d: &Daemon, extra: &[&str]) -> Run {
    let url = d.url("/echo");
    let mut args = vec![
        "echo",
        "--url",
        &url,
        "-c",
        "20",
        "-k",
        "2",
        "-d",
        "2",
        "--payload",
        "json",
        "--payload-sizes",
        "120,600,16384",
    ];
    args.extend_from_slice(extra);
    wsflood(&args)
}

/// The one answer the server gave (all connections alike).
fn answer_of(r: &Run) -> &serde_json::Value {
    let answers = r.value("deflate.answers").as_array().expect("a list of answers");
    assert_eq!(answers.len(), 1, "{r:?}");
    &answers[0]
}

/// Verified, compressed both ways, and the wire carries much less than the
/// payloads.
fn assert_compressed_echo(r: &Run, answer: &str) {
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.value("verification.ok"), true, "{r:?}");
    assert_eq!(r.num("deflate.agreed"), 20, "{r:?}");
    assert_eq!(r.num("deflate.declined"), 0, "{r:?}");
    assert_eq!(answer_of(r)["response"], answer, "{r:?}");
    let (sent, received) = (r.num("messages.sent"), r.num("messages.received"));
    assert!(received > 100, "{r:?}");
    assert_eq!(r.num("messages.compressed_sent"), sent, "{r:?}");
    assert_eq!(r.num("messages.compressed_received"), received, "{r:?}");
    assert!(
        r.num("messages.wire_bytes_received") * 2 < r.num("messages.bytes_received"),
        "{r:?}"
    );
    assert!(
        r.num("messages.wire_bytes_sent") * 2 < r.num("messages.bytes_sent"),
        "{r:?}"
    );
    assert_eq!(r.num("steady_state.allocations"), 0, "{r:?}");
}

#[test]
fn echo_compressed_both_ways_shared() {
    let d = Daemon::start(&["--deflate", "shared", "--deflate-threshold", "0"]);
    let r = echo_json(&d, &["--deflate"]);
    assert_compressed_echo(&r, SHARED_ANSWER);
    assert!(r.stdout.contains("answer     permessage-deflate;"), "{}", r.stdout);
}

#[test]
fn echo_compressed_both_ways_dedicated() {
    // Context takeover both ways: each connection has its own codecs.
    let d = Daemon::start(&["--deflate", "dedicated", "--deflate-threshold", "0"]);
    let r = echo_json(&d, &["--deflate"]);
    assert_compressed_echo(&r, "permessage-deflate");
    // With our own offer: no context takeover from us, a smaller server
    // window.
    let offer = "permessage-deflate; client_no_context_takeover; server_max_window_bits=10";
    let r = echo_json(&d, &["--deflate-offer", offer]);
    assert_compressed_echo(
        &r,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
    );
    assert_eq!(answer_of(&r)["client_no_context_takeover"], true);
}

#[test]
fn incompressible_payloads_and_the_server_threshold() {
    // Default server threshold (1024): 20-byte echoes come back plain,
    // 2000-byte ones compressed (the pattern does not compress, but the
    // server sends what zlib makes of it).
    let d = Daemon::start(&[]);
    let url = d.url("/echo");
    let r = wsflood(&[
        "echo",
        "--url",
        &url,
        "-c",
        "10",
        "-d",
        "1.5",
        "--payload-sizes",
        "20,2000",
        "--deflate",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let received = r.num("messages.received");
    let zipped = r.num("messages.compressed_received");
    assert!(zipped > 0 && zipped < received, "{zipped} of {received}\n{r:?}");
    assert_eq!(r.num("messages.compressed_sent"), r.num("messages.sent"));
}

#[test]
fn deflate_off_declines_and_traffic_stays_plain() {
    let d = Daemon::start(&["--deflate", "off"]);
    let r = echo_json(&d, &["--deflate"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.num("deflate.agreed"), 0, "{r:?}");
    assert_eq!(r.num("deflate.declined"), 20, "{r:?}");
    assert_eq!(r.num("messages.compressed_sent"), 0, "{r:?}");
    assert_eq!(r.num("messages.compressed_received"), 0, "{r:?}");
    assert!(r.num("messages.wire_bytes_received") > r.num("messages.bytes_received"));
}

#[test]
fn broadcast_json_is_delivered_compressed() {
    let d = Daemon::start(&["--deflate-threshold", "0"]);
    let url = d.url("/broadcast/z");
    let r = wsflood(&[
        "broadcast",
        "--url",
        &url,
        "-c",
        "50",
        "-p",
        "2",
        "--rate",
        "100",
        "-d",
        "2",
        "--payload",
        "json",
        "--payload-sizes",
        "120,5000",
        "--deflate",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let received = r.num("messages.received");
    assert!(received > 1000, "{r:?}");
    assert_eq!(r.num("messages.compressed_received"), received, "{r:?}");
    assert!(r.num("messages.wire_bytes_received") * 2 < r.num("messages.bytes_received"));
}

#[test]
fn lifetime_reconnects_without_losing_echoes() {
    let d = Daemon::start(&["--deflate", "dedicated"]);
    let url = d.url("/echo");
    let r = wsflood(&[
        "echo",
        "--url",
        &url,
        "-c",
        "40",
        "--rate",
        "50",
        "-d",
        "3",
        "--lifetime",
        "0.5",
        "--deflate",
        "--payload",
        "json",
        "-s",
        "2000",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // 40 connections living 0.5 s on average for 3 s: about 200 reconnects.
    let reconnects = r.num("lifetime.reconnects");
    assert!(reconnects > 80, "{r:?}");
    assert_eq!(r.num("connects.established"), 40 + reconnects, "{r:?}");
    assert_eq!(r.num("verification.lost"), 0, "{r:?}");
    assert_eq!(r.num("errors.total"), 0, "{r:?}");
    assert_eq!(r.num("deflate.agreed"), 40 + reconnects, "{r:?}");
}

/// RFC 7692 §7.1.2.1: a server accepts `server_max_window_bits` "by
/// including" it in the response, so an offered 15 comes back as 15 (were
/// it left out, wsflood, like Python `websockets`, would fail every
/// connection: "the response drops the server_max_window_bits offered").
#[test]
fn an_offered_server_max_window_bits_15_is_answered() {
    let d = Daemon::start(&[]);
    let r = echo_json(
        &d,
        &["--deflate-offer", "permessage-deflate; server_max_window_bits=15"],
    );
    assert_eq!(r.num("connects.established"), 20, "{r:?}");
}

// ------------------------------------------------------------ raw servers --

/// What a raw server does after its handshake answer.
#[derive(Clone, Copy)]
enum After {
    /// Nothing (the handshake answer is the test).
    Nothing,
    /// Answers every client frame with this one.
    Reply(&'static [u8]),
    /// Answers every client frame with 16 MiB and 1 byte of zeros,
    /// compressed: one byte past the client's message limit.
    Bomb,
}

/// Serves `n` connections: reads the request, answers 101 with
/// `extensions` (if any), then does `after` until the client goes.
fn raw_server(n: usize, extensions: Option<&'static str>, after: After) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((s, _)) = listener.accept() else { return };
            std::thread::spawn(move || serve(s, extensions, after));
        }
    });
    format!("ws://{addr}/echo")
}

fn serve(mut s: TcpStream, extensions: Option<&str>, after: After) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if s.read_exact(&mut byte).is_err() {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let Some(key) = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")) else {
        return;
    };
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        String::from_utf8_lossy(&accept_key(key.trim().as_bytes()))
    );
    if let Some(e) = extensions {
        resp.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    resp.push_str("\r\n");
    if s.write_all(resp.as_bytes()).is_err() {
        return;
    }
    let bomb = matches!(after, After::Bomb).then(|| {
        let mut z = Vec::new();
        Compressor::new(15, 9)
            .compress(&vec![0; (16 << 20) + 1], true, &mut z)
            .unwrap();
        let mut f = vec![0xc2, 127];
        f.extend_from_slice(&(z.len() as u64).to_be_bytes());
        f.extend_from_slice(&z);
        f
    });
    // Reads client frames (headers and payloads, to keep up); answers each.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply: &[u8] = match after {
            After::Nothing => continue,
            After::Reply(f) => f,
            After::Bomb => bomb.as_deref().unwrap_or(&[]),
        };
        if s.write_all(reply).is_err() {
            return;
        }
    }
}

fn run_echo(url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["echo", "--url", url, "-c", "3", "-d", "1", "-s", "200"];
    args.extend_from_slice(extra);
    wsflood(&args)
}

#[test]
fn answers_not_valid_for_the_offer_fail_the_handshake() {
    for (answer, offer) in [
        // Not offered at all.
        ("permessage-deflate", None),
        // Larger than offered; a parameter not offered; unknown; twice.
        (
            "permessage-deflate; server_max_window_bits=12",
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            Some("permessage-deflate"),
        ),
        ("permessage-deflate; foo", None::<&str>),
        ("permessage-deflate, permessage-deflate", None),
        ("x-webkit-deflate-frame", None),
    ] {
        let url = raw_server(3, Some(answer), After::Nothing);
        let mut extra = vec![];
        match offer {
            Some(o) => extra.extend(["--deflate-offer", o]),
            None if answer == "permessage-deflate" => {}
            None => extra.push("--deflate"),
        }
        let r = run_echo(&url, &extra);
        assert_eq!(r.code, 3, "{answer} / {offer:?}: {r:?}");
        assert_eq!(r.num("errors.handshake_invalid"), 3, "{answer}: {r:?}");
    }
}

#[test]
fn a_server_that_compresses_wrongly_fails_verification() {
    // RSV1 without the extension: the session refuses it (1002).
    let url = raw_server(3, None, After::Reply(b"\xc2\x03abc"));
    let r = run_echo(&url, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.num("verification.protocol") >= 3, "{r:?}");
    // Agreed, then data that does not inflate (1007).
    let url = raw_server(3, Some(SHARED_ANSWER), After::Reply(b"\xc2\x03\xff\xff\xff"));
    let r = run_echo(&url, &["--deflate"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.num("deflate.agreed"), 3, "{r:?}");
    assert!(r.num("messages.compressed_received") >= 3, "{r:?}");
    assert!(r.num("verification.protocol") >= 3, "{r:?}");
    // Agreed, and a bomb: 16 MiB of zeros in a few KB (1009).
    let url = raw_server(3, Some(SHARED_ANSWER), After::Bomb);
    let r = run_echo(&url, &["--deflate"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.num("verification.protocol") >= 3, "{r:?}");
}
