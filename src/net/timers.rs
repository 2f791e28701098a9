//! Deadlines: a binary min-heap of (when, connection) with at most one entry
//! per connection, indexed so that an entry can be moved or removed in
//! O(log n). The earliest entry is the poll timeout.
//!
//! A connection's entry may be earlier than its real deadline: activity
//! moves an open WebSocket's deadline later without touching the heap (it
//! costs a store in the connection), and when the early entry fires the
//! loop asks the connection again and moves the entry. So activity costs
//! nothing here, a deadline O(log n), and a connection that goes takes its
//! entry with it: the heap never holds more entries than open connections.
//! Its storage grows to the largest number of connections seen and is
//! reused; no allocation per connection or per timer.

/// Position of a key that has no entry.
const NONE: u32 = u32::MAX;

#[derive(Debug, Default)]
pub struct Timers {
    /// (deadline, key), a binary min-heap on the deadline.
    heap: Vec<(u64, u32)>,
    /// `pos[key]`: where key's entry is in `heap`, or `NONE`.
    pos: Vec<u32>,
}

impl Timers {
    /// Sets connection `key`'s entry to `at` (milliseconds on the loop's
    /// clock), adding it if it has none.
    pub fn set(&mut self, key: usize, at: u64) {
        if key >= self.pos.len() {
            self.pos.resize(key + 1, NONE);
        }
        let i = self.pos[key];
        if i == NONE {
            self.heap.push((at, key as u32));
            let i = self.heap.len() - 1;
            self.pos[key] = i as u32;
            self.sift_up(i);
        } else {
            let i = i as usize;
            let before = self.heap[i].0;
            self.heap[i].0 = at;
            if at < before {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    /// Moves `key`'s entry earlier to `at`, or adds it; an entry that is
    /// already at or before `at` stays (it will fire early and be moved).
    pub fn set_earlier(&mut self, key: usize, at: u64) {
        match self.get(key) {
            Some(current) if current <= at => {}
            _ => self.set(key, at),
        }
    }

    /// `key`'s entry, if it has one.
    pub fn get(&self, key: usize) -> Option<u64> {
        match self.pos.get(key) {
            Some(&i) if i != NONE => Some(self.heap[i as usize].0),
            _ => None,
        }
    }

    /// Removes `key`'s entry, if any.
    pub fn remove(&mut self, key: usize) {
        let Some(&i) = self.pos.get(key) else { return };
        if i == NONE {
            return;
        }
        let i = i as usize;
        self.pos[key] = NONE;
        let last = self.heap.pop().expect("an entry exists");
        if i < self.heap.len() {
            let moved_from = self.heap[i].0;
            self.heap[i] = last;
            self.pos[last.1 as usize] = i as u32;
            if last.0 < moved_from {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    /// When the earliest entry is due.
    pub fn next(&self) -> Option<u64> {
        self.heap.first().map(|&(at, _)| at)
    }

    /// Removes and returns the key of an entry due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        match self.heap.first() {
            Some(&(at, key)) if at <= now => {
                self.remove(key as usize);
                Some(key as usize)
            }
            _ => None,
        }
    }

    /// Entries (one per connection that has a deadline).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < self.heap.len() && self.heap[r].0 < self.heap[least].0 {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_with_moves_and_removals() {
        let mut t = Timers::default();
        t.set(1, 300);
        t.set(2, 100);
        t.set(3, 200);
        assert_eq!(t.next(), Some(100));
        t.set_earlier(2, 150); // later: stays at 100
        assert_eq!(t.get(2), Some(100));
        t.set_earlier(1, 50);
        assert_eq!(t.next(), Some(50));
        t.remove(1);
        t.remove(1); // twice is harmless
        assert_eq!(t.pop_due(99), None);
        assert_eq!(t.pop_due(250), Some(2));
        assert_eq!(t.pop_due(250), Some(3));
        assert_eq!(t.pop_due(250), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.get(3), None);
    }

    /// Against a plain model: random sets, moves and removals; the heap
    /// always yields every live entry in deadline order, and never holds
    /// more entries than keys.
    #[test]
    fn matches_a_model_under_churn() {
        let mut t = Timers::default();
        let mut model: Vec<Option<u64>> = vec![None; 64];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 64) as usize;
            let at = round + (x >> 8) % 1000;
            match (x >> 40) % 4 {
                0 => {
                    t.remove(key);
                    model[key] = None;
                }
                1 => {
                    t.set_earlier(key, at);
                    model[key] = Some(model[key].map_or(at, |m| m.min(at)));
                }
                _ => {
                    t.set(key, at);
                    model[key] = Some(at);
                }
            }
            assert_eq!(t.len(), model.iter().flatten().count());
            assert!(t.len() <= 64);
            assert_eq!(t.get(key), model[key]);
        }
        let mut expect: Vec<(u64, usize)> = model
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.map(|at| (at, k)))
            .collect();
        expect.sort();
        let mut got = Vec::new();
        while let Some(at) = t.next() {
            let key = t.pop_due(at).unwrap();
            got.push((at, key));
        }
        let at_only = |v: &[(u64, usize)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(at_only(&got), at_only(&expect));
        got.sort();
        assert_eq!(got, expect);
    }
}
