//! Topic delivery. At the end of each loop iteration every connection gets
//! its share of every topic published to during the iteration: the frames
//! of those topics' batches (encoded once, in the form it wants), minus its
//! own messages and the presence notices it did not ask for, in **one
//! write call** however many topics it is subscribed to (a `send` when its
//! share is one range of one batch, a `writev` of the pieces otherwise).
//!
//! Only what a socket will not take is queued: a large frame by reference
//! to one shared copy of it (made once, for the first connection that needs
//! it), a small one by copy. So a connection's queue keeps alive exactly
//! the frames it still has to send, and is charged for them, never for a
//! whole batch of other people's messages. The slow-consumer policy is
//! applied here.

use super::conn::{Budget, Conn};
use super::io::Transport;
use super::outq::MAX_IOVECS;
use crate::config::{Config, SlowConsumer, READ_BUFFER};
use crate::proto::deflate::Codec;
use crate::service::metrics::Stats;
use crate::service::topics::{flags, Batch, Topics};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::rc::Rc;

/// Something to do to a connection once the topics are no longer borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deferred {
    Teardown(&'static str),
    /// Over its backpressure cap under `--slow-consumer close`.
    SlowConsumer,
}

/// Frames at least this long are queued by reference to a shared copy;
/// shorter ones are copied into the connection's own queue (a reference and
/// its bookkeeping would cost more than the bytes).
const SHARE_MIN: usize = 1024;

/// Bytes of one form of one batch: `batches[batch].buffer(form)[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    batch: u32,
    form: u8,
    start: usize,
    end: usize,
}

impl Piece {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn bytes<'b>(&self, batches: &'b [Batch]) -> &'b [u8] {
        &batches[self.batch as usize].buffer(self.form)[self.start..self.end]
    }
}

/// A subscription of a dirty topic: (connection, batch, flags).
type Pending = (u32, u32, u8);

/// Scratch space reused from iteration to iteration.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    pending: Vec<Pending>,
    /// What goes to the current connection, neighbouring frames merged.
    ranges: Vec<Piece>,
    /// The same, frame by frame.
    picked: Vec<Piece>,
    /// Shared copies of large frames, made when a first connection has to
    /// queue one: by (batch, form, start).
    shared: HashMap<(u32, u8, usize), Rc<[u8]>>,
    /// Connections to act on after delivery.
    pub deferred: Vec<(usize, Deferred)>,
}

