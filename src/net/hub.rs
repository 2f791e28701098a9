//! The connections of one loop and what they share: the slab, the service,
//! the deadline heap, and one read and one write buffer for all of them.
//!
//! The hub is generic over the [`Transport`], so the whole loop minus
//! `epoll` is driven in tests over in-memory pipes on a virtual clock
//! (`tests.rs` here); [`super::server`] drives it over TCP with `mio`.
//!
//! Per readable connection: read into the shared read buffer, feed the
//! protocol state machine, hand its events to the service, and write the
//! answers with one system call straight from the shared write buffer.
//! Only what a socket will not take is kept in the connection's own queue,
//! written when the socket becomes writable. At the end of each loop
//! iteration every room's batch goes out ([`super::fanout`]) and due
//! deadlines fire.

use super::conn::{send_parts, Budget, Conn};
use super::fanout::{Deferred, Fanout};
use super::io::{tls_failure, Transport};
use super::timers::Timers;
use crate::config::{Config, READ_BUFFER};
use crate::proto::close::code;
use crate::proto::conn::{Answer, Connection, Event, Expired, Flushed, Response, Settings};
use crate::proto::deflate::{Codec, DeflateConfig, Mode};
use crate::proto::frame;
use crate::proto::handshake::Request;
use crate::proto::http::HttpError;
use crate::service::metrics::{self, Snapshot};
use crate::service::{Command, Page, Reply, Route, Service};
use log::{debug, trace};
use slab::Slab;
use std::io;

/// Reads per connection per iteration before others get their turn (and
/// before a room's batch goes out: a batch should stay well under the
/// backpressure cap, or a recipient that keeps up on average would look
/// slow).
const READ_BUDGET: usize = 4;
/// Payloads from this size are sent from where they are rather than copied
/// into the write buffer (when nothing is waiting ahead of them and nothing
/// is compressed): from the read buffer, with their header written over the
/// consumed bytes in front, in one plain write; from elsewhere, behind their
/// header in one vectored write. A plain write costs the kernel about 3 %
/// less than a vectored one of the same 16 KiB (an echo's ~7 µs).
const SEND_IN_PLACE_FROM: usize = 4096;
/// At the end of an iteration, how many more times the fan-out runs for
/// what its own teardowns published (leave notices).
const REDELIVER_ROUNDS: usize = 4;

pub(crate) struct Hub<S> {
    pub config: Config,
    settings: Settings,
    conns: Slab<Conn<S>>,
    pub service: Service,
    timers: Timers,
    /// The read buffer is `rstore[rstart..rstart + READ_BUFFER]`; see
    /// [`place_apart`].
    rstore: Box<[u8]>,
    rstart: usize,
    /// Output for the connection being handled, written when its input has
    /// been processed.
    wbuf: Vec<u8>,
    /// Connections that used their read budget with input maybe left.
    again: Vec<usize>,
    fanout: Fanout,
    /// What connections hold, against `--max-memory`.
    memory: Budget,
    /// permessage-deflate: the shared codecs and scratch buffers.
    codec: Codec,
}

