//! `pubsub` mode: topics over `ws://HOST/pubsub` (docs/pubsub.md).
//!
//! `--topics T` topics, named `t0` to `t{T-1}`; `--connections C`
//! subscribers, each subscribed to `--subscriptions S` distinct topics drawn
//! at random (seeded by `--seed`: the same seed, the same choices);
//! `--publishers P` publishers, each drawing the topic of every message at
//! random, over a `/pubsub` WebSocket of its own (the connections with the
//! lowest ids, subscribed to nothing) or over HTTP (`POST /broadcast/{topic}`
//! per message, or `POST /pubsub` with `--batch` messages), at `--rate`
//! messages per second in all, or as fast as the server takes them (`--rate
//! 0`: `--inflight` publishes or requests unanswered per publisher).
//!
//! Publishing begins once every connection has opened and every
//! subscription has been acknowledged, so each subscriber expects, for each
//! of its topics and each publisher, every sequence number from 0 on, once
//! and in order. Each delivery is checked as it arrives (body header and
//! padding, the envelope's topic is the body's, the topic is one of the
//! connection's); after the drain, what a subscriber has not received of
//! what was published on its topics is lost.
//!
//! The worker (worker.rs) runs the connections and calls [`Driver`] at its
//! hook points; HTTP publishers have a thread of their own ([`http`]). Both
//! read the run's common state (shared.rs) and this mode's [`Shared`],
//! which `main` makes for a pubsub run and hands to each.

pub mod http;
pub mod options;
pub mod scrape;
pub mod wire;

use crate::shared;
use crate::stats::Stats;
use crate::sys;
use crate::track::{Arrival, SeqTrack};
use hdrhistogram::Histogram;
pub use options::{Options, PublishVia};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use wire::Incoming;
use wsloop::proto::pubsub::MAX_BATCH;
use wsloop::proto::{MessageKind, Session};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// Most messages one publisher queues in one go (the rest at the next turn).
const MAX_BURST: u32 = 1024;

/// splitmix64: small, fast, and any seed will do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rng(u64);

impl Rng {
    /// Stream `stream` of `seed`: independent choices per subscriber and
    /// publisher.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Streams of the seed: subscribers' topics and publishers' topics.
const SUBSCRIBER_STREAM: u64 = 1 << 32;
const PUBLISHER_STREAM: u64 = 2 << 32;

/// The topics of subscriber `i`: `s` distinct of `0..t`, sorted (Floyd's
/// sampling, so the cost is in `s`, not `t`).
pub fn choose_topics(seed: u64, i: u64, t: u32, s: u32) -> Box<[u32]> {
    let mut rng = Rng::new(seed, SUBSCRIBER_STREAM | i);
    let mut chosen = HashSet::with_capacity(s as usize);
    for j in t - s..t {
        let r = rng.below(u64::from(j) + 1) as u32;
        if !chosen.insert(r) {
            chosen.insert(j);
        }
    }
    let mut v: Vec<u32> = chosen.into_iter().collect();
    v.sort_unstable();
    v.into_boxed_slice()
}

/// The topic generator of publisher `p`.
pub fn publisher_rng(seed: u64, p: u32) -> Rng {
    Rng::new(seed, PUBLISHER_STREAM | u64::from(p))
}

/// Most a paced publisher catches up after a stall: the poll loop sleeps in
/// whole milliseconds, and an iteration over thousands of busy subscribers
/// takes several.
const CATCH_UP: u64 = 10 * MS;

/// The next due time of a paced publisher after one send: one period on,
/// catching up after a stall of up to [`CATCH_UP`] but not after a longer
/// one.
pub fn pace(due: u64, period: u64, now: u64) -> u64 {
    let next = due + period;
    if next + (4 * period).max(CATCH_UP) < now {
        now
    } else {
        next
    }
}

/// CPU time and the server's counters at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_ns: u64,
    pub client_cpu: f64,
    pub server_cpu: Option<f64>,
    pub metrics: Result<scrape::Metrics, String>,
}

