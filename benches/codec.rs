//! Criterion micro-benchmarks of the sans-IO protocol core (issue 6).
//!
//! Run with `cargo bench --bench codec` (about 100 s once built). Groups:
//!
//! - `frame/decode`, `frame/encode`: one header in each length form (7-bit,
//!   16-bit, 64-bit). Client headers (masked) are decoded, server headers
//!   (unmasked) encoded, as the server does. Throughput is header bytes.
//! - `mask/apply`, `mask/portable`, `mask/bytewise`: payload masking at
//!   20 B .. 1 MiB, with the slice starting 0..3 bytes past a 16-byte-aligned
//!   address. `portable` is `apply` without its AVX2 path for long payloads.
//! - `utf8`: `Utf8Validator` over ASCII and multi-byte text, whole and in
//!   1 KiB pieces (which split code points in the multi-byte text).
//! - `handshake`: request head parse + key check, and `accept_key`, in
//!   requests per second.
//! - `echo`: one masked client message through `Session::poll` and the
//!   unmasked answer written with `frame::write`, as the server's echo does,
//!   without sockets. `poll` unmasks in place, so each iteration first copies
//!   the pristine masked frame into the input buffer (standing in for the
//!   socket read); `echo/copy_only` measures that copy alone so it can be
//!   subtracted. The buffers' relative placement is fixed (see [`FAR`]):
//!   `_aliased` shows what an unlucky placement costs on some x86 CPUs.
//! - `deflate`: permessage-deflate (RFC 7692) with a 15-bit window, per
//!   message: `compress_shared_*` / `decompress_shared` reset the stream
//!   after every message (no context takeover, Shared mode), `_takeover`
//!   keep it (Dedicated mode); `_l1`, `_l6`: zlib level (decompression reads
//!   the level-6 stream). Three corpora of distinct messages, cycled: `tick`
//!   (~120 B JSON ticker updates), `chat` (~100 B JSON chat lines) and
//!   `doc16k` (16 KiB JSON documents). The compression ratio of each corpus,
//!   mode and level is printed before its benchmark.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsloop::proto::deflate::{Compressor, Decompressor};
use wsloop::proto::frame::{self, Decoded, Opcode};
use wsloop::proto::handshake::{self, RequestParser};
use wsloop::proto::http::{HeadLimits, Progress};
use wsloop::proto::mask;
use wsloop::proto::utf8::Utf8Validator;
use wsloop::proto::{Event, Limits, Session};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Payload lengths that select the three length forms of §5.2.
const LENGTH_FORMS: [(&str, u64); 3] = [("7bit_20B", 20), ("16bit_16KiB", 16 << 10), ("64bit_1MiB", 1 << 20)];

fn bench_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for (name, len) in LENGTH_FORMS {
        let masked = frame::encode(true, Opcode::Binary, len, Some(KEY));
        let bytes = masked.as_slice().to_vec();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
            b.iter(|| match frame::decode(black_box(bytes)) {
                Ok(Decoded::Complete(h, n)) => (h.len, n),
                other => panic!("unexpected {other:?}"),
            })
        });
    }
    for (name, len) in LENGTH_FORMS {
        let n = frame::encode(true, Opcode::Binary, len, None).as_slice().len();
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", name), &len, |b, &len| {
            b.iter(|| frame::encode(true, black_box(Opcode::Binary), black_box(len), None))
        });
    }
    g.finish();
}

/// A buffer with room to start a slice at a 16-byte boundary plus `align`
/// (0..3), so that the misalignment is known.
struct Aligned {
    storage: Vec<u8>,
}

impl Aligned {
    fn new(len: usize) -> Self {
        Aligned {
            storage: vec![0x5a; len + 16],
        }
    }

    fn slice(&mut self, align: usize, len: usize) -> &mut [u8] {
        let base = self.storage.as_ptr().align_offset(16);
        &mut self.storage[base + align..base + align + len]
    }
}

