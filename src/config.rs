//! Every setting and limit of the daemon, with its default, in one place.
//! The command line (`src/main.rs`) fills a [`Config`]; each flag documents
//! its default, which is the constant here.

use crate::bus::BusConfig;
use crate::net::TlsFiles;
use crate::proto::conn::Settings;
use crate::proto::deflate::{DeflateConfig, Mode};
use crate::proto::http::HeadLimits;
use crate::proto::Limits;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
/// Largest data frame, in bytes (16 MiB: Autobahn §9 sends 16 MiB messages).
pub const DEFAULT_MAX_FRAME: u64 = 16 << 20;
/// Largest reassembled message, in bytes.
pub const DEFAULT_MAX_MESSAGE: u64 = 16 << 20;
/// Largest request head (request line, fields and the blank line), bytes.
pub const DEFAULT_MAX_HEADER: usize = 8 << 10;
/// Most header field lines in a request.
pub const DEFAULT_MAX_HEADER_FIELDS: usize = 100;
/// Queued outgoing bytes past which a connection is no longer read until
/// its peer catches up.
pub const DEFAULT_MAX_BACKPRESSURE: usize = 1 << 20;
/// Connections the kernel completes and queues for the loop to accept
/// (`listen(2)` backlog; the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Most topics one `/pubsub` connection may subscribe to.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;
/// Most open connections; past it new ones get HTTP 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Time for a client to send its complete request head (slowloris defence).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server sends a Ping.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which the server closes with 1001.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Wait for the peer's Close (or FIN) after ours, then drop the connection.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for clients to finish closing.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a message split across reads may go without growing before the
/// connection is closed with 1008.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory the whole process may hold in partial messages, request bodies
/// and queued output (512 MiB: 32 messages of the default maximum size).
pub const DEFAULT_MAX_MEMORY: usize = 512 << 20;
/// Unsent bytes the kernel may hold for a room member's or subscriber's
/// socket (TCP_NOTSENT_LOWAT, set when it joins); 0 leaves the kernel's
/// default (unlimited). With 16 KiB, 5,000 members that stop reading cost
/// the kernel 143 MB instead of 1.5 GB, and a newcomer's handshake takes at
/// most 0.2 s instead of 6 s (`benches/stall.py`), while fan-out keeps its
/// rate (BENCHMARKS.md). Echo sockets keep the kernel's default: their
/// output is the peer's own input, and the option costs about 7 % of a
/// small echo's server CPU on this kernel.
pub const DEFAULT_SEND_LOWAT: u32 = 16 << 10;
/// The kernel's send buffer of each socket (SO_SNDBUF); 0 leaves the
/// kernel's autotuning.
pub const DEFAULT_SEND_BUFFER: usize = 0;
/// permessage-deflate (RFC 7692) by default: one compressor and one
/// decompressor for the whole loop, none per connection (README: why).
pub const DEFAULT_DEFLATE: Option<Mode> = Some(Mode::Shared);
/// Messages shorter than this are sent uncompressed.
pub const DEFAULT_DEFLATE_THRESHOLD: usize = 1024;
/// The largest window the server compresses with (and, in Dedicated mode,
/// lets clients use), as a base-2 logarithm.
pub const DEFAULT_DEFLATE_WINDOW_BITS: u8 = 15;
/// zlib level: 1 is several times faster than 6 on short messages for a
/// slightly worse ratio (`cargo bench --bench codec -- deflate`).
pub const DEFAULT_DEFLATE_LEVEL: u32 = 1;
/// Bytes of commands that may wait for one Redis link; past it, publishes
/// to the bus are dropped (and counted) rather than let a slow Redis grow
/// the process.
pub const DEFAULT_BUS_MAX_OUTGOING: usize = 16 << 20;
/// The loop-wide read buffer: one read system call takes at most this.
pub const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The listen backlog.
    pub backlog: u32,
    /// Serve TLS (only) on `listen` with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// A second listener, plaintext, that answers only `/healthz` and
    /// `/metrics` (for probes that do not speak TLS).
    pub listen_plain: Option<SocketAddr>,
    /// Frame and message size limits (answered with close code 1009).
    pub limits: Limits,
    /// Request head limits (answered with HTTP 431).
    pub head: HeadLimits,
    pub max_backpressure: usize,
    /// What to do with a broadcast recipient whose queue would pass
    /// `max_backpressure`.
    pub slow_consumer: SlowConsumer,
    /// Deliver a member's broadcast messages to itself too.
    pub broadcast_to_sender: bool,
    /// Whether WebSocket clients may publish (room members' messages,
    /// `/pubsub` publish); when off only HTTP publish can.
    pub client_publish: bool,
    /// Most topics one `/pubsub` connection may subscribe to.
    pub max_subscriptions: usize,
    /// Required as `Authorization: Bearer <token>` on HTTP publish.
    pub publish_token: Option<String>,
    pub max_connections: usize,
    /// Origins allowed to open WebSockets and to publish (exact match);
    /// empty: any.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in its order of preference: the
    /// first one the client offers is selected (RFC 6455 §4.2.2).
    pub subprotocols: Vec<String>,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    pub message_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The process-wide budget for partial messages, request bodies and
    /// queued output; past it a message is refused with 1013, a body with
    /// 503, and a broadcast recipient is treated as a slow consumer.
    pub max_memory: usize,
    /// TCP_NOTSENT_LOWAT for room members' and subscribers' sockets (0: the
    /// kernel's default).
    pub send_lowat: u32,
    /// SO_SNDBUF for accepted sockets (0: the kernel's autotuning).
    pub send_buffer: usize,
    /// permessage-deflate: `None` declines every offer.
    pub deflate: Option<DeflateConfig>,
    pub deflate_level: u32,
    /// Topics across nodes over Redis (`--redis`, `--redis-cluster`).
    pub bus: Option<BusConfig>,
    /// SO_REUSEPORT on the listener: several processes on one port.
    pub reuse_port: bool,
}

