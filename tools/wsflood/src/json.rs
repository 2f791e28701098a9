//! `--payload json`: realistic JSON text messages (what permessage-deflate
//! is for), still checked byte for byte on arrival without keeping a copy.
//!
//! The kind of message follows its size: under 256 bytes a market ticker
//! tick, under 4 KiB a chat message, else a document (an array of product
//! records). For each payload size a table of variants is built at start
//! from a fixed seed (the same in every thread and every run: different
//! prices, users, words), each exactly that many bytes. A message is
//! variant `(src * 7 + seq) % variants` with a stamp written into three
//! fixed-width string fields at its start:
//!
//! ```text
//! {"type":"ticker","seq":"000000000042","src":"0000007","ts":"000000123456789",...
//! ```
//!
//! `seq` is the sequence number, `src` the connection (echo) or publisher
//! (broadcast) id, `ts` the send time in ns since the run started
//! (broadcast; zeros in echo). Values wrap at the field width. The stamp's
//! place depends only on the kind, so checking a message is comparing it
//! with its variant outside the stamp, and the stamp with the expected
//! digits.

use crate::payload::{size_of, Bcast};

const SEQ_DIGITS: usize = 12;
const SRC_DIGITS: usize = 7;
const TS_DIGITS: usize = 15;
/// Most variants per size; fewer for large sizes (see `VARIANT_BYTES`).
const VARIANTS: usize = 64;
/// Bytes of variants kept per size, at most (one variant at least).
const VARIANT_BYTES: usize = 4 << 20;

/// The shortest JSON payload (a ticker tick with its stamp and nothing
/// else).
pub const MIN_LEN: usize = 93;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ticker,
    Chat,
    Document,
}

impl Kind {
    fn of(len: usize) -> Kind {
        match len {
            0..256 => Kind::Ticker,
            256..4096 => Kind::Chat,
            _ => Kind::Document,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Ticker => "ticker",
            Kind::Chat => "message",
            Kind::Document => "document",
        }
    }

    /// How many optional fields a message of this kind has at most (a
    /// document's items are unbounded).
    fn max_fields(self) -> usize {
        match self {
            Kind::Ticker => 10,
            Kind::Chat => 5,
            Kind::Document => usize::MAX,
        }
    }

    /// The string field that takes up whatever length is left.
    fn tail_key(self) -> &'static str {
        match self {
            Kind::Ticker => "client_oid",
            Kind::Chat => "text",
            Kind::Document => "note",
        }
    }
}

/// The variants of one payload size.
#[derive(Debug)]
struct Table {
    len: usize,
    seq_at: usize,
    src_at: usize,
    ts_at: usize,
    /// `count` variants of `len` bytes, back to back.
    variants: Vec<u8>,
    count: usize,
}

impl Table {
    fn variant(&self, src: u32, seq: u64) -> &[u8] {
        let i = ((u64::from(src) * 7).wrapping_add(seq) % self.count as u64) as usize;
        &self.variants[i * self.len..(i + 1) * self.len]
    }

    /// Whether `got` equals `variant` outside the stamp fields.
    fn same_outside_stamp(&self, got: &[u8], variant: &[u8]) -> bool {
        got[..self.seq_at] == variant[..self.seq_at]
            && got[self.seq_at + SEQ_DIGITS..self.src_at] == variant[self.seq_at + SEQ_DIGITS..self.src_at]
            && got[self.src_at + SRC_DIGITS..self.ts_at] == variant[self.src_at + SRC_DIGITS..self.ts_at]
            && got[self.ts_at + TS_DIGITS..] == variant[self.ts_at + TS_DIGITS..]
    }
}

/// The JSON messages of a run: a table per payload size.
#[derive(Debug)]
pub struct Json {
    tables: Vec<Table>,
}

impl Json {
    /// Builds the tables; every size must be at least [`MIN_LEN`].
    pub fn new(sizes: &[usize]) -> Result<Json, String> {
        let mut tables: Vec<Table> = Vec::new();
        for &len in sizes {
            if len < MIN_LEN {
                return Err(format!(
                    "--payload json needs payloads of at least {MIN_LEN} bytes, not {len}"
                ));
            }
            if tables.iter().all(|t| t.len != len) {
                tables.push(build_table(len));
            }
        }
        Ok(Json { tables })
    }

    fn table(&self, len: usize) -> Option<&Table> {
        self.tables.iter().find(|t| t.len == len)
    }