/// State of a pubsub run shared by every thread.
#[derive(Debug)]
pub struct Shared {
    pub opts: Options,
    /// Padding source of the bodies.
    pub filler: Box<[u8]>,
    /// Messages published so far by publisher p on topic t (the next
    /// sequence number), at p * topics + t.
    sent: Box<[AtomicU64]>,
    /// Threads whose open connections have all subscribed.
    ready_threads: AtomicUsize,
    starting: AtomicBool,
    started: AtomicBool,
    /// The HTTP publishers have stopped sending (true when there are none).
    pub http_done: AtomicBool,
    /// Threads whose subscribers have all received what they expect.
    drained_threads: AtomicUsize,
    after_claimed: AtomicBool,
    after_taken: AtomicBool,
    /// When publishing began, and when the drain ended.
    samples: Mutex<[Option<Sample>; 2]>,
    /// Subscribers open when publishing began.
    pub subscribers_open: AtomicUsize,
    /// HTTP: publish requests answered 202, and the recipients the answers
    /// counted.
    pub accepted: AtomicU64,
    pub recipients: AtomicU64,
    /// HTTP publisher connections that opened (whether or not still open).
    pub http_open: AtomicUsize,
}

impl Shared {
    pub fn new(opts: Options, max_size: usize) -> Shared {
        let n = opts.publishers as usize * opts.topics as usize;
        Shared {
            filler: wire::filler(max_size).into_boxed_slice(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ready_threads: AtomicUsize::new(0),
            starting: AtomicBool::new(false),
            started: AtomicBool::new(false),
            http_done: AtomicBool::new(opts.http_publishers() == 0),
            drained_threads: AtomicUsize::new(0),
            after_claimed: AtomicBool::new(false),
            after_taken: AtomicBool::new(false),
            samples: Mutex::new([None, None]),
            subscribers_open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            recipients: AtomicU64::new(0),
            http_open: AtomicUsize::new(0),
            opts,
        }
    }

    pub fn started(&self) -> bool {
        self.started.load(Acquire)
    }

    fn counter(&self, p: u32, t: u32) -> &AtomicU64 {
        &self.sent[p as usize * self.opts.topics as usize + t as usize]
    }

    /// The next message of publisher `p`: draws its topic, stamps the body
    /// into `body` (a copy of the filler); returns (topic, sequence number,
    /// body length). Call [`Shared::commit`] once it is queued.
    pub fn next_message(&self, sizes: &[usize], p: u32, rng: &mut Rng, body: &mut [u8], now: u64) -> (u32, u64, usize) {
        let t = rng.below(u64::from(self.opts.topics)) as u32;
        // Only this publisher's thread writes its counters.
        let seq = self.counter(p, t).load(Relaxed);
        let stamp = wire::Stamp {
            publisher: p,
            topic: t,
            seq,
            sent_ns: now,
        };
        wire::stamp(body, &stamp);
        (t, seq, wire::body_len(sizes, p, t, seq))
    }

    /// Message `seq` of publisher `p` on topic `t` is on its way.
    pub fn commit(&self, p: u32, t: u32, seq: u64) {
        self.counter(p, t).store(seq + 1, Release);
    }

    /// Messages published on each topic, all publishers together.
    fn topic_totals(&self) -> Vec<u64> {
        let t = self.opts.topics as usize;
        let mut totals = vec![0; t];
        for (i, c) in self.sent.iter().enumerate() {
            totals[i % t] += c.load(Acquire);
        }
        totals
    }

    /// Every publisher has stopped sending.
    fn publishing_over(&self, sh: &shared::Shared) -> bool {
        sh.stopped.load(Acquire) >= sh.plan.threads && self.http_done.load(Acquire)
    }

    /// Takes sample `which` (0: publishing begins, 1: the drain ended):
    /// the server's CPU time is read on the inside of the metrics scrape, so
    /// that the scrape's own cost stays out of the window.
    fn sample(&self, sh: &shared::Shared, which: usize) {
        let targets = &sh.plan.targets;
        let server_cpu = || sys::cpu_seconds_sum(&sh.plan.server_pids);
        let (metrics, server_cpu) = if which == 0 {
            let m = scrape::scrape_all(targets);
            (m, server_cpu())
        } else {
            let cpu = server_cpu();
            (scrape::scrape_all(targets), cpu)
        };
        let s = Sample {
            at_ns: sh.now(),
            client_cpu: sys::cpu_seconds("self").unwrap_or(0.0),
            server_cpu,
            metrics,
        };
        if let Ok(mut g) = self.samples.lock() {
            g[which] = Some(s);
        }
    }

    /// The end sample, if nobody took it (the drain timed out).
    fn sample_end_once(&self, sh: &shared::Shared) {
        if self.started() && !self.after_claimed.swap(true, AcqRel) {
            self.sample(sh, 1);
            self.after_taken.store(true, Release);
        }
    }
}

/// What one connection of a worker is and has seen.
#[derive(Debug, Default)]
struct Slot {
    /// A WebSocket publisher: its index.
    publisher: Option<u32>,
    /// A subscriber's topics, sorted.
    topics: Box<[u32]>,
    /// A subscriber's trackers: topic k, publisher p at k * publishers + p.
    tracks: Box<[SeqTrack]>,
    /// Distinct deliveries.
    got: u64,
    /// Subscribe requests not answered yet.
    acks_due: u32,
    /// Subscriptions answered (acknowledged or refused).
    subscribed: bool,
    /// Publisher, --rate 0: publishes not acknowledged yet.
    unacked: u32,
    next_id: u32,
    /// Publisher, paced: when the next message is due (0: not yet set).
    next_send: u64,
    rng: Rng,
}

/// The pubsub side of one worker thread: called by the worker at its hook
/// points, with the pieces of the connection it needs.
pub struct Driver {
    sh: Arc<shared::Shared>,
    ps: Arc<Shared>,
    index: usize,
    slots: Vec<Slot>,
    /// A request before the session frames it.
    msg: Vec<u8>,
    /// The filler, with headers stamped over its start.
    body: Vec<u8>,
    /// ns between a WebSocket publisher's messages (0: unpaced).
    period: u64,
    ready_flagged: bool,
    /// Messages published per topic, once publishing is over.
    totals: Option<Vec<u64>>,
    drained_flagged: bool,
}

fn mismatch(stats: &mut Stats) {
    stats.mismatched += 1;
    stats.errors.mismatch += 1;
}

impl Driver {
    /// The driver of worker `index` with `slots` connections, for a pubsub
    /// run.
    pub fn new(sh: &Arc<shared::Shared>, ps: Option<&Arc<Shared>>, index: usize, slots: usize) -> Option<Driver> {
        let ps = ps?.clone();
        Some(Driver {
            period: ps.opts.period(1),
            body: ps.filler.to_vec(),
            sh: sh.clone(),
            ps,
            index,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            msg: Vec::new(),
            ready_flagged: false,
            totals: None,
            drained_flagged: false,
        })
    }

