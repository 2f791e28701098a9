//! The end-of-run summary: text for stdout and JSON for --json.

use crate::cli::{Mode, PayloadKind, Plan};
use crate::pubsub;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// CPU seconds used between the start and the stop of the load.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub wall_s: f64,
    pub client_s: f64,
    pub server_s: Option<f64>,
}

/// The server's resident memory before the first connection and at the
/// end of the load, with the connections open then.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub before_kib: u64,
    pub after_kib: u64,
    pub open: u64,
}

pub struct Report<'a> {
    pub plan: &'a Plan,
    pub stats: &'a Stats,
    pub elapsed_s: f64,
    pub members: u64,
    pub peak_open: u64,
    pub cpu: Option<Cpu>,
    pub rss: Option<Rss>,
    /// Pubsub: the run's shared state, for its own summary lines.
    pub pubsub: Option<&'a pubsub::Shared>,
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

fn fmt_us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

fn quantiles(h: &Histogram<u64>) -> [(&'static str, u64); 6] {
    [
        ("p50", h.value_at_quantile(0.5)),
        ("p90", h.value_at_quantile(0.9)),
        ("p99", h.value_at_quantile(0.99)),
        ("p99.9", h.value_at_quantile(0.999)),
        ("max", h.max()),
        ("mean", h.mean() as u64),
    ]
}

fn hist_json(h: &Histogram<u64>) -> Value {
    let mut m = Map::new();
    m.insert("count".into(), json!(h.len()));
    if !h.is_empty() {
        m.insert("min".into(), json!(us(h.min())));
        for (name, v) in quantiles(h) {
            m.insert(name.replace('.', ""), json!(us(v)));
        }
    }
    Value::Object(m)
}

fn hist_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "none".into();
    }
    quantiles(h)
        .iter()
        .map(|(n, v)| format!("{n} {}", fmt_us(*v)))
        .collect::<Vec<_>>()
        .join("  ")
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report<'_> {
    /// Seconds over which throughput is counted: first send to stop.
    fn load_window_s(&self) -> f64 {
        let stop = self.plan.duration_ns as f64 / 1e9;
        let from = match self.plan.mode {
            Mode::Echo | Mode::Broadcast | Mode::Pubsub => self.stats.first_send_ns.unwrap_or(0) as f64 / 1e9,
            _ => 0.0,
        };
        (stop.min(self.elapsed_s) - from).max(0.0)
    }

    fn ramp_s(&self) -> f64 {
        match (self.stats.first_attempt_ns, self.stats.last_settled_ns) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        }
    }

    /// Payload bytes received per second in the load window (assuming the
    /// messages after the stop were of the same average size).
    fn bytes_per_s(&self) -> f64 {
        let s = self.stats;
        let in_window = s.bytes_received as f64 * s.received_at_stop as f64 / s.received.max(1) as f64;
        let w = self.load_window_s();
        if w > 0.0 {
            in_window / w
        } else {
            0.0
        }
    }

    pub fn msgs_per_s(&self) -> f64 {
        rate(self.stats.received_at_stop, self.load_window_s())
    }

    fn connects_per_s(&self) -> f64 {
        if self.plan.mode == Mode::Churn {
            rate(
                self.stats.established,
                self.elapsed_s.min(self.plan.duration_ns as f64 / 1e9),
            )
        } else {
            rate(self.stats.established, self.ramp_s())
        }
    }

    pub fn text(&self) -> String {
        let (p, s) = (self.plan, self.stats);
        let mut o = String::new();
        let sizes: Vec<String> = p.sizes.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            o,
            "wsflood {} {}: {} connections, {} thread{}, {:.1} s, payload {} B{}",
            p.mode.name(),
            p.url,
            p.connections,
            p.threads,
            if p.threads == 1 { "" } else { "s" },
            p.duration_ns as f64 / 1e9,
            sizes.join(","),
            if p.payload == PayloadKind::Json { " (json)" } else { "" },
        );
        let _ = writeln!(
            o,
            "connections  attempted {}  established {}  failed {}  peak open {}  ({:.0} handshakes/s)",
            s.attempted,
            s.established,
            s.failed,
            self.peak_open,
            self.connects_per_s()
        );
        let _ = writeln!(o, "  connect    {}", hist_line(&s.connect));
        let _ = writeln!(o, "  handshake  {}", hist_line(&s.handshake));
        match p.mode {
            Mode::Echo | Mode::Broadcast | Mode::Pubsub => {
                let what = if p.mode == Mode::Echo { "echoes" } else { "deliveries" };
                let _ = writeln!(
                    o,
                    "messages     sent {}  received {}  {:.0} {what}/s  {:.1} MB/s in",
                    s.sent,
                    s.received,
                    self.msgs_per_s(),
                    self.bytes_per_s() / 1e6
                );
                let _ = writeln!(o, "  latency    {}", hist_line(&s.latency));
                let _ = writeln!(
                    o,
                    "  bytes      payload sent {}  received {};  wire sent {} ({})  received {} ({})",
                    s.bytes_sent,
                    s.bytes_received,
                    s.wire_sent,
                    ratio(s.wire_sent, s.bytes_sent),
                    s.wire_received,
                    ratio(s.wire_received, s.bytes_received),
                );
            }
            Mode::Churn => {
                let _ = writeln!(
                    o,
                    "cycles       {}  {:.0} cycles/s",
                    s.cycles,
                    rate(s.cycles_at_stop, p.duration_ns as f64 / 1e9)
                );
                let _ = writeln!(o, "  echo       {}", hist_line(&s.latency));
            }
            Mode::Idle => {}
        }
        if let Some(ps) = self.pubsub {
            o.push_str(&ps.summary_text(s, self.load_window_s()));
        }
        o.push_str(&self.deflate_text());
        if p.lifetime_ns > 0 {
            let _ = writeln!(
                o,
                "lifetime     {:.1} s: {} reconnects",
                p.lifetime_ns as f64 / 1e9,
                s.reconnects
            );
        }
        if p.mode == Mode::Idle || p.mode == Mode::Churn {
            let _ = writeln!(o, "wire         sent {}  received {}", s.wire_sent, s.wire_received);
        }
        if p.mode == Mode::Broadcast {
            let _ = writeln!(
                o,
                "broadcast    members {}  publishers {}  expected {}  rounds {}",
                self.members,
                if p.all_to_all {
                    self.members as usize
                } else {
                    p.publishers
                },
                s.expected,
                s.rounds
            );
        }
        let _ = writeln!(
            o,
            "verification {}: mismatched {}  lost {}  duplicated {}  out-of-order {}  unexpected-self {}  foreign {}  \
             protocol {}",
            if s.verification_failed() { "FAILED" } else { "ok" },
            s.mismatched,
            s.lost,
            s.duplicated,
            s.out_of_order,
            s.unexpected_self,
            s.foreign,
            s.errors.protocol
        );
        let errors = s.errors.list();
        if errors.is_empty() {
            let _ = writeln!(o, "errors       none");
        } else {
            let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(o, "errors       {}", list.join(", "));
        }
        if let Some(c) = self.cpu {
            let _ = write!(
                o,
                "cpu          wsflood {:.2} s ({:.0}% of one core)",
                c.client_s,
                100.0 * c.client_s / c.wall_s
            );
            if let Some(sv) = c.server_s {
                let _ = write!(o, "  server {:.2} s ({:.0}%)", sv, 100.0 * sv / c.wall_s);
            }
            let _ = writeln!(o, " over {:.1} s", c.wall_s);
        }
        if let Some(r) = self.rss {
            let _ = writeln!(
                o,
                "server rss   before {} KiB  after {} KiB  with {} open: {:.0} bytes per connection",
                r.before_kib,
                r.after_kib,
                r.open,
                per_conn(r)
            );
        }
        if let Some((allocs, msgs)) = s.steady {
            let _ = writeln!(o, "steady state {allocs} heap allocations over {msgs} messages");
        }
        o
    }

    /// The permessage-deflate lines of the summary (none without --deflate).
    fn deflate_text(&self) -> String {
        let (p, s) = (self.plan, self.stats);
        let mut o = String::new();
        let Some(d) = &p.deflate else {
            return o;
        };
        let agreed: u64 = s.deflate_agreed.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            o,
            "deflate      offered \"{}\": agreed {agreed}, declined {}; compressed messages sent {} of {}, received {} of {}",
            d.offer.value(),
            s.deflate_declined,
            s.compressed_sent,
            s.sent,
            s.compressed_received,
            s.received
        );
        for (params, n) in &s.deflate_agreed {
            let _ = writeln!(o, "  answer     {} ({n})", params.response().as_str());
        }
        o
    }

    /// The `deflate` object of the JSON summary.
    fn deflate_json(&self) -> Option<Value> {
        let (p, s) = (self.plan, self.stats);
        let d = p.deflate.as_ref()?;
        let answers: Vec<Value> = s
            .deflate_agreed
            .iter()
            .map(|(params, n)| {
                json!({
                    "response": params.response().as_str(),
                    "server_no_context_takeover": params.server_no_context_takeover,
                    "client_no_context_takeover": params.client_no_context_takeover,
                    "server_max_window_bits": params.server_max_window_bits,
                    "client_max_window_bits": params.client_max_window_bits,
                    "count": n,
                })
            })
            .collect();
        Some(json!({
            "offer": d.offer.value(),
            "level": d.level,
            "threshold": d.threshold,
            "agreed": s.deflate_agreed.iter().map(|(_, n)| n).sum::<u64>(),
            "declined": s.deflate_declined,
            "answers": answers,
            "compressed_sent": s.compressed_sent,
            "compressed_received": s.compressed_received,
        }))
    }

    pub fn json(&self) -> Value {
        let (p, s) = (self.plan, self.stats);
        let mut errors = Map::new();
        errors.insert("total".into(), json!(s.errors.total()));
        for (k, n) in s.errors.list() {
            errors.insert(k, json!(n));
        }
        let mut v = json!({
            "mode": p.mode.name(),
            "url": p.url,
            "threads": p.threads,
            "connections": p.connections,
            "duration_s": p.duration_ns as f64 / 1e9,
            "elapsed_s": self.elapsed_s,
            "payload_sizes": p.sizes,
            "payload": p.payload.name(),
            "inflight": p.inflight,
            "rate": p.rate,
            "connects": {
                "attempted": s.attempted,
                "connected": s.connected,
                "established": s.established,
                "failed": s.failed,
                "peak_open": self.peak_open,
                "ramp_s": self.ramp_s(),
                "handshakes_per_s": self.connects_per_s(),
                "connect_us": hist_json(&s.connect),
                "handshake_us": hist_json(&s.handshake),
            },
            "messages": {
                "sent": s.sent,
                "received": s.received,
                "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received,
                "received_in_window": s.received_at_stop,
                "window_s": self.load_window_s(),
                "per_s": self.msgs_per_s(),
                "bytes_per_s": self.bytes_per_s(),
                "wire_bytes_sent": s.wire_sent,
                "wire_bytes_received": s.wire_received,
                "compressed_sent": s.compressed_sent,
                "compressed_received": s.compressed_received,
            },
            "latency_us": hist_json(&s.latency),
            "verification": {
                "ok": !s.verification_failed(),
                "mismatched": s.mismatched,
                "lost": s.lost,
                "duplicated": s.duplicated,
                "out_of_order": s.out_of_order,
                "unexpected_self": s.unexpected_self,
                "foreign": s.foreign,
                "protocol": s.errors.protocol,
            },
            "errors": errors,
        });
        let m = v.as_object_mut().expect("an object");
        if p.mode == Mode::Broadcast {
            m.insert(
                "broadcast".into(),
                json!({
                    "members": self.members,
                    "publishers": if p.all_to_all { self.members as usize } else { p.publishers },
                    "expect_self": p.expect_self,
                    "all_to_all": p.all_to_all,
                    "expected": s.expected,
                    "rounds": s.rounds,
                }),
            );
        }
        if let Some(ps) = self.pubsub {
            m.insert("pubsub".into(), ps.summary_json(s, self.load_window_s()));
        }
        if let Some(d) = self.deflate_json() {
            m.insert("deflate".into(), d);
        }
        if p.lifetime_ns > 0 {
            m.insert(
                "lifetime".into(),
                json!({ "seconds": p.lifetime_ns as f64 / 1e9, "reconnects": s.reconnects }),
            );
        }
        if p.mode == Mode::Churn {
            m.insert(
                "churn".into(),
                json!({
                    "cycles": s.cycles,
                    "per_s": rate(s.cycles_at_stop, p.duration_ns as f64 / 1e9),
                }),
            );
        }
        if let Some(c) = self.cpu {
            m.insert(
                "cpu".into(),
                json!({
                    "wall_s": c.wall_s,
                    "client_s": c.client_s,
                    "client_percent": 100.0 * c.client_s / c.wall_s,
                    "server_s": c.server_s,
                    "server_percent": c.server_s.map(|sv| 100.0 * sv / c.wall_s),
                }),
            );
        }
        if let Some(r) = self.rss {
            m.insert(
                "server_rss".into(),
                json!({
                    "before_kib": r.before_kib,
                    "after_kib": r.after_kib,
                    "open": r.open,
                    "bytes_per_connection": per_conn(r),
                }),
            );
        }
        if let Some((allocs, msgs)) = s.steady {
            m.insert(
                "steady_state".into(),
                json!({ "allocations": allocs, "messages": msgs }),
            );
        }
        v
    }
}

/// `part` as a percentage of `whole`, for the wire against payload bytes.
fn ratio(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}% of payload", 100.0 * part as f64 / whole as f64)
    }
}

fn per_conn(r: Rss) -> f64 {
    if r.open == 0 {
        0.0
    } else {
        (r.after_kib as f64 - r.before_kib as f64) * 1024.0 / r.open as f64
    }
}

/// One progress line.
pub fn progress(mode: Mode, t_s: f64, open: u64, per_s: f64, errors: u64, h: &Histogram<u64>) -> String {
    let what = match mode {
        Mode::Echo => "echoes/s",
        Mode::Broadcast | Mode::Pubsub => "deliveries/s",
        Mode::Idle => "handshakes/s",
        Mode::Churn => "cycles/s",
    };
    let lat = if h.is_empty() {
        String::new()
    } else {
        format!(
            "  p50 {}  p99 {}",
            fmt_us(h.value_at_quantile(0.5)),
            fmt_us(h.value_at_quantile(0.99))
        )
    };
    format!("[{t_s:5.1}s] open {open}  {what} {per_s:.0}{lat}  errors {errors}")
}
