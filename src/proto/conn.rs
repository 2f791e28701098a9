//! One connection's whole life, sans-IO: the HTTP/1.1 requests it carries,
//! the WebSocket session it may become, how it ends, and its deadlines.
//!
//! In the manner of `quinn-proto`, a [`Connection`] is a deterministic state
//! machine. The caller feeds it what happened, with the time:
//! [`handle_input`](Connection::handle_input) (bytes read),
//! [`handle_eof`](Connection::handle_eof) (the peer's FIN),
//! [`handle_flushed`](Connection::handle_flushed) (every queued byte was
//! written), [`handle_timeout`](Connection::handle_timeout) (a deadline
//! passed); it takes [`Event`]s out, answers each request with
//! [`answer`](Connection::answer), and asks [`poll_timeout`](Connection::poll_timeout)
//! when the connection next needs the clock. What the connection sends is
//! appended to the caller's output buffer. Nothing here reads a socket or a
//! clock, so every timeout and phase is tested on a virtual clock
//! (`src/net/tests.rs` wires a client and this server together without
//! sockets).
//!
//! Times are milliseconds on the caller's clock.
//!
//! ```text
//!            request head            Answer::Upgrade
//!  accept ──► Http ─────► (Routing) ─────────────────► Open ──────────┐
//!             ▲  │ Answer::ReadBody ─► body ─► (Routing)   │ our Close  │ peer's Close,
//!             │  │                                          ▼            │ failure
//!             └──┘ Answer::Respond, keep-alive          Closing ─────────┤
//!                  Refuse / Respond with close ────────────────────────► Flushing ─► Draining ─► Done
//! ```
//!
//! Ending (RFC 6455 §7.1.1): "The underlying TCP connection, in most normal
//! cases, SHOULD be closed first by the server". Once its last word (an
//! HTTP response with `Connection: close`, or the Close that completes the
//! closing handshake) is queued, a connection is `Flushing`; when the caller
//! has written all of it, it shuts down its sending side and keeps reading,
//! discarding, until the peer's FIN (`Draining`): closing a socket with
//! unread input would send a reset that can destroy the last frame before
//! the peer reads it. The close timeout bounds both.

use super::close::code;
use super::deflate::{Codec, Dedicated, InflateError, Params};
use super::frame::{self, Opcode};
use super::handshake::{self, Method, Request, RequestParser};
use super::http::{HeadLimits, HttpError, Progress};
use super::session::{Limits, MessageKind, Payload, ProtocolError, Received, Session, Whole};

/// Timeouts and limits of every connection (the loop holds one copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// WebSocket frame and message limits.
    pub limits: Limits,
    /// Request head limits.
    pub head: HeadLimits,
    /// A whole HTTP request (head and body) must arrive within this.
    pub handshake_timeout: u64,
    /// Silence after which an open WebSocket is pinged.
    pub ping_interval: u64,
    /// Silence after which it is closed with 1001.
    pub idle_timeout: u64,
    /// How long an ending connection waits for the peer (its Close, or its
    /// FIN after our last word).
    pub close_timeout: u64,
    /// How long a message split across reads may go without growing before
    /// the connection is closed (1008): a peer that starts a large message
    /// and stalls must not hold its buffer forever.
    pub message_timeout: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            head: HeadLimits {
                max_size: 8 << 10,
                max_fields: 100,
            },
            handshake_timeout: 10_000,
            ping_interval: 30_000,
            idle_timeout: 60_000,
            close_timeout: 5_000,
            message_timeout: 30_000,
        }
    }
}

