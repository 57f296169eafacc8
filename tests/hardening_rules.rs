//! The rule engine's hardening over real sockets, against the real binary: second 60 is not read
//! as the next minute.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A backend that greets like the real one and echoes every data message as it received it.
async fn start_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let hello = r#"{"type":"connection_established"}"#;
                if ws.send(Message::text(hello)).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `text` and returns what came back (the backend's echo, or wsnorm's reply).
async fn round_trip(ws: &mut Ws, text: &str) -> String {
    send(ws, text).await;
    next_text(ws).await
}

/// A fresh connection through the same wsnorm still gets its messages echoed.
async fn still_echoes(wsnorm: &Wsnorm) {
    let mut ws = connected(wsnorm).await;
    let probe = r#"{"type":"echo","probe":"still serving"}"#;
    assert_eq!(round_trip(&mut ws, probe).await, probe);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn second_sixty_is_an_invalid_timestamp_unless_configured() {
    let backend = start_echo_backend().await;
    let leap = r#"{"type":"chat","timestamp":"2025-09-08T16:50:60"}"#;

    // Default: invalid, so the default rule's on_invalid = "now" decides; never 16:51:00.
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let back = round_trip(&mut ws, leap).await;
    let v: Value = serde_json::from_str(&back).unwrap();
    let stamped = v["timestamp"].as_f64().unwrap();
    assert!((stamped - before).abs() < 60.0, "{back}");
    assert_eq!(
        metric_reaches(
            &wsnorm,
            r#"wsnorm_timestamp_inputs_total{format="invalid"}"#,
            1.0
        )
        .await,
        1.0
    );
    ws.close(None).await.unwrap();
    drop(wsnorm);

    // leap_second = "next_minute" keeps the old reading.
    let config = r#"
[[rules]]
name = "iso-timestamps"
kind = "timestamp"
paths = ["timestamp"]
leap_second = "next_minute"
"#;
    let wsnorm = Wsnorm::start(&backend.to_string(), config).await;
    let mut ws = connected(&wsnorm).await;
    assert_eq!(
        round_trip(&mut ws, leap).await,
        r#"{"type":"chat","timestamp":1757350260.0}"#
    );
    ws.close(None).await.unwrap();
    still_echoes(&wsnorm).await;
}
