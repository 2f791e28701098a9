//! Topics across nodes: what the services hand to the [`Bus`] and take from
//! it. Every message published on this node goes to the bus once (it was
//! delivered locally already); every message from another node is
//! delivered locally only. Room presence is cluster-wide: each node
//! announces its members' joins and leaves with its member count, and
//! repeats its counts every few seconds, so that every node knows the
//! rooms' members on all nodes (a node that vanishes is forgotten after a
//! few missed beats).

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
    /// Rooms where a node we did not know of spoke: it is owed our count.
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
            let event = if change.joined {
                PresenceEvent::Join
            } else {
                PresenceEvent::Leave
            };
            let body = Body::Presence {
                event,
                members: change.members,
                name: change.name.as_deref(),
            };
            self.bus.publish(&change.room, &body);
        }
        for topic in std::mem::take(&mut self.presence.owed) {
            if let Some(id) = topics.find(&topic) {
                self.count(&topic, topics.local_members(id));
            }
        }
        if now >= self.next_beat {
            self.next_beat = now + BEAT_MS;
            self.beat(topics);
            self.presence.forget(topics, now);
        }
    }

    fn count(&mut self, topic: &str, members: u32) {
        let body = Body::Presence {
            event: PresenceEvent::Count,
            members,
            name: None,
        };
        self.bus.publish(topic, &body);
    }

    /// This node's member count of every room it has members in.
    fn beat(&mut self, topics: &Topics) {
        for (id, name) in topics.rooms() {
            let members = topics.local_members(id);
            self.count(name, members);
        }
    }
}

impl Presence {
    /// Forgets the counts of nodes not heard of for a while.
    fn forget(&mut self, topics: &mut Topics, now: u64) {
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
            Body::Presence { event, members, name } => {
                self.presence(topics, id, topic, env.node, event, members, name, now);
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
        // A node we did not know of learns our count at once (at the end of
        // this iteration) rather than at our next beat.
        if !known && topics.local_members(id) > 0 {
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
