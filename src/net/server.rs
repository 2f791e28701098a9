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

use super::outq::{OutQueue, MAX_IOVECS};
use super::stats::Stats;
use crate::config::{Config, SlowConsumer, READ_BUFFER};
use crate::proto::close::code;
use crate::proto::handshake::{self, RequestParser};
use crate::proto::http::{HttpError, Progress};
use crate::proto::{frame, Event, MessageKind, Session};
use crate::service::broadcast::{Room, Rooms};
use crate::service::{self, Command, Route, Target};
use log::{debug, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
/// How long accepting pauses after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Reads per connection per iteration before others get their turn.
const READ_BUDGET: usize = 16;

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
}

/// Something to do to a connection once the loop is not iterating over a
/// room's members.
enum Deferred {
    Teardown(&'static str),
    SlowConsumer,
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    rbuf: Box<[u8]>,
    core: Core,
    /// Connections that used their read budget with input maybe left.
    again: Vec<usize>,
    /// Reused scratch for room delivery.
    ranges: Vec<(usize, usize)>,
    deferred: Vec<(usize, Deferred)>,
    /// Set while accept is failing for lack of file descriptors.
    accept_paused: bool,
    last_accept_warning: Option<Instant>,
}

impl Server {
    /// Binds the listener (port 0 picks a free port).
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: Slab::new(),
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            core: Core {
                config,
                rooms: Rooms::default(),
                stats: Stats::default(),
                wbuf: Vec::with_capacity(READ_BUFFER),
            },
            again: Vec::new(),
            ranges: Vec::new(),
            deferred: Vec::new(),
            accept_paused: false,
            last_accept_warning: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Runs the loop forever (or until polling itself fails).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else if self.accept_paused {
                Some(ACCEPT_RETRY)
            } else {
                None
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.core.stats.loop_iterations += 1;
            if self.accept_paused {
                self.accept();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
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
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.accept_paused = false;
                    // Frames are whole when written; don't let Nagle hold
                    // back a small one waiting for an ACK.
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    {
                        warn!("cannot register connection from {peer}: {e}");
                        continue;
                    }
                    debug!("{peer} connected (#{})", token.0);
                    self.core.stats.accepted += 1;
                    entry.insert(Conn {
                        stream,
                        phase: Phase::Handshake(Box::default()),
                        out: None,
                        read_paused: false,
                        write_shut: false,
                    });
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
            match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.teardown(key, "peer closed the connection");
                    return;
                }
                Ok(n) => {
                    handle_input(conn, key, &mut self.core, &mut self.rbuf[..n]);
                    if !self.flush(key) {
                        return;
                    }
                    // A short read emptied the socket; the next arrival is a
                    // new edge. Skipping the read that would say WouldBlock
                    // saves a system call per message.
                    if n < self.rbuf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.teardown(key, "read error");
                    debug!("#{key}: {e}");
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
            for &m in &room.members {
                let Some(conn) = self.conns.get_mut(m) else { continue };
                if let Some(d) = deliver(
                    conn,
                    m,
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
        if let Some(q) = &mut conn.out {
            q.truncate_to_front();
        }
        self.flush(key);
    }

    /// The one way a connection ends: leave its room, drop it (which closes
    /// the socket and removes it from the poll set).
    fn teardown(&mut self, key: usize, why: &str) {
        if let Some(conn) = self.conns.try_remove(key) {
            if let Phase::Open(_, Route::Broadcast { room }) = conn.phase {
                self.core.rooms.leave(room, key);
            }
            self.core.stats.closed += 1;
            debug!("#{key} closed: {why} ({} bytes unsent)", conn.queued());
        }
    }
}

/// Writes as much of `buf` as the socket takes; returns how much.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
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
fn deliver(
    conn: &mut Conn,
    key: usize,
    room: &Room,
    shared: &mut Option<Rc<[u8]>>,
    config: &Config,
    stats: &mut Stats,
    ranges: &mut Vec<(usize, usize)>,
) -> Option<Deferred> {
    ranges.clear();
    let queued = conn.queued();
    let mut total = 0;
    let mut start = 0;
    for &(end, sender) in &room.frames {
        let (s, e) = (start, end);
        start = end;
        if sender == Some(key) && !config.broadcast_to_sender {
            continue;
        }
        if queued + total + (e - s) > config.max_backpressure {
            match config.slow_consumer {
                SlowConsumer::Close => return Some(Deferred::SlowConsumer),
                SlowConsumer::Drop => {
                    stats.slow_consumer_drops += 1;
                    continue;
                }
            }
        }
        total += e - s;
        match ranges.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => ranges.push((s, e)),
        }
    }
    if total == 0 {
        return None;
    }
    stats.messages_out += 1;
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
    loop {
        match &mut conn.phase {
            Phase::Handshake(parser) => {
                let used = match parser.feed(&core.config.head, input) {
                    Ok(Progress::Partial) => return,
                    Ok(Progress::Complete(n)) => n,
                    Err(e) => return reject(conn, core, e),
                };
                let req = parser.request();
                let keep_alive = req.keep_alive();
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
                    Target::Join(k, name) => {
                        handshake::write_accept(&mut core.wbuf, &k);
                        let room = core.rooms.join(&name, key);
                        Phase::Open(Session::server(), Route::Broadcast { room })
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
