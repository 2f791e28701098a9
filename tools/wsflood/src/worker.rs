//! One worker thread: a mio poll loop over its share of the connections,
//! each driven by wsloop's sans-IO core in the client role.
//!
//! Buffers: one read buffer and one write buffer for the whole loop, and a
//! mutable copy of the payload filler that outgoing messages are stamped
//! into. A connection owns only what the socket would not take yet
//! (`pending`) and the start of a frame split across reads (`carry`); both
//! keep their capacity, so once warmed up nothing is allocated per message.
//! Only whole frames are handed to the protocol core, so it never gathers
//! a message in a buffer of its own either.
//!
//! Life of a run: ramp-up (connections started at --connect-rate, at most
//! --max-pending connecting at once), load until --duration, then drain
//! (outstanding echoes and deliveries, at most 5 s), then the closing
//! handshake on every connection (at most 2 s). A hard cap of --duration +
//! 10 s ends everything.

use crate::alloc;
use crate::cli::{Mode, Plan};
use crate::deflate::{Codecs, ConnDeflate, Sent};
use crate::payload;
use crate::pubsub;
use crate::shared::{Shared, HARD_CAP};
use crate::stats::{self, Stats};
use crate::tls::Stream;
use crate::track::{Arrival, RoundArrival, Rounds, SeqTrack};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use wsloop::net::write_some;
use wsloop::proto::frame::{self, Decoded};
use wsloop::proto::handshake::{self, ResponseError, ResponseParser};
use wsloop::proto::http::{HeadLimits, Progress};
use wsloop::proto::{Event, Limits, Session};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// One read system call takes at most this much.
const READ_BUFFER: usize = 256 << 10;
/// Full reads from one connection before the others get their turn.
const MAX_READS: u32 = 8;
/// After the load: how long outstanding messages may take to arrive.
const DRAIN: u64 = 5 * SEC;
/// How long the server may take to answer our Close.
const CLOSE_WAIT: u64 = 2 * SEC;
/// After the closing handshake: how long the server may take to close TCP.
const LINGER: u64 = SEC;
/// How often progress counters are published.
const PUBLISH: u64 = 100 * MS;
/// Warm-up before the allocation count of the steady state starts.
const WARM_UP: u64 = SEC;
/// Response heads are small; anything larger is not a WebSocket server.
const HEAD: HeadLimits = HeadLimits {
    max_size: 16 << 10,
    max_fields: 100,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Not started yet, or finished.
    Free,
    /// TCP connect in progress.
    Connecting,
    /// Request sent, reading the response head.
    Handshaking,
    Open,
    /// We sent Close and wait for the server's.
    Closing,
    /// Closing handshake over (or failed): waiting for the server to close TCP.
    Lingering,
}

/// What a connection sends and has received.
#[derive(Debug, Default)]
struct Flow {
    /// Echo: send times of outstanding messages, a ring from `head`.
    sends: Box<[u64]>,
    head: usize,
    inflight: usize,
    send_seq: u64,
    recv_seq: u64,
    /// Rate-limited sending: when the next message is due.
    next_send: u64,
    /// Broadcast: distinct deliveries, and those of our own messages.
    got: u64,
    own_got: u64,
    seqs: Box<[SeqTrack]>,
    rounds: Option<Rounds>,
    /// Churn: the echo came back right.
    echoed: bool,
}

struct Conn {
    /// Connection id, unique across threads (publishers have the lowest).
    id: u32,
    st: St,
    stream: Option<Stream>,
    session: Session,
    parser: Option<Box<ResponseParser>>,
    /// The start of a frame that the last read cut.
    carry: Vec<u8>,
    /// Output the socket has not taken yet, from `pending_at`.
    pending: Vec<u8>,
    pending_at: usize,
    t_connect: u64,
    t_handshake: u64,
    /// When the current state times out (0: never).
    deadline: u64,
    /// The time of this connection's live timer entry (0: none).
    wake: u64,
    in_ready: bool,
    /// Input was left unread after a run of full reads (see `on_readable`).
    in_reread: bool,
    /// The peer has closed its side (read on until end of stream).
    read_closed: bool,
    /// Broadcast: open when publishing began.
    member: bool,
    flow: Flow,
    /// permessage-deflate, if agreed.
    deflate: ConnDeflate,
    /// --lifetime: when to make room for a new connection (0: never), and
    /// whether that time has come (no more sends; close once answered).
    retire_at: u64,
    retiring: bool,
    /// Connections this slot has had open.
    generation: u32,
}

impl Conn {
    fn has_pending(&self) -> bool {
        self.pending_at < self.pending.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    Drain { until: u64 },
    Close { until: u64 },
}

/// Worker state other than the connections, so that message handling can
/// borrow it next to a connection's session.
struct Ctx {
    sh: Arc<Shared>,
    mode: Mode,
    stats: Stats,
    interval: Histogram<u64>,
    /// The filler, with stamps written over its start as messages go out.
    sendbuf: Vec<u8>,
    limits: Limits,
    sending: bool,
    /// Broadcast: publishing has begun (every connection settled).
    started: bool,
    /// All-to-all: deliveries that complete a round.
    per_round: u64,
    /// Rate-limited sending: ns between messages.
    period: u64,
    /// Connections not Free; connecting or handshaking; open.
    active: usize,
    pending: usize,
    open: usize,
    /// Echo and churn: messages outstanding on all connections.
    outstanding: u64,
    rng: u64,
    /// Pubsub: the mode's side of this thread (see pubsub.rs).
    ps: Option<pubsub::Driver>,
    /// permessage-deflate: the thread's shared codecs.
    codecs: Codecs,
}

impl Ctx {
    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn record_latency(latency: &mut Histogram<u64>, interval: &mut Histogram<u64>, ns: u64) {
    let ns = ns.max(1);
    latency.saturating_record(ns);
    interval.saturating_record(ns);
}

pub struct Worker {
    index: usize,
    poll: Poll,
    events: Option<Events>,
    conns: Vec<Conn>,
    /// Connections to start (churn: again), popped from the end.
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// Connections that may send more right away (unpaced publishers).
    ready: Vec<u32>,
    ready_spare: Vec<u32>,
    /// Connections with input left unread, to come back to.
    rereads: Vec<u32>,
    rereads_spare: Vec<u32>,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
    /// A compressed message, inflated.
    inflated: Vec<u8>,
    /// Connections started, for --connect-rate (churn: --rate).
    started: u64,
    ports: Option<Ports>,
    ctx: Ctx,
}

impl Worker {
    /// Worker `index` of the run `sh`; `ps` is a pubsub run's own state.
    pub fn new(sh: Arc<Shared>, ps: Option<&Arc<pubsub::Shared>>, index: usize) -> io::Result<Worker> {
        let plan = &sh.plan;
        let conns: Vec<Conn> = (index..plan.connections)
            .step_by(plan.threads)
            .map(|id| Conn {
                id: id as u32,
                st: St::Free,
                stream: None,
                session: Session::client(1),
                parser: None,
                carry: Vec::new(),
                pending: Vec::new(),
                pending_at: 0,
                t_connect: 0,
                t_handshake: 0,
                deadline: 0,
                wake: 0,
                in_ready: false,
                in_reread: false,
                read_closed: false,
                member: false,
                flow: Flow::default(),
                deflate: ConnDeflate::default(),
                retire_at: 0,
                retiring: false,
                generation: 0,
            })
            .collect();
        let n = conns.len();
        let seed = (sh.start.elapsed().as_nanos() as u64 ^ std::process::id() as u64 ^ (index as u64) << 48) | 1;
        let period = if plan.rate > 0.0 && plan.mode != Mode::Churn {
            ((1e9 / plan.rate) as u64).max(1)
        } else {
            0
        };
        let ctx = Ctx {
            mode: plan.mode,
            stats: Stats::default(),
            interval: stats::histogram(),
            sendbuf: sh.filler.to_vec(),
            limits: Limits::default(),
            sending: true,
            started: false,
            per_round: 0,
            period,
            active: 0,
            pending: 0,
            open: 0,
            outstanding: 0,
            rng: seed,
            ps: pubsub::Driver::new(&sh, ps, index, n),
            codecs: Codecs::new(plan.deflate.as_ref()),
            sh: sh.clone(),
        };
        Ok(Worker {
            index,
            poll: Poll::new()?,
            events: Some(Events::with_capacity(1024)),
            free: (0..n as u32).rev().collect(),
            timers: BinaryHeap::with_capacity(4 * n + 16),
            ready: Vec::with_capacity(n),
            ready_spare: Vec::with_capacity(n),
            rereads: Vec::with_capacity(n),
            rereads_spare: Vec::with_capacity(n),
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            wbuf: Vec::with_capacity(64 << 10),
            inflated: Vec::new(),
            conns,
            started: 0,
            ports: Ports::new(index, plan.threads),
            ctx,
        })
    }

