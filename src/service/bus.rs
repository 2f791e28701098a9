//! Topics across nodes: what the services hand to the [`Bus`] and take from
//! it. Every message published on this node goes to the bus once (it was
//! delivered locally already); every message from another node is
//! delivered locally only.
//!
//! Room presence is cluster-wide, and costs nothing where nobody asked for
//! it. A room is *active* on a node while the node has members in it that
//! asked for presence notices, or has heard, within the last few beats,
//! another node that has (its presence messages carry a `wants` flag). An
//! active room's joins and leaves are announced to the other nodes with
//! the node's member count, and the counts are repeated every few seconds
//! (a node that vanishes is forgotten after a few missed beats). The joins
//! and leaves of a presence member are always announced (they make the
//! room active elsewhere). A room nobody watches sends no presence at all:
//! a ticker's 10,000 viewers coming and going cost the bus nothing.

use super::topics::{Message, TopicId, Topics};
use crate::bus::wire::{Body, Envelope, Payload as WirePayload, PresenceEvent};
use crate::bus::Bus;
use crate::proto::pubsub::{self, Payload};
use crate::proto::MessageKind;
use std::collections::HashMap;

/// How often a node repeats its rooms' member counts.
const BEAT_MS: u64 = 5_000;
/// Another node's count is forgotten after this long without news.
const FORGET_MS: u64 = 3 * BEAT_MS;

/// The bus, and what the service knows of the other nodes.
#[derive(Debug)]
pub struct Remote {
    pub bus: Bus,
    pub presence: Presence,
    next_beat: u64,
}

/// Room members on the other nodes.
#[derive(Debug, Default)]
pub struct Presence {
    /// Topic → node → (count, when heard).
    members: HashMap<Box<str>, HashMap<u64, (u32, u64)>>,
    /// Rooms where another node has presence members: when it last said so.
    wanted: HashMap<Box<str>, u64>,
    /// Rooms where a node we did not know of asked for counts: it is owed
    /// ours.
    owed: Vec<Box<str>>,
}

impl Remote {
    pub fn new(bus: Bus) -> Self {
        Remote {
            bus,
            presence: Presence::default(),
            next_beat: 0,
        }
    }

    /// A message published on this node: to the other nodes.
    pub fn publish(&mut self, topic: &str, message: &Message<'_>) {
        let payload = match *message {
            Message::Bare(MessageKind::Text, b) => WirePayload::BareText(b),
            Message::Bare(MessageKind::Binary, b) => WirePayload::BareBinary(b),
            Message::PubSub(Payload::Json(j)) => WirePayload::Json(j.as_str().as_bytes()),
            Message::PubSub(Payload::Text(t)) => WirePayload::BareText(t.as_bytes()),
            Message::PubSub(Payload::Binary(b)) => WirePayload::Binary(b),
        };
        self.bus.publish(topic, &Body::Message(payload));
    }

    /// The end of a loop iteration: topics that came or went are
    /// subscribed or unsubscribed on Redis, room joins and leaves are
    /// announced, and every few seconds this node's member counts.
    pub fn sync(&mut self, topics: &mut Topics, now: u64) {
        if let Some(changes) = &mut topics.bus_changes {
            for (came, name) in changes.drain(..) {
                if came {
                    self.bus.subscribe(&name);
                } else {
                    self.bus.unsubscribe(&name);
                    self.presence.members.remove(&name);
                }
            }
        }
        self.bus.commit();
        let events = topics.bus_presence.as_mut().map(std::mem::take).unwrap_or_default();
        for change in events {
            let wants = wants_counts(topics, &change.room);
            // An anonymous member's coming and going matters only where
            // someone watches the room.
            if change.name.is_none() && !wants && !self.presence.watched(&change.room, now) {
                continue;
            }
            let event = if change.joined {
                PresenceEvent::Join
            } else {
                PresenceEvent::Leave
            };
            let body = Body::Presence {
                event,
                members: change.members,
                name: change.name.as_deref(),
                wants,
            };
            self.bus.publish(&change.room, &body);
        }
        for topic in std::mem::take(&mut self.presence.owed) {
            if let Some(id) = topics.find(&topic) {
                self.count(&topic, topics.local_members(id), wants_counts(topics, &topic));
            }
        }
        if now >= self.next_beat {
            self.next_beat = now + BEAT_MS;
            self.beat(topics, now);
            self.presence.forget(topics, now);
        }
    }

