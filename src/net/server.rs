//! The poll loop: a listener, signals, and the [`Hub`] of connections,
//! driven by `mio` (epoll). This and the hub are the only code that touches
//! sockets.
//!
//! Sockets are registered once, for both directions, edge-triggered, and
//! never re-registered. One iteration: wait for readiness (or the next
//! deadline); accept; hand each readable or writable connection to the hub;
//! then let the hub end the iteration (room deliveries, deadlines).

use super::hub::Hub;
use super::io::write_some;
use super::redis::{RedisSockets, REDIS_BASE};
use super::tls::TlsFiles;
use super::tls_server::TlsServer;
use super::transport::Stream;
use crate::config::Config;
use crate::proto::handshake;
use crate::proto::http::HttpError;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Tokens of refused connections are this plus their slot (connection
/// keys stay far below it).
const REFUSED_BASE: usize = usize::MAX / 2;
const PROBE_LISTENER: Token = Token(usize::MAX - 2);
/// How long accepting pauses after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections refused at `--max-connections` that may linger at once,
/// waiting for the peer to read its 503; past this, accepting pauses until
/// one goes. So descriptors stay within `max_connections` plus this.
const REFUSED_MAX: usize = 64;
/// How long a refused connection lingers at most.
const REFUSED_LINGER_MS: u64 = 500;
/// How often refusals are summarised at info level.
const REPORT_EVERY_MS: u64 = 10_000;

/// Bytes of user-space memory an idle WebSocket connection owns: its record
/// in the slab (a slab slot is this plus a discriminant word at most) and
/// its deadline entry; no buffer: partial input and unsent output are
/// allocated only while they exist.
pub const CONNECTION_RECORD_BYTES: usize = std::mem::size_of::<super::conn::Conn<Stream>>();

/// The TLS side of the main listener: where the certificate comes from and
/// the configuration new connections get (replaced on SIGHUP; connections
/// keep the one they started with).
struct Tls {
    files: TlsFiles,
    config: Arc<rustls::ServerConfig>,
}

/// A connection refused at `--max-connections`: its 503 is written and its
/// sending side shut; it is closed when the peer closes (it is registered
/// for that alone) or the linger ends.
struct Refused {
    stream: TcpStream,
    /// On the loop's clock.
    until: u64,
}

pub struct Server {
    poll: Poll,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// `--listen-plain`: probes only. `None` once shutting down.
    probe_listener: Option<TcpListener>,
    probe_addr: Option<SocketAddr>,
    /// Set with `--tls-cert`: the main listener speaks TLS only.
    tls: Option<Tls>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    hub: Hub<Stream>,
    refused: Slab<Refused>,
    /// The bus's Redis sockets (with `--redis`).
    redis: RedisSockets,
    /// [`monotonic_ms`] when the server started.
    start: u64,
    /// The loop's clock, in milliseconds since `start`, read once per
    /// iteration (after the poll returns): everything an iteration does
    /// happens "at" this instant.
    now: u64,
    /// Set while accept is failing for lack of file descriptors (or too
    /// many refused connections linger).
    accept_paused: bool,
    last_accept_warning: Option<u64>,
    /// When a graceful shutdown gives up waiting, on the loop's clock.
    shutdown_deadline: Option<u64>,
    /// Refusals already reported in the periodic info line.
    reported_refusals: u64,
    /// When the periodic info line on refusals is next due.
    next_report: u64,
}

impl Server {
    /// Loads the certificate (with `--tls-cert`) and binds the listeners
    /// (port 0 picks a free port). The error says which step failed.
    pub fn bind(config: Config) -> io::Result<Server> {
        let tls = match &config.tls {
            Some(files) => Some(Tls {
                files: files.clone(),
                config: files
                    .load()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            }),
            None => None,
        };
        let poll = Poll::new()?;
        let (listener, local_addr) = listen(&poll, config.listen, config.backlog, config.reuse_port, LISTENER)?;
        let (probe_listener, probe_addr) = match config.listen_plain {
            Some(addr) => {
                let (l, a) = listen(&poll, addr, config.backlog, false, PROBE_LISTENER)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            probe_listener,
            probe_addr,
            tls,
            signals: None,
            hub: Hub::new(config),
            refused: Slab::new(),
            redis: RedisSockets::default(),
            start: monotonic_ms(),
            now: 0,
            accept_paused: false,
            last_accept_warning: None,
            shutdown_deadline: None,
            reported_refusals: 0,
            next_report: REPORT_EVERY_MS,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Where the probe listener (`--listen-plain`) is bound.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
    }

    /// Makes SIGTERM and SIGINT start a graceful shutdown (a second one
    /// exits at once), and SIGHUP reload the TLS certificate. Only for the
    /// daemon: handlers are process-wide.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// The loop's clock: milliseconds since the server started, as of the
    /// last [`tick`](Self::tick).
    fn now(&self) -> u64 {
        self.now
    }

    /// Reads the clock (once per iteration) and returns
    /// [`now`](Self::now).
    fn tick(&mut self) -> u64 {
        self.now = self.elapsed();
        self.now
    }

    /// Milliseconds since the server started, read afresh.
    fn elapsed(&self) -> u64 {
        monotonic_ms().saturating_sub(self.start)
    }

    /// Runs the loop until a graceful shutdown completes (or polling itself
    /// fails).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.tick();
            self.hub.service.stats.loop_iterations += 1;
            if !self.refused.is_empty() {
                self.expire_refused();
            }
            // Whether this node is on a bus (set at start, for good).
            let bus = self.hub.service.remote.is_some();
            if bus {
                self.bus_chores(now);
            }
            if self.accept_paused {
                self.accept(now);
            }
            for ev in events.iter() {
                match ev.token() {
                    // Connections first: nearly every event is theirs.
                    Token(key) if key < REDIS_BASE => {
                        if ev.is_writable() {
                            self.hub.writable(key, now);
                        }
                        let hup = ev.is_read_closed() || ev.is_error();
                        if ev.is_readable() || hup {
                            self.hub.readable(key, now, hup);
                        }
                    }
                    LISTENER => self.accept(now),
                    PROBE_LISTENER => self.accept_probes(now),
                    SIGNALS => {
                        if self.on_signal(now) {
                            return Ok(());
                        }
                    }
                    Token(t) if t >= REFUSED_BASE => self.refused_readable(t - REFUSED_BASE),
                    Token(t) => self.bus_ready(t - REDIS_BASE, now),
                }
            }
            // The bus's commands go out before this iteration's answers to
            // clients: a subscriber's ack leaves after its node's SUBSCRIBE.
            if bus {
                self.bus_sync(now);
            }
            self.hub.end_iteration(now);
            // What the iteration's end changed (members torn down by the
            // fan-out or a deadline leave their rooms) reaches the bus now.
            if bus && self.hub.service.topics.bus_pending() {
                self.bus_sync(now);
            }
            if self.shutdown_done() {
                return Ok(());
            }
            self.report_refusals();
        }
    }

    /// How long the next poll may wait: until the next deadline, the next
    /// accept retry, or the end of the shutdown grace; not at all if input
    /// is waiting. Measured from the iteration's clock, not read again: a
    /// deadline fires late by at most the time the iteration took (the
    /// loop's deadlines are seconds; an iteration, microseconds), and the
    /// loop reads the clock once per iteration instead of twice.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.hub.has_more_input() {
            return Some(Duration::ZERO);
        }
        // The earliest of the loop's deadlines, in the loop's milliseconds
        // (one conversion to a `Duration` at the end, not one per deadline).
        let now = self.now();
        let mut earliest = self.hub.next_deadline();
        let mut at_most = |at: u64| earliest = Some(earliest.map_or(at, |e| e.min(at)));
        if self.accept_paused {
            at_most(now.saturating_add(ACCEPT_RETRY.as_millis() as u64));
        }
        if let Some(until) = self.refused.iter().map(|(_, r)| r.until).min() {
            at_most(until);
        }
        if let Some(deadline) = self.shutdown_deadline {
            at_most(deadline);
        }
        if let Some(at) = self.hub.service.remote.as_ref().and_then(|r| r.bus.poll_timeout()) {
            at_most(at);
        }
        earliest.map(|at| Duration::from_millis(at.saturating_sub(now)))
    }

    /// The bus's chores: links to connect or to give up on.
    fn bus_chores(&mut self, now: u64) {
        if let Some(remote) = &mut self.hub.service.remote {
            self.redis.poll(&mut remote.bus, self.poll.registry(), now);
        }
    }

    /// What the topics changed goes to the bus, and the bus's commands
    /// out to Redis.
    fn bus_sync(&mut self, now: u64) {
        if let Some(remote) = &mut self.hub.service.remote {
            remote.sync(&mut self.hub.service.topics, now);
            self.redis.flush_all(&mut remote.bus, now);
        }
    }

    /// A Redis link is ready: what it brought is delivered to this node's
    /// subscribers.
    fn bus_ready(&mut self, index: usize, now: u64) {
        let service = &mut self.hub.service;
        let Some(remote) = &mut service.remote else { return };
        let (topics, stats) = (&mut service.topics, &mut service.stats);
        let presence = &mut remote.presence;
        let mut deliver = |topic: &str, env: &crate::bus::wire::Envelope<'_>| {
            let n = presence.deliver(topics, topic, env, now);
            stats.deliveries += n as u64;
        };
        self.redis.ready(index, &mut remote.bus, now, &mut deliver);
    }

    /// Whether a graceful shutdown has finished (or given up).
    fn shutdown_done(&self) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if self.hub.len() == 0 {
            info!("shutdown complete");
            return true;
        }
        if self.elapsed() >= deadline {
            info!("shutdown grace period over; dropping {} connections", self.hub.len());
            return true;
        }
        false
    }

    /// Handles pending signals; true means exit now.
    fn on_signal(&mut self, now: u64) -> bool {
        let Some(signals) = &mut self.signals else { return false };
        let mut count = 0;
        let mut hup = false;
        for signal in signals.pending() {
            match signal {
                signal_hook::consts::SIGHUP => hup = true,
                _ => count += 1,
            }
        }
        if hup {
            self.reload_tls();
        }
        if count == 0 {
            return false;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            info!("second signal: exiting now");
            return true;
        }
        self.begin_shutdown(now);
        false
    }

    /// Graceful shutdown: stop accepting, deliver what is already queued,
    /// send Close 1001 "going away" to every WebSocket client and keep
    /// flushing until all have closed or the grace period is over.
    fn begin_shutdown(&mut self, now: u64) {
        info!("shutting down: closing {} connections", self.hub.len());
        self.listener = None;
        self.probe_listener = None;
        self.accept_paused = false;
        self.refused.clear();
        let grace = u64::try_from(self.hub.config.shutdown_grace.as_millis()).unwrap_or(u64::MAX);
        self.shutdown_deadline = Some(now.saturating_add(grace));
        self.hub.begin_shutdown(now);
    }

    fn accept(&mut self, now: u64) {
        while let Some(listener) = &self.listener {
            if self.hub.len() >= self.hub.config.max_connections && self.refused.len() >= REFUSED_MAX {
                // Leave the rest in the backlog until a slot frees.
                self.accept_paused = true;
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_paused = false;
                    self.hub.service.stats.accepted += 1;
                    self.admit(stream, peer, now, false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return self.out_of_descriptors(e),
            }
        }
    }

    /// Accepts on the probe listener (`--listen-plain`). Probes are few:
    /// past `--max-connections` they are simply closed.
    fn accept_probes(&mut self, now: u64) {
        while let Some(listener) = &self.probe_listener {
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.hub.service.stats.accepted += 1;
                    self.admit(stream, peer, now, true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("accept on the plain listener: {e}");
                    self.hub.service.stats.accept_errors += 1;
                    return;
                }
            }
        }
    }

    /// Registers a new connection with the poll and hands it to the hub, or
    /// refuses it with 503 when at `--max-connections`. A TLS connection
    /// enters the hub before its TLS handshake, so that the handshake
    /// counts against `--handshake-timeout`. `probes`: it came in on the
    /// plain listener.
    fn admit(&mut self, mut tcp: TcpStream, peer: SocketAddr, now: u64, probes: bool) {
        // Frames are whole when written; don't let Nagle hold back a small
        // one waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        let config = &self.hub.config;
        let sock = socket2::SockRef::from(&tcp);
        if config.send_buffer > 0 {
            let _ = sock.set_send_buffer_size(config.send_buffer);
        }
        if self.hub.len() >= self.hub.config.max_connections {
            return self.refuse(tcp, peer, probes);
        }
        let key = self.hub.next_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut tcp, Token(key), interest) {
            warn!("cannot register connection from {peer}: {e}");
            return;
        }
        let stream = match (&self.tls, probes) {
            (_, true) => Stream::Probes(tcp),
            (None, false) => Stream::Plain(tcp),
            (Some(tls), false) => match rustls::server::UnbufferedServerConnection::new(Arc::clone(&tls.config)) {
                Ok(conn) => Stream::Tls(Box::new(TlsServer::new(tcp, conn))),
                Err(e) => {
                    warn!("cannot start TLS for {peer}: {e}");
                    return;
                }
            },
        };
        debug!("{peer} connected (#{key})");
        self.hub.insert(stream, now);
    }

    /// SIGHUP: reads the certificate and key again; new connections get the
    /// new ones, open connections keep theirs. A bad new pair leaves the
    /// old one in use.
    fn reload_tls(&mut self) {
        let Some(tls) = &mut self.tls else {
            info!("SIGHUP: no TLS certificate to reload");
            return;
        };
        match tls.files.load() {
            Ok(config) => {
                tls.config = config;
                info!("SIGHUP: TLS certificate reloaded from {}", tls.files.cert.display());
            }
            Err(e) => warn!("SIGHUP: TLS certificate not reloaded, keeping the old one: {e}"),
        }
    }

    /// Answers 503 at once and lets the connection linger briefly, not
    /// counted, so that the peer can read the answer before the socket
    /// closes. (On the TLS listener, closes: a plaintext 503 would be
    /// garbage to a TLS client.)
    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr, probes: bool) {
        debug!("{peer} refused: at --max-connections");
        let stats = &mut self.hub.service.stats;
        stats.rejected_max_connections += 1;
        if self.tls.is_some() && !probes {
            // A plaintext 503 would be garbage to a TLS client: just close.
            return;
        }
        stats.count_http_error(503);
        let mut out = Vec::new();
        handshake::write_error(&mut out, &HttpError::new(503, "server at capacity"));
        // A fresh socket's send buffer takes a few hundred bytes.
        if write_some(&mut stream, &out).is_err() || stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let slot = self.refused.vacant_key();
        if self
            .poll
            .registry()
            .register(&mut stream, Token(REFUSED_BASE + slot), Interest::READABLE)
            .is_ok()
        {
            self.refused.insert(Refused {
                stream,
                until: self.now + REFUSED_LINGER_MS,
            });
        }
    }

    /// A refused connection is readable: what it sent is read and dropped;
    /// at its FIN (it has read our 503) it is closed.
    fn refused_readable(&mut self, slot: usize) {
        let Some(r) = self.refused.get_mut(slot) else { return };
        let mut sink = [0u8; 1024];
        loop {
            match r.stream.read(&mut sink) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break, // EOF or an error: done
            }
        }
        self.refused.remove(slot);
        self.resume_accepting();
    }

    /// Closes refused connections whose linger is over (what they sent is
    /// read first, so that closing sends a FIN rather than a reset).
    fn expire_refused(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .refused
            .iter()
            .filter(|(_, r)| r.until <= now)
            .map(|(k, _)| k)
            .collect();
        for slot in due {
            let mut r = self.refused.remove(slot);
            let mut sink = [0u8; 1024];
            while matches!(r.stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        self.resume_accepting();
    }

    /// If accepting paused because too many refused connections lingered and
    /// one went, take the next from the backlog now.
    fn resume_accepting(&mut self) {
        if self.accept_paused && self.refused.len() < REFUSED_MAX {
            let now = self.now();
            self.accept(now);
        }
    }

    /// EMFILE/ENFILE (or ENOMEM, ENOBUFS): the pending connection stays in
    /// the backlog. The listener is edge-triggered and will not fire again
    /// for it, so retry on a timer instead of spinning or stalling.
    fn out_of_descriptors(&mut self, e: io::Error) {
        self.accept_paused = true;
        self.hub.service.stats.accept_errors += 1;
        let now = self.now;
        if self.last_accept_warning.is_none_or(|t| now.saturating_sub(t) >= 1000) {
            self.last_accept_warning = Some(now);
            warn!("accept failed: {e}; retrying every {} ms", ACCEPT_RETRY.as_millis());
        }
    }

    /// Logs refusals in aggregate, at most every ten seconds.
    fn report_refusals(&mut self) {
        let now = self.now;
        if now < self.next_report {
            return;
        }
        self.next_report = now + REPORT_EVERY_MS;
        let errors = &self.hub.service.stats.http_errors;
        let total: u64 = errors.iter().map(|(_, n)| n).sum();
        if total != self.reported_refusals {
            let by_status: Vec<String> = errors.iter().map(|(status, n)| format!("{n} × {status}")).collect();
            info!("requests refused since start: {}", by_status.join(", "));
            self.reported_refusals = total;
        }
    }
}

/// CLOCK_MONOTONIC (the clock std's `Instant` reads) in milliseconds. Read
/// directly rather than through `Instant`: with the conversion to
/// milliseconds since the start, a third of the instructions (about 25
/// against 70 per loop iteration; `benches/profile_echo.py --batch 1`).
fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // Never negative: the monotonic clock counts from boot.
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

/// Binds a non-blocking listener with a backlog of `backlog` connections
/// (the kernel caps it at `net.core.somaxconn`: connections the loop has
/// not accepted yet wait there, completed by the kernel) and registers it
/// with the poll.
fn listen(
    poll: &Poll,
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    token: Token,
) -> io::Result<(TcpListener, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted daemon may bind while its predecessor's connections are
    // in TIME_WAIT.
    socket.set_reuse_address(true)?;
    // `--reuse-port`: several processes listen on one port; the kernel
    // spreads new connections over them.
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    let mut listener = TcpListener::from_std(socket.into());
    poll.registry().register(&mut listener, token, Interest::READABLE)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
