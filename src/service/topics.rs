//! Topics: named channels that connections subscribe to. A broadcast room
//! (`/broadcast/{room}`) is a topic with one subscription per member; a
//! `/pubsub` connection holds any number of subscriptions.
//!
//! Messages published on a topic during one loop iteration are encoded
//! once per form into the topic's batch: bare frames for room members (the
//! payload as sent), enveloped frames for `/pubsub` subscribers
//! (`{"type":"message","topic":...,"data":...}` or the binary form). A form
//! is encoded only if some subscriber wants it. At the end of the iteration
//! the loop writes each connection its share of every dirty topic's batch
//! (`net::fanout`). Subscriptions hold connection keys, never sockets.
//!
//! Subscribing and unsubscribing cost O(1) (amortised; plus a scan of the
//! connection's own list, at most `--max-subscriptions`), never O(the
//! topic's subscribers): each subscription is in two lists, its topic's and
//! its connection's, and each entry knows where the other is.

use crate::proto::deflate::{Codec, Params};
use crate::proto::frame::{self, Opcode};
use crate::proto::pubsub::{self, Payload};
use crate::proto::MessageKind;
use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::BuildHasher;

pub type TopicId = u32;

/// No batch yet this iteration.
const NO_BATCH: u32 = u32::MAX;

/// Subscription flags. The low two bits are the form the subscriber
/// wants ([`Batch::frame_range`]).
pub mod flags {
    /// Wants the enveloped form (`/pubsub`); else the bare form.
    pub const ENVELOPE: u8 = 1;
    /// Takes frames compressed by the loop's shared compressor
    /// (permessage-deflate without server context takeover, window 15).
    pub const DEFLATE: u8 = 2;
    /// Wants presence notices (`/broadcast/{room}?presence=1`).
    pub const PRESENCE: u8 = 4;
    /// The form bits.
    pub const FORM: u8 = ENVELOPE | DEFLATE;
}

/// A subscription, as its topic holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub conn: u32,
    /// Where this subscription is in the connection's own list.
    back: u16,
    pub flags: u8,
}

#[derive(Debug)]
pub struct Topic {
    pub name: Box<str>,
    subs: SmallVec<[Sub; 1]>,
    /// Index of this iteration's batch in [`Topics::batches`], or `NO_BATCH`.
    batch: u32,
    /// Subscribers that want the enveloped form (compressed or not), and
    /// presence notices.
    envelopes: u32,
    presence: u32,
}

impl Topic {
    pub fn subs(&self) -> &[Sub] {
        &self.subs
    }
}

/// A frame in a batch: where it ends in each form's buffer (it starts
/// where the previous one ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// By form: bare, enveloped, bare compressed, enveloped compressed.
    pub ends: [usize; 4],
    /// The connection that published it (`None`: HTTP publish, presence).
    pub sender: Option<u32>,
    /// A presence notice: for subscribers that asked only, bare form only.
    pub presence: bool,
}

/// One dirty topic's frames of this iteration, encoded once per form that
/// some subscriber wants: bare and enveloped, each plain and compressed.
#[derive(Debug, Default)]
pub struct Batch {
    pub topic: TopicId,
    /// By form (`flags::FORM`).
    pub bufs: [Vec<u8>; 4],
    pub frames: Vec<Frame>,
}

impl Batch {
    /// Where frame `i` lies in the buffer of `form` (start == end: not
    /// encoded in that form).
    pub fn frame_range(&self, i: usize, form: u8) -> (usize, usize) {
        let f = usize::from(form & flags::FORM);
        let start = if i == 0 { 0 } else { self.frames[i - 1].ends[f] };
        (start, self.frames[i].ends[f])
    }

    pub fn buffer(&self, form: u8) -> &[u8] {
        &self.bufs[usize::from(form & flags::FORM)]
    }

    fn push_frame(&mut self, sender: Option<u32>, presence: bool) {
        let ends = [0, 1, 2, 3].map(|f| self.bufs[f].len());
        self.frames.push(Frame { ends, sender, presence });
    }
}

/// A message to publish, as it came.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// From a room member or an HTTP publish: the payload as sent.
    Bare(MessageKind, &'a [u8]),
    /// From a `/pubsub` publish.
    PubSub(Payload<'a>),
}

/// A room member joined or left (for the bus to announce to the other
/// nodes): the room, the member's name if it gave one, and the room's
/// members on this node after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub room: Box<str>,
    pub joined: bool,
    pub name: Option<Box<str>>,
    pub members: u32,
}

