//! The server's TLS transport on rustls' unbuffered API: the loop owns the
//! buffers (one scratch for input and one for output, shared by every
//! connection of the thread), so an idle TLS connection keeps none: only
//! rustls' connection state and keys (about 3.8 KB, where the buffered
//! `ServerConnection` keeps 7.9 KB: its 4 KiB receive buffer stays).
//!
//! A connection owns bytes only while they exist: the start of a record
//! that a read cut (`partial`), records the socket did not take
//! (`unsent`), and decrypted input that did not fit the caller's buffer
//! (`plain`). Each is freed once empty.

use super::io::{write_some, TlsFailure, Transport};
use crate::config::READ_BUFFER;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};

/// Largest plaintext in one record (RFC 8446 §5.1).
const RECORD: usize = 16 << 10;
/// A record's overhead at most: header, tag, content type and padding
/// rustls might add (TLS 1.2 CBC is not offered; 256 is ample).
const OVERHEAD: usize = 256;
/// Records encrypted before they are written with one system call.
const BATCH: usize = 4;
/// Most input rustls may leave undiscarded: a record, or a handshake
/// message being reassembled (rustls takes at most 64 KiB) with the headers
/// of the records it came in. A client past it is failed (buffered rustls
/// has the same bound).
const MAX_CARRY: usize = READ_BUFFER + RECORD + OVERHEAD;

/// The loop's scratch buffers for TLS (one per thread: the loop's).
struct Scratch {
    /// Ciphertext: a cut record carried over, then what the socket gives.
    input: Box<[u8]>,
    /// Records on their way to the socket.
    output: Box<[u8]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: vec![0; MAX_CARRY + READ_BUFFER].into_boxed_slice(),
        output: vec![0; BATCH * (RECORD + OVERHEAD)].into_boxed_slice(),
    });
}

/// Where decrypted input goes: the caller's buffer, then the stash.
struct Sink<'a> {
    buf: &'a mut [u8],
    filled: usize,
}

/// Whether application data may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Open,
    /// Records rustls made wait for the socket.
    Full,
    /// The handshake is not complete.
    NotYet,
}

/// What rustls wants after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wants {
    /// More input (the handshake waits for the peer).
    Input,
    /// Nothing: application data may be sent.
    Traffic,
    /// The peer sent close_notify.
    Closed,
}

/// TLS over a non-blocking socket `S`, server side.
pub(crate) struct TlsServer<S> {
    sock: S,
    tls: UnbufferedServerConnection,
    /// The input rustls has not discarded: the start of a record the last
    /// read cut, or of a handshake message being reassembled. rustls'
    /// reassembly points into these bytes, so every call to rustls gets
    /// them first (outside a read: exactly these).
    partial: Vec<u8>,
    /// Records not yet written, from `unsent_at`.
    unsent: Vec<u8>,
    unsent_at: usize,
    /// Decrypted input the caller's buffer did not take, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// The peer's close_notify or end of input was seen.
    ended: bool,
    /// close_notify is queued: shut the socket's sending side once out.
    shutdown_queued: bool,
}

impl<S> std::fmt::Debug for TlsServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("handshaking", &self.tls.is_handshaking())
            .field("unsent", &(self.unsent.len() - self.unsent_at))
            .finish()
    }
}

fn tls_error(error: rustls::Error, during_handshake: bool) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        TlsFailure {
            during_handshake,
            error,
        },
    )
}

impl<S: Transport> TlsServer<S> {
    pub fn new(sock: S, tls: UnbufferedServerConnection) -> Self {
        TlsServer {
            sock,
            tls,
            partial: Vec::new(),
            unsent: Vec::new(),
            unsent_at: 0,
            plain: Vec::new(),
            plain_at: 0,
            ended: false,
            shutdown_queued: false,
        }
    }

