//! What one node publishes to the others: the Redis channel of a topic and
//! the bytes of a bus message.
//!
//! ```text
//!  byte 0       1 … 8          9 … 16        17       18 …
//!  +---------+-------------+-------------+--------+----------------------+
//!  | version | node (u64)  | seq (u64)   | kind   | body                 |
//!  +---------+-------------+-------------+--------+----------------------+
//! ```
//!
//! `node` is the publishing node's id (random per start, so a restarted
//! node is a new one); `seq` counts that node's messages on this topic, so
//! that a receiver sees a gap when messages were lost (a dropped
//! connection, Redis cutting a slow subscriber). Integers are big-endian.
//! Kinds: 0 bare text, 1 bare binary (a room member's or an HTTP publish's
//! payload as sent), 2 JSON `data` of a `/pubsub` publish, 3 binary of one;
//! 4 presence: `event` (0 join, 1 leave, 2 count; bit 7 set: the
//! publishing node has members in the room that asked for presence
//! notices, so it wants the other nodes' counts), the publishing node's
//! member count (u32), then the member's name (UTF-8, possibly empty; a
//! single 0xFF byte means none).

/// Every channel wsloop uses starts with this.
pub const CHANNEL_PREFIX: &str = "wsloop:";

const VERSION: u8 = 1;
const HEAD: usize = 18;
/// The presence event byte's flag: the publisher wants counts.
const WANTS: u8 = 0x80;

/// Appends the channel of `topic`.
pub fn write_channel(out: &mut Vec<u8>, topic: &str) {
    out.extend_from_slice(CHANNEL_PREFIX.as_bytes());
    out.extend_from_slice(topic.as_bytes());
}

/// The topic of a channel, if it is one of ours.
pub fn topic_of(channel: &[u8]) -> Option<&str> {
    std::str::from_utf8(channel.strip_prefix(CHANNEL_PREFIX.as_bytes())?).ok()
}

/// A message's payload as it travels between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    BareText(&'a [u8]),
    BareBinary(&'a [u8]),
    /// The JSON text of a `/pubsub` publish's `data`.
    Json(&'a [u8]),
    Binary(&'a [u8]),
}

/// A presence change in a room, or a node's periodic member count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    Message(Payload<'a>),
    Presence {
        event: PresenceEvent,
        /// The publishing node's members in the room, after the change.
        members: u32,
        name: Option<&'a str>,
        /// The publishing node has members that asked for presence notices
        /// in this room: it needs the others' counts.
        wants: bool,
    },
}

/// A decoded bus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub node: u64,
    pub seq: u64,
    pub body: Body<'a>,
}

/// Appends the bytes of a bus message.
pub fn encode(out: &mut Vec<u8>, node: u64, seq: u64, body: &Body<'_>) {
    out.push(VERSION);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    match *body {
        Body::Message(p) => {
            let (kind, bytes) = match p {
                Payload::BareText(b) => (0, b),
                Payload::BareBinary(b) => (1, b),
                Payload::Json(b) => (2, b),
                Payload::Binary(b) => (3, b),
            };
            out.push(kind);
            out.extend_from_slice(bytes);
        }
        Body::Presence {
            event,
            members,
            name,
            wants,
        } => {
            out.push(4);
            let event = match event {
                PresenceEvent::Join => 0,
                PresenceEvent::Leave => 1,
                PresenceEvent::Count => 2,
            };
            out.push(event | if wants { WANTS } else { 0 });
            out.extend_from_slice(&members.to_be_bytes());
            match name {
                Some(n) => out.extend_from_slice(n.as_bytes()),
                None => out.push(0xFF),
            }
        }
    }
}

/// A bus message that is not one (another program's, or damaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError(pub &'static str);

/// Decodes a bus message.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, WireError> {
    if bytes.len() < HEAD {
        return Err(WireError("shorter than its header"));
    }
    if bytes[0] != VERSION {
        return Err(WireError("unknown version"));
    }
    let node = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    let seq = u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let rest = &bytes[HEAD..];
    let body = match bytes[17] {
        0 => Body::Message(Payload::BareText(rest)),
        1 => Body::Message(Payload::BareBinary(rest)),
        2 => Body::Message(Payload::Json(rest)),
        3 => Body::Message(Payload::Binary(rest)),
        4 => {
            let [event, a, b, c, d, ref name @ ..] = *rest else {
                return Err(WireError("presence shorter than its header"));
            };
            let wants = event & WANTS != 0;
            let event = match event & !WANTS {
                0 => PresenceEvent::Join,
                1 => PresenceEvent::Leave,
                2 => PresenceEvent::Count,
                _ => return Err(WireError("unknown presence event")),
            };
            let name = match name {
                [0xFF] => None,
                n => Some(std::str::from_utf8(n).map_err(|_| WireError("presence name is not UTF-8"))?),
            };
            Body::Presence {
                event,
                members: u32::from_be_bytes([a, b, c, d]),
                name,
                wants,
            }
        }
        _ => return Err(WireError("unknown kind")),
    };
    Ok(Envelope { node, seq, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        let bodies = [
            Body::Message(Payload::BareText(b"hello")),
            Body::Message(Payload::BareBinary(&[0, 255])),
            Body::Message(Payload::Json(br#"{"a":1}"#)),
            Body::Message(Payload::Binary(b"")),
            Body::Presence {
                event: PresenceEvent::Join,
                members: 3,
                name: Some("Zoë"),
                wants: true,
            },
            Body::Presence {
                event: PresenceEvent::Leave,
                members: 0,
                name: Some(""),
                wants: false,
            },
            Body::Presence {
                event: PresenceEvent::Count,
                members: 70_000,
                name: None,
                wants: true,
            },
        ];
        for (i, body) in bodies.iter().enumerate() {
            let mut out = Vec::new();
            encode(&mut out, 0xDEAD_BEEF, i as u64, body);
            assert_eq!(
                decode(&out),
                Ok(Envelope {
                    node: 0xDEAD_BEEF,
                    seq: i as u64,
                    body: *body
                })
            );
            // Any truncation of a presence message, and of any header, is
            // refused, never misread.
            for cut in 0..HEAD.min(out.len()) {
                assert!(decode(&out[..cut]).is_err());
            }
        }
        assert_eq!(decode(&[2; 20]), Err(WireError("unknown version")));
        let mut bad = Vec::new();
        encode(&mut bad, 1, 1, &Body::Message(Payload::BareText(b"")));
        bad[17] = 9;
        assert_eq!(decode(&bad), Err(WireError("unknown kind")));
        let mut ch = Vec::new();
        write_channel(&mut ch, "prices.AAPL");
        assert_eq!(topic_of(&ch), Some("prices.AAPL"));
        assert_eq!(topic_of(b"other:x"), None);
    }
}