impl<S: Transport> Hub<S> {
    pub fn new(config: Config) -> Self {
        let settings = config.settings();
        let memory_limit = config.max_memory;
        // Without deflate no offer is accepted: the codec is never used.
        let codec = Codec::new(
            config.deflate.unwrap_or(DeflateConfig {
                mode: Mode::Shared,
                max_window_bits: 15,
                threshold: usize::MAX,
            }),
            config.deflate_level,
        );
        let service = match &config.bus {
            Some(b) => Service::with_bus(crate::bus::Bus::new(b.clone())),
            None => Service::default(),
        };
        let mut hub = Hub {
            config,
            settings,
            conns: Slab::new(),
            service,
            timers: Timers::default(),
            rstore: vec![0; READ_BUFFER + PAGE].into_boxed_slice(),
            rstart: 0,
            wbuf: Vec::with_capacity(READ_BUFFER),
            again: Vec::new(),
            fanout: Fanout::default(),
            memory: Budget {
                used: 0,
                limit: memory_limit,
            },
            codec,
        };
        hub.rstart = place_apart(&hub.rstore, hub.wbuf.as_ptr());
        hub
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// The key the next [`insert`](Self::insert) will use.
    pub fn next_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// Takes a new connection, accepted at `now`.
    pub fn insert(&mut self, stream: S, now: u64) -> usize {
        let key = self
            .conns
            .insert(Conn::new(stream, Connection::new(&self.settings, now)));
        self.settle(key);
        key
    }

    /// Whether some connection has input left from its read budget: the
    /// loop must not wait before the next iteration.
    pub fn has_more_input(&self) -> bool {
        !self.again.is_empty()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next()
    }

    /// Connection `key` is readable. `hup`: the peer's FIN or an error is
    /// known to be pending, so read until the socket says so even after a
    /// short read.
    pub fn readable(&mut self, key: usize, now: u64, hup: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.paused() {
                return;
            }
            let over_budget = conn.queued() > 0 && self.memory.exceeded();
            if conn.queued() > self.config.max_backpressure || over_budget {
                // The peer is not reading what we send (or memory is short
                // and it has output waiting); stop reading what it sends
                // until it does (resumed in `writable`).
                if let Some(q) = &mut conn.out {
                    q.paused = true;
                }
                return;
            }
            self.service.stats.read_calls += 1;
            let quiet = conn.is_quiet();
            let rbuf = &mut self.rstore[self.rstart..self.rstart + READ_BUFFER];
            match conn.stream.read(rbuf) {
                Ok(0) => {
                    self.end_of_input(key, now);
                    return;
                }
                Ok(n) => {
                    let stays_quiet = self.feed(key, now, n);
                    if quiet && stays_quiet {
                        // The common case, messages in and answers out: a
                        // quiet connection that stayed quiet gathered
                        // nothing (no growth to refuse) and, once its
                        // answers are out whole, needs no settling.
                        if !self.write_out(key) || (!self.conns[key].output_quiet() && !self.settle(key)) {
                            return;
                        }
                    } else {
                        self.refuse_growth_over_budget(key, now);
                        if !self.flush(key) {
                            return;
                        }
                    }
                    // A short read emptied the socket; the next arrival is
                    // a new edge. Skipping the read that would say
                    // WouldBlock saves a system call per message, unless
                    // the peer's FIN is already known to be waiting.
                    if n < READ_BUFFER && !hup {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(key, &e);
                    return;
                }
            }
        }
        // Budget spent with input perhaps left: no new edge will come for
        // it, so come back after the others had their turn.
        self.again.push(key);
    }

    /// The peer's FIN: no more input. Out of line, as are the other
    /// paths `readable` takes at most once per connection, so that its
    /// common path (a message in, its answer out) stays small.
    #[cold]
    #[inline(never)]
    fn end_of_input(&mut self, key: usize, now: u64) {
        trace!("#{key}: end of input");
        let conn = &mut self.conns[key];
        let unsent = conn.queued() > 0 || conn.stream.has_pending();
        conn.proto.handle_eof(&self.settings, now, unsent);
        self.settle(key);
    }

    /// A read failed: the connection is torn down.
    #[cold]
    #[inline(never)]
    fn read_failed(&mut self, key: usize, e: &io::Error) {
        debug!("#{key}: read: {e}");
        if let Some(f) = tls_failure(e) {
            self.service.stats.count_tls_failure(f.during_handshake);
        }
        self.teardown(key, "read error");
    }

    /// Connection `key` is writable: write what its transport holds (TLS
    /// records), then what it has queued.
    pub fn writable(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.stream.has_pending() {
            if let Err(e) = conn.stream.flush_pending() {
                debug!("#{key}: write: {e}");
                self.teardown(key, "write error");
                return;
            }
            if conn.out.is_none() {
                self.settle(key);
                return;
            }
        }
        let Some(q) = &mut conn.out else { return };
        trace!("#{key}: writable, {} bytes queued", q.len());
        self.service.stats.write_calls += 1;
        if let Err(e) = conn.flush_queue() {
            debug!("#{key}: write: {e}");
            self.teardown(key, "write error");
            return;
        }
        let was_paused = conn.paused();
        if let Some(q) = &mut conn.out {
            if q.len() <= self.config.max_backpressure / 2 && !self.memory.exceeded() {
                q.paused = false;
            }
        }
        let resume = was_paused && !conn.paused();
        if self.settle(key) && resume {
            // Input may have been waiting all along: no new edge will come
            // for it, so read now.
            self.readable(key, now, true);
        }
    }

    /// The end of a loop iteration: connections with input left get their
    /// turn, rooms' batches go out, and due deadlines fire.
    #[inline(always)]
    pub fn end_iteration(&mut self, now: u64) {
        if !self.again.is_empty() {
            let mut again = std::mem::take(&mut self.again);
            for &key in &again {
                self.readable(key, now, true);
            }
            // Keep whichever list has the memory: `readable` may have
            // pushed onto the new one.
            if self.again.is_empty() {
                again.clear();
                self.again = again;
            }
        }
        // Nothing broadcast (an echo-only iteration): nothing to deliver.
        if self.service.topics.has_batches() {
            self.deliver(now);
        }
        while let Some(key) = self.timers.pop_due(now) {
            self.expire(key, now);
        }
        // Members torn down by the fan-out (a failed write, a slow consumer)
        // or by a deadline have left their rooms: their leave notices go out
        // now, not at the loop's next wakeup (seconds away in a quiet room).
        // Bounded: a round only publishes for members it tore down.
        for _ in 0..REDELIVER_ROUNDS {
            if !self.service.topics.has_batches() {
                break;
            }
            self.deliver(now);
        }
    }

    /// Graceful shutdown: deliver what is already broadcast, then send
    /// Close 1001 "going away" to every WebSocket client; connections still
    /// in HTTP end at once, those already ending finish.
    pub fn begin_shutdown(&mut self, now: u64) {
        // Broadcasts read before the signal go out before the Close.
        self.deliver(now);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if conn.proto.is_open() {
                self.service.stats.count_close(code::GOING_AWAY);
            }
            conn.proto
                .close(&self.settings, now, code::GOING_AWAY, "going away", &mut self.wbuf);
            self.flush(key);
        }
    }

