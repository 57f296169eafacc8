//! A conforming WebSocket echo client for Autobahn's `wstest -m fuzzingserver`
//! (`tests/autobahn/run.sh`), used to test wsnorm's backend leg.
//!
//! ```sh
//! cargo run --release --example autobahn_client -- CONTROL_URL CASE_URL AGENT
//! # e.g. ws://127.0.0.1:9001 ws://127.0.0.1:8080 wsnorm
//! ```
//!
//! It asks the fuzzing server at `CONTROL_URL` how many cases there are (`/getCaseCount`), runs
//! each one by connecting to `CASE_URL/runCase?case=N&agent=AGENT` (the fuzzing server itself,
//! or wsnorm in front of it), echoes every text and binary message back as one whole message
//! until the connection closes, and finally asks the fuzzing server to write its reports
//! (`/updateReports?agent=AGENT`). Pings and the close handshake are left to tungstenite;
//! messages up to 64 MiB are accepted; no extensions are offered.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Largest message and frame accepted.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A case that takes longer than this is abandoned (the fuzzing server reports it).
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [control, cases, agent] = args.as_slice() else {
        bail!("usage: autobahn_client CONTROL_URL CASE_URL AGENT");
    };
    let control = control.trim_end_matches('/');
    let cases = cases.trim_end_matches('/');

    let count = case_count(control).await?;
    println!("{count} cases");
    for case in 1..=count {
        let url = format!("{cases}/runCase?case={case}&agent={agent}");
        match tokio::time::timeout(CASE_TIMEOUT, run_case(&url)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("case {case}: {e:#}"),
            Err(_) => eprintln!("case {case}: timed out after {CASE_TIMEOUT:?}"),
        }
    }
    update_reports(control, agent).await?;
    println!("reports updated for agent {agent}");
    Ok(())
}

async fn case_count(control: &str) -> anyhow::Result<u32> {
    let url = format!("{control}/getCaseCount");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let mut count = None;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => count = Some(text.trim().parse::<u32>()?),
            Ok(_) => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
            Err(e) => return Err(e).context("reading the case count"),
        }
    }
    count.context("the fuzzing server sent no case count")
}

async fn run_case(url: &str) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => match ws.send(msg).await {
                Ok(()) => {}
                // The server closed meanwhile; the close handshake finishes on the next read.
                Err(WsError::Protocol(_)) => {}
                Err(e) => return Err(e.into()),
            },
            // tungstenite answers pings and close frames itself.
            Ok(_) => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
            // Protocol violations are part of the test cases: tungstenite has failed the
            // connection, which is what the case expects.
            Err(_) => break,
        }
    }
    Ok(())
}

async fn update_reports(control: &str, agent: &str) -> anyhow::Result<()> {
    let url = format!("{control}/updateReports?agent={agent}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    ws.close(None).await.ok();
    while let Some(msg) = ws.next().await {
        if msg.is_err() {
            break;
        }
    }
    Ok(())
}
