//! Proof that a broadcast costs the same number of heap allocations
//! whatever the number of recipients (in steady state: none).
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

const REQUEST: &[u8] = b"GET /broadcast/alloc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// Length of the server's 101 response to `REQUEST`.
const RESPONSE_LEN: usize = 129;
const PAYLOAD: [u8; 64] = [b'z'; 64];
const BROADCASTS: usize = 100;

fn open(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(REQUEST).unwrap();
    let mut head = [0u8; RESPONSE_LEN];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101 ") && head.ends_with(b"\r\n\r\n"));
    s
}

/// The recipients: connects `HOLDER_N` members, says "ready", and on any
/// input line checks that each got the broadcasts, then says "ok".
#[test]
#[ignore = "helper run by broadcast_allocations_do_not_grow_with_recipients in a child process"]
fn holder() {
    let Ok(spec) = std::env::var("HOLDER") else { return };
    let (addr, n) = spec.split_once(' ').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let mut members: Vec<TcpStream> = (0..n.parse().unwrap()).map(|_| open(addr)).collect();
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let expected: usize = line.trim().parse().unwrap();
    for m in &mut members {
        let mut frame = [0u8; 2 + 64];
        for _ in 0..expected {
            m.read_exact(&mut frame).unwrap();
            assert_eq!(frame[..2], [0x82, 64]);
            assert_eq!(frame[2..], PAYLOAD);
        }
    }
    println!("ok");
}

/// Heap allocations the server makes for `BROADCASTS` broadcasts to `n`
/// recipients, after a warm-up.
fn allocations_for(addr: SocketAddr, n: usize) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "holder", "--nocapture", "--test-threads=1"])
        .env("HOLDER", format!("{addr} {n}"))
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

    let mut sender = open(addr);
    let mut frame = [0u8; 6 + 64];
    frame[0] = 0x82;
    frame[1] = 0x80 | 64;
    frame[6..].copy_from_slice(&PAYLOAD); // mask key 0: payload unchanged
                                          // All broadcasts of a round in one write, so that the server reads them
                                          // whole (a frame split across reads costs the sender's connection a
                                          // reassembly buffer, which is noise here).
    let burst: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * BROADCASTS).collect();
    let ping = [0x89u8, 0x80, 0, 0, 0, 0];
    let mut pong = [0u8; 2];
    let mut round = |sender: &mut TcpStream, count: usize| {
        sender.write_all(&burst[..count * frame.len()]).unwrap();
        // Two ping round trips: the second is read by the server in a later
        // loop iteration than the broadcasts, so their delivery is done.
        for _ in 0..2 {
            sender.write_all(&ping).unwrap();
            sender.read_exact(&mut pong).unwrap();
            assert_eq!(pong, [0x8A, 0]);
        }
    };
    round(&mut sender, BROADCASTS); // warm-up: the room's batch buffer grows to its steady size
    let before = counting::allocations();
    round(&mut sender, BROADCASTS);
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
fn broadcast_allocations_do_not_grow_with_recipients() {
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
    let addr = rx.recv().unwrap();
    let at_10 = allocations_for(addr, 10);
    let at_10k = allocations_for(addr, 10_000);
    println!(
        "heap allocations per broadcast: {:.2} at 10 recipients, {:.2} at 10,000",
        at_10 as f64 / BROADCASTS as f64,
        at_10k as f64 / BROADCASTS as f64
    );
    assert!(
        at_10k <= at_10,
        "allocations grew with recipients: {at_10} at 10, {at_10k} at 10,000"
    );
}
