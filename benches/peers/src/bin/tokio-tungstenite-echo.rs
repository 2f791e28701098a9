//! Echo server on tokio-tungstenite, current-thread tokio runtime.
//!
//! The idiomatic form of the crate's own echo example: the stream of
//! messages, data messages only, forwarded into the sink. `forward` feeds
//! without flushing while input is ready and flushes when the stream would
//! block, so replies to one read are batched into few writes. Ping/Pong and
//! the closing handshake are handled by tungstenite itself.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = wsloop_peers::listen_addr();
    let listener = TcpListener::bind(addr).await?;
    wsloop_peers::announce(listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream));
    }
}
