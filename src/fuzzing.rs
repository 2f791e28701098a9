//! Fuzz target bodies: one function per parser entry point that sees
//! untrusted bytes, each taking the raw fuzz input.
//!
//! Both the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`, one line each)
//! and the stable corpus replay (`tests/fuzz_corpus.rs`) call these, so a
//! corpus file or a crash artifact reproduces the same way in both. Every
//! function checks invariants with `assert!`: a panic here is a finding.
//! (This module is test support; the no-panic rule applies to the code it
//! drives, not to its assertions.)
//!
//! Most targets take their first bytes as "knobs" (limits, split points, an
//! action) and the rest as the byte stream; missing knob bytes count as 0,
//! which selects the default limits. [`TARGETS`] lists them all; see
//! `fuzz/README.md` for how to run one and how to add one.
#![doc(hidden)]

use crate::proto::close;
use crate::proto::frame::{self, Decoded, HeaderError, Opcode, MAX_HEADER_LEN};
use crate::proto::handshake::{self, RequestParser, ResponseError, ResponseParser};
use crate::proto::http::{self, HeadLimits, HeadReader, HttpError, Progress};
use crate::proto::mask;
use crate::proto::utf8::Utf8Validator;
use crate::proto::{Event, Limits, MessageKind, ProtocolError, Role, Session};
use std::ops::Range;

/// A target body: takes one fuzz input, panics on a finding.
pub type Body = fn(&[u8]);

/// Every target: the name of its `cargo fuzz` binary and of its corpus
/// directory `fuzz/corpus/<name>/`, and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("head_reader", head_reader),
    ("request_parser", request_parser),
    ("response_parser", response_parser),
    ("frame_decode", frame_decode),
    ("utf8", utf8),
    ("session_server", session_server),
    ("session_client", session_client),
    ("connection", connection),
    ("pubsub", pubsub),
    ("deflate_offer", deflate_offer),
    ("inflate", inflate),
];

// ------------------------------------------------------------ helpers --

/// Splits `N` knob bytes off the front of `data` (zero-filled if short).
fn knobs<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut k = [0u8; N];
    let n = data.len().min(N);
    k[..n].copy_from_slice(&data[..n]);
    (k, &data[n..])
}

/// Cuts `0..len` into non-empty pieces at the given offsets (any order,
/// duplicates and out-of-range offsets ignored).
fn pieces(len: usize, cuts: impl IntoIterator<Item = usize>) -> Vec<Range<usize>> {
    let mut at: Vec<usize> = cuts.into_iter().filter(|&c| c > 0 && c < len).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for c in at.into_iter().chain((len > 0).then_some(len)) {
        out.push(start..c);
        start = c;
    }
    out
}

/// The ways a stream of `len` bytes is fed, all of which must give the same
/// outcome: whole, in two pieces at a data-derived offset, one byte at a
/// time, and in pieces of data-derived sizes (1 to 1 + `seed % 32`, from a
/// xorshift generator). Each also breaks at `also` (where a target acts).
fn feeds(seed: u8, len: usize, also: usize) -> Vec<Vec<Range<usize>>> {
    let two = if len == 0 { 0 } else { usize::from(seed) * 7919 % len };
    let mut x = u32::from(seed) | 0x100;
    let max = 1 + usize::from(seed % 32);
    let mut random = Vec::new();
    let mut at = 0;
    while at < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + x as usize % max;
        random.push(at);
    }
    vec![
        pieces(len, [also]),
        pieces(len, [also, two]),
        pieces(len, (1..len).chain([also])),
        pieces(len, random.into_iter().chain([also])),
    ]
}

/// Scales a knob byte to an offset in `0..=len`.
fn scaled(knob: u8, len: usize) -> usize {
    len * usize::from(knob) / 255
}

/// Head limits from a knob: index 0 is the daemon's default.
fn head_limits(knob: u8) -> HeadLimits {
    const SIZES: [usize; 8] = [8192, 0, 1, 2, 16, 64, 300, 1024];
    const FIELDS: [usize; 8] = [100, 0, 1, 2, 3, 5, 16, 1000];
    HeadLimits {
        max_size: SIZES[usize::from(knob & 7)],
        max_fields: FIELDS[usize::from((knob >> 3) & 7)],
    }
}

// ---------------------------------------------------------- head reader --

/// What feeding a head gave, with offsets counted from the start of the
/// whole stream; errors by status only (their wording is not a contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadOutcome {
    Partial,
    Complete(usize),
    Error(u16),
}

/// Status the head-reader target's line callback rejects lines with.
const REJECTED: u16 = 418;