    /// Whether `addr` lies in the read buffer's storage.
    #[cfg(test)]
    pub fn holds_in_read_buffer(&self, addr: usize) -> bool {
        self.rstore.as_ptr_range().contains(&(addr as *const u8))
    }

    /// The counters and gauges for `/metrics`.
    #[cfg(test)]
    pub fn snapshot(&self) -> Snapshot<'_> {
        snapshot(&self.conns, &self.service, &self.timers, &self.memory)
    }

    /// Feeds `n` bytes just read into the read buffer to connection `key`,
    /// handing its events to the service; answers go to the write buffer.
    /// Returns whether its protocol state is quiet
    /// ([`Connection::is_quiet`]) at the end.
    #[inline(always)]
    fn feed(&mut self, key: usize, now: u64, n: usize) -> bool {
        let Hub {
            conns,
            service,
            config,
            settings,
            wbuf,
            rstore,
            rstart,
            timers,
            memory,
            codec,
            ..
        } = self;
        let input = &mut rstore[*rstart..*rstart + n];
        // Where the input starts: a large echo that lies in it is sent
        // from it (see `in_read_buffer`).
        let base = input.as_ptr() as usize;
        let mut pos = 0;
        let mut conn = &mut conns[key];
        loop {
            let deflate = conn.proto.compresses();
            let Some(event) = conn.proto.handle_input(settings, now, input, &mut pos, wbuf, codec) else {
                return conn.proto.is_quiet();
            };
            let reply = match event {
                Event::Message(kind, payload) => {
                    trace!("#{key}: {kind:?} message of {} bytes", payload.len());
                    let (mut sent, mut close, mut wrote, mut behind) = (None, None, false, None);
                    let at = wbuf.len();
                    match service.on_message(key, conn.route, kind, payload, config) {
                        Command::Send(kind, payload) => {
                            // A large echo goes out from the read buffer,
                            // not through a copy. A failed write leaves it
                            // to the ordinary one, which meets the error
                            // again and tears the connection down.
                            wrote = payload.len() >= SEND_IN_PLACE_FROM
                                && wbuf.is_empty()
                                && conn.out.is_none()
                                && !deflate;
                            if wrote {
                                let head = frame::encode(true, kind.opcode(), payload.len() as u64, None);
                                match in_read_buffer(base, n, payload, head.as_slice().len()) {
                                    Some(at) => behind = Some((head, at, payload.len())),
                                    None => {
                                        if send_parts(&mut conn.stream, &mut conn.out, head.as_slice(), payload)
                                            .is_err()
                                        {
                                            frame::write(wbuf, kind.opcode(), payload, None);
                                        }
                                    }
                                }
                            } else {
                                frame::write(wbuf, kind.opcode(), payload, None);
                            }
                            sent = Some(payload.len());
                        }
                        Command::Close(code, reason) => close = Some((code, reason)),
                        Command::None => {}
                    }
                    // The payload is no longer borrowed: its header goes
                    // in front of it, over bytes already consumed, and
                    // the frame out in one contiguous write.
                    if let Some((head, at, len)) = behind {
                        let head = head.as_slice();
                        let frame = &mut input[at - head.len()..at + len];
                        frame[..head.len()].copy_from_slice(head);
                        if send_parts(&mut conn.stream, &mut conn.out, &[], frame).is_err() {
                            // Left to the ordinary write, which meets the
                            // error again and tears the connection down.
                            wbuf.extend_from_slice(frame);
                        }
                    }
                    if wrote {
                        service.stats.write_calls += 1;
                    }
                    if let Some(n) = sent {
                        service.stats.messages_out += 1;
                        service.stats.bytes_out += n as u64;
                        // A message event leaves the session as it found
                        // it: open, compressing or not as before.
                        if deflate {
                            conn.proto.compress_tail(codec, wbuf, at);
                        }
                    }
                    if let Some((code, reason)) = close {
                        debug!("#{key}: closing: {reason}");
                        service.stats.count_close(code);
                        conn.proto.close(settings, now, code, reason, wbuf);
                    }
                    continue;
                }
                Event::Closed { code } => {
                    debug!("#{key}: peer closed with {code:?}");
                    continue;
                }
                Event::Failed(e) => {
                    debug!("#{key}: failing the connection: {e}");
                    service.stats.count_close(e.code);
                    continue;
                }
                Event::Refused(e) => {
                    debug!("#{key}: request refused: {e}");
                    service.stats.count_http_error(e.status);
                    continue;
                }
                Event::Request(req) => request_reply(key, req, conn.stream.probes_only(), service, config),
                Event::Body(req, body) => service.on_body(req, body, config),
            };
            let hub = HttpParts {
                conns,
                service,
                config,
                settings,
                wbuf,
                timers,
                memory,
            };
            hub.answer(key, now, reply);
            conn = &mut conns[key];
        }
    }

    /// Past the memory budget, a connection whose partial message just grew
    /// is closed with 1013 "try again later" (RFC 6455 §7.4.1), which frees
    /// what it gathered.
    #[inline(never)]
    fn refuse_growth_over_budget(&mut self, key: usize, now: u64) {
        let conn = &mut self.conns[key];
        if self.memory.sync(conn) <= 0 || !self.memory.exceeded() || conn.proto.buffered() == 0 || !conn.proto.is_open()
        {
            return;
        }
        debug!("#{key}: out of memory (--max-memory) for its message");
        self.service.stats.memory_refused_messages += 1;
        self.service.stats.count_close(code::TRY_AGAIN_LATER);
        conn.proto.close(
            &self.settings,
            now,
            code::TRY_AGAIN_LATER,
            "try again later",
            &mut self.wbuf,
        );
    }

    /// Writes the shared write buffer to connection `key` (behind its queue,
    /// if any), then [`settle`](Self::settle)s it. Returns false if the
    /// connection was torn down.
    #[inline(never)]
    fn flush(&mut self, key: usize) -> bool {
        self.write_out(key) && self.settle(key)
    }

    /// Writes the shared write buffer to connection `key` (behind its queue,
    /// if any) and leaves it unsettled: [`flush`](Self::flush) is this,
    /// then [`settle`](Self::settle). Returns false if the connection was
    /// torn down.
    #[inline(always)]
    fn write_out(&mut self, key: usize) -> bool {
        if !self.wbuf.is_empty() {
            self.service.stats.write_calls += 1;
            let result = self.conns[key].send(&self.wbuf);
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * READ_BUFFER {
                // A large message passed through; don't keep its memory.
                self.codec.shrink(4 * READ_BUFFER);
                self.wbuf = Vec::with_capacity(READ_BUFFER);
                // The read buffer holds nothing live between reads: move it
                // to keep clear of the new write buffer.
                self.rstart = place_apart(&self.rstore, self.wbuf.as_ptr());
            }
            if let Err(e) = result {
                debug!("#{key}: write: {e}");
                self.teardown(key, "write error");
                return false;
            }
        }
        true
    }

    /// Brings the loop's view of connection `key` in line with its state
    /// after anything happened to it: a connection that is no longer open
    /// leaves its room; an empty queue is freed; once its last word is out
    /// its sending side is shut; a finished connection is torn down; its
    /// deadline is (re-)armed. Returns false if it was torn down.
    #[inline(never)]
    fn settle(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        if conn.route != Route::None && !conn.proto.is_open() {
            self.service.detach(key, &mut conn.route);
        }
        if conn.out.as_ref().is_some_and(|q| q.is_empty()) {
            conn.out = None;
        }
        self.memory.sync(conn);
        let flushed = conn.queued() == 0 && !conn.stream.has_pending();
        if flushed && conn.proto.handle_flushed() == Flushed::ShutdownWrite {
            if let Err(e) = conn.stream.shutdown_write() {
                debug!("#{key}: shutdown: {e}");
                self.teardown(key, "shutdown failed");
                return false;
            }
        }
        match conn.proto.poll_timeout(&self.settings) {
            Some(at) => self.timers.set_earlier(key, at),
            None => {
                self.teardown(key, "closed");
                return false;
            }
        }
        true
    }

    /// A deadline of connection `key` passed.
    fn expire(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let stats = &mut self.service.stats;
        match conn.proto.handle_timeout(&self.settings, now, &mut self.wbuf) {
            Expired::Early | Expired::Ping => {}
            Expired::Request if self.wbuf.is_empty() => debug!("#{key}: handshake timeout, nothing sent"),
            Expired::Request => {
                debug!("#{key}: handshake timeout");
                stats.timeouts_handshake += 1;
                stats.count_http_error(408);
            }
            Expired::Idle => {
                debug!("#{key}: idle timeout");
                stats.timeouts_idle += 1;
                stats.count_close(code::GOING_AWAY);
            }
            Expired::Close => {
                debug!("#{key}: close timeout");
                stats.timeouts_close += 1;
            }
            Expired::Message => {
                debug!("#{key}: message timeout");
                stats.timeouts_message += 1;
                stats.count_close(code::POLICY_VIOLATION);
            }
        }
        self.flush(key);
    }

    /// Writes every room's batch of this iteration to its members, then
    /// closes or drops the members that failed or fell behind.
    fn deliver(&mut self, now: u64) {
        let Hub {
            fanout,
            service,
            conns,
            config,
            memory,
            codec,
            ..
        } = self;
        fanout.deliver(&mut service.topics, conns, config, &mut service.stats, memory, codec);
        let mut deferred = std::mem::take(&mut self.fanout.deferred);
        for (key, d) in deferred.drain(..) {
            match d {
                Deferred::Teardown(why) => self.teardown(key, why),
                Deferred::SlowConsumer => self.close_slow_consumer(key, now),
            }
        }
        self.fanout.deferred = deferred;
    }

    /// `--slow-consumer close`: drop what is queued but the frame in flight,
    /// and send Close 1008 (which also takes it out of its room).
    fn close_slow_consumer(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !conn.proto.is_open() {
            return;
        }
        debug!("#{key}: slow consumer, closing");
        self.service.stats.slow_consumer_disconnects += 1;
        self.service.stats.count_close(code::POLICY_VIOLATION);
        if let Some(q) = &mut conn.out {
            q.truncate_to_front();
        }
        conn.proto.close(
            &self.settings,
            now,
            code::POLICY_VIOLATION,
            "slow consumer",
            &mut self.wbuf,
        );
        self.flush(key);
    }

    /// The one way a connection ends: leave its room, drop its deadline,
    /// and drop it (which closes the socket and, with `epoll`, removes it
    /// from the poll set).
    #[inline(never)]
    fn teardown(&mut self, key: usize, why: &str) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            self.memory.release(&conn);
            self.service.detach(key, &mut conn.route);
            self.timers.remove(key);
            self.service.stats.closed += 1;
            debug!("#{key} closed: {why} ({} bytes unsent)", conn.queued());
        }
    }
}

