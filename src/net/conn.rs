//! A connection as the loop holds it: its transport, its protocol state
//! ([`Connection`], sans-IO), the service it belongs to, and the output its
//! transport did not take yet.

use super::io::{write_parts, write_some, Transport};
use super::outq::OutQueue;
use crate::proto::conn::Connection;
use crate::service::Route;
use std::io;

/// One connection's record in the loop's slab. An idle one owns no buffer:
/// partial input and unsent output are allocated only while they exist.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub stream: S,
    pub proto: Connection,
    pub route: Route,
    /// Output the transport did not take yet; `None` almost always.
    pub out: Option<Box<OutQueue>>,
    /// What this connection is charged in the loop's [`Budget`] (its
    /// [`memory`](Conn::memory) when last synced).
    pub charged: usize,
}

impl<S: Transport> Conn<S> {
    pub fn new(stream: S, proto: Connection) -> Self {
        Conn {
            stream,
            proto,
            route: Route::None,
            out: None,
            charged: 0,
        }
    }

    /// Heap memory the connection keeps alive beyond its record: partial
    /// input (a message being gathered, a request body), queued output, and
    /// what its transport holds (TLS).
    pub fn memory(&self) -> usize {
        self.proto.buffered() + self.out.as_ref().map_or(0, |q| q.charge()) + self.stream.held()
    }

    /// Whether [`Hub::settle`](super::hub::Hub) would change nothing: its
    /// protocol state is [quiet](Connection::is_quiet), nothing is queued
    /// or held by its transport, and its charge is nothing.
    #[inline]
    pub fn is_quiet(&self) -> bool {
        self.out.is_none()
            && self.charged == 0
            && self.stream.held() == 0
            && !self.stream.has_pending()
            && self.proto.is_quiet()
    }

    /// [`is_quiet`](Self::is_quiet) for a connection that was quiet, whose
    /// protocol state is known to have stayed quiet, and that has written
    /// since (without a settle): whether its output left nothing behind.
    #[inline]
    pub fn output_quiet(&self) -> bool {
        self.out.is_none() && self.stream.held() == 0 && !self.stream.has_pending()
    }

    /// Bytes waiting in the queue.
    pub fn queued(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.len())
    }

    /// Whether input is left unread because the peer does not read.
    pub fn paused(&self) -> bool {
        self.out.as_ref().is_some_and(|q| q.paused)
    }

    /// Writes `bytes` straight to the transport if nothing is queued before
    /// them, else behind the queue; queues what the transport does not take.
    /// Counts one write call.
    #[inline(always)]
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(q) if !q.is_empty() => {
                q.push(bytes);
                q.flush(&mut self.stream).map(|_| ())
            }
            _ => {
                let n = write_some(&mut self.stream, bytes)?;
                if n < bytes.len() {
                    self.out.get_or_insert_with(Box::default).push(&bytes[n..]);
                }
                Ok(())
            }
        }
    }

    /// Writes what the queue holds, as far as the transport takes it.
    pub fn flush_queue(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(q) => q.flush(&mut self.stream).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// [`Conn::send`] for a frame that is not in the write buffer, on a
/// connection with nothing queued: `head` then `body` in one vectored write
/// (a plain one when `head` is empty: an echo whose header was put in front
/// of its payload in the read buffer), rather than a copy into the write
/// buffer first; what the transport does not take is queued. Takes the
/// connection's transport and queue rather than the connection, whose
/// protocol state the payload may borrow. Out of line: the system call
/// dominates, and `Hub::readable` stays small for the common small message.
#[inline(never)]
pub(crate) fn send_parts<S: Transport>(
    stream: &mut S,
    out: &mut Option<Box<OutQueue>>,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    debug_assert!(out.is_none(), "written ahead of a queue");
    let n = write_parts(stream, head, body)?;
    if n < head.len() + body.len() {
        let q = out.get_or_insert_with(Box::default);
        q.push(&head[n.min(head.len())..]);
        q.push(&body[n.saturating_sub(head.len())..]);
    }
    Ok(())
}

/// The process-wide memory budget (`--max-memory`) for what connections
/// hold: the sum of their charges.
#[derive(Debug)]
pub(crate) struct Budget {
    pub used: usize,
    pub limit: usize,
}

impl Budget {
    /// Brings `conn`'s charge up to date; returns how much it grew.
    pub fn sync<S: Transport>(&mut self, conn: &mut Conn<S>) -> isize {
        let now = conn.memory();
        let grew = now as isize - conn.charged as isize;
        self.used = self.used - conn.charged + now;
        conn.charged = now;
        grew
    }

    /// `conn` is going: its charge is freed.
    pub fn release<S>(&mut self, conn: &Conn<S>) {
        self.used -= conn.charged;
    }

    pub fn exceeded(&self) -> bool {
        self.used > self.limit
    }

    /// Whether `more` bytes would still be within the budget.
    pub fn fits(&self, more: usize) -> bool {
        self.used.saturating_add(more) <= self.limit
    }
}