/// [`HeadReader::feed`] on knobs `[limits, split seed]` and a stream: the
/// same lines and outcome whole, split anywhere and one byte at a time,
/// and equal to a plain restatement of the rules (RFC 9112 §2.2 line
/// ends, leading empty lines skipped, limits on total size and field
/// count). The line callback rejects lines starting with `!`, so that
/// callback errors are exercised too.
pub fn head_reader(data: &[u8]) {
    let ([lim, seed], input) = knobs(data);
    let limits = head_limits(lim);
    let reference = reference_head(&limits, input);
    for way in feeds(seed, input.len(), 0) {
        let mut reader = HeadReader::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut outcome = HeadOutcome::Partial;
        for r in way {
            let start = r.start;
            let got = reader.feed(&limits, &input[r], |line| {
                assert!(!line.is_empty() && !line.contains(&b'\n') && !line.contains(&b'\r'));
                if line.starts_with(b"!") {
                    return Err(HttpError::new(REJECTED, "rejected by the callback"));
                }
                lines.push(line.to_vec());
                Ok(())
            });
            outcome = match got {
                Ok(Progress::Partial) => continue,
                Ok(Progress::Complete(n)) => HeadOutcome::Complete(start + n),
                Err(e) => HeadOutcome::Error(e.status),
            };
            break;
        }
        assert!(lines.len() <= limits.max_fields + 1);
        assert_eq!((lines, outcome), reference, "head of {input:x?}");
    }
}

/// The head reader's rules, restated over the whole input at once: each
/// byte in turn may end the head in error (past the size limit: 431; a CTL
/// other than HTAB, a CR not followed by LF, an LF without its CR: 400); a
/// CRLF ends a line (empty lines before the first are skipped; an empty
/// line after it completes the head; more than `max_fields` + 1 lines:
/// 431; the callback refuses lines starting with `!`).
fn reference_head(limits: &HeadLimits, input: &[u8]) -> (Vec<Vec<u8>>, HeadOutcome) {
    let mut lines = Vec::new();
    let (mut line_start, mut seen, mut cr) = (0, 0, false);
    for (p, &b) in input.iter().enumerate() {
        if p >= limits.max_size {
            return (lines, HeadOutcome::Error(431));
        }
        match b {
            b'\n' if cr => {}
            b'\n' => return (lines, HeadOutcome::Error(400)),
            _ if cr => return (lines, HeadOutcome::Error(400)),
            b'\r' => {
                cr = true;
                continue;
            }
            b'\t' | b' '..=b'~' | 0x80..=0xff => continue,
            _ => return (lines, HeadOutcome::Error(400)),
        }
        cr = false;
        let line = &input[line_start..p - 1];
        line_start = p + 1;
        if line.is_empty() {
            if seen == 0 {
                continue;
            }
            return (lines, HeadOutcome::Complete(p + 1));
        }
        seen += 1;
        if seen > limits.max_fields + 1 {
            return (lines, HeadOutcome::Error(431));
        }
        if line.starts_with(b"!") {
            return (lines, HeadOutcome::Error(REJECTED));
        }
        lines.push(line.to_vec());
    }
    (lines, HeadOutcome::Partial)
}

// ----------------------------------------------------------- handshake --

/// [`RequestParser`] on knobs `[limits, split seed]` and a request: the same
/// request (or error) every way it is fed; a completed head is within the
/// size limit; [`handshake::Request::websocket_key`] either yields a key
/// whose 101 answer our own client accepts, or an error status whose
/// response our client reads back as that status.
pub fn request_parser(data: &[u8]) {
    let ([lim, seed], input) = knobs(data);
    let limits = head_limits(lim);
    let mut first = None;
    for way in feeds(seed, input.len(), 0) {
        let mut parser = RequestParser::new();
        let mut outcome = Err(HttpError::new(0, "incomplete"));
        for r in way {
            let start = r.start;
            match parser.feed(&limits, &input[r]) {
                Ok(Progress::Partial) => continue,
                Ok(Progress::Complete(n)) => outcome = Ok(start + n),
                Err(e) => outcome = Err(e),
            }
            break;
        }
        let outcome = outcome.map(|n| (parser.into_request(), n));
        match &first {
            None => first = Some(outcome),
            Some(f) => assert_eq!(&outcome, f, "request {input:x?}"),
        }
    }
    match first.expect("at least one way") {
        Ok((req, used)) => check_request(&req, used, &limits),
        Err(e) if e.status == 0 => {}
        Err(e) => {
            assert!(matches!(e.status, 400 | 414 | 417 | 431 | 505), "{e}");
            check_error_response(&e);
        }
    }
}

/// Invariants of a parsed request head.
fn check_request(req: &handshake::Request, used: usize, limits: &HeadLimits) {
    assert!(used <= limits.max_size);
    assert!(req.target().starts_with('/') && req.target().bytes().all(|b| b.is_ascii_graphic()));
    let rebuilt = match req.query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    assert_eq!(rebuilt, req.target());
    let _ = (req.keep_alive(), req.wants_upgrade());
    match req.websocket_key() {
        Ok(key) => {
            assert_eq!(Some(key), req.key);
            assert!(req.minor_version >= 1 && req.host && req.upgrade_websocket && req.connection_upgrade);
            assert_eq!(req.version, Some(13));
            let mut answer = Vec::new();
            handshake::write_accept(&mut answer, &key);
            let n = answer.len();
            answer.extend_from_slice(b"\x81\x00");
            let mut client = ResponseParser::new(&key);
            assert_eq!(client.feed(&head_limits(0), &answer), Ok(Progress::Complete(n)));
        }
        Err(e) => {
            assert!(matches!(e.status, 400 | 426), "{e}");
            check_error_response(&e);
        }
    }
}

