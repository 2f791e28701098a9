//! The lowest layer of `net`: what a transport is ([`Transport`]), how a
//! TLS failure travels in an I/O error ([`TlsFailure`]), and writing to a
//! non-blocking writer ([`write_some`]). Every other file of `net` may use
//! it; it uses none of them, so the transports (`transport`, `tls_server`)
//! and the connection (`conn`) do not import each other.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::Shutdown;

/// A non-blocking byte stream: reads and writes return `WouldBlock` rather
/// than wait.
///
/// `read` returns fewer bytes than asked only once the underlying socket
/// said `WouldBlock` or end of input (the loop relies on it: a short read
/// means no new edge will come for what was read, so none may be left).
pub trait Transport: Read + Write {
    /// Ends our sending side (TCP: a FIN after what is already written;
    /// TLS: close_notify first).
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Writes bytes the transport has to send on its own (TLS records
    /// rustls made: handshake, alerts, close_notify), as far as the socket
    /// takes them.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether the transport holds bytes not yet written to the socket.
    fn has_pending(&self) -> bool {
        false
    }

    /// Heap bytes the transport's own buffers hold (TLS input not yet
    /// decrypted or handed out, records not yet written): charged to the
    /// connection under `--max-memory`.
    fn held(&self) -> usize {
        0
    }

    /// Limits the bytes the kernel holds unsent for this connection
    /// (`TCP_NOTSENT_LOWAT`): past them, writes return `WouldBlock` and the
    /// rest waits in the loop's queue, where the slow-consumer rules see it.
    fn limit_unsent(&self, _bytes: u32) {}

    /// Whether this connection came in on the plaintext listener for probes
    /// (`--listen-plain`), which answers only `/healthz` and `/metrics`.
    fn probes_only(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn limit_unsent(&self, bytes: u32) {
        if let Err(e) = socket2::SockRef::from(self).set_tcp_notsent_lowat(bytes) {
            log::debug!("TCP_NOTSENT_LOWAT: {e}");
        }
    }
}

/// Why a TLS connection failed: rustls' error (a bad record, a failed
/// handshake, plaintext on the TLS port), and whether the handshake had
/// completed. Read errors carry it (`io::ErrorKind::InvalidData`).
#[derive(Debug)]
pub(crate) struct TlsFailure {
    pub during_handshake: bool,
    pub error: rustls::Error,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = if self.during_handshake { "handshake" } else { "record" };
        write!(f, "TLS {phase}: {}", self.error)
    }
}

impl std::error::Error for TlsFailure {}

/// The TLS failure an I/O error carries, if any.
pub(crate) fn tls_failure(e: &io::Error) -> Option<&TlsFailure> {
    e.get_ref()?.downcast_ref::<TlsFailure>()
}

/// [`write_some`] for `head` followed by `body`, with vectored writes: the
/// two go out as one without being copied together first. Returns how
/// much of the two was written.
pub fn write_parts<W: io::Write>(stream: &mut W, head: &[u8], body: &[u8]) -> io::Result<usize> {
    write_until_blocked(head.len() + body.len(), |at| match head.get(at..) {
        Some(rest) if !rest.is_empty() => stream.write_vectored(&[io::IoSlice::new(rest), io::IoSlice::new(body)]),
        _ => stream.write(&body[at - head.len()..]),
    })
}

/// Writes as much of `buf` as a non-blocking writer takes (retrying short
/// writes and `EINTR`, stopping at `WouldBlock`); returns how much.
pub fn write_some<W: io::Write>(stream: &mut W, buf: &[u8]) -> io::Result<usize> {
    write_until_blocked(buf.len(), |at| stream.write(&buf[at..]))
}

/// Calls `write_from(at)` until `total` bytes are written or the writer
/// would block (retrying `EINTR`); returns how many were written.
#[inline(always)]
fn write_until_blocked(total: usize, mut write_from: impl FnMut(usize) -> io::Result<usize>) -> io::Result<usize> {
    let mut at = 0;
    while at < total {
        match write_from(at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
