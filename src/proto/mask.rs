//! Payload masking, RFC 6455 §5.3.
//!
//! > Octet i of the transformed data ("transformed-octet-i") is the XOR of
//! > octet i of the original data ("original-octet-i") with octet at index
//! > i modulo 4 of the masking key ("masking-key-octet-j").
//!
//! Masking and unmasking are the same operation. [`apply`] works eight bytes
//! at a time on a `u64` (no `unsafe`: `chunks_exact_mut` + `from_ne_bytes`
//! compile to plain 64-bit loads and stores, and the loop auto-vectorises);
//! [`apply_bytewise`] is the obviously-correct reference it is tested against.

/// XORs `buf` with `key`, starting at key offset `offset % 4`, and returns
/// the key offset for the byte that follows `buf`: feed it back in when a
/// payload arrives in several pieces.
#[inline]
pub fn apply(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset & 3;
    // Rotate the key so that byte 0 of `buf` lines up with key byte `offset`.
    let k4 = [
        key[offset],
        key[(offset + 1) & 3],
        key[(offset + 2) & 3],
        key[(offset + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([k4[0], k4[1], k4[2], k4[3], k4[0], k4[1], k4[2], k4[3]]);

    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    // Tail: fewer than eight bytes, still aligned with the rotated key since
    // the body was a multiple of four.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k4[i & 3];
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