/// The error response for `e` is complete and reads back as its status.
fn check_error_response(e: &HttpError) {
    assert_ne!(http::status_text(e.status), "Unknown", "{e}");
    let mut out = Vec::new();
    handshake::write_error(&mut out, e);
    let mut client = ResponseParser::new(&handshake::encode_key([0; 16]));
    assert_eq!(client.feed(&head_limits(0), &out), Err(ResponseError::Status(e.status)));
}

/// The key the response-parser target expects an answer to: the sample
/// nonce of RFC 6455 §1.3, whose accept value is
/// `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=` (so seeds can hold a valid answer).
pub const RESPONSE_KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

/// [`ResponseParser`] (the client side of §4.1) on knobs
/// `[limits, split seed]` and a server's answer: the same verdict every way
/// it is fed, and a success only for a 101 with the right accept value.
pub fn response_parser(data: &[u8]) {
    let ([lim, seed], input) = knobs(data);
    let limits = head_limits(lim);
    let mut first = None;
    for way in feeds(seed, input.len(), 0) {
        let mut parser = ResponseParser::new(RESPONSE_KEY);
        let mut outcome = Ok(None);
        for r in way {
            let start = r.start;
            match parser.feed(&limits, &input[r]) {
                Ok(Progress::Partial) => continue,
                Ok(Progress::Complete(n)) => outcome = Ok(Some(start + n)),
                Err(e) => outcome = Err(e),
            }
            break;
        }
        match &first {
            None => first = Some(outcome),
            Some(f) => assert_eq!(&outcome, f, "response {input:x?}"),
        }
    }
    if let Some(Ok(Some(used))) = first {
        assert!(used <= limits.max_size);
        let head = &input[..used];
        assert!(head.windows(28).any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }
}

// --------------------------------------------------------------- frames --

/// [`frame::decode`] on arbitrary bytes, then an encode/decode round trip
/// of a header built from them, then [`frame::write`] and [`mask::apply`].
///
/// - `Complete(h, n)`: `n == header_len(data[1])`, every field matches the
///   bits, every shorter prefix is `Partial(m)` with `prefix < m <= n`, and
///   re-encoding gives the same header (and the same bytes when the length
///   was sent in its shortest form and no reserved bit is set).
/// - `Partial(m)`: `m` exceeds the input and is at most 14.
/// - `LengthHighBit`: only for a 64-bit length with its top bit set.
pub fn frame_decode(data: &[u8]) {
    match frame::decode(data) {
        Ok(Decoded::Complete(h, n)) => check_decoded(data, h, n),
        Ok(Decoded::Partial(m)) => {
            assert!(m > data.len() && m <= MAX_HEADER_LEN);
            let want = if data.len() < 2 { 2 } else { frame::header_len(data[1]) };
            assert_eq!(m, want);
        }
        Err(HeaderError::LengthHighBit) => {
            assert!(data.len() >= 10 && data[1] & 0x7F == 127 && data[2] & 0x80 != 0);
        }
    }
    frame_round_trip(data);
    mask_matches_reference(data);
}

/// Checks a `Complete(h, n)` from [`frame::decode`] against the bits.
fn check_decoded(data: &[u8], h: frame::Header, n: usize) {
    assert_eq!(n, frame::header_len(data[1]));
    assert!(n <= data.len() && n <= MAX_HEADER_LEN);
    assert_eq!(h.fin, data[0] & 0x80 != 0);
    assert_eq!(h.rsv, (data[0] >> 4) & 7);
    assert_eq!(h.opcode, data[0] & 0x0F);
    assert_eq!(h.mask.is_some(), data[1] & 0x80 != 0);
    if let Some(key) = h.mask {
        assert_eq!(key[..], data[n - 4..n]);
    }
    let short = u64::from(data[1] & 0x7F);
    let minimal = match short {
        126 => h.len >= 126 && h.len <= 0xFFFF,
        127 => h.len > 0xFFFF && h.len >> 63 == 0,
        _ => h.len == short,
    };
    assert!(short >= 126 || minimal);
    for cut in 0..n {
        match frame::decode(&data[..cut]) {
            Ok(Decoded::Partial(m)) => assert!(m > cut && m <= n),
            other => panic!("prefix {cut} of a {n}-byte header gave {other:?}"),
        }
    }
    assert_eq!(frame::decode(&data[..n]), Ok(Decoded::Complete(h, n)));
    if let Some(op) = Opcode::from_u8(h.opcode) {
        let e = frame::encode(h.fin, op, h.len, h.mask);
        let plain = frame::Header { rsv: 0, ..h };
        assert_eq!(
            frame::decode(e.as_slice()),
            Ok(Decoded::Complete(plain, e.as_slice().len()))
        );
        assert!(e.as_slice().len() <= n);
        if minimal && h.rsv == 0 {
            assert_eq!(e.as_slice(), &data[..n]);
        }
    }
}

/// Encodes a header built from the first 15 bytes (fin, opcode, a length
/// of any size, an optional mask), decodes it back, and writes a frame
/// with a short payload taken from the input.
fn frame_round_trip(data: &[u8]) {
    const OPS: [Opcode; 6] = [
        Opcode::Continuation,
        Opcode::Text,
        Opcode::Binary,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ];
    let (b, rest) = knobs::<15>(data);
    let fin = b[0] & 0x80 != 0;
    let op = OPS[usize::from(b[0] % 6)];
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&b[1..9]);
    let len = u64::from_be_bytes(len8) >> (b[9] % 64);
    let mask = (b[10] & 1 == 1).then(|| [b[11], b[12], b[13], b[14]]);
    let e = frame::encode(fin, op, len, mask);
    let ext = match len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    assert_eq!(e.as_slice().len(), 2 + ext + if mask.is_some() { 4 } else { 0 });
    let want = if len >> 63 != 0 {
        Err(HeaderError::LengthHighBit)
    } else {
        let h = frame::Header {
            fin,
            rsv: 0,
            opcode: op as u8,
            mask,
            len,
        };
        Ok(Decoded::Complete(h, e.as_slice().len()))
    };
    assert_eq!(frame::decode(e.as_slice()), want);

    let payload = &rest[..rest.len().min(300)];
    let mut out = Vec::new();
    frame::write(&mut out, op, payload, mask);
    let Ok(Decoded::Complete(h, n)) = frame::decode(&out) else {
        panic!("written frame does not decode")
    };
    assert_eq!(
        (h.fin, h.opcode, h.mask, h.len),
        (true, op as u8, mask, payload.len() as u64)
    );
    if let Some(key) = mask {
        mask::apply(&mut out[n..], key, 0);
    }
    assert_eq!(&out[n..], payload);
}

