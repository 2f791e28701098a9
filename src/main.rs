//! The `wsloop` daemon.

use clap::Parser;
use log::{error, info};
use std::net::SocketAddr;
use wsloop::config::{self, Config, SlowConsumer};
use wsloop::net::Server;

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
    /// Require `Authorization: Bearer TOKEN` on HTTP publish
    /// (POST /broadcast/{room}). Without it, anyone who can reach the port
    /// may publish.
    #[arg(long, env = "WSLOOP_PUBLISH_TOKEN", hide_env_values = true)]
    publish_token: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SlowConsumerArg {
    Close,
    Drop,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let mut config = Config {
        listen: cli.listen,
        max_backpressure: cli.max_backpressure,
        slow_consumer: match cli.slow_consumer {
            SlowConsumerArg::Close => SlowConsumer::Close,
            SlowConsumerArg::Drop => SlowConsumer::Drop,
        },
        broadcast_to_sender: cli.broadcast_to_sender,
        publish_token: cli.publish_token.clone(),
        ..Config::default()
    };
    config.limits.max_message = cli.max_message_size;
    config.limits.max_frame = cli.max_frame_size;
    config.head.max_size = cli.max_header_size;

    let mut server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen on {}: {e}", cli.listen);
            std::process::exit(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => info!(
            "listening on {addr} ({} bytes per idle connection record)",
            wsloop::net::CONNECTION_RECORD_BYTES
        ),
        Err(e) => error!("no local address: {e}"),
    }
    if let Err(e) = server.run() {
        error!("poll failed: {e}");
        std::process::exit(1);
    }
}
