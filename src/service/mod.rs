//! What the server does with requests and messages. Services never touch
//! sockets: the loop hands them each request head, request body and
//! message, and applies the answer ([`Reply`], [`Command`]).
//!
//! - echo (`/`, `/echo`);
//! - rooms (`/broadcast/{room}`) and `/pubsub`, both on [`topics`];
//! - HTTP publish (`POST /broadcast/{topic}`, `POST /pubsub` for a batch),
//!   the chat page (`GET /`), its client module (`GET /wsloop.js`), health
//!   and [`metrics`].

pub mod bus;
pub mod echo;
pub mod metrics;
mod pubsub;
pub mod topics;

use crate::config::Config;
use crate::proto::deflate::{self, Params};
use crate::proto::handshake::{self, Key, Method, Request};
use crate::proto::http::{self, HttpError};
use crate::proto::MessageKind;
use metrics::Stats;
use std::borrow::Cow;
use topics::{Message, TopicId, Topics};

/// The chat page served at `GET /`.
const CHAT_PAGE: &str = include_str!("../../web/chat.html");
/// The browser client of the topics protocol, served at `GET /wsloop.js`.
const CLIENT_MODULE: &str = include_str!("../../web/wsloop.js");

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A WebSocket upgrade to echo.
    Echo(Key),
    /// A WebSocket upgrade joining a broadcast room; with `Some(name)`, the
    /// member asked for presence notices (`?presence=1&name=...`).
    Join(Key, String, Option<String>),
    /// A WebSocket upgrade to `/pubsub`.
    PubSub(Key),
    /// `GET /` without an upgrade: the chat page.
    Page,
    /// `GET /wsloop.js`.
    ClientModule,
    /// `POST /broadcast/{topic}`: deliver the body (of this many bytes) to
    /// the topic's subscribers.
    Publish {
        topic: String,
        len: usize,
        kind: Option<MessageKind>,
    },
    /// `POST /pubsub`: a JSON array of publish requests (of this many bytes).
    PublishBatch { len: usize },
    /// `GET /healthz`: liveness.
    Health,
    /// `GET /readyz`: readiness (503 while a configured bus is down).
    Ready,
    /// `GET /metrics`.
    Metrics,
}

/// The service an open WebSocket connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// None (yet, or any more: a closing connection leaves its room).
    None,
    Echo,
    /// Member of this room (the topic it publishes to).
    Room(TopicId),
    /// A `/pubsub` connection (its subscriptions are in [`Topics`]), with
    /// the flags its subscriptions get (`topics::flags`).
    PubSub(u8),
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Complete the WebSocket handshake; the connection then belongs to
    /// `route`. `protocol`: the selected subprotocol, an index into
    /// [`Config::subprotocols`]; `deflate`: permessage-deflate, if an offer
    /// was accepted.
    Upgrade {
        route: Route,
        protocol: Option<usize>,
        deflate: Option<Params>,
    },
    /// A complete response.
    Respond(Page),
    /// Read a body of this many bytes and hand it to [`Service::on_body`].
    ReadBody(usize),
    /// Refuse the request with this error.
    Refuse(HttpError),
    /// The metrics page: only the loop can take the snapshot it renders
    /// ([`metrics::render`]).
    Metrics,
}

/// A plain HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
}