    fn sh(&self) -> &Shared {
        &self.ctx.sh
    }

    /// Runs to the end and returns what was counted.
    pub fn run(mut self) -> Stats {
        let sh = self.ctx.sh.clone();
        let plan = &sh.plan;
        let stop = plan.duration_ns;
        let hard = stop + HARD_CAP;
        let warm_up = WARM_UP.min(stop / 4);
        let mut phase = Phase::Run;
        let mut next_publish = 0;
        let mut next_drain_check = 0;
        let mut ramp_done: Option<u64> = None;
        let mut steady_from: Option<(u64, u64)> = None;
        loop {
            let now = sh.now();
            if now >= hard {
                break;
            }
            match phase {
                Phase::Run if now >= stop => {
                    if let Some((allocs, msgs)) = steady_from {
                        let s = &self.ctx.stats;
                        let steady = (alloc::thread_allocations() - allocs, s.sent + s.received - msgs);
                        self.ctx.stats.steady = Some(steady);
                    }
                    self.stop_sending();
                    phase = if plan.mode == Mode::Idle {
                        self.begin_close(now);
                        Phase::Close {
                            until: now + CLOSE_WAIT,
                        }
                    } else {
                        Phase::Drain { until: now + DRAIN }
                    };
                }
                Phase::Drain { until } if now >= until || (now >= next_drain_check && self.drained()) => {
                    self.begin_close(now);
                    phase = Phase::Close {
                        until: now + CLOSE_WAIT,
                    };
                }
                Phase::Drain { .. } => {}
                Phase::Close { until } if now >= until || self.ctx.active == 0 => break,
                _ => {}
            }
            if matches!(phase, Phase::Drain { .. }) && now >= next_drain_check {
                next_drain_check = now + 5 * MS;
            }
            let mut next_start = None;
            if phase == Phase::Run {
                self.check_start(now);
                next_start = self.start_connections(now);
                if plan.mode != Mode::Churn && steady_from.is_none() {
                    let settled = self.free.is_empty() && self.ctx.pending == 0;
                    let waits = matches!(plan.mode, Mode::Broadcast | Mode::Pubsub);
                    if ramp_done.is_none() && settled && (!waits || self.ctx.started) {
                        ramp_done = Some(now);
                    }
                    if ramp_done.is_some_and(|t| now >= t + warm_up) {
                        let s = &self.ctx.stats;
                        steady_from = Some((alloc::thread_allocations(), s.sent + s.received));
                    }
                }
            }
            self.run_timers(now);
            self.run_ready(now);
            self.run_rereads(now);
            if now >= next_publish {
                self.publish();
                next_publish = now + PUBLISH;
            }

            // Sleep until the next thing to do.
            let mut until = hard.min(next_publish);
            match phase {
                Phase::Run => until = until.min(stop),
                Phase::Drain { until: u } => until = until.min(u).min(now + 5 * MS),
                Phase::Close { until: u } => until = until.min(u),
            }
            if let Some(Reverse((t, _))) = self.timers.peek() {
                until = until.min(*t);
            }
            if let Some(t) = next_start {
                until = until.min(t);
            }
            if phase == Phase::Run && matches!(plan.mode, Mode::Broadcast | Mode::Pubsub) && !self.ctx.started {
                until = until.min(now + MS);
            }
            if phase == Phase::Run && steady_from.is_none() && ramp_done.is_some() {
                until = until.min(ramp_done.unwrap_or(0) + warm_up);
            }
            let timeout = if self.ready.is_empty() && self.rereads.is_empty() {
                Duration::from_nanos(until.saturating_sub(now))
            } else {
                Duration::ZERO
            };
            let mut events = self.events.take().expect("events are put back after each poll");
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("wsflood: thread {}: poll failed: {e}", self.index);
                    self.events = Some(events);
                    break;
                }
            }
            for ev in events.iter() {
                let slot = ev.token().0;
                let now = sh.now();
                self.on_event(
                    slot,
                    ev.is_readable(),
                    ev.is_writable(),
                    ev.is_read_closed() || ev.is_error(),
                    now,
                );
            }
            self.events = Some(events);
        }
        if phase == Phase::Run {
            self.stop_sending();
        }
        self.finish();
        self.publish();
        self.ctx.stats
    }

    fn publish(&mut self) {
        let live = &self.ctx.sh.live[self.index];
        live.publish(self.ctx.open as u64, &self.ctx.stats, &mut self.ctx.interval);
    }

    fn stop_sending(&mut self) {
        self.ctx.sending = false;
        let s = &mut self.ctx.stats;
        s.received_at_stop = s.received;
        s.cycles_at_stop = s.cycles;
        self.ctx.sh.stopped.fetch_add(1, Relaxed);
    }

