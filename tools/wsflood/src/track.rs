//! What a broadcast receiver has seen, to tell in-order deliveries from
//! duplicates, late (out-of-order) ones and, at the end, losses.

/// How one delivery compares with what came before from that publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New, and nothing is missing before it (or the gap is counted later
    /// as loss unless it fills in).
    New,
    /// New, but it arrived after a later one from the same publisher.
    Late,
    /// Seen before.
    Duplicate,
}

/// One receiver's view of one publisher: the next sequence number it
/// expects and which of the 64 before it have arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTrack {
    next: u64,
    /// Bit i: sequence number `next - 1 - i` has arrived.
    window: u64,
}

impl SeqTrack {
    /// One past the highest sequence number seen (0: none yet).
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.window = if shift >= 64 { 1 } else { (self.window << shift) | 1 };
            self.next = seq + 1;
            return Arrival::New;
        }
        let back = self.next - 1 - seq;
        if back >= 64 {
            // Too old to remember: late or a duplicate; call it late.
            return Arrival::Late;
        }
        let bit = 1u64 << back;
        if self.window & bit != 0 {
            Arrival::Duplicate
        } else {
            self.window |= bit;
            Arrival::Late
        }
    }
}

/// All-to-all rounds: which members' messages of the current round and of
/// the next one have arrived (no member can be further ahead: its message
/// for round r+2 waits for ours of round r+1, which we send only after
/// round r completes).
#[derive(Debug, Clone)]
pub struct Rounds {
    /// The round this connection is in (its message for it is sent).
    pub round: u64,
    counts: [u64; 2],
    words: usize,
    /// Two bit sets of `words` words: rounds with even and odd numbers.
    bits: Box<[u64]>,
}

/// How one round message compares with the rounds in play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundArrival {
    New,
    Duplicate,
    /// From a round that cannot be in play: the server reordered or
    /// invented messages.
    OutOfOrder,
}

impl Rounds {
    pub fn new(members: usize) -> Self {
        let words = members.div_ceil(64).max(1);
        Rounds {
            round: 0,
            counts: [0; 2],
            words,
            bits: vec![0; 2 * words].into_boxed_slice(),
        }
    }

    pub fn arrive(&mut self, sender: u32, round: u64) -> RoundArrival {
        if round < self.round {
            // Every message of a finished round had arrived.
            return RoundArrival::Duplicate;
        }
        if round > self.round + 1 || sender as usize >= self.words * 64 {
            return RoundArrival::OutOfOrder;
        }
        let set = (round % 2) as usize;
        let (w, b) = (set * self.words + sender as usize / 64, 1u64 << (sender % 64));
        if self.bits[w] & b != 0 {
            return RoundArrival::Duplicate;
        }
        self.bits[w] |= b;
        self.counts[set] += 1;
        RoundArrival::New
    }

    /// If the current round has all `expected` messages, moves on to the
    /// next one and returns true.
    pub fn advance(&mut self, expected: u64) -> bool {
        let set = (self.round % 2) as usize;
        if expected == 0 || self.counts[set] < expected {
            return false;
        }
        self.counts[set] = 0;
        self.bits[set * self.words..(set + 1) * self.words].fill(0);
        self.round += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_late_and_duplicates() {
        let mut t = SeqTrack::default();
        assert_eq!(t.arrive(0), Arrival::New);
        assert_eq!(t.arrive(1), Arrival::New);
        assert_eq!(t.arrive(1), Arrival::Duplicate);
        assert_eq!(t.arrive(4), Arrival::New);
        assert_eq!(t.arrive(3), Arrival::Late);
        assert_eq!(t.arrive(3), Arrival::Duplicate);
        assert_eq!(t.arrive(2), Arrival::Late);
        assert_eq!(t.arrive(0), Arrival::Duplicate);
        assert_eq!(t.arrive(200), Arrival::New);
        assert_eq!(t.arrive(100), Arrival::Late);
        assert_eq!(t.arrive(199), Arrival::Late);
        assert_eq!(t.arrive(199), Arrival::Duplicate);
    }

    #[test]
    fn rounds_advance_when_complete() {
        let mut r = Rounds::new(3);
        assert_eq!(r.arrive(0, 0), RoundArrival::New);
        assert_eq!(r.arrive(1, 0), RoundArrival::New);
        assert_eq!(r.arrive(1, 0), RoundArrival::Duplicate);
        assert_eq!(r.arrive(1, 1), RoundArrival::New, "a member one round ahead");
        assert_eq!(r.arrive(1, 2), RoundArrival::OutOfOrder);
        assert!(!r.advance(3));
        assert_eq!(r.arrive(2, 0), RoundArrival::New);
        assert!(r.advance(3));
        assert_eq!(r.round, 1);
        assert!(!r.advance(3));
        assert_eq!(r.arrive(0, 0), RoundArrival::Duplicate);
        assert_eq!(r.arrive(0, 1), RoundArrival::New);
        assert_eq!(r.arrive(2, 1), RoundArrival::New);
        assert!(r.advance(3));
        assert_eq!(r.arrive(0, 2), RoundArrival::New, "the even set was cleared");
    }
}
