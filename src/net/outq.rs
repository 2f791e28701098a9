//! Unsent output of one connection.
//!
//! Most writes go straight from a loop-wide buffer to the socket and never
//! touch this queue; it exists only while a peer is not keeping up (the
//! kernel's send buffer is full). It holds owned bytes (a connection's own
//! replies) and shared ones (broadcast frames, encoded once and referenced
//! by every recipient that could not take them at once), and writes them
//! with one vectored write per flush.
//!
//! [`OutQueue::charge`] is the memory the queue keeps alive: owned buffers
//! by capacity, and each shared buffer whole, however little of it is still
//! to be sent, since this queue's reference alone keeps all of it. So the
//! charge of a connection is never less than what it costs.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Most chunks handed to one `writev` (Linux's `IOV_MAX` is 1024; a few
/// dozen already fill any socket buffer).
pub const MAX_IOVECS: usize = 64;
/// Owned appends are coalesced into the last chunk up to this size.
const COALESCE: usize = 16 << 10;

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    /// `bytes[start..end]` of a buffer shared with other queues.
    Shared(Rc<[u8]>, usize, usize),
}

/// An `Rc<[u8]>` allocation's header (the two counts) beyond its bytes.
const RC_HEADER: usize = 2 * std::mem::size_of::<usize>();

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(rc, s, e) => &rc[*s..*e],
        }
    }

    /// Heap bytes this chunk keeps alive.
    fn held(&self) -> usize {
        match self {
            Chunk::Owned(v) => v.capacity(),
            Chunk::Shared(rc, ..) => rc.len() + RC_HEADER,
        }
    }
}

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_sent: usize,
    /// Unsent bytes in all.
    len: usize,
    /// Heap bytes the chunks keep alive (see [`Chunk::held`]).
    held: usize,
    /// The connection's input is not read while this is set: its peer is
    /// not reading what we send. Set past the backpressure cap; cleared at
    /// half the cap, or with the queue once it empties.
    pub paused: bool,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory this queue keeps alive: its chunks' buffers, the chunk list
    /// and the queue itself (it is boxed).
    pub fn charge(&self) -> usize {
        self.held + self.chunks.capacity() * std::mem::size_of::<Chunk>() + std::mem::size_of::<Self>()
    }

    /// Queues a copy of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some(Chunk::Owned(last)) if last.len() < COALESCE => {
                let before = last.capacity();
                last.extend_from_slice(bytes);
                self.held += last.capacity() - before;
            }
            _ => {
                let chunk = Chunk::Owned(bytes.to_vec());
                self.held += chunk.held();
                self.chunks.push_back(chunk);
            }
        }
        self.len += bytes.len();
    }

    /// Queues a reference to `shared[start..end]`.
    pub fn push_shared(&mut self, shared: &Rc<[u8]>, start: usize, end: usize) {
        if start == end {
            return;
        }
        let chunk = Chunk::Shared(Rc::clone(shared), start, end);
        self.held += chunk.held();
        self.chunks.push_back(chunk);
        self.len += end - start;
    }

    /// Drops every chunk but the front one, to make room for a last control
    /// frame. Every chunk ends at a frame boundary, but the front one may
    /// begin inside a frame that is partly on the wire (the rest of a short
    /// write), so it is kept whole: the frame in flight is finished.
    pub fn truncate_to_front(&mut self) {
        for c in self.chunks.drain(1.min(self.chunks.len())..) {
            self.held -= c.held();
        }
        self.len = self.chunks.front().map_or(0, |c| c.bytes().len() - self.front_sent);
    }

    /// Writes as much as the socket takes, one vectored write per call.
    /// Returns `Ok(true)` once empty, `Ok(false)` if the socket is full.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.len > 0 {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let b = chunk.bytes();
                iov[i] = IoSlice::new(if i == 0 { &b[self.front_sent..] } else { b });
                n += 1;
            }
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn consume(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let front = self.chunks.front().expect("written bytes came from a chunk");
            let left = front.bytes().len() - self.front_sent;
            if written < left {
                self.front_sent += written;
                return;
            }
            written -= left;
            self.front_sent = 0;
            if let Some(c) = self.chunks.pop_front() {
                self.held -= c.held();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then WouldBlock
    /// once `budget` is spent.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap).min(self.budget);
            self.got.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_keep_order_across_owned_and_shared() {
        let shared: Rc<[u8]> = (0..=255u8).collect::<Vec<_>>().into();
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            let chunk = vec![i; (i as usize * 997) % 40_000 + 1];
            q.push(&chunk);
            expect.extend_from_slice(&chunk);
            let (s, e) = (i as usize, 100 + i as usize * 3);
            q.push_shared(&shared, s, e);
            expect.extend_from_slice(&shared[s..e]);
        }
        assert_eq!(q.len(), expect.len());
        let mut w = Trickle {
            got: Vec::new(),
            cap: 7919,
            budget: 100_000,
        };
        assert!(!q.flush(&mut w).unwrap());
        assert_eq!(q.len(), expect.len() - 100_000);
        q.push(b"tail");
        expect.extend_from_slice(b"tail");
        w.budget = usize::MAX;
        assert!(q.flush(&mut w).unwrap());
        assert!(q.is_empty());
        assert_eq!(w.got, expect);
    }

    #[test]
    fn the_charge_covers_whole_shared_buffers_and_falls_to_nothing() {
        let big: Rc<[u8]> = vec![1u8; 100_000].into();
        let mut q = OutQueue::default();
        let empty = q.charge();
        q.push_shared(&big, 99_000, 100_000);
        assert_eq!(q.len(), 1_000);
        assert!(q.charge() >= empty + 100_000, "the shared buffer is kept whole");
        q.push(&[2; 10]);
        q.push(&[3; 10]);
        assert!(q.charge() >= empty + 100_020);
        let mut w = Trickle {
            got: Vec::new(),
            cap: usize::MAX,
            budget: 1_005,
        };
        assert!(!q.flush(&mut w).unwrap());
        assert!(
            q.charge() < empty + 1_000,
            "the shared buffer went with its chunk: {}",
            q.charge()
        );
        w.budget = usize::MAX;
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(q.held, 0);
    }

    #[test]
    fn truncate_keeps_the_frame_in_flight() {
        let mut q = OutQueue::default();
        q.push(&[1; 20_000]);
        q.push(&[2; 20_000]);
        let mut w = Trickle {
            got: Vec::new(),
            cap: 100,
            budget: 100,
        };
        q.flush(&mut w).unwrap();
        q.truncate_to_front();
        assert_eq!(q.len(), 19_900);
        q.push(b"close");
        w.budget = usize::MAX;
        w.cap = usize::MAX;
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(w.got.len(), 20_005);
        let mut q = OutQueue::default();
        q.push(&[1; 10]);
        q.truncate_to_front();
        assert_eq!(q.len(), 10, "an unsent front chunk may be the rest of a frame");
    }
}