/// [`mask::apply`] equals the bytewise definition at a data-derived key,
/// offset and split point.
fn mask_matches_reference(data: &[u8]) {
    let (k, rest) = knobs::<6>(data);
    let key = [k[0], k[1], k[2], k[3]];
    let offset = usize::from(k[4]);
    let mut fast = rest.to_vec();
    let mut slow = rest.to_vec();
    let cut = scaled(k[5], fast.len());
    let (a, b) = fast.split_at_mut(cut);
    let mid = mask::apply(a, key, offset);
    let end = mask::apply(b, key, mid);
    assert_eq!(end, mask::apply_bytewise(&mut slow, key, offset));
    assert_eq!(fast, slow);
}

// ---------------------------------------------------------------- UTF-8 --

/// [`Utf8Validator`] on knob `[split seed]` and a stream, fed in pieces:
/// each `feed` fails exactly when the bytes so far can no longer start a
/// valid UTF-8 string (fail fast, §8.1), and `finish` agrees with
/// `str::from_utf8` on the whole.
pub fn utf8(data: &[u8]) {
    let ([seed], input) = knobs(data);
    'ways: for way in feeds(seed, input.len(), 0) {
        let mut v = Utf8Validator::new();
        for r in way {
            let end = r.end;
            let got = v.feed(&input[r]);
            let dead = matches!(std::str::from_utf8(&input[..end]), Err(e) if e.error_len().is_some());
            assert_eq!(got.is_err(), dead, "feed up to {end} of {input:x?}");
            if dead {
                continue 'ways;
            }
        }
        assert_eq!(v.finish().is_ok(), std::str::from_utf8(input).is_ok());
        // finish() resets for the next message.
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}

// -------------------------------------------------------------- session --

/// A [`Session`] in the server role fed arbitrary bytes (see
/// [`session_with`]).
pub fn session_server(data: &[u8]) {
    session_with(Role::Server, data);
}

/// A [`Session`] in the client role fed arbitrary bytes (see
/// [`session_with`]).
pub fn session_client(data: &[u8]) {
    session_with(Role::Client, data);
}

/// Something the local side does at one point of the input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Nothing,
    Close,
    Ping,
    Send,
}

/// An event, owned, as recorded by the session targets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Closed(Option<u16>, String),
    Fail(u16, &'static str),
}

/// Session limits from a knob: index 0 is 64 KiB for both.
fn session_limits(knob: u8) -> Limits {
    const FRAMES: [u64; 8] = [65536, 0, 1, 125, 126, 1000, 4096, 65535];
    const MESSAGES: [u64; 8] = [65536, 0, 1, 125, 126, 1000, 4096, 65535];
    Limits {
        max_frame: FRAMES[usize::from(knob & 7)],
        max_message: MESSAGES[usize::from((knob >> 3) & 7)],
    }
}