/// What the peer did, for the caller to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A request head is complete. The caller must [`answer`](Connection::answer)
    /// it before feeding more input.
    Request(&'a Request),
    /// The body of a request answered with [`Answer::ReadBody`] is complete;
    /// answer it with a response.
    Body(&'a Request, &'a [u8]),
    /// A complete WebSocket message. It only ever comes while the session is
    /// open, so the caller may always answer it.
    Message(MessageKind, &'a [u8]),
    /// The peer's Close, with its status code, completed the closing
    /// handshake (our answering Close is queued if we had not sent one,
    /// §5.5.1).
    Closed { code: Option<u16> },
    /// We failed the WebSocket connection (§7.1.7); a Close with the code is
    /// queued.
    Failed(ProtocolError),
    /// We refused an HTTP request; the error response is queued.
    Refused(HttpError),
}

/// The caller's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'r> {
    /// Complete the WebSocket handshake (101, §4.2.2) with the request's key,
    /// naming the subprotocol the server selected, if any, and with
    /// permessage-deflate if it was negotiated (RFC 7692).
    Upgrade {
        protocol: Option<&'r str>,
        deflate: Option<Params>,
    },
    /// A complete response (only its head for a HEAD request).
    Respond(Response<'r>),
    /// Read a body of this many bytes, then hand it out as [`Event::Body`].
    ReadBody(usize),
    /// An error response; the connection then ends.
    Refuse(HttpError),
}

/// A plain HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'r> {
    pub status: u16,
    pub content_type: &'r str,
    pub body: &'r [u8],
    /// Extra header lines, each ending in CRLF.
    pub headers: &'r str,
    /// End the connection after this response even if the request allowed
    /// another (e.g. too much output is waiting already).
    pub close: bool,
}

/// What a passed deadline did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Not yet: the deadline had moved later (activity); ask `poll_timeout`
    /// again.
    Early,
    /// A request did not arrive in time: 408 is queued, or, if not one byte
    /// of it came, the connection is done.
    Request,
    /// The WebSocket peer was silent for the ping interval: a Ping is queued.
    Ping,
    /// ...and for the idle timeout: Close 1001 is queued.
    Idle,
    /// A message being gathered stopped growing for the message timeout:
    /// Close 1008 is queued and its buffer freed.
    Message,
    /// The peer did not finish closing in time: the connection is done.
    Close,
}

/// What to do now that every queued byte has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    Nothing,
    /// Shut down the sending side of the socket (our last word is out).
    ShutdownWrite,
    /// Close the socket: the connection is done.
    Close,
}

/// An HTTP request in progress, with its body.
#[derive(Debug, Default)]
struct HttpRequest {
    parser: RequestParser,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the head.
    Head,
    /// The head was handed out; waiting for the answer. `body_started`:
    /// input followed the head at once (a `100 Continue` is then too late).
    Routing { body_started: bool },
    /// Reading a body of this many bytes.
    Body(usize),
    /// The body was handed out; waiting for the answer.
    BodyRouting,
}

#[derive(Debug)]
enum State {
    /// HTTP/1.1 request/response, until an upgrade or the end. The deadline
    /// bounds the whole request, head and body.
    Http {
        req: Box<HttpRequest>,
        stage: Stage,
        deadline: u64,
    },
    /// WebSocket, data flowing both ways.
    Open {
        session: Session,
        last_active: u64,
        pinged: bool,
        /// permessage-deflate, if negotiated.
        deflate: Option<Params>,
        /// The connection's own codecs (Dedicated mode with context
        /// takeover); `None`: the loop's shared ones serve.
        dedicated: Option<Box<Dedicated>>,
    },
    /// We sent Close and wait for the peer's (§7.1.2).
    Closing { session: Session, deadline: u64 },
    /// Our last word is queued; `peer_gone`: its FIN already came.
    Flushing { deadline: u64, peer_gone: bool },
    /// Our sending side is shut; input is discarded until the FIN.
    Draining { deadline: u64 },
    /// Nothing more: drop the connection.
    Done,
}

/// One connection's protocol state (see the module documentation).
#[derive(Debug)]
pub struct Connection {
    state: State,
}

impl Connection {
    /// A connection just accepted at `now`: it expects a request head.
    pub fn new(settings: &Settings, now: u64) -> Self {
        Connection {
            state: State::Http {
                req: Box::default(),
                stage: Stage::Head,
                deadline: now.saturating_add(settings.handshake_timeout),
            },
        }
    }

