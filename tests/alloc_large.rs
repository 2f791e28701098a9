//! Proof that steady-state echo of 16 KiB messages allocates nothing: a
//! counting global allocator around the whole process (server loop on one
//! thread, a client that itself never allocates on another); `alloc.rs`
//! proves the same for 20-byte messages.
//!
//! This file holds one test on purpose: the counter is process-wide.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn steady_state_echo_of_16_kib_messages_allocates_nothing() {
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

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 129];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
    assert!(head.ends_with(b"\r\n\r\n"));

    // One masked 16 KiB binary frame (header 2 + length 2 + mask 4).
    const LEN: usize = 16 << 10;
    let key = [1u8, 2, 3, 4];
    let mut payload = [0u8; LEN];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let mut frame = [0u8; 8 + LEN];
    frame[..4].copy_from_slice(&[0x82, 0x80 | 126, (LEN >> 8) as u8, LEN as u8]);
    frame[4..8].copy_from_slice(&key);
    for (i, b) in payload.iter().enumerate() {
        frame[8 + i] = b ^ key[i % 4];
    }
    let mut echo = [0u8; 4 + LEN];
    let mut round_trip = |s: &mut TcpStream| {
        s.write_all(&frame).unwrap();
        s.read_exact(&mut echo).unwrap();
        assert_eq!(&echo[..4], &[0x82, 126, (LEN >> 8) as u8, LEN as u8]);
        assert!(echo[4..] == payload);
    };
    // Warm-up: buffers reach their steady sizes.
    for _ in 0..1_000 {
        round_trip(&mut s);
    }
    const N: u64 = 5_000;
    let before = counting::allocations();
    for _ in 0..N {
        round_trip(&mut s);
    }
    let allocations = counting::allocations() - before;
    println!("{allocations} heap allocations over {N} echoes of 16 KiB");
    assert_eq!(allocations, 0, "steady-state echo must not allocate");
}
