//! The frame header codec, RFC 6455 §5.2.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! This module only reads and writes that layout. Whether a well-formed
//! header is *acceptable* (reserved bits, unknown opcodes, masking, control
//! frame rules, limits) depends on the connection's role and state and is
//! decided by [`super::session`].

/// The longest header: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Frame opcodes (§5.2, §11.8). 0x3–0x7 and 0xB–0xF are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// `None` for the reserved opcodes.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// §5.5: "Control frames are identified by opcodes where the most
    /// significant bit of the opcode is 1."
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A decoded frame header. `opcode` is kept raw so that the caller can
/// report reserved opcodes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

/// Outcome of [`decode`] on a buffer that may hold only part of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The header and how many bytes it took.
    Complete(Header, usize),
    /// Not enough bytes yet: the header needs at least this many in total.
    Partial(usize),
}

/// A header that no amount of further input can make valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// §5.2: in the 64-bit form "the most significant bit MUST be 0".
    LengthHighBit,
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeaderError::LengthHighBit => f.write_str("64-bit payload length with the top bit set"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// How many header bytes follow from the first two: 2, 4 or 10, plus 4 if
/// the mask bit is set.
pub fn header_len(second_byte: u8) -> usize {
    let ext = match second_byte & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if second_byte & 0x80 != 0 { 4 } else { 0 }
}

/// Decodes a frame header from the start of `buf`.
///
/// The length is read in whichever of the three forms it was sent. §5.2
/// says "the minimal number of bytes MUST be used to encode the length";
/// that binds the sender, and a longer-than-needed form is accepted here as
/// the same length (no peer gains anything by it).
pub fn decode(buf: &[u8]) -> Result<Decoded, HeaderError> {
    if buf.len() < 2 {
        return Ok(Decoded::Partial(2));
    }
    let need = header_len(buf[1]);
    if buf.len() < need {
        return Ok(Decoded::Partial(need));
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let (len, at) = match b1 & 0x7F {
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(l);
            if len >> 63 != 0 {
                return Err(HeaderError::LengthHighBit);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        Some([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
    } else {
        None
    };
    Ok(Decoded::Complete(
        Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0F,
            mask,
            len,
        },
        need,
    ))
}

/// An encoded header, on the stack.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Encoded {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Encodes a header in the shortest length form (§5.2).
pub fn encode(fin: bool, opcode: Opcode, len: u64, mask: Option<[u8; 4]>) -> Encoded {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[0] = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if len < 126 {
        bytes[1] = mask_bit | len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        bytes[1] = mask_bit | 126;
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        bytes[1] = mask_bit | 127;
        bytes[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        bytes[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    Encoded { bytes, len: at as u8 }
}

/// Appends one complete frame (header and payload, masked with `mask` if
/// given) to `out`.
#[inline]
pub fn write(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    match mask {
        None => write_unmasked(out, 0x80 | opcode as u8, payload),
        Some(key) => write_masked(out, opcode, payload, key),
    }
}

/// A server's frame (FIN set, no mask) with first byte `b0`: the header in
/// the shortest length form (§5.2), then the payload.
#[inline(always)]
fn write_unmasked(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    let len = payload.len();
    // Each form appended as a fixed-size array: a store or two, where a
    // slice of run-time length would be a call to `memcpy`.
    if len < 126 {
        out.reserve(2 + len);
        out.extend_from_slice(&[b0, len as u8]);
    } else if len <= usize::from(u16::MAX) {
        let [a, b] = (len as u16).to_be_bytes();
        out.reserve(4 + len);
        out.extend_from_slice(&[b0, 126, a, b]);
    } else {
        let [a, b, c, d, e, f, g, h] = (len as u64).to_be_bytes();
        out.reserve(10 + len);
        out.extend_from_slice(&[b0, 127, a, b, c, d, e, f, g, h]);
    }
    out.extend_from_slice(payload);
}

fn write_masked(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], key: [u8; 4]) {
    let header = encode(true, opcode, payload.len() as u64, Some(key));
    out.reserve(header.as_slice().len() + payload.len());
    out.extend_from_slice(header.as_slice());
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::apply(&mut out[start..], key, 0);
}

/// Appends one complete unmasked frame whose payload is compressed by
/// permessage-deflate: RSV1 set (RFC 7692 §6).
pub fn write_compressed(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    write_unmasked(out, 0xC0 | opcode as u8, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Complete` for a header with no reserved bits.
    fn complete(fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64, used: usize) -> Decoded {
        Decoded::Complete(
            Header {
                fin,
                rsv: 0,
                opcode,
                mask,
                len,
            },
            used,
        )
    }

    /// Decodes `bytes` fed as growing prefixes: every proper prefix must be
    /// Partial, and the whole must give `expect`.
    fn decode_every_prefix(bytes: &[u8]) -> Result<Decoded, HeaderError> {
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Ok(Decoded::Partial(n)) => assert!(n > cut, "prefix {cut} of {bytes:x?}"),
                other => panic!("prefix {cut} of {bytes:x?} gave {other:?}"),
            }
        }
        decode(bytes)
    }

    #[test]
    fn rfc_5_7_examples() {
        // "A single-frame unmasked text message": 0x81 0x05 "Hello"
        let d = decode_every_prefix(&[0x81, 0x05]).unwrap();
        assert_eq!(d, complete(true, 1, None, 5, 2));
        // "A single-frame masked text message"
        let d = decode_every_prefix(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap();
        assert_eq!(d, complete(true, 1, Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6));
        // "A fragmented unmasked text message": 0x01 0x03 "Hel", 0x80 0x02 "lo"
        let d = decode_every_prefix(&[0x01, 0x03]).unwrap();
        assert_eq!(d, complete(false, 1, None, 3, 2));
        let d = decode_every_prefix(&[0x80, 0x02]).unwrap();
        assert_eq!(d, complete(true, 0, None, 2, 2));
        // "256 bytes binary message in a single unmasked frame": 0x82 0x7E 0x0100
        let d = decode_every_prefix(&[0x82, 0x7E, 0x01, 0x00]).unwrap();
        assert_eq!(d, complete(true, 2, None, 256, 4));
        // "64KiB binary message in a single unmasked frame": 0x82 0x7F 0x0000000000010000
        let d = decode_every_prefix(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap();
        assert_eq!(d, complete(true, 2, None, 65536, 10));
    }

    #[test]
    fn encode_matches_rfc_examples_and_round_trips() {
        assert_eq!(encode(true, Opcode::Text, 5, None).as_slice(), &[0x81, 0x05]);
        assert_eq!(
            encode(true, Opcode::Binary, 256, None).as_slice(),
            &[0x82, 0x7E, 0x01, 0x00]
        );
        assert_eq!(
            encode(true, Opcode::Binary, 65536, None).as_slice(),
            &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for op in [Opcode::Text, Opcode::Binary, Opcode::Ping, Opcode::Close] {
                    let e = encode(true, op, len, mask);
                    let d = decode_every_prefix(e.as_slice()).unwrap();
                    assert_eq!(d, complete(true, op as u8, mask, len, e.as_slice().len()));
                }
            }
        }
    }

    #[test]
    fn length_forms_are_minimal() {
        assert_eq!(encode(true, Opcode::Text, 125, None).as_slice().len(), 2);
        assert_eq!(encode(true, Opcode::Text, 126, None).as_slice().len(), 4);
        assert_eq!(encode(true, Opcode::Text, 65535, None).as_slice().len(), 4);
        assert_eq!(encode(true, Opcode::Text, 65536, None).as_slice().len(), 10);
    }

    #[test]
    fn top_bit_of_64_bit_length_is_rejected() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(decode_every_prefix(&bytes), Err(HeaderError::LengthHighBit));
    }

    #[test]
    fn reserved_bits_and_opcodes_are_reported_raw() {
        let d = decode(&[0xF3, 0x00]).unwrap();
        assert_eq!(
            d,
            Decoded::Complete(
                Header {
                    fin: true,
                    rsv: 7,
                    opcode: 3,
                    mask: None,
                    len: 0
                },
                2
            )
        );
        assert_eq!(Opcode::from_u8(3), None);
        assert_eq!(Opcode::from_u8(0xB), None);
        assert!(Opcode::Ping.is_control() && !Opcode::Binary.is_control());
    }

    #[test]
    fn write_masks_the_payload() {
        let mut out = Vec::new();
        write(&mut out, Opcode::Text, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn unmasked_frames_are_the_encoded_header_then_the_payload() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for op in [Opcode::Text, Opcode::Binary, Opcode::Ping, Opcode::Close] {
                let mut expect = b"before".to_vec();
                expect.extend_from_slice(encode(true, op, len as u64, None).as_slice());
                expect.extend_from_slice(&payload);
                let mut out = b"before".to_vec();
                write(&mut out, op, &payload, None);
                assert_eq!(out, expect, "{op:?}, {len} bytes");
                // permessage-deflate: the same with RSV1 (RFC 7692 §6).
                expect[6] |= 0x40;
                let mut out = b"before".to_vec();
                write_compressed(&mut out, op, &payload);
                assert_eq!(out, expect, "{op:?}, {len} bytes compressed");
            }
        }
    }
}