    /// Writes message (`src`, `seq`, `ts`) of `len` bytes (one of the sizes)
    /// into `buf[..len]`.
    pub fn write(&self, buf: &mut [u8], len: usize, src: u32, seq: u64, ts: u64) {
        let Some(t) = self.table(len) else {
            return;
        };
        buf[..len].copy_from_slice(t.variant(src, seq));
        digits(&mut buf[t.seq_at..t.seq_at + SEQ_DIGITS], seq);
        digits(&mut buf[t.src_at..t.src_at + SRC_DIGITS], u64::from(src));
        digits(&mut buf[t.ts_at..t.ts_at + TS_DIGITS], ts);
    }

    /// Whether `got` is exactly echo message `seq` of connection `src`, of
    /// `len` bytes.
    pub fn echo_matches(&self, got: &[u8], len: usize, src: u32, seq: u64) -> bool {
        let Some(t) = self.table(len) else {
            return false;
        };
        got.len() == len
            && t.same_outside_stamp(got, t.variant(src, seq))
            && read_digits(&got[t.seq_at..t.seq_at + SEQ_DIGITS]) == Some(wrap(seq, SEQ_DIGITS))
            && read_digits(&got[t.src_at..t.src_at + SRC_DIGITS]) == Some(wrap(u64::from(src), SRC_DIGITS))
            && read_digits(&got[t.ts_at..t.ts_at + TS_DIGITS]) == Some(0)
    }

    /// Reads and checks a broadcast message, as
    /// [`crate::payload::read_bcast`] does for the binary pattern.
    pub fn read_bcast(&self, got: &[u8], sizes: &[usize], publishers: u32) -> Option<Bcast> {
        let t = self.table(got.len())?;
        let seq = read_digits(&got[t.seq_at..t.seq_at + SEQ_DIGITS])?;
        let publisher = u32::try_from(read_digits(&got[t.src_at..t.src_at + SRC_DIGITS])?).ok()?;
        let sent_ns = read_digits(&got[t.ts_at..t.ts_at + TS_DIGITS])?;
        if publisher >= publishers || size_of(sizes, publisher, seq) != got.len() {
            return None;
        }
        t.same_outside_stamp(got, t.variant(publisher, seq)).then_some(Bcast {
            publisher,
            seq,
            sent_ns,
        })
    }
}

fn wrap(v: u64, width: usize) -> u64 {
    v % 10u64.pow(width as u32)
}

/// Writes `v` (modulo 10^width) as zero-padded decimal over all of `out`.
fn digits(out: &mut [u8], v: u64) {
    let mut v = wrap(v, out.len());
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn read_digits(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

// ------------------------------------------------------------ generation --

/// A small generator for the content (xorshift64*), seeded per variant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }

    /// A price-like decimal around `base`, with `decimals` digits.
    fn price(&mut self, base: u64, decimals: u32) -> String {
        let scale = 10u64.pow(decimals);
        let v = base * scale + self.below(base * scale / 50 + 1);
        format!("{}.{:0w$}", v / scale, v % scale, w = decimals as usize)
    }
}

const PRODUCTS: &[&str] = &[
    "BTC-USD", "ETH-USD", "SOL-USD", "BTC-EUR", "ETH-BTC", "DOGE-USD", "ADA-USD",
];
const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar",
];
const ROOMS: &[&str] = &["general", "random", "support", "dev", "announcements", "trading"];
const WORDS: &[&str] = &[
    "the",
    "market",
    "is",
    "up",
    "today",
    "and",
    "we",
    "should",
    "look",
    "at",
    "order",
    "book",
    "depth",
    "before",
    "the",
    "next",
    "release",
    "please",
    "review",
    "my",
    "pull",
    "request",
    "when",
    "you",
    "have",
    "a",
    "minute",
    "thanks",
    "for",
    "the",
    "update",
    "latency",
    "looks",
    "better",
    "after",
    "deploy",
    "server",
    "client",
    "message",
    "compression",
    "window",
    "price",
    "volume",
    "trade",
    "buy",
    "sell",
    "meeting",
    "at",
    "noon",
    "lunch",
    "coffee",
];
const TAGS: &[&str] = &[
    "new",
    "sale",
    "eco",
    "premium",
    "bundle",
    "limited",
    "bestseller",
    "refurbished",
];
const NAMES: &[&str] = &[
    "Wireless Mouse",
    "Mechanical Keyboard",
    "USB-C Hub",
    "27-inch Monitor",
    "Laptop Stand",
    "Noise Cancelling Headphones",
    "Webcam 1080p",
    "Desk Lamp",
    "Office Chair",
    "Cable Organizer",
];

