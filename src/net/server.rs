//! The server's poll loop: a listener, a slab of connections, and buffers
//! shared by all of them.
//!
//! One iteration: wait for readiness; for each readable connection, read
//! into the shared read buffer, feed the protocol core, let the service
//! answer, and write the answers with one system call straight from the
//! shared write buffer; then write each broadcast room's batch to its
//! members, one vectored write per member. Only what a socket would not
//! take is kept in the connection's own queue, which is written when the
//! socket becomes writable. Sockets are registered once, for both
//! directions, edge-triggered, and never re-registered.

use super::metrics;
use super::outq::{OutQueue, MAX_IOVECS};
use super::stats::Stats;
use super::timers::Timers;
use crate::config::{Config, SlowConsumer, READ_BUFFER};
use crate::proto::close::code;
use crate::proto::handshake::{self, RequestParser};
use crate::proto::http::{HttpError, Progress};
use crate::proto::{frame, Event, MessageKind, Session};
use crate::service::broadcast::{Room, Rooms};
use crate::service::{self, Command, Route, Target};
use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// How long accepting pauses after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Reads per connection per iteration before others get their turn (and
/// before a room's batch goes out: a batch should stay well under the
/// backpressure cap, or a recipient that keeps up on average would look
/// slow).
const READ_BUDGET: usize = 4;

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading an HTTP request head.
    Handshake(Box<RequestParser>),
    /// Reading the body of an HTTP publish.
    Body(Box<Publish>),
    /// WebSocket frames both ways.
    Open(Session, Route),
    /// Our last word (an HTTP error, or the Close that ends the closing
    /// handshake) is queued. Once it is written we shut down our sending
    /// side, so that the server is the one to close the TCP connection
    /// (RFC 6455 §7.1.1), and discard input until the peer's FIN: closing
    /// with unread input would send a reset that can destroy our last
    /// frame before the peer reads it.
    Linger,
}

/// An HTTP publish whose body is arriving.
#[derive(Debug)]
struct Publish {
    room: String,
    len: usize,
    kind: Option<MessageKind>,
    body: Vec<u8>,
    keep_alive: bool,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    phase: Phase,
    /// Output the socket did not take yet; `None` almost always.
    out: Option<Box<OutQueue>>,
    /// Not read while its queue is over the backpressure cap.
    read_paused: bool,
    write_shut: bool,
    /// Turned away at accept (over `max_connections`): not counted.
    rejected: bool,
    /// A Ping was sent for the current silence.
    pinged: bool,
    /// When the current phase began (ms on the loop clock): accept, the
    /// start of a keep-alive request, or the start of closing.
    since: u64,
    /// When input last arrived.
    last_active: u64,
    /// The connection's live timer entry (0: none).
    timer_at: u64,
}

impl Conn {
    fn queued(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.len())
    }
}

/// Bytes of user-space memory an idle WebSocket connection owns: its record
/// in the slab (a slab slot is this plus a discriminant word at most), and
/// no buffer: partial input and unsent output are allocated only while
/// they exist.
pub const CONNECTION_RECORD_BYTES: usize = std::mem::size_of::<Conn>();

/// Everything the loop shares between connections, apart from the
/// connections themselves and the read buffer.
struct Core {
    config: Config,
    rooms: Rooms,
    stats: Stats,
    /// Output of the connection being handled, written when its input has
    /// been processed.
    wbuf: Vec<u8>,
    /// The loop's clock: milliseconds since start, read once per iteration.
    now: u64,
    /// A `/metrics` request was read (`Some(head_only)`); the loop renders
    /// it (it needs every connection, which `handle_input` cannot see).
    metrics_wanted: Option<bool>,
}

