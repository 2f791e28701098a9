//! The bus: topics (and so rooms) across wsloop processes and machines,
//! over Redis pub/sub, or Redis Cluster sharded pub/sub. Sans-IO, like the
//! protocol core: the loop hands it what a Redis socket did (connected,
//! bytes, closed) and the time, and takes back bytes to write, sockets to
//! open, and the messages other nodes published.
//!
//! - A topic with local subscribers is subscribed on Redis (`SUBSCRIBE`,
//!   or `SSUBSCRIBE` on the shard that owns its slot), and unsubscribed
//!   when its last local subscriber leaves.
//! - A message published on this node is delivered locally at once (by the
//!   caller) and published once to Redis; every other node delivers it to
//!   its own subscribers. A node drops its own messages when Redis hands
//!   them back (each carries the publishing node's id).
//! - Everything published in one loop iteration goes out in one write per
//!   link: commands only accumulate here until the loop writes them.
//! - Faults: a link that is down drops what would be published through it
//!   (counted: at-most-once) and reconnects with jittered back-off; once up
//!   it subscribes every topic again. The bytes waiting for a link are
//!   bounded (`max_outgoing`); past it publishes are dropped and counted,
//!   so a slow Redis never makes the loop wait or grow.
//! - Losses the other way (a link cut while messages flowed, Redis cutting
//!   a subscriber that fell behind its `client-output-buffer-limit`) show
//!   as gaps in each publishing node's per-topic sequence numbers, counted.

pub mod resp;
pub mod wire;

use resp::Incoming;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use wire::{Body, Envelope};

/// Redis Cluster's slots (keys and shard channels hash to one of these).
const SLOTS: usize = 16384;
/// No link owns the slot (yet).
const NO_LINK: u16 = u16::MAX;
/// Reconnection back-off: from this, doubling, up to the cap; each wait is
/// jittered by ±50%.
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1_000;
/// A connect (or handshake) that takes longer has failed.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Cluster: how often the slot map is read again anyway.
const REFRESH_EVERY_MS: u64 = 10_000;
/// Sequence numbers kept (sent, and seen per publishing node); past it the
/// tables start over (a restart of the count, not a loss).
const SEQ_ENTRIES: usize = 100_000;

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// `host:port` of the Redis server, or of cluster nodes to start from.
    pub nodes: Vec<String>,
    pub cluster: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The database to `SELECT` (not in a cluster).
    pub db: u32,
    /// Bytes of commands that may wait for one link; past it, publishes
    /// through it are dropped.
    pub max_outgoing: usize,
    /// This node's id.
    pub node: u64,
}

/// What the bus counted (`/metrics`).
#[derive(Debug, Default, Clone)]
pub struct BusStats {
    pub published: u64,
    pub received: u64,
    /// Not published: link down, over `max_outgoing`, or refused (MOVED).
    pub dropped: u64,
    /// Messages from other nodes that never arrived (sequence gaps).
    pub lost: u64,
    pub reconnects: u64,
    /// Messages on our channels that were not bus messages.
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Waiting to reconnect.
    Down {
        retry_at: u64,
    },
    /// The loop was asked to connect at `since`.
    Connecting {
        since: u64,
    },
    /// Connected; the handshake's replies are awaited.
    Handshake {
        since: u64,
    },
    Up,
    /// Cluster: a starting point that is not a primary; not used again.
    Retired,
}

/// A reply the link is waiting for, in order.
#[derive(Debug)]
enum Expect {
    Hello,
    Select,
    Slots,
    Publish,
    /// The `PING` after subscribe commands: an error before its `PONG` means
    /// they failed (a slot that moved).
    Check {
        topics: Vec<Box<str>>,
        failed: bool,
    },
}

#[derive(Debug)]
struct Link {
    addr: String,
    state: LinkState,
    /// Commands not written yet.
    out: Vec<u8>,
    /// Input not decoded yet (a frame split across reads).
    input: Vec<u8>,
    expect: VecDeque<Expect>,
    /// Failed attempts in a row (for the back-off).
    attempts: u32,
}

impl Link {
    fn new(addr: String) -> Link {
        Link {
            addr,
            state: LinkState::Down { retry_at: 0 },
            out: Vec::new(),
            input: Vec::new(),
            expect: VecDeque::new(),
            attempts: 0,
        }
    }
}

/// What the bus asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Open a TCP connection for link `index` to `addr`.
    Connect { index: usize, addr: String },
    /// Close link `index`'s socket (it failed, or its handshake timed out).
    Close { index: usize },
}