    /// Whether everything sent has been answered or delivered.
    fn drained(&mut self) -> bool {
        if let Some(ps) = &mut self.ctx.ps {
            let conns = &self.conns;
            return ps.drained(|slot| conns[slot].member && conns[slot].st == St::Open);
        }
        match self.ctx.mode {
            Mode::Echo => self.ctx.outstanding == 0,
            Mode::Churn => self.ctx.active == 0,
            Mode::Idle | Mode::Pubsub => true,
            Mode::Broadcast => {
                let sh = self.sh();
                if sh.stopped.load(Relaxed) < sh.plan.threads {
                    return false;
                }
                let total: u64 = sh.sent.iter().map(|s| s.load(Relaxed)).sum();
                self.conns
                    .iter()
                    .filter(|c| c.member && c.st == St::Open)
                    .all(|c| c.flow.got >= self.expected(c, total))
            }
        }
    }

    /// Broadcast: the distinct deliveries connection `c` should have had,
    /// given that `total` messages were published.
    fn expected(&self, c: &Conn, total: u64) -> u64 {
        let sh = self.sh();
        let own = match sh.sent.get(c.id as usize) {
            Some(s) if !sh.plan.expect_self => s.load(Relaxed),
            _ => 0,
        };
        total - own
    }

    /// Broadcast and pubsub: publishing begins once every connection has
    /// settled (pubsub: and subscribed), so that every message has the same
    /// audience.
    fn check_start(&mut self, now: u64) {
        if !matches!(self.ctx.mode, Mode::Broadcast | Mode::Pubsub) || self.ctx.started {
            return;
        }
        let sh = self.ctx.sh.clone();
        if sh.settled.load(Relaxed) < sh.plan.connections {
            return;
        }
        if let Some(ps) = &mut self.ctx.ps {
            // Pubsub: and every subscription acknowledged.
            let conns = &self.conns;
            if !ps.ready_to_start(|slot| conns[slot].st == St::Open) {
                return;
            }
            ps.on_start(|slot| conns[slot].st == St::Open);
        }
        let _ = sh.members.compare_exchange(0, sh.open.load(Relaxed), Relaxed, Relaxed);
        let members = sh.members.load(Relaxed) as u64;
        self.ctx.started = true;
        self.ctx.per_round = members - u64::from(!sh.plan.expect_self && members > 0);
        for slot in 0..self.conns.len() {
            if self.conns[slot].st == St::Open {
                self.conns[slot].member = true;
                if let Some(r) = &mut self.conns[slot].flow.rounds {
                    while self.ctx.per_round > 0 && r.advance(self.ctx.per_round) {
                        self.ctx.stats.rounds += 1;
                    }
                }
                self.conns[slot].flow.next_send = now + self.phase_offset(slot);
                self.fill(slot, now);
                self.flush(slot);
            }
        }
    }

    /// Rate-limited sending: where in its period a connection starts, so
    /// that connections don't all send at once.
    fn phase_offset(&self, slot: usize) -> u64 {
        if self.ctx.period == 0 {
            0
        } else {
            (u64::from(self.conns[slot].id).wrapping_mul(0x9E37_79B9)) % self.ctx.period
        }
    }

    /// Starts connections as the ramp-up rate and the pending cap allow;
    /// returns when the rate allows the next one.
    fn start_connections(&mut self, now: u64) -> Option<u64> {
        let plan = &self.ctx.sh.plan;
        let threads = plan.threads as f64;
        let rate = if plan.mode == Mode::Churn {
            plan.rate
        } else {
            plan.connect_rate
        } / threads;
        let max_pending = plan.max_pending.div_ceil(plan.threads);
        // Bounded: a connection that fails at once goes back on the free
        // list in churn mode.
        let mut budget = self.conns.len();
        while budget > 0 {
            let &slot = self.free.last()?;
            if self.ctx.pending >= max_pending {
                return None;
            }
            if rate > 0.0 {
                let allowed = (now as f64 / 1e9 * rate) as u64 + 1;
                if self.started >= allowed {
                    return Some(((self.started as f64 / rate) * 1e9) as u64);
                }
            }
            self.free.pop();
            self.started += 1;
            budget -= 1;
            self.start(slot as usize, now);
        }
        None
    }

