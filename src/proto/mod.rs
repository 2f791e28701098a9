//! The sans-IO protocol core: bytes (and, where time matters, `now`) in,
//! events and bytes out. No sockets, no clocks, no threads.
//!
//! - [`http`]: incremental reader of HTTP/1.1 message heads.
//! - [`handshake`]: the opening handshake, RFC 6455 §4.
//! - [`frame`]: the frame header codec, §5.2.
//! - [`mask`]: payload masking, §5.3.
//! - [`utf8`]: incremental UTF-8 validation, §8.1.
//! - [`close`]: close codes and bodies, §5.5.1 and §7.4.
//! - [`session`]: the WebSocket state machine after the handshake.
//! - [`conn`]: one connection's whole life: HTTP requests, the upgrade,
//!   the session, closing, and its deadlines.
//! - [`deflate`]: permessage-deflate, RFC 7692.
//! - [`pubsub`]: the topics protocol of `/pubsub`.

pub mod close;
pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod pubsub;
pub mod session;
pub mod utf8;

pub use session::{Event, Limits, MessageKind, ProtocolError, Role, Session};
