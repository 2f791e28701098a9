//! The command line, and the checked [`Plan`] it turns into.

use crate::deflate::Setup as DeflateSetup;
use crate::json;
use crate::payload::BCAST_HEADER;
use crate::pubsub::options::{self, PublishVia};
use crate::pubsub::wire;
use crate::target::{self, Target};
use clap::{Parser, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;
use wsloop::proto::handshake::DeflateOffer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each connection keeps --inflight messages outstanding and checks
    /// every echo byte for byte.
    Echo,
    /// Connections join one room (URL path /broadcast/ROOM); publishers
    /// send, everyone counts deliveries, losses, duplicates and reordering.
    Broadcast,
    /// Open connections and hold them; with --server-pid, the server's RSS
    /// per connection.
    Idle,
    /// Connect, handshake, one echo, close; again, as fast as possible or at
    /// --rate cycles per second.
    Churn,
    /// Topics (URL path /pubsub): each connection subscribes to
    /// --subscriptions of --topics topics; --publishers publish at --rate
    /// in all; every delivery is checked.
    Pubsub,
}

/// What message payloads hold (echo, broadcast, churn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// Binary messages: a stamp, then pseudo-random bytes (incompressible).
    Pattern,
    /// Text messages of realistic JSON, by size: ticker ticks (under 256
    /// bytes), chat messages (under 4 KiB), documents (larger); at least
    /// 93 bytes, 120 by default.
    Json,
}

impl PayloadKind {
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Pattern => "pattern",
            PayloadKind::Json => "json",
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
            Mode::Idle => "idle",
            Mode::Churn => "churn",
            Mode::Pubsub => "pubsub",
        }
    }
}

