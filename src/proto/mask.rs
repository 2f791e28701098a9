//! Payload masking, RFC 6455 §5.3.
//!
//! > Octet i of the transformed data ("transformed-octet-i") is the XOR of
//! > octet i of the original data ("original-octet-i") with octet at index
//! > i modulo 4 of the masking key ("masking-key-octet-j").
//!
//! Masking and unmasking are the same operation. [`apply`] works 32 bytes
//! at a time as four `u64` words, which the compiler turns into two 16-byte
//! vector operations even on baseline x86-64 (SSE2), then a word, a half
//! word and bytes (no `unsafe`: `chunks_exact_mut` + `from_ne_bytes`
//! compile to plain loads and stores); [`apply_bytewise`] is the
//! obviously-correct reference it is tested against.

/// XORs `buf` with `key`, starting at key offset `offset % 4`, and returns
/// the key offset for the byte that follows `buf`: feed it back in when a
/// payload arrives in several pieces.
#[inline]
pub fn apply(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
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

    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        let mut words = [0u64; 4];
        for (w, bytes) in words.iter_mut().zip(block.chunks_exact(8)) {
            *w = u64::from_ne_bytes(bytes.try_into().expect("8 bytes")) ^ wide;
        }
        for (w, bytes) in words.iter().zip(block.chunks_exact_mut(8)) {
            bytes.copy_from_slice(&w.to_ne_bytes());
        }
    }
    // The rest, under 32 bytes; every piece so far was a multiple of four
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
