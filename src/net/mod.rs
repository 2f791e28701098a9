//! The poll loop: the only code that touches sockets and `mio`.

mod metrics;
mod outq;
mod server;
pub mod stats;
mod timers;

pub use server::{write_some, Server, CONNECTION_RECORD_BYTES};