    fn count(&mut self, topic: &str, members: u32, wants: bool) {
        let body = Body::Presence {
            event: PresenceEvent::Count,
            members,
            name: None,
            wants,
        };
        self.bus.publish(topic, &body);
    }

    /// This node's member count of every active room it has members in.
    fn beat(&mut self, topics: &Topics, now: u64) {
        for (id, name) in topics.rooms() {
            let wants = topics.has_presence(id);
            if wants || self.presence.watched(name, now) {
                let members = topics.local_members(id);
                self.count(name, members, wants);
            }
        }
    }
}

/// Whether this node has members of `room` that asked for presence.
fn wants_counts(topics: &Topics, room: &str) -> bool {
    topics.find(room).is_some_and(|id| topics.has_presence(id))
}

impl Presence {
    /// Whether another node watching `room` was heard lately.
    fn watched(&self, room: &str, now: u64) -> bool {
        self.wanted.get(room).is_some_and(|&at| now < at + FORGET_MS)
    }

    /// Forgets the counts of nodes not heard of for a while, and the
    /// watchers not heard of.
    fn forget(&mut self, topics: &mut Topics, now: u64) {
        self.wanted.retain(|_, &mut at| now < at + FORGET_MS);
        let mut changed = Vec::new();
        for (topic, nodes) in &mut self.members {
            let before = nodes.len();
            nodes.retain(|_, &mut (_, at)| now < at + FORGET_MS);
            if nodes.len() != before {
                changed.push(topic.clone());
            }
        }
        for topic in changed {
            self.announce_count(topics, &topic, "count", None);
        }
    }

    /// The sum of the other nodes' members in `topic`, and a notice of it.
    fn announce_count(&mut self, topics: &mut Topics, topic: &str, event: &str, name: Option<&str>) {
        let Some(id) = topics.find(topic) else { return };
        let remote = self.members.get(topic).map_or(0, |n| n.values().map(|&(c, _)| c).sum());
        topics.remote_presence(id, event, name, remote);
    }