    /// The connection id of a slot (the worker deals ids round robin).
    fn id(&self, slot: usize) -> usize {
        self.index + slot * self.sh.plan.threads
    }

    /// The handshake completed: a subscriber subscribes (text batches with
    /// ids, acknowledged before publishing begins).
    pub fn on_open(&mut self, slot: usize, session: &mut Session, wbuf: &mut Vec<u8>) {
        let id = self.id(slot);
        let o = &self.ps.opts;
        let s = &mut self.slots[slot];
        *s = Slot::default();
        if id < o.ws_publishers() {
            s.publisher = Some(id as u32);
            s.rng = publisher_rng(o.seed, id as u32);
            s.subscribed = true;
            return;
        }
        let i = (id - o.ws_publishers()) as u64;
        s.topics = choose_topics(o.seed, i, o.topics, o.subscriptions);
        s.tracks = vec![SeqTrack::default(); s.topics.len() * o.publishers as usize].into_boxed_slice();
        for (k, chunk) in s.topics.chunks(MAX_BATCH).enumerate() {
            self.msg.clear();
            wire::subscribe(&mut self.msg, chunk, k as u64);
            if session.send(MessageKind::Text, &self.msg, wbuf) {
                s.acks_due += 1;
            }
        }
        s.subscribed = s.acks_due == 0;
    }

