//! A conforming WebSocket echo server for the Autobahn|TestSuite (`tests/autobahn/run.sh`).
//!
//! ```sh
//! cargo run --release --example autobahn_echo -- 127.0.0.1:9001
//! ```
//!
//! Accepts an upgrade on any path, echoes every text and binary message back as one whole
//! message, and leaves pings, pongs and the close handshake to tungstenite. Messages and frames
//! up to 64 MiB are accepted (Autobahn's 9.* cases send up to 16 MiB). No extensions (no
//! permessage-deflate), so Autobahn's 12.* and 13.* cases do not apply.
//!
//! It prints `listening on ADDR` once the socket is bound, so scripts can wait for that line.

use std::net::SocketAddr;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Largest message and frame accepted.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    let mut stdout = tokio::io::stdout();
    stdout.flush().await?;

    loop {
        let (stream, peer) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream, peer).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
}

async fn echo(stream: TcpStream, peer: SocketAddr) -> Result<(), WsError> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await?;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => ws.send(msg).await?,
            // tungstenite answers pings and close frames itself.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {}
            // The peer closed or broke the protocol: tungstenite has done what it can.
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
            Err(e) => {
                eprintln!("{peer}: {e}");
                break;
            }
        }
    }
    Ok(())
}