/// Connection-flood and load generator for WebSocket servers (ws:// and
/// wss://).
///
/// One mio poll loop per thread, on wsloop's sans-IO protocol core in the
/// client role. Prints a progress line every second on stderr and a
/// summary on stdout; exits 1 if any message failed verification
/// (mismatch, loss, duplication, reordering, protocol violation), 2 on
/// bad usage, 3 if no connection could be established.
#[derive(Debug, Parser)]
#[command(name = "wsflood", version, about, long_about)]
pub struct Cli {
    /// What to do (the same as --mode; default echo).
    #[arg(value_enum, value_name = "MODE")]
    pub mode_arg: Option<Mode>,
    /// What to do.
    #[arg(long, value_enum, conflicts_with = "mode_arg")]
    pub mode: Option<Mode>,
    /// Server URL: ws://IP[:PORT][/PATH] or wss://... (IP or localhost). Default
    /// ws://127.0.0.1:9001/echo, or ws://127.0.0.1:9001/broadcast/wsflood
    /// in broadcast mode, ws://127.0.0.1:9001/pubsub in pubsub mode.
    /// Several (repeated, or comma-separated), e.g. the nodes of a cluster:
    /// connections are spread over them in turn, but publishers (broadcast
    /// and pubsub, unless --all-to-all) all go to the first.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Connections to open (churn: connections in flight at once; pubsub:
    /// subscribers, WebSocket publishers come on top).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Worker threads, each with its own poll loop and share of connections.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// New connections per second while ramping up, all threads together
    /// (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Seconds of load, ramp-up included; teardown adds at most 10 more.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Payload bytes per message [default: 20; pubsub: 37, the header of
    /// the body].
    #[arg(short = 's', long)]
    pub payload_size: Option<usize>,
    /// Several payload sizes, cycled (e.g. 20,1024,16384); overrides
    /// --payload-size.
    #[arg(long, value_delimiter = ',')]
    pub payload_sizes: Vec<usize>,
    /// Messages per second per connection (broadcast: per publisher; pubsub:
    /// all publishers together; churn: cycles per second in all). 0: as
    /// fast as possible.
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    /// Echo: messages each connection keeps outstanding. Broadcast with
    /// --expect-self and --rate 0: each publisher's messages not yet
    /// delivered back to it. Pubsub with --rate 0: each publisher's
    /// publishes (or HTTP requests) not yet acknowledged.
    #[arg(short = 'k', long, default_value_t = 1)]
    pub inflight: usize,
    /// Broadcast: how many connections publish (the others only receive).
    /// Without --expect-self and with --rate 0, publishers send as fast as
    /// their sockets take it. Pubsub: publishers, each with a connection of
    /// its own (see --publish-via).
    #[arg(short = 'p', long, default_value_t = 1)]
    pub publishers: usize,
    /// Broadcast: the server delivers each message to its sender too (run it
    /// with --broadcast-to-sender).
    #[arg(long)]
    pub expect_self: bool,
    /// Broadcast: every connection sends one message per round and starts
    /// the next round once it has received the whole round (uWebSockets'
    /// broadcast_test).
    #[arg(long)]
    pub all_to_all: bool,
    /// PID of the server, for its CPU time and (idle) RSS before and after;
    /// several (comma-separated) are summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Source addresses to spread connections over (bind before connect),
    /// e.g. 127.0.0.1,127.0.0.2-127.0.0.20.
    #[arg(long)]
    pub source_addrs: Option<String>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Seconds allowed for the TCP connect, and again for the handshake.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Most connections connecting or handshaking at once, all threads
    /// together (keeps a burst within the server's listen backlog: past it,
    /// SYNs are dropped and retried a second later).
    #[arg(long, default_value_t = 128)]
    pub max_pending: usize,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// wss://: accept any server certificate (self-signed ones included).
    /// The handshake's signatures are still checked.
    #[arg(long, conflicts_with = "ca_cert")]
    pub insecure: bool,
    /// wss://: trust the certificates in this PEM file (e.g. the server's
    /// self-signed one) and no others.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Pubsub: topics in all, named t0, t1, ...
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Pubsub: distinct topics each connection subscribes to, drawn at
    /// random (see --seed).
    #[arg(long, default_value_t = 1)]
    pub subscriptions: usize,
    /// Pubsub: seed of the random draws (each connection's topics, each
    /// message's topic): the same seed, the same draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pubsub: how publishers publish: ws (publish requests on a /pubsub
    /// WebSocket each), http (POST /broadcast/{topic}, a message per
    /// request), http-batch (POST /pubsub, --batch messages per request).
    #[arg(long, value_enum, default_value_t = PublishVia::Ws)]
    pub publish_via: PublishVia,
    /// Pubsub: publish in the binary form (deliveries come binary too)
    /// rather than as JSON text.
    #[arg(long)]
    pub binary: bool,
    /// Pubsub with --publish-via http-batch: messages per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// What payloads hold: a binary pattern (incompressible) or realistic
    /// JSON text (see --deflate). Not in pubsub mode (its bodies are its own).
    #[arg(long, value_enum, default_value_t = PayloadKind::Pattern)]
    pub payload: PayloadKind,
    /// Offer permessage-deflate (RFC 7692) with
    /// "permessage-deflate; client_max_window_bits"; the server's answer
    /// must be valid for the offer. Agreed, messages go compressed both
    /// ways (pubsub publishers send plain) and are checked once inflated.
    #[arg(long)]
    pub deflate: bool,
    /// Offer this Sec-WebSocket-Extensions value instead (implies
    /// --deflate): one or more permessage-deflate offers, e.g.
    /// "permessage-deflate; server_max_window_bits=10; client_no_context_takeover".
    #[arg(long, value_name = "OFFER")]
    pub deflate_offer: Option<String>,
    /// zlib level of what wsflood compresses, 0-9 (1: fastest; the server's
    /// default too).
    #[arg(long, default_value_t = 1)]
    pub deflate_level: u32,
    /// With permessage-deflate: messages shorter than this go uncompressed.
    #[arg(long, default_value_t = 0)]
    pub deflate_threshold: usize,
    /// Echo and idle: each connection lives about this many seconds, then
    /// closes (closing handshake, once its echoes are back) and a new one
    /// takes its place: first lifetimes are spread over (0, L], later ones
    /// over [L/2, 3L/2), so about connections/L reconnect per second.
    #[arg(long, value_name = "SECS")]
    pub lifetime: Option<f64>,
}