    /// Whether publishing has begun (or begins now): once every connection
    /// has settled (the worker checks) and every thread's open connections
    /// have subscribed. The thread that starts it takes the first sample.
    pub fn ready_to_start(&mut self, open: impl Fn(usize) -> bool) -> bool {
        let ps = self.ps.clone();
        if ps.started() {
            return true;
        }
        if !self.ready_flagged {
            if !(0..self.slots.len()).all(|s| !open(s) || self.slots[s].subscribed) {
                return false;
            }
            self.ready_flagged = true;
            ps.ready_threads.fetch_add(1, AcqRel);
        }
        if ps.ready_threads.load(Acquire) < self.sh.plan.threads || ps.starting.swap(true, AcqRel) {
            return false;
        }
        ps.sample(&self.sh, 0);
        ps.started.store(true, Release);
        true
    }

    /// Publishing began: counts this thread's open subscribers.
    pub fn on_start(&mut self, open: impl Fn(usize) -> bool) {
        let n = (0..self.slots.len())
            .filter(|&s| open(s) && self.slots[s].publisher.is_none())
            .count();
        self.ps.subscribers_open.fetch_add(n, Relaxed);
    }

    /// Queues what a WebSocket publisher may send now: paced, or up to
    /// --inflight unacknowledged; returns when to come back (0: on input).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        slot: usize,
        may_send: bool,
        session: &mut Session,
        wbuf: &mut Vec<u8>,
        now: u64,
        stats: &mut Stats,
    ) -> u64 {
        let Driver {
            sh,
            ps,
            slots,
            msg,
            body,
            period,
            ..
        } = self;
        let period = *period;
        let s = &mut slots[slot];
        let Some(p) = s.publisher else { return 0 };
        if !may_send {
            return 0;
        }
        if period > 0 && s.next_send == 0 {
            // Spread the publishers over the period.
            s.next_send = now + period * u64::from(p) / u64::from(ps.opts.publishers);
        }
        let kind = if ps.opts.binary {
            MessageKind::Binary
        } else {
            MessageKind::Text
        };
        for _ in 0..MAX_BURST {
            let due = if period > 0 {
                s.next_send <= now
            } else {
                (s.unacked as usize) < sh.plan.inflight
            };
            if !due {
                break;
            }
            let (t, seq, len) = ps.next_message(&sh.plan.sizes, p, &mut s.rng, body, now);
            let id = (period == 0).then_some(s.next_id);
            msg.clear();
            if ps.opts.binary {
                wire::publish_binary(msg, t, &body[..len], id);
            } else {
                wire::publish_text(msg, t, &body[..len], id.map(u64::from));
            }
            if !session.send(kind, msg, wbuf) {
                break;
            }
            ps.commit(p, t, seq);
            if period > 0 {
                s.next_send = pace(s.next_send, period, now);
            } else {
                s.unacked += 1;
                s.next_id = s.next_id.wrapping_add(1);
            }
            stats.sent += 1;
            stats.bytes_sent += len as u64;
            stats.first_send_ns.get_or_insert(now);
        }
        if period > 0 {
            s.next_send
        } else {
            0
        }
    }

    /// One message from the server on connection `slot`.
    pub fn on_message(
        &mut self,
        slot: usize,
        kind: MessageKind,
        payload: &[u8],
        now: u64,
        stats: &mut Stats,
        interval: &mut Histogram<u64>,
    ) {
        match wire::classify(kind == MessageKind::Binary, payload) {
            Incoming::Delivery { topic, body } => self.deliver(slot, &topic, &body, now, stats, interval),
            Incoming::Ack(id) => self.ack(slot, id, stats),
            Incoming::Error { id, code } => {
                *stats.errors.refused.entry(format!("pubsub_{code}")).or_default() += 1;
                self.refused(slot, id);
            }
            Incoming::Other => mismatch(stats),
        }
    }

    /// Checks and counts one delivery.
    fn deliver(
        &mut self,
        slot: usize,
        topic: &[u8],
        body: &[u8],
        now: u64,
        stats: &mut Stats,
        interval: &mut Histogram<u64>,
    ) {
        stats.received += 1;
        stats.bytes_received += body.len() as u64;
        let o = &self.ps.opts;
        let stamp = wire::parse_topic(topic, o.topics).and_then(|t| {
            wire::read_body(body, &self.ps.filler, &self.sh.plan.sizes, o.publishers).filter(|s| s.topic == t)
        });
        let Some(stamp) = stamp else {
            return mismatch(stats);
        };
        let s = &mut self.slots[slot];
        let Ok(k) = s.topics.binary_search(&stamp.topic) else {
            // Not one of this connection's topics (publishers have none).
            stats.foreign += 1;
            return;
        };
        let ns = now.saturating_sub(stamp.sent_ns).max(1);
        stats.latency.saturating_record(ns);
        interval.saturating_record(ns);
        match s.tracks[k * o.publishers as usize + stamp.publisher as usize].arrive(stamp.seq) {
            Arrival::New => s.got += 1,
            Arrival::Late => {
                s.got += 1;
                stats.out_of_order += 1;
            }
            Arrival::Duplicate => stats.duplicated += 1,
        }
    }

