//! Echoes written from where their payload lies.
//!
//! An echoed payload that was read whole in one frame is unmasked in place
//! in the loop's read buffer. Copying it into the write buffer behind its
//! frame header costs as much as the rest of the echo (a 16 KiB echo spent
//! 16,400 of its 20,900 user-space instructions in that `memcpy`). Instead,
//! only the header goes into the write buffer, and a [`Splices`] entry says
//! where the payload belongs in it and where it lies in the read buffer; the
//! flush writes the write buffer's pieces and the payloads interleaved with
//! one vectored write. What the socket does not take is copied into the
//! connection's queue, in order, before the read buffer is reused.

use std::io::IoSlice;
use std::ops::Range;

/// Echoes of at least this many bytes are spliced rather than copied:
/// below it, a copy costs less than an extra `iovec` (for the kernel, one
/// more piece to walk; for us, the bookkeeping).
pub const SPLICE_MIN: usize = 1024;
/// Most payloads spliced into one flush; past them, payloads are copied.
pub const MAX_SPLICES: usize = 16;
/// Most pieces of one flush: a write-buffer piece before each payload, and
/// the rest of the write buffer after the last.
pub const MAX_PIECES: usize = 2 * MAX_SPLICES + 1;

/// Payloads to be written from the read buffer: each is `store[range]`, to
/// go out where the write buffer reached `wbuf_at`. A fixed array: the
/// flush path allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Splices {
    entries: [(usize, Range<usize>); MAX_SPLICES],
    len: usize,
}

impl Splices {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Records that `payload`, which must lie inside the read buffer (at
    /// address `store_at`, `store_len` bytes long), goes out at position
    /// `wbuf_at` of the write buffer. Returns false, recording nothing, if
    /// it lies elsewhere (a gathered or inflated message, a reply the
    /// service made) or the list is full: then the caller copies it.
    ///
    /// Where it lies is worked out from addresses: the payload is a borrow
    /// of the read buffer while that is mutably borrowed for the protocol
    /// core, so it cannot be compared with it any other way.
    pub fn push(&mut self, wbuf_at: usize, store_at: usize, store_len: usize, payload: &[u8]) -> bool {
        let at = payload.as_ptr() as usize;
        let Some(start) = at.checked_sub(store_at) else {
            return false;
        };
        let end = start + payload.len();
        if end > store_len || self.len == MAX_SPLICES {
            return false;
        }
        self.entries[self.len] = (wbuf_at, start..end);
        self.len += 1;
        true
    }

    /// Fills `iov` with the output in order: pieces of `wbuf` and the
    /// payloads in `store` between them. Empty pieces are left out (a
    /// vectored write of nothing but empty pieces would look like a closed
    /// socket). Returns how many entries of `iov` were filled.
    pub fn gather<'a>(&self, wbuf: &'a [u8], store: &'a [u8], iov: &mut [IoSlice<'a>; MAX_PIECES]) -> usize {
        let mut n = 0;
        let mut put = |bytes: &'a [u8]| {
            if !bytes.is_empty() {
                iov[n] = IoSlice::new(bytes);
                n += 1;
            }
        };
        let mut from = 0;
        for (wbuf_at, range) in &self.entries[..self.len] {
            put(&wbuf[from..*wbuf_at]);
            put(&store[range.clone()]);
            from = *wbuf_at;
        }
        put(&wbuf[from..]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(iov: &[IoSlice<'_>]) -> Vec<u8> {
        iov.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn pieces_come_out_in_order() {
        let store: Vec<u8> = (0..100).collect();
        let addr = store.as_ptr() as usize;
        let mut s = Splices::default();
        let mut wbuf = b"h1".to_vec();
        assert!(s.push(wbuf.len(), addr, store.len(), &store[10..20]));
        wbuf.extend_from_slice(b"h2");
        assert!(s.push(wbuf.len(), addr, store.len(), &store[0..5]));
        // Two payloads back to back: no empty piece between them.
        assert!(s.push(wbuf.len(), addr, store.len(), &store[50..51]));
        wbuf.extend_from_slice(b"tail");
        let mut iov = [IoSlice::new(&[]); MAX_PIECES];
        let n = s.gather(&wbuf, &store, &mut iov);
        assert_eq!(n, 6);
        let mut want = b"h1".to_vec();
        want.extend_from_slice(&store[10..20]);
        want.extend_from_slice(b"h2");
        want.extend_from_slice(&store[0..5]);
        want.extend_from_slice(&store[50..51]);
        want.extend_from_slice(b"tail");
        assert_eq!(joined(&iov[..n]), want);
    }

    #[test]
    fn only_payloads_inside_the_store_are_taken() {
        let both: Vec<u8> = (0..100).collect();
        let (store, other) = both.split_at(50);
        let addr = store.as_ptr() as usize;
        let mut s = Splices::default();
        assert!(!s.push(0, addr, store.len(), &other[..10]), "after the store");
        assert!(!s.push(0, addr, store.len(), &both[45..55]), "across its end");
        let (_, inner) = store.split_at(10);
        assert!(
            !s.push(0, inner.as_ptr() as usize, inner.len(), &store[..5]),
            "before it"
        );
        assert!(s.is_empty());
        assert!(s.push(0, addr, store.len(), &store[40..50]), "up to its end");
    }

    #[test]
    fn a_full_list_refuses_and_clear_empties_it() {
        let store = [7u8; 64];
        let addr = store.as_ptr() as usize;
        let mut s = Splices::default();
        for i in 0..MAX_SPLICES {
            assert!(s.push(i + 1, addr, store.len(), &store[i..i + 1]));
        }
        assert!(!s.push(MAX_SPLICES + 1, addr, store.len(), &store[..1]));
        let wbuf = vec![0u8; MAX_SPLICES + 1];
        let mut iov = [IoSlice::new(&[]); MAX_PIECES];
        assert_eq!(s.gather(&wbuf, &store, &mut iov), MAX_PIECES);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.gather(&wbuf, &store, &mut iov), 1);
    }
}