/// Why a subscription change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubError {
    TooMany,
    NotSubscribed,
}

/// Every topic, the subscriptions, and this iteration's batches.
pub struct Topics {
    topics: Slab<Topic>,
    /// Topic ids, hashed by the name they point to.
    index: HashTable<TopicId>,
    hasher: std::hash::RandomState,
    /// Each connection's subscriptions: (topic, position in its list).
    lists: HashMap<u32, Vec<(TopicId, u32)>>,
    /// Names of room members that asked for presence notices.
    names: HashMap<u32, Box<str>>,
    /// The batches of the topics published to this iteration, in order; the
    /// vector and its buffers are kept from one iteration to the next.
    batches: Vec<Batch>,
    /// How many of `batches` are in use.
    dirty: usize,
    /// Topics left without subscribers while dirty: removed after delivery.
    orphans: Vec<TopicId>,
    /// With a bus: topics that came (true) or went (false), for the bus to
    /// subscribe or unsubscribe on Redis; and room member events (join:
    /// true), for it to announce to the other nodes.
    pub bus_changes: Option<Vec<(bool, Box<str>)>>,
    pub bus_presence: Option<Vec<PresenceChange>>,
    /// Room members on other nodes, by topic (from the bus).
    remote_members: HashMap<TopicId, u32>,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            topics: Slab::new(),
            index: HashTable::new(),
            hasher: std::hash::RandomState::new(),
            lists: HashMap::new(),
            names: HashMap::new(),
            batches: Vec::new(),
            dirty: 0,
            orphans: Vec::new(),
            bus_changes: None,
            bus_presence: None,
            remote_members: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics")
            .field("topics", &self.topics.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}

impl Topics {
    /// Whether subscription or presence changes wait for the bus.
    pub fn bus_pending(&self) -> bool {
        self.bus_changes.as_ref().is_some_and(|c| !c.is_empty())
            || self.bus_presence.as_ref().is_some_and(|p| !p.is_empty())
    }

    pub fn find(&self, name: &str) -> Option<TopicId> {
        let hash = self.hasher.hash_one(name);
        self.index
            .find(hash, |&id| &*self.topics[id as usize].name == name)
            .copied()
    }