/// A checked run description, shared read-only by every thread.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// The URL, or the URLs joined by commas.
    pub url: String,
    /// The first target (publishers' and metrics').
    pub target: Target,
    /// Every target (the first one first).
    pub targets: Vec<Target>,
    /// Connections with ids below this all go to the first target.
    pub pinned: u32,
    pub connections: usize,
    pub threads: usize,
    pub connect_rate: f64,
    pub duration_ns: u64,
    pub sizes: Vec<usize>,
    pub max_size: usize,
    pub rate: f64,
    pub inflight: usize,
    /// Broadcast: publishers are the connections with ids below this (all
    /// of them in all-to-all mode).
    pub publishers: usize,
    pub expect_self: bool,
    pub all_to_all: bool,
    pub server_pids: Vec<u32>,
    pub source_addrs: Vec<IpAddr>,
    pub json: Option<PathBuf>,
    pub quiet: bool,
    pub connect_timeout_ns: u64,
    pub max_pending: usize,
    /// wss://: the TLS client configuration.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Pubsub: its options (None in the other modes).
    pub pubsub: Option<options::Options>,
    pub payload: PayloadKind,
    /// permessage-deflate: what to offer and how to compress (None: no offer).
    pub deflate: Option<DeflateSetup>,
    /// Echo and idle: a connection's lifetime before it reconnects (0: for
    /// the whole run).
    pub lifetime_ns: u64,
}

impl Plan {
    /// The target of connection `id`: publishers' is the first; the others
    /// take the targets in turn.
    pub fn target_of(&self, id: u32) -> &Target {
        match id.checked_sub(self.pinned) {
            None => &self.targets[0],
            Some(i) => &self.targets[i as usize % self.targets.len()],
        }
    }
}

/// Largest payload (the core's default frame and message limit).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Longest run.
const MAX_DURATION: f64 = 7.0 * 24.0 * 3600.0;
/// Most memory the broadcast sequence tracking may take.
const MAX_TRACKING_BYTES: usize = 256 << 20;

fn secs_to_ns(s: f64) -> u64 {
    (s * 1e9) as u64
}

