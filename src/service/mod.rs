//! What the server does with requests and messages. Services never touch
//! sockets: the loop asks them where a request goes and what a message
//! means, and applies the answer.

pub mod broadcast;
pub mod echo;

use crate::config::Config;
use crate::proto::handshake::{Key, Method, Request};
use crate::proto::http::HttpError;
use crate::proto::MessageKind;
use broadcast::RoomId;

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
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
    Echo,
    /// Member of `room`.
    Broadcast {
        room: RoomId,
    },
    /// Was a room member; left it because the connection is closing.
    Detached,
}

/// What the loop should do in answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    None,
    /// Send this message back to the sender.
    Send(MessageKind, &'a [u8]),
    /// Deliver this message to the room.
    Broadcast(RoomId, MessageKind, &'a [u8]),
    /// Start the closing handshake with this code and reason.
    Close(u16, &'static str),
}

/// Decides what a request head is asking for, or the HTTP error to answer
/// with. Unknown paths are 404 whatever the method; then 405 for a method
/// the path does not take; then the checks of the request itself.
pub fn route(req: &Request, config: &Config) -> Result<Target, HttpError> {
    let path = req.path();
    // Only a publish has a body. A body on anything else would be read as
    // the next request on this connection (request smuggling through a
    // proxy that reuses connections): refuse it.
    let has_body = req.transfer_encoding || req.content_length.is_some_and(|n| n > 0);
    if has_body && !(req.method == Method::Post && path.starts_with("/broadcast")) {
        return Err(HttpError::bad("unexpected request body"));
    }
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    // code to any HTTP/1.1 request message that lacks a Host header field."
    if req.minor_version >= 1 && !req.host {
        return Err(HttpError::bad("missing Host header"));
    }
    let get_only = |target| {
        if matches!(req.method, Method::Get | Method::Head) {
            Ok(target)
        } else {
            Err(HttpError::new(405, "this endpoint takes GET"))
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
                return Err(HttpError::new(405, "WebSocket endpoints take GET"));
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
        Method::Post => {
            if let Some(token) = &config.publish_token {
                let ok = req
                    .authorization
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .is_some_and(|t| t.trim() == token);
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
        _ => Err(HttpError::new(
            405,
            "broadcast endpoints take GET (WebSocket) or POST (publish)",
        )),
    }
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

/// Hands a complete message to the connection's service.
pub fn on_message(route: Route, kind: MessageKind, payload: &[u8]) -> Command<'_> {
    match route {
        Route::Echo => echo::on_message(kind, payload),
        Route::Broadcast { room } => Command::Broadcast(room, kind, payload),
        Route::Detached => Command::None,
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
