//! The server's poll loop: a listener, a slab of connections, one read
//! buffer and one write buffer shared by all of them.
//!
//! Per readable connection: read into the shared buffer, feed the protocol
//! core, let the service answer, and write the answers with one system
//! call straight from the shared write buffer. Only what the socket would
//! not take is copied into the connection's own queue, which is written
//! when the socket becomes writable. Sockets are registered once, for both
//! directions, edge-triggered, and never re-registered.

use super::outq::OutQueue;
use crate::config::{Config, READ_BUFFER};
use crate::proto::handshake::{self, RequestParser};
use crate::proto::http::{HttpError, Progress};
use crate::proto::{frame, Event, Session};
use crate::service::{self, Command, Route};
use log::{debug, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
/// How long accepting pauses after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP request head.
    Handshake(Box<RequestParser>),
    /// WebSocket frames both ways.
    Open(Session, Route),
    /// Our last word (an HTTP error, or the Close that ends the closing
    /// handshake) is queued. Once it is written we shut down our sending
    /// side, so the server is the one to close the TCP connection
    /// (RFC 6455 §7.1.1), and discard input until the peer's FIN: closing
    /// with unread input would send a reset that can destroy our last
    /// frame before the peer reads it.
    Linger,
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

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
    config: Config,
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
            wbuf: Vec::with_capacity(READ_BUFFER),
            config,
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

    /// Runs the loop forever (or until polling itself fails).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.accept_paused.then_some(ACCEPT_RETRY);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
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
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.accept_paused = false;
                    // Frames are whole when written; don't let Nagle hold
                    // back a small echo waiting for an ACK.
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
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.read_paused {
                return;
            }
            if conn.queued() > self.config.max_backpressure {
                // The peer is not reading what we send; stop reading what
                // it sends until it does (resumed in `on_writable`).
                conn.read_paused = true;
                return;
            }
            match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.teardown(key, "peer closed the connection");
                    return;
                }
                Ok(n) => {
                    handle_input(conn, &self.config, &mut self.rbuf[..n], &mut self.wbuf);
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
                    self.teardown(key, &format!("read error: {e}"));
                    return;
                }
            }
        }
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(q) = &mut conn.out {
            if let Err(e) = q.flush(&mut conn.stream) {
                self.teardown(key, &format!("write error: {e}"));
                return;
            }
        }
        if !self.after_write(key) {
            return;
        }
        let conn = &mut self.conns[key];
        if conn.read_paused && conn.queued() <= self.config.max_backpressure / 2 {
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
        let conn = &mut self.conns[key];
        let result = match &mut conn.out {
            Some(q) if !q.is_empty() => {
                q.push(&self.wbuf);
                q.flush(&mut conn.stream).map(|_| ())
            }
            _ => write_some(&mut conn.stream, &self.wbuf).map(|n| {
                if n < self.wbuf.len() {
                    conn.out.get_or_insert_with(Box::default).push(&self.wbuf[n..]);
                }
            }),
        };
        self.wbuf.clear();
        if self.wbuf.capacity() > 4 * READ_BUFFER {
            // A large message passed through; don't keep its memory.
            self.wbuf = Vec::with_capacity(READ_BUFFER);
        }
        if let Err(e) = result {
            self.teardown(key, &format!("write error: {e}"));
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
                if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
                    self.teardown(key, &format!("shutdown: {e}"));
                    return false;
                }
            }
        }
        true
    }

    /// The one way a connection ends: drop it, which closes the socket and
    /// removes it from the poll set.
    fn teardown(&mut self, key: usize, why: &str) {
        if let Some(conn) = self.conns.try_remove(key) {
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

/// Feeds one read's worth of input to a connection; answers go to `out`.
fn handle_input(conn: &mut Conn, config: &Config, input: &mut [u8], out: &mut Vec<u8>) {
    let mut input = input;
    if let Phase::Handshake(parser) = &mut conn.phase {
        let result = parser.feed(&config.head, input).and_then(|p| match p {
            Progress::Partial => Ok(None),
            Progress::Complete(n) => service::route(parser.request()).map(|r| Some((n, r))),
        });
        match result {
            Ok(None) => return,
            Ok(Some((used, (route, key)))) => {
                debug!("upgraded to {route:?} at {}", parser.request().target);
                handshake::write_accept(out, &key);
                conn.phase = Phase::Open(Session::server(), route);
                // Frames sent right behind the request are in this input.
                input = &mut input[used..];
            }
            Err(e) => {
                reject(conn, e, out);
                return;
            }
        }
    }
    let Phase::Open(session, route) = &mut conn.phase else {
        // Lingering: input is read only to be discarded.
        return;
    };
    let mut pos = 0;
    loop {
        // Echoing needs the payload (which may borrow the session) and the
        // right to send (a property of the session): read the latter first.
        let can_send = session.is_open();
        let close = match session.poll(&config.limits, input, &mut pos, out) {
            Ok(None) => return,
            Ok(Some(Event::Message(kind, payload))) => {
                trace!("{kind:?} message of {} bytes", payload.len());
                match service::on_message(*route, kind, payload) {
                    Command::Send(kind, payload) if can_send => {
                        frame::write(out, kind.opcode(), payload, None);
                        None
                    }
                    Command::Close(code, reason) => Some((code, reason)),
                    Command::Send(..) | Command::None => None,
                }
            }
            Ok(Some(Event::Ping(_) | Event::Pong(_))) => None,
            Ok(Some(Event::Closed { code, reason })) => {
                debug!("peer closed with {code:?} {reason:?}");
                conn.phase = Phase::Linger;
                return;
            }
            Err(e) => {
                debug!("failing the connection: {e}");
                conn.phase = Phase::Linger;
                return;
            }
        };
        if let Some((code, reason)) = close {
            session.close(code, reason, out);
        }
    }
}

/// Answers a request we refuse, then lingers to close.
fn reject(conn: &mut Conn, e: HttpError, out: &mut Vec<u8>) {
    debug!("handshake refused: {e}");
    handshake::write_error(out, &e);
    conn.phase = Phase::Linger;
}
