//! Counters and histograms: one [`Stats`] per worker thread, merged at the
//! end, and [`Live`] atomics the reporter reads every second.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use wsloop::proto::deflate::Params;

/// Latencies are recorded in nanoseconds, from 1 ns to an hour, to three
/// significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Why a connection failed or ended badly, counted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// The server refused the TCP connection (RST to our SYN).
    pub connect_refused: u64,
    /// The TCP connection did not complete within --connect-timeout.
    pub connect_timeout: u64,
    /// No source port left (EADDRNOTAVAIL / EADDRINUSE): add --source-addrs.
    pub addr_unavailable: u64,
    /// socket(), bind() or registration failed otherwise (e.g. EMFILE).
    pub socket: u64,
    /// The opening handshake did not complete within --connect-timeout.
    pub handshake_timeout: u64,
    /// The server answered the handshake with another status.
    pub handshake_status: BTreeMap<u16, u64>,
    /// The server's handshake response was malformed or failed a §4.1 check.
    pub handshake_invalid: u64,
    /// The connection was reset.
    pub reset: u64,
    /// The server closed TCP without a closing handshake.
    pub eof: u64,
    /// The server started the closing handshake, with this code (1005: none).
    pub close_code: BTreeMap<u16, u64>,
    /// The server did not answer our Close within 2 s.
    pub close_timeout: u64,
    /// The server broke RFC 6455 and we failed the connection.
    pub protocol: u64,
    /// A message did not match what was sent.
    pub mismatch: u64,
    /// Any other I/O error.
    pub io: u64,
    /// Requests the server refused, by kind: a /pubsub error code
    /// (`pubsub_{code}`), an HTTP publish status (`publish_status_{status}`).
    pub refused: BTreeMap<String, u64>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect_refused
            + self.connect_timeout
            + self.addr_unavailable
            + self.socket
            + self.handshake_timeout
            + self.handshake_status.values().sum::<u64>()
            + self.handshake_invalid
            + self.reset
            + self.eof
            + self.close_code.values().sum::<u64>()
            + self.close_timeout
            + self.protocol
            + self.mismatch
            + self.io
            + self.refused.values().sum::<u64>()
    }

    /// Counts a failed socket operation by its kind.
    pub fn io_error(&mut self, e: &io::Error) {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => self.connect_refused += 1,
            K::TimedOut => self.connect_timeout += 1,
            K::AddrNotAvailable | K::AddrInUse => self.addr_unavailable += 1,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => self.reset += 1,
            _ => self.io += 1,
        }
    }

    pub fn merge(&mut self, o: &Errors) {
        self.connect_refused += o.connect_refused;
        self.connect_timeout += o.connect_timeout;
        self.addr_unavailable += o.addr_unavailable;
        self.socket += o.socket;
        self.handshake_timeout += o.handshake_timeout;
        for (k, v) in &o.handshake_status {
            *self.handshake_status.entry(*k).or_default() += v;
        }
        self.handshake_invalid += o.handshake_invalid;
        self.reset += o.reset;
        self.eof += o.eof;
        for (k, v) in &o.close_code {
            *self.close_code.entry(*k).or_default() += v;
        }
        self.close_timeout += o.close_timeout;
        self.protocol += o.protocol;
        self.mismatch += o.mismatch;
        self.io += o.io;
        for (k, v) in &o.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
    }

    /// (name, count) for every kind that occurred, in a fixed order.
    pub fn list(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut add = |name: &str, n: u64| {
            if n > 0 {
                out.push((name.to_string(), n));
            }
        };
        add("connect_refused", self.connect_refused);
        add("connect_timeout", self.connect_timeout);
        add("addr_unavailable", self.addr_unavailable);
        add("socket", self.socket);
        add("handshake_timeout", self.handshake_timeout);
        for (s, n) in &self.handshake_status {
            add(&format!("handshake_status_{s}"), *n);
        }
        add("handshake_invalid", self.handshake_invalid);
        add("reset", self.reset);
        add("eof", self.eof);
        for (c, n) in &self.close_code {
            add(&format!("close_code_{c}"), *n);
        }
        add("close_timeout", self.close_timeout);
        add("protocol", self.protocol);
        add("mismatch", self.mismatch);
        add("io", self.io);
        for (k, n) in &self.refused {
            add(k, *n);
        }
        out
    }
}

