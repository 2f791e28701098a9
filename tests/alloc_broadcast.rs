//! Proof that a delivery to a topic costs the same number of heap
//! allocations whatever the number of recipients (in steady state: none),
//! for room members (bare frames) and `/pubsub` subscribers (enveloped
//! frames) alike. (tests/alloc_topics.rs: a connection on many topics.)
//! One test per file: the allocation count is process-wide.
//!
//! The server runs in this process under a counting allocator. The
//! recipients live in a child process (this test binary again, running the
//! ignored `holder` helper), because 10,000 of them on both ends would pass
//! the 20,000 file descriptors a process may open here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const PAYLOAD: [u8; 64] = [b'z'; 64];
const BROADCASTS: usize = 100;

fn open(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    s
}

/// A masked binary frame with a zero key (the payload goes as is).
fn masked(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Subscribes a `/pubsub` connection to `topic` (binary form, with an id)
/// and waits for the ack.
fn subscribe(s: &mut TcpStream, topic: &str, id: u32) {
    let mut req = vec![0x42];
    req.extend_from_slice(&id.to_be_bytes());
    req.push(topic.len() as u8);
    req.extend_from_slice(topic.as_bytes());
    s.write_all(&masked(&req)).unwrap();
    let ack = format!(r#"{{"type":"ack","id":{id}}}"#);
    let mut got = vec![0u8; 2 + ack.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[2..], ack.as_bytes());
}

/// What a recipient reads per broadcast in each mode.
fn expected_frame(mode: &str) -> Vec<u8> {
    match mode {
        "room" => [&[0x82u8, 64][..], &PAYLOAD].concat(),
        // The binary form: 0x81, topic length, topic, payload.
        _ => [&[0x82u8, 71, 0x81, 5][..], b"alloc", &PAYLOAD].concat(),
    }
}

/// The recipients: connects `n` members in `mode` (room: `/broadcast/alloc`;
/// pubsub: `/pubsub` subscribed to `alloc`), says "ready", and on any input
/// line checks that each got that many broadcasts, then says "ok".
#[test]
#[ignore = "helper run by the allocation tests in a child process"]
fn holder() {
    let Ok(spec) = std::env::var("HOLDER") else { return };
    let mut parts = spec.split(' ');
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let n: usize = parts.next().unwrap().parse().unwrap();
    let mode = parts.next().unwrap().to_string();
    let mut members: Vec<TcpStream> = (0..n)
        .map(|i| match mode.as_str() {
            "room" => open(addr, "/broadcast/alloc"),
            _ => {
                let mut s = open(addr, "/pubsub");
                subscribe(&mut s, "alloc", i as u32);
                s
            }
        })
        .collect();
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let expected: usize = line.trim().parse().unwrap();
    let want = expected_frame(&mode);
    for m in &mut members {
        let mut frame = vec![0u8; want.len()];
        for _ in 0..expected {
            m.read_exact(&mut frame).unwrap();
            assert_eq!(frame, want);
        }
    }
    println!("ok");
}

fn server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let config = wsloop::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_connections: 20_000,
            ..Default::default()
        };
        let mut server = wsloop::net::Server::bind(config).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        server.run().unwrap();
    });
    rx.recv().unwrap()
}

/// Sends `count` frames of `burst` in one write, then two ping round trips:
/// the second is read by the server in a later loop iteration than the
/// broadcasts, so their delivery is done.
fn round(sender: &mut TcpStream, burst: &[u8]) {
    sender.write_all(burst).unwrap();
    let ping = [0x89u8, 0x80, 0, 0, 0, 0];
    let mut pong = [0u8; 2];
    for _ in 0..2 {
        sender.write_all(&ping).unwrap();
        sender.read_exact(&mut pong).unwrap();
        assert_eq!(pong, [0x8A, 0]);
    }
}

/// Heap allocations the server makes for `BROADCASTS` broadcasts to `n`
/// recipients in `mode`, after a warm-up.
fn allocations_for(addr: SocketAddr, n: usize, mode: &str) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "holder", "--nocapture", "--test-threads=1"])
        .env("HOLDER", format!("{addr} {n} {mode}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "holder died");
    }
    // The sender is a room member: it gets nothing back by default.
    let mut sender = open(addr, "/broadcast/alloc");
    // All broadcasts of a round in one write, so that the server reads them
    // whole (a frame split across reads costs the sender's connection a
    // reassembly buffer, which is noise here).
    let burst = masked(&PAYLOAD).repeat(BROADCASTS);
    round(&mut sender, &burst); // warm-up: batches grow to their steady size
    let before = counting::allocations();
    round(&mut sender, &burst);
    let allocations = counting::allocations() - before;

    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "{}", 2 * BROADCASTS).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok", "every recipient got every broadcast");
    assert!(child.wait().unwrap().success());
    allocations
}

#[test]
fn topic_allocations_do_not_grow_with_recipients() {
    let addr = server();
    for mode in ["room", "pubsub"] {
        let at_10 = allocations_for(addr, 10, mode);
        let at_10k = allocations_for(addr, 10_000, mode);
        println!(
            "{mode}: heap allocations per broadcast: {:.2} at 10 recipients, {:.2} at 10,000",
            at_10 as f64 / BROADCASTS as f64,
            at_10k as f64 / BROADCASTS as f64
        );
        assert!(
            at_10k <= at_10,
            "{mode}: allocations grew with recipients: {at_10} at 10, {at_10k} at 10,000"
        );
    }
}