/// What the loop should do in answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    None,
    /// Send this message back to the sender.
    Send(MessageKind, &'a [u8]),
    /// Start the closing handshake with this code and reason.
    Close(u16, &'static str),
}

/// The state of every service: topics, the bus to other nodes (if any),
/// and the counters.
#[derive(Debug, Default)]
pub struct Service {
    pub topics: Topics,
    pub stats: Stats,
    /// With `--redis`: the other nodes.
    pub remote: Option<Box<bus::Remote>>,
    /// The answer to the last `/pubsub` request (reused).
    reply: Vec<u8>,
}

impl Service {
    /// Topics span the nodes on `bus`.
    pub fn with_bus(bus: crate::bus::Bus) -> Self {
        let mut s = Service::default();
        s.topics.bus_changes = Some(Vec::new());
        s.topics.bus_presence = Some(Vec::new());
        s.remote = Some(Box::new(bus::Remote::new(bus)));
        s
    }

    /// A message published on this node, delivered locally already: to the
    /// other nodes too.
    fn send_to_other_nodes(&mut self, topic: &str, message: &Message<'_>) {
        if let Some(r) = &mut self.remote {
            r.publish(topic, message);
        }
    }

    /// Whether the bus (if configured) is up: `/readyz`.
    pub fn ready(&self) -> bool {
        self.remote.as_ref().is_none_or(|r| r.bus.is_up())
    }

    /// Answers a request head from connection `key`. A WebSocket that joins
    /// a room is a member from here on.
    pub fn on_request(&mut self, key: usize, req: &Request, config: &Config) -> Reply {
        let target = match route(req, config) {
            Ok(t) => t,
            Err(e) => return Reply::Refuse(e),
        };
        // RFC 6455 §4.2.2 step 5.5: the first of the server's subprotocols
        // that the client offered; none if no offer matches (a browser that
        // asked for one then fails the connection itself).
        let protocol = || {
            let chosen = handshake::select_subprotocol(req, &config.subprotocols)?;
            config.subprotocols.iter().position(|p| p == chosen)
        };
        // RFC 7692: the first acceptable permessage-deflate offer, if any.
        let deflate = config
            .deflate
            .and_then(|c| deflate::negotiate(&c, req.extension_lines()).ok());
        // Broadcasts go out compressed once, by the loop's compressor
        // (window 15, no context takeover), to those it suits.
        let shared = deflate.is_some_and(|p| p.server_no_context_takeover && p.server_max_window_bits == 15);
        let form = if shared { topics::flags::DEFLATE } else { 0 };
        let upgrade = |route| Reply::Upgrade {
            route,
            protocol: protocol(),
            deflate,
        };
        match target {
            Target::Echo(_) => upgrade(Route::Echo),
            Target::PubSub(_) => upgrade(Route::PubSub(topics::flags::ENVELOPE | form)),
            Target::Join(_, name, presence) => match self.topics.join(key as u32, &name, presence.as_deref(), form) {
                Ok(room) => upgrade(Route::Room(room)),
                Err(_) => Reply::Refuse(HttpError::new(500, "cannot join the room")),
            },
            Target::Page => page(200, "text/html; charset=utf-8", CHAT_PAGE.as_bytes()),
            Target::ClientModule => page(200, "text/javascript; charset=utf-8", CLIENT_MODULE.as_bytes()),
            Target::Health => page(200, "text/plain", b"ok\n"),
            Target::Ready if self.ready() => page(200, "text/plain", b"ready\n"),
            Target::Ready => Reply::Refuse(HttpError::new(503, "the bus to the other nodes is down")),
            Target::Metrics => Reply::Metrics,
            Target::Publish { len, .. } | Target::PublishBatch { len } => Reply::ReadBody(len),
        }
    }

    /// Answers a request body (an HTTP publish).
    #[inline(never)]
    pub fn on_body(&mut self, req: &Request, body: &[u8], config: &Config) -> Reply {
        let published = match route(req, config) {
            Ok(Target::Publish { topic, kind, .. }) => self.publish_body(&topic, kind, body),
            Ok(Target::PublishBatch { .. }) => pubsub::publish_batch(self, body, config),
            _ => Err(HttpError::new(500, "body without a publish")),
        };
        let body = match published {
            Ok((None, recipients)) => format!("{{\"recipients\":{recipients}}}\n"),
            Ok((Some(messages), recipients)) => format!("{{\"published\":{messages},\"recipients\":{recipients}}}\n"),
            Err(e) => return Reply::Refuse(e),
        };
        Reply::Respond(Page {
            status: 202,
            content_type: "application/json",
            body: Cow::Owned(body.into_bytes()),
        })
    }

    /// `POST /broadcast/{topic}`: the body is one message, text if it is
    /// UTF-8 (or the Content-Type says so), else binary.
    fn publish_body(
        &mut self,
        topic: &str,
        kind: Option<MessageKind>,
        body: &[u8],
    ) -> Result<(Option<usize>, usize), HttpError> {
        let valid_text = std::str::from_utf8(body).is_ok();
        let kind = kind.unwrap_or(if valid_text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        });
        if kind == MessageKind::Text && !valid_text {
            return Err(HttpError::bad("text body is not UTF-8"));
        }
        let message = Message::Bare(kind, body);
        let recipients = match self.topics.find(topic) {
            Some(id) => self.topics.publish(id, None, false, message),
            None => 0,
        };
        self.send_to_other_nodes(topic, &message);
        self.count_publish(recipients);
        self.stats.http_publishes += 1;
        Ok((None, recipients))
    }

    fn count_publish(&mut self, recipients: usize) {
        self.stats.broadcasts += 1;
        self.stats.deliveries += recipients as u64;
    }

    /// Hands a complete message from connection `key` to its service.
    pub fn on_message<'p>(
        &'p mut self,
        key: usize,
        route: Route,
        kind: MessageKind,
        payload: &'p [u8],
        config: &Config,
    ) -> Command<'p> {
        self.stats.messages_in += 1;
        self.stats.bytes_in += payload.len() as u64;
        match route {
            Route::Echo => echo::on_message(kind, payload),
            route => self.on_published(key, route, kind, payload, config),
        }
    }

    /// [`on_message`](Self::on_message) but for a room or the topics
    /// protocol. Out of line: the loop's read path, which an echo takes
    /// per message, stays small.
    #[inline(never)]
    fn on_published<'p>(
        &'p mut self,
        key: usize,
        route: Route,
        kind: MessageKind,
        payload: &'p [u8],
        config: &Config,
    ) -> Command<'p> {
        match route {
            Route::Echo => echo::on_message(kind, payload),
            Route::Room(_) if !config.client_publish => {
                Command::Close(crate::proto::close::code::POLICY_VIOLATION, "publishing is not allowed")
            }
            Route::Room(room) => {
                let to_sender = config.broadcast_to_sender;
                let message = Message::Bare(kind, payload);
                let n = self.topics.publish(room, Some(key as u32), to_sender, message);
                if let (Some(r), Some(topic)) = (&mut self.remote, self.topics.get(room)) {
                    r.publish(&topic.name, &message);
                }
                self.count_publish(n);
                Command::None
            }
            Route::PubSub(flags) => pubsub::on_message(self, key as u32, flags, kind, payload, config),
            Route::None => Command::None,
        }
    }

    /// Connection `key` stops taking part in its route (it is closing or
    /// gone): the one place a member leaves its room or a subscriber its
    /// topics.
    pub fn detach(&mut self, key: usize, route: &mut Route) {
        if matches!(*route, Route::Room(_) | Route::PubSub(_)) {
            self.topics.unsubscribe_all(key as u32);
        }
        *route = Route::None;
    }
}

