//! Payload masking, RFC 6455 §5.3.
//!
//! > Octet i of the transformed data ("transformed-octet-i") is the XOR of
//! > octet i of the original data ("original-octet-i") with octet at index
//! > i modulo 4 of the masking key ("masking-key-octet-j").
//!
//! Masking and unmasking are the same operation. [`apply`] works on blocks
//! of `u64` words, which the compiler turns into vector operations (no
//! `unsafe` in the loop: `chunks_exact_mut` + `from_ne_bytes` compile to
//! plain loads and stores), then a word, a half word and bytes;
//! [`apply_bytewise`] is the obviously-correct reference it is tested
//! against.
//!
//! On baseline x86-64 the vectors are SSE2's 16 bytes. A payload of
//! [`WIDE_FROM`] bytes or more goes, on a CPU that has AVX2, to the same
//! code compiled for AVX2 (32-byte vectors, four to a block): a 16 KiB
//! payload then takes about 1,460 instructions instead of 3,860 (callgrind,
//! `benches/profile_echo.py --cases 10x16k`), and `cargo bench --bench
//! codec -- mask/` times both, `apply` and `portable`.

/// The payload length from which [`apply`] asks whether the CPU has AVX2:
/// under it the question and the call cost more than they save.
pub const WIDE_FROM: usize = 256;

/// XORs `buf` with `key`, starting at key offset `offset % 4`, and returns
/// the key offset for the byte that follows `buf`: feed it back in when a
/// payload arrives in several pieces.
#[inline]
pub fn apply(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    if buf.len() >= WIDE_FROM {
        return apply_wide(buf, key, offset);
    }
    apply_portable(buf, key, offset)
}

/// [`apply`] for a long payload: AVX2 where the CPU has it. Out of line, so
/// that the short payloads' inlined path carries none of it.
#[inline(never)]
// The one `unsafe` in the crate: see the SAFETY comment below.
#[allow(unsafe_code)]
fn apply_wide(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: calling a `#[target_feature(enable = "avx2")]` function
        // is sound when the CPU running it has AVX2, and only then (the
        // function's one precondition: its body may use AVX2 instructions).
        // `is_x86_feature_detected!("avx2")` has just answered yes: it asks
        // CPUID, and for AVX also that the OS saves the wide registers
        // (XCR0), so the instructions will neither fault nor lose state.
        // Everything else `apply_avx2` does is safe Rust.
        return unsafe { apply_avx2(buf, key, offset) };
    }
    apply_portable(buf, key, offset)
}

/// [`apply`] without the AVX2 path: what baseline x86-64 and every other
/// target run. Public for the benchmark that weighs the two.
#[inline]
pub fn apply_portable(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    apply_blocks::<4>(buf, key, offset)
}

/// The same code as [`apply_portable`], compiled with AVX2 and with blocks
/// of 128 bytes (four 32-byte vectors, so that the loop's own counting is
/// paid once per four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    apply_blocks::<16>(buf, key, offset)
}

/// Masks `buf` in blocks of `W` words (`8 × W` bytes), then what is left.
#[inline(always)]
fn apply_blocks<const W: usize>(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset & 3;
    // Rotate the key so that byte 0 of `buf` lines up with key byte `offset`.
    let bits = 8 * offset as u32;
    let k = u32::from_ne_bytes(key);
    let k = if cfg!(target_endian = "little") {
        k.rotate_right(bits)
    } else {
        k.rotate_left(bits)
    };
    let wide = (u64::from(k) << 32) | u64::from(k);

    let mut blocks = buf.chunks_exact_mut(8 * W);
    for block in &mut blocks {
        // All loads, then all stores: the compiler sees whole vectors.
        let mut words = [0u64; W];
        for (w, bytes) in words.iter_mut().zip(block.chunks_exact(8)) {
            *w = u64::from_ne_bytes(bytes.try_into().expect("8 bytes")) ^ wide;
        }
        for (w, bytes) in words.iter().zip(block.chunks_exact_mut(8)) {
            bytes.copy_from_slice(&w.to_ne_bytes());
        }
    }
    // The rest, under one block; every piece so far was a multiple of four
    // long, so the key stays lined up.
    let mut words = blocks.into_remainder().chunks_exact_mut(8);
    for bytes in &mut words {
        let w = u64::from_ne_bytes((&*bytes).try_into().expect("8 bytes")) ^ wide;
        bytes.copy_from_slice(&w.to_ne_bytes());
    }
    let mut tail = words.into_remainder();
    if tail.len() >= 4 {
        let (half, rest) = tail.split_at_mut(4);
        let w = u32::from_ne_bytes((&*half).try_into().expect("4 bytes")) ^ k;
        half.copy_from_slice(&w.to_ne_bytes());
        tail = rest;
    }
    for (b, k) in tail.iter_mut().zip(k.to_ne_bytes()) {
        *b ^= k;
    }
    (offset + buf.len()) & 3
}

/// Byte-at-a-time masking: the specification's definition, used as the
/// reference in tests and benchmarks.
pub fn apply_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
    (offset + buf.len()) & 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_5_7_hello_example() {
        // §5.7: "A single-frame masked text message" carries "Hello" masked
        // with key 37 fa 21 3d as 7f 9f 4d 51 58.
        let mut data = *b"Hello";
        apply(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn matches_reference_at_every_alignment_offset_and_length() {
        let key = [0xa1, 0x5e, 0x07, 0xc3];
        let original: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..100 {
                for offset in 0..4 {
                    let mut wide = original.clone();
                    let mut reference = original.clone();
                    let a = apply(&mut wide[start..start + len], key, offset);
                    let b = apply_bytewise(&mut reference[start..start + len], key, offset);
                    assert_eq!(a, b);
                    assert_eq!(wide, reference, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn long_payloads_match_reference_on_either_side_of_the_wide_path() {
        // From `WIDE_FROM` bytes `apply` takes the AVX2 path on a CPU that
        // has it (on one without, both calls below test the portable
        // code). Lengths cover the threshold, whole and partial 128-byte
        // blocks and their tails.
        let key = [0x3c, 0x81, 0xf0, 0x5a];
        let original: Vec<u8> = (0..20_000u32).map(|i| (i * 31 + 7) as u8).collect();
        let lengths = (WIDE_FROM - 9..WIDE_FROM + 140).chain([1000, 1023, 4096, 16_384, 16_387, 19_990]);
        for len in lengths {
            for (start, offset) in [(0, 0), (1, 1), (3, 2), (8, 3), (5, 0)] {
                let mut reference = original.clone();
                let b = apply_bytewise(&mut reference[start..start + len], key, offset);
                for (name, f) in [
                    ("apply", apply as fn(&mut [u8], [u8; 4], usize) -> usize),
                    ("portable", apply_portable),
                ] {
                    let mut wide = original.clone();
                    let a = f(&mut wide[start..start + len], key, offset);
                    assert_eq!(a, b, "{name}: len {len} offset {offset}");
                    assert!(wide == reference, "{name}: start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn split_anywhere_equals_whole() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..64u8).collect();
        let mut whole = original.clone();
        apply(&mut whole, key, 0);
        for cut in 0..=original.len() {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(cut);
            let off = apply(a, key, 0);
            apply(b, key, off);
            assert_eq!(parts, whole, "cut at {cut}");
        }
    }
}