/// The next optional field of a message of `kind` (`,"key":value`), or of
/// a document's item array (`{...}` after the first, with a comma).
fn next_field(kind: Kind, i: usize, rng: &mut Rng) -> String {
    match kind {
        Kind::Ticker => match i % 10 {
            0 => format!(",\"product_id\":\"{}\"", rng.pick(PRODUCTS)),
            1 => format!(",\"price\":\"{}\"", rng.price(67_000, 2)),
            2 => format!(",\"best_bid\":\"{}\"", rng.price(67_000, 2)),
            3 => format!(",\"best_ask\":\"{}\"", rng.price(67_000, 2)),
            4 => format!(",\"side\":\"{}\"", if rng.below(2) == 0 { "buy" } else { "sell" }),
            5 => format!(",\"last_size\":\"{}\"", rng.price(0, 8)),
            6 => format!(",\"volume_24h\":\"{}\"", rng.price(12_000, 8)),
            7 => format!(",\"trade_id\":{}", 600_000_000 + rng.below(10_000_000)),
            8 => format!(
                ",\"time\":\"2024-05-01T12:{:02}:{:02}.{:06}Z\"",
                rng.below(60),
                rng.below(60),
                rng.below(1_000_000)
            ),
            _ => format!(",\"open_24h\":\"{}\"", rng.price(66_000, 2)),
        },
        Kind::Chat => {
            match i {
                0 => format!(",\"room\":\"{}\"", rng.pick(ROOMS)),
                1 => {
                    let user = rng.pick(USERS);
                    format!(",\"user\":{{\"id\":{},\"name\":\"{user}\",\"avatar\":\"https://cdn.example.com/u/{user}.png\"}}", 1000 + rng.below(9000))
                }
                2 => format!(",\"reply_to\":{}", rng.below(1_000_000)),
                3 => format!(",\"mentions\":[\"{}\",\"{}\"]", rng.pick(USERS), rng.pick(USERS)),
                _ => format!(",\"reactions\":{{\"+1\":{},\"heart\":{}}}", rng.below(20), rng.below(5)),
            }
        }
        Kind::Document => {
            let name = rng.pick(NAMES);
            let base = 20 + rng.below(500);
            format!(
                "{}{{\"id\":{},\"sku\":\"{}-{:04}\",\"name\":\"{name}\",\"price\":{},\"qty\":{},\"tags\":[\"{}\",\"{}\"],\"in_stock\":{}}}",
                if i == 0 { "" } else { "," },
                10_000 + i,
                &name[..2].to_ascii_uppercase(),
                rng.below(10_000),
                rng.price(base, 2),
                rng.below(100),
                rng.pick(TAGS),
                rng.pick(TAGS),
                rng.below(4) != 0
            )
        }
    }
}

/// Words, cut to exactly `n` bytes.
fn words(n: usize, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s.truncate(n);
    s
}

/// One message of exactly `len` bytes (at least [`MIN_LEN`]), zeros in
/// the stamp; returns it with the stamp's offsets (seq, src, ts).
fn build(len: usize, rng: &mut Rng) -> (Vec<u8>, [usize; 3]) {
    let kind = Kind::of(len);
    let mut s = format!("{{\"type\":\"{}\",\"seq\":\"", kind.name());
    let seq_at = s.len();
    s.push_str(&"0".repeat(SEQ_DIGITS));
    s.push_str("\",\"src\":\"");
    let src_at = s.len();
    s.push_str(&"0".repeat(SRC_DIGITS));
    s.push_str("\",\"ts\":\"");
    let ts_at = s.len();
    s.push_str(&"0".repeat(TS_DIGITS));
    s.push('"');
    // ,"key":"..."} at the end, the rest of the length in its value.
    let tail = format!(",\"{}\":\"\"}}", kind.tail_key());
    let (open, close) = match kind {
        Kind::Document => (",\"items\":[", "]"),
        _ => ("", ""),
    };
    let room = |s: &String, more: usize| s.len() + more + close.len() + tail.len() <= len;
    let open = if room(&s, open.len()) { open } else { "" };
    let close = if open.is_empty() { "" } else { close };
    s.push_str(open);
    let mut i = 0;
    loop {
        let f = next_field(kind, i, rng);
        if i >= kind.max_fields() || s.len() + f.len() + close.len() + tail.len() > len {
            break;
        }
        s.push_str(&f);
        i += 1;
    }
    s.push_str(close);
    let text = words(len - s.len() - tail.len(), rng);
    s.push_str(&tail[..tail.len() - 2]);
    s.push_str(&text);
    s.push_str("\"}");
    debug_assert_eq!(s.len(), len);
    (s.into_bytes(), [seq_at, src_at, ts_at])
}

