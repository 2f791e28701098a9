//! Proof that steady-state echo allocates nothing, of small messages and of
//! large ones (written in one frame with a 16-bit length): a counting
//! global allocator around the whole process (server loop on one thread, a
//! client that itself never allocates while it measures on another).
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
fn steady_state_echo_of_20_bytes_and_of_16_kib_allocates_nothing() {
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

    // A 20-byte text message (7-bit length) and a 16 KiB binary one
    // (16-bit length), on the same connection, one after the other.
    for (opcode, len, n) in [(1u8, 20usize, 20_000u64), (2, 16 << 10, 5_000)] {
        let allocations = echo_allocations(&mut s, opcode, len, n);
        println!("{allocations} heap allocations over {n} echoes of {len} bytes");
        assert_eq!(allocations, 0, "steady-state echo of {len} bytes must not allocate");
    }
}

/// Heap allocations in the process over `n` echoes of one `len`-byte
/// message, after a warm-up that lets buffers reach their steady sizes.
fn echo_allocations(s: &mut TcpStream, opcode: u8, len: usize, n: u64) -> u64 {
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let key = [1u8, 2, 3, 4];
    // The server's echo: FIN + opcode, the length unmasked, the payload.
    let mut want = vec![0x80 | opcode];
    if len < 126 {
        want.push(len as u8);
    } else {
        want.extend_from_slice(&[126, (len >> 8) as u8, len as u8]);
    }
    // The client's frame: the same header with the mask bit, the key, the
    // payload masked (RFC 6455 §5.3).
    let mut frame = want.clone();
    frame[1] |= 0x80;
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    want.extend_from_slice(&payload);
    let mut echo = vec![0u8; want.len()];
    let mut round_trip = |s: &mut TcpStream| {
        s.write_all(&frame).unwrap();
        s.read_exact(&mut echo).unwrap();
        assert!(echo == want, "the echo of {len} bytes differs");
    };
    for _ in 0..1_000 {
        round_trip(s);
    }
    let before = counting::allocations();
    for _ in 0..n {
        round_trip(s);
    }
    counting::allocations() - before
}