/// The bus's state (see the module documentation).
pub struct Bus {
    config: BusConfig,
    links: Vec<Link>,
    /// Cluster: the link that owns each slot.
    slots: Vec<u16>,
    /// Cluster: read the slot map again at the next chance.
    refresh: bool,
    /// Some wanted topic is not subscribed: see `subscribe_pending`.
    unsubscribed: bool,
    next_refresh: u64,
    /// Topics with local subscribers, and the link each is subscribed on
    /// (`None`: not yet, or it has to be again).
    wanted: HashMap<Box<str>, Option<u16>>,
    hasher: std::hash::RandomState,
    /// Our sequence number per topic (by hash), and the last one seen per
    /// (node, topic hash).
    sent: HashMap<u64, u64>,
    seen: HashMap<(u64, u64), u64>,
    rng: u64,
    scratch: Vec<u8>,
    pub stats: BusStats,
    /// What Redis said when it refused the handshake (for the log).
    pub refusal: Option<String>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("links", &self.links)
            .field("wanted", &self.wanted.len())
            .finish()
    }
}

impl Bus {
    pub fn new(config: BusConfig) -> Bus {
        let links = config.nodes.iter().cloned().map(Link::new).collect();
        let rng = config.node | 1;
        Bus {
            slots: if config.cluster {
                vec![NO_LINK; SLOTS]
            } else {
                Vec::new()
            },
            config,
            links,
            refresh: true,
            unsubscribed: false,
            next_refresh: 0,
            wanted: HashMap::new(),
            hasher: std::hash::RandomState::new(),
            sent: HashMap::new(),
            seen: HashMap::new(),
            rng,
            scratch: Vec::new(),
            stats: BusStats::default(),
            refusal: None,
        }
    }

    pub fn node(&self) -> u64 {
        self.config.node
    }

    /// Whether the bus can carry every topic: its link is up (with a
    /// cluster: a primary is known and up for every slot).
    pub fn is_up(&self) -> bool {
        if !self.config.cluster {
            return self.links.first().is_some_and(|l| l.state == LinkState::Up);
        }
        self.slots
            .iter()
            .all(|&l| l != NO_LINK && self.links[l as usize].state == LinkState::Up)
    }

    /// Whether link `index` is up (its handshake done).
    pub fn link_up(&self, index: usize) -> bool {
        self.links.get(index).is_some_and(|l| l.state == LinkState::Up)
    }

    /// Topics subscribed (or to be) on Redis.
    pub fn topics(&self) -> usize {
        self.wanted.len()
    }

    /// The link that carries `topic`, if known (cluster: the one that owns
    /// the slot of its channel). Uses `scratch`.
    fn link_of(&mut self, topic: &str) -> Option<usize> {
        if !self.config.cluster {
            return Some(0);
        }
        self.scratch.clear();
        wire::write_channel(&mut self.scratch, topic);
        let slot = usize::from(redis_protocol::redis_keyslot(&self.scratch)) % SLOTS;
        match self.slots[slot] {
            NO_LINK => None,
            l => Some(l as usize),
        }
    }

    /// `topic` got its first local subscriber. The command goes out with
    /// the others of this iteration at [`commit`](Self::commit).
    pub fn subscribe(&mut self, topic: &str) {
        if self.wanted.contains_key(topic) {
            return;
        }
        self.wanted.insert(topic.into(), None);
        self.unsubscribed = true;
    }

    /// The end of a loop iteration: the topics that came during it are
    /// subscribed, a few channels per command.
    pub fn commit(&mut self) {
        self.subscribe_pending();
    }

    /// `topic` lost its last local subscriber.
    pub fn unsubscribe(&mut self, topic: &str) {
        let Some(Some(link)) = self.wanted.remove(topic) else {
            return;
        };
        let link = link as usize;
        if self.links[link].state == LinkState::Up {
            self.scratch.clear();
            wire::write_channel(&mut self.scratch, topic);
            let verb: &[u8] = if self.config.cluster {
                b"SUNSUBSCRIBE"
            } else {
                b"UNSUBSCRIBE"
            };
            resp::command(&mut self.links[link].out, &[verb, &self.scratch]);
        }
    }