fn build_table(len: usize) -> Table {
    let count = (VARIANT_BYTES / len).clamp(1, VARIANTS);
    let mut variants = Vec::with_capacity(count * len);
    let mut at = [0; 3];
    for v in 0..count {
        let mut rng = Rng((len as u64) << 20 ^ v as u64 ^ 0x9E37_79B9_7F4A_7C15);
        let (msg, offsets) = build(len, &mut rng);
        variants.extend_from_slice(&msg);
        at = offsets;
    }
    Table {
        len,
        seq_at: at[0],
        src_at: at[1],
        ts_at: at[2],
        variants,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_valid_json_and_stable() {
        let sizes = [MIN_LEN, 120, 255, 256, 600, 4095, 4096, 16 << 10, 100_000];
        let j = Json::new(&sizes).unwrap();
        for &len in &sizes {
            let mut buf = vec![0u8; len];
            j.write(&mut buf, len, 7, 42, 123_456_789);
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_else(|e| panic!("{len}: {e}"));
            assert_eq!(v["seq"], "000000000042");
            assert_eq!(v["src"], "0000007");
            assert_eq!(v["ts"], "000000123456789");
            assert_eq!(v["type"], Kind::of(len).name());
        }
        // The same tables every time (threads and runs agree).
        let again = Json::new(&sizes).unwrap();
        for (a, b) in j.tables.iter().zip(&again.tables) {
            assert_eq!(a.variants, b.variants);
        }
        assert!(Json::new(&[MIN_LEN - 1]).is_err());
        // MIN_LEN is the stamp and the tail field with nothing else.
        let (min, _) = build(MIN_LEN, &mut Rng(1));
        assert!(
            min.ends_with(b",\"client_oid\":\"\"}"),
            "{}",
            String::from_utf8_lossy(&min)
        );
        // Variants differ, and large sizes keep few.
        let t = j.table(600).unwrap();
        assert_eq!(t.count, VARIANTS);
        assert_ne!(t.variant(0, 0), t.variant(0, 1));
        assert_eq!(j.table(100_000).unwrap().count, VARIANT_BYTES / 100_000);
    }

    #[test]
    fn echo_check_catches_every_flip() {
        let j = Json::new(&[120, 700]).unwrap();
        for len in [120, 700] {
            let mut buf = vec![0u8; len];
            j.write(&mut buf, len, 3, 99, 0);
            assert!(j.echo_matches(&buf, len, 3, 99));
            assert!(!j.echo_matches(&buf, len, 3, 98));
            assert!(!j.echo_matches(&buf, len, 4, 99));
            assert!(!j.echo_matches(&buf[..len - 1], len, 3, 99));
            for i in 0..len {
                let mut bad = buf.clone();
                bad[i] ^= 0x01;
                assert!(!j.echo_matches(&bad, len, 3, 99), "flip at {i} of {len}");
            }
        }
    }

    #[test]
    fn bcast_round_trip() {
        let sizes = [120, 16 << 10];
        let j = Json::new(&sizes).unwrap();
        let len = size_of(&sizes, 2, 5);
        let mut buf = vec![0u8; len];
        j.write(&mut buf, len, 2, 5, 777);
        let b = j.read_bcast(&buf, &sizes, 3).unwrap();
        assert_eq!(
            b,
            Bcast {
                publisher: 2,
                seq: 5,
                sent_ns: 777
            }
        );
        assert_eq!(j.read_bcast(&buf, &sizes, 2), None, "unknown publisher");
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() = b']';
        assert_eq!(j.read_bcast(&bad, &sizes, 3), None, "corrupt body");
        let mut wrong_size = vec![0u8; 16 << 10];
        j.write(&mut wrong_size, 16 << 10, 2, 6, 1);
        assert_eq!(size_of(&sizes, 2, 6), 120);
        assert_eq!(j.read_bcast(&wrong_size, &sizes, 3), None, "size not that of its seq");
    }
}
