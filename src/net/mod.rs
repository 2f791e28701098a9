//! The poll loop: the only code that touches sockets.
//!
//! - [`server`]: `mio`, the listener, accepting, signals, the loop itself.
//! - `hub`: the connections and what they share; dispatch of readiness to
//!   them and of their events to the service. Generic over the transport,
//!   so that `tests` drive it without sockets on a virtual clock.
//! - `conn`: one connection's record and its writes.
//! - `fanout`: room delivery.
//! - `io`: the lowest layer: the `Transport` trait, TLS failures in I/O
//!   errors, `write_some` (imports nothing of `net`).
//! - `outq`, `timers`, `transport`: the queue of unsent output, the deadline
//!   heap, and what a connection's bytes travel over (plain TCP or TLS).
//! - `tls`: the TLS configuration (certificate and key, reloaded on SIGHUP);
//!   `tls_server`: the server's TLS transport (rustls, unbuffered).

mod conn;
mod fanout;
mod hub;
mod io;
mod outq;
mod redis;
mod server;
mod timers;
mod tls;
mod tls_server;
mod transport;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

pub use io::write_some;
pub use io::Transport;
pub use server::{Server, CONNECTION_RECORD_BYTES};
pub use tls::{TlsConfigError, TlsFiles};
pub use transport::TlsStream;
