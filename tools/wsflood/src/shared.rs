//! What every thread of a run shares: the plan, the clock, the payload
//! filler and the progress counters. The worker threads (worker.rs), the
//! pubsub mode's driver and HTTP publishers (pubsub.rs, pubsub/http.rs) and
//! the report read it; it depends on none of them (a pubsub run's own
//! shared state, `pubsub::Shared`, is handed to each beside this one).

use crate::cli::{PayloadKind, Plan};
use crate::json::Json;
use crate::payload;
use crate::stats::Live;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;
use wsloop::proto::MessageKind;

const SEC: u64 = 1_000_000_000;
/// Everything ends this long after --duration.
pub const HARD_CAP: u64 = 10 * SEC;

/// State shared by all threads.
pub struct Shared {
    pub plan: Plan,
    pub start: Instant,
    pub filler: Box<[u8]>,
    /// --payload json: the messages' tables.
    pub json: Option<Json>,
    /// The type of echo and broadcast messages (text for JSON).
    pub kind: MessageKind,
    /// Connections that are done trying to open (established or failed).
    pub settled: AtomicUsize,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Broadcast: members of the room when publishing began (0 until then).
    pub members: AtomicUsize,
    /// Threads that have stopped sending.
    pub stopped: AtomicUsize,
    /// Broadcast: messages sent so far by each publisher.
    pub sent: Box<[AtomicU64]>,
    pub live: Box<[Live]>,
}

impl Shared {
    pub fn new(plan: Plan) -> Shared {
        let filler = payload::filler(plan.max_size).into_boxed_slice();
        // The sizes were checked with the plan: this cannot fail.
        let json = (plan.payload == PayloadKind::Json)
            .then(|| Json::new(&plan.sizes).ok())
            .flatten();
        Shared {
            kind: if json.is_some() {
                MessageKind::Text
            } else {
                MessageKind::Binary
            },
            json,
            sent: (0..plan.publishers).map(|_| AtomicU64::new(0)).collect(),
            live: (0..plan.threads).map(|_| Live::default()).collect(),
            plan,
            start: Instant::now(),
            filler,
            settled: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds since the run started: the one clock of every thread.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}