    /// Sends the subscribe commands of wanted topics not subscribed yet
    /// whose link is up (one `SUBSCRIBE` for all of a link's; `SSUBSCRIBE`
    /// one by one, its channels must share a slot), each batch followed by
    /// a `PING` that tells whether it failed.
    fn subscribe_pending(&mut self) {
        if !std::mem::take(&mut self.unsubscribed) {
            return;
        }
        let mut batches: HashMap<usize, Vec<Box<str>>> = HashMap::new();
        let pending: Vec<Box<str>> = self
            .wanted
            .iter()
            .filter(|(_, l)| l.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        for topic in pending {
            let up = self.link_of(&topic).filter(|&l| self.links[l].state == LinkState::Up);
            let Some(link) = up else {
                self.unsubscribed = true; // still to do, once its link is up
                continue;
            };
            self.wanted.insert(topic.clone(), Some(link as u16));
            batches.entry(link).or_default().push(topic);
        }
        for (link, topics) in batches {
            let mut channels: Vec<Vec<u8>> = Vec::with_capacity(topics.len());
            for t in &topics {
                let mut c = Vec::new();
                wire::write_channel(&mut c, t);
                channels.push(c);
            }
            let l = &mut self.links[link];
            if self.config.cluster {
                for c in &channels {
                    resp::command(&mut l.out, &[b"SSUBSCRIBE", c]);
                }
            } else {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(channels.iter().map(Vec::as_slice));
                for chunk in args[1..].chunks(5) {
                    let mut cmd: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                    cmd.extend_from_slice(chunk);
                    resp::command(&mut l.out, &cmd);
                }
            }
            resp::command(&mut l.out, &[b"PING"]);
            l.expect.push_back(Expect::Check { topics, failed: false });
        }
    }

    /// Publishes a message (or a presence change) of this node on `topic`.
    /// Dropped, and counted, if its link is not up or is too far behind.
    pub fn publish(&mut self, topic: &str, body: &Body<'_>) {
        let Some(link) = self.link_of(topic) else {
            self.stats.dropped += 1;
            return;
        };
        let l = &self.links[link];
        if l.state != LinkState::Up || l.out.len() > self.config.max_outgoing {
            self.stats.dropped += 1;
            return;
        }
        let hash = self.hasher.hash_one(topic);
        if self.sent.len() >= SEQ_ENTRIES && !self.sent.contains_key(&hash) {
            self.sent.clear();
        }
        let seq = self.sent.entry(hash).or_insert(0);
        *seq += 1;
        let seq = *seq;
        self.scratch.clear();
        wire::write_channel(&mut self.scratch, topic);
        let channel_len = self.scratch.len();
        wire::encode(&mut self.scratch, self.config.node, seq, body);
        let (channel, payload) = self.scratch.split_at(channel_len);
        let verb: &[u8] = if self.config.cluster { b"SPUBLISH" } else { b"PUBLISH" };
        let l = &mut self.links[link];
        resp::command(&mut l.out, &[verb, channel, payload]);
        l.expect.push_back(Expect::Publish);
        self.stats.published += 1;
    }

    /// The loop's chores: links to connect (back-off over), handshakes that
    /// took too long, a slot map to read again. Calls `act` for each.
    pub fn poll(&mut self, now: u64, mut act: impl FnMut(Request)) {
        for (index, l) in self.links.iter_mut().enumerate() {
            match l.state {
                LinkState::Down { retry_at } if retry_at <= now => {
                    l.state = LinkState::Connecting { since: now };
                    act(Request::Connect {
                        index,
                        addr: l.addr.clone(),
                    });
                }
                LinkState::Connecting { since } | LinkState::Handshake { since }
                    if now >= since + CONNECT_TIMEOUT_MS =>
                {
                    act(Request::Close { index });
                }
                _ => {}
            }
        }
        if self.config.cluster && (self.refresh || now >= self.next_refresh) {
            if let Some(l) = self.links.iter_mut().find(|l| l.state == LinkState::Up) {
                resp::command(&mut l.out, &[b"CLUSTER", b"SLOTS"]);
                l.expect.push_back(Expect::Slots);
                self.refresh = false;
                self.next_refresh = now + REFRESH_EVERY_MS;
            }
        }
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let links = self.links.iter().filter_map(|l| match l.state {
            LinkState::Down { retry_at } => Some(retry_at),
            LinkState::Connecting { since } | LinkState::Handshake { since } => Some(since + CONNECT_TIMEOUT_MS),
            _ => None,
        });
        let refresh = self.config.cluster.then_some(self.next_refresh);
        links.chain(refresh).min()
    }

    /// Link `index`'s TCP connection is established: the handshake goes
    /// out (`HELLO 3` with the credentials, the database, the slot map).
    pub fn connected(&mut self, index: usize, now: u64) {
        let config = &self.config;
        let l = &mut self.links[index];
        l.state = LinkState::Handshake { since: now };
        l.out.clear();
        l.input.clear();
        l.expect.clear();
        let setname = format!("wsloop-{:016x}", config.node);
        match (&config.username, &config.password) {
            (user, Some(pass)) => {
                let user = user.as_deref().unwrap_or("default");
                resp::command(&mut l.out, &[b"HELLO", b"3", b"AUTH", user.as_bytes(), pass.as_bytes()]);
            }
            _ => resp::command(&mut l.out, &[b"HELLO", b"3", b"SETNAME", setname.as_bytes()]),
        }
        l.expect.push_back(Expect::Hello);
        if !config.cluster && config.db != 0 {
            let db = config.db.to_string();
            resp::command(&mut l.out, &[b"SELECT", db.as_bytes()]);
            l.expect.push_back(Expect::Select);
        }
        if config.cluster {
            resp::command(&mut l.out, &[b"CLUSTER", b"SLOTS"]);
            l.expect.push_back(Expect::Slots);
        }
    }

    /// Link `index` is closed (by Redis, an error, or a timeout): it is
    /// retried after a jittered back-off; its topics are subscribed again
    /// once it is back.
    pub fn closed(&mut self, index: usize, now: u64) {
        let was_up = self.links[index].state == LinkState::Up;
        let l = &mut self.links[index];
        if l.state == LinkState::Retired {
            return;
        }
        l.attempts = if was_up { 0 } else { l.attempts.saturating_add(1) };
        let base = (BACKOFF_MIN_MS << l.attempts.min(8)).min(BACKOFF_MAX_MS);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let wait = base / 2 + self.rng % base.max(1);
        let l = &mut self.links[index];
        l.state = LinkState::Down { retry_at: now + wait };
        // What was waiting for it is lost: dropped, not published (whether
        // Redis took it before the link broke is unknown: at most once).
        let unanswered = l.expect.iter().filter(|e| matches!(e, Expect::Publish)).count() as u64;
        self.stats.dropped += unanswered;
        self.stats.published = self.stats.published.saturating_sub(unanswered);
        l.out.clear();
        l.input.clear();
        l.expect.clear();
        self.stats.reconnects += u64::from(was_up);
        for link in self.wanted.values_mut() {
            if *link == Some(index as u16) {
                *link = None;
                self.unsubscribed = true;
            }
        }
        if self.config.cluster {
            self.refresh = true;
        }
    }

    /// The bytes waiting to be written to link `index`.
    pub fn output(&self, index: usize) -> &[u8] {
        &self.links[index].out
    }

    /// `n` bytes of link `index`'s output were written.
    pub fn written(&mut self, index: usize, n: usize) {
        self.links[index].out.drain(..n);
    }

    /// Links (their indexes are stable).
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Bytes read from link `index`: replies are checked, and each message
    /// another node published is handed to `deliver` (topic, message).
    /// `Err` if Redis said something the link cannot go on after: the
    /// caller closes it (then [`closed`](Self::closed)).
    pub fn input(
        &mut self,
        index: usize,
        bytes: &[u8],
        now: u64,
        mut deliver: impl FnMut(&str, &Envelope<'_>),
    ) -> Result<(), &'static str> {
        let mut input = std::mem::take(&mut self.links[index].input);
        input.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match resp::next(&input[at..]) {
                Ok(None) => break Ok(()),
                Ok(Some((incoming, used))) => {
                    let frame_at = at;
                    at += used;
                    if let Err(e) = self.on_incoming(index, &input[frame_at..at], incoming, now, &mut deliver) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        input.drain(..at);
        self.links[index].input = input;
        self.subscribe_pending();
        result
    }

    fn on_incoming(
        &mut self,
        index: usize,
        frame_bytes: &[u8],
        incoming: Incoming<'_>,
        now: u64,
        deliver: &mut impl FnMut(&str, &Envelope<'_>),
    ) -> Result<(), &'static str> {
        match incoming {
            Incoming::Message { channel, payload } => {
                self.on_message(channel, payload, deliver);
                Ok(())
            }
            Incoming::Unsubscribed { channel } => {
                // Ours (gone from `wanted`), or a slot that moved away from
                // this shard: subscribe again where it is now.
                if let Some(t) = wire::topic_of(channel) {
                    if let Some(link) = self.wanted.get_mut(t) {
                        *link = None;
                        self.unsubscribed = true;
                        self.refresh |= self.config.cluster;
                    }
                }
                Ok(())
            }
            Incoming::OtherPush => Ok(()),
            Incoming::Error(e) => self.on_error(index, e),
            Incoming::Reply(frame) => self.on_reply(index, frame_bytes, &frame, now),
        }
    }

    fn on_message(&mut self, channel: &[u8], payload: &[u8], deliver: &mut impl FnMut(&str, &Envelope<'_>)) {
        let Some(topic) = wire::topic_of(channel) else { return };
        let Ok(env) = wire::decode(payload) else {
            self.stats.malformed += 1;
            return;
        };
        if env.node == self.config.node {
            return; // ours, back from Redis: delivered locally already
        }
        self.stats.received += 1;
        let key = (env.node, self.hasher.hash_one(topic));
        if self.seen.len() >= SEQ_ENTRIES && !self.seen.contains_key(&key) {
            self.seen.clear();
        }
        let last = self.seen.insert(key, env.seq).unwrap_or(0);
        if last != 0 && env.seq > last + 1 {
            self.stats.lost += env.seq - last - 1;
        }
        deliver(topic, &env);
    }

    fn on_error(&mut self, index: usize, error: &[u8]) -> Result<(), &'static str> {
        let moved = error.starts_with(b"MOVED") || error.starts_with(b"ASK");
        let l = &mut self.links[index];
        match l.expect.front_mut() {
            Some(Expect::Hello | Expect::Select) => {
                self.refusal = Some(String::from_utf8_lossy(error).into_owned());
                Err("Redis refused the handshake")
            }
            Some(Expect::Slots) => {
                l.expect.pop_front();
                self.refusal = Some(String::from_utf8_lossy(error).into_owned());
                Err("CLUSTER SLOTS refused: is this a cluster?")
            }
            Some(Expect::Publish) => {
                l.expect.pop_front();
                self.stats.published -= 1;
                self.stats.dropped += 1;
                self.refresh |= moved;
                Ok(())
            }
            // A subscribe command failed: the PING's PONG is still to come.
            Some(Expect::Check { failed, .. }) => {
                *failed = true;
                self.refresh |= moved;
                Ok(())
            }
            None => Err("an error reply nothing was waiting for"),
        }
    }

    fn on_reply(
        &mut self,
        index: usize,
        frame_bytes: &[u8],
        frame: &redis_protocol::resp3::types::RangeFrame,
        now: u64,
    ) -> Result<(), &'static str> {
        let Some(expect) = self.links[index].expect.pop_front() else {
            return Err("a reply nothing was waiting for");
        };
        match expect {
            Expect::Hello | Expect::Select => {}
            Expect::Publish => {}
            Expect::Slots => self.on_slots(frame_bytes, frame),
            Expect::Check { topics, failed } => {
                if failed {
                    for t in topics {
                        if let Some(link) = self.wanted.get_mut(&t) {
                            *link = None;
                            self.unsubscribed = true;
                        }
                    }
                }
            }
        }
        let l = &mut self.links[index];
        if matches!(l.state, LinkState::Handshake { .. }) && !l.expect.iter().any(is_handshake) {
            l.state = LinkState::Up;
            l.attempts = 0;
            // Its topics (all of them, after a reconnect) again.
            self.unsubscribed = true;
        }
        let _ = now;
        Ok(())
    }

    /// A `CLUSTER SLOTS` reply: every slot's primary; a link per primary
    /// (made on first sight, connected by the next `poll`); topics whose
    /// slot moved are subscribed again where it is now.
    fn on_slots(&mut self, frame_bytes: &[u8], frame: &redis_protocol::resp3::types::RangeFrame) {
        let ranges = resp::cluster_slots(frame_bytes, frame);
        if ranges.is_empty() {
            return;
        }
        let mut primaries = Vec::new();
        for (start, end, addr) in ranges {
            let link = match self.links.iter().position(|l| l.addr == addr) {
                Some(i) => i,
                None => {
                    self.links.push(Link::new(addr));
                    self.links.len() - 1
                }
            };
            if matches!(self.links[link].state, LinkState::Retired) {
                self.links[link].state = LinkState::Down { retry_at: 0 };
            }
            primaries.push(link);
            for s in start..=end.min(SLOTS as u16 - 1) {
                self.slots[usize::from(s)] = link as u16;
            }
        }
        // Starting points that turned out not to be primaries: not needed.
        for (i, l) in self.links.iter_mut().enumerate() {
            if !primaries.contains(&i) && l.state != LinkState::Up {
                l.state = LinkState::Retired;
            }
        }
        // Topics on a link that no longer owns their slot: again.
        let subscribed: Vec<(Box<str>, u16)> = self
            .wanted
            .iter()
            .filter_map(|(t, l)| l.map(|l| (t.clone(), l)))
            .collect();
        for (t, l) in subscribed {
            if self.link_of(&t) != Some(usize::from(l)) {
                self.wanted.insert(t, None);
                self.unsubscribed = true;
            }
        }
    }
}

fn is_handshake(e: &Expect) -> bool {
    matches!(e, Expect::Hello | Expect::Select | Expect::Slots)
}

#[cfg(test)]
mod tests;
