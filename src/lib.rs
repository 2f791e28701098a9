//! wsloop: a single-threaded RFC 6455 WebSocket server on one `mio` poll loop.
//!
//! - [`proto`]: the sans-IO protocol core (handshake, frames, masking, UTF-8,
//!   close codes, message reassembly). Usable in either role.
//! - [`net`]: the poll loop and per-connection glue; the only code that
//!   touches sockets.
//! - `service`: what the server does with requests and messages (echo,
//!   broadcast rooms, the plain HTTP answers, metrics). Internal.
//! - [`bus`]: topics across processes and machines over Redis, sans-IO.
//! - [`config`]: every limit and setting, in one place.
// No `unsafe` but one block, in `proto::mask` (AVX2 unmasking of long
// payloads, behind a runtime check of the CPU; its SAFETY comment says why
// it is sound, `benches/codec.rs`'s `mask` group what it gains).
#![deny(unsafe_code)]

pub mod bus;
pub mod config;
pub mod fuzzing;
pub mod net;
pub mod proto;
pub(crate) mod service;