fn page(status: u16, content_type: &'static str, body: &'static [u8]) -> Reply {
    Reply::Respond(Page {
        status,
        content_type,
        body: Cow::Borrowed(body),
    })
}

/// Decides what a request head is asking for, or the HTTP error to answer
/// with. Unknown paths are 404 whatever the method; then 405 for a method
/// the path does not take; then the checks of the request itself.
pub(crate) fn route(req: &Request, config: &Config) -> Result<Target, HttpError> {
    let path = req.path();
    // Only a publish has a body. A body on anything else would be read as
    // the next request on this connection (request smuggling through a
    // proxy that reuses connections): refuse it.
    let has_body = req.transfer_encoding || req.content_length.is_some_and(|n| n > 0);
    let publish_path = path.starts_with("/broadcast") || path == "/pubsub";
    if has_body && !(req.method == Method::Post && publish_path) {
        return Err(HttpError::bad("unexpected request body"));
    }
    // (A missing Host in HTTP/1.1 is refused by the parser, RFC 9112 §3.2.)
    let get_only = |target| {
        if matches!(req.method, Method::Get | Method::Head) {
            Ok(target)
        } else {
            Err(HttpError::new(405, "this endpoint takes GET").with_allow("GET, HEAD"))
        }
    };
    match path {
        "/healthz" => return get_only(Target::Health),
        "/readyz" => return get_only(Target::Ready),
        "/metrics" => return get_only(Target::Metrics),
        "/wsloop.js" => return get_only(Target::ClientModule),
        "/pubsub" => {
            return match req.method {
                Method::Get => {
                    let key = req.websocket_key()?;
                    check_origin(req, config)?;
                    Ok(Target::PubSub(key))
                }
                Method::Post => {
                    check_publisher(req, config)?;
                    Ok(Target::PublishBatch {
                        len: body_length(req, config)?,
                    })
                }
                _ => {
                    Err(HttpError::new(405, "/pubsub takes GET (WebSocket) or POST (publish)").with_allow("GET, POST"))
                }
            };
        }
        // `/` echoes too: it is what most benchmark clients and the classic
        // examples connect to.
        "/" if !req.wants_upgrade() => return get_only(Target::Page),
        "/" | "/echo" => {
            if req.method != Method::Get {
                let allow = if path == "/" { "GET, HEAD" } else { "GET" };
                return Err(HttpError::new(405, "WebSocket endpoints take GET").with_allow(allow));
            }
            let key = req.websocket_key()?;
            check_origin(req, config)?;
            return Ok(Target::Echo(key));
        }
        _ => {}
    }
    let Some(room) = topics::room_name(path) else {
        return Err(HttpError::new(
            404,
            "no such endpoint; try /echo, /broadcast/{room} or /pubsub",
        ));
    };
    let room = room.map_err(HttpError::bad)?;
    match req.method {
        Method::Get => {
            let key = req.websocket_key()?;
            check_origin(req, config)?;
            Ok(Target::Join(key, room, presence(req.query())))
        }
        Method::Post => route_publish(req, config, room),
        _ => Err(
            HttpError::new(405, "broadcast endpoints take GET (WebSocket) or POST (publish)").with_allow("GET, POST"),
        ),
    }
}

