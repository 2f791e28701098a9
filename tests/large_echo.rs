//! Large echoes over real sockets, pipelined with small ones: these tests
//! would see a frame out of place, a payload overwritten before it went
//! out, or a short write whose rest was lost or queued out of order.

mod common;
use common::{masked_frame, metric_at, Daemon, Raw};
use std::io::Write;
use std::time::Duration;

/// Message `i` of `len` bytes, its own bytes (ASCII, so valid as text).
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'a' + ((j * 7 + i * 13) % 26) as u8).collect()
}

/// Writes `messages` as masked frames from another thread (the server
/// answers while we send; neither side may wait for the other to read),
/// calls `before_reading`, and reads back one frame per message: the echo,
/// or the pong of a ping.
fn echo_all(c: &mut Raw, messages: &[(u8, Vec<u8>)], before_reading: impl FnOnce()) {
    let bytes: Vec<u8> = messages.iter().flat_map(|(op, p)| masked_frame(true, *op, p)).collect();
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    before_reading();
    for (i, (opcode, p)) in messages.iter().enumerate() {
        let f = c.read_frame();
        let want = if *opcode == 9 { 10 } else { *opcode };
        assert_eq!((f.fin, f.opcode, f.payload.len()), (true, want, p.len()), "message {i}");
        assert!(f.payload == *p, "message {i}: other bytes");
    }
    writer.join().unwrap();
}

#[test]
fn pipelined_small_and_large_echoes_come_back_exact_and_in_order() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open(d.addr);
    // Many per read, pings between them, and a few past the read buffer
    // (gathered over reads).
    let sizes = [
        20, 1_024, 1_023, 3_000, 0, 16_384, 5, 2_048, 125, 126, 65_535, 1_500, 70_000,
    ];
    let messages: Vec<(u8, Vec<u8>)> = (0..400)
        .map(|i| {
            let len = sizes[i % sizes.len()];
            match i % 7 {
                3 => (9, payload(i, len.min(125))),
                4 => (1, payload(i, len)),
                _ => (2, payload(i, len)),
            }
        })
        .collect();
    echo_all(&mut c, &messages, || {});
}

#[test]
fn a_peer_that_reads_late_gets_every_byte_in_order() {
    let d = Daemon::start(&[]);
    // A small receive window: the server's writes are cut short long before
    // all is sent, and the rest waits in its queue.
    let mut c = Raw::open_small_rcvbuf(d.addr, "/echo", 4096);
    // Mostly just over 1 KiB: many echoes per write, so that where a write
    // is cut short, many frames are left to queue.
    let sizes = [1_024, 1_500, 20, 2_000, 1_100, 16_384, 1_024, 3_000, 60_000];
    let messages: Vec<(u8, Vec<u8>)> = (0..1_000).map(|i| (2, payload(i, sizes[i % sizes.len()]))).collect();
    // Nothing is read until the server has output queued.
    echo_all(&mut c, &messages, || {
        let mut queued = 0;
        for _ in 0..100 {
            queued = metric_at(d.addr, "wsloop_queued_bytes");
            if queued > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(queued > 0, "a short write left output queued");
    });
}

#[test]
fn large_echoes_one_per_read() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open(d.addr);
    // One message per read: each echo alone in its write.
    for (i, len) in [1_023, 1_024, 1_025, 16_384, 65_535, 65_536 - 14]
        .into_iter()
        .enumerate()
    {
        let p = payload(i, len);
        c.send_frame(true, 2, &p);
        let f = c.read_frame();
        assert_eq!((f.opcode, f.payload.len()), (2, len));
        assert!(f.payload == p, "echo of {len} bytes");
    }
}
