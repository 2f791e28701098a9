//! Heap used by the permessage-deflate codecs (src/proto/deflate.rs), measured
//! with a global allocator that tracks live bytes: the size of one
//! `Compressor` at each window size and of one `Decompressor` (Dedicated mode
//! keeps a pair per connection), that steady-state use allocates nothing, and
//! that a decompression bomb never holds more than the limit.
//!
//! One test only: the counters are process-wide. Run with `--nocapture` to
//! see the table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use wsloop::proto::deflate::{Compressor, Decompressor, InflateError, SharedCodec};

struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        grew(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        grew(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f`; returns its value and the live heap bytes it added.
fn heap_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Relaxed);
    let value = f();
    (value, LIVE.load(Relaxed).saturating_sub(before))
}

fn text(len: usize) -> Vec<u8> {
    let line = br#"{"type":"ticker","product_id":"BTC-USD","price":"67321.45","best_bid":"67321.44"}"#;
    line.iter().copied().cycle().take(len).collect()
}

#[test]
fn deflate_memory() {
    sizes();
    steady_state_allocates_nothing();
    bomb_holds_at_most_the_limit();
}

/// Heap per codec. The bounds are what zlib-rs 0.6 allocates (see the
/// module doc of `deflate`): they fail if an upgrade changes the layout, so
/// that the documented figures stay true.
fn sizes() {
    let msg = text(64 << 10);
    println!("window bits | Compressor B | grew compressing 64 KiB | Decompressor B");
    let mut last = 0;
    for bits in 9..=15u8 {
        let (mut c, fresh) = heap_of(|| Compressor::new(bits, 6));
        let (_, used) = heap_of(|| {
            let mut out = Vec::with_capacity(msg.len());
            c.compress(&msg, false, &mut out).unwrap();
            drop(out);
        });
        let (d, inflater) = heap_of(Decompressor::new);
        println!("{bits:11} | {fresh:12} | {used:23} | {inflater:14}");
        // 2 × 2^bits window, 2^bits × u16 chain table, 2^16 × u16 hash
        // table, 64 + 48 KiB pending and symbol buffers, ~5 KiB of state.
        let expected = (4usize << bits) + (240 << 10);
        assert!(
            fresh >= expected && fresh <= expected + (8 << 10),
            "bits {bits}: {fresh}"
        );
        assert!(fresh > last);
        last = fresh;
        assert_eq!(used, 0, "compressing allocated inside zlib");
        assert!((32 << 10..56 << 10).contains(&inflater), "{inflater}");
        drop((c, d));
    }
    let (_, shared) = heap_of(|| SharedCodec::new(6));
    assert_eq!(shared, 0);
}

/// After the first messages have sized the buffers, compressing and
/// decompressing (with and without context takeover) allocates nothing.
fn steady_state_allocates_nothing() {
    let msgs: Vec<Vec<u8>> = (0..8).map(|i| text(100 + i * 1000)).collect();
    for nct in [true, false] {
        let mut c = Compressor::new(12, 6);
        let mut d = Decompressor::new();
        let (mut z, mut out) = (Vec::new(), Vec::new());
        let mut round = |count: &mut usize| {
            for m in &msgs {
                z.clear();
                out.clear();
                let before = CALLS.load(Relaxed);
                c.compress(m, nct, &mut z).unwrap();
                d.decompress(&z, nct, 1 << 20, &mut out).unwrap();
                *count += CALLS.load(Relaxed) - before;
                assert_eq!(&out, m);
            }
        };
        let mut warm_up = 0;
        round(&mut warm_up);
        let mut steady = 0;
        for _ in 0..20 {
            round(&mut steady);
        }
        println!("no_context_takeover {nct}: {warm_up} allocations warming up, {steady} after");
        assert_eq!(steady, 0, "no_context_takeover {nct}");
    }
}

/// 16 MiB of zeros in a few KB: decompressing with a 1 MiB limit never
/// holds much more than 1 MiB of output.
fn bomb_holds_at_most_the_limit() {
    let zeros = vec![0u8; 16 << 20];
    let mut bomb = Vec::new();
    Compressor::new(15, 9).compress(&zeros, true, &mut bomb).unwrap();
    drop(zeros);
    let mut d = Decompressor::new();
    let limit = 1 << 20;
    for pieces in [bomb.len(), 1000] {
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let mut out = Vec::new();
        let result = bomb.chunks(pieces).try_for_each(|p| d.feed(p, limit, &mut out));
        let peak = PEAK.load(Relaxed) - base;
        println!(
            "bomb of {} B in {pieces} B pieces: {result:?}, peak {peak} B",
            bomb.len()
        );
        assert_eq!(result, Err(InflateError::TooLarge));
        assert!(peak <= limit + 1, "peak {peak}");
    }
}
