//! The sans-IO protocol core: bytes (and, where time matters, `now`) in,
//! events and bytes out. No sockets, no clocks, no threads.
//!
//! - [`http`]: incremental reader of HTTP/1.1 message heads.
//! - [`handshake`]: the opening handshake, RFC 6455 §4.
//! - [`frame`]: the frame header codec, §5.2.
//! - [`mask`]: payload masking, §5.3.
//! - [`utf8`]: incremental UTF-8 validation, §8.1.
//! - [`close`]: close codes and bodies, §5.5.1 and §7.4.
//! - [`session`]: the connection state machine after the handshake.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod session;
pub mod utf8;

pub use session::{Event, Limits, MessageKind, ProtocolError, Role, Session};
