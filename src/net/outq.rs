//! Unsent output of one connection.
//!
//! Most writes go straight from the loop's shared write buffer to the
//! socket and never touch this queue; it exists only while a peer is not
//! keeping up (the kernel's send buffer is full). Bytes are kept as a list
//! of chunks and written with one vectored write per flush, so queuing a
//! frame never means moving the ones before it.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Most chunks handed to one `writev` (Linux's `IOV_MAX` is 1024; a few
/// dozen already fill any socket buffer).
const MAX_IOVECS: usize = 64;
/// Appends smaller than this are copied into the last chunk rather than
/// starting a new one.
const COALESCE: usize = 16 << 10;

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    front_sent: usize,
    /// Unsent bytes in all.
    len: usize,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some(last) if last.len() < COALESCE => last.extend_from_slice(bytes),
            _ => self.chunks.push_back(bytes.to_vec()),
        }
        self.len += bytes.len();
    }

    /// Writes as much as the socket takes, with one vectored write per
    /// call to `w` (repeated while the socket keeps taking all of it).
    /// Returns `Ok(true)` once empty, `Ok(false)` if the socket is full.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.len > 0 {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &chunk[self.front_sent..] } else { chunk });
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
            let left = front.len() - self.front_sent;
            if written < left {
                self.front_sent += written;
                return;
            }
            written -= left;
            self.front_sent = 0;
            self.chunks.pop_front();
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
    fn short_writes_keep_order() {
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            let chunk = vec![i; (i as usize * 997) % 40_000 + 1];
            q.push(&chunk);
            expect.extend_from_slice(&chunk);
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
}
