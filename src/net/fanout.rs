//! Room delivery: at the end of each loop iteration, every room's batch
//! (the frames broadcast into it during the iteration, encoded once) is
//! written to each member with one vectored write, minus the member's own
//! frames and the presence notices it did not ask for. Only what a socket
//! will not take is queued, by reference to one shared copy of the batch.
//! The slow-consumer policy is applied here.

use super::conn::Conn;
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

/// Scratch space reused from iteration to iteration.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The byte ranges of a batch that go to the current member.
    ranges: Vec<(usize, usize)>,
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
    ) {
        let dirty = rooms.take_dirty();
        for &id in &dirty {
            let Some(room) = rooms.get_mut(id) else { continue };
            let mut shared = None;
            for member in &room.members {
                let m = member.conn;
                let Some(conn) = conns.get_mut(m) else { continue };
                let wants_presence = member.presence.is_some();
                if let Some(d) = self.deliver_to(conn, m, wants_presence, room, &mut shared, config, stats) {
                    self.deferred.push((m, d));
                }
            }
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
    /// with one vectored write; queues by reference what the socket does
    /// not take. Applies the slow-consumer policy.
    #[allow(clippy::too_many_arguments)]
    fn deliver_to<S: Transport>(
        &mut self,
        conn: &mut Conn<S>,
        key: usize,
        wants_presence: bool,
        room: &Room,
        shared: &mut Option<Rc<[u8]>>,
        config: &Config,
        stats: &mut Stats,
    ) -> Option<Deferred> {
        if let Err(d) = self.select(conn.queued(), key, wants_presence, room, config, stats) {
            return Some(d);
        }
        if self.ranges.is_empty() {
            return None;
        }
        let batch = &room.batch;
        let (mut next, mut partial) = (0, 0);
        if conn.queued() == 0 {
            match write_ranges(&mut conn.stream, batch, &self.ranges, stats) {
                Ok(at) => (next, partial) = at,
                Err(_) => return Some(Deferred::Teardown("write error")),
            }
        }
        if next < self.ranges.len() {
            // The socket is full: keep the rest by reference. The batch is
            // copied into a shared buffer once per room per iteration, and
            // only when some member needs it.
            let rc = shared.get_or_insert_with(|| Rc::from(&batch[..]));
            let q = conn.out.get_or_insert_with(Box::default);
            for (i, &(s, e)) in self.ranges[next..].iter().enumerate() {
                let s = if i == 0 { s + partial } else { s };
                q.push_shared(rc, s, e);
            }
        }
        None
    }

    /// Collects into `self.ranges` the parts of the batch that go to member
    /// `key`, merging neighbours; `Err` if the member is to be closed as a
    /// slow consumer.
    fn select(
        &mut self,
        queued: usize,
        key: usize,
        wants_presence: bool,
        room: &Room,
        config: &Config,
        stats: &mut Stats,
    ) -> Result<(), Deferred> {
        self.ranges.clear();
        let (mut total, mut frames, mut start) = (0, 0, 0);
        for f in &room.frames {
            let (s, e) = (start, f.end);
            start = f.end;
            if (f.sender == Some(key) && !config.broadcast_to_sender) || (f.presence && !wants_presence) {
                continue;
            }
            // Slow means a backlog over the cap: a frame always goes onto a
            // queue that is under it, however large the frame (a message up
            // to --max-message-size is not a slow consumer's fault).
            if queued + total > config.max_backpressure {
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
/// per write, until done or the socket is full. Returns the index of the
/// first range not completely written and how much of it was.
fn write_ranges<S: Transport>(
    stream: &mut S,
    batch: &[u8],
    ranges: &[(usize, usize)],
    stats: &mut Stats,
) -> io::Result<(usize, usize)> {
    let (mut next, mut partial) = (0, 0);
    while next < ranges.len() {
        let window = &ranges[next..ranges.len().min(next + MAX_IOVECS)];
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        for (i, &(s, e)) in window.iter().enumerate() {
            iov[i] = IoSlice::new(&batch[s..e]);
        }
        stats.write_calls += 1;
        match stream.write_vectored(&iov[..window.len()]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                while n > 0 {
                    let (s, e) = ranges[next];
                    if n < e - s {
                        partial = n;
                        return Ok((next, partial));
                    }
                    n -= e - s;
                    next += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((next, partial))
}
