//! What the loop counts, and `GET /metrics`: those counters in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! Each counter costs an add where it happens. The loop hands [`render`] a
//! [`Snapshot`] (the counters plus a few gauges only it can read), so this
//! module never sees a connection or a socket.

use std::fmt::Write as _;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters of what the loop did since it started.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub accepted: u64,
    pub closed: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Messages broadcast (each counted once however many recipients).
    pub broadcasts: u64,
    /// Broadcast deliveries (one per recipient), counted when published.
    pub deliveries: u64,
    /// Deliveries written (or queued) in the enveloped form (`/pubsub`);
    /// the rest of `messages_out` for topics are bare.
    pub deliveries_enveloped: u64,
    pub http_publishes: u64,
    /// `/pubsub` requests answered with an error.
    pub pubsub_errors: u64,
    pub slow_consumer_drops: u64,
    pub slow_consumer_disconnects: u64,
    /// Refusals for lack of memory (`--max-memory`): messages closed with
    /// 1013, publish bodies answered 503, deliveries treated as slow.
    pub memory_refused_messages: u64,
    pub memory_refused_bodies: u64,
    pub memory_refused_deliveries: u64,
    /// Connections closed (1008) for a message that stopped growing.
    pub timeouts_message: u64,
    /// HTTP error responses: (status, count), sorted by status.
    pub http_errors: Vec<(u16, u64)>,
    /// Close frames we initiated: (code, count), sorted by code.
    pub close_codes: Vec<(u16, u64)>,
    /// Connections turned away with 503 at `max_connections`.
    pub rejected_max_connections: u64,
    /// accept() failures (EMFILE and the like).
    pub accept_errors: u64,
    pub timeouts_handshake: u64,
    pub timeouts_idle: u64,
    pub timeouts_close: u64,
    pub read_calls: u64,
    pub write_calls: u64,
    pub loop_iterations: u64,
    /// TLS connections that failed before their handshake completed (a
    /// client that does not speak TLS, no common version or cipher).
    pub tls_handshake_failures: u64,
    /// TLS connections failed for a bad record after the handshake.
    pub tls_record_errors: u64,
}

impl Stats {
    pub fn count_http_error(&mut self, status: u16) {
        bump(&mut self.http_errors, status);
    }

    pub fn count_close(&mut self, code: u16) {
        bump(&mut self.close_codes, code);
    }

    /// A TLS connection failed, in its handshake or after it.
    pub fn count_tls_failure(&mut self, during_handshake: bool) {
        if during_handshake {
            self.tls_handshake_failures += 1;
        } else {
            self.tls_record_errors += 1;
        }
    }
}

/// Adds one to `key`'s counter in a short association list (a handful of
/// distinct codes ever appear).
fn bump(list: &mut Vec<(u16, u64)>, key: u16) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => {
            list.push((key, 1));
            list.sort_unstable();
        }
    }
}

/// The counters and the gauges of one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    /// Open TCP connections.
    pub connections: usize,
    /// Bytes waiting for slow sockets.
    pub queued_bytes: usize,
    /// Topics (a room is a topic), and subscriptions in all.
    pub topics: usize,
    pub subscriptions: usize,
    /// Entries in the deadline heap (one per open connection).
    pub timer_entries: usize,
    /// Memory charged to connections, and the budget (`--max-memory`).
    pub memory_used: usize,
    pub memory_limit: usize,
    /// With a bus: whether it is up, its counters, and the topics it
    /// carries.
    pub bus: Option<(bool, &'a crate::bus::BusStats, usize)>,
}

/// One metric family: its name (after `wsloop_`), type, help and samples.
struct Family<'s> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Samples<'s>,
}

