//! The server's own counters, from its Prometheus page (`GET /metrics`):
//! one blocking request at the start of publishing and one after the
//! drain, outside the measured traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The wsloop metrics a pubsub run reports (None: not on the page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub write_calls: Option<u64>,
    pub messages_out: Option<u64>,
    pub deliveries_enveloped: Option<u64>,
    pub subscriptions: Option<u64>,
    pub topics: Option<u64>,
}

/// Largest metrics page read.
const MAX_PAGE: u64 = 4 << 20;

/// Fetches and reads `http://addr/metrics`.
pub fn scrape(addr: SocketAddr, host: &str) -> Result<Metrics, String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("GET /metrics: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.set_nodelay(true);
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let mut page = Vec::new();
    s.take(MAX_PAGE)
        .read_to_end(&mut page)
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let text = String::from_utf8_lossy(&page);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("GET /metrics: no complete answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("GET /metrics answered {status}"));
    }
    let m = parse(body);
    if m == Metrics::default() {
        return Err("GET /metrics: no wsloop metrics on the page".into());
    }
    Ok(m)
}

/// The sums of every target's metrics (each node of a cluster).
pub fn scrape_all(targets: &[crate::target::Target]) -> Result<Metrics, String> {
    let mut sum = Metrics::default();
    for t in targets {
        let m = scrape(t.addr, &t.host)?;
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        sum = Metrics {
            write_calls: add(sum.write_calls, m.write_calls),
            messages_out: add(sum.messages_out, m.messages_out),
            deliveries_enveloped: add(sum.deliveries_enveloped, m.deliveries_enveloped),
            subscriptions: add(sum.subscriptions, m.subscriptions),
            topics: add(sum.topics, m.topics),
        };
    }
    Ok(sum)
}

/// Reads the samples wsflood wants from a Prometheus text page.
pub fn parse(page: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        let Some(v) = value.parse::<u64>().ok().or_else(|| {
            value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }) else {
            continue;
        };
        let slot = match name {
            "wsloop_write_calls_total" => &mut m.write_calls,
            "wsloop_messages_out_total" => &mut m.messages_out,
            "wsloop_deliveries_enveloped_total" => &mut m.deliveries_enveloped,
            "wsloop_subscriptions" => &mut m.subscriptions,
            "wsloop_topics" => &mut m.topics,
            _ => continue,
        };
        *slot = Some(v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_samples_it_wants() {
        let page = "# HELP wsloop_write_calls_total Write calls.\n# TYPE wsloop_write_calls_total counter\n\
                    wsloop_write_calls_total 1234\nwsloop_messages_out_total 99\n\
                    wsloop_http_errors_total{status=\"400\"} 1\nwsloop_subscriptions 7\nwsloop_topics 3e0\n\
                    wsloop_deliveries_enveloped_total nope\n";
        assert_eq!(
            parse(page),
            Metrics {
                write_calls: Some(1234),
                messages_out: Some(99),
                deliveries_enveloped: None,
                subscriptions: Some(7),
                topics: Some(3),
            }
        );
        assert_eq!(parse(""), Metrics::default());
    }
}