    /// Whether WebSocket data may be sent (the session is open).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Open, not waiting for a Pong, and gathering no message: it holds no
    /// buffer, and its one deadline is the next ping's, `last_active` plus
    /// the ping interval, which activity only moves later. Input that
    /// leaves a quiet connection quiet needs no new deadline (the one set
    /// is earlier, and fires early: [`Expired::Early`]).
    #[inline]
    pub fn is_quiet(&self) -> bool {
        matches!(&self.state, State::Open { session, pinged: false, .. } if session.buffered() == 0)
    }

    /// Whether the connection is over and its socket should be closed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether its last word is queued or sent (nothing more will be said).
    pub fn is_ending(&self) -> bool {
        matches!(
            self.state,
            State::Flushing { .. } | State::Draining { .. } | State::Done
        )
    }

    /// Bytes held in buffers of the connection's own (beyond its record).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Http { req, .. } => req.body.capacity(),
            State::Open { session, .. } | State::Closing { session, .. } => session.buffered(),
            _ => 0,
        }
    }

    /// When the connection next needs [`handle_timeout`](Self::handle_timeout)
    /// (`None` once done). It may come early: activity moves an open
    /// session's deadline later without telling anyone.
    pub fn poll_timeout(&self, s: &Settings) -> Option<u64> {
        match &self.state {
            State::Http { deadline, .. }
            | State::Closing { deadline, .. }
            | State::Flushing { deadline, .. }
            | State::Draining { deadline } => Some(*deadline),
            State::Open { session, .. } => {
                let keepalive = self.keepalive_deadline(s).unwrap_or(u64::MAX);
                let message = session
                    .last_progress()
                    .map_or(u64::MAX, |at| at.saturating_add(s.message_timeout));
                Some(keepalive.min(message))
            }
            State::Done => None,
        }
    }

    /// When an open session next needs a ping, or is idle for too long.
    fn keepalive_deadline(&self, s: &Settings) -> Option<u64> {
        match &self.state {
            State::Open {
                last_active, pinged, ..
            } => Some(last_active.saturating_add(if *pinged { s.idle_timeout } else { s.ping_interval })),
            _ => None,
        }
    }

    /// Feeds input from `input[*pos..]`, advancing `*pos`, until an event or
    /// the end of the input (`None`, with `*pos == input.len()`). WebSocket
    /// payloads are unmasked in place; replies the protocols require are
    /// appended to `out`.
    #[inline]
    pub fn handle_input<'a>(
        &'a mut self,
        s: &Settings,
        now: u64,
        input: &'a mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        codec: &'a mut Codec,
    ) -> Option<Event<'a>> {
        if *pos == input.len() {
            if let State::Open { session, .. } | State::Closing { session, .. } = &mut self.state {
                // The input is used up (the call after the last event of a
                // read): all the session would do with none is this.
                session.release_delivered();
                session.note_progress(now);
                return None;
            }
        }
        if let State::Open {
            session,
            last_active,
            pinged,
            ..
        } = &mut self.state
        {
            // The common case, a whole message in one frame, without the
            // general loop.
            if let Some(r) = session.receive_whole(&s.limits, input, pos, out) {
                *last_active = now;
                *pinged = false;
                return match r {
                    Ok(Whole {
                        kind,
                        at: Payload::Input(start, end),
                        compressed: false,
                    }) => Some(Event::Message(kind, &input[start..end])),
                    Ok(w) => self.message_event(s, now, w.kind, w.at, w.compressed, input, out, codec),
                    Err(e) => {
                        self.end(s, now);
                        Some(Event::Failed(e))
                    }
                };
            }
        }
        self.handle_more_input(s, now, input, pos, out, codec)
    }

    /// [`handle_input`](Self::handle_input) but for a session at the end of
    /// its input. Out of line, as are `message_event` and `end`: a caller
    /// that inlines `handle_input` takes in its fast path only.
    #[inline(never)]
    fn handle_more_input<'a>(
        &'a mut self,
        s: &Settings,
        now: u64,
        input: &'a mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        codec: &'a mut Codec,
    ) -> Option<Event<'a>> {
        if let State::Open {
            last_active, pinged, ..
        } = &mut self.state
        {
            // Any input is a sign of life (§5.5.2: pings are for exactly
            // this, but data counts as well).
            *last_active = now;
            *pinged = false;
        }
        match self.state {
            State::Http { .. } => self.http_input(s, now, input, pos, out),
            State::Open { .. } | State::Closing { .. } => self.websocket_input(s, now, input, pos, out, codec),
            _ => {
                // Ending: input is read only to see the FIN.
                *pos = input.len();
                None
            }
        }
    }

    fn http_input<'a>(
        &'a mut self,
        s: &Settings,
        now: u64,
        input: &'a [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Option<Event<'a>> {
        let State::Http { req, stage, .. } = &mut self.state else {
            unreachable!("http_input is only called in the Http state")
        };
        match *stage {
            Stage::Head => match req.parser.feed(&s.head, &input[*pos..]) {
                Ok(Progress::Partial) => {
                    *pos = input.len();
                    None
                }
                Ok(Progress::Complete(n)) => {
                    *pos += n;
                    *stage = Stage::Routing {
                        body_started: *pos < input.len(),
                    };
                    let State::Http { req, .. } = &self.state else {
                        unreachable!()
                    };
                    Some(Event::Request(req.parser.request()))
                }
                Err(e) => {
                    let head_only = req.parser.request().method == Method::Head;
                    Some(self.refuse(s, now, e, head_only, out))
                }
            },
            Stage::Body(len) => {
                let take = (len - req.body.len()).min(input.len() - *pos);
                req.body.extend_from_slice(&input[*pos..*pos + take]);
                *pos += take;
                if req.body.len() < len {
                    return None;
                }
                *stage = Stage::BodyRouting;
                let State::Http { req, .. } = &self.state else {
                    unreachable!()
                };
                Some(Event::Body(req.parser.request(), &req.body))
            }
            // The caller fed input without answering: a bug on its side,
            // answered as one rather than with a panic.
            Stage::Routing { .. } | Stage::BodyRouting => {
                let e = HttpError::new(500, "request not answered");
                Some(self.refuse(s, now, e, false, out))
            }
        }
    }

    fn websocket_input<'a>(
        &'a mut self,
        s: &Settings,
        now: u64,
        input: &'a mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        codec: &'a mut Codec,
    ) -> Option<Event<'a>> {
        // Items are located, not borrowed, while looping over the ones that
        // are handled here (control frames, data after our Close), so that
        // only the one handed on borrows the input or the session.
        let (kind, at, compressed) = loop {
            let (session, open) = match &mut self.state {
                State::Open { session, .. } => (session, true),
                State::Closing { session, .. } => (session, false),
                _ => unreachable!("websocket_input is only called with a session"),
            };
            match session.receive(&s.limits, input, pos, out) {
                Ok(None) => {
                    session.note_progress(now);
                    return None;
                }
                Ok(Some(Received::Message(kind, at))) if open => break (kind, at, false),
                Ok(Some(Received::Compressed(kind, at))) if open => break (kind, at, true),
                // After our Close the peer's data is read and dropped.
                Ok(Some(Received::Message(..) | Received::Compressed(..) | Received::Ping(_) | Received::Pong(_))) => {}
                Ok(Some(Received::Closed(code, _))) => {
                    self.end(s, now);
                    return Some(Event::Closed { code });
                }
                Err(e) => {
                    self.end(s, now);
                    return Some(Event::Failed(e));
                }
            }
        };
        self.message_event(s, now, kind, at, compressed, input, out, codec)
    }

    /// The event for a data message the open session located at `at`:
    /// inflated first if `compressed`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn message_event<'a>(
        &'a mut self,
        s: &Settings,
        now: u64,
        kind: MessageKind,
        at: Payload,
        compressed: bool,
        input: &'a [u8],
        out: &mut Vec<u8>,
        codec: &'a mut Codec,
    ) -> Option<Event<'a>> {
        if !compressed {
            let State::Open { session, .. } = &self.state else {
                unreachable!("a message is handed on only while open")
            };
            return Some(Event::Message(kind, session.payload(at, input)));
        }
        let State::Open { session, dedicated, .. } = &mut self.state else {
            unreachable!("a message is handed on only while open")
        };
        match inflate(session, dedicated, kind, at, input, s, codec) {
            Ok(()) => Some(Event::Message(kind, &codec.inflated)),
            Err((code, reason)) => {
                let e = session.fail_with(code, reason, out);
                self.end(s, now);
                Some(Event::Failed(e))
            }
        }
    }

    /// Our last word is queued: flush it, then end.
    #[inline(never)]
    fn end(&mut self, s: &Settings, now: u64) {
        self.state = State::Flushing {
            deadline: now.saturating_add(s.close_timeout),
            peer_gone: false,
        };
    }

    /// Queues the error response for `e` and ends the connection.
    fn refuse(&mut self, s: &Settings, now: u64, e: HttpError, head_only: bool, out: &mut Vec<u8>) -> Event<'static> {
        handshake::write_error_response(out, &e, head_only);
        self.end(s, now);
        Event::Refused(e)
    }

    /// Answers the request handed out by the last [`Event::Request`] or
    /// [`Event::Body`]. An answer at any other time is ignored.
    pub fn answer(&mut self, s: &Settings, now: u64, answer: Answer<'_>, out: &mut Vec<u8>) {
        let State::Http { req, stage, deadline } = &mut self.state else {
            return;
        };
        let body_started = match *stage {
            Stage::Routing { body_started } => body_started,
            Stage::BodyRouting => true,
            Stage::Head | Stage::Body(_) => return,
        };
        let request = req.parser.request();
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive();
        let key = request.key;
        let expect_continue = request.expect_continue;
        match answer {
            Answer::Upgrade { protocol, deflate } => {
                let Some(key) = key else {
                    self.refuse(s, now, HttpError::bad("missing Sec-WebSocket-Key"), head_only, out);
                    return;
                };
                let extensions = deflate.map(|p| p.response());
                if let Err(e) =
                    handshake::write_accept_with(out, &key, protocol, extensions.as_ref().map(|e| e.as_str()))
                {
                    self.refuse(s, now, e, head_only, out);
                    return;
                }
                let mut session = Session::server();
                if deflate.is_some() {
                    session.allow_compression();
                }
                self.state = State::Open {
                    session,
                    last_active: now,
                    pinged: false,
                    deflate,
                    dedicated: None,
                };
            }
            Answer::ReadBody(len) => {
                // RFC 9110 §10.1.1: a client that sent `Expect: 100-continue`
                // waits for this before sending the body; once the body has
                // started it is pointless ("MUST NOT send a 100 (Continue)
                // response if [...] already received some or all of the
                // content").
                if expect_continue && !body_started && len > 0 {
                    handshake::write_continue(out);
                }
                // The whole body is reserved at once, so that the memory
                // budget sees it before it arrives.
                req.body = Vec::with_capacity(len);
                *stage = if len == 0 { Stage::BodyRouting } else { Stage::Body(len) };
            }
            Answer::Respond(r) => {
                let close = r.close || !keep_alive;
                handshake::write_head(out, r.status, r.headers, r.content_type, r.body.len(), close);
                if !head_only {
                    out.extend_from_slice(r.body);
                }
                if close {
                    self.end(s, now);
                } else {
                    // The next request on this connection, with a deadline
                    // of its own.
                    **req = HttpRequest::default();
                    *stage = Stage::Head;
                    *deadline = now.saturating_add(s.handshake_timeout);
                }
            }
            Answer::Refuse(e) => {
                self.refuse(s, now, e, head_only, out);
            }
        }
    }

    /// The peer shut down its sending side (a read returned 0). `unsent`:
    /// output is still queued for it, which is worth finishing: a
    /// half-closed peer may still read (a request sent with its FIN expects
    /// its answer).
    pub fn handle_eof(&mut self, s: &Settings, now: u64, unsent: bool) {
        self.state = match self.state {
            State::Flushing { deadline, .. } if unsent => State::Flushing {
                deadline,
                peer_gone: true,
            },
            State::Done => State::Done,
            _ if unsent => State::Flushing {
                deadline: now.saturating_add(s.close_timeout),
                peer_gone: true,
            },
            _ => State::Done,
        };
    }

    /// Every byte queued for the connection has been written.
    pub fn handle_flushed(&mut self) -> Flushed {
        match self.state {
            State::Flushing {
                deadline,
                peer_gone: false,
            } => {
                self.state = State::Draining { deadline };
                Flushed::ShutdownWrite
            }
            State::Flushing { peer_gone: true, .. } => {
                self.state = State::Done;
                Flushed::Close
            }
            _ => Flushed::Nothing,
        }
    }

    /// A deadline passed (`now` is at or after [`poll_timeout`](Self::poll_timeout)).
    pub fn handle_timeout(&mut self, s: &Settings, now: u64, out: &mut Vec<u8>) -> Expired {
        match self.poll_timeout(s) {
            Some(at) if at <= now => {}
            _ => return Expired::Early,
        }
        match &mut self.state {
            State::Http { req, .. } => {
                if req.parser.started() {
                    // Slowloris: RFC 9110 §15.5.9, 408 Request Timeout.
                    let head_only = req.parser.request().method == Method::Head;
                    let e = HttpError::new(408, "request not completed in time");
                    handshake::write_error_response(out, &e, head_only);
                    self.end(s, now);
                } else {
                    // Nothing came (a pre-connect, or a kept-alive connection
                    // that went quiet): nobody to answer.
                    self.state = State::Done;
                }
                Expired::Request
            }
            State::Open { session, .. } => {
                let message_due = session
                    .last_progress()
                    .is_some_and(|at| at.saturating_add(s.message_timeout) <= now);
                let keepalive_due = self.keepalive_deadline(s).is_some_and(|at| at <= now);
                let State::Open { session, pinged, .. } = &mut self.state else {
                    unreachable!()
                };
                if keepalive_due && !*pinged {
                    session.ping(b"", out);
                    *pinged = true;
                    Expired::Ping
                } else if keepalive_due {
                    self.close(s, now, code::GOING_AWAY, "idle timeout", out);
                    Expired::Idle
                } else if message_due {
                    self.close(s, now, code::POLICY_VIOLATION, "message not completed in time", out);
                    Expired::Message
                } else {
                    Expired::Early
                }
            }
            State::Closing { .. } | State::Flushing { .. } | State::Draining { .. } => {
                self.state = State::Done;
                Expired::Close
            }
            State::Done => Expired::Early,
        }
    }

    /// Whether messages sent on this connection may be compressed: an open
    /// session with permessage-deflate negotiated. Those not compressed can
    /// be sent from anywhere.
    #[inline]
    pub fn compresses(&self) -> bool {
        matches!(self.state, State::Open { deflate: Some(_), .. })
    }

    /// The permessage-deflate parameters of an open session, if negotiated.
    pub fn deflate(&self) -> Option<Params> {
        match &self.state {
            State::Open { deflate, .. } => *deflate,
            _ => None,
        }
    }

    /// Gives an open session its own codecs (Dedicated mode): the directions
    /// with context takeover need them.
    pub fn set_dedicated(&mut self, level: u32) {
        if let State::Open {
            deflate: Some(p),
            dedicated,
            ..
        } = &mut self.state
        {
            *dedicated = Dedicated::for_params(p, level);
        }
    }

    /// Compresses the message frame the caller just appended to `out` at
    /// `at` (one unmasked data frame, FIN set), if permessage-deflate was
    /// negotiated and the message is worth it (`--deflate-threshold`): the
    /// frame is rewritten with RSV1 set and the compressed payload (RFC 7692
    /// §7.2.1). Compression that fails leaves the frame as it was
    /// (uncompressed is always allowed, §6).
    #[inline]
    pub fn compress_tail(&mut self, codec: &mut Codec, out: &mut Vec<u8>, at: usize) {
        if self.compresses() {
            self.compress_frame(codec, out, at);
        }
    }

    /// [`compress_tail`](Self::compress_tail) once permessage-deflate is known
    /// to be negotiated.
    fn compress_frame(&mut self, codec: &mut Codec, out: &mut Vec<u8>, at: usize) {
        let State::Open {
            deflate: Some(params),
            dedicated,
            ..
        } = &mut self.state
        else {
            return;
        };
        let Ok(frame::Decoded::Complete(h, n)) = frame::decode(&out[at..]) else {
            return;
        };
        let payload = &out[at + n..];
        if !codec.config.compresses(payload.len()) {
            return;
        }
        let Some(opcode) = Opcode::from_u8(h.opcode) else {
            return;
        };
        let compressor = match dedicated.as_mut().and_then(|d| d.compressor.as_mut()) {
            Some(c) => c,
            None => codec.shared.compressor(params),
        };
        codec.deflated.clear();
        if compressor
            .compress(payload, params.server_no_context_takeover, &mut codec.deflated)
            .is_err()
        {
            return;
        }
        out.truncate(at);
        frame::write_compressed(out, opcode, &codec.deflated);
    }

    /// Starts the closing handshake (§7.1.2) with `code` and `reason`, if the
    /// session is open; a connection still in HTTP ends at once (it has
    /// nothing in flight worth saying).
    pub fn close(&mut self, s: &Settings, now: u64, code: u16, reason: &str, out: &mut Vec<u8>) {
        self.state = match std::mem::replace(&mut self.state, State::Done) {
            State::Open { mut session, .. } => {
                session.close(code, reason, out);
                State::Closing {
                    session,
                    deadline: now.saturating_add(s.close_timeout),
                }
            }
            State::Http { .. } => State::Done,
            other => other,
        };
    }
}