/// What the session may hold beyond the message it gathers: the control
/// frame buffer (at most 125 bytes, so a capacity under 256) and slack.
const CONTROL_SLACK: u64 = 512;

/// The memory bound the targets enforce on [`Session::buffered`]: the
/// gathered message's capacity never passes `max_message` (the session
/// caps its growth there; `session_buffers_at_most_max_message` in
/// tests/fuzz_corpus.rs).
pub fn buffered_bound(limits: &Limits) -> u64 {
    limits.max_message + CONTROL_SLACK
}

/// The session targets. Knobs `[limits, action, action offset, split seed]`,
/// then the bytes from the peer. The stream is fed whole, in two pieces,
/// one byte at a time and in data-derived pieces; at the action offset the
/// local side closes, pings or sends. Every way must give the same events
/// and the same output bytes. Also checked: limits and UTF-8 on delivered
/// messages, control payloads of at most 125 bytes, nothing after a Close
/// or a failure, [`Session::buffered`] within [`buffered_bound`], and the
/// output, read by a session of the other role, is exactly the frames the
/// protocol calls for (a Pong per Ping while open, one Close, our own
/// sends), with no error.
pub fn session_with(role: Role, data: &[u8]) {
    let ([lim, act, at, seed], input) = knobs(data);
    let limits = session_limits(lim);
    let action = [Action::Nothing, Action::Close, Action::Ping, Action::Send][usize::from(act & 3)];
    let at = scaled(at, input.len());
    let mut first: Option<(Vec<Ev>, Vec<u8>)> = None;
    for way in feeds(seed, input.len(), at) {
        let run = drive(role, &limits, input, &way, (action, at));
        match &first {
            None => {
                check_peer(role, &run.out, &run.peer_sees);
                first = Some((run.events, run.out));
            }
            Some((events, out)) => {
                assert_eq!(&run.events, events, "events, {role:?}, {input:x?}");
                assert_eq!(&run.out, out, "output, {role:?}, {input:x?}");
            }
        }
    }
}

/// The one place the targets call [`Session::poll`].
fn poll<'b>(
    s: &'b mut Session,
    limits: &Limits,
    input: &'b mut [u8],
    pos: &mut usize,
    out: &mut Vec<u8>,
) -> Result<Option<Event<'b>>, ProtocolError> {
    s.handle_input(limits, input, pos, out)
}

/// Copies an event out of the session's or the input's buffers.
fn record(e: Result<Option<Event<'_>>, ProtocolError>) -> Option<Ev> {
    Some(match e {
        Ok(None) => return None,
        Ok(Some(Event::Message(k, p))) => Ev::Msg(k, p.to_vec()),
        Ok(Some(Event::Compressed(..))) => unreachable!("no session here allows compression"),
        Ok(Some(Event::Ping(p))) => Ev::Ping(p.to_vec()),
        Ok(Some(Event::Pong(p))) => Ev::Pong(p.to_vec()),
        Ok(Some(Event::Closed { code, reason })) => Ev::Closed(code, reason.to_owned()),
        Err(e) => Ev::Fail(e.code, e.reason),
    })
}

/// One feeding of a session: its events, its output, and what a peer
/// reading that output must see.
struct Run {
    events: Vec<Ev>,
    out: Vec<u8>,
    peer_sees: Vec<Ev>,
}

/// Feeds `input` in the given pieces, doing `action` once `act_at` bytes
/// have been fed.
fn drive(role: Role, limits: &Limits, input: &[u8], way: &[Range<usize>], (action, act_at): (Action, usize)) -> Run {
    let mut s = match role {
        Role::Server => Session::server(),
        Role::Client => Session::client(0x5eed),
    };
    let mut run = Run {
        events: Vec::new(),
        out: Vec::new(),
        peer_sees: Vec::new(),
    };
    let mut acted = false;
    for r in way {
        if !acted && r.start >= act_at {
            act(&mut s, action, &mut run);
            acted = true;
        }
        let mut buf = input[r.clone()].to_vec();
        feed(&mut s, limits, &mut buf, &mut run);
    }
    if !acted {
        act(&mut s, action, &mut run);
    }
    run
}

/// Does `action` on the local side and notes what the peer will see.
fn act(s: &mut Session, action: Action, run: &mut Run) {
    let open = s.is_open();
    let sent = match action {
        Action::Nothing => return,
        Action::Close => {
            s.close(close::code::NORMAL, "fuzz", &mut run.out);
            open.then(|| Ev::Closed(Some(close::code::NORMAL), "fuzz".into()))
        }
        Action::Ping => s.ping(b"fuzz", &mut run.out).then(|| Ev::Ping(b"fuzz".to_vec())),
        Action::Send => s
            .send(MessageKind::Text, b"fuzz", &mut run.out)
            .then(|| Ev::Msg(MessageKind::Text, b"fuzz".to_vec())),
    };
    assert_eq!(
        sent.is_some(),
        open,
        "{action:?} on an open session must write, else not"
    );
    run.peer_sees.extend(sent);
}

