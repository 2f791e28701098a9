//! What the kernel charges for the system call a write is made with:
//! `send` of one buffer, `writev` of the same bytes as one slice, and
//! `writev` of a 4-byte header and a payload (an echo written behind its
//! header). Each figure is a write on one end of a loopback TCP connection
//! and the `recv`s that take the bytes at the other, in one thread: the
//! loopback path runs inside the write, so the process's CPU time is the
//! kernel's work for both.
//!
//! ```text
//! cargo bench --bench write_calls             # 20 B and 16 KiB, 12 rounds
//! cargo bench --bench write_calls -- 20 30    # 20 B only, 30 rounds
//! ```
//!
//! The machine drifts by ±20 % between minutes, so the calls take turns:
//! each round runs every call once, in an order that rotates from round to
//! round, and the ratio to `send` is taken within each round. Prints, per
//! size, each call's median time and median ratio (min–max).
//!
//! wsloop writes with `send` wherever it has one slice (`Stream`'s
//! `write_vectored`), and puts an echo's header in front of its payload in
//! the read buffer so that the echo is one slice (`Hub::feed`).

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const CALLS: [&str; 3] = ["send", "writev, 1 slice", "writev, 2 slices"];
/// Writes per call per round.
const WRITES: usize = 10_000;

fn main() {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let sizes: Vec<usize> = match args.first() {
        Some(s) => vec![s.parse().expect("a size in bytes")],
        None => vec![20, 16 << 10],
    };
    let rounds: usize = args.get(1).map_or(12, |r| r.parse().expect("a number of rounds"));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_nodelay(true).unwrap();
        // A bound on a lost byte, not a pace: every read has its bytes.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    for len in sizes {
        let frame = vec![b'T'; 4 + len];
        let mut sink = vec![0u8; 4 + len + 4096];
        // times[call][round], seconds per write.
        let mut times = vec![Vec::new(); CALLS.len()];
        for round in 0..rounds {
            for i in 0..CALLS.len() {
                let call = (i + round) % CALLS.len();
                let start = cpu_time();
                for _ in 0..WRITES {
                    let n = match call {
                        0 => server.write(&frame),
                        1 => server.write_vectored(&[IoSlice::new(&frame)]),
                        _ => server.write_vectored(&[IoSlice::new(&frame[..4]), IoSlice::new(&frame[4..])]),
                    }
                    .unwrap();
                    assert_eq!(n, frame.len(), "a short write on loopback");
                    let mut got = 0;
                    while got < n {
                        got += client.read(&mut sink).unwrap();
                    }
                }
                times[call].push((cpu_time() - start) / WRITES as f64);
            }
        }
        println!("{len} B, {rounds} rounds of {WRITES} writes per call: time per write and recv; ratio to send within each round");
        for (call, name) in CALLS.iter().enumerate() {
            let mut ratios: Vec<f64> = (0..rounds).map(|r| times[call][r] / times[0][r]).collect();
            let (lo, hi) = min_max(&ratios);
            println!(
                "  {name:<17} {:>7.0} ns   {:.3} ({lo:.3}–{hi:.3})",
                median(&mut times[call].clone()) * 1e9,
                median(&mut ratios),
            );
        }
    }
}

/// This process's CPU time, user and system, in seconds.
fn cpu_time() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}