    pub fn get(&self, id: TopicId) -> Option<&Topic> {
        self.topics.get(id as usize)
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Number of subscriptions in all.
    pub fn subscriptions(&self) -> usize {
        self.lists.values().map(Vec::len).sum()
    }

    /// The topics connection `conn` is subscribed to.
    pub fn subscribed(&self, conn: u32) -> &[(TopicId, u32)] {
        self.lists.get(&conn).map_or(&[], Vec::as_slice)
    }

    fn find_or_create(&mut self, name: &str) -> TopicId {
        if let Some(id) = self.find(name) {
            return id;
        }
        let id = self.topics.insert(Topic {
            name: name.into(),
            subs: SmallVec::new(),
            batch: NO_BATCH,
            envelopes: 0,
            presence: 0,
        }) as TopicId;
        let (topics, hasher) = (&self.topics, &self.hasher);
        self.index.insert_unique(hasher.hash_one(name), id, |&i| {
            hasher.hash_one(&*topics[i as usize].name)
        });
        if let Some(changes) = &mut self.bus_changes {
            changes.push((true, name.into()));
        }
        id
    }

    /// Subscribes `conn` to topic `name` (created if new) with `flags`, at
    /// most `max` subscriptions per connection. Subscribing again is a
    /// no-op. Returns the topic.
    pub fn subscribe(&mut self, conn: u32, name: &str, flags: u8, max: usize) -> Result<TopicId, SubError> {
        if let Some(id) = self.find(name) {
            if self.subscribed(conn).iter().any(|&(t, _)| t == id) {
                return Ok(id);
            }
        }
        let count = self.subscribed(conn).len();
        if count >= max.min(usize::from(u16::MAX)) {
            return Err(SubError::TooMany);
        }
        let id = self.find_or_create(name);
        let topic = &mut self.topics[id as usize];
        topic.subs.push(Sub {
            conn,
            back: count as u16,
            flags,
        });
        topic.envelopes += u32::from(flags & flags::ENVELOPE != 0);
        topic.presence += u32::from(flags & flags::PRESENCE != 0);
        let at = (topic.subs.len() - 1) as u32;
        self.lists.entry(conn).or_default().push((id, at));
        Ok(id)
    }

    /// Unsubscribes `conn` from topic `name`.
    pub fn unsubscribe(&mut self, conn: u32, name: &str) -> Result<TopicId, SubError> {
        let id = self.find(name).ok_or(SubError::NotSubscribed)?;
        let at = self
            .subscribed(conn)
            .iter()
            .position(|&(t, _)| t == id)
            .ok_or(SubError::NotSubscribed)?;
        self.remove(conn, at);
        Ok(id)
    }

    /// Removes the subscription at position `at` of `conn`'s list, keeping
    /// both lists' back-pointers right; a topic left empty goes.
    fn remove(&mut self, conn: u32, at: usize) {
        let Some(list) = self.lists.get_mut(&conn) else { return };
        let (id, i) = list.swap_remove(at);
        if let Some(&(moved_topic, moved_at)) = list.get(at) {
            self.topics[moved_topic as usize].subs[moved_at as usize].back = at as u16;
        }
        if list.is_empty() {
            self.lists.remove(&conn);
        }
        let topic = &mut self.topics[id as usize];
        let gone = topic.subs.swap_remove(i as usize);
        topic.envelopes -= u32::from(gone.flags & flags::ENVELOPE != 0);
        topic.presence -= u32::from(gone.flags & flags::PRESENCE != 0);
        if let Some(moved) = topic.subs.get(i as usize).copied() {
            if let Some(l) = self.lists.get_mut(&moved.conn) {
                l[moved.back as usize].1 = i;
            }
        }
        let topic = &self.topics[id as usize];
        if topic.subs.is_empty() {
            if topic.batch == NO_BATCH {
                self.drop_topic(id);
            } else {
                self.orphans.push(id);
            }
        }
    }

    fn drop_topic(&mut self, id: TopicId) {
        let topic = self.topics.remove(id as usize);
        self.remote_members.remove(&id);
        if let Some(changes) = &mut self.bus_changes {
            changes.push((false, topic.name.clone()));
        }
        let hash = self.hasher.hash_one(&*topic.name);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
    }

    /// Takes `conn` out of every topic (it is closing or gone). A room
    /// member's leaving is announced to the members that asked for
    /// presence notices.
    pub fn unsubscribe_all(&mut self, conn: u32) {
        let name = self.names.remove(&conn);
        while let Some(&(id, i)) = self.lists.get(&conn).and_then(|l| l.last()) {
            let member = self.topics[id as usize].subs[i as usize].flags & flags::ENVELOPE == 0;
            if member {
                // (Before the room may go with its last member.)
                self.record_presence(id, false, name.as_deref());
            }
            let at = self.lists[&conn].len() - 1;
            self.remove(conn, at);
            if member && self.topics.contains(id as usize) {
                self.notify(id, "leave", name.as_deref());
            }
        }
    }

    /// A room member joins `name`: one subscription in the bare form (or
    /// its compressed version, with `form` = `flags::DEFLATE`); with
    /// `presence`, it gets join/leave notices under that name (its own join
    /// first).
    pub fn join(&mut self, conn: u32, name: &str, presence: Option<&str>, form: u8) -> Result<TopicId, SubError> {
        let flags = form | if presence.is_some() { flags::PRESENCE } else { 0 };
        let id = self.subscribe(conn, name, flags, 1)?;
        if let Some(p) = presence {
            self.names.insert(conn, p.into());
        }
        self.record_presence(id, true, presence);
        self.notify(id, "join", presence);
        Ok(id)
    }

    /// The rooms with members on this node (topics with subscribers in the
    /// bare form).
    pub fn rooms(&self) -> impl Iterator<Item = (TopicId, &str)> {
        self.topics
            .iter()
            .filter(|(_, t)| t.subs.len() as u32 > t.envelopes)
            .map(|(id, t)| (id as TopicId, &*t.name))
    }

    /// Notes a room member's join (after it) or leave (before it) for the
    /// bus: the room may be gone by the time the bus sends it, so the change
    /// carries the room's name.
    fn record_presence(&mut self, id: TopicId, joined: bool, name: Option<&str>) {
        let Some(changes) = &mut self.bus_presence else { return };
        let Some(t) = self.topics.get(id as usize) else { return };
        // A leave is recorded before the member goes.
        let members = t.subs.len() as u32 - u32::from(!joined);
        let room = t.name.clone();
        changes.push(PresenceChange {
            room,
            joined,
            name: name.map(Into::into),
            members,
        });
    }

    /// The members of room `id` on this node.
    /// Whether members of room `id` here asked for presence notices.
    pub fn has_presence(&self, id: TopicId) -> bool {
        self.topics.get(id as usize).is_some_and(|t| t.presence > 0)
    }

    pub fn local_members(&self, id: TopicId) -> u32 {
        self.topics.get(id as usize).map_or(0, |t| t.subs.len() as u32)
    }

    /// Another node's room member event, with the members now on the
    /// other nodes in all: announced to this node's members that asked, as
    /// a join or leave, or, for a change of count alone, a `count` notice.
    pub fn remote_presence(&mut self, id: TopicId, event: &str, name: Option<&str>, remote: u32) {
        if !self.topics.contains(id as usize) {
            return;
        }
        let before = self.remote_members.insert(id, remote).unwrap_or(0);
        if event != "count" || before != remote {
            self.notify(id, event, name);
        }
    }

    /// Queues a presence notice for the members that asked for them:
    /// `{"type":"presence","event":"join","name":"Alice","members":3}`
    /// (`name` is null for members that gave none).
    fn notify(&mut self, id: TopicId, event: &str, name: Option<&str>) {
        let topic = &self.topics[id as usize];
        if topic.presence == 0 {
            return;
        }
        // serde_json escapes the name (or writes null).
        let name = serde_json::to_string(&name).expect("a string serialises");
        let members = topic.subs.len() as u64 + u64::from(self.remote_members.get(&id).copied().unwrap_or(0));
        let notice = format!(r#"{{"type":"presence","event":"{event}","name":{name},"members":{members}}}"#);
        let b = self.dirty_batch(id);
        let batch = &mut self.batches[b];
        // Bare form only: presence is for room members (who may take it
        // compressed: the compressed forms are made at delivery).
        frame::write(&mut batch.bufs[0], MessageKind::Text.opcode(), notice.as_bytes(), None);
        batch.push_frame(None, true);
    }

    /// The index of this iteration's batch of topic `id`, made dirty if it
    /// was not.
    fn dirty_batch(&mut self, id: TopicId) -> usize {
        let topic = &mut self.topics[id as usize];
        if topic.batch == NO_BATCH {
            topic.batch = self.dirty as u32;
            if self.dirty == self.batches.len() {
                self.batches.push(Batch::default());
            }
            self.batches[self.dirty].topic = id;
            self.dirty += 1;
        }
        topic.batch as usize
    }

    /// Encodes a message once per form its subscribers want into topic
    /// `id`'s batch. Returns the number of recipients (the subscribers, but
    /// the sender unless `to_sender`).
    pub fn publish(&mut self, id: TopicId, sender: Option<u32>, to_sender: bool, message: Message<'_>) -> usize {
        let Some(topic) = self.topics.get(id as usize) else {
            return 0;
        };
        let excluded = match sender {
            Some(s) if !to_sender => self.subscribed(s).iter().any(|&(t, _)| t == id),
            _ => false,
        };
        let recipients = topic.subs.len() - usize::from(excluded);
        if recipients == 0 {
            return 0;
        }
        let (wants_bare, wants_env) = (topic.subs.len() as u32 > topic.envelopes, topic.envelopes > 0);
        let b = self.dirty_batch(id);
        let (batch, topic_name) = (&mut self.batches[b], &self.topics[id as usize].name);
        if wants_bare {
            match message {
                Message::Bare(kind, bytes) => frame::write(&mut batch.bufs[0], kind.opcode(), bytes, None),
                Message::PubSub(p) => {
                    let (kind, bytes) = pubsub::bare(p);
                    frame::write(&mut batch.bufs[0], kind.opcode(), &bytes, None);
                }
            }
        }
        if wants_env {
            let payload = match message {
                Message::Bare(MessageKind::Text, bytes) => {
                    // The session delivered it as text: valid UTF-8.
                    pubsub::classify_text(std::str::from_utf8(bytes).unwrap_or_default())
                }
                Message::Bare(MessageKind::Binary, bytes) => Payload::Binary(bytes),
                Message::PubSub(p) => p,
            };
            pubsub::write_message_frame(&mut batch.bufs[1], topic_name, payload);
        }
        batch.push_frame(sender, false);
        recipients
    }

    /// Makes the compressed forms that subscribers of this iteration's
    /// batches want: each frame compressed once (with the loop's shared
    /// compressor, window 15, no context takeover), or copied as it is if it
    /// is shorter than the threshold (compression is per message, RFC 7692
    /// §6) or if it does not compress. Presence notices stay plain.
    pub fn compress_batches(&mut self, codec: &mut Codec) {
        let params = Params {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_max_window_bits_answered: false,
        };
        for batch in &mut self.batches[..self.dirty] {
            let Some(topic) = self.topics.get(batch.topic as usize) else {
                continue;
            };
            // Which compressed forms anyone takes (a scan of the subscribers,
            // as their delivery is; it stops once both are found).
            let mut wanted = [false; 4];
            for sub in topic.subs.iter().filter(|s| s.flags & flags::DEFLATE != 0) {
                wanted[usize::from(sub.flags & flags::FORM)] = true;
                if wanted[2] && wanted[3] {
                    break;
                }
            }
            for plain in [0usize, 1] {
                let zipped = plain | usize::from(flags::DEFLATE);
                if !wanted[zipped] {
                    continue;
                }
                let (src, dst) = split_pair(&mut batch.bufs, plain, zipped);
                let mut start = 0;
                for f in batch.frames.iter_mut() {
                    let frame_bytes = &src[start..f.ends[plain]];
                    start = f.ends[plain];
                    compress_frame(frame_bytes, f.presence, &params, codec, dst);
                    f.ends[zipped] = dst.len();
                }
            }
        }
    }

    /// Whether anything was published this iteration (a batch waits for
    /// delivery).
    pub fn has_batches(&self) -> bool {
        self.dirty != 0
    }

    /// This iteration's batches (for delivery).
    pub fn batches(&self) -> &[Batch] {
        &self.batches[..self.dirty]
    }

    /// The iteration is over: empties the batches (keeping their memory,
    /// up to a bound), and drops topics that lost their last subscriber.
    pub fn end_iteration(&mut self, keep: usize) {
        for b in &mut self.batches[..self.dirty] {
            if let Some(t) = self.topics.get_mut(b.topic as usize) {
                t.batch = NO_BATCH;
            }
            b.bufs.iter_mut().for_each(Vec::clear);
            b.frames.clear();
            if b.bufs.iter().map(Vec::capacity).sum::<usize>() > keep {
                *b = Batch::default();
            }
        }
        self.dirty = 0;
        for id in std::mem::take(&mut self.orphans) {
            if self.topics.get(id as usize).is_some_and(|t| t.subs.is_empty()) {
                self.drop_topic(id);
            }
        }
    }
}

/// Two different buffers of the four, one to read and one to write.
fn split_pair(bufs: &mut [Vec<u8>; 4], read: usize, write: usize) -> (&[u8], &mut Vec<u8>) {
    debug_assert!(read < write);
    let (low, high) = bufs.split_at_mut(write);
    (&low[read], &mut high[0])
}

/// Appends `frame` (one plain server frame, FIN set) to `out`, compressed
/// with RSV1 if it is a data frame worth compressing, else as it is.
fn compress_frame(frame: &[u8], presence: bool, params: &Params, codec: &mut Codec, out: &mut Vec<u8>) {
    let Ok(frame::Decoded::Complete(h, n)) = frame::decode(frame) else {
        out.extend_from_slice(frame);
        return;
    };
    let payload = &frame[n..];
    if presence || !codec.config.compresses(payload.len()) {
        out.extend_from_slice(frame);
        return;
    }
    codec.deflated.clear();
    let compressed = codec
        .shared
        .compressor(params)
        .compress(payload, true, &mut codec.deflated);
    match (compressed, Opcode::from_u8(h.opcode)) {
        (Ok(()), Some(op)) if codec.deflated.len() < payload.len() => frame::write_compressed(out, op, &codec.deflated),
        _ => out.extend_from_slice(frame),
    }
}

/// Parses the room of a `/broadcast` path: `/broadcast` is the room
/// `default`; `/broadcast/{room}` is `{room}` percent-decoded, which must be
/// a valid topic name (1 to 128 bytes of UTF-8 without control characters).
pub fn room_name(path: &str) -> Option<Result<String, &'static str>> {
    let rest = path.strip_prefix("/broadcast")?;
    if rest.is_empty() {
        return Some(Ok("default".to_string()));
    }
    let raw = rest.strip_prefix('/')?;
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8();
    Some(match decoded {
        Err(_) => Err("room name is not UTF-8"),
        Ok(n) => match pubsub::validate_topic(&n) {
            Ok(()) => Ok(n.into_owned()),
            Err(e) => Err(e.reason()),
        },
    })
}

#[cfg(test)]
mod tests;