/// `POST /broadcast/{topic}`: the checks of an HTTP publish.
fn route_publish(req: &Request, config: &Config, topic: String) -> Result<Target, HttpError> {
    check_publisher(req, config)?;
    let len = body_length(req, config)?;
    let kind = req.content_type.as_deref().and_then(|ct| {
        let ct = ct.to_ascii_lowercase();
        if ct.starts_with("text/") || ct.starts_with("application/json") {
            Some(MessageKind::Text)
        } else if ct.starts_with("application/octet-stream") {
            Some(MessageKind::Binary)
        } else {
            None
        }
    });
    Ok(Target::Publish { topic, len, kind })
}

/// Who may publish over HTTP: a page from an allowed origin (or no browser
/// at all), with the token if one is set.
fn check_publisher(req: &Request, config: &Config) -> Result<(), HttpError> {
    // A browser page from another origin may POST here too (a simple
    // cross-site request needs no preflight): with an Origin allowlist,
    // refuse it as for WebSockets.
    check_origin(req, config)?;
    if let Some(token) = &config.publish_token {
        // RFC 9110 §11.1: the scheme is case-insensitive. The token is
        // compared in constant time.
        let ok = req
            .authorization
            .as_deref()
            .and_then(http::bearer_token)
            .is_some_and(|t| http::token_matches(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(HttpError::new(401, "publishing needs Authorization: Bearer <token>"));
        }
    }
    Ok(())
}

/// The length of a publish body: a `Content-Length` (not chunked), within
/// the message size limit.
fn body_length(req: &Request, config: &Config) -> Result<usize, HttpError> {
    if req.transfer_encoding {
        return Err(HttpError::new(411, "send the body with a Content-Length, not chunked"));
    }
    let Some(len) = req.content_length else {
        return Err(HttpError::new(411, "Content-Length required"));
    };
    if len > config.limits.max_message {
        return Err(HttpError::new(413, "body larger than the maximum message size"));
    }
    Ok(len as usize)
}

/// Longest presence name kept, in bytes.
const MAX_NAME: usize = 64;

/// `presence=1` (and an optional `name=...`) in a join's query string.
fn presence(query: Option<&str>) -> Option<String> {
    let mut wanted = false;
    let mut name = String::new();
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "presence" => wanted = v == "1" || v == "true",
            "name" => {
                let v = v.replace('+', " ");
                name = percent_encoding::percent_decode_str(&v)
                    .decode_utf8_lossy()
                    .into_owned();
                let mut cut = name.len().min(MAX_NAME);
                while !name.is_char_boundary(cut) {
                    cut -= 1;
                }
                name.truncate(cut);
            }
            _ => {}
        }
    }
    wanted.then_some(name)
}

/// RFC 6455 §4.2.2 step 4 / §10.2: a server may refuse browsers from
/// other origins (403). Clients that send no `Origin` (not browsers) are
/// let through.
fn check_origin(req: &Request, config: &Config) -> Result<(), HttpError> {
    match &req.origin {
        Some(origin) if !config.allowed_origins.is_empty() && !config.allowed_origins.iter().any(|o| o == origin) => {
            Err(HttpError::new(403, "origin not allowed"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_query() {
        assert_eq!(presence(None), None);
        assert_eq!(presence(Some("name=x")), None);
        assert_eq!(presence(Some("presence=1")), Some(String::new()));
        assert_eq!(presence(Some("presence=1&name=Zo%C3%AB+B")), Some("Zoë B".into()));
        assert_eq!(
            presence(Some(&format!("presence=true&name={}", "é".repeat(40))))
                .unwrap()
                .len(),
            64
        );
    }
}
