//! Counters of what the loop did. Each costs an add where it happens; the
//! `/metrics` endpoint renders them.

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
    /// Broadcast deliveries (one per recipient).
    pub deliveries: u64,
    pub http_publishes: u64,
    pub slow_consumer_drops: u64,
    pub slow_consumer_disconnects: u64,
    /// HTTP error responses, indexed by status (400..=599 → 0..200).
    pub http_errors: Vec<(u16, u64)>,
    /// Close frames we sent, by code.
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
}

impl Stats {
    pub fn count_http_error(&mut self, status: u16) {
        bump(&mut self.http_errors, status);
    }

    pub fn count_close(&mut self, code: u16) {
        bump(&mut self.close_codes, code);
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