/// Polls one input buffer until the session wants more, checking each event.
fn feed(s: &mut Session, limits: &Limits, buf: &mut [u8], run: &mut Run) {
    let mut pos = 0;
    // Every event or failure takes at least one input byte.
    for _ in 0..buf.len() + 2 {
        let was_open = s.is_open();
        let was_closed = s.is_closed();
        let before = pos;
        let ev = record(poll(s, limits, buf, &mut pos, &mut run.out));
        assert!(before <= pos && pos <= buf.len());
        assert!(
            s.buffered() as u64 <= buffered_bound(limits),
            "buffered {}",
            s.buffered()
        );
        if s.is_closed() && !matches!(ev, Some(Ev::Closed(..))) {
            // Failed: nothing gathered is kept (a Close event may still
            // hold its body until the next call).
            assert_eq!(s.buffered(), 0, "a failed session holds buffers");
        }
        let Some(ev) = ev else {
            assert_eq!(pos, buf.len(), "Ok(None) must consume the input");
            return;
        };
        assert!(!was_closed, "{ev:?} after the session closed");
        check_event(s, limits, &ev);
        let reply = match &ev {
            Ev::Ping(p) if was_open => Some(Ev::Pong(p.clone())),
            Ev::Closed(code, _) if was_open => Some(Ev::Closed(*code, String::new())),
            Ev::Fail(code, reason) if was_open => Some(Ev::Closed(Some(*code), (*reason).to_owned())),
            _ => None,
        };
        run.peer_sees.extend(reply);
        run.events.push(ev);
    }
    panic!("poll made no progress on {} bytes", buf.len());
}

/// Invariants of one event.
fn check_event(s: &Session, limits: &Limits, ev: &Ev) {
    match ev {
        Ev::Msg(kind, p) => {
            assert!(p.len() as u64 <= limits.max_message);
            if *kind == MessageKind::Text {
                assert!(std::str::from_utf8(p).is_ok(), "text message is not UTF-8");
            }
        }
        Ev::Ping(p) | Ev::Pong(p) => assert!(p.len() <= 125),
        Ev::Closed(code, reason) => {
            assert!(code.is_none_or(close::is_valid_on_wire));
            assert!(code.is_some() || reason.is_empty());
            assert!(reason.len() <= 123 && s.is_closed());
        }
        Ev::Fail(code, _) => {
            assert!(matches!(*code, 1002 | 1007 | 1009), "failure code {code}");
            assert!(s.is_closed());
        }
    }
}

/// Reads a session's output as its peer would: it must be whole frames,
/// accepted without error by a session of the other role, and give
/// exactly `expect`, with nothing after a Close.
fn check_peer(role: Role, out: &[u8], expect: &[Ev]) {
    let mut at = 0;
    while at < out.len() {
        let Ok(Decoded::Complete(h, n)) = frame::decode(&out[at..]) else {
            panic!("output does not split into frames: {out:x?}")
        };
        at += n + usize::try_from(h.len).expect("small frame");
    }
    assert_eq!(at, out.len(), "output ends inside a frame");
    let mut peer = match role {
        Role::Server => Session::client(7),
        Role::Client => Session::server(),
    };
    let mut buf = out.to_vec();
    let mut pos = 0;
    let mut replies = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..=buf.len() {
        let ev = match poll(&mut peer, &Limits::default(), &mut buf, &mut pos, &mut replies) {
            Err(e) => panic!("the peer rejects our output ({e}): {out:x?}"),
            other => record(other),
        };
        let Some(ev) = ev else { break };
        if matches!(ev, Ev::Closed(..)) {
            assert_eq!(pos, out.len(), "bytes after our Close");
        }
        seen.push(ev);
    }
    assert_eq!(seen, expect, "what the peer sees of {out:x?}");
}

// ---------------------------------------------------------- connection --

