//! The poll loop: the only code that touches sockets and `mio`.

mod outq;
mod server;
pub mod stats;

pub use server::{Server, CONNECTION_RECORD_BYTES};