/// Where `payload` starts in the `n` bytes of input that start at address
/// `base`, if it lies wholly there with room for a `head`-byte header in
/// front of it. Those bytes in front are consumed and dead: the session has
/// read past them (they are at least this frame's own header, of which the
/// mask key alone is four bytes, more than a server's header is shorter
/// than a client's), and each event before this one was answered, by a copy
/// or a write, before it was read. A payload gathered from fragments lies
/// in the session's buffer instead, and a service's own reply anywhere.
#[inline(always)]
fn in_read_buffer(base: usize, n: usize, payload: &[u8], head: usize) -> Option<usize> {
    let at = (payload.as_ptr() as usize).checked_sub(base)?;
    (at >= head && at.checked_add(payload.len())? <= n).then_some(at)
}

/// The service's reply to a request head (the probe listener answers only
/// its two paths). Out of line, as is [`HttpParts::answer`]: once per HTTP
/// request, and kept apart from the loop over WebSocket messages.
#[inline(never)]
fn request_reply(key: usize, req: &Request, probes_only: bool, service: &mut Service, config: &Config) -> Reply {
    if probes_only && !is_probe(req.target()) {
        debug!("#{key}: {:?} {} on the probe listener", req.method, req.target());
        return Reply::Refuse(HttpError::new(404, "only /healthz and /metrics on this port"));
    }
    debug!("#{key}: {:?} {}", req.method, req.target());
    service.on_request(key, req, config)
}