    fn ack(&mut self, slot: usize, id: u64, stats: &mut Stats) {
        let batches = self.ps.opts.batches();
        let s = &mut self.slots[slot];
        if s.publisher.is_some() && s.unacked > 0 {
            s.unacked -= 1;
        } else if s.publisher.is_none() && s.acks_due > 0 && id < u64::from(batches) {
            s.acks_due -= 1;
            s.subscribed |= s.acks_due == 0;
        } else {
            // An ack for nothing we asked.
            mismatch(stats);
        }
    }

    /// The server refused a request: a publisher's message is lost (and
    /// counted so at the end); a subscriber expects nothing on the topics
    /// of the refused batch (`id`), or on any if the error names no batch
    /// (deliveries on them count as foreign).
    fn refused(&mut self, slot: usize, id: Option<u64>) {
        let conn = self.id(slot);
        let o = &self.ps.opts;
        let s = &mut self.slots[slot];
        if s.publisher.is_some() {
            s.unacked = s.unacked.saturating_sub(1);
            return;
        }
        s.acks_due = s.acks_due.saturating_sub(1);
        s.subscribed |= s.acks_due == 0;
        let all = choose_topics(o.seed, (conn - o.ws_publishers()) as u64, o.topics, o.subscriptions);
        let refused = match id.and_then(|k| all.chunks(MAX_BATCH).nth(usize::try_from(k).ok()?)) {
            Some(batch) => batch,
            None => &all[..],
        };
        let p = o.publishers as usize;
        let (mut topics, mut tracks) = (Vec::new(), Vec::new());
        for (k, &t) in s.topics.iter().enumerate() {
            if refused.binary_search(&t).is_err() {
                topics.push(t);
                tracks.extend_from_slice(&s.tracks[k * p..(k + 1) * p]);
            }
        }
        s.topics = topics.into_boxed_slice();
        s.tracks = tracks.into_boxed_slice();
    }

    /// What subscriber slot `s` should have received, given the messages
    /// published per topic.
    fn expected(s: &Slot, totals: &[u64]) -> u64 {
        s.topics.iter().map(|&t| totals[t as usize]).sum()
    }

    /// Whether the drain is over: every publisher has stopped, and every
    /// open member of every thread has what it expects. The last thread to
    /// get there takes the end sample before anyone starts closing.
    pub fn drained(&mut self, open_member: impl Fn(usize) -> bool) -> bool {
        let ps = self.ps.clone();
        if ps.after_taken.load(Acquire) {
            return true;
        }
        if self.totals.is_none() {
            if !ps.publishing_over(&self.sh) {
                return false;
            }
            self.totals = Some(ps.topic_totals());
        }
        if !self.drained_flagged {
            let totals = self.totals.as_deref().unwrap_or(&[]);
            let done = (0..self.slots.len()).all(|i| {
                let s = &self.slots[i];
                !open_member(i) || s.publisher.is_some() || s.got >= Driver::expected(s, totals)
            });
            if !done {
                return false;
            }
            self.drained_flagged = true;
            ps.drained_threads.fetch_add(1, AcqRel);
        }
        if ps.drained_threads.load(Acquire) < self.sh.plan.threads || ps.after_claimed.swap(true, AcqRel) {
            return false;
        }
        ps.sample(&self.sh, 1);
        ps.after_taken.store(true, Release);
        true
    }

