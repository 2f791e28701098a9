//! Deadlines: a min-heap of (when, connection) whose earliest entry is the
//! poll timeout. A connection has at most one live entry, remembered in its
//! record as `timer_at`; when its deadline moves later (activity), nothing
//! is touched: the entry fires early, the loop recomputes the deadline from
//! the connection's state and re-arms it. So activity costs a store, a
//! deadline costs O(log n), and nothing ever scans all connections.
//! The heap's storage grows to the number of connections and is reused:
//! no allocation per connection or per timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Timers {
    /// Adds an entry for connection `key` at `at` (milliseconds on the
    /// loop's clock).
    pub fn schedule(&mut self, key: usize, at: u64) {
        self.heap.push(Reverse((at, key)));
    }

    /// When the earliest entry is due.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns an entry due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries, live or superseded.
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first() {
        let mut t = Timers::default();
        t.schedule(1, 300);
        t.schedule(2, 100);
        t.schedule(3, 200);
        assert_eq!(t.next(), Some(100));
        assert_eq!(t.pop_due(99), None);
        assert_eq!(t.pop_due(250), Some((100, 2)));
        assert_eq!(t.pop_due(250), Some((200, 3)));
        assert_eq!(t.pop_due(250), None);
        assert_eq!(t.len(), 1);
    }
}