fn bench_mask(c: &mut Criterion) {
    let sizes: [(&str, usize); 5] = [
        ("20B", 20),
        ("1KiB", 1 << 10),
        ("16KiB", 16 << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ];
    let mut g = c.benchmark_group("mask");
    for (name, size) in sizes {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = Aligned::new(size + 4);
        for align in 0..4 {
            g.bench_function(BenchmarkId::new("apply", format!("{name}/align{align}")), |b| {
                let s = buf.slice(align, size);
                b.iter(|| mask::apply(black_box(&mut *s), black_box(KEY), black_box(0)))
            });
        }
        // `apply` without its AVX2 path (the same on a CPU without AVX2):
        // what the wide path gains. Aligned and misaligned.
        for align in [0, 1] {
            g.bench_function(BenchmarkId::new("portable", format!("{name}/align{align}")), |b| {
                let s = buf.slice(align, size);
                b.iter(|| mask::apply_portable(black_box(&mut *s), black_box(KEY), black_box(0)))
            });
        }
        // The byte-at-a-time reference does not care about alignment; one
        // aligned and one misaligned start are enough to show that.
        for align in [0, 1] {
            g.bench_function(BenchmarkId::new("bytewise", format!("{name}/align{align}")), |b| {
                let s = buf.slice(align, size);
                b.iter(|| mask::apply_bytewise(black_box(&mut *s), black_box(KEY), black_box(0)))
            });
        }
    }
    g.finish();
}

/// Valid UTF-8 of exactly `size` bytes mixing 1-, 2-, 3- and 4-byte
/// sequences (padded with spaces at the end to reach the size).
fn multibyte_text(size: usize) -> Vec<u8> {
    let pattern = "héllo wörld — ünïcödé 日本語のテキスト 🎉🚀 κόσμε ";
    let mut s = String::with_capacity(size);
    'fill: loop {
        for ch in pattern.chars() {
            if s.len() + ch.len_utf8() > size {
                break 'fill;
            }
            s.push(ch);
        }
    }
    while s.len() < size {
        s.push(' ');
    }
    s.into_bytes()
}

fn ascii_text(size: usize) -> Vec<u8> {
    let pattern = b"The quick brown fox jumps over the lazy dog. 0123456789 ";
    pattern.iter().copied().cycle().take(size).collect()
}

fn bench_utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for (size_name, size) in [("1KiB", 1usize << 10), ("64KiB", 64 << 10)] {
        for (text_name, text) in [("ascii", ascii_text(size)), ("multibyte", multibyte_text(size))] {
            assert!(std::str::from_utf8(&text).is_ok());
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new(format!("{text_name}/whole"), size_name), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(&text)).unwrap();
                    v.finish().unwrap();
                })
            });
            if size > 1 << 10 {
                g.bench_function(BenchmarkId::new(format!("{text_name}/chunks_1KiB"), size_name), |b| {
                    b.iter(|| {
                        let mut v = Utf8Validator::new();
                        for chunk in black_box(&text).chunks(1 << 10) {
                            v.feed(chunk).unwrap();
                        }
                        v.finish().unwrap();
                    })
                });
            }
        }
    }
    g.finish();
}

