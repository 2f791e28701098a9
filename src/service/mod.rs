//! What the server does with requests and messages. Services never touch
//! sockets: the loop hands them each request head, request body and
//! message, and applies the answer ([`Reply`], [`Command`]).

pub mod broadcast;
pub mod echo;
pub mod metrics;

use crate::config::Config;
use crate::proto::handshake::{self, Key, Method, Request};
use crate::proto::http::{self, HttpError};
use crate::proto::MessageKind;
use broadcast::{RoomId, Rooms};
use metrics::Stats;
use std::borrow::Cow;

/// The chat page served at `GET /`.
const CHAT_PAGE: &str = include_str!("../../web/chat.html");

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A WebSocket upgrade to echo.
    Echo(Key),
    /// A WebSocket upgrade joining a broadcast room; with `Some(name)`, the
    /// member asked for presence notices (`?presence=1&name=...`).
    Join(Key, String, Option<String>),
    /// `GET /` without an upgrade: the chat page.
    Page,
    /// `POST /broadcast/{room}`: deliver the body (of this many bytes) to
    /// the room's members.
    Publish {
        room: String,
        len: usize,
        kind: Option<MessageKind>,
    },
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
}

/// The service an open WebSocket connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// None (yet, or any more: a closing connection leaves its room).
    None,
    Echo,
    /// Member of this room.
    Room(RoomId),
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Complete the WebSocket handshake; the connection then belongs to
    /// `route`. `protocol`: the selected subprotocol, an index into
    /// [`Config::subprotocols`].
    Upgrade { route: Route, protocol: Option<usize> },
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
}

/// The state of every service: rooms and the counters.
#[derive(Debug, Default)]
pub struct Service {
    pub rooms: Rooms,
    pub stats: Stats,
}

impl Service {
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
        match target {
            Target::Echo(_) => Reply::Upgrade {
                route: Route::Echo,
                protocol: protocol(),
            },
            Target::Join(_, name, presence) => {
                let room = self.rooms.join(&name, key, presence.as_deref());
                Reply::Upgrade {
                    route: Route::Room(room),
                    protocol: protocol(),
                }
            }
            Target::Page => Reply::Respond(Page {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: Cow::Borrowed(CHAT_PAGE.as_bytes()),
            }),
            Target::Health => Reply::Respond(Page {
                status: 200,
                content_type: "text/plain",
                body: Cow::Borrowed(b"ok\n"),
            }),
            Target::Metrics => Reply::Metrics,
            Target::Publish { len, .. } => Reply::ReadBody(len),
        }
    }

    /// Answers a request body (an HTTP publish).
    pub fn on_body(&mut self, req: &Request, body: &[u8], config: &Config) -> Reply {
        let Ok(Target::Publish { room, kind, .. }) = route(req, config) else {
            return Reply::Refuse(HttpError::new(500, "body without a publish"));
        };
        let valid_text = std::str::from_utf8(body).is_ok();
        let kind = kind.unwrap_or(if valid_text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        });
        if kind == MessageKind::Text && !valid_text {
            return Reply::Refuse(HttpError::bad("text body is not UTF-8"));
        }
        let recipients = match self.rooms.find(&room) {
            Some(id) => self.rooms.publish(id, None, false, kind, body),
            None => 0,
        };
        self.stats.http_publishes += 1;
        self.stats.broadcasts += 1;
        self.stats.deliveries += recipients as u64;
        Reply::Respond(Page {
            status: 202,
            content_type: "application/json",
            body: Cow::Owned(format!("{{\"recipients\":{recipients}}}\n").into_bytes()),
        })
    }

    /// Hands a complete message from connection `key` to its service.
    pub fn on_message<'p>(
        &mut self,
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
            Route::Room(room) => {
                let to_sender = config.broadcast_to_sender;
                let n = self.rooms.publish(room, Some(key), to_sender, kind, payload);
                self.stats.broadcasts += 1;
                self.stats.deliveries += n as u64;
                Command::None
            }
            Route::None => Command::None,
        }
    }

    /// Connection `key` stops taking part in its route (it is closing or
    /// gone): the one place a member leaves its room.
    pub fn detach(&mut self, key: usize, route: &mut Route) {
        if let Route::Room(room) = *route {
            self.rooms.leave(room, key);
        }
        *route = Route::None;
    }
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
    if has_body && !(req.method == Method::Post && path.starts_with("/broadcast")) {
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
        "/metrics" => return get_only(Target::Metrics),
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
    let Some(room) = broadcast::room_name(path) else {
        return Err(HttpError::new(404, "no such endpoint; try /echo or /broadcast/{room}"));
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

/// `POST /broadcast/{room}`: the checks of an HTTP publish.
fn route_publish(req: &Request, config: &Config, room: String) -> Result<Target, HttpError> {
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
    if req.transfer_encoding {
        return Err(HttpError::new(411, "send the body with a Content-Length, not chunked"));
    }
    let Some(len) = req.content_length else {
        return Err(HttpError::new(411, "Content-Length required"));
    };
    if len > config.limits.max_message {
        return Err(HttpError::new(413, "body larger than the maximum message size"));
    }
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
    Ok(Target::Publish {
        room,
        len: len as usize,
        kind,
    })
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