/// What answering a request needs of the hub, borrowed apart from the read
/// buffer that the request came in.
struct HttpParts<'h, S> {
    conns: &'h mut Slab<Conn<S>>,
    service: &'h mut Service,
    config: &'h Config,
    settings: &'h Settings,
    wbuf: &'h mut Vec<u8>,
    timers: &'h Timers,
    memory: &'h Budget,
}

impl<S: Transport> HttpParts<'_, S> {
    /// Answers connection `key`'s request (or body) with the service's
    /// `reply`.
    #[inline(never)]
    fn answer(self, key: usize, now: u64, reply: Reply) {
        let HttpParts {
            conns,
            service,
            config,
            settings,
            wbuf,
            timers,
            memory,
        } = self;
        let metrics_body =
            (reply == Reply::Metrics).then(|| metrics::render(&snapshot(conns, service, timers, memory)));
        let conn = &mut conns[key];
        // Pipelined requests are answered while their output is under the
        // backpressure cap; the one that passes it closes the connection, so
        // a client that sends many requests and reads nothing cannot grow
        // our memory.
        let close = wbuf.len() + conn.queued() >= config.max_backpressure;
        let reply = match reply {
            Reply::ReadBody(len) if !memory.fits(len) => {
                service.stats.memory_refused_bodies += 1;
                Reply::Refuse(HttpError::new(503, "out of memory for request bodies; try again later"))
            }
            other => other,
        };
        match &reply {
            Reply::Upgrade { route, .. } => {
                conn.route = *route;
                // A room member or subscriber can be sent far more than it
                // sends (one publish, thousands of recipients): the kernel
                // keeps at most --send-lowat unsent for it, the rest waits
                // in our queue under the slow-consumer rules. Echo output
                // is the peer's own input, so echo sockets keep the
                // kernel's default (TCP_NOTSENT_LOWAT costs about 7 % per
                // small echo here).
                if matches!(route, Route::Room(_) | Route::PubSub(_)) && config.send_lowat > 0 {
                    conn.stream.limit_unsent(config.send_lowat);
                }
            }
            Reply::Refuse(e) => service.stats.count_http_error(e.status),
            _ => {}
        }
        let answer = to_answer(&reply, config, metrics_body.as_deref(), close);
        conn.proto.answer(settings, now, answer, wbuf);
        if config.deflate.is_some_and(|d| d.mode == Mode::Dedicated) {
            conn.proto.set_dedicated(config.deflate_level);
        }
    }
}

