//! The rule engine's hardening over real sockets, against the real binary: a rewrite may not take
//! a message past `max_message_bytes`, messages Python's `json` reads (NaN, deep nesting) get the
//! rules, and second 60 is not read as the next minute.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
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

/// The reproduction: `"timestamp":""` repeated to 1,048,561 bytes, under the 1 MiB limit; the
/// default rule replaces each by "now", which would make it about 2.3 MB.
fn many_empty_timestamps() -> String {
    let tail = r#""message_id":"big-1"}"#;
    let member = r#""timestamp":"","#;
    let n = (1_048_561 - 1 - tail.len()) / member.len();
    let msg = format!("{{{}{tail}", member.repeat(n));
    assert!(msg.len() <= 1_048_561 && msg.len() > 1_048_500);
    msg
}

fn too_large_series() -> &'static str {
    r#"wsnorm_rewrites_total{direction="client_to_backend",result="too_large",rule="iso-timestamps"}"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_over_max_message_bytes_is_answered_and_the_connection_stays_open() {
    let backend = start_echo_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;

    let reply = round_trip(&mut ws, &many_empty_timestamps()).await;
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:.200}"));
    assert_eq!(v["type"], "error_message", "{reply:.300}");
    assert_eq!(v["error_code"], "MESSAGE_TOO_LARGE");
    assert_eq!(v["details"]["max_message_bytes"], 1_048_576);
    assert!(v["details"]["bytes"].as_u64().unwrap() > 1_048_576);
    assert_eq!(v["details"]["message_id"], "big-1");
    assert!(v["timestamp"].is_f64());

    // The same connection goes on; the big message never reached the backend (the echo of the
    // next message is the next thing received).
    let next = r#"{"type":"chat","timestamp":"2025-09-08T16:50:01Z"}"#;
    assert_eq!(
        round_trip(&mut ws, next).await,
        r#"{"type":"chat","timestamp":1757350201.0}"#
    );
    assert_eq!(metric_reaches(&wsnorm, too_large_series(), 1.0).await, 1.0);
    let closes = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &closes,
            r#"wsnorm_closes_total{code="1009",initiator="proxy"}"#
        ),
        0.0
    );
    assert!(wsnorm.logs().contains("would exceed max_message_bytes"));
    ws.close(None).await.unwrap();
    still_echoes(&wsnorm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_oversized_rewrite_close_the_sender_gets_1009() {
    let backend = start_echo_backend().await;
    let config = "[websocket]\non_oversized_rewrite = \"close\"\n";
    let wsnorm = Wsnorm::start(&backend.to_string(), config).await;
    let mut ws = connected(&wsnorm).await;
    send(&mut ws, &many_empty_timestamps()).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "message too big");
        }
        other => panic!("expected 1009, got {:.200}", format!("{other:?}")),
    }
    let series = |code: &str| format!(r#"wsnorm_closes_total{{code="{code}",initiator="proxy"}}"#);
    assert_eq!(metric_reaches(&wsnorm, &series("1009"), 1.0).await, 1.0);
    // The backend leg is closed on the client's behalf.
    assert_eq!(metric_reaches(&wsnorm, &series("1001"), 1.0).await, 1.0);
    assert_eq!(metric_reaches(&wsnorm, too_large_series(), 1.0).await, 1.0);
    still_echoes(&wsnorm).await;
}

#[tokio::test]
async fn python_json_gets_the_rules_and_what_is_not_parsed_is_counted() {
    let backend = start_echo_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;

    // The reproduction: Python's json.dumps writes NaN; the incident timestamp is converted.
    let nan = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","score":NaN}"#;
    assert_eq!(
        round_trip(&mut ws, nan).await,
        r#"{"type":"start_agent","timestamp":1757350201.447585,"score":NaN}"#
    );
    // A NaN timestamp is invalid: on_invalid = "now" writes a finite number.
    let back = round_trip(&mut ws, r#"{"type":"chat","timestamp":Infinity}"#).await;
    let v: Value = serde_json::from_str(&back).unwrap();
    assert!(
        v["timestamp"].as_f64().is_some_and(f64::is_finite),
        "{back}"
    );

    // Deeper than serde_json's 128, within Python's limit: the rules apply.
    let nested = |depth: usize| {
        format!(
            r#"{{"type":"execute_agent","timestamp":"2025-09-08T16:50:01Z","deep":{}1{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    let back = round_trip(&mut ws, &nested(1000)).await;
    assert!(back.starts_with(r#"{"type":"start_agent","timestamp":1757350201.0,"#));
    // Past it: forwarded as it is, counted and logged.
    assert_eq!(round_trip(&mut ws, &nested(1001)).await, nested(1001));
    for bad in ["-NaN", "{\"type\":\"execute_agent\",\"x\":Infinityx}"] {
        assert_eq!(round_trip(&mut ws, bad).await, bad);
    }
    let series = |reason: &str| {
        format!(
            r#"wsnorm_unparsed_messages_total{{direction="client_to_backend",reason="{reason}"}}"#
        )
    };
    assert_eq!(metric_reaches(&wsnorm, &series("too_deep"), 1.0).await, 1.0);
    assert_eq!(
        metric_reaches(&wsnorm, &series("invalid_json"), 2.0).await,
        2.0
    );
    // The backend's replies: no rule for that direction, so not parsed and not counted.
    let metrics = wsnorm.metrics().await;
    let b2c =
        r#"wsnorm_unparsed_messages_total{direction="backend_to_client",reason="invalid_json"}"#;
    assert_eq!(metric(&metrics, b2c), 0.0);
    assert!(wsnorm.logs().contains("not JSON the rules can read"));
    ws.close(None).await.unwrap();
    still_echoes(&wsnorm).await;
}

#[tokio::test]
async fn the_strict_dialect_forwards_nan_unconverted() {
    let backend = start_echo_backend().await;
    let config = "[websocket]\njson_dialect = \"strict\"\nmax_json_depth = 128\n";
    let wsnorm = Wsnorm::start(&backend.to_string(), config).await;
    let mut ws = connected(&wsnorm).await;
    let nan = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","score":NaN}"#;
    assert_eq!(round_trip(&mut ws, nan).await, nan);
    let series =
        r#"wsnorm_unparsed_messages_total{direction="client_to_backend",reason="invalid_json"}"#;
    assert_eq!(metric_reaches(&wsnorm, series, 1.0).await, 1.0);
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
