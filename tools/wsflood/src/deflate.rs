//! permessage-deflate (RFC 7692) in the client role, on wsloop's codecs.
//!
//! `--deflate` offers the extension ([`wsloop::proto::handshake::DeflateOffer`],
//! `--deflate-offer` for another offer); the core checks the server's
//! answer and gives the agreed [`Params`], read from the client's side:
//!
//! - sending: messages of at least `--deflate-threshold` bytes are
//!   compressed with a `client_max_window_bits` window (RSV1, masked after
//!   compression, [`Session::send_compressed`]). With
//!   `client_no_context_takeover` the thread's compressor for that window
//!   serves every connection and is reset after each message; otherwise
//!   the connection gets a compressor of its own at its first compressed
//!   message and keeps its context (§7.1.1.2).
//! - receiving: a compressed message is inflated into the worker's buffer,
//!   bounded by the message limit (1009 past it, 1007 if corrupt, 1007 for
//!   text that is not UTF-8 once inflated). With
//!   `server_no_context_takeover` the thread's decompressor serves every
//!   connection; otherwise the connection gets one of its own at its first
//!   compressed message (§7.1.1.1).
//!
//! Connections that never send or receive a compressed message own no
//! codec, so an idle client holds 16 bytes per connection for this. The
//! thread's buffers keep their capacity: past the first messages nothing
//! is allocated (zlib's state is reset, not rebuilt).

use wsloop::proto::deflate::{Compressor, Decompressor, InflateError, Params, MIN_WINDOW_BITS};
use wsloop::proto::handshake::DeflateOffer;
use wsloop::proto::{MessageKind, Session};

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Setup {
    pub offer: DeflateOffer,
    /// zlib level, 0..=9.
    pub level: u32,
    /// Messages shorter than this go uncompressed.
    pub threshold: usize,
}

/// A connection's side of the extension.
#[derive(Debug, Default)]
pub struct ConnDeflate {
    /// Agreed at the handshake (None: not offered, or declined).
    pub params: Option<Params>,
    own: Option<Box<Own>>,
}

/// The codecs of a connection whose peer keeps context in a direction.
#[derive(Debug, Default)]
struct Own {
    compressor: Option<Compressor>,
    decompressor: Option<Decompressor>,
}

impl ConnDeflate {
    /// A new connection's state: the handshake's answer.
    pub fn agreed(params: Option<Params>) -> ConnDeflate {
        ConnDeflate { params, own: None }
    }
}

/// How a message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The session may no longer send.
    Refused,
    Plain,
    Compressed,
}

/// One worker thread's codecs and scratch buffer.
#[derive(Debug)]
pub struct Codecs {
    level: u32,
    threshold: usize,
    /// For connections with client_no_context_takeover: by window bits.
    compressors: [Option<Compressor>; 7],
    /// For connections with server_no_context_takeover.
    decompressor: Option<Decompressor>,
    deflated: Vec<u8>,
}

impl Codecs {
    pub fn new(setup: Option<&Setup>) -> Codecs {
        Codecs {
            level: setup.map_or(1, |s| s.level),
            threshold: setup.map_or(usize::MAX, |s| s.threshold),
            compressors: Default::default(),
            decompressor: None,
            deflated: Vec::new(),
        }
    }