    /// A message from another node: delivered to this node's subscribers
    /// of its topic (and only them: it is not published again). Returns the
    /// number of recipients.
    pub fn deliver(&mut self, topics: &mut Topics, topic: &str, env: &Envelope<'_>, now: u64) -> usize {
        let Some(id) = topics.find(topic) else { return 0 };
        match env.body {
            Body::Message(p) => match message(p) {
                Some(m) => topics.publish(id, None, false, m),
                None => 0,
            },
            Body::Presence {
                event,
                members,
                name,
                wants,
            } => {
                if wants {
                    self.wanted.insert(topic.into(), now);
                }
                self.presence(topics, id, topic, env.node, event, members, name, wants, now);
                0
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn presence(
        &mut self,
        topics: &mut Topics,
        id: TopicId,
        topic: &str,
        node: u64,
        event: PresenceEvent,
        members: u32,
        name: Option<&str>,
        wants: bool,
        now: u64,
    ) {
        let nodes = self.members.entry(topic.into()).or_default();
        let known = nodes.insert(node, (members, now)).is_some();
        if members == 0 {
            nodes.remove(&node);
        }
        let event = match event {
            PresenceEvent::Join => "join",
            PresenceEvent::Leave => "leave",
            PresenceEvent::Count => "count",
        };
        self.announce_count(topics, topic, event, name);
        // A watcher we did not know of learns our count at once (at the end
        // of this iteration) rather than at our next beat.
        if wants && !known && topics.local_members(id) > 0 {
            self.owed.push(topic.into());
        }
    }
}

/// A message from the bus as the topics take it. JSON from another node was
/// checked there; it is checked again (it crossed a network).
fn message(p: WirePayload<'_>) -> Option<Message<'_>> {
    Some(match p {
        WirePayload::BareText(b) => {
            std::str::from_utf8(b).ok()?;
            Message::Bare(MessageKind::Text, b)
        }
        WirePayload::BareBinary(b) => Message::Bare(MessageKind::Binary, b),
        WirePayload::Json(b) => Message::PubSub(pubsub::json_payload(std::str::from_utf8(b).ok()?)?),
        WirePayload::Binary(b) => Message::PubSub(Payload::Binary(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::resp::{self, Incoming};
    use crate::bus::{wire, BusConfig};
    use redis_protocol::resp3::types::RangeFrame;

    /// A bus whose link is up (a fake handshake), so that what it publishes
    /// can be read back from its output.
    fn remote() -> Remote {
        let mut bus = Bus::new(BusConfig {
            nodes: vec!["127.0.0.1:6379".into()],
            cluster: false,
            username: None,
            password: None,
            db: 0,
            max_outgoing: 1 << 20,
            node: 1,
        });
        bus.poll(0, |_| {});
        bus.connected(0, 0);
        let n = bus.output(0).len();
        bus.written(0, n);
        bus.input(0, b"%1\r\n+server\r\n+redis\r\n", 0, |_, _| {}).unwrap();
        Remote::new(bus)
    }

    fn topics() -> Topics {
        let mut t = Topics::default();
        t.bus_changes = Some(Vec::new());
        t.bus_presence = Some(Vec::new());
        t
    }

    /// The presence messages published since the last call, as
    /// "room event members name wants".
    fn published(r: &mut Remote) -> Vec<String> {
        let out = r.bus.output(0).to_vec();
        r.bus.written(0, out.len());
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((Incoming::Reply(RangeFrame::Array { data, .. }), used)) = resp::next(&out[at..]).unwrap() {
            let arg = |i: usize| match &data[i] {
                RangeFrame::BlobString { data, .. } => &out[at + data.0..at + data.1],
                _ => panic!(),
            };
            if arg(0) == b"PUBLISH" {
                let topic = wire::topic_of(arg(1)).unwrap().to_string();
                if let Body::Presence {
                    event,
                    members,
                    name,
                    wants,
                } = wire::decode(arg(2)).unwrap().body
                {
                    seen.push(format!("{topic} {event:?} {members} {name:?} {wants}"));
                }
            }
            at += used;
        }
        seen
    }

    /// A presence message from another node, delivered.
    fn heard(r: &mut Remote, t: &mut Topics, room: &str, node: u64, event: PresenceEvent, members: u32, wants: bool) {
        let body = Body::Presence {
            event,
            members,
            name: None,
            wants,
        };
        let env = Envelope { node, seq: 1, body };
        r.presence.deliver(t, room, &env, 0);
    }

    #[test]
    fn rooms_nobody_watches_send_no_presence_and_watched_ones_do() {
        let mut r = remote();
        let mut t = topics();
        // 100 anonymous viewers of a ticker come and half go: nothing.
        for conn in 0..100 {
            t.join(conn, "ticker", None, 0).unwrap();
        }
        for conn in 0..50 {
            t.unsubscribe_all(conn);
        }
        r.sync(&mut t, 1);
        assert_eq!(published(&mut r), Vec::<String>::new());
        // A member that asked for presence: its join goes out, wanting counts.
        t.join(500, "chat", Some("Ann"), 0).unwrap();
        t.join(501, "chat", None, 0).unwrap();
        r.sync(&mut t, 2);
        assert_eq!(
            published(&mut r),
            [
                "chat Join 1 Some(\"Ann\") true",
                "chat Join 2 None true" // the room is watched here
            ]
        );
        // The beat counts the watched room only.
        r.sync(&mut t, BEAT_MS + 2);
        assert_eq!(published(&mut r), ["chat Count 2 None true"]);
        // Another node starts watching the ticker: it is owed our count at
        // once, and from then on the ticker's changes and beats go out.
        heard(&mut r, &mut t, "ticker", 9, PresenceEvent::Join, 1, true);
        r.sync(&mut t, BEAT_MS + 3);
        assert_eq!(published(&mut r), ["ticker Count 50 None false"]);
        t.join(600, "ticker", None, 0).unwrap();
        r.sync(&mut t, BEAT_MS + 4);
        assert_eq!(published(&mut r), ["ticker Join 51 None false"]);
        // A node that does not watch does not make it owed.
        heard(&mut r, &mut t, "chat", 10, PresenceEvent::Count, 3, false);
        r.sync(&mut t, BEAT_MS + 5);
        assert_eq!(published(&mut r), Vec::<String>::new());
        // The watcher falls silent: after a few beats the ticker is quiet
        // again (the chat keeps beating: Ann is here).
        let later = 4 * BEAT_MS + 10;
        r.sync(&mut t, later);
        let beat = published(&mut r);
        assert!(beat.contains(&"chat Count 2 None true".to_string()), "{beat:?}");
        assert!(!beat.iter().any(|b| b.starts_with("ticker")), "{beat:?}");
        t.join(601, "ticker", None, 0).unwrap();
        r.sync(&mut t, later + 1);
        assert_eq!(published(&mut r), Vec::<String>::new());
    }
}
