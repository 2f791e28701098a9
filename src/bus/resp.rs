//! RESP3, the Redis protocol, as far as the bus speaks it: commands are
//! arrays of blob strings; what comes back is decoded by the well-kept
//! `redis-protocol` crate into frames that point into the input, and sorted
//! here into what the bus acts on.

use redis_protocol::resp3::decode::complete::decode_range;
use redis_protocol::resp3::encode::complete::encode_borrowed;
use redis_protocol::resp3::types::{BorrowedFrame, RangeFrame};

/// Appends a command: `args` as an array of blob strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut frames: [BorrowedFrame<'_>; 6] = std::array::from_fn(|_| BorrowedFrame::Null);
    assert!(
        args.len() <= frames.len(),
        "commands of the bus have at most 6 arguments"
    );
    for (f, a) in frames.iter_mut().zip(args) {
        *f = BorrowedFrame::BlobString {
            data: a,
            attributes: None,
        };
    }
    let frame = BorrowedFrame::Array {
        data: &frames[..args.len()],
        attributes: None,
    };
    let at = out.len();
    out.resize(at + frame.encode_len(false), 0);
    let n = encode_borrowed(&mut out[at..], &frame, false).expect("the buffer was sized for the frame");
    out.truncate(at + n);
}

/// One thing Redis sent, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A push: `message` or `smessage` on `channel` (RESP3 pub/sub).
    Message { channel: &'a [u8], payload: &'a [u8] },
    /// A push saying we are no longer subscribed to `channel` (after our
    /// unsubscribe, or a cluster slot that moved: `sunsubscribe`).
    Unsubscribed { channel: &'a [u8] },
    /// Another push (subscribe confirmations and the like): nothing to do.
    OtherPush,
    /// An error reply.
    Error(&'a [u8]),
    /// Any other reply (the frame, for replies that carry data).
    Reply(RangeFrame),
}

/// Decodes the next frame of `input`: `Ok(None)` if it is not complete yet;
/// otherwise the frame and how many bytes it took.
pub fn next(input: &[u8]) -> Result<Option<(Incoming<'_>, usize)>, &'static str> {
    let (frame, used) = match decode_range(input) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(_) => return Err("malformed RESP3 from Redis"),
    };
    let bytes = |f: &RangeFrame| match f {
        RangeFrame::BlobString { data, .. } | RangeFrame::SimpleString { data, .. } => Some(&input[data.0..data.1]),
        _ => None,
    };
    let incoming = match &frame {
        RangeFrame::Push { data, .. } => match (data.first().and_then(bytes), data.get(1).and_then(bytes)) {
            (Some(b"message" | b"smessage"), Some(channel)) => match data.get(2).and_then(bytes) {
                Some(payload) => Incoming::Message { channel, payload },
                None => Incoming::OtherPush,
            },
            (Some(b"unsubscribe" | b"sunsubscribe"), Some(channel)) => Incoming::Unsubscribed { channel },
            _ => Incoming::OtherPush,
        },
        RangeFrame::SimpleError { data, .. } | RangeFrame::BlobError { data, .. } => {
            Incoming::Error(&input[data.0..data.1])
        }
        _ => Incoming::Reply(frame),
    };
    Ok(Some((incoming, used)))
}

/// The (start, end, "host:port") ranges of a `CLUSTER SLOTS` reply (the
/// primary of each range; replicas are ignored).
pub fn cluster_slots(input: &[u8], frame: &RangeFrame) -> Vec<(u16, u16, String)> {
    let RangeFrame::Array { data, .. } = frame else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for range in data {
        let RangeFrame::Array { data: r, .. } = range else {
            continue;
        };
        let (Some(RangeFrame::Number { data: start, .. }), Some(RangeFrame::Number { data: end, .. })) =
            (r.first(), r.get(1))
        else {
            continue;
        };
        let Some(RangeFrame::Array { data: primary, .. }) = r.get(2) else {
            continue;
        };
        let host = match primary.first() {
            Some(RangeFrame::BlobString { data, .. }) => String::from_utf8_lossy(&input[data.0..data.1]).into_owned(),
            _ => continue,
        };
        let Some(RangeFrame::Number { data: port, .. }) = primary.get(1) else {
            continue;
        };
        if let (Ok(s), Ok(e)) = (u16::try_from(*start), u16::try_from(*end)) {
            out.push((s, e, format!("{host}:{port}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_what_comes_back() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"wsloop:a", b"\x00\xff"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$8\r\nwsloop:a\r\n$2\r\n\x00\xff\r\n");
        let pushes: &[u8] = b">3\r\n$7\r\nmessage\r\n$8\r\nwsloop:a\r\n$2\r\nhi\r\n>3\r\n$12\r\nsunsubscribe\r\n$8\r\nwsloop:b\r\n:0\r\n-MOVED 3999 127.0.0.1:6381\r\n:2\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        // Fed at every split, it says "not yet" until a frame is whole.
        for cut in 0..pushes.len() {
            if let Ok(Some((_, n))) = next(&pushes[..cut]) {
                assert!(n <= cut);
            }
        }
        while let Some((inc, n)) = next(&pushes[at..]).unwrap() {
            seen.push(format!("{inc:?}"));
            at += n;
        }
        assert_eq!(at, pushes.len());
        assert!(seen[0].starts_with("Message"), "{seen:?}");
        assert_eq!(
            next(pushes).unwrap().unwrap().0,
            Incoming::Message {
                channel: b"wsloop:a",
                payload: b"hi"
            }
        );
        assert!(seen[1].starts_with("Unsubscribed"));
        assert!(seen[2].starts_with("Error"));
        assert!(seen[3].starts_with("Reply(Number"));
        assert!(next(b"?garbage\r\n").is_err());
    }

    #[test]
    fn cluster_slots_reply() {
        let reply: &[u8] = b"*2\r\n*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$4\r\nabcd\r\n*4\r\n:5461\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$1\r\ne\r\n*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$1\r\nf\r\n";
        let (Incoming::Reply(frame), _) = next(reply).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(
            cluster_slots(reply, &frame),
            [
                (0, 5460, "127.0.0.1:7000".to_string()),
                (5461, 16383, "127.0.0.1:7001".to_string())
            ]
        );
    }
}