    /// Whether the TLS handshake is still under way.
    #[cfg(test)]
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Heap bytes the connection's own buffers hold now.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.held()
    }

    /// Runs rustls over `incoming` (ciphertext) until it wants more input
    /// or has nothing left to do: decrypted input goes to `sink`, records it
    /// makes (handshake, alerts, tickets) to `unsent` and out. Returns how
    /// much of `incoming` was used, and what rustls wants.
    fn drive(&mut self, incoming: &mut [u8], sink: &mut Sink<'_>) -> io::Result<(usize, Wants)> {
        let mut used = 0;
        // Each turn consumes input or emits something; bounded all the same.
        for _ in 0..(incoming.len() + 64) {
            let during_handshake = self.tls.is_handshaking();
            let status = self.tls.process_tls_records(&mut incoming[used..]);
            used += status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.send_alert(&mut incoming[used..]);
                    return Err(tls_error(e, during_handshake));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(|e| tls_error(e, false))?;
                        take_plain(record.payload, sink, &mut self.plain);
                    }
                }
                ConnectionState::ReadEarlyData(mut r) => {
                    // Not offered (max_early_data_size is 0); dropped if sent.
                    while r.next_record().is_some() {}
                }
                ConnectionState::EncodeTlsData(mut e) => encode(&mut e, &mut self.unsent)?,
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    self.write_unsent()?;
                }
                ConnectionState::BlockedHandshake => return Ok((used, Wants::Input)),
                ConnectionState::WriteTraffic(_) => return Ok((used, Wants::Traffic)),
                ConnectionState::PeerClosed | ConnectionState::Closed => return Ok((used, Wants::Closed)),
                _ => return Ok((used, Wants::Input)),
            }
        }
        Err(io::Error::other("TLS: no progress"))
    }

    /// After a TLS error: writes the alert rustls made, if the socket takes
    /// it. `incoming`: the input rustls has not discarded. (Only while
    /// rustls has records to hand out: past them it would parse the bad
    /// input again.)
    fn send_alert(&mut self, incoming: &mut [u8]) {
        for _ in 0..4 {
            if !self.tls.wants_write() {
                break;
            }
            match self.tls.process_tls_records(incoming).state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    if encode(&mut e, &mut self.unsent).is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        let _ = self.write_unsent();
    }

    /// Writes `unsent` as far as the socket takes it; `Ok(true)` once all
    /// is out (then its memory is freed, and a queued shutdown happens).
    fn write_unsent(&mut self) -> io::Result<bool> {
        while self.unsent_at < self.unsent.len() {
            match self.sock.write(&self.unsent[self.unsent_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.unsent_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.unsent = Vec::new();
        self.unsent_at = 0;
        if self.shutdown_queued {
            self.shutdown_queued = false;
            self.sock.shutdown_write()?;
        }
        Ok(true)
    }

    /// Reads what the socket has (after the cut record carried over) into
    /// the scratch, and decrypts it into `sink`. `Ok(false)`: the socket
    /// had nothing (`WouldBlock`).
    fn read_some(&mut self, sink: &mut Sink<'_>) -> io::Result<bool> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let input = &mut scratch.input;
            let carried = self.partial.len();
            if carried > MAX_CARRY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: too much input held back",
                ));
            }
            input[..carried].copy_from_slice(&self.partial);
            // Read about as much as the caller has room for: what does not
            // fit goes to the stash (an allocation).
            let room = (input.len() - carried)
                .min(READ_BUFFER)
                .min((sink.buf.len() - sink.filled).max(RECORD));
            let n = loop {
                match self.sock.read(&mut input[carried..carried + room]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // What rustls has not discarded stays in `partial`: every
                // call gives it the same bytes (its handshake reassembly
                // points into them).
                self.ended = true;
                return Ok(true);
            }
            let have = carried + n;
            let (used, wants) = self.drive(&mut input[..have], sink)?;
            if wants == Wants::Closed {
                self.ended = true;
            }
            if used < have {
                self.partial.clear();
                self.partial.extend_from_slice(&input[used..have]);
            } else {
                self.partial = Vec::new();
            }
            Ok(true)
        })
    }

    /// Hands out stashed plaintext.
    fn take_stash(&mut self, sink: &mut Sink<'_>) {
        if self.plain_at == self.plain.len() {
            return;
        }
        let n = (self.plain.len() - self.plain_at).min(sink.buf.len() - sink.filled);
        sink.buf[sink.filled..sink.filled + n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
        sink.filled += n;
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
    }

    /// Encodes and writes what rustls queued on its own (tickets, say)
    /// until it lets application data through.
    fn make_way(&mut self) -> io::Result<Way> {
        for _ in 0..16 {
            let status = self.tls.process_tls_records(&mut self.partial);
            let discard = status.discard;
            let way = match status.state {
                Ok(ConnectionState::WriteTraffic(_)) => Some(Way::Open),
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode(&mut e, &mut self.unsent)?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    (!self.write_unsent()?).then_some(Way::Full)
                }
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(|e| tls_error(e, false))?;
                        self.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(_) => Some(Way::NotYet),
                Err(e) => return Err(tls_error(e, false)),
            };
            self.discard(discard);
            if let Some(way) = way {
                return Ok(way);
            }
        }
        Err(io::Error::other("TLS: no progress"))
    }

    /// Drops the first `n` bytes of `partial`, which rustls discarded.
    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.partial.drain(..n);
        if self.partial.is_empty() {
            self.partial = Vec::new();
        }
    }

    /// Encrypts one record of `plain` into `out[*at..]`.
    fn seal(&mut self, plain: &[u8], out: &mut [u8], at: &mut usize) -> io::Result<()> {
        let status = self.tls.process_tls_records(&mut self.partial);
        let discard = status.discard;
        let Ok(ConnectionState::WriteTraffic(mut w)) = status.state else {
            return Err(io::Error::other("TLS: application data refused"));
        };
        *at += w.encrypt(plain, &mut out[*at..]).map_err(encrypt_error)?;
        self.discard(discard);
        Ok(())
    }

    /// Encrypts `bufs` into records of up to 16 KiB (small pieces gathered
    /// into one record, whole records encrypted in place) and writes them
    /// a batch at a time; what the socket does not take waits in `unsent`.
    /// Returns the plaintext bytes taken.
    fn encrypt_and_write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.make_way()? {
            Way::Open => {}
            Way::Full => return Err(io::ErrorKind::WouldBlock.into()),
            Way::NotYet => return Err(io::Error::other("TLS: application data before the handshake completed")),
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                input: stage,
                output: out,
            } = &mut *scratch;
            let (mut taken, mut staged, mut at) = (0, 0, 0);
            for buf in bufs {
                let mut rest: &[u8] = buf;
                while !rest.is_empty() {
                    if staged == 0 && rest.len() >= RECORD {
                        self.seal(&rest[..RECORD], out, &mut at)?;
                        taken += RECORD;
                        rest = &rest[RECORD..];
                    } else {
                        let n = rest.len().min(RECORD - staged);
                        stage[staged..staged + n].copy_from_slice(&rest[..n]);
                        staged += n;
                        rest = &rest[n..];
                        if staged < RECORD {
                            continue;
                        }
                        self.seal(&stage[..staged], out, &mut at)?;
                        taken += staged;
                        staged = 0;
                    }
                    if out.len() - at < RECORD + OVERHEAD {
                        if !self.write_batch(&out[..at])? {
                            return Ok(taken);
                        }
                        at = 0;
                    }
                }
            }
            if staged > 0 {
                self.seal(&stage[..staged], out, &mut at)?;
                taken += staged;
            }
            if at > 0 {
                self.write_batch(&out[..at])?;
            }
            Ok(taken)
        })
    }

    /// Writes a batch of records; keeps what the socket does not take in
    /// `unsent`. `Ok(false)` if the socket is full.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<bool> {
        let n = write_some(&mut self.sock, batch)?;
        if n < batch.len() {
            self.unsent.extend_from_slice(&batch[n..]);
            return Ok(false);
        }
        Ok(true)
    }
}

