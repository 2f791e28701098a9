//! The `wsloop` daemon.

use clap::Parser;
use log::{error, info};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use wsloop::bus::BusConfig;
use wsloop::config::{self, Config, SlowConsumer};
use wsloop::net::{Server, TlsFiles};
use wsloop::proto::deflate::{DeflateConfig, Mode};

/// A single-threaded RFC 6455 WebSocket server: echo at ws://HOST/ and
/// ws://HOST/echo; broadcast rooms at ws://HOST/broadcast/{room}, with
/// HTTP publish by POST to the same path.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// logged at info level).
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Connections the kernel completes and queues until the loop accepts
    /// them (the listen backlog; capped by net.core.somaxconn).
    #[arg(long, default_value_t = config::DEFAULT_BACKLOG)]
    backlog: u32,
    /// Serve TLS (wss://, https://) on --listen, and only TLS: a PEM file
    /// with the certificate chain (the server's certificate first). Needs
    /// --tls-key. SIGHUP reloads both files for new connections.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A second, plaintext listener that answers only GET /healthz and
    /// /metrics (for probes that do not speak TLS); 404 to anything else.
    #[arg(long, value_name = "ADDR")]
    listen_plain: Option<SocketAddr>,
    /// Largest message, in bytes, after reassembly of fragments (close 1009
    /// past it).
    #[arg(long, default_value_t = config::DEFAULT_MAX_MESSAGE)]
    max_message_size: u64,
    /// Largest single frame, in bytes (close 1009 past it).
    #[arg(long, default_value_t = config::DEFAULT_MAX_FRAME)]
    max_frame_size: u64,
    /// Largest HTTP request head, in bytes (HTTP 431 past it).
    #[arg(long, default_value_t = config::DEFAULT_MAX_HEADER)]
    max_header_size: usize,
    /// Queued outgoing bytes per connection past which it is not read until
    /// its peer catches up.
    #[arg(long, default_value_t = config::DEFAULT_MAX_BACKPRESSURE)]
    max_backpressure: usize,
    /// What to do with a broadcast recipient whose queue would pass
    /// --max-backpressure: `close` sends Close 1008 "slow consumer"; `drop`
    /// skips messages for it (counted in the metrics).
    #[arg(long, value_enum, default_value_t = SlowConsumerArg::Close)]
    slow_consumer: SlowConsumerArg,
    /// Deliver broadcast messages to their sender too.
    #[arg(long)]
    broadcast_to_sender: bool,
    /// Whether WebSocket clients may publish: room members' messages and
    /// /pubsub publish requests. With `off`, only HTTP publish can (a
    /// ticker, a scoreboard): a room member that sends is closed with 1008,
    /// a /pubsub publish is answered with the error publish_not_allowed.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    client_publish: OnOff,
    /// Most topics one /pubsub connection may subscribe to (more is answered
    /// with the error too_many_subscriptions).
    #[arg(long, default_value_t = config::DEFAULT_MAX_SUBSCRIPTIONS)]
    max_subscriptions: usize,
    /// Require `Authorization: Bearer TOKEN` on HTTP publish
    /// (POST /broadcast/{room}). Without it, anyone who can reach the port
    /// may publish.
    #[arg(long, env = "WSLOOP_PUBLISH_TOKEN", hide_env_values = true)]
    publish_token: Option<String>,
    /// Most open connections; past it new ones get HTTP 503 and are closed.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Origins allowed to open WebSockets and to publish over HTTP, exact
    /// match (repeat the flag or separate with commas). A browser from any
    /// other origin gets 403; clients that send no Origin are allowed.
    /// Default: any origin.
    #[arg(long, value_delimiter = ',')]
    allow_origin: Vec<String>,
    /// A subprotocol the server speaks (repeat the flag for several, in the
    /// server's order of preference). Of the protocols a client offers in
    /// Sec-WebSocket-Protocol, the first one listed here is selected and
    /// echoed (RFC 6455 §4.2.2). If none matches, the handshake completes
    /// without one, and a client that required one (every browser that
    /// asked) fails the connection itself. Default: none.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Seconds a client has to complete its request head (408 after it, or
    /// a plain close if it sent nothing).
    #[arg(long, default_value_t = config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
    /// Seconds of silence from a client after which the server pings it.
    #[arg(long, default_value_t = config::DEFAULT_PING_INTERVAL.as_secs_f64())]
    ping_interval: f64,
    /// Seconds of silence after which the server closes with 1001.
    #[arg(long, default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
    /// Seconds the server waits for the peer's Close after sending its own
    /// (or for its FIN after an error response) before dropping it.
    #[arg(long, default_value_t = config::DEFAULT_CLOSE_TIMEOUT.as_secs_f64())]
    close_timeout: f64,
    /// Seconds a message split across reads may go without growing before
    /// the connection is closed with 1008 (its buffer is freed).
    #[arg(long, default_value_t = config::DEFAULT_MESSAGE_TIMEOUT.as_secs_f64())]
    message_timeout: f64,
    /// Bytes the whole process may hold in partial messages, HTTP publish
    /// bodies and queued output. Past it, a message that would need more
    /// is refused with close code 1013 (try again later), a publish body
    /// with 503, and a broadcast recipient whose queue would grow is
    /// treated as a slow consumer (--slow-consumer).
    #[arg(long, default_value_t = config::DEFAULT_MAX_MEMORY)]
    max_memory: usize,
    /// Unsent bytes the kernel may hold per room member's or subscriber's
    /// socket (TCP_NOTSENT_LOWAT); 0 keeps the kernel's default (no limit).
    #[arg(long, default_value_t = config::DEFAULT_SEND_LOWAT)]
    send_lowat: u32,
    /// The kernel send buffer of each socket (SO_SNDBUF, bytes); 0 keeps
    /// the kernel's autotuning.
    #[arg(long, default_value_t = config::DEFAULT_SEND_BUFFER)]
    send_buffer: usize,
    /// permessage-deflate (RFC 7692). `shared`: the server answers every
    /// offer with no context takeover both ways, so one compressor and one
    /// decompressor on the loop serve every connection and an idle
    /// compressed connection owns nothing; `dedicated`: context takeover
    /// where the client allows it, for better ratios, at about 300-430 KiB
    /// per connection; `off`: offers are declined.
    #[arg(long, value_enum, default_value_t = DeflateArg::Shared)]
    deflate: DeflateArg,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = config::DEFAULT_DEFLATE_THRESHOLD)]
    deflate_threshold: usize,
    /// The largest LZ77 window for compression, 9 to 15 (base-2 log).
    #[arg(long, default_value_t = config::DEFAULT_DEFLATE_WINDOW_BITS, value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: u8,
    /// zlib compression level, 1 (fastest) to 9 (smallest).
    #[arg(long, default_value_t = config::DEFAULT_DEFLATE_LEVEL, value_parser = clap::value_parser!(u32).range(1..=9))]
    deflate_level: u32,
    /// Spread topics (and rooms) over every wsloop process that uses the
    /// same Redis: redis://[[user]:password@]host[:port][/db]. Off by
    /// default. Redis being down does not stop the daemon: local delivery
    /// goes on, cross-node messages are dropped (and counted) until it is
    /// back, /readyz answers 503 meanwhile.
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    redis: Option<config::RedisUrl>,
    /// Like --redis, over a Redis Cluster (sharded pub/sub, SSUBSCRIBE and
    /// SPUBLISH, Redis 7 or later): some of its nodes, host:port,...
    /// (credentials with --redis-password).
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    redis_cluster: Vec<String>,
    /// The Redis password (AUTH) for --redis-cluster, or for a --redis URL
    /// that has none (keeps it out of the process list).
    #[arg(long, env = "WSLOOP_REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// The Redis ACL user that goes with --redis-password (default: the
    /// `default` user).
    #[arg(long)]
    redis_username: Option<String>,
    /// Bytes of commands that may wait for a Redis link; past it, publishes
    /// to the other nodes are dropped (and counted).
    #[arg(long, default_value_t = config::DEFAULT_BUS_MAX_OUTGOING)]
    redis_max_outgoing: usize,
    /// This node's id on the bus, a number (default: random, logged).
    #[arg(long)]
    node_id: Option<u64>,
    /// SO_REUSEPORT: several wsloop processes listen on the same port and
    /// the kernel spreads connections over them (with --redis, their rooms
    /// and topics are one).
    #[arg(long)]
    reuse_port: bool,
    /// Seconds a graceful shutdown (SIGTERM/SIGINT) waits for clients to
    /// close; a second signal exits at once.
    #[arg(long, default_value_t = config::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace: f64,
}

