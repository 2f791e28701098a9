//! Incremental UTF-8 validation of text messages, RFC 6455 §5.6 and §8.1.
//!
//! > When an endpoint is to interpret a byte stream as UTF-8 but finds that
//! > the byte stream is not, in fact, a valid UTF-8 stream, that endpoint
//! > MUST _Fail the WebSocket Connection_. (§8.1)
//!
//! A text message may arrive in many fragments, and each fragment in many
//! reads; a code point may be split anywhere. [`Utf8Validator`] keeps at most
//! the three bytes of an unfinished code point and rejects a stream at the
//! first byte that can no longer begin or continue a valid sequence, so a
//! peer cannot make us buffer a long invalid message before we notice. The
//! per-chunk work is `core::str::from_utf8`, the standard library's fast
//! validator; this type only stitches chunk boundaries together.

use core::str;

/// The byte stream seen so far is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl core::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Validates a UTF-8 stream fed in arbitrary pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Bytes of a code point whose end has not arrived yet.
    carry: [u8; 4],
    carry_len: u8,
}

/// Length of the sequence introduced by lead byte `b` (only called on bytes
/// that `from_utf8` accepted as the start of an incomplete sequence).
fn sequence_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    pub const fn new() -> Self {
        Utf8Validator {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Validates the next piece of the stream. Fails as soon as the bytes
    /// seen so far cannot be the prefix of a valid UTF-8 stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let have = self.carry_len as usize;
            let need = sequence_len(self.carry[0]);
            let take = (need - have).min(input.len());
            self.carry[have..have + take].copy_from_slice(&input[..take]);
            self.carry_len += take as u8;
            input = &input[take..];
            match str::from_utf8(&self.carry[..self.carry_len as usize]) {
                Ok(_) => self.carry_len = 0,
                // Still a valid prefix, and the input is used up.
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match str::from_utf8(input) {
            Ok(_) => Ok(()),
            // `error_len() == None` means "valid so far, but the input ends in
            // the middle of a code point": keep the tail for the next piece.
            // `from_utf8` checks the second byte's range too (no overlongs, no
            // surrogates, nothing above U+10FFFF), so a prefix kept here is
            // one that some continuation could still complete.
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream (the message is complete): an unfinished code point
    /// at the end is an error. Resets the validator for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carry_len == 0;
        *self = Utf8Validator::new();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every pair of offsets and checks the verdict
    /// (and, when invalid, that it comes no later than the chunk holding
    /// the first bad byte).
    fn check_all_splits(bytes: &[u8]) {
        let expect_ok = str::from_utf8(bytes).is_ok();
        // The length of the shortest prefix that no continuation can make
        // valid: the validator must say so by the time it has seen it.
        let doomed_at =
            (1..=bytes.len()).find(|&k| str::from_utf8(&bytes[..k]).is_err_and(|e| e.error_len().is_some()));
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut v = Utf8Validator::new();
                let chunks = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                let failed_in = chunks.iter().position(|c| v.feed(c).is_err());
                let r = match failed_in {
                    Some(_) => Err(InvalidUtf8),
                    None => v.finish(),
                };
                assert_eq!(r.is_ok(), expect_ok, "{bytes:x?} split at {i},{j}");
                if let Some(k) = doomed_at {
                    // The chunk holding byte k - 1 is the one that must fail.
                    let due = if k <= i {
                        0
                    } else if k <= j {
                        1
                    } else {
                        2
                    };
                    assert_eq!(failed_in, Some(due), "{bytes:x?} split at {i},{j}: failed late");
                }
            }
        }
    }

    #[test]
    fn table_valid_and_invalid_at_every_split() {
        let cases: &[&[u8]] = &[
            b"",
            b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
            "κόσμε".as_bytes(),
            b"\xf0\x90\x80\x80", // first 4-byte code point
            b"\xf4\x8f\xbf\xbf", // U+10FFFF, the last code point
            b"\xef\xbf\xbf",     // U+FFFF
            b"\xf4\x90\x80\x80", // above U+10FFFF
            b"\xed\xa0\x80",     // UTF-16 surrogate
            b"\xc0\xaf",         // overlong '/'
            b"\xe0\x80\xaf",     // overlong
            b"\x80",             // lone continuation byte
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // Autobahn 6.4.x
            b"\xf8\x88\x80\x80\x80", // five-byte form
            b"\xfe",
            b"ab\xe2\x82", // truncated at the end
        ];
        for c in cases {
            check_all_splits(c);
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        // §6.4 of the Autobahn suite: F4 90 can never become valid, so the
        // validator must reject it before the rest of the message arrives.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok \xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0"),
            Err(InvalidUtf8)
        );
    }

    #[test]
    fn incomplete_code_point_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // finish() resets: the next message starts clean.
        assert_eq!(v.feed(b"fine"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn one_byte_at_a_time_across_code_points() {
        let text = "a€𐍈ü".repeat(10);
        let mut v = Utf8Validator::new();
        for b in text.as_bytes() {
            v.feed(core::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }
}
