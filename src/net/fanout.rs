//! Room delivery: at the end of each loop iteration, every room's batch
//! (the frames broadcast into it during the iteration, encoded once) is
//! written to each member with one vectored write, minus the member's own
//! frames and the presence notices it did not ask for. Only what a socket
//! will not take is queued: a large frame by reference to one shared copy
//! of it (made once, for the first member that needs it), a small one by
//! copy. So a member's queue keeps alive exactly the frames it still has
//! to send, and is charged for them, never for a whole batch of other
//! people's messages. The slow-consumer policy is applied here.

use super::conn::{Budget, Conn};
use super::outq::MAX_IOVECS;
use super::transport::Transport;
use crate::config::{Config, SlowConsumer, READ_BUFFER};
use crate::service::broadcast::{Room, Rooms};
use crate::service::metrics::Stats;
use slab::Slab;
use std::io::{self, IoSlice};
use std::rc::Rc;

/// Something to do to a member once the rooms are no longer borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deferred {
    Teardown(&'static str),
    /// Over its backpressure cap under `--slow-consumer close`.
    SlowConsumer,
}

/// Frames at least this long are queued by reference to a shared copy;
/// shorter ones are copied into the member's own queue (a reference and
/// its bookkeeping would cost more than the bytes).
const SHARE_MIN: usize = 1024;

/// Scratch space reused from iteration to iteration.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The byte ranges of a batch that go to the current member, with
    /// neighbouring frames merged.
    ranges: Vec<(usize, usize)>,
    /// The frames that go to the current member: (start, end) in the batch.
    picked: Vec<(usize, usize)>,
    /// Shared copies of the current room's large frames, by start offset,
    /// made when a first member has to queue one.
    shared: Vec<(usize, Rc<[u8]>)>,
    /// Members to act on after delivery.
    pub deferred: Vec<(usize, Deferred)>,
}

impl Fanout {
    /// Writes every room's batch of this iteration to its members and
    /// empties the batches. Members to close or drop are left in
    /// `self.deferred`.
    pub fn deliver<S: Transport>(
        &mut self,
        rooms: &mut Rooms,
        conns: &mut Slab<Conn<S>>,
        config: &Config,
        stats: &mut Stats,
        memory: &mut Budget,
    ) {
        let dirty = rooms.take_dirty();
        for &id in &dirty {
            let Some(room) = rooms.get_mut(id) else { continue };
            self.shared.clear();
            for member in &room.members {
                let m = member.conn;
                let Some(conn) = conns.get_mut(m) else { continue };
                let wants_presence = member.presence.is_some();
                let over_budget = memory.exceeded();
                if let Some(d) = self.deliver_to(conn, m, wants_presence, room, config, stats, over_budget) {
                    self.deferred.push((m, d));
                }
                memory.sync(conn);
            }
            self.shared.clear();
            room.batch.clear();
            room.frames.clear();
            if room.batch.capacity() > 4 * READ_BUFFER {
                room.batch = Vec::new();
                room.frames = Vec::new();
            }
        }
        rooms.restore_dirty(dirty);
    }

    /// Writes a room's batch to member `key`, minus what is not for it,
    /// with one vectored write; queues what the socket does not take.
    /// Applies the slow-consumer policy.
    #[allow(clippy::too_many_arguments)]
    fn deliver_to<S: Transport>(
        &mut self,
        conn: &mut Conn<S>,
        key: usize,
        wants_presence: bool,
        room: &Room,
        config: &Config,
        stats: &mut Stats,
        over_budget: bool,
    ) -> Option<Deferred> {
        if let Err(d) = self.select(conn.queued(), key, wants_presence, room, config, stats, over_budget) {
            return Some(d);
        }
        if self.ranges.is_empty() {
            return None;
        }
        let batch = &room.batch;
        let mut written = 0;
        if conn.queued() == 0 {
            match write_ranges(&mut conn.stream, batch, &self.ranges, stats) {
                Ok(n) => written = n,
                Err(_) => return Some(Deferred::Teardown("write error")),
            }
        }
        // Queue the rest, frame by frame.
        for i in 0..self.picked.len() {
            let (s, e) = self.picked[i];
            if written >= e - s {
                written -= e - s;
                continue;
            }
            let from = s + written;
            written = 0;
            let q = conn.out.get_or_insert_with(Box::default);
            if e - s < SHARE_MIN {
                q.push(&batch[from..e]);
            } else {
                let rc = match self.shared.iter().position(|(at, _)| *at == s) {
                    Some(j) => &self.shared[j].1,
                    None => {
                        self.shared.push((s, Rc::from(&batch[s..e])));
                        &self.shared[self.shared.len() - 1].1
                    }
                };
                q.push_shared(rc, from - s, e - s);
            }
        }
        None
    }

    /// Collects into `self.ranges` the parts of the batch that go to member
    /// `key`, merging neighbours; `Err` if the member is to be closed as a
    /// slow consumer.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &mut self,
        queued: usize,
        key: usize,
        wants_presence: bool,
        room: &Room,
        config: &Config,
        stats: &mut Stats,
        over_budget: bool,
    ) -> Result<(), Deferred> {
        self.ranges.clear();
        self.picked.clear();
        let (mut total, mut frames, mut start) = (0, 0, 0);
        for f in &room.frames {
            let (s, e) = (start, f.end);
            start = f.end;
            if (f.sender == Some(key) && !config.broadcast_to_sender) || (f.presence && !wants_presence) {
                continue;
            }
            // Slow means a backlog over the cap: a frame always goes onto a
            // queue that is under it, however large the frame (a message up
            // to --max-message-size is not a slow consumer's fault). When
            // memory is short (--max-memory), any backlog is slow.
            let short = queued > 0 && over_budget;
            if short {
                stats.memory_refused_deliveries += 1;
            }
            if queued + total > config.max_backpressure || short {
                match config.slow_consumer {
                    SlowConsumer::Close => return Err(Deferred::SlowConsumer),
                    SlowConsumer::Drop => {
                        stats.slow_consumer_drops += 1;
                        continue;
                    }
                }
            }
            total += e - s;
            frames += 1;
            self.picked.push((s, e));
            match self.ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => self.ranges.push((s, e)),
            }
        }
        stats.messages_out += frames;
        stats.bytes_out += total as u64;
        Ok(())
    }
}

/// Writes `ranges` of `batch` straight to the socket, `MAX_IOVECS` ranges
/// per write, until done or the socket is full. Returns how many bytes it
/// took.
fn write_ranges<S: Transport>(
    stream: &mut S,
    batch: &[u8],
    ranges: &[(usize, usize)],
    stats: &mut Stats,
) -> io::Result<usize> {
    let (mut next, mut partial, mut total) = (0, 0, 0);
    while next < ranges.len() {
        let window = &ranges[next..ranges.len().min(next + MAX_IOVECS)];
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        for (i, &(s, e)) in window.iter().enumerate() {
            iov[i] = IoSlice::new(&batch[s + if i == 0 { partial } else { 0 }..e]);
        }
        stats.write_calls += 1;
        match stream.write_vectored(&iov[..window.len()]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                total += n;
                while n > 0 {
                    let (s, e) = ranges[next];
                    let left = e - s - partial;
                    if n < left {
                        partial += n;
                        break;
                    }
                    n -= left;
                    partial = 0;
                    next += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}