impl Fanout {
    /// Writes this iteration's batches to their subscribers and empties
    /// them. Connections to close or drop are left in `self.deferred`.
    pub fn deliver<S: Transport>(
        &mut self,
        topics: &mut Topics,
        conns: &mut Slab<Conn<S>>,
        config: &Config,
        stats: &mut Stats,
        memory: &mut Budget,
        codec: &mut Codec,
    ) {
        topics.compress_batches(codec);
        let batches = topics.batches();
        if batches.is_empty() {
            return;
        }
        if let [batch] = batches {
            // One topic (a room's iteration): each subscriber once, straight
            // from the topic's list.
            if let Some(topic) = topics.get(batch.topic) {
                for s in topic.subs() {
                    self.deliver_group(&[(s.conn, 0, s.flags)], conns, batches, config, stats, memory);
                }
            }
            self.shared.clear();
            topics.end_iteration(4 * READ_BUFFER);
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        for (b, batch) in batches.iter().enumerate() {
            let Some(topic) = topics.get(batch.topic) else { continue };
            pending.extend(topic.subs().iter().map(|s| (s.conn, b as u32, s.flags)));
        }
        // A connection's share of each topic is gathered into its one write.
        pending.sort_unstable_by_key(|&(conn, batch, _)| (conn, batch));
        for group in pending.chunk_by(|a, b| a.0 == b.0) {
            self.deliver_group(group, conns, batches, config, stats, memory);
        }
        self.pending = pending;
        self.shared.clear();
        topics.end_iteration(4 * READ_BUFFER);
    }

    /// Delivers one connection's `group` (all its entries, same connection)
    /// and brings its memory charge up to date.
    fn deliver_group<S: Transport>(
        &mut self,
        group: &[Pending],
        conns: &mut Slab<Conn<S>>,
        batches: &[Batch],
        config: &Config,
        stats: &mut Stats,
        memory: &mut Budget,
    ) {
        let key = group[0].0 as usize;
        let Some(conn) = conns.get_mut(key) else { return };
        let over_budget = memory.exceeded();
        if let Some(d) = self.deliver_to(conn, key, group, batches, config, stats, over_budget) {
            self.deferred.push((key, d));
        }
        memory.sync(conn);
    }

    /// Writes connection `key` its share of the batches in `group` with one
    /// write call; queues what the socket does not take. Applies the
    /// slow-consumer policy.
    #[allow(clippy::too_many_arguments)]
    fn deliver_to<S: Transport>(
        &mut self,
        conn: &mut Conn<S>,
        key: usize,
        group: &[Pending],
        batches: &[Batch],
        config: &Config,
        stats: &mut Stats,
        over_budget: bool,
    ) -> Option<Deferred> {
        if let Err(d) = self.select(conn.queued(), key, group, batches, config, stats, over_budget) {
            return Some(d);
        }
        if self.ranges.is_empty() {
            return None;
        }
        let mut written = 0;
        if conn.queued() == 0 {
            match write_pieces(&mut conn.stream, batches, &self.ranges, stats) {
                Ok(n) => written = n,
                Err(_) => return Some(Deferred::Teardown("write error")),
            }
        }
        // Queue the rest, frame by frame.
        for p in &self.picked {
            if written >= p.len() {
                written -= p.len();
                continue;
            }
            let from = p.start + written;
            written = 0;
            let q = conn.out.get_or_insert_with(Box::default);
            let buffer = batches[p.batch as usize].buffer(p.form);
            if p.len() < SHARE_MIN {
                q.push(&buffer[from..p.end]);
            } else {
                let rc = self
                    .shared
                    .entry((p.batch, p.form, p.start))
                    .or_insert_with(|| Rc::from(&buffer[p.start..p.end]));
                q.push_shared(rc, from - p.start, p.len());
            }
        }
        None
    }

    /// Collects into `self.ranges` and `self.picked` the frames that go to
    /// connection `key`; `Err` if it is to be closed as a slow consumer.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &mut self,
        queued: usize,
        key: usize,
        group: &[Pending],
        batches: &[Batch],
        config: &Config,
        stats: &mut Stats,
        over_budget: bool,
    ) -> Result<(), Deferred> {
        self.ranges.clear();
        self.picked.clear();
        let mut total = 0;
        for &(_, b, sub_flags) in group {
            let batch = &batches[b as usize];
            let form = sub_flags & flags::FORM;
            for (i, f) in batch.frames.iter().enumerate() {
                let own = f.sender == Some(key as u32) && !config.broadcast_to_sender;
                if own || (f.presence && sub_flags & flags::PRESENCE == 0) {
                    continue;
                }
                let (start, end) = batch.frame_range(i, form);
                if start == end {
                    continue; // not encoded in this form (presence for envelopes)
                }
                // Slow means a backlog over the cap: a frame always goes onto
                // a queue that is under it, however large the frame (a
                // message up to --max-message-size is not a slow consumer's
                // fault). When memory is short (--max-memory), any backlog is
                // slow.
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
                let piece = Piece {
                    batch: b,
                    form,
                    start,
                    end,
                };
                total += piece.len();
                if form & flags::ENVELOPE != 0 {
                    stats.deliveries_enveloped += 1;
                }
                self.picked.push(piece);
                match self.ranges.last_mut() {
                    Some(last) if last.batch == b && last.form == form && last.end == start => last.end = end,
                    _ => self.ranges.push(piece),
                }
            }
        }
        stats.messages_out += self.picked.len() as u64;
        stats.bytes_out += total as u64;
        Ok(())
    }
}

/// Writes `pieces` straight to the socket, `MAX_IOVECS` per write, until
/// done or the socket is full. Returns how many bytes it took.
fn write_pieces<S: Transport>(
    stream: &mut S,
    batches: &[Batch],
    pieces: &[Piece],
    stats: &mut Stats,
) -> io::Result<usize> {
    let (mut next, mut partial, mut total) = (0, 0, 0);
    while next < pieces.len() {
        let window = &pieces[next..pieces.len().min(next + MAX_IOVECS)];
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        for (i, p) in window.iter().enumerate() {
            let bytes = p.bytes(batches);
            iov[i] = IoSlice::new(if i == 0 { &bytes[partial..] } else { bytes });
        }
        stats.write_calls += 1;
        match stream.write_vectored(&iov[..window.len()]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                total += n;
                while n > 0 {
                    let left = pieces[next].len() - partial;
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
