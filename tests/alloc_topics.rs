//! Proof that a connection subscribed to many topics adds no heap
//! allocation per delivery: 100 topics, each published to in every round,
//! delivered in steady state without allocating. One test per file: the
//! allocation count is process-wide.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

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

/// Subscribes (binary form, with an id) and waits for the ack.
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

/// Sends `burst` in one write, then two ping round trips: the second is
/// read by the server in a later loop iteration than the publishes, so
/// their delivery is done.
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

#[test]
fn a_subscriber_of_100_topics_adds_no_allocation_per_delivery() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let config = wsloop::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        let mut server = wsloop::net::Server::bind(config).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        server.run().unwrap();
    });
    let addr = rx.recv().unwrap();
    let mut sub = open(addr, "/pubsub");
    for i in 0..100 {
        subscribe(&mut sub, &format!("t{i:02}"), i);
    }
    // One publisher publishes to every topic in each round (binary form,
    // no id: no ack).
    let mut publisher = open(addr, "/pubsub");
    let mut burst = Vec::new();
    for i in 0..100 {
        let mut req = vec![0x01, 3];
        req.extend_from_slice(format!("t{i:02}").as_bytes());
        req.extend_from_slice(&[b'z'; 16]);
        burst.extend_from_slice(&masked(&req));
    }
    // 100 deliveries of 2 + 2 + 3 + 16 bytes (the buffer made once: the
    // count is process-wide, the client's allocations count too).
    let mut got = vec![0u8; 100 * 23];
    let mut drain = |sub: &mut TcpStream| {
        sub.read_exact(&mut got).unwrap();
        assert!(
            got.chunks(23).all(|f| f[0] == 0x82 && f[2] == 0x81),
            "binary-form deliveries"
        );
    };
    round(&mut publisher, &burst);
    drain(&mut sub);
    let before = counting::allocations();
    for _ in 0..10 {
        round(&mut publisher, &burst);
        drain(&mut sub);
    }
    let allocations = counting::allocations() - before;
    println!("{allocations} heap allocations for 1,000 deliveries across 100 topics");
    assert_eq!(allocations, 0);
}