/// Policy for broadcast recipients that do not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Disconnect it: Close 1008 "slow consumer" (then TCP close).
    Close,
    /// Skip messages for it while its queue is full, and count them.
    Drop,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            backlog: DEFAULT_BACKLOG,
            tls: None,
            listen_plain: None,
            limits: Limits {
                max_frame: DEFAULT_MAX_FRAME,
                max_message: DEFAULT_MAX_MESSAGE,
            },
            head: HeadLimits {
                max_size: DEFAULT_MAX_HEADER,
                max_fields: DEFAULT_MAX_HEADER_FIELDS,
            },
            max_backpressure: DEFAULT_MAX_BACKPRESSURE,
            slow_consumer: SlowConsumer::Close,
            broadcast_to_sender: false,
            client_publish: true,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            publish_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_memory: DEFAULT_MAX_MEMORY,
            send_lowat: DEFAULT_SEND_LOWAT,
            send_buffer: DEFAULT_SEND_BUFFER,
            deflate: DEFAULT_DEFLATE.map(|mode| DeflateConfig {
                mode,
                max_window_bits: DEFAULT_DEFLATE_WINDOW_BITS,
                threshold: DEFAULT_DEFLATE_THRESHOLD,
            }),
            deflate_level: DEFAULT_DEFLATE_LEVEL,
            bus: None,
            reuse_port: false,
        }
    }
}

impl Config {
    /// What every connection's protocol state machine needs to know.
    pub fn settings(&self) -> Settings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Settings {
            limits: self.limits,
            head: self.head,
            handshake_timeout: ms(self.handshake_timeout),
            ping_interval: ms(self.ping_interval),
            idle_timeout: ms(self.idle_timeout),
            close_timeout: ms(self.close_timeout),
            message_timeout: ms(self.message_timeout),
        }
    }
}

/// A `--redis` URL: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `host:port` (port 6379 unless given).
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{url:?}: a Redis URL starts with redis://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => ((!user.is_empty()).then(|| decode(user)), Some(decode(pass))),
                None => (Some(decode(u)), None),
            },
        };
        if hostport.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let addr = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse().map_err(|_| format!("{url:?}: the database is a number"))?
        };
        Ok(RedisUrl {
            addr,
            username,
            password,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        let u: RedisUrl = "redis://127.0.0.1".parse().unwrap();
        assert_eq!(
            (u.addr.as_str(), u.username, u.password, u.db),
            ("127.0.0.1:6379", None, None, 0)
        );
        let u: RedisUrl = "redis://al%40x:p%3Ass@redis.example:7000/3".parse().unwrap();
        assert_eq!(u.addr, "redis.example:7000");
        assert_eq!(u.username.as_deref(), Some("al@x"));
        assert_eq!(u.password.as_deref(), Some("p:ss"));
        assert_eq!(u.db, 3);
        let u: RedisUrl = "redis://:secret@h:1".parse().unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
        assert!("http://x".parse::<RedisUrl>().is_err());
        assert!("redis://".parse::<RedisUrl>().is_err());
        assert!("redis://h/x".parse::<RedisUrl>().is_err());
    }
}