/// Something to do to a connection once the loop is not iterating over a
/// room's members.
enum Deferred {
    Teardown(&'static str),
    SlowConsumer,
}

pub struct Server {
    poll: Poll,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    conns: Slab<Conn>,
    /// The read buffer is `rstore[rstart..rstart + READ_BUFFER]`; see
    /// [`place_apart`].
    rstore: Box<[u8]>,
    rstart: usize,
    core: Core,
    timers: Timers,
    start: Instant,
    /// Connections counted against `max_connections`.
    admitted: usize,
    /// Connections that used their read budget with input maybe left.
    again: Vec<usize>,
    /// Reused scratch for room delivery.
    ranges: Vec<(usize, usize)>,
    deferred: Vec<(usize, Deferred)>,
    /// Set while accept is failing for lack of file descriptors.
    accept_paused: bool,
    last_accept_warning: Option<Instant>,
    /// When a graceful shutdown gives up waiting (ms on the loop clock).
    shutdown_deadline: Option<u64>,
    /// Rejections already reported in the periodic info line.
    reported_rejections: u64,
    last_report: u64,
}

/// How often refusals are summarised at info level.
const REPORT_EVERY_MS: u64 = 10_000;

impl Server {
    /// Binds the listener (port 0 picks a free port).
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        let mut server = Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals: None,
            conns: Slab::new(),
            rstore: vec![0; READ_BUFFER + PAGE].into_boxed_slice(),
            rstart: 0,
            core: Core {
                config,
                rooms: Rooms::default(),
                stats: Stats::default(),
                wbuf: Vec::with_capacity(READ_BUFFER),
                now: 0,
                metrics_wanted: None,
            },
            timers: Timers::default(),
            start: Instant::now(),
            admitted: 0,
            again: Vec::new(),
            ranges: Vec::new(),
            deferred: Vec::new(),
            accept_paused: false,
            last_accept_warning: None,
            shutdown_deadline: None,
            reported_rejections: 0,
            last_report: 0,
        };
        server.rstart = place_apart(&server.rstore, server.core.wbuf.as_ptr());
        Ok(server)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Makes SIGTERM and SIGINT start a graceful shutdown (a second one
    /// exits at once). Only for the daemon: handlers are process-wide.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs the loop until a graceful shutdown completes (or polling itself
    /// fails).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.core.now = self.start.elapsed().as_millis() as u64;
            let mut timeout = self
                .timers
                .next()
                .map(|at| Duration::from_millis(at.saturating_sub(self.core.now)));
            if self.accept_paused {
                timeout = Some(timeout.map_or(ACCEPT_RETRY, |t| t.min(ACCEPT_RETRY)));
            }
            if let Some(deadline) = self.shutdown_deadline {
                let left = Duration::from_millis(deadline.saturating_sub(self.core.now));
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if !self.again.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.core.now = self.start.elapsed().as_millis() as u64;
            self.core.stats.loop_iterations += 1;
            if self.accept_paused {
                self.accept();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SIGNALS => {
                        if self.on_signal() {
                            return Ok(());
                        }
                    }
                    Token(key) => {
                        if ev.is_writable() {
                            self.on_writable(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.on_readable(key);
            }
            self.deliver_broadcasts();
            while let Some((at, key)) = self.timers.pop_due(self.core.now) {
                self.on_timer(key, at);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.core.now >= deadline {
                    info!("shutdown grace period over; dropping {} connections", self.conns.len());
                    return Ok(());
                }
            }
            self.report_rejections();
        }
    }

    /// Handles pending signals; true means exit now.
    fn on_signal(&mut self) -> bool {
        let Some(signals) = &mut self.signals else { return false };
        let count = signals.pending().count();
        if count == 0 {
            return false;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            info!("second signal: exiting now");
            return true;
        }
        self.begin_shutdown();
        false
    }

    /// Graceful shutdown: stop accepting, deliver what is already queued,
    /// send Close 1001 "going away" to every WebSocket client and keep
    /// flushing until all have closed or the grace period is over.
    pub fn begin_shutdown(&mut self) {
        info!("shutting down: closing {} connections", self.conns.len());
        self.listener = None;
        self.accept_paused = false;
        self.shutdown_deadline = Some(self.core.now + self.core.config.shutdown_grace.as_millis() as u64);
        // Broadcasts read before the signal go out before the Close.
        self.deliver_broadcasts();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match &mut conn.phase {
                Phase::Open(session, route) if session.is_open() => {
                    if let Route::Broadcast { room } = *route {
                        self.core.rooms.leave(room, key);
                    }
                    *route = Route::Detached;
                    session.close(code::GOING_AWAY, "going away", &mut self.core.wbuf);
                    self.core.stats.count_close(code::GOING_AWAY);
                    conn.since = self.core.now;
                    if self.flush(key) {
                        self.rearm(key);
                    }
                }
                Phase::Handshake(_) | Phase::Body(_) => self.teardown(key, "shutting down"),
                _ => {}
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.accept_paused = false;
                    // Frames are whole when written; don't let Nagle hold
                    // back a small one waiting for an ACK.
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
                    {
                        warn!("cannot register connection from {peer}: {e}");
                        continue;
                    }
                    self.core.stats.accepted += 1;
                    let rejected = self.admitted >= self.core.config.max_connections;
                    let now = self.core.now;
                    entry.insert(Conn {
                        stream,
                        phase: if rejected {
                            Phase::Linger
                        } else {
                            Phase::Handshake(Box::default())
                        },
                        out: None,
                        read_paused: false,
                        write_shut: false,
                        rejected,
                        pinged: false,
                        since: now,
                        last_active: now,
                        timer_at: 0,
                    });
                    if rejected {
                        debug!("{peer} refused (#{key}): at --max-connections");
                        self.core.stats.rejected_max_connections += 1;
                        self.core.stats.count_http_error(503);
                        handshake::write_error(&mut self.core.wbuf, &HttpError::new(503, "server at capacity"));
                        if !self.flush(key) {
                            continue;
                        }
                    } else {
                        debug!("{peer} connected (#{key})");
                        self.admitted += 1;
                    }
                    self.rearm(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // EMFILE/ENFILE (or ENOMEM, ENOBUFS): the pending
                    // connection stays in the backlog. The listener is
                    // edge-triggered and will not fire again for it, so
                    // retry on a timer instead of spinning or stalling.
                    self.accept_paused = true;
                    self.core.stats.accept_errors += 1;
                    let now = Instant::now();
                    if self
                        .last_accept_warning
                        .is_none_or(|t| now - t >= Duration::from_secs(1))
                    {
                        self.last_accept_warning = Some(now);
                        warn!("accept failed: {e}; retrying every {} ms", ACCEPT_RETRY.as_millis());
                    }
                    return;
                }
            }
        }
    }

    fn on_readable(&mut self, key: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.read_paused {
                return;
            }
            if conn.queued() > self.core.config.max_backpressure {
                // The peer is not reading what we send; stop reading what
                // it sends until it does (resumed in `on_writable`).
                conn.read_paused = true;
                return;
            }
            self.core.stats.read_calls += 1;
            let rbuf = &mut self.rstore[self.rstart..self.rstart + READ_BUFFER];
            match conn.stream.read(rbuf) {
                Ok(0) => {
                    self.teardown(key, "peer closed the connection");
                    return;
                }
                Ok(n) => {
                    conn.last_active = self.core.now;
                    conn.pinged = false;
                    let before = phase_kind(&conn.phase);
                    handle_input(conn, key, &mut self.core, &mut rbuf[..n]);
                    if phase_kind(&conn.phase) != before {
                        conn.since = self.core.now;
                    }
                    if let Some(head_only) = self.core.metrics_wanted.take() {
                        let body = metrics::render(self);
                        let wbuf = &mut self.core.wbuf;
                        handshake::write_head(wbuf, 200, "", metrics::CONTENT_TYPE, body.len(), true);
                        if !head_only {
                            wbuf.extend_from_slice(&body);
                        }
                    }
                    if !self.flush(key) {
                        return;
                    }
                    self.rearm(key);
                    // A short read emptied the socket; the next arrival is a
                    // new edge. Skipping the read that would say WouldBlock
                    // saves a system call per message.
                    if n < READ_BUFFER {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("#{key}: {e}");
                    self.teardown(key, "read error");
                    return;
                }
            }
        }
        // Budget spent with input perhaps left: no new edge will come for
        // it, so come back after the others had their turn.
        self.again.push(key);
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        trace!("#{key}: writable, {} bytes queued", conn.queued());
        if let Some(q) = &mut conn.out {
            self.core.stats.write_calls += 1;
            if let Err(e) = q.flush(&mut conn.stream) {
                debug!("#{key}: {e}");
                self.teardown(key, "write error");
                return;
            }
        }
        if !self.after_write(key) {
            return;
        }
        let conn = &mut self.conns[key];
        if conn.read_paused && conn.queued() <= self.core.config.max_backpressure / 2 {
            conn.read_paused = false;
            // Input may have been waiting all along: no new edge will come
            // for it, so read now.
            self.on_readable(key);
        }
    }

    /// When connection `key` next needs attention from the clock.
    fn deadline(&self, conn: &Conn) -> u64 {
        let cfg = &self.core.config;
        let ms = |d: Duration| d.as_millis() as u64;
        match &conn.phase {
            Phase::Handshake(_) | Phase::Body(_) => conn.since + ms(cfg.handshake_timeout),
            Phase::Open(session, _) if session.is_open() => {
                conn.last_active
                    + if conn.pinged {
                        ms(cfg.idle_timeout)
                    } else {
                        ms(cfg.ping_interval)
                    }
            }
            Phase::Open(..) | Phase::Linger => conn.since + ms(cfg.close_timeout),
        }
    }

    /// Makes sure connection `key` has a timer entry no later than its
    /// deadline.
    fn rearm(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let at = self.deadline(conn);
        let conn = &mut self.conns[key];
        if conn.timer_at == 0 || at < conn.timer_at {
            conn.timer_at = at;
            self.timers.schedule(key, at);
        }
    }

    /// A timer entry fired: act if the connection's deadline has come,
    /// else re-arm for the (later) deadline.
    fn on_timer(&mut self, key: usize, at: u64) {
        let Some(conn) = self.conns.get(key) else { return };
        if conn.timer_at != at {
            return; // superseded by an earlier entry
        }
        let due = self.deadline(conn) <= self.core.now;
        self.conns[key].timer_at = 0;
        if due {
            let conn = &mut self.conns[key];
            let now = self.core.now;
            match &mut conn.phase {
                Phase::Handshake(p) if !p.started() => return self.teardown(key, "handshake timeout, nothing sent"),
                Phase::Handshake(_) | Phase::Body(_) => {
                    // Slowloris: answer 408 and close.
                    self.core.stats.timeouts_handshake += 1;
                    self.core.stats.count_http_error(408);
                    handshake::write_error(
                        &mut self.core.wbuf,
                        &HttpError::new(408, "request not completed in time"),
                    );
                    conn.phase = Phase::Linger;
                    conn.since = now;
                }
                Phase::Open(session, route) if session.is_open() => {
                    if !conn.pinged {
                        session.ping(b"", &mut self.core.wbuf);
                        conn.pinged = true;
                    } else {
                        debug!("#{key}: idle timeout");
                        self.core.stats.timeouts_idle += 1;
                        self.core.stats.count_close(code::GOING_AWAY);
                        if let Route::Broadcast { room } = *route {
                            self.core.rooms.leave(room, key);
                        }
                        *route = Route::Detached;
                        session.close(code::GOING_AWAY, "idle timeout", &mut self.core.wbuf);
                        conn.since = now;
                    }
                }
                Phase::Open(..) | Phase::Linger => {
                    self.core.stats.timeouts_close += 1;
                    return self.teardown(key, "close timeout");
                }
            }
            if !self.flush(key) {
                return;
            }
        }
        self.rearm(key);
    }

    /// Writes the shared write buffer for connection `key`: straight to the
    /// socket if nothing is queued before it, else behind the queue.
    /// Returns false if the connection was torn down.
    fn flush(&mut self, key: usize) -> bool {
        let wbuf = &mut self.core.wbuf;
        if wbuf.is_empty() {
            return self.after_write(key);
        }
        let conn = &mut self.conns[key];
        self.core.stats.write_calls += 1;
        let result = match &mut conn.out {
            Some(q) if !q.is_empty() => {
                q.push(wbuf);
                q.flush(&mut conn.stream).map(|_| ())
            }
            _ => write_some(&mut conn.stream, wbuf).map(|n| {
                if n < wbuf.len() {
                    conn.out.get_or_insert_with(Box::default).push(&wbuf[n..]);
                }
            }),
        };
        wbuf.clear();
        if wbuf.capacity() > 4 * READ_BUFFER {
            // A large message passed through; don't keep its memory.
            *wbuf = Vec::with_capacity(READ_BUFFER);
            // The read buffer holds nothing live between reads: move it to
            // keep clear of the new write buffer.
            self.rstart = place_apart(&self.rstore, wbuf.as_ptr());
        }
        if let Err(e) = result {
            debug!("#{key}: {e}");
            self.teardown(key, "write error");
            return false;
        }
        self.after_write(key)
    }

    /// Bookkeeping after output was written: free an empty queue, and end
    /// a lingering connection's sending side once its last word is out.
    fn after_write(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        if conn.queued() == 0 {
            conn.out = None;
            if matches!(conn.phase, Phase::Linger) && !conn.write_shut {
                conn.write_shut = true;
                if conn.stream.shutdown(Shutdown::Write).is_err() {
                    self.teardown(key, "shutdown failed");
                    return false;
                }
            }
        }
        true
    }

    /// Writes every room's batch of this iteration to its members.
    fn deliver_broadcasts(&mut self) {
        let dirty = self.core.rooms.take_dirty();
        for &id in &dirty {
            let Some(room) = self.core.rooms.get_mut(id) else {
                continue;
            };
            let mut shared = None;
            for member in &room.members {
                let m = member.conn;
                let Some(conn) = self.conns.get_mut(m) else { continue };
                if let Some(d) = deliver(
                    conn,
                    m,
                    member.presence.is_some(),
                    room,
                    &mut shared,
                    &self.core.config,
                    &mut self.core.stats,
                    &mut self.ranges,
                ) {
                    self.deferred.push((m, d));
                }
            }
            room.batch.clear();
            room.frames.clear();
            if room.batch.capacity() > 4 * READ_BUFFER {
                room.batch = Vec::new();
                room.frames = Vec::new();
            }
        }
        self.core.rooms.restore_dirty(dirty);
        let mut deferred = std::mem::take(&mut self.deferred);
        for (key, d) in deferred.drain(..) {
            match d {
                Deferred::Teardown(why) => self.teardown(key, why),
                Deferred::SlowConsumer => self.close_slow_consumer(key),
            }
        }
        self.deferred = deferred;
    }

    /// `--slow-consumer close`: leave the room, drop what is queued but the
    /// frame in flight, and send Close 1008.
    fn close_slow_consumer(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Phase::Open(session, route) = &mut conn.phase else {
            return;
        };
        if let Route::Broadcast { room } = *route {
            self.core.rooms.leave(room, key);
        }
        *route = Route::Detached;
        debug!("#{key}: slow consumer, closing");
        self.core.stats.slow_consumer_disconnects += 1;
        self.core.stats.count_close(code::POLICY_VIOLATION);
        session.close(code::POLICY_VIOLATION, "slow consumer", &mut self.core.wbuf);
        conn.since = self.core.now;
        if let Some(q) = &mut conn.out {
            q.truncate_to_front();
        }
        if self.flush(key) {
            self.rearm(key);
        }
    }

    /// The one way a connection ends: leave its room, drop it (which closes
    /// the socket and removes it from the poll set).
    fn teardown(&mut self, key: usize, why: &str) {
        if let Some(conn) = self.conns.try_remove(key) {
            if let Phase::Open(_, Route::Broadcast { room }) = conn.phase {
                self.core.rooms.leave(room, key);
            }
            if !conn.rejected {
                self.admitted -= 1;
            }
            self.core.stats.closed += 1;
            debug!("#{key} closed: {why} ({} bytes unsent)", conn.queued());
        }
    }
}

impl Server {
    /// Logs refusals in aggregate, at most every ten seconds.
    fn report_rejections(&mut self) {
        let now = self.core.now;
        if now < self.last_report + REPORT_EVERY_MS {
            return;
        }
        let total: u64 = self.core.stats.http_errors.iter().map(|(_, n)| n).sum();
        if total != self.reported_rejections {
            let by_status: Vec<String> = self
                .core
                .stats
                .http_errors
                .iter()
                .map(|(status, n)| format!("{n} × {status}"))
                .collect();
            info!("requests refused since start: {}", by_status.join(", "));
            self.reported_rejections = total;
        }
        self.last_report = now;
    }

    /// Bytes queued for sending over all connections.
    pub fn queued_bytes(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.queued()).sum()
    }

    /// Rooms that exist.
    pub fn rooms(&self) -> usize {
        self.core.rooms.len()
    }

    /// Entries in the deadline heap.
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

const PAGE: usize = 4096;

/// Where the read buffer starts inside `store` so that it lies half a page
/// away from the write buffer (at `wbuf_at`), modulo the page size.
///
/// Every echo copies a payload from the read buffer to the write buffer.
/// glibc's large-copy path (`rep movsb`) runs many times slower when the
/// destination is a few bytes ahead of the source modulo 4 KiB (glibc bug
/// 30994; measured here on AMD Zen 3: 16 KiB echoes got 40–60% more per
/// CPU-second once the buffers were apart), and two 64 KiB buffers
/// allocated one after the other land exactly like that.
fn place_apart(store: &[u8], wbuf_at: *const u8) -> usize {
    let want = (wbuf_at as usize + PAGE / 2) % PAGE;
    let have = store.as_ptr() as usize % PAGE;
    (want + PAGE - have) % PAGE
}

/// A phase's discriminant, to notice transitions.
fn phase_kind(p: &Phase) -> u8 {
    match p {
        Phase::Handshake(_) => 0,
        Phase::Body(_) => 1,
        Phase::Open(s, _) if s.is_open() => 2,
        Phase::Open(..) => 3,
        Phase::Linger => 4,
    }
}

/// Writes as much of `buf` as a non-blocking socket takes (retrying short
/// writes and `EINTR`, stopping at `WouldBlock`); returns how much.
pub fn write_some<W: Write>(stream: &mut W, buf: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match stream.write(&buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes a room's batch to member `key`, minus its own frames (unless
/// broadcasting to senders), with one vectored write; queues by reference
/// what the socket does not take. Applies the slow-consumer policy.
#[allow(clippy::too_many_arguments)]
fn deliver(
    conn: &mut Conn,
    key: usize,
    wants_presence: bool,
    room: &Room,
    shared: &mut Option<Rc<[u8]>>,
    config: &Config,
    stats: &mut Stats,
    ranges: &mut Vec<(usize, usize)>,
) -> Option<Deferred> {
    ranges.clear();
    let queued = conn.queued();
    let mut total = 0;
    let mut frames = 0;
    let mut start = 0;
    for f in &room.frames {
        let (s, e) = (start, f.end);
        start = f.end;
        if (f.sender == Some(key) && !config.broadcast_to_sender) || (f.presence && !wants_presence) {
            continue;
        }
        // Slow means a backlog over the cap: a frame always goes onto a
        // queue that is under it, however large the frame (a message up to
        // --max-message-size is not a slow consumer's fault).
        if queued + total > config.max_backpressure {
            match config.slow_consumer {
                SlowConsumer::Close => return Some(Deferred::SlowConsumer),
                SlowConsumer::Drop => {
                    stats.slow_consumer_drops += 1;
                    continue;
                }
            }
        }
        total += e - s;
        frames += 1;
        match ranges.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => ranges.push((s, e)),
        }
    }
    if total == 0 {
        return None;
    }
    stats.messages_out += frames;
    stats.bytes_out += total as u64;
    let batch = &room.batch;
    let mut queue_from = 0; // index into `ranges` of the first range not fully written
    let mut partial = 0; // bytes of that range already written
    if queued == 0 {
        // Straight to the socket, MAX_IOVECS ranges per write.
        while queue_from < ranges.len() {
            let window = &ranges[queue_from..ranges.len().min(queue_from + MAX_IOVECS)];
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            for (i, &(s, e)) in window.iter().enumerate() {
                iov[i] = IoSlice::new(&batch[s..e]);
            }
            stats.write_calls += 1;
            match conn.stream.write_vectored(&iov[..window.len()]) {
                Ok(mut n) => {
                    while n > 0 {
                        let (s, e) = ranges[queue_from];
                        if n < e - s {
                            partial = n;
                            break;
                        }
                        n -= e - s;
                        queue_from += 1;
                    }
                    if partial > 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Deferred::Teardown("write error")),
            }
        }
    }
    if queue_from < ranges.len() {
        // The socket is full: keep the rest by reference. The batch is
        // copied into a shared buffer once per room per iteration, and only
        // when some member needs it.
        let rc = shared.get_or_insert_with(|| Rc::from(&batch[..]));
        let q = conn.out.get_or_insert_with(Box::default);
        for (i, &(s, e)) in ranges[queue_from..].iter().enumerate() {
            let s = if i == 0 { s + partial } else { s };
            q.push_shared(rc, s, e);
        }
    }
    None
}

/// Feeds one read's worth of input to connection `key`; answers go to
/// `core.wbuf`.
fn handle_input(conn: &mut Conn, key: usize, core: &mut Core, input: &mut [u8]) {
    let mut input = input;
    // Output goes to `core.wbuf` here; the queue does not change.
    let queued = conn.queued();
    loop {
        match &mut conn.phase {
            Phase::Handshake(parser) => {
                let used = match parser.feed(&core.config.head, input) {
                    Ok(Progress::Partial) => return,
                    Ok(Progress::Complete(n)) => n,
                    Err(e) => return reject(conn, core, e),
                };
                let req = parser.request();
                // Pipelined requests are answered while their output is
                // under the backpressure cap; the one that passes it closes
                // the connection, so a client that sends many requests and
                // reads nothing cannot grow our memory.
                let keep_alive = req.keep_alive() && core.wbuf.len() + queued < core.config.max_backpressure;
                let head_only = req.method == handshake::Method::Head;
                debug!("#{key}: {:?} {}", req.method, req.target);
                let target = match service::route(req, &core.config) {
                    Ok(t) => t,
                    Err(e) => return reject(conn, core, e),
                };
                input = &mut std::mem::take(&mut input)[used..];
                conn.phase = match target {
                    Target::Echo(k) => {
                        handshake::write_accept(&mut core.wbuf, &k);
                        Phase::Open(Session::server(), Route::Echo)
                    }
                    Target::Join(k, name, presence) => {
                        handshake::write_accept(&mut core.wbuf, &k);
                        let room = core.rooms.join(&name, key, presence.as_deref());
                        Phase::Open(Session::server(), Route::Broadcast { room })
                    }
                    Target::Page | Target::Health => {
                        let (content_type, body) = match target {
                            Target::Page => ("text/html; charset=utf-8", include_str!("../../web/chat.html")),
                            _ => ("text/plain", "ok\n"),
                        };
                        let body = body.as_bytes();
                        handshake::write_head(&mut core.wbuf, 200, "", content_type, body.len(), !keep_alive);
                        if !head_only {
                            core.wbuf.extend_from_slice(body);
                        }
                        if keep_alive {
                            conn.since = core.now; // the next request's handshake timeout
                            Phase::Handshake(Box::default())
                        } else {
                            Phase::Linger
                        }
                    }
                    Target::Metrics => {
                        // Rendered by the loop, which sees every connection;
                        // the response closes the connection, so nothing
                        // after it needs handling.
                        core.metrics_wanted = Some(head_only);
                        conn.phase = Phase::Linger;
                        return;
                    }
                    Target::Publish { room, len, kind } => Phase::Body(Box::new(Publish {
                        room,
                        len,
                        kind,
                        body: Vec::with_capacity(len.min(READ_BUFFER)),
                        keep_alive,
                    })),
                };
            }
            Phase::Body(p) => {
                let take = (p.len - p.body.len()).min(input.len());
                p.body.extend_from_slice(&input[..take]);
                input = &mut std::mem::take(&mut input)[take..];
                if p.body.len() < p.len {
                    return;
                }
                let valid_text = std::str::from_utf8(&p.body).is_ok();
                let kind = p.kind.unwrap_or(if valid_text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                });
                if kind == MessageKind::Text && !valid_text {
                    return reject(conn, core, HttpError::bad("text body is not UTF-8"));
                }
                let recipients = match core.rooms.find(&p.room) {
                    Some(room) => core.rooms.publish(room, None, false, kind, &p.body),
                    None => 0,
                };
                core.stats.http_publishes += 1;
                core.stats.broadcasts += 1;
                core.stats.deliveries += recipients as u64;
                let body = format!("{{\"recipients\":{recipients}}}\n");
                handshake::write_response(
                    &mut core.wbuf,
                    202,
                    "",
                    "application/json",
                    body.as_bytes(),
                    !p.keep_alive,
                );
                conn.phase = if p.keep_alive {
                    conn.since = core.now; // the next request's handshake timeout
                    Phase::Handshake(Box::default())
                } else {
                    Phase::Linger
                };
            }
            Phase::Open(session, route) => {
                let mut pos = 0;
                loop {
                    // Echoing needs the payload (which may borrow the
                    // session) and the right to send (a property of the
                    // session): read the latter first.
                    let can_send = session.is_open();
                    let next = match session.poll(&core.config.limits, input, &mut pos, &mut core.wbuf) {
                        Ok(None) => return,
                        Ok(Some(Event::Message(kind, payload))) => {
                            core.stats.messages_in += 1;
                            core.stats.bytes_in += payload.len() as u64;
                            trace!("#{key}: {kind:?} message of {} bytes", payload.len());
                            match service::on_message(*route, kind, payload) {
                                Command::Send(kind, payload) if can_send => {
                                    core.stats.messages_out += 1;
                                    core.stats.bytes_out += payload.len() as u64;
                                    frame::write(&mut core.wbuf, kind.opcode(), payload, None);
                                    None
                                }
                                Command::Broadcast(room, kind, payload) if can_send => {
                                    let to_sender = core.config.broadcast_to_sender;
                                    let n = core.rooms.publish(room, Some(key), to_sender, kind, payload);
                                    core.stats.broadcasts += 1;
                                    core.stats.deliveries += n as u64;
                                    None
                                }
                                Command::Close(code, reason) => Some(Some((code, reason))),
                                _ => None,
                            }
                        }
                        Ok(Some(Event::Ping(_) | Event::Pong(_))) => None,
                        Ok(Some(Event::Closed { code, reason })) => {
                            debug!("#{key}: peer closed with {code:?} {reason:?}");
                            Some(None)
                        }
                        Err(e) => {
                            debug!("#{key}: failing the connection: {e}");
                            core.stats.count_close(e.code);
                            Some(None)
                        }
                    };
                    match next {
                        None => {}
                        // The service asked to close: say so, and stop
                        // taking part in a room.
                        Some(Some((code, reason))) => {
                            core.stats.count_close(code);
                            session.close(code, reason, &mut core.wbuf);
                            if let Route::Broadcast { room } = *route {
                                core.rooms.leave(room, key);
                            }
                            *route = Route::Detached;
                        }
                        // Closing handshake done, or connection failed.
                        Some(None) => {
                            if let Route::Broadcast { room } = *route {
                                core.rooms.leave(room, key);
                            }
                            conn.phase = Phase::Linger;
                            return;
                        }
                    }
                }
            }
            Phase::Linger => return,
        }
    }
}

/// Answers a request we refuse, then lingers to close.
fn reject(conn: &mut Conn, core: &mut Core, e: HttpError) {
    debug!("request refused: {e}");
    core.stats.count_http_error(e.status);
    handshake::write_error(&mut core.wbuf, &e);
    conn.phase = Phase::Linger;
}