    /// Queues a data message on `session`: compressed if the extension was
    /// agreed and the message is long enough (and compression works: if
    /// zlib fails, which it does only on misuse, it goes plain, which §6
    /// always allows).
    pub fn send(
        &mut self,
        conn: &mut ConnDeflate,
        session: &mut Session,
        kind: MessageKind,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Sent {
        let sent = |ok: bool, how: Sent| if ok { how } else { Sent::Refused };
        let Some(params) = conn.params.filter(|_| payload.len() >= self.threshold) else {
            return sent(session.send(kind, payload, out), Sent::Plain);
        };
        let reset = params.client_no_context_takeover;
        let compressor = if reset {
            let bits = params.client_max_window_bits.max(MIN_WINDOW_BITS);
            let level = self.level;
            self.compressors[usize::from(bits - MIN_WINDOW_BITS).min(6)]
                .get_or_insert_with(|| Compressor::new(bits, level))
        } else {
            let level = self.level;
            let own = conn.own.get_or_insert_with(Box::default);
            own.compressor
                .get_or_insert_with(|| Compressor::new(params.client_max_window_bits, level))
        };
        self.deflated.clear();
        if compressor.compress(payload, reset, &mut self.deflated).is_err() {
            return sent(session.send(kind, payload, out), Sent::Plain);
        }
        sent(session.send_compressed(kind, &self.deflated, out), Sent::Compressed)
    }

    /// Inflates a compressed message into `out` (cleared first), at most
    /// `max_len` bytes. The error is the close code and reason to fail the
    /// connection with.
    pub fn inflate(
        &mut self,
        conn: &mut ConnDeflate,
        kind: MessageKind,
        compressed: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), (u16, &'static str)> {
        let Some(params) = conn.params else {
            // The session refuses RSV1 without the extension: unreachable,
            // answered as a protocol error all the same.
            return Err((1002, "compressed message without permessage-deflate"));
        };
        let reset = params.server_no_context_takeover;
        let decompressor = if reset {
            self.decompressor.get_or_insert_with(Decompressor::new)
        } else {
            let own = conn.own.get_or_insert_with(Box::default);
            own.decompressor.get_or_insert_with(Decompressor::new)
        };
        out.clear();
        match decompressor.decompress(compressed, reset, max_len, out) {
            Ok(_) => {}
            Err(e @ InflateError::TooLarge) => return Err((e.close_code(), "inflated message exceeds the limit")),
            Err(e @ InflateError::Corrupt) => return Err((e.close_code(), "corrupt compressed message")),
        }
        // RFC 6455 §8.1: text is UTF-8, which is a property of the message,
        // not of its compressed form.
        if kind == MessageKind::Text && std::str::from_utf8(out).is_err() {
            return Err((1007, "invalid UTF-8 in an inflated text message"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsloop::proto::frame::{self, Decoded};
    use wsloop::proto::{Event, Limits};

    fn params(snct: bool, cnct: bool, client_bits: u8) -> Params {
        Params {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: 15,
            client_max_window_bits: client_bits,
            server_max_window_bits_answered: false,
        }
    }

    fn setup(threshold: usize) -> Setup {
        Setup {
            offer: DeflateOffer::default_offer(),
            level: 1,
            threshold,
        }
    }

    /// What a server session receives from our frames, inflated the way
    /// the server would (its own decompressor with context takeover).
    fn server_reads(frames: &mut [u8], takeover: bool) -> Vec<(bool, Vec<u8>)> {
        let mut server = Session::server();
        server.allow_compression();
        let mut d = Decompressor::new();
        let (mut pos, mut out, mut got) = (0, Vec::new(), Vec::new());
        while let Ok(Some(ev)) = server.handle_input(&Limits::default(), frames, &mut pos, &mut out) {
            match ev {
                Event::Message(_, p) => got.push((false, p.to_vec())),
                Event::Compressed(_, p) => {
                    let mut m = Vec::new();
                    d.decompress(p, !takeover, 1 << 20, &mut m).unwrap();
                    got.push((true, m));
                }
                other => panic!("{other:?}"),
            }
        }
        got
    }

    #[test]
    fn sends_compressed_with_or_without_context() {
        let msg = br#"{"type":"ticker","price":"67321.45","best_bid":"67321.44"}"#;
        for (cnct, bits) in [(true, 15), (false, 15), (true, 9), (false, 10)] {
            let mut codecs = Codecs::new(Some(&setup(10)));
            let mut conn = ConnDeflate::agreed(Some(params(true, cnct, bits)));
            let mut session = Session::client(3);
            session.allow_compression();
            let mut out = Vec::new();
            for _ in 0..3 {
                assert_eq!(
                    codecs.send(&mut conn, &mut session, MessageKind::Text, msg, &mut out),
                    Sent::Compressed
                );
            }
            assert_eq!(
                codecs.send(&mut conn, &mut session, MessageKind::Text, b"short", &mut out),
                Sent::Plain
            );
            // Every compressed frame carries RSV1 and is masked.
            let mut at = 0;
            let mut sizes = Vec::new();
            while let Ok(Decoded::Complete(h, n)) = frame::decode(&out[at..]) {
                assert!(h.mask.is_some());
                sizes.push((h.rsv, h.len));
                at += n + h.len as usize;
            }
            assert_eq!(sizes.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 4, 4, 0]);
            // With context, repeats shrink to back-references.
            if !cnct {
                assert!(sizes[1].1 < sizes[0].1 / 2, "{sizes:?}");
            } else {
                assert_eq!(sizes[1].1, sizes[0].1, "{sizes:?}");
            }
            assert_eq!(conn.own.is_some(), !cnct, "own compressor only with context takeover");
            let got = server_reads(&mut out, !cnct);
            assert_eq!(got.len(), 4);
            assert!(got[..3].iter().all(|(z, m)| *z && m == msg));
            assert_eq!(got[3], (false, b"short".to_vec()));
        }
    }

    #[test]
    fn inflates_and_refuses_bad_input() {
        let msg = vec![b'a'; 5000];
        for snct in [true, false] {
            let mut codecs = Codecs::new(Some(&setup(0)));
            let mut conn = ConnDeflate::agreed(Some(params(snct, true, 15)));
            let mut c = Compressor::new(15, 1);
            let mut out = Vec::new();
            for _ in 0..2 {
                let mut z = Vec::new();
                c.compress(&msg, snct, &mut z).unwrap();
                codecs
                    .inflate(&mut conn, MessageKind::Binary, &z, 1 << 20, &mut out)
                    .unwrap();
                assert_eq!(out, msg);
            }
            assert_eq!(conn.own.is_some(), !snct);
            let mut z = Vec::new();
            Compressor::new(15, 1).compress(&msg, true, &mut z).unwrap();
            let mut fresh = ConnDeflate::agreed(Some(params(snct, true, 15)));
            assert_eq!(
                codecs.inflate(&mut fresh, MessageKind::Binary, &z, 4999, &mut out),
                Err((1009, "inflated message exceeds the limit"))
            );
            let mut fresh = ConnDeflate::agreed(Some(params(snct, true, 15)));
            assert_eq!(
                codecs.inflate(&mut fresh, MessageKind::Binary, &[0xff, 0xff, 0xff], 1 << 20, &mut out),
                Err((1007, "corrupt compressed message"))
            );
            let mut z = Vec::new();
            Compressor::new(15, 1).compress(b"\xff\xfe", true, &mut z).unwrap();
            let mut fresh = ConnDeflate::agreed(Some(params(snct, true, 15)));
            assert_eq!(
                codecs.inflate(&mut fresh, MessageKind::Text, &z, 1 << 20, &mut out),
                Err((1007, "invalid UTF-8 in an inflated text message"))
            );
        }
        let mut none = ConnDeflate::agreed(None);
        let mut out = Vec::new();
        assert!(Codecs::new(None)
            .inflate(&mut none, MessageKind::Binary, b"x", 10, &mut out)
            .is_err());
    }
}
