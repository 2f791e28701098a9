//! Message payloads: a pseudo-random filler shared by every thread, with a
//! small stamp written over its start so that each message is unique and
//! can be checked byte for byte on arrival without keeping a copy.
//!
//! - Echo: `[connection id: u32 LE][sequence: u64 LE]`, then filler (cut
//!   short for payloads under 12 bytes). The send time stays in the
//!   connection's ring of outstanding messages.
//! - Broadcast: `[publisher id: u32 LE][sequence: u64 LE][send time: u64 LE,
//!   ns since the run started]`, then filler; payloads are at least 20 bytes.

/// Bytes of the echo stamp.
pub const ECHO_STAMP: usize = 12;
/// Bytes of the broadcast header.
pub const BCAST_HEADER: usize = 20;

/// The filler: the same `len` bytes in every thread and every run.
pub fn filler(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The size of message `seq` of connection or publisher `id`: the sizes are
/// cycled, starting at a different one for each id.
pub fn size_of(sizes: &[usize], id: u32, seq: u64) -> usize {
    sizes[((u64::from(id) + seq) % sizes.len() as u64) as usize]
}

pub fn echo_stamp(id: u32, seq: u64) -> [u8; ECHO_STAMP] {
    let mut s = [0u8; ECHO_STAMP];
    s[..4].copy_from_slice(&id.to_le_bytes());
    s[4..].copy_from_slice(&seq.to_le_bytes());
    s
}

/// Writes the echo stamp over the start of `buf` (as much as fits in `len`).
pub fn stamp_echo(buf: &mut [u8], len: usize, id: u32, seq: u64) {
    let s = echo_stamp(id, seq);
    let n = len.min(ECHO_STAMP);
    buf[..n].copy_from_slice(&s[..n]);
}

/// Whether `got` is exactly echo message `seq` of connection `id`.
pub fn echo_matches(got: &[u8], filler: &[u8], len: usize, id: u32, seq: u64) -> bool {
    if got.len() != len {
        return false;
    }
    let s = echo_stamp(id, seq);
    let n = len.min(ECHO_STAMP);
    got[..n] == s[..n] && got[n..] == filler[n..len]
}

pub fn stamp_bcast(buf: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    buf[..4].copy_from_slice(&publisher.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    buf[12..20].copy_from_slice(&sent_ns.to_le_bytes());
}

/// A broadcast message as read back: who sent it, its sequence number and
/// when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bcast {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Reads and checks a broadcast payload: the header must name one of
/// `publishers`, and the length and filler must be those that publisher
/// sent for that sequence number.
pub fn read_bcast(got: &[u8], filler: &[u8], sizes: &[usize], publishers: u32) -> Option<Bcast> {
    if got.len() < BCAST_HEADER {
        return None;
    }
    let publisher = u32::from_le_bytes(got[..4].try_into().ok()?);
    let seq = u64::from_le_bytes(got[4..12].try_into().ok()?);
    let sent_ns = u64::from_le_bytes(got[12..20].try_into().ok()?);
    if publisher >= publishers || got.len() != size_of(sizes, publisher, seq) {
        return None;
    }
    if got[BCAST_HEADER..] != filler[BCAST_HEADER..got.len()] {
        return None;
    }
    Some(Bcast {
        publisher,
        seq,
        sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_stable_and_not_periodic() {
        let f = filler(4096);
        assert_eq!(f, filler(4096));
        assert_eq!(&filler(10)[..], &f[..10]);
        assert_ne!(f[..256], f[256..512]);
    }

    #[test]
    fn echo_round_trip_and_every_flip_is_caught() {
        let f = filler(64);
        for len in [0, 1, 11, 12, 13, 64] {
            let mut buf = f.clone();
            stamp_echo(&mut buf, len, 7, 42);
            let msg = buf[..len].to_vec();
            assert!(echo_matches(&msg, &f, len, 7, 42));
            assert!(len < 5 || !echo_matches(&msg, &f, len, 7, 43));
            for i in 0..len {
                let mut bad = msg.clone();
                bad[i] ^= 0x01;
                assert!(!echo_matches(&bad, &f, len, 7, 42), "flip at {i} of {len}");
            }
            assert!(!echo_matches(&msg[..len.saturating_sub(1)], &f, len, 7, 42) || len == 0);
        }
    }

    #[test]
    fn bcast_round_trip() {
        let sizes = [20, 100];
        let f = filler(100);
        let mut buf = f.clone();
        let len = size_of(&sizes, 3, 10);
        assert_eq!(len, 100);
        stamp_bcast(&mut buf, 3, 10, 123_456);
        let b = read_bcast(&buf[..len], &f, &sizes, 4).unwrap();
        assert_eq!(
            b,
            Bcast {
                publisher: 3,
                seq: 10,
                sent_ns: 123_456
            }
        );
        assert_eq!(read_bcast(&buf[..len], &f, &sizes, 3), None, "unknown publisher");
        assert_eq!(read_bcast(&buf[..20], &f, &sizes, 4), None, "wrong length");
        let mut bad = buf[..len].to_vec();
        *bad.last_mut().unwrap() ^= 0x80;
        assert_eq!(read_bcast(&bad, &f, &sizes, 4), None, "corrupt filler");
    }
}