enum Samples<'s> {
    One(u64),
    /// Fixed label sets: (`{label="value"}`, value).
    Labelled(Vec<(&'static str, u64)>),
    /// Counts by a numeric code, under label `label`.
    ByCode(&'static str, &'s [(u16, u64)]),
}

/// Renders every metric. Called once per scrape; the hot paths only ever
/// add to counters.
pub fn render(snap: &Snapshot) -> Vec<u8> {
    let mut out = String::with_capacity(4096);
    for f in families(snap) {
        let _ = writeln!(
            out,
            "# HELP wsloop_{} {}\n# TYPE wsloop_{} {}",
            f.name, f.help, f.name, f.kind
        );
        match f.samples {
            Samples::One(v) => {
                let _ = writeln!(out, "wsloop_{} {v}", f.name);
            }
            Samples::Labelled(rows) => {
                for (labels, v) in rows {
                    let _ = writeln!(out, "wsloop_{}{labels} {v}", f.name);
                }
            }
            Samples::ByCode(label, rows) => {
                for (code, v) in rows {
                    let _ = writeln!(out, "wsloop_{}{{{label}=\"{code}\"}} {v}", f.name);
                }
            }
        }
    }
    out.into_bytes()
}

/// Every metric family, in the order /metrics shows them. Long on purpose:
/// a table with one entry per family (name, help, type, value), read top to
/// bottom; splitting it would scatter the list a reader checks as a whole.
fn families<'s>(snap: &Snapshot<'s>) -> Vec<Family<'s>> {
    use Samples::*;
    let s = snap.stats;
    let family = |name, kind, help, samples| Family {
        name,
        kind,
        help,
        samples,
    };
    let (counter, gauge) = ("counter", "gauge");
    let mut families = vec![
        family(
            "connections_open",
            gauge,
            "Open TCP connections.",
            One(snap.connections as u64),
        ),
        family(
            "connections_accepted_total",
            counter,
            "Connections accepted.",
            One(s.accepted),
        ),
        family(
            "connections_closed_total",
            counter,
            "Connections closed.",
            One(s.closed),
        ),
        family(
            "connections_rejected_total",
            counter,
            "Connections turned away, by reason.",
            Labelled(vec![
                ("{reason=\"max_connections\"}", s.rejected_max_connections),
                ("{reason=\"handshake_timeout\"}", s.timeouts_handshake),
            ]),
        ),
        family(
            "http_errors_total",
            counter,
            "HTTP error responses (failed handshakes), by status.",
            ByCode("status", &s.http_errors),
        ),
        family(
            "tls_handshake_failures_total",
            counter,
            "TLS connections that failed in their handshake (plaintext on the TLS port included).",
            One(s.tls_handshake_failures),
        ),
        family(
            "tls_record_errors_total",
            counter,
            "TLS connections failed for a bad record after the handshake.",
            One(s.tls_record_errors),
        ),
        family(
            "accept_errors_total",
            counter,
            "accept() failures such as EMFILE.",
            One(s.accept_errors),
        ),
        family(
            "messages_in_total",
            counter,
            "WebSocket messages received.",
            One(s.messages_in),
        ),
        family(
            "messages_out_total",
            counter,
            "WebSocket messages sent (broadcasts once per recipient).",
            One(s.messages_out),
        ),
        family("bytes_in_total", counter, "Payload bytes received.", One(s.bytes_in)),
        family(
            "bytes_out_total",
            counter,
            "Frame bytes sent for messages.",
            One(s.bytes_out),
        ),
        family(
            "broadcasts_total",
            counter,
            "Messages broadcast to a room.",
            One(s.broadcasts),
        ),
        family(
            "broadcast_deliveries_total",
            counter,
            "Broadcast deliveries (one per recipient).",
            One(s.deliveries),
        ),
        family(
            "http_publishes_total",
            counter,
            "Messages published with HTTP POST.",
            One(s.http_publishes),
        ),
        family(
            "slow_consumer_drops_total",
            counter,
            "Broadcast messages skipped for slow consumers.",
            One(s.slow_consumer_drops),
        ),
        family(
            "slow_consumer_disconnects_total",
            counter,
            "Slow consumers closed with 1008.",
            One(s.slow_consumer_disconnects),
        ),
        family(
            "close_codes_sent_total",
            counter,
            "Close frames the server initiated, by code.",
            ByCode("code", &s.close_codes),
        ),
        family(
            "timeouts_total",
            counter,
            "Connections timed out, by kind.",
            Labelled(vec![
                ("{kind=\"handshake\"}", s.timeouts_handshake),
                ("{kind=\"idle\"}", s.timeouts_idle),
                ("{kind=\"close\"}", s.timeouts_close),
                ("{kind=\"message\"}", s.timeouts_message),
            ]),
        ),
        family(
            "memory_bytes",
            gauge,
            "Memory held by connections: partial messages, request bodies, queued output.",
            One(snap.memory_used as u64),
        ),
        family(
            "memory_limit_bytes",
            gauge,
            "The memory budget (--max-memory).",
            One(snap.memory_limit as u64),
        ),
        family(
            "memory_refusals_total",
            counter,
            "Refused for lack of memory, by what: message (1013), body (503), delivery (slow consumer).",
            Labelled(vec![
                ("{kind=\"message\"}", s.memory_refused_messages),
                ("{kind=\"body\"}", s.memory_refused_bodies),
                ("{kind=\"delivery\"}", s.memory_refused_deliveries),
            ]),
        ),
        family(
            "queued_bytes",
            gauge,
            "Bytes waiting for slow sockets.",
            One(snap.queued_bytes as u64),
        ),
        family("topics", gauge, "Topics (rooms included).", One(snap.topics as u64)),
        family(
            "subscriptions",
            gauge,
            "Subscriptions (a room member holds one).",
            One(snap.subscriptions as u64),
        ),
        family(
            "deliveries_enveloped_total",
            counter,
            "Topic deliveries in the enveloped (/pubsub) form.",
            One(s.deliveries_enveloped),
        ),
        family(
            "pubsub_errors_total",
            counter,
            "/pubsub requests answered with an error.",
            One(s.pubsub_errors),
        ),
        family(
            "timer_entries",
            gauge,
            "Entries in the deadline heap.",
            One(snap.timer_entries as u64),
        ),
        family("read_calls_total", counter, "read system calls.", One(s.read_calls)),
    ];
    if let Some((up, b, topics)) = snap.bus {
        families.extend([
            family(
                "bus_up",
                gauge,
                "Whether the bus to the other nodes (Redis) is up.",
                One(u64::from(up)),
            ),
            family("bus_topics", gauge, "Topics subscribed on the bus.", One(topics as u64)),
            family(
                "bus_published_total",
                counter,
                "Messages published to the other nodes.",
                One(b.published),
            ),
            family(
                "bus_received_total",
                counter,
                "Messages received from the other nodes.",
                One(b.received),
            ),
            family(
                "bus_dropped_total",
                counter,
                "Messages not published to the other nodes (bus down, or too far behind).",
                One(b.dropped),
            ),
            family(
                "bus_lost_total",
                counter,
                "Messages of other nodes that never arrived (sequence gaps).",
                One(b.lost),
            ),
            family(
                "bus_reconnects_total",
                counter,
                "Redis links lost and reconnected.",
                One(b.reconnects),
            ),
        ]);
    }
    families.extend([
        family(
            "write_calls_total",
            counter,
            "write/writev system calls.",
            One(s.write_calls),
        ),
        family(
            "loop_iterations_total",
            counter,
            "Poll loop iterations.",
            One(s.loop_iterations),
        ),
    ]);
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_help_type_and_labels() {
        let mut stats = Stats {
            accepted: 7,
            ..Stats::default()
        };
        stats.count_http_error(404);
        stats.count_http_error(400);
        stats.count_http_error(404);
        stats.count_close(1001);
        let text = String::from_utf8(render(&Snapshot {
            stats: &stats,
            connections: 3,
            queued_bytes: 10,
            topics: 2,
            subscriptions: 4,
            timer_entries: 3,
            memory_used: 5,
            memory_limit: 9,
            bus: None,
        }))
        .unwrap();
        for line in [
            "# HELP wsloop_connections_open Open TCP connections.\n# TYPE wsloop_connections_open gauge\nwsloop_connections_open 3\n",
            "wsloop_connections_accepted_total 7\n",
            "wsloop_http_errors_total{status=\"400\"} 1\nwsloop_http_errors_total{status=\"404\"} 2\n",
            "wsloop_close_codes_sent_total{code=\"1001\"} 1\n",
            "wsloop_timeouts_total{kind=\"idle\"} 0\n",
            "wsloop_queued_bytes 10\n",
            "wsloop_timer_entries 3\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        // Every sample line belongs to a family announced just before it.
        let mut current = String::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
            } else if !l.starts_with('#') {
                assert!(l.starts_with(&current), "{l} outside {current}");
            }
        }
    }
}