/// What `wsflood` and most client libraries send (5 fields).
const MINIMAL_REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// What a desktop browser sends (12 fields).
const BROWSER_REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:9001\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench_handshake(c: &mut Criterion) {
    let limits = HeadLimits {
        max_size: 8192,
        max_fields: 100,
    };
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    for (name, req) in [("minimal", MINIMAL_REQUEST), ("browser", BROWSER_REQUEST)] {
        g.bench_function(BenchmarkId::new("parse_and_key", name), |b| {
            b.iter(|| {
                let mut p = RequestParser::new();
                let r = p.feed(&limits, black_box(req)).unwrap();
                assert_eq!(r, Progress::Complete(req.len()));
                p.request().websocket_key().unwrap()
            })
        });
    }
    g.bench_function("accept_key", |b| {
        b.iter(|| handshake::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    // The whole server-side handshake work short of the socket calls.
    let mut out = Vec::with_capacity(256);
    g.bench_function("parse_key_and_accept/minimal", |b| {
        b.iter(|| {
            let mut p = RequestParser::new();
            p.feed(&limits, black_box(MINIMAL_REQUEST)).unwrap();
            let key = p.request().websocket_key().unwrap();
            out.clear();
            handshake::write_accept(&mut out, &key);
            out.len()
        })
    });
    g.finish();
}

/// Relative placement of the source and destination of the payload copies
/// (`(dst - src) mod 4096`). On this machine's CPU (AMD Zen 3) with glibc
/// 2.36, `memcpy` of more than ~2 KiB uses `rep movsb`, which runs about 20
/// times slower when the destination is less than a cache line or so ahead
/// of the source modulo 4 KiB; glibc 2.39 avoids `rep movsb` in that case.
/// Two buffers allocated one after the other (as a server's read and write
/// buffers are) easily land there. `FAR` is the benign placement, `NEAR`
/// the aliased one.
const FAR: usize = 2048;
const NEAR: usize = 16;

/// How far past `dst` to start writing so that the written bytes lie at
/// `want` modulo 4096 from `src`.
fn pad_for(src: *const u8, dst: *const u8, want: usize) -> usize {
    want.wrapping_sub((dst as usize).wrapping_sub(src as usize)) & 4095
}

/// Buffers for one echo case, with the copies' placement fixed.
struct EchoCase {
    pristine: Vec<u8>,
    inbuf: Vec<u8>,
    /// Where the input frame starts in `inbuf`.
    at: usize,
    out: Vec<u8>,
    /// Where the answer starts in `out` (`out` keeps this many bytes of
    /// padding before it).
    out_at: usize,
}

impl EchoCase {
    fn new(opcode: Opcode, payload: &[u8], placement: usize) -> Self {
        let mut pristine = Vec::new();
        frame::write(&mut pristine, opcode, payload, Some(KEY));
        let inbuf = vec![0u8; pristine.len() + 4096];
        let at = pad_for(pristine.as_ptr(), inbuf.as_ptr(), placement);
        let mut out: Vec<u8> = Vec::with_capacity(4096 + payload.len() + 16);
        let in_payload = inbuf[at + pristine.len() - payload.len()..].as_ptr();
        let out_hdr = frame::encode(true, opcode, payload.len() as u64, None).as_slice().len();
        let out_at = pad_for(in_payload, out.as_ptr().wrapping_add(out_hdr), placement);
        out.resize(out_at, 0);
        EchoCase {
            pristine,
            inbuf,
            at,
            out,
            out_at,
        }
    }

    /// One message through the server's per-message work: copy the masked
    /// frame in (standing in for the socket read), `poll` it out as a
    /// message, write the answer frame, and `poll` again to see the input
    /// used up, as the server loop does. Returns the answer's length.
    fn echo_once(&mut self, session: &mut Session, limits: &Limits) -> usize {
        let n = self.pristine.len();
        let input = &mut self.inbuf[self.at..self.at + n];
        input.copy_from_slice(black_box(&self.pristine));
        self.out.truncate(self.out_at);
        let out = &mut self.out;
        let mut pos = 0;
        match session.handle_input(limits, input, &mut pos, out) {
            Ok(Some(Event::Message(kind, msg))) => frame::write(out, kind.opcode(), msg, None),
            other => panic!("unexpected {other:?}"),
        }
        match session.handle_input(limits, input, &mut pos, out) {
            Ok(None) => out.len() - self.out_at,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn bench_echo(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("echo");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, usize, Opcode, usize); 7] = [
        ("text/20B", 20, Opcode::Text, FAR),
        ("binary/20B", 20, Opcode::Binary, FAR),
        ("text/16KiB", 16 << 10, Opcode::Text, FAR),
        ("binary/16KiB", 16 << 10, Opcode::Binary, FAR),
        ("text/16KiB_aliased", 16 << 10, Opcode::Text, NEAR),
        ("copy_only/20B", 20, Opcode::Text, FAR),
        ("copy_only/16KiB", 16 << 10, Opcode::Text, FAR),
    ];
    for (name, size, opcode, placement) in cases {
        let payload = ascii_text(size);
        let mut case = EchoCase::new(opcode, &payload, placement);
        let mut session = Session::server();
        // Check once that the answer is the unmasked message.
        assert_eq!(case.echo_once(&mut session, &limits), case.pristine.len() - 4);
        assert_eq!(case.out[case.out_at], 0x80 | opcode as u8);
        assert_eq!(&case.out[case.out.len() - size..], &payload[..]);
        if name.starts_with("copy_only") {
            // The copy that stands in for the socket read, alone, to be
            // subtracted if wanted.
            g.bench_function(name, |b| {
                b.iter(|| {
                    let n = case.pristine.len();
                    case.inbuf[case.at..case.at + n].copy_from_slice(black_box(&case.pristine));
                })
            });
        } else {
            g.bench_function(name, |b| b.iter(|| case.echo_once(&mut session, &limits)));
        }
    }
    g.finish();
}

/// A deterministic xorshift generator for the deflate corpora.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Ticker updates of about 120 bytes, prices and times drifting.
fn ticks(n: usize) -> Vec<Vec<u8>> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let products = ["BTC-USD", "ETH-USD", "SOL-USD", "ETH-BTC"];
    (0..n as u64)
        .map(|i| {
            let product = products[r.next(4) as usize];
            let price = 60_000 + r.next(2_000);
            format!(
                r#"{{"type":"ticker","seq":{},"product":"{product}","price":"{price}.{:02}","bid":"{}.{:02}","ask":"{}.{:02}","t":"12:{:02}:{:02}.{:03}"}}"#,
                1_000_000 + i,
                r.next(100),
                price - 1,
                r.next(100),
                price + 1,
                r.next(100),
                i / 3600 % 60,
                i / 60 % 60,
                r.next(1000),
            )
            .into_bytes()
        })
        .collect()
}

/// Chat lines: a user, a room and a sentence of common words.
fn chats(n: usize) -> Vec<Vec<u8>> {
    const WORDS: [&str; 24] = [
        "the", "meeting", "is", "at", "noon", "see", "you", "there", "thanks", "for", "the", "update", "deploy",
        "went", "fine", "can", "someone", "review", "my", "patch", "lunch", "anyone", "ok", "great",
    ];
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|_| {
            let words: Vec<&str> = (0..3 + r.next(20)).map(|_| WORDS[r.next(24) as usize]).collect();
            format!(
                r#"{{"user":"{}","room":"general","text":"{}"}}"#,
                users[r.next(5) as usize],
                words.join(" ")
            )
            .into_bytes()
        })
        .collect()
}

/// 16 KiB JSON documents: order-book snapshots.
fn docs(n: usize) -> Vec<Vec<u8>> {
    let mut r = Rng(0xdead_beef_cafe_f00d);
    (0..n)
        .map(|i| {
            let mut doc = format!(r#"{{"type":"snapshot","seq":{i},"product":"BTC-USD","levels":["#);
            while doc.len() < (16 << 10) - 80 {
                let side = if r.next(2) == 0 { "bid" } else { "ask" };
                doc += &format!(
                    r#"{{"side":"{side}","price":"{}.{:02}","size":"{}.{:04}","orders":{}}},"#,
                    60_000 + r.next(2_000),
                    r.next(100),
                    r.next(10),
                    r.next(10_000),
                    1 + r.next(40)
                );
            }
            doc.pop();
            doc += "]}";
            doc.into_bytes()
        })
        .collect()
}

/// Compresses `msgs` in order with one compressor; returns it (for the
/// benchmark to go on with) and the messages' compressed forms.
fn compress_corpus(msgs: &[Vec<u8>], level: u32, nct: bool) -> (Compressor, Vec<Vec<u8>>) {
    let mut comp = Compressor::new(15, level);
    let compressed = msgs
        .iter()
        .map(|m| {
            let mut z = Vec::new();
            comp.compress(m, nct, &mut z).unwrap();
            z
        })
        .collect();
    (comp, compressed)
}

fn bench_deflate(c: &mut Criterion) {
    const MAX: usize = 1 << 20;
    let mut g = c.benchmark_group("deflate");
    g.throughput(Throughput::Elements(1));
    let corpora = [("tick", ticks(4096)), ("chat", chats(4096)), ("doc16k", docs(64))];
    let mut out = Vec::with_capacity(MAX);
    for (name, msgs) in &corpora {
        for (mode, nct) in [("shared", true), ("takeover", false)] {
            for level in [1, 6] {
                let (mut comp, compressed) = compress_corpus(msgs, level, nct);
                let plain: usize = msgs.iter().map(Vec::len).sum();
                let packed: usize = compressed.iter().map(Vec::len).sum();
                println!(
                    "deflate {name} {mode} level {level}: {:.0} B/message -> {:.0} B, ratio {:.3}",
                    plain as f64 / msgs.len() as f64,
                    packed as f64 / msgs.len() as f64,
                    packed as f64 / plain as f64
                );
                let mut i = 0;
                g.bench_function(BenchmarkId::new(format!("compress_{mode}_l{level}"), name), |b| {
                    b.iter(|| {
                        out.clear();
                        comp.compress(black_box(&msgs[i]), nct, &mut out).unwrap();
                        i = (i + 1) % msgs.len();
                    })
                });
            }
            // Decompression of the level-6 stream. A fresh decompressor
            // reads it from its start, in order; at the end of the corpus
            // it starts over (one reset per cycle).
            let (_, compressed) = compress_corpus(msgs, 6, nct);
            let mut d = Decompressor::new();
            let mut i = 0;
            g.bench_function(BenchmarkId::new(format!("decompress_{mode}"), name), |b| {
                b.iter(|| {
                    out.clear();
                    d.decompress(black_box(&compressed[i]), nct, MAX, &mut out).unwrap();
                    i += 1;
                    if i == compressed.len() {
                        i = 0;
                        d.reset();
                    }
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(40)
        // The default 100,000 bootstrap resamples take longer than the
        // measurement itself for a fast benchmark.
        .nresamples(20_000)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_frame, bench_mask, bench_utf8, bench_handshake, bench_echo, bench_deflate
}
criterion_main!(benches);