    fn start(&mut self, slot: usize, now: u64) {
        let ctx = &mut self.ctx;
        ctx.stats.attempted += 1;
        ctx.stats.first_attempt_ns.get_or_insert(now);
        let conn = &mut self.conns[slot];
        let mut tries = 0;
        let connected = loop {
            let port = match &mut self.ports {
                Some(p) if tries < PORT_TRIES => Some(p.take()),
                _ => None,
            };
            match connect(&ctx.sh.plan, conn.id, port) {
                Err(Failure::PortBusy) => tries += 1,
                other => break other,
            }
        };
        let mut stream = match connected {
            Ok(s) => s,
            Err(Failure::PortBusy) => unreachable!("the kernel's own port choice is never busy"),
            Err(Failure::Socket) => {
                ctx.stats.errors.socket += 1;
                return self.failed_to_start(slot);
            }
            Err(Failure::Connect(e)) => {
                ctx.stats.errors.io_error(&e);
                return self.failed_to_start(slot);
            }
        };
        if self
            .poll
            .registry()
            .register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            ctx.stats.errors.socket += 1;
            return self.failed_to_start(slot);
        }
        conn.stream = Some(Stream::Plain(stream));
        conn.st = St::Connecting;
        conn.t_connect = now;
        conn.deadline = now + ctx.sh.plan.connect_timeout_ns;
        ctx.active += 1;
        ctx.pending += 1;
        self.arm(slot, self.conns[slot].deadline);
    }

    fn failed_to_start(&mut self, slot: usize) {
        self.ctx.stats.failed += 1;
        self.settle();
        if self.ctx.mode == Mode::Churn {
            self.free.push(slot as u32);
        }
    }

    /// A connection is done trying to open, one way or the other.
    fn settle(&mut self) {
        self.ctx.stats.last_settled_ns = Some(self.ctx.sh.now());
        if self.ctx.mode != Mode::Churn {
            self.ctx.sh.settled.fetch_add(1, Relaxed);
        }
    }

    /// Asks for `on_timer` at `t` (or earlier, if already asked).
    fn arm(&mut self, slot: usize, t: u64) {
        let conn = &mut self.conns[slot];
        if t != 0 && (conn.wake == 0 || t < conn.wake) {
            conn.wake = t;
            self.timers.push(Reverse((t, slot as u32)));
        }
    }

    fn run_timers(&mut self, now: u64) {
        while let Some(&Reverse((t, slot))) = self.timers.peek() {
            if t > now {
                return;
            }
            self.timers.pop();
            let slot = slot as usize;
            if self.conns[slot].wake != t {
                continue; // superseded by an earlier one
            }
            self.conns[slot].wake = 0;
            self.on_timer(slot, now);
        }
    }

    fn on_timer(&mut self, slot: usize, now: u64) {
        let (st, deadline) = (self.conns[slot].st, self.conns[slot].deadline);
        if deadline != 0 && now >= deadline {
            let errors = &mut self.ctx.stats.errors;
            match st {
                St::Connecting => {
                    errors.connect_timeout += 1;
                    self.fail(slot);
                }
                St::Handshaking => {
                    errors.handshake_timeout += 1;
                    self.fail(slot);
                }
                St::Closing => {
                    errors.close_timeout += 1;
                    self.release(slot);
                }
                St::Lingering => self.finished(slot),
                St::Open | St::Free => {}
            }
            return;
        }
        if st == St::Open {
            self.fill(slot, now);
            self.flush(slot);
        }
        let (deadline, retire_at, st) = {
            let c = &self.conns[slot];
            (c.deadline, c.retire_at, c.st)
        };
        self.arm(slot, deadline);
        if st == St::Open && retire_at > now {
            // A pacing timer may have taken the place of the retirement's
            // (once due, the connection waits for its echoes instead).
            self.arm(slot, retire_at);
        }
    }

    fn run_ready(&mut self, now: u64) {
        if self.ready.is_empty() {
            return;
        }
        std::mem::swap(&mut self.ready, &mut self.ready_spare);
        for i in 0..self.ready_spare.len() {
            let slot = self.ready_spare[i] as usize;
            self.conns[slot].in_ready = false;
            self.fill(slot, now);
            self.flush(slot);
        }
        self.ready_spare.clear();
    }

    fn run_rereads(&mut self, now: u64) {
        if self.rereads.is_empty() {
            return;
        }
        std::mem::swap(&mut self.rereads, &mut self.rereads_spare);
        let mut rbuf = std::mem::take(&mut self.rbuf);
        for i in 0..self.rereads_spare.len() {
            let slot = self.rereads_spare[i] as usize;
            // Released since (and perhaps started again): nothing to read.
            if !std::mem::take(&mut self.conns[slot].in_reread) {
                continue;
            }
            if !matches!(self.conns[slot].st, St::Free | St::Connecting) {
                let closed = self.conns[slot].read_closed;
                self.on_readable(slot, &mut rbuf, closed, now);
            }
        }
        self.rbuf = rbuf;
        self.rereads_spare.clear();
    }

    fn on_event(&mut self, slot: usize, readable: bool, writable: bool, closed: bool, now: u64) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        match conn.st {
            St::Free => {}
            St::Connecting => {
                if writable || closed {
                    self.on_connected(slot, now);
                }
            }
            _ => {
                if writable {
                    self.on_writable(slot, now);
                }
                if (readable || closed) && self.conns[slot].st != St::Free {
                    let mut rbuf = std::mem::take(&mut self.rbuf);
                    self.on_readable(slot, &mut rbuf, closed, now);
                    self.rbuf = rbuf;
                }
            }
        }
    }

    fn on_connected(&mut self, slot: usize, now: u64) {
        let conn = &mut self.conns[slot];
        let Some(stream) = conn.stream.as_ref() else {
            return;
        };
        // mio: after a writable event, a connect's outcome is in SO_ERROR,
        // and peer_addr tells a completed connect from a spurious wakeup.
        let failure = match stream.tcp().take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.tcp().peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failure {
            self.ctx.stats.errors.io_error(&e);
            return self.fail(slot);
        }
        let ctx = &mut self.ctx;
        if let (Some(config), Some(Stream::Plain(_))) = (&ctx.sh.plan.tls, &conn.stream) {
            // wss://: TLS starts on the connected socket; the request waits
            // in rustls until the TLS handshake is done.
            let Some(Stream::Plain(tcp)) = conn.stream.take() else {
                unreachable!("matched above")
            };
            match Stream::tls(tcp, config, &ctx.sh.plan.target_of(conn.id).hostname) {
                Ok(s) => conn.stream = Some(s),
                Err(e) => {
                    ctx.stats.errors.io_error(&e);
                    return self.fail(slot);
                }
            }
        }
        ctx.stats.connected += 1;
        ctx.stats.connect.saturating_record((now - conn.t_connect).max(1));
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&ctx.random().to_le_bytes());
        nonce[8..].copy_from_slice(&ctx.random().to_le_bytes());
        let key = handshake::encode_key(nonce);
        let target = ctx.sh.plan.target_of(conn.id);
        let offer = ctx.sh.plan.deflate.as_ref().map(|d| &d.offer);
        handshake::write_client_request_with_extensions::<&str>(
            &mut self.wbuf,
            &target.host,
            &target.path,
            &key,
            &[],
            offer,
        );
        conn.parser = Some(Box::new(ResponseParser::with_extensions::<&str>(&key, &[], offer)));
        conn.st = St::Handshaking;
        conn.t_handshake = now;
        conn.deadline = now + ctx.sh.plan.connect_timeout_ns;
        self.arm(slot, self.conns[slot].deadline);
        self.flush(slot);
    }

    fn on_writable(&mut self, slot: usize, now: u64) {
        if let Some(stream) = self.conns[slot].stream.as_mut().filter(|s| s.has_pending()) {
            if let Err(e) = stream.flush_pending() {
                self.ctx.stats.errors.io_error(&e);
                return self.fail(slot);
            }
        }
        if self.conns[slot].has_pending() {
            self.flush(slot);
        }
        let conn = &self.conns[slot];
        if conn.st == St::Open && !conn.has_pending() {
            self.fill(slot, now);
            self.flush(slot);
        }
    }

    fn on_readable(&mut self, slot: usize, rbuf: &mut [u8], closed: bool, now: u64) {
        self.conns[slot].read_closed |= closed;
        let mut reads = 0;
        loop {
            if reads == MAX_READS {
                // Fairness: let the other connections have their turn, and
                // come back to this one in the next round (no new edge
                // will say that input is waiting).
                let conn = &mut self.conns[slot];
                if !conn.in_reread {
                    conn.in_reread = true;
                    self.rereads.push(slot as u32);
                }
                break;
            }
            reads += 1;
            let Some(stream) = self.conns[slot].stream.as_mut() else {
                return;
            };
            match stream.read(rbuf) {
                Ok(0) => return self.on_eof(slot),
                Ok(n) => {
                    self.ctx.stats.wire_received += n as u64;
                    self.on_data(slot, &mut rbuf[..n], now);
                    if self.conns[slot].st == St::Free {
                        self.wbuf.clear();
                        return;
                    }
                    // A short read emptied the socket: the next arrival is a
                    // new edge, so skip the read that would say WouldBlock.
                    if n < rbuf.len() && !self.conns[slot].read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.wbuf.clear();
                    self.ctx.stats.errors.io_error(&e);
                    return self.fail(slot);
                }
            }
        }
        self.fill(slot, now);
        self.flush(slot);
    }

    fn on_eof(&mut self, slot: usize) {
        self.wbuf.clear();
        match self.conns[slot].st {
            St::Lingering => self.finished(slot),
            St::Free => {}
            _ => {
                self.ctx.stats.errors.eof += 1;
                self.fail(slot);
            }
        }
    }

    /// One read's worth of input.
    fn on_data(&mut self, slot: usize, data: &mut [u8], now: u64) {
        let mut data = data;
        let conn = &mut self.conns[slot];
        if conn.st == St::Handshaking {
            let parser = conn.parser.as_mut().expect("a handshaking connection has a parser");
            match parser.feed(&HEAD, data) {
                Ok(Progress::Partial) => return,
                Ok(Progress::Complete(used)) => {
                    self.on_open(slot, now);
                    // Frames sent right behind the 101 are in this read.
                    data = &mut data[used..];
                }
                Err(e) => {
                    let errors = &mut self.ctx.stats.errors;
                    match e {
                        ResponseError::Status(s) => *errors.handshake_status.entry(s).or_default() += 1,
                        ResponseError::Invalid(_) => errors.handshake_invalid += 1,
                    }
                    return self.fail(slot);
                }
            }
        }
        let max_frame = self.ctx.limits.max_frame;
        let conn = &mut self.conns[slot];
        if !conn.carry.is_empty() {
            // Complete the frame the last read cut, then hand it over alone.
            loop {
                let need = match first_frame(&conn.carry, max_frame) {
                    Ok(_) => break,
                    Err(need) => need,
                };
                let take = (need - conn.carry.len()).min(data.len());
                conn.carry.extend_from_slice(&data[..take]);
                data = &mut data[take..];
                if conn.carry.len() < need {
                    return;
                }
            }
            let mut carry = std::mem::take(&mut conn.carry);
            self.frames(slot, &mut carry, now);
            carry.clear();
            self.conns[slot].carry = carry;
        }
        if data.is_empty() || self.conns[slot].st == St::Free {
            return;
        }
        let whole = whole_frames(data, max_frame);
        if whole > 0 {
            self.frames(slot, &mut data[..whole], now);
        }
        let conn = &mut self.conns[slot];
        if whole < data.len() && conn.st != St::Free {
            conn.carry.extend_from_slice(&data[whole..]);
        }
    }

    /// Feeds whole frames to the session and handles what it finds.
    fn frames(&mut self, slot: usize, input: &mut [u8], now: u64) {
        let Worker {
            conns,
            ctx,
            wbuf,
            inflated,
            ..
        } = self;
        let conn = &mut conns[slot];
        let mut pos = 0;
        let mut lingering = false;
        let max_len = usize::try_from(ctx.limits.max_message).unwrap_or(usize::MAX);
        loop {
            let mut inflate_failed = None;
            match conn.session.handle_input(&ctx.limits, input, &mut pos, wbuf) {
                Ok(None) => break,
                Ok(Some(Event::Message(kind, payload))) => match &mut ctx.ps {
                    Some(ps) => ps.on_message(slot, kind, payload, now, &mut ctx.stats, &mut ctx.interval),
                    None => on_message(ctx, conn.id, &mut conn.flow, payload, now),
                },
                // RSV1 (RFC 7692 §6): the session lets it through only
                // with the extension agreed.
                Ok(Some(Event::Compressed(kind, data))) => {
                    ctx.stats.compressed_received += 1;
                    match ctx.codecs.inflate(&mut conn.deflate, kind, data, max_len, inflated) {
                        Ok(()) => match &mut ctx.ps {
                            Some(ps) => ps.on_message(slot, kind, inflated, now, &mut ctx.stats, &mut ctx.interval),
                            None => on_message(ctx, conn.id, &mut conn.flow, inflated, now),
                        },
                        Err(why) => inflate_failed = Some(why),
                    }
                }
                Ok(Some(Event::Ping(_) | Event::Pong(_))) => {}
                Ok(Some(Event::Closed { code, .. })) => {
                    if conn.st != St::Closing {
                        *ctx.stats.errors.close_code.entry(code.unwrap_or(1005)).or_default() += 1;
                    }
                    lingering = true;
                }
                Err(_) => {
                    // Our Close with the reason is queued in wbuf.
                    ctx.stats.errors.protocol += 1;
                    lingering = true;
                }
            }
            if let Some((code, reason)) = inflate_failed {
                // The server sent what does not inflate (or past the
                // limit): fail the connection (RFC 6455 §7.1.7).
                conn.session.fail_with(code, reason, wbuf);
                ctx.stats.errors.protocol += 1;
                lingering = true;
            }
        }
        if lingering {
            lose_outstanding(ctx, &mut conn.flow);
            conn.st = St::Lingering;
            conn.deadline = now + LINGER;
            self.arm(slot, now + LINGER);
        } else if conn.st == St::Open && ctx.mode == Mode::Churn && conn.flow.recv_seq > 0 {
            conn.session.close(1000, "", wbuf);
            conn.st = St::Closing;
            conn.deadline = now + CLOSE_WAIT;
            self.arm(slot, now + CLOSE_WAIT);
        }
    }

    fn on_open(&mut self, slot: usize, now: u64) {
        let ctx = &mut self.ctx;
        let sh = ctx.sh.clone();
        let plan = &sh.plan;
        let conn = &mut self.conns[slot];
        ctx.pending -= 1;
        ctx.open += 1;
        sh.open.fetch_add(1, Relaxed);
        ctx.stats.established += 1;
        ctx.stats.peak_open = ctx.stats.peak_open.max(ctx.open as u64);
        ctx.stats.handshake.saturating_record((now - conn.t_handshake).max(1));
        conn.session = Session::client(ctx.random() as u32);
        let agreed = conn.parser.as_ref().and_then(|p| p.deflate());
        match agreed {
            Some(params) => {
                conn.session.allow_compression();
                ctx.stats.count_agreed(params, 1);
            }
            None if plan.deflate.is_some() => ctx.stats.deflate_declined += 1,
            None => {}
        }
        conn.deflate = ConnDeflate::agreed(agreed);
        conn.parser = None;
        conn.st = St::Open;
        conn.deadline = 0;
        conn.retiring = false;
        conn.retire_at = 0;
        if plan.lifetime_ns > 0 {
            // Counted once the new connection is up, not when the old one
            // went: a run may end while a replacement is still connecting.
            if conn.generation > 0 {
                ctx.stats.reconnects += 1;
            }
            // The first generation spread over (0, L], so that reconnects
            // come at a steady rate from the start; later ones L ± 50 %.
            let l = plan.lifetime_ns;
            let life = if conn.generation == 0 {
                1 + ctx.random() % l
            } else {
                l / 2 + ctx.random() % l
            };
            conn.retire_at = now + life;
        }
        conn.generation += 1;
        let f = &mut conn.flow;
        f.head = 0;
        f.inflight = 0;
        f.send_seq = 0;
        f.recv_seq = 0;
        f.got = 0;
        f.own_got = 0;
        f.echoed = false;
        let ring = match plan.mode {
            Mode::Echo => plan.inflight,
            Mode::Churn => 1,
            _ => 0,
        };
        if f.sends.len() != ring {
            f.sends = vec![0; ring].into_boxed_slice();
        }
        if let Some(ps) = &mut ctx.ps {
            ps.on_open(slot, &mut conn.session, &mut self.wbuf);
        }
        if plan.mode == Mode::Broadcast {
            if plan.all_to_all {
                f.rounds = Some(Rounds::new(plan.connections));
            } else {
                f.seqs = vec![SeqTrack::default(); plan.publishers].into_boxed_slice();
            }
        }
        self.settle();
        let offset = self.phase_offset(slot);
        self.conns[slot].flow.next_send = now + offset;
        let retire_at = self.conns[slot].retire_at;
        self.arm(slot, retire_at);
        self.fill(slot, now);
    }

    /// Queues whatever this connection may send now.
    fn fill(&mut self, slot: usize, now: u64) {
        let Worker {
            conns,
            ctx,
            wbuf,
            ready,
            ..
        } = self;
        let conn = &mut conns[slot];
        if conn.st != St::Open || conn.has_pending() {
            return;
        }
        if let Some(close_wait) = retire(conn, wbuf, now) {
            return self.arm(slot, close_wait);
        }
        let (publishers, expect_self, inflight) = {
            let plan = &ctx.sh.plan;
            (plan.publishers, plan.expect_self, plan.inflight)
        };
        let period = ctx.period;
        let mut arm_at = 0;
        match ctx.mode {
            Mode::Idle => {}
            Mode::Pubsub => {
                if let Some(ps) = &mut ctx.ps {
                    let may_send = ctx.sending && ctx.started && conn.member;
                    arm_at = ps.fill(slot, may_send, &mut conn.session, wbuf, now, &mut ctx.stats);
                }
            }
            Mode::Churn => {
                if conn.flow.send_seq == 0 {
                    send_echo(ctx, conn, wbuf, now);
                }
            }
            Mode::Echo => {
                if !ctx.sending {
                    return;
                }
                while conn.flow.inflight < conn.flow.sends.len() {
                    if period > 0 {
                        if conn.flow.next_send > now {
                            break;
                        }
                        conn.flow.next_send = pace(conn.flow.next_send, period, now);
                    }
                    if !send_echo(ctx, conn, wbuf, now) {
                        break;
                    }
                }
                if period > 0 && conn.flow.inflight < conn.flow.sends.len() {
                    arm_at = conn.flow.next_send;
                }
            }
            Mode::Broadcast => {
                if !ctx.sending || !ctx.started || !conn.member {
                    return;
                }
                if let Some(round) = conn.flow.rounds.as_ref().map(|r| r.round) {
                    while conn.flow.send_seq <= round {
                        let seq = conn.flow.send_seq;
                        if !send_bcast(ctx, conn, seq, wbuf, now) {
                            break;
                        }
                    }
                } else if (conn.id as usize) < publishers {
                    if period > 0 {
                        while conn.flow.next_send <= now {
                            conn.flow.next_send = pace(conn.flow.next_send, period, now);
                            let seq = conn.flow.send_seq;
                            if !send_bcast(ctx, conn, seq, wbuf, now) {
                                break;
                            }
                        }
                        arm_at = conn.flow.next_send;
                    } else if expect_self {
                        while conn.flow.send_seq - conn.flow.own_got < inflight as u64 {
                            let seq = conn.flow.send_seq;
                            if !send_bcast(ctx, conn, seq, wbuf, now) {
                                break;
                            }
                        }
                    } else {
                        // Unpaced: a batch now, and more as long as the
                        // socket takes them (see run_ready).
                        for _ in 0..inflight.max(8) {
                            let seq = conn.flow.send_seq;
                            if !send_bcast(ctx, conn, seq, wbuf, now) {
                                break;
                            }
                        }
                        if !conn.in_ready {
                            conn.in_ready = true;
                            ready.push(slot as u32);
                        }
                    }
                }
            }
        }
        self.arm(slot, arm_at);
    }

    /// Writes the loop's write buffer for this connection: straight to the
    /// socket if nothing is pending before it, else behind what is.
    fn flush(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        let wbuf = &mut self.wbuf;
        if wbuf.is_empty() && !conn.has_pending() {
            return;
        }
        let has_pending = conn.has_pending();
        let Some(stream) = conn.stream.as_mut() else {
            wbuf.clear();
            return;
        };
        let wire = &mut self.ctx.stats.wire_sent;
        let result = if has_pending {
            conn.pending.extend_from_slice(wbuf);
            write_some(stream, &conn.pending[conn.pending_at..]).map(|n| {
                *wire += n as u64;
                conn.pending_at += n
            })
        } else {
            write_some(stream, wbuf).map(|n| {
                *wire += n as u64;
                if n < wbuf.len() {
                    conn.pending.clear();
                    conn.pending.extend_from_slice(&wbuf[n..]);
                    conn.pending_at = 0;
                }
            })
        };
        wbuf.clear();
        if conn.pending_at == conn.pending.len() {
            conn.pending.clear();
            conn.pending_at = 0;
        } else if conn.pending_at > (1 << 20) && conn.pending_at * 2 > conn.pending.len() {
            conn.pending.drain(..conn.pending_at);
            conn.pending_at = 0;
        }
        if let Err(e) = result {
            self.ctx.stats.errors.io_error(&e);
            self.fail(slot);
        }
    }

    /// The connection failed: whatever it had outstanding is lost.
    fn fail(&mut self, slot: usize) {
        if matches!(self.conns[slot].st, St::Connecting | St::Handshaking) {
            self.ctx.stats.failed += 1;
            self.settle();
        }
        lose_outstanding(&mut self.ctx, &mut self.conns[slot].flow);
        self.release(slot);
    }

    /// The closing handshake completed: churn counts a cycle.
    fn finished(&mut self, slot: usize) {
        if self.ctx.mode == Mode::Churn && self.conns[slot].flow.echoed {
            self.ctx.stats.cycles += 1;
        }
        self.release(slot);
    }

    /// Closes the socket and frees the slot (churn: for the next cycle).
    fn release(&mut self, slot: usize) {
        let ctx = &mut self.ctx;
        let conn = &mut self.conns[slot];
        match conn.st {
            St::Free => return,
            St::Connecting | St::Handshaking => ctx.pending -= 1,
            St::Open | St::Closing | St::Lingering => {
                ctx.open -= 1;
                ctx.sh.open.fetch_sub(1, Relaxed);
            }
        }
        ctx.active -= 1;
        ctx.outstanding -= conn.flow.inflight as u64;
        conn.flow.inflight = 0;
        conn.stream = None;
        conn.st = St::Free;
        conn.parser = None;
        // Its codecs (context takeover) go with it.
        conn.deflate = ConnDeflate::default();
        let reconnect = std::mem::take(&mut conn.retiring) && ctx.sending;
        conn.retire_at = 0;
        if reconnect {
            self.free.push(slot as u32);
        }
        conn.carry.clear();
        conn.pending.clear();
        conn.pending_at = 0;
        conn.deadline = 0;
        conn.in_reread = false;
        conn.read_closed = false;
        if ctx.mode == Mode::Churn {
            self.free.push(slot as u32);
        }
    }

    /// Sending is over: close every connection (the server answers our
    /// Close, then closes TCP).
    fn begin_close(&mut self, now: u64) {
        for slot in 0..self.conns.len() {
            let conn = &mut self.conns[slot];
            match conn.st {
                St::Open => {
                    lose_outstanding(&mut self.ctx, &mut conn.flow);
                    conn.session.close(1000, "wsflood done", &mut self.wbuf);
                    conn.st = St::Closing;
                    conn.deadline = now + CLOSE_WAIT;
                    self.arm(slot, now + CLOSE_WAIT);
                    self.flush(slot);
                }
                St::Connecting | St::Handshaking => {
                    // Not a failure: the run ended first.
                    self.settle();
                    self.release(slot);
                }
                St::Closing | St::Lingering | St::Free => {}
            }
        }
    }

    /// Teardown at the end, and the final broadcast accounting.
    fn finish(&mut self) {
        for slot in 0..self.conns.len() {
            match self.conns[slot].st {
                St::Free => {}
                St::Closing => {
                    self.ctx.stats.errors.close_timeout += 1;
                    self.release(slot);
                }
                St::Lingering => self.finished(slot),
                _ => self.release(slot),
            }
        }
        if self.ctx.mode == Mode::Broadcast && self.ctx.started {
            let total: u64 = self.sh().sent.iter().map(|s| s.load(Relaxed)).sum();
            let mut expected = 0;
            let mut lost = 0;
            for c in self.conns.iter().filter(|c| c.member) {
                let e = self.expected(c, total);
                expected += e;
                lost += e.saturating_sub(c.flow.got);
            }
            self.ctx.stats.expected = expected;
            self.ctx.stats.lost += lost;
        }
        let Worker { conns, ctx, .. } = self;
        if let (Some(ps), true) = (&mut ctx.ps, ctx.started) {
            ps.finish(|slot| conns[slot].member, &mut ctx.stats);
        }
    }
}

