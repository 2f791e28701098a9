//! What a connection's bytes travel over. The loop reads and writes a
//! [`Transport`]: plain TCP, TLS over TCP ([`TlsStream`], rustls), or the
//! tests' in-memory pipes. The HTTP and WebSocket handling above does not
//! know which: it reads plaintext and writes plaintext.
//!
//! rustls is sans-IO: it sits between the socket and the WebSocket core as
//! the core sits between bytes and events. The server's TLS connections
//! are `TlsServer`s (`tls_server.rs`, rustls' unbuffered API: the loop owns
//! the buffers); [`TlsStream`] is the same on rustls' buffered API (wsflood's
//! client). Either reads records from the socket, decrypts them and hands
//! out the plaintext; writes encrypt and go out at once. What rustls must
//! send on its own (handshake messages, alerts, key updates, close_notify)
//! goes out after each read, and, if the socket was full, when it becomes
//! writable ([`Transport::flush_pending`]).

use super::io::{TlsFailure, Transport};
use super::tls_server::TlsServer;
use mio::net::TcpStream;
use std::io::{self, IoSlice, Read, Write};

/// A connection of the daemon: one type for every listener, so that plain
/// and TLS connections share one hub.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP on the main listener.
    Plain(TcpStream),
    /// TLS on the main listener (with `--tls-cert`). Boxed: rustls' state
    /// is large, and the plain record stays small.
    Tls(Box<TlsServer<TcpStream>>),
    /// Plain TCP on the `--listen-plain` listener: probes only.
    Probes(TcpStream),
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) | Stream::Probes(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) | Stream::Probes(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// One slice (a fan-out's round merged into one range of its batch, a
    /// queue of one chunk) goes out with a plain `send`, which costs the
    /// kernel 3–5 % less than `writev` of the same bytes, per write and
    /// read on loopback (20 B and 16 KiB alike); see BENCHMARKS.md.
    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) | Stream::Probes(s) => match bufs {
                [one] => s.write(one),
                _ => s.write_vectored(bufs),
            },
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) | Stream::Probes(s) => s.shutdown_write(),
            Stream::Tls(t) => t.shutdown_write(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.flush_pending(),
            _ => Ok(()),
        }
    }

    #[inline]
    fn has_pending(&self) -> bool {
        match self {
            Stream::Tls(t) => t.has_pending(),
            _ => false,
        }
    }

    #[inline]
    fn held(&self) -> usize {
        match self {
            Stream::Tls(t) => t.held(),
            _ => 0,
        }
    }

    fn limit_unsent(&self, bytes: u32) {
        match self {
            Stream::Plain(s) | Stream::Probes(s) => s.limit_unsent(bytes),
            Stream::Tls(t) => t.limit_unsent(bytes),
        }
    }

    fn probes_only(&self) -> bool {
        matches!(self, Stream::Probes(_))
    }
}

/// TLS over a non-blocking socket `S` on rustls' buffered API (either
/// side; wsflood's client uses it). The server uses `TlsServer`, on the
/// unbuffered API, whose idle connections keep no buffer.
pub struct TlsStream<S> {
    sock: S,
    tls: rustls::Connection,
    /// close_notify is queued: shut the socket's sending side once rustls
    /// has written everything.
    shutdown_queued: bool,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("pending", &self.tls.wants_write())
            .finish()
    }
}

/// Plaintext rustls takes from one write before its records must go out:
/// what it keeps when the socket is full is at most about this much.
const TLS_WRITE_CHUNK: usize = 16 << 10;

/// What [`TlsStream::take_plaintext`] found.
enum Plain {
    Data(usize),
    /// Nothing decrypted is waiting.
    Empty,
    /// The peer sent close_notify, or closed TCP without it.
    End,
}

impl<S: Transport> TlsStream<S> {
    /// A TLS connection over `sock`, before its handshake (a client's
    /// first flight goes out with the first write or flush).
    pub fn new(sock: S, tls: impl Into<rustls::Connection>) -> Self {
        let mut tls = tls.into();
        tls.set_buffer_limit(Some(TLS_WRITE_CHUNK));
        TlsStream {
            sock,
            tls,
            shutdown_queued: false,
        }
    }

    /// Whether the TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The socket below (for its address, errors, or the poll).
    pub fn socket(&self) -> &S {
        &self.sock
    }

    /// Copies decrypted input into `buf`.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<Plain> {
        match self.tls.reader().read(buf) {
            Ok(0) if !buf.is_empty() => Ok(Plain::End),
            Ok(n) => Ok(Plain::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Plain::Empty),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Plain::End),
            Err(e) => Err(e),
        }
    }

    /// Decrypts what `read_tls` took and sends what rustls has to answer
    /// (handshake messages). On a TLS error, sends the alert rustls made
    /// (if the socket takes it) and fails.
    fn process(&mut self) -> io::Result<()> {
        let during_handshake = self.tls.is_handshaking();
        match self.tls.process_new_packets() {
            Ok(_) => self.write_records().map(|_| ()),
            Err(error) => {
                let _ = self.write_records();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure {
                        during_handshake,
                        error,
                    },
                ))
            }
        }
    }

    /// Writes the records rustls holds, as far as the socket takes them;
    /// `Ok(true)` once all are out (then a queued shutdown happens).
    fn write_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.shutdown_queued {
            self.shutdown_queued = false;
            self.sock.shutdown_write()?;
        }
        Ok(true)
    }

    /// Encrypts as much of `bufs` as fits while the socket takes the
    /// records; returns the plaintext bytes taken.
    fn write_bufs(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for buf in bufs {
            let mut at = 0;
            while at < buf.len() {
                let n = self.tls.writer().write(&buf[at..])?;
                at += n;
                taken += n;
                if n == 0 || !self.write_records()? {
                    return Ok(taken);
                }
            }
        }
        Ok(taken)
    }
}

impl<S: Transport> Read for TlsStream<S> {
    /// Fills `buf` with plaintext until it is full or the socket says
    /// `WouldBlock` or end of input: a short read means the socket is empty.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.take_plaintext(&mut buf[filled..])? {
                Plain::Data(n) => filled += n,
                Plain::End => return Ok(filled),
                Plain::Empty => {}
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            match self.tls.read_tls(&mut self.sock) {
                // End of input: the reader tells it on the next turn.
                Ok(0) => {}
                Ok(_) => self.process()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Transport> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bufs(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_bufs(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records().map(|_| ())
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    /// Sends close_notify, then (once it is out) shuts the socket's
    /// sending side.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.shutdown_queued = true;
        self.write_records().map(|_| ())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.write_records().map(|_| ())
    }

    fn has_pending(&self) -> bool {
        self.tls.wants_write() || self.shutdown_queued
    }
}