/// Copies a decrypted record into the caller's buffer; what does not fit
/// goes to the stash.
fn take_plain(payload: &[u8], sink: &mut Sink<'_>, stash: &mut Vec<u8>) {
    let n = payload.len().min(sink.buf.len() - sink.filled);
    sink.buf[sink.filled..sink.filled + n].copy_from_slice(&payload[..n]);
    sink.filled += n;
    stash.extend_from_slice(&payload[n..]);
}

/// Appends a record rustls made to `unsent`.
fn encode(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    unsent: &mut Vec<u8>,
) -> io::Result<()> {
    let at = unsent.len();
    unsent.resize(at + RECORD + OVERHEAD, 0);
    let n = match e.encode(&mut unsent[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(s)) => {
            unsent.resize(at + s.required_size, 0);
            e.encode(&mut unsent[at..]).map_err(io::Error::other)?
        }
        Err(err) => return Err(io::Error::other(err)),
    };
    unsent.truncate(at + n);
    Ok(())
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(e)
}

impl<S: Transport> Read for TlsServer<S> {
    /// Fills `buf` with plaintext until it is full or the socket says
    /// `WouldBlock` or end of input: a short read means the socket is empty.
    /// Out of line: the plain path of the loop's read stays small.
    #[inline(never)]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut sink = Sink { buf, filled: 0 };
        self.take_stash(&mut sink);
        while sink.filled < sink.buf.len() && !self.ended {
            if !self.read_some(&mut sink)? {
                return match sink.filled {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                };
            }
        }
        Ok(sink.filled)
    }
}

impl<S: Transport> Write for TlsServer<S> {
    #[inline(never)]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    #[inline(never)]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.write_unsent()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.encrypt_and_write(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_unsent().map(|_| ())
    }
}

impl<S: Transport> Transport for TlsServer<S> {
    fn limit_unsent(&self, bytes: u32) {
        self.sock.limit_unsent(bytes);
    }

    /// Sends close_notify, then (once it is out) shuts the socket's
    /// sending side.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown_queued = true;
        if self.make_way()? != Way::Open {
            // Not yet in traffic (or the socket is full of what rustls
            // made): no close_notify, the FIN follows what is queued.
            return self.write_unsent().map(|_| ());
        }
        let status = self.tls.process_tls_records(&mut self.partial);
        let discard = status.discard;
        if let Ok(ConnectionState::WriteTraffic(mut w)) = status.state {
            let at = self.unsent.len();
            self.unsent.resize(at + OVERHEAD, 0);
            let n = w.queue_close_notify(&mut self.unsent[at..]).map_err(encrypt_error)?;
            self.unsent.truncate(at + n);
        }
        self.discard(discard);
        self.write_unsent().map(|_| ())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.write_unsent().map(|_| ())
    }

    fn has_pending(&self) -> bool {
        self.unsent_at < self.unsent.len() || self.shutdown_queued
    }

    fn held(&self) -> usize {
        self.partial.capacity() + self.unsent.capacity() + self.plain.capacity()
    }
}