/// --lifetime: once a connection's time has come, it sends nothing more
/// and closes once every echo is back. `None` if it may go on; else the
/// deadline of its closing handshake, if it began (0 if not yet).
fn retire(conn: &mut Conn, wbuf: &mut Vec<u8>, now: u64) -> Option<u64> {
    if !conn.retiring && (conn.retire_at == 0 || now < conn.retire_at) {
        return None;
    }
    conn.retiring = true;
    if conn.flow.inflight > 0 {
        return Some(0);
    }
    conn.session.close(1000, "wsflood reconnects", wbuf);
    conn.st = St::Closing;
    conn.deadline = now + CLOSE_WAIT;
    Some(conn.deadline)
}

/// Echo and churn: messages sent and not answered are lost.
fn lose_outstanding(ctx: &mut Ctx, flow: &mut Flow) {
    ctx.stats.lost += flow.inflight as u64;
    ctx.outstanding -= flow.inflight as u64;
    flow.inflight = 0;
}

/// The next due time of a paced sender after one send: one period on,
/// without bursting to catch up after a stall of more than a few periods.
fn pace(due: u64, period: u64, now: u64) -> u64 {
    let next = due + period;
    if next + 4 * period < now {
        now + period
    } else {
        next
    }
}

/// Queues `ctx.sendbuf[..len]` on the connection, compressed if agreed;
/// false if the session may no longer send.
fn send_message(ctx: &mut Ctx, conn: &mut Conn, len: usize, wbuf: &mut Vec<u8>) -> bool {
    let kind = ctx.sh.kind;
    match ctx
        .codecs
        .send(&mut conn.deflate, &mut conn.session, kind, &ctx.sendbuf[..len], wbuf)
    {
        Sent::Refused => false,
        Sent::Plain => true,
        Sent::Compressed => {
            ctx.stats.compressed_sent += 1;
            true
        }
    }
}

