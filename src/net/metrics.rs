//! `GET /metrics`: the loop's counters in the Prometheus text exposition
//! format (version 0.0.4).

use super::server::Server;
use std::fmt::Write as _;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric. Called once per scrape; the loop's own hot paths
/// only ever add to counters.
pub fn render(server: &Server) -> Vec<u8> {
    let s = server.stats();
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP wsloop_{name} {help}\n# TYPE wsloop_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "wsloop_{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "connections_open",
        "gauge",
        "Open TCP connections.",
        &one(server.connections() as u64),
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        &one(s.accepted),
    );
    metric(
        "connections_closed_total",
        "counter",
        "Connections closed.",
        &one(s.closed),
    );
    metric(
        "connections_rejected_total",
        "counter",
        "Connections turned away, by reason.",
        &[
            ("{reason=\"max_connections\"}".into(), s.rejected_max_connections),
            ("{reason=\"handshake_timeout\"}".into(), s.timeouts_handshake),
        ],
    );
    let by_status: Vec<(String, u64)> = s
        .http_errors
        .iter()
        .map(|(status, n)| (format!("{{status=\"{status}\"}}"), *n))
        .collect();
    metric(
        "http_errors_total",
        "counter",
        "HTTP error responses (failed handshakes), by status.",
        &by_status,
    );
    metric(
        "accept_errors_total",
        "counter",
        "accept() failures such as EMFILE.",
        &one(s.accept_errors),
    );
    metric(
        "messages_in_total",
        "counter",
        "WebSocket messages received.",
        &one(s.messages_in),
    );
    metric(
        "messages_out_total",
        "counter",
        "WebSocket messages sent (broadcasts once per recipient).",
        &one(s.messages_out),
    );
    metric("bytes_in_total", "counter", "Payload bytes received.", &one(s.bytes_in));
    metric(
        "bytes_out_total",
        "counter",
        "Frame bytes sent for messages.",
        &one(s.bytes_out),
    );
    metric(
        "broadcasts_total",
        "counter",
        "Messages broadcast to a room.",
        &one(s.broadcasts),
    );
    metric(
        "broadcast_deliveries_total",
        "counter",
        "Broadcast deliveries (one per recipient).",
        &one(s.deliveries),
    );
    metric(
        "http_publishes_total",
        "counter",
        "Messages published with HTTP POST.",
        &one(s.http_publishes),
    );
    metric(
        "slow_consumer_drops_total",
        "counter",
        "Broadcast messages skipped for slow consumers.",
        &one(s.slow_consumer_drops),
    );
    metric(
        "slow_consumer_disconnects_total",
        "counter",
        "Slow consumers closed with 1008.",
        &one(s.slow_consumer_disconnects),
    );
    let by_code: Vec<(String, u64)> = s
        .close_codes
        .iter()
        .map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n))
        .collect();
    metric(
        "close_codes_sent_total",
        "counter",
        "Close frames the server initiated, by code.",
        &by_code,
    );
    metric(
        "timeouts_total",
        "counter",
        "Connections timed out, by kind.",
        &[
            ("{kind=\"handshake\"}".into(), s.timeouts_handshake),
            ("{kind=\"idle\"}".into(), s.timeouts_idle),
            ("{kind=\"close\"}".into(), s.timeouts_close),
        ],
    );
    metric(
        "queued_bytes",
        "gauge",
        "Bytes waiting for slow sockets.",
        &one(server.queued_bytes() as u64),
    );
    metric("rooms", "gauge", "Broadcast rooms.", &one(server.rooms() as u64));
    metric(
        "timer_entries",
        "gauge",
        "Entries in the deadline heap.",
        &one(server.timer_entries() as u64),
    );
    metric("read_calls_total", "counter", "read system calls.", &one(s.read_calls));
    metric(
        "write_calls_total",
        "counter",
        "write/writev system calls.",
        &one(s.write_calls),
    );
    metric(
        "loop_iterations_total",
        "counter",
        "Poll loop iterations.",
        &one(s.loop_iterations),
    );
    out.into_bytes()
}
