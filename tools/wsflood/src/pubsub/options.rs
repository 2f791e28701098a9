//! The pubsub mode's options: the flags as given ([`Flags`]), checked into
//! [`Options`]. A leaf of the tool's modules (cli.rs reads it, and so does
//! the mode itself), so that the command line and the mode that runs it
//! do not import each other.

use super::wire;
use crate::track::SeqTrack;
use clap::ValueEnum;
use wsloop::proto::pubsub::MAX_BATCH;

/// Most memory the sequence tracking and publish counts may take.
const MAX_TRACKING_BYTES: usize = 256 << 20;

/// How publishers publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishVia {
    /// A /pubsub WebSocket per publisher, publish requests.
    Ws,
    /// POST /broadcast/{topic}, one message per request (keep-alive).
    Http,
    /// POST /pubsub, a JSON array of --batch publish requests per request.
    HttpBatch,
}

impl PublishVia {
    pub fn name(self) -> &'static str {
        match self {
            PublishVia::Ws => "ws",
            PublishVia::Http => "http",
            PublishVia::HttpBatch => "http-batch",
        }
    }
}

/// The checked pubsub part of a run description.
#[derive(Debug, Clone)]
pub struct Options {
    pub topics: u32,
    /// Topics per subscriber.
    pub subscriptions: u32,
    pub seed: u64,
    pub via: PublishVia,
    pub binary: bool,
    /// http-batch: messages per request.
    pub batch: usize,
    pub publishers: u32,
    /// Subscriber connections (--connections).
    pub subscribers: usize,
    /// Messages per second, all publishers together (0: unpaced).
    pub rate: f64,
}

/// The pubsub flags as given, before [`Options::check`] (cli.rs fills it
/// in from the command line).
#[derive(Debug, Clone)]
pub struct Flags {
    pub topics: usize,
    pub subscriptions: usize,
    pub publishers: usize,
    pub seed: u64,
    pub publish_via: PublishVia,
    pub binary: bool,
    pub batch: usize,
    pub connections: usize,
    pub rate: f64,
}

impl Options {
    /// Checks the pubsub flags; `sizes` are the body sizes, `max_payload`
    /// the longest message the run may send.
    pub fn check(flags: &Flags, sizes: &[usize], max_payload: usize) -> Result<Options, String> {
        let (topics, subs, publishers) = (flags.topics, flags.subscriptions, flags.publishers);
        if topics == 0 || topics > wire::MAX_TOPICS {
            return Err(format!("--topics must be between 1 and {}", wire::MAX_TOPICS));
        }
        if subs == 0 || subs > topics || subs > 1 << 16 {
            return Err("--subscriptions must be between 1 and --topics (at most 65536)".into());
        }
        if publishers == 0 || publishers > wire::MAX_PUBLISHERS {
            return Err(format!("--publishers must be between 1 and {}", wire::MAX_PUBLISHERS));
        }
        if let Some(small) = sizes.iter().find(|&&s| s < wire::HEADER) {
            return Err(format!(
                "pubsub messages carry a {}-byte header; payload size {small} is too small",
                wire::HEADER
            ));
        }
        if flags.binary && flags.publish_via == PublishVia::HttpBatch {
            return Err("--binary cannot go in a POST /pubsub batch (JSON); use --publish-via ws or http".into());
        }
        let max = sizes.iter().copied().max().unwrap_or(0);
        if flags.batch == 0 || flags.batch.saturating_mul(max + 64) > max_payload {
            return Err(format!(
                "--batch must be at least 1, and a batch of the largest message at most {} MiB",
                max_payload >> 20
            ));
        }
        let tracking = flags
            .connections
            .saturating_mul(subs)
            .saturating_mul(publishers)
            .saturating_mul(std::mem::size_of::<SeqTrack>())
            .saturating_add(publishers.saturating_mul(topics).saturating_mul(8));
        if tracking > MAX_TRACKING_BYTES {
            return Err(format!(
                "tracking {} subscribers x {subs} topics x {publishers} publishers would take {} MiB; \
                 use fewer publishers",
                flags.connections,
                tracking >> 20
            ));
        }
        Ok(Options {
            topics: topics as u32,
            subscriptions: subs as u32,
            seed: flags.seed,
            via: flags.publish_via,
            binary: flags.binary,
            batch: flags.batch,
            publishers: publishers as u32,
            subscribers: flags.connections,
            rate: flags.rate,
        })
    }

    /// Publishers with a WebSocket (they come first among the connections).
    pub fn ws_publishers(&self) -> usize {
        if self.via == PublishVia::Ws {
            self.publishers as usize
        } else {
            0
        }
    }

    /// Publishers with an HTTP connection (a thread of their own).
    pub fn http_publishers(&self) -> usize {
        self.publishers as usize - self.ws_publishers()
    }

    /// Subscribe requests per subscriber (at most [`MAX_BATCH`] topics each).
    pub fn batches(&self) -> u32 {
        self.subscriptions.div_ceil(MAX_BATCH as u32)
    }

    /// Nanoseconds between two requests of one publisher carrying
    /// `per_request` messages each (0: unpaced).
    pub fn period(&self, per_request: usize) -> u64 {
        if self.rate > 0.0 {
            ((per_request as f64 * f64::from(self.publishers) * 1e9 / self.rate) as u64).max(1)
        } else {
            0
        }
    }
}
