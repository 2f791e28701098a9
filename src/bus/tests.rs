//! The bus without sockets: a few buses talk to a fake Redis (pub/sub and
//! sharded pub/sub, as RESP3 bytes) through the bus's own interface; the
//! virtual clock is a number. What the real server does is proved by
//! `tests/redis.rs` against `redis-server`; this proves the state machine:
//! handshake, subscriptions, delivery, sequence gaps, faults, back-off,
//! cluster slots and moves, and input split at every byte.

use super::resp::{self, Incoming};
use super::wire::{self, Body, Payload, PresenceEvent};
use super::*;
use redis_protocol::resp3::types::RangeFrame;
use std::collections::{BTreeMap, BTreeSet};

fn config(node: u64) -> BusConfig {
    BusConfig {
        nodes: vec!["127.0.0.1:6379".into()],
        cluster: false,
        username: None,
        password: None,
        db: 0,
        max_outgoing: 1 << 20,
        node,
    }
}

/// A blob string.
fn blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn push(out: &mut Vec<u8>, kind: &[u8], channel: &[u8], last: Result<&[u8], i64>) {
    out.extend_from_slice(b">3\r\n");
    blob(out, kind);
    blob(out, channel);
    match last {
        Ok(payload) => blob(out, payload),
        Err(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
    }
}

/// The commands in `bytes` (arrays of blob strings), and the bytes used.
fn commands(bytes: &[u8]) -> (Vec<Vec<Vec<u8>>>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    while let Some((incoming, used)) = resp::next(&bytes[at..]).expect("the bus writes valid RESP") {
        let Incoming::Reply(RangeFrame::Array { data, .. }) = incoming else {
            panic!("a command is an array: {incoming:?}");
        };
        let args = data
            .iter()
            .map(|f| match f {
                RangeFrame::BlobString { data, .. } => bytes[at + data.0..at + data.1].to_vec(),
                other => panic!("an argument is a blob string: {other:?}"),
            })
            .collect();
        out.push(args);
        at += used;
    }
    (out, at)
}

/// One fake Redis server (or cluster shard).
#[derive(Default)]
struct FakeRedis {
    /// Per client: subscribed channels (plain and sharded).
    subs: BTreeMap<usize, BTreeSet<Vec<u8>>>,
    /// What each client is sent next.
    to: BTreeMap<usize, Vec<u8>>,
    /// Cluster: the `CLUSTER SLOTS` reply, and slots this shard does not own
    /// (their publishes and subscribes get `MOVED`).
    slots_reply: Option<Vec<u8>>,
    not_mine: BTreeSet<u16>,
    /// Commands seen, as text, for assertions.
    log: Vec<String>,
    /// The password `HELLO 3 AUTH` must carry, if any.
    password: Option<Vec<u8>>,
}

impl FakeRedis {
    fn slot(channel: &[u8]) -> u16 {
        redis_protocol::redis_keyslot(channel)
    }

    /// Client `c` sent `bytes`: what it is answered goes to `self.to`.
    fn feed(&mut self, c: usize, bytes: &[u8]) {
        let (cmds, used) = commands(bytes);
        assert_eq!(used, bytes.len(), "whole commands only");
        for args in cmds {
            let name = String::from_utf8_lossy(&args[0]).to_uppercase();
            self.log.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            let mut reply = Vec::new();
            match name.as_str() {
                "HELLO" => match (&self.password, args.get(4)) {
                    (Some(p), Some(given)) if p == given => reply.extend_from_slice(b"%1\r\n+server\r\n+redis\r\n"),
                    (Some(_), _) => reply.extend_from_slice(b"-WRONGPASS invalid username-password pair\r\n"),
                    (None, _) => reply.extend_from_slice(b"%1\r\n+server\r\n+redis\r\n"),
                },
                "SELECT" => reply.extend_from_slice(b"+OK\r\n"),
                "PING" => reply.extend_from_slice(b"+PONG\r\n"),
                "CLUSTER" => match &self.slots_reply {
                    Some(r) => reply.extend_from_slice(r),
                    None => reply.extend_from_slice(b"-ERR This instance has cluster support disabled\r\n"),
                },
                "SUBSCRIBE" | "SSUBSCRIBE" => {
                    for ch in &args[1..] {
                        if name == "SSUBSCRIBE" && self.not_mine.contains(&Self::slot(ch)) {
                            reply.extend_from_slice(b"-MOVED 1 127.0.0.1:7001\r\n");
                            continue;
                        }
                        let subs = self.subs.entry(c).or_default();
                        subs.insert(ch.clone());
                        let kind: &[u8] = if name == "SSUBSCRIBE" {
                            b"ssubscribe"
                        } else {
                            b"subscribe"
                        };
                        push(&mut reply, kind, ch, Err(subs.len() as i64));
                    }
                }
                "UNSUBSCRIBE" | "SUNSUBSCRIBE" => {
                    for ch in &args[1..] {
                        let subs = self.subs.entry(c).or_default();
                        subs.remove(ch);
                        let kind: &[u8] = if name == "SUNSUBSCRIBE" {
                            b"sunsubscribe"
                        } else {
                            b"unsubscribe"
                        };
                        push(&mut reply, kind, ch, Err(subs.len() as i64));
                    }
                }
                "PUBLISH" | "SPUBLISH" => {
                    let (ch, payload) = (&args[1], &args[2]);
                    if name == "SPUBLISH" && self.not_mine.contains(&Self::slot(ch)) {
                        reply.extend_from_slice(b"-MOVED 1 127.0.0.1:7001\r\n");
                    } else {
                        let kind: &[u8] = if name == "SPUBLISH" { b"smessage" } else { b"message" };
                        let mut n = 0;
                        for (&other, subs) in &self.subs {
                            if subs.contains(ch) {
                                n += 1;
                                push(self.to.entry(other).or_default(), kind, ch, Ok(payload));
                            }
                        }
                        reply.extend_from_slice(format!(":{n}\r\n").as_bytes());
                    }
                }
                other => panic!("the bus sent {other}"),
            }
            self.to.entry(c).or_default().extend_from_slice(&reply);
        }
    }

    /// Takes what client `c` is to be sent.
    fn take(&mut self, c: usize) -> Vec<u8> {
        self.to.remove(&c).unwrap_or_default()
    }

    /// Redis cut client `c`: its subscriptions are gone.
    fn drop_client(&mut self, c: usize) {
        self.subs.remove(&c);
        self.to.remove(&c);
    }

    fn subscribers(&self, channel: &str) -> usize {
        self.subs.values().filter(|s| s.contains(channel.as_bytes())).count()
    }
}

/// What a bus delivered: (topic, node, seq, body as text).
type Delivered = Vec<(String, u64, u64, String)>;

fn describe(env: &Envelope<'_>) -> String {
    match env.body {
        Body::Message(Payload::BareText(b) | Payload::BareBinary(b) | Payload::Json(b) | Payload::Binary(b)) => {
            String::from_utf8_lossy(b).into_owned()
        }
        Body::Presence {
            event,
            members,
            name,
            wants,
        } => format!("{event:?} {members} {name:?} {wants}"),
    }
}

/// A bus and the fake Redis client id of each of its links.
struct Node {
    bus: Bus,
    delivered: Delivered,
}

impl Node {
    fn new(node: u64) -> Node {
        Node {
            bus: Bus::new(config(node)),
            delivered: Vec::new(),
        }
    }
}

/// Buses on one fake Redis; link 0 of bus `i` is client `i`.
struct World {
    redis: FakeRedis,
    nodes: Vec<Node>,
    now: u64,
}

impl World {
    fn new(n: usize) -> World {
        let mut w = World {
            redis: FakeRedis::default(),
            nodes: (0..n).map(|i| Node::new(100 + i as u64)).collect(),
            now: 0,
        };
        for i in 0..n {
            w.connect(i);
        }
        w.settle();
        w
    }

    /// Node `i`'s poll asks for its link, which connects at once.
    fn connect(&mut self, i: usize) {
        let mut asked = Vec::new();
        self.nodes[i].bus.poll(self.now, |r| asked.push(r));
        assert_eq!(
            asked,
            [Request::Connect {
                index: 0,
                addr: "127.0.0.1:6379".into()
            }]
        );
        self.nodes[i].bus.connected(0, self.now);
    }

    /// Bytes flow both ways until nothing moves.
    fn settle(&mut self) {
        for n in &mut self.nodes {
            n.bus.commit();
        }
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let out = self.nodes[i].bus.output(0).to_vec();
                if !out.is_empty() {
                    self.nodes[i].bus.written(0, out.len());
                    self.redis.feed(i, &out);
                    moved = true;
                }
            }
            for i in 0..self.nodes.len() {
                let input = self.redis.take(i);
                if !input.is_empty() {
                    let node = &mut self.nodes[i];
                    let delivered = &mut node.delivered;
                    node.bus
                        .input(0, &input, self.now, |t, env| {
                            delivered.push((t.to_string(), env.node, env.seq, describe(env)))
                        })
                        .expect("valid input");
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn publish(&mut self, i: usize, topic: &str, text: &str) {
        self.nodes[i]
            .bus
            .publish(topic, &Body::Message(Payload::BareText(text.as_bytes())));
    }

    fn texts(&self, i: usize) -> Vec<String> {
        self.nodes[i].delivered.iter().map(|d| d.3.clone()).collect()
    }
}

#[test]
fn handshake_then_up_and_the_commands_it_sends() {
    let w = World::new(1);
    assert!(w.nodes[0].bus.is_up());
    assert_eq!(w.redis.log, ["HELLO 3 SETNAME wsloop-0000000000000064"]);
    // With credentials and a database: AUTH inside HELLO, then SELECT;
    // the link is up only once every handshake reply came.
    let mut c = config(7);
    c.username = Some("app".into());
    c.password = Some("s3cret".into());
    c.db = 2;
    let mut bus = Bus::new(c);
    bus.poll(0, |_| {});
    bus.connected(0, 0);
    let (cmds, _) = commands(bus.output(0));
    assert_eq!(cmds[0], [&b"HELLO"[..], b"3", b"AUTH", b"app", b"s3cret"]);
    assert_eq!(cmds[1], [&b"SELECT"[..], b"2"]);
    let n = bus.output(0).len();
    bus.written(0, n);
    bus.input(0, b"%1\r\n+server\r\n+redis\r\n", 0, |_, _| {}).unwrap();
    assert!(!bus.is_up(), "SELECT not answered yet");
    bus.input(0, b"+OK\r\n", 0, |_, _| {}).unwrap();
    assert!(bus.is_up());
}

#[test]
fn a_refused_handshake_is_an_error_and_the_link_retries() {
    let mut redis = FakeRedis {
        password: Some(b"right".to_vec()),
        ..FakeRedis::default()
    };
    let mut c = config(1);
    c.password = Some("wrong".into());
    let mut bus = Bus::new(c);
    bus.poll(0, |_| {});
    bus.connected(0, 0);
    redis.feed(0, bus.output(0));
    let reply = redis.take(0);
    assert_eq!(bus.input(0, &reply, 0, |_, _| {}), Err("Redis refused the handshake"));
    bus.closed(0, 0);
    assert!(!bus.is_up());
    assert_eq!(bus.stats.reconnects, 0, "it was never up");
    // Back-off: a link that never came up retries after 100 ms ±50%,
    // never at once.
    let at = bus.poll_timeout().unwrap();
    assert!((50..150).contains(&at), "{at}");
    let mut asked = 0;
    bus.poll(at - 1, |_| asked += 1);
    assert_eq!(asked, 0);
    bus.poll(at, |_| asked += 1);
    assert_eq!(asked, 1);
}

#[test]
fn messages_reach_the_other_nodes_once_in_order_and_not_their_sender() {
    let mut w = World::new(3);
    w.nodes[0].bus.subscribe("lobby");
    w.nodes[1].bus.subscribe("lobby");
    w.nodes[2].bus.subscribe("other");
    w.settle();
    assert_eq!(w.redis.subscribers("wsloop:lobby"), 2);
    // Each node: one SUBSCRIBE, then the PING that checks it.
    let log = &w.redis.log;
    let subs: Vec<usize> = (0..log.len()).filter(|&i| log[i] == "SUBSCRIBE wsloop:lobby").collect();
    assert_eq!(subs.len(), 2, "{log:?}");
    assert!(subs.iter().all(|&i| log[i + 1] == "PING"), "{log:?}");
    for i in 0..5 {
        w.publish(0, "lobby", &format!("m{i}"));
    }
    w.settle();
    assert_eq!(w.texts(1), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(w.nodes[0].delivered.is_empty(), "its own come back and are dropped");
    assert!(w.nodes[2].delivered.is_empty());
    assert_eq!(w.nodes[1].delivered[4], ("lobby".into(), 100, 5, "m4".into()));
    assert_eq!(w.nodes[0].bus.stats.published, 5);
    assert_eq!(w.nodes[1].bus.stats.received, 5);
    assert_eq!(w.nodes[1].bus.stats.lost, 0);
    // Sequence numbers are per topic.
    w.publish(0, "other", "x");
    w.settle();
    assert_eq!(w.nodes[2].delivered, [("other".into(), 100, 1, "x".into())]);
    // Presence travels too.
    w.nodes[1].bus.publish(
        "lobby",
        &Body::Presence {
            event: PresenceEvent::Join,
            members: 2,
            name: Some("Ann"),
            wants: true,
        },
    );
    w.settle();
    assert_eq!(w.texts(0), ["Join 2 Some(\"Ann\") true"]);
}

#[test]
fn unsubscribe_when_the_last_local_subscriber_leaves() {
    let mut w = World::new(2);
    w.nodes[1].bus.subscribe("t");
    w.settle();
    w.nodes[1].bus.unsubscribe("t");
    w.nodes[1].bus.unsubscribe("never"); // not subscribed: nothing sent
    w.settle();
    assert_eq!(w.redis.subscribers("wsloop:t"), 0);
    assert_eq!(w.nodes[1].bus.topics(), 0);
    assert_eq!(w.redis.log.iter().filter(|l| l.contains("UNSUBSCRIBE")).count(), 1);
    w.publish(0, "t", "gone");
    w.settle();
    assert!(w.nodes[1].delivered.is_empty());
}

#[test]
fn a_sequence_gap_is_counted_as_lost() {
    let mut w = World::new(2);
    w.nodes[1].bus.subscribe("t");
    w.settle();
    w.publish(0, "t", "1");
    w.settle();
    // Messages 2..=4 vanish (Redis cut node 1 for a moment: simulated by
    // publishing while it is not subscribed).
    w.redis.subs.get_mut(&1).unwrap().clear();
    for i in 2..=4 {
        w.publish(0, "t", &i.to_string());
    }
    w.settle();
    w.redis.subs.get_mut(&1).unwrap().insert(b"wsloop:t".to_vec());
    w.publish(0, "t", "5");
    w.settle();
    assert_eq!(w.texts(1), ["1", "5"]);
    assert_eq!(w.nodes[1].bus.stats.lost, 3);
}

#[test]
fn down_drops_and_counts_then_back_up_resubscribes_everything() {
    let mut w = World::new(2);
    for t in ["a", "b", "c", "d", "e", "f", "g"] {
        w.nodes[1].bus.subscribe(t);
    }
    w.settle();
    // Seven channels: two SUBSCRIBE commands (five channels at most each).
    let subs: Vec<&String> = w.redis.log.iter().filter(|l| l.starts_with("SUBSCRIBE")).collect();
    assert_eq!(subs.len(), 2, "{subs:?}");
    // Node 1's link dies (Redis cut it, or restarted).
    w.redis.drop_client(1);
    w.now = 1_000;
    w.nodes[1].bus.closed(0, w.now);
    assert_eq!(w.nodes[1].bus.stats.reconnects, 1);
    assert!(!w.nodes[1].bus.is_up());
    assert_eq!(w.nodes[1].bus.topics(), 7, "still wanted");
    // While down: its publishes are dropped and counted, nothing queued.
    w.publish(1, "a", "lost");
    assert_eq!(w.nodes[1].bus.stats.dropped, 1);
    assert!(w.nodes[1].bus.output(0).is_empty());
    // A topic that came meanwhile is subscribed once the link is back.
    w.nodes[1].bus.subscribe("h");
    let at = w.nodes[1].bus.poll_timeout().unwrap();
    assert!((1_025..1_075).contains(&at), "{at}");
    w.now = at;
    w.connect(1);
    w.settle();
    assert!(w.nodes[1].bus.is_up());
    for t in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        assert_eq!(w.redis.subscribers(&format!("wsloop:{t}")), 1, "{t}");
    }
    w.publish(0, "h", "back");
    w.settle();
    assert_eq!(w.texts(1), ["back"]);
}

#[test]
fn back_off_doubles_to_a_cap_with_jitter_and_a_slow_handshake_times_out() {
    let mut bus = Bus::new(config(3));
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let mut asked = Vec::new();
        bus.poll(now, |r| asked.push(r));
        assert_eq!(asked.len(), 1);
        bus.closed(0, now); // the connect failed
        let at = bus.poll_timeout().unwrap();
        waits.push(at - now);
        now = at;
    }
    // 50 ms doubling to 1 s, each ±50%.
    for (i, w) in waits.iter().enumerate() {
        let base = (50u64 << (i + 1).min(8)).min(1_000);
        assert!(
            (base / 2..base * 3 / 2).contains(w),
            "attempt {i}: waited {w}, base {base}"
        );
    }
    // Connected but the handshake never answered: closed after 2 s.
    let mut asked = Vec::new();
    bus.poll(now, |r| asked.push(r));
    bus.connected(0, now);
    asked.clear();
    bus.poll(now + 1_999, |r| asked.push(r));
    assert!(asked.is_empty());
    bus.poll(now + 2_000, |r| asked.push(r));
    assert_eq!(asked, [Request::Close { index: 0 }]);
}

#[test]
fn a_link_too_far_behind_drops_publishes_instead_of_growing() {
    let mut c = config(1);
    c.max_outgoing = 1_000;
    let mut bus = Bus::new(c);
    bus.poll(0, |_| {});
    bus.connected(0, 0);
    let n = bus.output(0).len();
    bus.written(0, n);
    bus.input(0, b"%1\r\n+server\r\n+redis\r\n", 0, |_, _| {}).unwrap();
    let big = [b'x'; 300];
    bus.publish("t", &Body::Message(Payload::BareText(&big)));
    let each = bus.output(0).len();
    for _ in 1..10 {
        bus.publish("t", &Body::Message(Payload::BareText(&big)));
    }
    // Publishes are taken while the output is within the bound.
    let taken = 1_000 / each + 1;
    assert!(taken < 10);
    assert_eq!(bus.stats.published, taken as u64);
    assert_eq!(bus.stats.dropped, 10 - taken as u64);
    assert_eq!(bus.output(0).len(), taken * each);
    // Closing loses what was waiting: dropped, no longer published.
    bus.closed(0, 0);
    assert_eq!((bus.stats.published, bus.stats.dropped), (0, 10));
}

#[test]
fn input_split_at_every_byte_gives_the_same_deliveries() {
    // Everything node 1 receives in a session: handshake reply, subscribe
    // push, PONG, messages (one with CRLF inside), presence.
    let mut script = Vec::new();
    for (i, text) in ["a", "b\r\nc", "", "ü"].iter().enumerate() {
        let mut payload = Vec::new();
        wire::encode(
            &mut payload,
            9,
            i as u64 + 1,
            &Body::Message(Payload::BareText(text.as_bytes())),
        );
        push(&mut script, b"message", b"wsloop:t", Ok(&payload));
    }
    let mut payload = Vec::new();
    wire::encode(
        &mut payload,
        9,
        7,
        &Body::Presence {
            event: PresenceEvent::Leave,
            members: 1,
            name: None,
            wants: false,
        },
    );
    push(&mut script, b"message", b"wsloop:t", Ok(&payload));
    script.extend_from_slice(b">3\r\n$9\r\nsubscribe\r\n$8\r\nwsloop:u\r\n:2\r\n");
    let expected = ["a", "b\r\nc", "", "ü", "Leave 1 None false"];
    for cut in 0..=script.len() {
        let mut bus = Bus::new(config(1));
        bus.poll(0, |_| {});
        bus.connected(0, 0);
        let n = bus.output(0).len();
        bus.written(0, n);
        bus.input(0, b"%1\r\n+server\r\n+redis\r\n", 0, |_, _| {}).unwrap();
        let mut got = Vec::new();
        for part in [&script[..cut], &script[cut..]] {
            bus.input(0, part, 0, |_, env| got.push(describe(env))).unwrap();
        }
        assert_eq!(got, expected, "split at {cut}");
        assert_eq!(bus.stats.lost, 2, "seq 4 → 7");
    }
}

#[test]
fn garbage_and_unexpected_replies_close_the_link_and_foreign_messages_are_counted() {
    let mut w = World::new(1);
    w.nodes[0].bus.subscribe("t");
    w.settle();
    let bus = &mut w.nodes[0].bus;
    // Not a bus message on our channel: counted, not delivered.
    let mut junk = Vec::new();
    push(&mut junk, b"message", b"wsloop:t", Ok(b"hello from redis-cli"));
    push(&mut junk, b"message", b"elsewhere", Ok(b"x"));
    let mut got = 0;
    bus.input(0, &junk, 0, |_, _| got += 1).unwrap();
    assert_eq!((got, bus.stats.malformed), (0, 1));
    // A reply nothing waited for, malformed RESP: errors (the loop closes).
    assert!(bus.input(0, b"+OK\r\n", 0, |_, _| {}).is_err());
    let mut bus = Bus::new(config(2));
    bus.poll(0, |_| {});
    bus.connected(0, 0);
    assert!(bus.input(0, b"?what\r\n", 0, |_, _| {}).is_err());
}

/// Bytes flow between the bus and the shards (ten rounds), links connect
/// as the bus asks.
fn run(bus: &mut Bus, shards: &mut [FakeRedis], shard_of: &mut HashMap<usize, usize>, now: u64, got: &mut Vec<String>) {
    for _ in 0..10 {
        let mut asked = Vec::new();
        bus.poll(now, |r| asked.push(r));
        for r in asked {
            if let Request::Connect { index, addr } = r {
                let port: usize = addr.rsplit(':').next().unwrap().parse().unwrap();
                shard_of.insert(index, port - 7000);
                bus.connected(index, now);
            }
        }
        for link in 0..bus.links() {
            let Some(&s) = shard_of.get(&link) else { continue };
            let out = bus.output(link).to_vec();
            bus.written(link, out.len());
            shards[s].feed(link, &out);
        }
        for link in 0..bus.links() {
            let Some(&s) = shard_of.get(&link) else { continue };
            let input = shards[s].take(link);
            bus.input(link, &input, now, |t, env| got.push(format!("{t}:{}", describe(env))))
                .unwrap();
        }
    }
}

/// A three-shard cluster: slots 0..5460 on shard 0, 5461..10922 on 1, the
/// rest on 2.
fn slots_reply() -> Vec<u8> {
    let mut r = b"*3\r\n".to_vec();
    for (i, (a, b)) in [(0, 5460), (5461, 10922), (10923, 16383)].iter().enumerate() {
        r.extend_from_slice(format!("*3\r\n:{a}\r\n:{b}\r\n*3\r\n").as_bytes());
        blob(&mut r, b"127.0.0.1");
        r.extend_from_slice(format!(":{}\r\n", 7000 + i).as_bytes());
        blob(&mut r, b"id");
    }
    r
}

/// A channel `wsloop:<topic>` whose slot is on `shard`.
fn topic_on(shard: usize, skip: usize) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .filter(|t| {
            let s = redis_protocol::redis_keyslot(format!("wsloop:{t}").as_bytes());
            [s <= 5460, (5461..=10922).contains(&s), s >= 10923][shard]
        })
        .nth(skip)
        .unwrap()
}

#[test]
fn cluster_links_per_primary_sharded_subscribe_and_a_moved_slot() {
    let mut c = config(5);
    c.cluster = true;
    c.nodes = vec!["127.0.0.1:7001".into()];
    let mut bus = Bus::new(c);
    let mut shards: Vec<FakeRedis> = (0..3)
        .map(|_| FakeRedis {
            slots_reply: Some(slots_reply()),
            ..FakeRedis::default()
        })
        .collect();
    // Link index → shard, learnt from the addresses the bus asks for.
    let mut shard_of: HashMap<usize, usize> = HashMap::new();
    let mut now = 0;
    let mut got = Vec::new();
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    assert!(bus.is_up(), "{bus:?}");
    // The starting point (shard 1) plus the other two primaries.
    assert_eq!(bus.links(), 3);
    let topics: Vec<String> = (0..3).map(|s| topic_on(s, 0)).collect();
    for t in &topics {
        bus.subscribe(t);
    }
    bus.commit();
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    for (s, t) in topics.iter().enumerate() {
        assert_eq!(shards[s].subscribers(&format!("wsloop:{t}")), 1, "{t} on shard {s}");
        assert!(shards[s].log.iter().any(|l| l == &format!("SSUBSCRIBE wsloop:{t}")));
    }
    // Publishing goes to the owning shard with SPUBLISH (another node's
    // message comes back as an smessage).
    bus.publish(&topics[2], &Body::Message(Payload::BareText(b"p")));
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    assert!(shards[2]
        .log
        .iter()
        .any(|l| l.starts_with(&format!("SPUBLISH wsloop:{}", topics[2]))));
    let mut foreign = Vec::new();
    wire::encode(&mut foreign, 77, 1, &Body::Message(Payload::BareText(b"from 77")));
    let link2 = *shard_of.iter().find(|(_, &s)| s == 2).unwrap().0;
    push(
        shards[2].to.entry(link2).or_default(),
        b"smessage",
        format!("wsloop:{}", topics[2]).as_bytes(),
        Ok(&foreign),
    );
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    assert_eq!(got, [format!("{}:from 77", topics[2])]);
    // The slot of topics[0] moves to shard 2: shard 0 drops the
    // subscription (sunsubscribe push) and answers MOVED from then on; the
    // new map says shard 2.
    let moved = topics[0].clone();
    let slot = redis_protocol::redis_keyslot(format!("wsloop:{moved}").as_bytes());
    let mut new_map = b"*4\r\n".to_vec();
    let ranges = [
        (0, slot - 1, 7000),
        (slot, slot, 7002),
        (slot + 1, 5460, 7000),
        (5461, 10922, 7001),
    ];
    let mut count: u8 = 4;
    for (a, b, port) in ranges {
        if a > b {
            count -= 1;
            continue;
        }
        new_map.extend_from_slice(format!("*3\r\n:{a}\r\n:{b}\r\n*3\r\n").as_bytes());
        blob(&mut new_map, b"127.0.0.1");
        new_map.extend_from_slice(format!(":{port}\r\n").as_bytes());
        blob(&mut new_map, b"id");
    }
    new_map.extend_from_slice(b"*3\r\n:10923\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n");
    new_map[1] = b'0' + count + 1;
    for s in &mut shards {
        s.slots_reply = Some(new_map.clone());
    }
    shards[0].not_mine.insert(slot);
    let link0 = *shard_of.iter().find(|(_, &s)| s == 0).unwrap().0;
    shards[0]
        .subs
        .get_mut(&link0)
        .unwrap()
        .remove(format!("wsloop:{moved}").as_bytes());
    push(
        shards[0].to.entry(link0).or_default(),
        b"sunsubscribe",
        format!("wsloop:{moved}").as_bytes(),
        Err(0),
    );
    // A publish that still goes to shard 0 is refused with MOVED: dropped.
    bus.publish(&moved, &Body::Message(Payload::BareText(b"in flight")));
    now += 1;
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    assert_eq!(bus.stats.dropped, 1);
    assert_eq!(
        shards[2].subscribers(&format!("wsloop:{moved}")),
        1,
        "subscribed where the slot is now"
    );
    assert_eq!(shards[0].subscribers(&format!("wsloop:{moved}")), 0);
    bus.publish(&moved, &Body::Message(Payload::BareText(b"after")));
    run(&mut bus, &mut shards, &mut shard_of, now, &mut got);
    assert!(shards[2]
        .log
        .iter()
        .any(|l| l.starts_with(&format!("SPUBLISH wsloop:{moved}"))));
    assert!(bus.is_up());
}

#[test]
fn not_a_cluster_is_an_error() {
    let mut c = config(5);
    c.cluster = true;
    let mut bus = Bus::new(c);
    let mut redis = FakeRedis::default();
    bus.poll(0, |_| {});
    bus.connected(0, 0);
    redis.feed(0, bus.output(0));
    let reply = redis.take(0);
    assert_eq!(
        bus.input(0, &reply, 0, |_, _| {}),
        Err("CLUSTER SLOTS refused: is this a cluster?")
    );
}
