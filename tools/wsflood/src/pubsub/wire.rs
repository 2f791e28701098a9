//! The topics protocol (docs/pubsub.md) from the client's side: the body
//! every published message carries, topic names, the requests wsflood
//! sends and the server messages it reads.
//!
//! Body: the published payload (a JSON string's content in the text form,
//! the payload in the binary form). It starts with a fixed-width header in
//! lowercase hex, so that the checker reads it without a JSON parser:
//!
//! ```text
//! P{publisher:04x}T{topic:05x}S{seq:010x}N{sent_ns:013x}:{padding}
//! P0007T0002aS00000004d2N00000075bcd15:kX3a-Zq...
//! ```
//!
//! 37 bytes of header (`seq` is per publisher and topic; `sent_ns` is ns
//! since the run started), then padding: letters, digits, `-` and `_`
//! (nothing a JSON string has to escape), the same bytes in every message,
//! compared on arrival.

use crate::payload;
use std::borrow::Cow;
use wsloop::proto::pubsub::{write_binary, OP_MESSAGE, OP_PUBLISH};

/// Bytes of the body header.
pub const HEADER: usize = 37;
/// Publisher ids fit 4 hex digits.
pub const MAX_PUBLISHERS: usize = 1 << 16;
/// Topic ids fit 5 hex digits.
pub const MAX_TOPICS: usize = 1 << 20;

/// What the body header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub topic: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// The characters of the padding: 64 that need no escape in JSON.
const SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The padding source: `len` bytes, the same in every thread and run.
pub fn filler(len: usize) -> Vec<u8> {
    payload::filler(len)
        .into_iter()
        .map(|b| SAFE[usize::from(b & 63)])
        .collect()
}