/// Queues the connection's next echo message; false if the session may no
/// longer send.
fn send_echo(ctx: &mut Ctx, conn: &mut Conn, wbuf: &mut Vec<u8>, now: u64) -> bool {
    let seq = conn.flow.send_seq;
    let len = payload::size_of(&ctx.sh.plan.sizes, conn.id, seq);
    match &ctx.sh.json {
        Some(json) => json.write(&mut ctx.sendbuf, len, conn.id, seq, 0),
        None => payload::stamp_echo(&mut ctx.sendbuf, len, conn.id, seq),
    }
    if !send_message(ctx, conn, len, wbuf) {
        return false;
    }
    let f = &mut conn.flow;
    let slot = (f.head + f.inflight) % f.sends.len();
    f.sends[slot] = now;
    f.inflight += 1;
    f.send_seq += 1;
    ctx.outstanding += 1;
    ctx.stats.sent += 1;
    ctx.stats.bytes_sent += len as u64;
    ctx.stats.first_send_ns.get_or_insert(now);
    true
}

/// Queues broadcast message `seq`; false if the session may no longer send.
fn send_bcast(ctx: &mut Ctx, conn: &mut Conn, seq: u64, wbuf: &mut Vec<u8>, now: u64) -> bool {
    let sh = &ctx.sh;
    let len = payload::size_of(&sh.plan.sizes, conn.id, seq);
    match &sh.json {
        Some(json) => json.write(&mut ctx.sendbuf, len, conn.id, seq, now),
        None => payload::stamp_bcast(&mut ctx.sendbuf, conn.id, seq, now),
    }
    if !send_message(ctx, conn, len, wbuf) {
        return false;
    }
    let sh = &ctx.sh;
    conn.flow.send_seq += 1;
    sh.sent[conn.id as usize].store(conn.flow.send_seq, Relaxed);
    ctx.stats.sent += 1;
    ctx.stats.bytes_sent += len as u64;
    ctx.stats.first_send_ns.get_or_insert(now);
    true
}