impl Cli {
    pub fn plan(self) -> Result<Plan, String> {
        let mode = self.mode.or(self.mode_arg).unwrap_or(Mode::Echo);
        let urls: Vec<String> = if self.url.is_empty() {
            vec![match mode {
                Mode::Broadcast => "ws://127.0.0.1:9001/broadcast/wsflood".into(),
                Mode::Pubsub => "ws://127.0.0.1:9001/pubsub".into(),
                _ => "ws://127.0.0.1:9001/echo".into(),
            }]
        } else {
            self.url.clone()
        };
        let url = urls.join(",");
        let targets = urls
            .iter()
            .map(|u| target::parse_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        for t in &targets {
            if !target::is_loopback(t.addr.ip()) && !self.allow_remote {
                return Err(format!(
                    "{} is not a loopback address; name it with --allow-remote if you mean it",
                    t.addr.ip()
                ));
            }
        }
        let target = targets[0].clone();
        if targets.iter().any(|t| t.tls != target.tls) {
            return Err("the URLs must all be ws:// or all wss://".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let default_size = match (mode, self.payload) {
            (Mode::Pubsub, _) => wire::HEADER,
            (_, PayloadKind::Json) => 120,
            (_, PayloadKind::Pattern) => 20,
        };
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= MAX_DURATION) {
            return Err("--duration must be a positive number of seconds (at most a week)".into());
        }
        for (name, v) in [("--rate", self.rate), ("--connect-rate", self.connect_rate)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a non-negative number"));
            }
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0 && self.connect_timeout <= 3600.0) {
            return Err("--connect-timeout must be positive (at most an hour)".into());
        }
        if self.inflight == 0 || self.inflight > 1 << 16 {
            return Err("--inflight must be between 1 and 65536".into());
        }
        if self.max_pending == 0 {
            return Err("--max-pending must be at least 1".into());
        }
        let sizes = if self.payload_sizes.is_empty() {
            vec![self.payload_size.unwrap_or(default_size)]
        } else {
            self.payload_sizes.clone()
        };
        if let Some(big) = sizes.iter().find(|&&s| s > MAX_PAYLOAD) {
            return Err(format!("payload size {big} is over the {MAX_PAYLOAD}-byte limit"));
        }
        let max_size = *sizes.iter().max().expect("at least one size");
        self.check_json(mode, &sizes)?;
        let deflate = self.deflate_setup()?;
        let lifetime_ns = self.lifetime_ns(mode)?;
        let mut publishers = 0;
        let mut connections = self.connections;
        let mut pubsub = None;
        if mode == Mode::Pubsub {
            let flags = options::Flags {
                topics: self.topics,
                subscriptions: self.subscriptions,
                publishers: self.publishers,
                seed: self.seed,
                publish_via: self.publish_via,
                binary: self.binary,
                batch: self.batch,
                connections: self.connections,
                rate: self.rate,
            };
            let o = options::Options::check(&flags, &sizes, MAX_PAYLOAD)?;
            publishers = self.publishers;
            connections += o.ws_publishers();
            pubsub = Some(o);
        } else if self.binary {
            return Err("--binary belongs to pubsub mode".into());
        }
        if mode == Mode::Broadcast {
            let small = sizes.iter().find(|&&s| s < BCAST_HEADER);
            if let (Some(small), PayloadKind::Pattern) = (small, self.payload) {
                return Err(format!(
                    "broadcast payloads carry a {BCAST_HEADER}-byte header; payload size {small} is too small"
                ));
            }
            publishers = if self.all_to_all {
                self.connections
            } else {
                if self.publishers == 0 || self.publishers > self.connections {
                    return Err("--publishers must be between 1 and --connections".into());
                }
                self.publishers
            };
            let tracking = if self.all_to_all {
                self.connections * 2 * self.connections.div_ceil(64) * 8
            } else {
                self.connections.saturating_mul(publishers).saturating_mul(16)
            };
            if tracking > MAX_TRACKING_BYTES {
                return Err(format!(
                    "tracking {} connections x {publishers} publishers would take {} MiB; use fewer publishers",
                    self.connections,
                    tracking >> 20
                ));
            }
        } else if self.all_to_all || self.expect_self {
            return Err("--all-to-all and --expect-self belong to broadcast mode".into());
        }
        let tls = match (target.tls, self.insecure, &self.ca_cert) {
            (false, false, None) => None,
            (false, _, _) => return Err("--insecure and --ca-cert belong to wss:// URLs".into()),
            (true, false, None) => {
                return Err("wss://: name the server's certificate with --ca-cert FILE, or pass --insecure".into())
            }
            (true, insecure, ca) => Some(crate::tls::client_config(insecure, ca.as_deref())?),
        };
        let source_addrs = match &self.source_addrs {
            None => Vec::new(),
            Some(list) => {
                let addrs = target::parse_source_addrs(list)?;
                let families = |a: &IpAddr| targets.iter().any(|t| a.is_ipv4() != t.addr.is_ipv4());
                if let Some(a) = addrs.iter().find(|a| families(a)) {
                    return Err(format!("source address {a} is not of the target's address family"));
                }
                addrs
            }
        };
        let threads = self.threads.min(connections);
        let pinned = match (&pubsub, self.all_to_all) {
            (Some(o), _) => o.ws_publishers(),
            (None, true) => 0,
            (None, false) if mode == Mode::Broadcast => publishers,
            (None, false) => 0,
        } as u32;
        Ok(Plan {
            mode,
            url,
            target,
            targets,
            pinned,
            connections,
            threads,
            connect_rate: self.connect_rate,
            duration_ns: secs_to_ns(self.duration),
            sizes,
            max_size,
            rate: self.rate,
            inflight: self.inflight,
            publishers,
            expect_self: self.expect_self,
            all_to_all: self.all_to_all,
            server_pids: self.server_pid,
            source_addrs,
            json: self.json,
            quiet: self.quiet,
            connect_timeout_ns: secs_to_ns(self.connect_timeout),
            max_pending: self.max_pending,
            tls,
            pubsub,
            payload: self.payload,
            deflate,
            lifetime_ns,
        })
    }

    /// --payload json: not for pubsub, and sizes it can fill.
    fn check_json(&self, mode: Mode, sizes: &[usize]) -> Result<(), String> {
        if self.payload != PayloadKind::Json {
            return Ok(());
        }
        if mode == Mode::Pubsub {
            return Err("--payload json does not apply to pubsub mode (its bodies are its own)".into());
        }
        if let Some(small) = sizes.iter().find(|&&s| s < json::MIN_LEN) {
            return Err(format!(
                "--payload json needs payloads of at least {} bytes; payload size {small} is too small",
                json::MIN_LEN
            ));
        }
        Ok(())
    }

    /// --lifetime, in ns (0: none).
    fn lifetime_ns(&self, mode: Mode) -> Result<u64, String> {
        match self.lifetime {
            None => Ok(0),
            Some(_) if !matches!(mode, Mode::Echo | Mode::Idle) => {
                Err("--lifetime belongs to echo and idle modes".into())
            }
            Some(l) if (0.01..=MAX_DURATION).contains(&l) => Ok(secs_to_ns(l)),
            Some(_) => Err("--lifetime must be a number of seconds, at least 0.01".into()),
        }
    }

    /// The permessage-deflate offer and settings, if asked for.
    fn deflate_setup(&self) -> Result<Option<DeflateSetup>, String> {
        if !self.deflate && self.deflate_offer.is_none() {
            return Ok(None);
        }
        if self.deflate_level > 9 {
            return Err("--deflate-level must be between 0 and 9".into());
        }
        let offer = match &self.deflate_offer {
            None => DeflateOffer::default_offer(),
            Some(raw) => DeflateOffer::parse(raw).map_err(|e| format!("--deflate-offer {raw:?}: {e}"))?,
        };
        Ok(Some(DeflateSetup {
            offer,
            level: self.deflate_level,
            threshold: self.deflate_threshold,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut all = vec!["wsflood"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map_err(|e| e.to_string())?.plan()
    }

    #[test]
    fn defaults_and_modes() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.mode, Mode::Echo);
        assert_eq!(p.target.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((p.connections, p.threads, p.inflight), (100, 1, 1));
        assert_eq!(p.sizes, vec![20]);
        let p = plan(&["broadcast", "-c", "10", "-p", "3"]).unwrap();
        assert_eq!(p.mode, Mode::Broadcast);
        assert_eq!(p.target.path, "/broadcast/wsflood");
        assert_eq!(p.publishers, 3);
        let p = plan(&["--mode", "churn", "--payload-sizes", "1,2,3", "-t", "4", "-c", "2"]).unwrap();
        assert_eq!((p.mode, p.threads), (Mode::Churn, 2));
        assert_eq!(p.sizes, vec![1, 2, 3]);
        let p = plan(&["broadcast", "--all-to-all", "-c", "7", "--expect-self"]).unwrap();
        assert_eq!(p.publishers, 7);
        let p = plan(&[
            "pubsub",
            "-c",
            "10",
            "-p",
            "3",
            "--topics",
            "50",
            "--subscriptions",
            "5",
        ])
        .unwrap();
        assert_eq!(p.target.path, "/pubsub");
        assert_eq!(p.connections, 13, "subscribers and WebSocket publishers");
        assert_eq!(p.sizes, vec![37], "the header by default");
        let o = p.pubsub.unwrap();
        assert_eq!((o.topics, o.subscriptions, o.publishers, o.subscribers), (50, 5, 3, 10));
        let p = plan(&[
            "pubsub",
            "-c",
            "10",
            "-p",
            "3",
            "--publish-via",
            "http-batch",
            "-s",
            "64",
        ])
        .unwrap();
        assert_eq!(p.connections, 10, "HTTP publishers have connections of their own");
        assert_eq!(p.pubsub.unwrap().http_publishers(), 3);
    }

    #[test]
    fn refusals() {
        for args in [
            &["echo", "--mode", "idle"][..],
            &["--url", "ws://10.1.2.3/"],
            &["--url", "wss://127.0.0.1/"],
            &["--url", "ws://127.0.0.1/", "--insecure"],
            &["--url", "wss://127.0.0.1/", "--ca-cert", "/nonexistent.pem"],
            &["-c", "0"],
            &["-d", "0"],
            &["-k", "0"],
            &["--rate", "-1"],
            &["--payload-size", "99999999"],
            &["broadcast", "--payload-size", "8"],
            &["broadcast", "-c", "2", "-p", "3"],
            &["echo", "--all-to-all"],
            &["--source-addrs", "::1"],
            &["echo", "--binary"],
            &["pubsub", "-s", "36"],
            &["pubsub", "--topics", "0"],
            &["pubsub", "--topics", "5", "--subscriptions", "6"],
            &["pubsub", "--subscriptions", "0"],
            &["pubsub", "-p", "0"],
            &["pubsub", "-p", "65537"],
            &["pubsub", "--topics", "2000000"],
            &["pubsub", "--publish-via", "http-batch", "--binary"],
            &["pubsub", "--publish-via", "http-batch", "--batch", "0"],
            &[
                "pubsub",
                "-c",
                "100000",
                "--topics",
                "1000",
                "--subscriptions",
                "100",
                "-p",
                "100",
            ],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
        assert!(plan(&["--url", "ws://10.1.2.3/", "--allow-remote"]).is_ok());
        for args in [
            &["--payload", "json", "-s", "92"][..],
            &["broadcast", "--payload", "json", "--payload-sizes", "120,50"],
            &["pubsub", "--payload", "json"],
            &["--deflate", "--deflate-level", "10"],
            &["--deflate-offer", "x-webkit-deflate-frame"],
            &["--deflate-offer", "permessage-deflate; client_max_window_bits=8"],
            &["--deflate-offer", "permessage-deflate\r\nX: y"],
            &["broadcast", "--lifetime", "5"],
            &["--lifetime", "0"],
            &["--lifetime", "nan"],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn deflate_json_and_lifetime() {
        let p = plan(&[]).unwrap();
        assert!(p.deflate.is_none());
        assert_eq!((p.payload, p.lifetime_ns), (PayloadKind::Pattern, 0));
        let p = plan(&["--deflate", "--payload", "json"]).unwrap();
        let d = p.deflate.unwrap();
        assert_eq!(d.offer.value(), DeflateOffer::DEFAULT);
        assert_eq!((d.level, d.threshold), (1, 0));
        assert_eq!(p.sizes, vec![120], "JSON's default size");
        let offer = "permessage-deflate; server_no_context_takeover";
        let p = plan(&[
            "--deflate-offer",
            offer,
            "--deflate-level",
            "6",
            "--deflate-threshold",
            "64",
        ])
        .unwrap();
        let d = p.deflate.unwrap();
        assert_eq!((d.offer.value(), d.level, d.threshold), (offer, 6, 64));
        let p = plan(&["broadcast", "--payload", "json", "-s", "93"]).unwrap();
        assert_eq!(p.sizes, vec![93]);
        let p = plan(&["idle", "--lifetime", "2.5"]).unwrap();
        assert_eq!(p.lifetime_ns, 2_500_000_000);
        assert!(plan(&["--url", "wss://127.0.0.1/", "--insecure"])
            .unwrap()
            .tls
            .is_some());
    }
}