/// The size of the body of message `seq` of `publisher` on `topic`.
pub fn body_len(sizes: &[usize], publisher: u32, topic: u32, seq: u64) -> usize {
    payload::size_of(sizes, publisher.wrapping_add(topic), seq)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` in lowercase hex over all of `out` (its low digits only, if
/// it does not fit).
fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

/// Reads lowercase hex (at most 16 digits).
fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

/// Writes the header over the start of `buf` (at least [`HEADER`] bytes).
pub fn stamp(buf: &mut [u8], s: &Stamp) {
    let h = &mut buf[..HEADER];
    h[0] = b'P';
    put_hex(&mut h[1..5], u64::from(s.publisher));
    h[5] = b'T';
    put_hex(&mut h[6..11], u64::from(s.topic));
    h[11] = b'S';
    put_hex(&mut h[12..22], s.seq);
    h[22] = b'N';
    put_hex(&mut h[23..36], s.sent_ns);
    h[36] = b':';
}

/// Reads and checks a body: a well-formed header naming one of
/// `publishers`, the length that publisher sent for that topic and
/// sequence number, and the padding byte for byte.
pub fn read_body(body: &[u8], filler: &[u8], sizes: &[usize], publishers: u32) -> Option<Stamp> {
    let h = body.get(..HEADER)?;
    if (h[0], h[5], h[11], h[22], h[36]) != (b'P', b'T', b'S', b'N', b':') {
        return None;
    }
    let s = Stamp {
        publisher: get_hex(&h[1..5])? as u32,
        topic: get_hex(&h[6..11])? as u32,
        seq: get_hex(&h[12..22])?,
        sent_ns: get_hex(&h[23..36])?,
    };
    if s.publisher >= publishers || body.len() != body_len(sizes, s.publisher, s.topic, s.seq) {
        return None;
    }
    (body[HEADER..] == filler[HEADER..body.len()]).then_some(s)
}

// ---- topic names and numbers -------------------------------------------

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the name of topic `t`: `t` and the number in decimal.
pub fn write_topic(out: &mut Vec<u8>, t: u32) {
    out.push(b't');
    write_u64(out, u64::from(t));
}

/// The number of a topic name written by [`write_topic`] (no sign, no
/// leading zero), if it is one below `topics`.
pub fn parse_topic(name: &[u8], topics: u32) -> Option<u32> {
    let digits = name.strip_prefix(b"t")?;
    if digits.is_empty() || digits.len() > 7 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut v = 0u32;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    (v < topics).then_some(v)
}

// ---- requests -------------------------------------------------------------

/// `{"type":"subscribe","topics":["t1","t9"],"id":ID}`.
pub fn subscribe(out: &mut Vec<u8>, topics: &[u32], id: u64) {
    out.extend_from_slice(br#"{"type":"subscribe","topics":["#);
    for (i, &t) in topics.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        write_topic(out, t);
        out.push(b'"');
    }
    out.extend_from_slice(br#"],"id":"#);
    write_u64(out, id);
    out.push(b'}');
}

/// `{"type":"publish","topic":"tT","data":"BODY"}`, with `,"id":ID` before
/// the brace if given. `body` must need no JSON escapes (see [`filler`]).
pub fn publish_text(out: &mut Vec<u8>, topic: u32, body: &[u8], id: Option<u64>) {
    out.extend_from_slice(br#"{"type":"publish","topic":""#);
    write_topic(out, topic);
    out.extend_from_slice(br#"","data":""#);
    out.extend_from_slice(body);
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(br#","id":"#);
        write_u64(out, id);
    }
    out.push(b'}');
}

/// The name of topic `t` (see [`write_topic`]), formatted in `buf`.
pub fn topic_name(t: u32, buf: &mut [u8; 11]) -> &str {
    buf[0] = b't';
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut v = t;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = digits.len() - at;
    buf[1..=n].copy_from_slice(&digits[at..]);
    std::str::from_utf8(&buf[..=n]).unwrap_or("t")
}

/// The binary publish (op 0x01, 0x41 with an id), by wsloop's own encoder.
pub fn publish_binary(out: &mut Vec<u8>, topic: u32, body: &[u8], id: Option<u32>) {
    let mut name = [0u8; 11];
    write_binary(out, OP_PUBLISH, id, topic_name(topic, &mut name), body);
}

/// `POST /broadcast/tT` with `body` as the message: text (delivered to
/// `/pubsub` subscribers as a JSON string, the body not being JSON) or,
/// with `binary`, an octet stream (delivered in the binary form).
pub fn http_publish(out: &mut Vec<u8>, host: &str, topic: u32, body: &[u8], binary: bool) {
    out.extend_from_slice(b"POST /broadcast/");
    write_topic(out, topic);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(if binary {
        b"\r\nContent-Type: application/octet-stream\r\nContent-Length: ".as_slice()
    } else {
        b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ".as_slice()
    });
    write_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// `POST /pubsub` with `json` (a JSON array of publish requests) as body.
pub fn http_batch(out: &mut Vec<u8>, host: &str, json: &[u8]) {
    out.extend_from_slice(b"POST /pubsub HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    write_u64(out, json.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(json);
}

// ---- what the server sends ------------------------------------------------

/// One message from the server, as far as wsflood cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A delivery: the topic's name and the body (a JSON string's value, or
    /// the binary payload).
    Delivery {
        topic: Cow<'a, [u8]>,
        body: Cow<'a, [u8]>,
    },
    Ack(u64),
    /// An error answer: its id (if a number) and code.
    Error {
        id: Option<u64>,
        code: String,
    },
    /// Anything else: not a message of the protocol, or a delivery whose
    /// data is not a string.
    Other,
}

const MESSAGE: &[u8] = br#"{"type":"message","topic":""#;
const DATA: &[u8] = br#"","data":""#;
const ACK: &[u8] = br#"{"type":"ack","id":"#;

/// Reads one server message. wsloop writes its messages in one fixed form
/// (keys in the order of docs/pubsub.md, no spaces, no escapes in our
/// topics and bodies), read here without allocating; any other valid JSON
/// goes through serde_json.
pub fn classify(binary: bool, msg: &[u8]) -> Incoming<'_> {
    if binary {
        return match msg {
            [OP_MESSAGE, len, rest @ ..] if rest.len() >= usize::from(*len) => {
                let (topic, body) = rest.split_at(usize::from(*len));
                Incoming::Delivery {
                    topic: Cow::Borrowed(topic),
                    body: Cow::Borrowed(body),
                }
            }
            _ => Incoming::Other,
        };
    }
    if let Some((topic, body)) = fast_delivery(msg) {
        return Incoming::Delivery {
            topic: Cow::Borrowed(topic),
            body: Cow::Borrowed(body),
        };
    }
    if let Some(id) = msg
        .strip_prefix(ACK)
        .and_then(|r| r.strip_suffix(b"}"))
        .filter(|d| !d.is_empty() && d.len() <= 19 && d.iter().all(u8::is_ascii_digit))
    {
        return Incoming::Ack(id.iter().fold(0, |v, &d| v * 10 + u64::from(d - b'0')));
    }
    slow(msg)
}

/// `{"type":"message","topic":"NAME","data":"BODY"}` exactly, with
/// nothing to unescape in NAME or BODY.
fn fast_delivery(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = msg.strip_prefix(MESSAGE)?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let (topic, rest) = rest.split_at(q);
    let body = rest.strip_prefix(DATA)?.strip_suffix(br#""}"#)?;
    let plain = |s: &[u8]| !s.iter().any(|&b| b == b'\\' || b == b'"');
    (plain(topic) && plain(body)).then_some((topic, body))
}

/// Any other text message, through a JSON parser.
fn slow(msg: &[u8]) -> Incoming<'static> {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(msg) else {
        return Incoming::Other;
    };
    let id = m.get("id").and_then(serde_json::Value::as_u64);
    match m.get("type").and_then(|t| t.as_str()) {
        Some("message") => match (m.get("topic").and_then(|t| t.as_str()), m.get("data")) {
            (Some(topic), Some(serde_json::Value::String(body))) => Incoming::Delivery {
                topic: Cow::Owned(topic.as_bytes().to_vec()),
                body: Cow::Owned(body.as_bytes().to_vec()),
            },
            _ => Incoming::Other,
        },
        Some("ack") => id.map_or(Incoming::Other, Incoming::Ack),
        Some("error") => Incoming::Error {
            id,
            code: m.get("code").and_then(|c| c.as_str()).unwrap_or("?").to_string(),
        },
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsloop::proto::pubsub::{self as codec, Payload, Request};
    use wsloop::proto::MessageKind;

    fn stamp_of(p: u32, t: u32, seq: u64, ns: u64) -> Stamp {
        Stamp {
            publisher: p,
            topic: t,
            seq,
            sent_ns: ns,
        }
    }

    #[test]
    fn body_round_trip_and_every_flip_is_caught() {
        let sizes = [HEADER, 64, 100];
        let f = filler(100);
        assert!(f.iter().all(|b| SAFE.contains(b)));
        for (p, t, seq) in [(0, 0, 0), (7, 42, 1234), (0xFFFF, 0xF_FFFF, (1 << 40) - 1)] {
            let s = stamp_of(p, t, seq, 123_456_789);
            let len = body_len(&sizes, p, t, seq);
            let mut buf = f.clone();
            stamp(&mut buf, &s);
            let body = &buf[..len];
            assert_eq!(read_body(body, &f, &sizes, 0x1_0000), Some(s));
            assert_eq!(read_body(body, &f, &sizes, p), None, "publisher out of range");
            assert_eq!(read_body(&body[..len - 1], &f, &sizes, 0x1_0000), None, "short");
            for i in 0..len {
                let mut bad = body.to_vec();
                bad[i] ^= 0x01;
                // A flipped hex digit can still be hex: then the length or
                // the fields differ, which the caller checks.
                if let Some(got) = read_body(&bad, &f, &sizes, 0x1_0000) {
                    assert!(i < HEADER && got != s, "flip at {i} went unnoticed");
                }
            }
        }
        let mut buf = f.clone();
        stamp(&mut buf, &stamp_of(1, 2, 3, 4));
        assert_eq!(&buf[..HEADER], b"P0001T00002S0000000003N0000000000004:");
    }

    #[test]
    fn topic_names() {
        let mut out = Vec::new();
        for t in [0, 9, 10, 999_999, 1_048_575] {
            out.clear();
            write_topic(&mut out, t);
            assert_eq!(parse_topic(&out, 1 << 20), Some(t));
            let mut buf = [0u8; 11];
            assert_eq!(topic_name(t, &mut buf).as_bytes(), &out[..]);
        }
        for bad in [&b"t"[..], b"x1", b"t01", b"t-1", b"t1a", b"t12345678", b"T1", b""] {
            assert_eq!(parse_topic(bad, 1 << 20), None, "{bad:?}");
        }
        assert_eq!(parse_topic(b"t10", 10), None, "out of range");
    }

    /// Every request wsflood writes is one that wsloop's parser takes as
    /// meant.
    #[test]
    fn requests_parse_as_intended() {
        let mut out = Vec::new();
        subscribe(&mut out, &[3, 1, 4], 7);
        match codec::parse(MessageKind::Text, &out).unwrap() {
            Request::Subscribe { topics, id } => {
                assert_eq!(topics.iter().collect::<Vec<_>>(), ["t3", "t1", "t4"]);
                assert_eq!(id.and_then(|i| i.as_u64()), Some(7));
            }
            other => panic!("{other:?}"),
        }
        for id in [None, Some(99)] {
            out.clear();
            publish_text(&mut out, 42, b"P0001abc", id);
            match codec::parse(MessageKind::Text, &out).unwrap() {
                Request::Publish {
                    topic,
                    payload,
                    id: got,
                } => {
                    assert_eq!(topic, "t42");
                    assert!(matches!(payload, Payload::Json(j) if j.as_str() == "\"P0001abc\""));
                    assert_eq!(got.and_then(|i| i.as_u64()), id);
                }
                other => panic!("{other:?}"),
            }
            out.clear();
            publish_binary(&mut out, 42, b"\x00body", id.map(|i| i as u32));
            match codec::parse(MessageKind::Binary, &out).unwrap() {
                Request::Publish {
                    topic,
                    payload,
                    id: got,
                } => {
                    assert_eq!(topic, "t42");
                    assert_eq!(payload, Payload::Binary(b"\x00body"));
                    assert_eq!(got.and_then(|i| i.as_u64()), id);
                }
                other => panic!("{other:?}"),
            }
        }
        out.clear();
        http_publish(&mut out, "h:1", 5, b"abc", false);
        assert_eq!(
            out,
            b"POST /broadcast/t5 HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 3\r\n\r\nabc"
        );
    }

    /// What wsloop's own encoder writes for a delivery is read back by the
    /// fast path, and reordered or escaped JSON by the slow one.
    #[test]
    fn deliveries_acks_and_errors() {
        let mut out = Vec::new();
        codec::write_envelope(&mut out, "t42", Payload::Text("P0001abc"));
        assert!(fast_delivery(&out).is_some(), "{}", String::from_utf8_lossy(&out));
        let want = Incoming::Delivery {
            topic: Cow::Borrowed(&b"t42"[..]),
            body: Cow::Borrowed(&b"P0001abc"[..]),
        };
        assert_eq!(classify(false, &out), want);
        let slow_forms = [
            &br#"{"data":"P0001abc","topic":"t42","type":"message"}"#[..],
            br#"{"type":"message","topic":"t\u0034\u0032","data":"P0001abc"}"#,
            br#" {"type":"message", "topic":"t42", "data":"P0001abc"} "#,
        ];
        for form in slow_forms {
            assert!(fast_delivery(form).is_none());
            assert_eq!(classify(false, form), want, "{}", String::from_utf8_lossy(form));
        }
        out.clear();
        codec::write_envelope(&mut out, "t42", Payload::Binary(b"\x01\x02"));
        assert_eq!(
            classify(true, &out),
            Incoming::Delivery {
                topic: Cow::Borrowed(&b"t42"[..]),
                body: Cow::Borrowed(&b"\x01\x02"[..]),
            }
        );
        assert_eq!(
            classify(true, &[OP_MESSAGE, 5, b't']),
            Incoming::Other,
            "topic cut short"
        );
        assert_eq!(classify(true, &[0x01, 1, b't']), Incoming::Other);
        out.clear();
        codec::write_ack(&mut out, codec::Id::num(12345));
        assert_eq!(classify(false, &out), Incoming::Ack(12345));
        assert_eq!(classify(false, br#"{"id":7,"type":"ack"}"#), Incoming::Ack(7));
        out.clear();
        codec::write_error(&mut out, Some(codec::Id::num(3)), codec::ErrorCode::BadTopic, "x");
        assert_eq!(
            classify(false, &out),
            Incoming::Error {
                id: Some(3),
                code: "bad_topic".into()
            }
        );
        for other in [
            &b"hello"[..],
            br#"{"type":"message","topic":"t1","data":{"a":1}}"#,
            br#"{"type":"ack"}"#,
            br#"[1]"#,
        ] {
            assert_eq!(classify(false, other), Incoming::Other);
        }
    }
}