/// [`Connection`](crate::proto::conn::Connection) in the server role, the
/// whole life of a connection, fed bytes from a peer. Knobs `[limits,
/// split seed]`. A tiny service answers: an acceptable upgrade is upgraded,
/// a `POST` with a small `Content-Length` has its body read, anything else
/// gets `200 ok`; messages are echoed. Without time passing, every way of
/// feeding the stream gives the same events and the same output bytes; the
/// buffers stay within the limits; nothing is said after the connection is
/// done. Then time passes (every deadline fires): no panic, and the
/// connection ends.
pub fn connection(data: &[u8]) {
    use crate::proto::conn::{Connection, Settings};
    let ([lim, seed], input) = knobs(data);
    let settings = Settings {
        limits: session_limits(lim),
        head: head_limits(lim),
        ..Settings::default()
    };
    let mut first: Option<(Vec<String>, Vec<u8>)> = None;
    let mut last = None;
    for way in feeds(seed, input.len(), 0) {
        let mut conn = Connection::new(&settings, 0);
        let mut codec = fuzz_codec();
        let mut buf = input.to_vec();
        let (mut events, mut out) = (Vec::new(), Vec::new());
        for r in way {
            if conn.is_done() {
                break;
            }
            drive_connection(&mut conn, &settings, &mut buf[r], &mut events, &mut out, &mut codec);
            if conn.is_ending() {
                // After its last word a connection only reads to see the FIN.
                let said = out.len();
                drive_connection(&mut conn, &settings, &mut [0u8; 8], &mut events, &mut out, &mut codec);
                assert_eq!(out.len(), said, "output after the last word");
            }
        }
        // `100 Continue` goes out only if the body had not started to arrive
        // (RFC 9110 §10.1.1), which depends on how the input was split.
        let out = without(&out, b"HTTP/1.1 100 Continue\r\n\r\n");
        match &first {
            None => first = Some((events, out)),
            Some(f) => assert_eq!(&(events, out), f, "connection fed differently: {input:x?}"),
        }
        last = Some(conn);
    }
    // Time passes: every deadline fires in turn, and the connection ends.
    let mut conn = last.expect("at least one way");
    let mut out = Vec::new();
    for _ in 0..8 {
        let Some(at) = conn.poll_timeout(&settings) else { break };
        conn.handle_timeout(&settings, at, &mut out);
        conn.handle_flushed();
    }
    assert!(conn.is_done() || conn.poll_timeout(&settings).is_some());
}

/// The loop's permessage-deflate context for the connection target: shared
/// mode, every message worth compressing.
fn fuzz_codec() -> crate::proto::deflate::Codec {
    use crate::proto::deflate::{Codec, DeflateConfig, Mode};
    Codec::new(
        DeflateConfig {
            mode: Mode::Shared,
            max_window_bits: 15,
            threshold: 0,
        },
        1,
    )
}

/// `bytes` with every occurrence of `cut` taken out.
fn without(bytes: &[u8], cut: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].starts_with(cut) {
            at += cut.len();
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    out
}

/// Feeds one piece of input, answering as the tiny service of
/// [`connection`] does; records events as text and checks the buffers.
fn drive_connection(
    conn: &mut crate::proto::conn::Connection,
    s: &crate::proto::conn::Settings,
    input: &mut [u8],
    events: &mut Vec<String>,
    out: &mut Vec<u8>,
    codec: &mut crate::proto::deflate::Codec,
) {
    use crate::proto::conn::{Answer, Event, Response};
    let mut pos = 0;
    let mut echo = Vec::new();
    let config = codec.config;
    for _ in 0..input.len() + 2 {
        let answer = match conn.handle_input(s, 0, input, &mut pos, out, codec) {
            None => {
                assert_eq!(pos, input.len());
                break;
            }
            Some(Event::Request(req)) => {
                events.push(format!("request {:?} {}", req.method, req.target()));
                if req.websocket_key().is_ok() {
                    // permessage-deflate when offered: compressed messages
                    // are inflated (bounded by the message limit) and the
                    // echoes compressed.
                    let deflate = crate::proto::deflate::negotiate(&config, req.extension_lines()).ok();
                    Answer::Upgrade {
                        protocol: None,
                        deflate,
                    }
                } else {
                    match (req.method, req.content_length) {
                        (handshake::Method::Post, Some(n)) if n <= 4096 => Answer::ReadBody(n as usize),
                        _ => Answer::Respond(Response {
                            status: 200,
                            content_type: "text/plain",
                            body: b"ok\n",
                            headers: "",
                            close: false,
                        }),
                    }
                }
            }
            Some(Event::Body(_, body)) => {
                events.push(format!("body {}", body.len()));
                echo.clear();
                echo.extend_from_slice(body);
                Answer::Respond(Response {
                    status: 202,
                    content_type: "text/plain",
                    body: &echo,
                    headers: "",
                    close: false,
                })
            }
            Some(Event::Message(kind, payload)) => {
                assert!(payload.len() as u64 <= s.limits.max_message);
                if kind == MessageKind::Text {
                    assert!(std::str::from_utf8(payload).is_ok(), "text is UTF-8");
                }
                events.push(format!("message {kind:?} {}", payload.len()));
                let at = out.len();
                frame::write(out, kind.opcode(), payload, None);
                conn.compress_tail(codec, out, at);
                continue;
            }
            Some(other) => {
                events.push(format!("{other:?}"));
                continue;
            }
        };
        conn.answer(s, 0, answer, out);
        assert!(conn.buffered() as u64 <= (s.limits.max_message + CONTROL_SLACK).max(4096));
    }
    assert!(conn.buffered() as u64 <= (s.limits.max_message + CONTROL_SLACK).max(4096));
}

// -------------------------------------------------------------- pubsub --

