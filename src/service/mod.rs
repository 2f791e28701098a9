//! What the server does with messages. Services never touch sockets: the
//! loop asks them to route a handshake and to react to a message, and
//! applies the [`Command`] they return.

pub mod echo;

use crate::proto::handshake::{Key, Method, Request};
use crate::proto::http::HttpError;
use crate::proto::MessageKind;

/// The service a WebSocket connection was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Echo,
}

/// What the loop should do in answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing.
    None,
    /// Send this message back to the sender.
    Send(MessageKind, &'a [u8]),
    /// Start the closing handshake with this code and reason.
    Close(u16, &'static str),
}

/// Decides what a request head is asking for: the route and the client's
/// key for an upgrade, or the HTTP error to answer with. Unknown paths are
/// 404 whatever the method; known ones take GET only (405).
pub fn route(req: &Request) -> Result<(Route, Key), HttpError> {
    let route = match req.path() {
        // `/` echoes too: it is what most benchmark clients and the classic
        // examples connect to.
        "/" | "/echo" => Route::Echo,
        _ => return Err(HttpError::new(404, "no such endpoint; try /echo")),
    };
    if req.method != Method::Get {
        return Err(HttpError::new(405, "WebSocket endpoints take GET"));
    }
    let key = req.websocket_key()?;
    Ok((route, key))
}

/// Hands a complete message to the connection's service.
pub fn on_message(route: Route, kind: MessageKind, payload: &[u8]) -> Command<'_> {
    match route {
        Route::Echo => echo::on_message(kind, payload),
    }
}