/// Whether a request target is one the probe listener (`--listen-plain`)
/// answers: `/healthz` or `/metrics`, with or without a query.
fn is_probe(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or_default();
    path == "/healthz" || path == "/metrics"
}

/// The protocol-level answer for a service's reply. `close`: end the
/// connection after a response.
fn to_answer<'r>(reply: &'r Reply, config: &'r Config, metrics_body: Option<&'r [u8]>, close: bool) -> Answer<'r> {
    match reply {
        Reply::Upgrade { protocol, deflate, .. } => Answer::Upgrade {
            protocol: protocol.and_then(|i| config.subprotocols.get(i)).map(String::as_str),
            deflate: *deflate,
        },
        Reply::Respond(page) => Answer::Respond(respond(page, close)),
        Reply::ReadBody(len) => Answer::ReadBody(*len),
        Reply::Refuse(e) => Answer::Refuse(*e),
        Reply::Metrics => Answer::Respond(Response {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics_body.unwrap_or_default(),
            headers: "",
            close,
        }),
    }
}

fn respond(page: &Page, close: bool) -> Response<'_> {
    Response {
        status: page.status,
        content_type: page.content_type,
        body: &page.body,
        headers: "",
        close,
    }
}

fn snapshot<'a, S>(conns: &Slab<Conn<S>>, service: &'a Service, timers: &Timers, memory: &Budget) -> Snapshot<'a> {
    Snapshot {
        memory_used: memory.used,
        memory_limit: memory.limit,
        bus: service
            .remote
            .as_ref()
            .map(|r| (r.bus.is_up(), &r.bus.stats, r.bus.topics())),
        stats: &service.stats,
        connections: conns.len(),
        queued_bytes: conns.iter().map(|(_, c)| c.out.as_ref().map_or(0, |q| q.len())).sum(),
        topics: service.topics.len(),
        subscriptions: service.topics.subscriptions(),
        timer_entries: timers.len(),
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