/// Checks and counts one received message.
fn on_message(ctx: &mut Ctx, id: u32, f: &mut Flow, payload: &[u8], now: u64) {
    ctx.stats.received += 1;
    ctx.stats.bytes_received += payload.len() as u64;
    let sh = &*ctx.sh;
    let plan = &sh.plan;
    match ctx.mode {
        Mode::Echo | Mode::Churn => {
            if f.inflight == 0 {
                // Nothing was outstanding: the server made this one up.
                ctx.stats.duplicated += 1;
                return;
            }
            let seq = f.recv_seq;
            let sent_at = f.sends[f.head];
            f.head = (f.head + 1) % f.sends.len();
            f.inflight -= 1;
            f.recv_seq += 1;
            ctx.outstanding -= 1;
            record_latency(&mut ctx.stats.latency, &mut ctx.interval, now.saturating_sub(sent_at));
            let len = payload::size_of(&plan.sizes, id, seq);
            let matches = match &sh.json {
                Some(json) => json.echo_matches(payload, len, id, seq),
                None => payload::echo_matches(payload, &sh.filler, len, id, seq),
            };
            if matches {
                f.echoed = true;
            } else {
                ctx.stats.mismatched += 1;
                ctx.stats.errors.mismatch += 1;
            }
        }
        Mode::Broadcast => {
            let publishers = plan.publishers as u32;
            let read = match &sh.json {
                Some(json) => json.read_bcast(payload, &plan.sizes, publishers),
                None => payload::read_bcast(payload, &sh.filler, &plan.sizes, publishers),
            };
            let Some(b) = read else {
                ctx.stats.mismatched += 1;
                ctx.stats.errors.mismatch += 1;
                return;
            };
            record_latency(&mut ctx.stats.latency, &mut ctx.interval, now.saturating_sub(b.sent_ns));
            if b.publisher == id {
                if !plan.expect_self {
                    ctx.stats.unexpected_self += 1;
                    return;
                }
                f.own_got += 1;
            }
            if let Some(r) = &mut f.rounds {
                match r.arrive(b.publisher, b.seq) {
                    RoundArrival::New => f.got += 1,
                    RoundArrival::Duplicate => ctx.stats.duplicated += 1,
                    RoundArrival::OutOfOrder => ctx.stats.out_of_order += 1,
                }
                // Until this thread has seen publishing begin (another may
                // have begun first), rounds wait: see `check_start`.
                while ctx.per_round > 0 && r.advance(ctx.per_round) {
                    ctx.stats.rounds += 1;
                }
            } else {
                match f.seqs[b.publisher as usize].arrive(b.seq) {
                    Arrival::New => f.got += 1,
                    Arrival::Late => {
                        f.got += 1;
                        ctx.stats.out_of_order += 1;
                    }
                    Arrival::Duplicate => ctx.stats.duplicated += 1,
                }
            }
        }
        Mode::Idle | Mode::Pubsub => {}
    }
}