fn seconds(name: &str, v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or_else(|_| {
        error!("--{name} must be a non-negative number of seconds");
        std::process::exit(2)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeflateArg {
    Off,
    Shared,
    Dedicated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SlowConsumerArg {
    Close,
    Drop,
}

/// The bus's configuration from the flags; host names are resolved here,
/// once, so that the loop never waits on DNS.
fn bus_config(cli: &Cli) -> Option<BusConfig> {
    let (nodes, username, password, db, cluster) = match &cli.redis {
        Some(u) => (
            vec![u.addr.clone()],
            u.username.clone().or_else(|| cli.redis_username.clone()),
            u.password.clone().or_else(|| cli.redis_password.clone()),
            u.db,
            false,
        ),
        None if !cli.redis_cluster.is_empty() => (
            cli.redis_cluster.clone(),
            cli.redis_username.clone(),
            cli.redis_password.clone(),
            0,
            true,
        ),
        None => return None,
    };
    let nodes = nodes
        .iter()
        .map(|n| match n.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr.to_string(),
            _ => {
                error!("cannot resolve the Redis address {n}");
                std::process::exit(2)
            }
        })
        .collect();
    let node = cli
        .node_id
        .unwrap_or_else(|| std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::process::id()));
    info!("bus: node id {node}");
    Some(BusConfig {
        nodes,
        cluster,
        username,
        password,
        db,
        max_outgoing: cli.redis_max_outgoing,
        node,
    })
}

/// The server's configuration from the command line.
fn config(cli: &Cli) -> Config {
    let mut config = Config {
        listen: cli.listen,
        backlog: cli.backlog,
        tls: cli
            .tls_cert
            .clone()
            .zip(cli.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        listen_plain: cli.listen_plain,
        max_backpressure: cli.max_backpressure,
        slow_consumer: match cli.slow_consumer {
            SlowConsumerArg::Close => SlowConsumer::Close,
            SlowConsumerArg::Drop => SlowConsumer::Drop,
        },
        broadcast_to_sender: cli.broadcast_to_sender,
        client_publish: cli.client_publish == OnOff::On,
        max_subscriptions: cli.max_subscriptions,
        publish_token: cli.publish_token.clone(),
        max_connections: cli.max_connections,
        allowed_origins: cli.allow_origin.clone(),
        subprotocols: cli.subprotocols.clone(),
        handshake_timeout: seconds("handshake-timeout", cli.handshake_timeout),
        ping_interval: seconds("ping-interval", cli.ping_interval),
        idle_timeout: seconds("idle-timeout", cli.idle_timeout),
        close_timeout: seconds("close-timeout", cli.close_timeout),
        message_timeout: seconds("message-timeout", cli.message_timeout),
        max_memory: cli.max_memory,
        send_lowat: cli.send_lowat,
        send_buffer: cli.send_buffer,
        deflate: match cli.deflate {
            DeflateArg::Off => None,
            DeflateArg::Shared => Some(Mode::Shared),
            DeflateArg::Dedicated => Some(Mode::Dedicated),
        }
        .map(|mode| DeflateConfig {
            mode,
            max_window_bits: cli.deflate_window_bits,
            threshold: cli.deflate_threshold,
        }),
        deflate_level: cli.deflate_level,
        bus: bus_config(cli),
        reuse_port: cli.reuse_port,
        shutdown_grace: seconds("shutdown-grace", cli.shutdown_grace),
        ..Config::default()
    };
    config.limits.max_message = cli.max_message_size;
    config.limits.max_frame = cli.max_frame_size;
    config.head.max_size = cli.max_header_size;
    config
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let mut server = match Server::bind(config(&cli)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error!("cannot use the TLS certificate: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            error!("cannot listen on {}: {e}", cli.listen);
            std::process::exit(1);
        }
    };
    // Signal handlers first: "listening on" tells a supervisor (or a test)
    // that the daemon is ready, SIGTERM's graceful shutdown included, and
    // that its descriptors are all open. Logged before them, a SIGTERM sent
    // at once could find no handler yet and kill the process outright.
    if let Err(e) = server.handle_signals() {
        error!("cannot install signal handlers: {e}");
        std::process::exit(1);
    }
    match server.local_addr() {
        Ok(addr) => info!(
            "listening on {addr}{} ({} bytes per idle connection record)",
            if cli.tls_cert.is_some() { " with TLS" } else { "" },
            wsloop::net::CONNECTION_RECORD_BYTES
        ),
        Err(e) => error!("no local address: {e}"),
    }
    if let Some(addr) = server.probe_addr() {
        info!("plain listener for /healthz and /metrics on {addr}");
    }
    if let Err(e) = server.run() {
        error!("poll failed: {e}");
        std::process::exit(1);
    }
}