    /// The final accounting: what each member subscriber missed is lost;
    /// sequence numbers beyond what was published were made up.
    pub fn finish(&mut self, member: impl Fn(usize) -> bool, stats: &mut Stats) {
        let (sh, ps) = (&*self.sh, &*self.ps);
        // Another thread may be a moment behind in stopping.
        let until = sh.now() + SEC;
        while !ps.publishing_over(sh) && sh.now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        ps.sample_end_once(sh);
        let totals = ps.topic_totals();
        let publishers = ps.opts.publishers;
        for (i, s) in self.slots.iter().enumerate() {
            if !member(i) || s.publisher.is_some() {
                continue;
            }
            let e = Driver::expected(s, &totals);
            stats.expected += e;
            stats.lost += e.saturating_sub(s.got);
            for (k, &t) in s.topics.iter().enumerate() {
                for p in 0..publishers {
                    let next = s.tracks[k * publishers as usize + p as usize].next();
                    let sent = ps.counter(p, t).load(Acquire);
                    stats.mismatched += next.saturating_sub(sent);
                }
            }
        }
    }
}

// ---- the summary ----------------------------------------------------------

fn ratio(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

impl Shared {
    fn samples(&self) -> [Option<Sample>; 2] {
        self.samples.lock().map(|g| g.clone()).unwrap_or([None, None])
    }

    /// The pubsub lines of the text summary; `window_s`: seconds from the
    /// first publish to the stop.
    pub fn summary_text(&self, stats: &Stats, window_s: f64) -> String {
        let o = &self.opts;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "pubsub       topics {}  subscribers {} ({} open) x {} topics  publishers {} over {} ({})",
            o.topics,
            o.subscribers,
            self.subscribers_open.load(Relaxed),
            o.subscriptions,
            o.publishers,
            o.via.name(),
            if o.binary { "binary" } else { "text" },
        );
        let target = if o.rate > 0.0 {
            format!(" of {:.0}/s asked", o.rate)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  published  {} ({:.0}/s{target})  deliveries expected {}  received {}  foreign {}",
            stats.sent,
            ratio(stats.sent as f64, window_s).unwrap_or(0.0),
            stats.expected,
            stats.received,
            stats.foreign
        );
        if o.http_publishers() > 0 {
            let _ = writeln!(
                t,
                "  http       {} of {} connections opened; {} requests accepted (202) for {} recipients",
                self.http_open.load(Relaxed),
                o.http_publishers(),
                self.accepted.load(Relaxed),
                self.recipients.load(Relaxed)
            );
        }
        let w = self.window(stats);
        if let Some(secs) = w.seconds {
            let _ = write!(
                t,
                "  window     {secs:.2} s, first publish to end of drain: wsflood cpu {:.2} s",
                w.client_cpu
            );
            if let Some(sv) = w.server_cpu {
                let per = w.per_server_cpu_s.map_or("-".into(), |d| format!("{d:.0}"));
                let _ = write!(t, ", server cpu {sv:.2} s ({per} deliveries per server cpu-second)");
            }
            t.push('\n');
        }
        match &w.server {
            Ok(m) => {
                let per = w.writes_per_delivery.map_or("-".into(), |r| format!("{r:.4}"));
                let show = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                let _ = writeln!(
                    t,
                    "  server     write calls {} ({per} per delivery)  messages out {}  enveloped deliveries {}  \
                     subscriptions {}  topics {}",
                    show(m.write_calls),
                    show(m.messages_out),
                    show(m.deliveries_enveloped),
                    show(m.subscriptions),
                    show(m.topics)
                );
            }
            Err(e) => {
                let _ = writeln!(t, "  server     no metrics: {e}");
            }
        }
        t
    }

    /// The pubsub object of the JSON summary; `window_s` as for the text.
    pub fn summary_json(&self, stats: &Stats, window_s: f64) -> Value {
        let o = &self.opts;
        let w = self.window(stats);
        let server = match &w.server {
            Ok(m) => json!({
                "write_calls": m.write_calls,
                "write_calls_per_delivery": w.writes_per_delivery,
                "messages_out": m.messages_out,
                "deliveries_enveloped": m.deliveries_enveloped,
                "subscriptions": m.subscriptions,
                "topics": m.topics,
            }),
            Err(e) => json!({ "error": e }),
        };
        json!({
            "topics": o.topics,
            "subscriptions": o.subscriptions,
            "subscribers": o.subscribers,
            "subscribers_open": self.subscribers_open.load(Relaxed),
            "publishers": o.publishers,
            "publish_via": o.via.name(),
            "binary": o.binary,
            "batch": o.batch,
            "seed": o.seed,
            "rate": o.rate,
            "published_per_s": ratio(stats.sent as f64, window_s),
            "expected": stats.expected,
            "foreign": stats.foreign,
            "http": {
                "open": self.http_open.load(Relaxed),
                "accepted": self.accepted.load(Relaxed),
                "recipients": self.recipients.load(Relaxed),
            },
            "window": {
                "seconds": w.seconds,
                "client_cpu_s": w.client_cpu,
                "server_cpu_s": w.server_cpu,
                "deliveries_per_server_cpu_s": w.per_server_cpu_s,
            },
            "server": server,
        })
    }

    /// From the first publish to the end of the drain: CPU and the server's
    /// counters (differences for counters, the end value for gauges).
    fn window(&self, stats: &Stats) -> Window {
        let [a, b] = self.samples();
        let mut w = Window {
            seconds: None,
            client_cpu: 0.0,
            server_cpu: None,
            per_server_cpu_s: None,
            writes_per_delivery: None,
            server: Err("not measured (publishing never began)".into()),
        };
        let (Some(a), Some(b)) = (a, b) else { return w };
        w.seconds = Some((b.at_ns.saturating_sub(a.at_ns)) as f64 / 1e9);
        w.client_cpu = b.client_cpu - a.client_cpu;
        w.server_cpu = a.server_cpu.zip(b.server_cpu).map(|(x, y)| y - x);
        let deliveries = stats.received as f64;
        w.per_server_cpu_s = w.server_cpu.and_then(|c| ratio(deliveries, c));
        w.server = match (a.metrics, b.metrics) {
            (Ok(x), Ok(y)) => {
                let d = |f: fn(&scrape::Metrics) -> Option<u64>| f(&x).zip(f(&y)).map(|(x, y)| y.saturating_sub(x));
                let m = scrape::Metrics {
                    write_calls: d(|m| m.write_calls),
                    messages_out: d(|m| m.messages_out),
                    deliveries_enveloped: d(|m| m.deliveries_enveloped),
                    subscriptions: y.subscriptions,
                    topics: y.topics,
                };
                w.writes_per_delivery = m.write_calls.and_then(|c| ratio(c as f64, deliveries));
                Ok(m)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        w
    }
}

#[derive(Debug)]
struct Window {
    seconds: Option<f64>,
    client_cpu: f64,
    server_cpu: Option<f64>,
    per_server_cpu_s: Option<f64>,
    writes_per_delivery: Option<f64>,
    server: Result<scrape::Metrics, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_choice_is_seeded_distinct_and_spread() {
        let a = choose_topics(7, 3, 1000, 10);
        assert_eq!(a, choose_topics(7, 3, 1000, 10), "same seed, same topics");
        assert_ne!(a, choose_topics(8, 3, 1000, 10));
        assert_ne!(a, choose_topics(7, 4, 1000, 10));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted and distinct: {a:?}");
        assert!(a.iter().all(|&t| t < 1000));
        // All of them, and every topic about as often over many subscribers.
        assert_eq!(&*choose_topics(1, 0, 5, 5), &[0, 1, 2, 3, 4]);
        let mut counts = [0u32; 20];
        for i in 0..2000 {
            for &t in choose_topics(1, i, 20, 3).iter() {
                counts[t as usize] += 1;
            }
        }
        assert!(counts.iter().all(|&c| (200..400).contains(&c)), "{counts:?}");
    }

    #[test]
    fn pacing_catches_up_a_little() {
        // A 10 us period after a 1 ms sleep: keep the schedule.
        assert_eq!(pace(1_000_000, 10_000, 2_000_000), 1_010_000);
        assert_eq!(pace(1_000_000, 10_000, 9_000_000), 1_010_000);
        // After a long stall: start again from now.
        assert_eq!(pace(1_000_000, 10_000, 20_000_000), 20_000_000);
        assert_eq!(pace(0, SEC, SEC / 2), SEC);
    }

    #[test]
    fn rng_below_is_in_range() {
        let mut r = Rng::new(1, 2);
        for n in [1, 2, 3, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
    }
}