/// Bytes the first frame in `buf` takes: `Ok(n)` if all `n` are there,
/// `Err(n)` if `n` are needed. A header the session will reject on sight
/// (too long a frame, a malformed length) counts as complete on its own.
fn first_frame(buf: &[u8], max_frame: u64) -> Result<usize, usize> {
    match frame::decode(buf) {
        Ok(Decoded::Partial(need)) => Err(need),
        Ok(Decoded::Complete(h, header)) => {
            if h.len > max_frame {
                return Ok(header);
            }
            let total = header + h.len as usize;
            if buf.len() >= total {
                Ok(total)
            } else {
                Err(total)
            }
        }
        Err(_) => Ok(frame::header_len(buf[1])),
    }
}

/// Length of the prefix of `buf` made of whole frames.
fn whole_frames(buf: &[u8], max_frame: u64) -> usize {
    let mut at = 0;
    while at < buf.len() {
        match first_frame(&buf[at..], max_frame) {
            Ok(n) => at += n,
            Err(_) => break,
        }
    }
    at
}

enum Failure {
    Socket,
    /// The source port we chose is taken: try another.
    PortBusy,
    Connect(io::Error),
}

/// Source ports chosen by the worker itself, from its own stripe of the
/// kernel's ephemeral range: connect() on a socket without a port makes the
/// kernel search that range for a free one, which grows with every
/// connection already open to the same destination (tens of microseconds of
/// system time per connect at 10,000), while bind() to a given port is one
/// lookup.
#[derive(Debug)]
struct Ports {
    first: u16,
    last: u16,
    next: u16,
}

/// Consecutive taken ports after which the kernel chooses instead.
const PORT_TRIES: u32 = 16;

impl Ports {
    fn new(index: usize, threads: usize) -> Option<Ports> {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let mut it = range.split_whitespace().map(|v| v.parse::<u16>().ok());
        let (lo, hi) = (it.next()??, it.next()??);
        let stripe = (usize::from(hi.checked_sub(lo)?) + 1) / threads;
        if stripe < 256 {
            return None;
        }
        let first = lo + (index * stripe) as u16;
        Some(Ports {
            first,
            last: first + (stripe - 1) as u16,
            next: first,
        })
    }

    fn take(&mut self) -> u16 {
        let p = self.next;
        self.next = if p == self.last { self.first } else { p + 1 };
        p
    }
}

/// A non-blocking TCP connect, from the connection's source address if
/// --source-addrs names any, and from `port` if given.
fn connect(plan: &Plan, id: u32, port: Option<u16>) -> Result<TcpStream, Failure> {
    let addr = plan.target_of(id).addr;
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|_| Failure::Socket)?;
    socket.set_nonblocking(true).map_err(|_| Failure::Socket)?;
    // Frames are whole when written; don't let Nagle hold one back.
    socket.set_nodelay(true).map_err(|_| Failure::Socket)?;
    let src = if plan.source_addrs.is_empty() {
        None
    } else {
        Some(plan.source_addrs[id as usize % plan.source_addrs.len()])
    };
    if src.is_some() || port.is_some() {
        let ip = src.unwrap_or(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if port.is_some() {
            // Share the port with our connections to other destinations.
            socket.set_reuse_address(true).map_err(|_| Failure::Socket)?;
        }
        match socket.bind(&SocketAddr::new(ip, port.unwrap_or(0)).into()) {
            Ok(()) => {}
            Err(e) if port.is_some() && e.kind() == io::ErrorKind::AddrInUse => return Err(Failure::PortBusy),
            Err(e) => return Err(Failure::Connect(e)),
        }
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        // The same four-tuple is in use.
        Err(e) if port.is_some() && e.kind() == io::ErrorKind::AddrNotAvailable => return Err(Failure::PortBusy),
        Err(e) => return Err(Failure::Connect(e)),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries() {
        let mut buf = Vec::new();
        frame::write(&mut buf, frame::Opcode::Binary, &[7; 200], None);
        let one = buf.len();
        frame::write(&mut buf, frame::Opcode::Binary, b"abc", None);
        assert_eq!(first_frame(&buf, 1 << 20), Ok(one));
        assert_eq!(whole_frames(&buf, 1 << 20), buf.len());
        assert_eq!(whole_frames(&buf[..buf.len() - 1], 1 << 20), one);
        assert_eq!(first_frame(&buf[..1], 1 << 20), Err(2));
        assert_eq!(first_frame(&buf[..3], 1 << 20), Err(4));
        assert_eq!(first_frame(&buf[..10], 1 << 20), Err(one));
        // Over the limit: the header alone, for the session to reject.
        assert_eq!(first_frame(&buf[..4], 100), Ok(4));
        assert_eq!(whole_frames(&[], 100), 0);
    }

    #[test]
    fn pacing_does_not_burst() {
        assert_eq!(pace(100, 10, 105), 110);
        assert_eq!(pace(100, 10, 1000), 1010);
    }
}