/// Everything one worker counted.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Connections started (TCP connect issued).
    pub attempted: u64,
    /// TCP connections established.
    pub connected: u64,
    /// WebSocket handshakes completed.
    pub established: u64,
    /// Connections that failed before the handshake completed.
    pub failed: u64,
    /// Most connections open at once (summed over threads).
    pub peak_open: u64,
    /// Messages sent and received (echoes, or broadcast deliveries).
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `received` when sending stopped (throughput counts up to there).
    pub received_at_stop: u64,
    /// Churn: connect-handshake-echo-close cycles completed.
    pub cycles: u64,
    pub cycles_at_stop: u64,
    /// All-to-all: rounds completed, summed over connections.
    pub rounds: u64,
    /// Verification.
    pub mismatched: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected_self: u64,
    /// Pubsub: deliveries on a topic the connection is not subscribed to.
    pub foreign: u64,
    /// Broadcast and pubsub: deliveries the receivers of this thread should have had.
    pub expected: u64,
    pub errors: Errors,
    /// Round trip (echo, churn) or publish-to-delivery (broadcast).
    pub latency: Histogram<u64>,
    /// TCP connect, and request sent to 101 received.
    pub connect: Histogram<u64>,
    pub handshake: Histogram<u64>,
    /// When the first connection was started and the last one settled
    /// (established or failed), ns since the run started.
    pub first_attempt_ns: Option<u64>,
    pub last_settled_ns: Option<u64>,
    /// When the first message was sent.
    pub first_send_ns: Option<u64>,
    /// Heap allocations and messages handled between the end of warm-up and
    /// the stop (None: there was no steady state to measure).
    pub steady: Option<(u64, u64)>,
    /// Bytes written to and read from the sockets (handshakes and frames;
    /// over wss://, what went into and came out of TLS).
    pub wire_sent: u64,
    pub wire_received: u64,
    /// Messages sent and received compressed (permessage-deflate).
    pub compressed_sent: u64,
    pub compressed_received: u64,
    /// Handshakes that agreed permessage-deflate, by the parameters agreed;
    /// and those where the server declined the offer.
    pub deflate_agreed: Vec<(Params, u64)>,
    pub deflate_declined: u64,
    /// --lifetime: new connections established in place of ones closed to
    /// make room for them (counted once up: a replacement still connecting
    /// when the run ends is not one).
    pub reconnects: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            attempted: 0,
            connected: 0,
            established: 0,
            failed: 0,
            peak_open: 0,
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            received_at_stop: 0,
            cycles: 0,
            cycles_at_stop: 0,
            rounds: 0,
            mismatched: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            unexpected_self: 0,
            foreign: 0,
            expected: 0,
            errors: Errors::default(),
            latency: histogram(),
            connect: histogram(),
            handshake: histogram(),
            first_attempt_ns: None,
            last_settled_ns: None,
            first_send_ns: None,
            steady: None,
            wire_sent: 0,
            wire_received: 0,
            compressed_sent: 0,
            compressed_received: 0,
            deflate_agreed: Vec::new(),
            deflate_declined: 0,
            reconnects: 0,
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.attempted += o.attempted;
        self.connected += o.connected;
        self.established += o.established;
        self.failed += o.failed;
        self.peak_open += o.peak_open;
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.received_at_stop += o.received_at_stop;
        self.cycles += o.cycles;
        self.cycles_at_stop += o.cycles_at_stop;
        self.rounds += o.rounds;
        self.mismatched += o.mismatched;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected_self += o.unexpected_self;
        self.foreign += o.foreign;
        self.expected += o.expected;
        self.errors.merge(&o.errors);
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.connect.add(&o.connect).expect("same histogram bounds");
        self.handshake.add(&o.handshake).expect("same histogram bounds");
        self.first_attempt_ns = min_opt(self.first_attempt_ns, o.first_attempt_ns);
        self.last_settled_ns = self.last_settled_ns.max(o.last_settled_ns);
        self.first_send_ns = min_opt(self.first_send_ns, o.first_send_ns);
        self.steady = match (self.steady, o.steady) {
            (Some((a, m)), Some((b, n))) => Some((a + b, m + n)),
            (a, b) => a.or(b),
        };
        self.wire_sent += o.wire_sent;
        self.wire_received += o.wire_received;
        self.compressed_sent += o.compressed_sent;
        self.compressed_received += o.compressed_received;
        for &(p, n) in &o.deflate_agreed {
            self.count_agreed(p, n);
        }
        self.deflate_declined += o.deflate_declined;
        self.reconnects += o.reconnects;
    }

    /// Counts `n` handshakes that agreed `params` (a short list: one entry
    /// per distinct answer, so no allocation once seen).
    pub fn count_agreed(&mut self, params: Params, n: u64) {
        match self.deflate_agreed.iter_mut().find(|(p, _)| *p == params) {
            Some((_, count)) => *count += n,
            None => self.deflate_agreed.push((params, n)),
        }
    }

    /// Whether any check on the traffic failed.
    pub fn verification_failed(&self) -> bool {
        self.mismatched
            + self.lost
            + self.duplicated
            + self.out_of_order
            + self.unexpected_self
            + self.foreign
            + self.errors.protocol
            > 0
    }
}

/// Progress counters of one worker, published every 100 ms.
#[derive(Debug)]
pub struct Live {
    pub open: AtomicU64,
    pub established: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub cycles: AtomicU64,
    pub errors: AtomicU64,
    /// Latencies recorded since the reporter last took them.
    pub interval: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            open: AtomicU64::new(0),
            established: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: Mutex::new(histogram()),
        }
    }
}

impl Live {
    pub fn publish(&self, open: u64, s: &Stats, interval: &mut Histogram<u64>) {
        self.open.store(open, Relaxed);
        self.established.store(s.established, Relaxed);
        self.received.store(s.received, Relaxed);
        self.sent.store(s.sent, Relaxed);
        self.cycles.store(s.cycles, Relaxed);
        self.errors.store(s.errors.total(), Relaxed);
        if !interval.is_empty() {
            if let Ok(mut h) = self.interval.lock() {
                let _ = h.add(&*interval);
            }
            interval.reset();
        }
    }
}