/// The `/pubsub` codec. Knob `[kind]` (even: text, odd: binary), then a
/// client message. A request that parses has valid topics; a publish's
/// delivery envelope decodes as one frame, and as JSON whose `topic` and
/// `data` are what was published; errors carry a stable code. Any valid
/// UTF-8 text survives bare → pubsub → bare unchanged.
pub fn pubsub(data: &[u8]) {
    use crate::proto::pubsub::{self, Payload, Request};
    let ([kind], input) = knobs(data);
    let kind = if kind % 2 == 0 {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    if kind == MessageKind::Text && std::str::from_utf8(input).is_err() {
        return; // the session delivers only valid UTF-8 as text
    }
    match pubsub::parse(kind, input) {
        Ok(Request::Subscribe { topics, .. } | Request::Unsubscribe { topics, .. }) => {
            assert!(!topics.is_empty());
            for t in topics.iter() {
                assert!(pubsub::validate_topic(t).is_ok(), "{t:?}");
            }
        }
        Ok(Request::Publish { topic, payload, .. }) => {
            assert!(pubsub::validate_topic(&topic).is_ok());
            let mut out = Vec::new();
            let n = pubsub::write_message_frame(&mut out, &topic, payload);
            assert_eq!(n, out.len());
            let Ok(Decoded::Complete(h, at)) = frame::decode(&out) else {
                panic!("a whole frame")
            };
            assert_eq!(at + h.len as usize, out.len());
            if let Payload::Json(j) = payload {
                // Read back as raw JSON values (numbers out of f64's range are
                // valid JSON, RFC 8259 §6, and stay text).
                use serde_json::value::RawValue;
                let v: std::collections::HashMap<String, &RawValue> =
                    serde_json::from_slice(&out[at..]).expect("an envelope is JSON");
                let named: String = serde_json::from_str(v["topic"].get()).unwrap();
                assert_eq!(named, *topic);
                assert_eq!(v["data"].get(), j.as_str(), "data verbatim");
                assert_eq!(v["type"].get(), "\"message\"");
            }
        }
        Err(e) => assert!(!e.code.as_str().is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let (k, back) = pubsub::bare(pubsub::classify_text(text));
        assert_eq!((k, &*back), (MessageKind::Text, text.as_bytes()));
    }
}

// ------------------------------------------------------------- deflate --

/// permessage-deflate negotiation. Knobs `[mode and window, threshold]`,
/// then `Sec-WebSocket-Extensions` values, one per line. An accepted offer
/// gives parameters within the RFC's ranges, shared mode always turns off
/// context takeover both ways, and the response value names the extension.
pub fn deflate_offer(data: &[u8]) {
    use crate::proto::deflate::{self, DeflateConfig, Mode};
    let ([m, t], input) = knobs(data);
    let config = DeflateConfig {
        mode: if m & 1 == 0 { Mode::Shared } else { Mode::Dedicated },
        max_window_bits: 8 + (m >> 1) % 9,
        threshold: usize::from(t),
    };
    if let Ok(p) = deflate::negotiate(&config, input.split(|&b| b == b'\n')) {
        assert!((deflate::MIN_WINDOW_BITS..=deflate::MAX_WINDOW_BITS).contains(&p.server_max_window_bits));
        assert!((8..=deflate::MAX_WINDOW_BITS).contains(&p.client_max_window_bits));
        assert!(p.server_max_window_bits <= config.max_window_bits.clamp(9, 15));
        if config.mode == Mode::Shared {
            assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        }
        assert!(p.response().as_str().starts_with(deflate::EXTENSION));
    }
}

/// Inflating a compressed message payload. Knobs `[limit, split seed]`:
/// the output never passes the limit however small the input (bombs), and
/// feeding the payload whole or in pieces gives the same bytes or the same
/// error.
pub fn inflate(data: &[u8]) {
    use crate::proto::deflate::Decompressor;
    let ([lim, seed], input) = knobs(data);
    let max_len = 1usize << (lim % 21); // 1 B to 1 MiB
    let mut first = None;
    for way in feeds(seed, input.len(), 0) {
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        let mut result = Ok(0);
        for r in way {
            if let Err(e) = d.feed(&input[r], max_len, &mut out) {
                result = Err(e);
                break;
            }
            assert!(out.len() <= max_len, "{} bytes past a {max_len}-byte limit", out.len());
        }
        if result.is_ok() {
            result = d.finish(true, max_len, &mut out);
        }
        // Telling a message of exactly the limit from a longer one takes
        // one byte more; past that, nothing.
        let bound = if result.is_ok() { max_len } else { max_len + 1 };
        assert!(out.len() <= bound, "{} bytes for a {max_len}-byte limit", out.len());
        // A message both too large and corrupt may be found out as either,
        // depending on where zlib's look-ahead stops in each piece: both fail
        // the connection. What inflates must inflate the same every way.
        let outcome = result.map(|_| out).map_err(|_| ());
        match &first {
            None => first = Some(outcome),
            Some(f) => assert_eq!(&outcome, f, "inflate fed differently"),
        }
    }
}