/// Inflates a compressed message (RFC 7692 §7.2.2) into `codec.inflated`:
/// with the connection's own decompressor if the client keeps its context,
/// else the loop's shared one. The decompressed length is bounded by the
/// message limit however small the input (decompression bombs, 1009);
/// corrupt data is 1007, and so is text that does not inflate to UTF-8
/// (RFC 6455 §8.1 is about the message, not its compressed form).
fn inflate(
    session: &Session,
    dedicated: &mut Option<Box<Dedicated>>,
    kind: MessageKind,
    at: Payload,
    input: &[u8],
    s: &Settings,
    codec: &mut Codec,
) -> Result<(), (u16, &'static str)> {
    let max_len = usize::try_from(s.limits.max_message).unwrap_or(usize::MAX);
    let compressed = session.payload(at, input);
    let (decompressor, reset) = match dedicated.as_mut().and_then(|d| d.decompressor.as_mut()) {
        Some(d) => (d, false),
        None => (codec.shared.decompressor(), true),
    };
    codec.inflated.clear();
    match decompressor.decompress(compressed, reset, max_len, &mut codec.inflated) {
        Ok(_) => {}
        Err(InflateError::TooLarge) => return Err((code::MESSAGE_TOO_BIG, "message exceeds the size limit")),
        Err(InflateError::Corrupt) => return Err((code::INVALID_PAYLOAD, "compressed data is corrupt")),
    }
    if kind == MessageKind::Text && std::str::from_utf8(&codec.inflated).is_err() {
        return Err((code::INVALID_PAYLOAD, "invalid UTF-8 in text message"));
    }
    Ok(())
}
