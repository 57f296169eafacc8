//! Tiny demo client: replays the incident message and shows what the backend received.
//!
//! It behaves like a strict browser client: it offers the `agent_chat` subprotocol (and sends
//! `Authorization: Bearer <token>`), so connecting straight to the demo backend fails with
//! "Server sent no subprotocol", and the incident message (`execute_agent` with a naive ISO
//! `timestamp`) gets the connection closed with 1011. Through wsnorm the subprotocol is
//! negotiated and the message is rewritten to `start_agent` with a unix float timestamp; the
//! backend's `received` reply shows the exact text that reached it.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A dummy JWT-looking bearer token the demo backend accepts (it only checks the length).
/// Header `{"alg":"HS256","typ":"JWT"}`, payload
/// `{"sub":"demo-user","name":"wsnorm demo","iat":1757350201}`, signature not verified.
pub const DEMO_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
eyJzdWIiOiJkZW1vLXVzZXIiLCJuYW1lIjoid3Nub3JtIGRlbW8iLCJpYXQiOjE3NTczNTAyMDF9.\
ZGVtby1zaWduYXR1cmUtbm90LXZlcmlmaWVk";

/// The subprotocol the client offers.
pub const SUBPROTOCOL: &str = "agent_chat";

/// The message from the incident: a legacy `execute_agent` type and a naive ISO timestamp,
/// both of which the backend cannot handle.
pub const INCIDENT_MESSAGE: &str = r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect to `url` offering `agent_chat`, send [`INCIDENT_MESSAGE`], print every reply until the
/// backend has shown what it received and started the agent, then close normally (1000).
pub async fn run(url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("invalid WebSocket URL {url:?}"))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token cannot be sent in an Authorization header")?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }

    println!(
        "connecting to {url}, offering subprotocol {SUBPROTOCOL}{}",
        if token.is_some() {
            " with Authorization: Bearer <token>"
        } else {
            " without a token"
        }
    );
    let (mut ws, response) = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(_) => bail!("timed out after {CONNECT_TIMEOUT:?} connecting to {url}"),
        Ok(Err(err)) => return Err(explain_connect_error(err, url)),
        Ok(Ok(connected)) => connected,
    };
    let negotiated = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "(none)".to_owned());
    println!(
        "connected (HTTP {}), negotiated subprotocol: {negotiated}",
        response.status().as_u16()
    );

    ws.send(Message::text(INCIDENT_MESSAGE))
        .await
        .context("sending the incident message")?;
    println!("sent: {INCIDENT_MESSAGE}");

    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let mut saw_received = false;
    let mut saw_started = false;
    while !(saw_received && saw_started) {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| {
                anyhow!(
                    "no agent_started within {REPLY_TIMEOUT:?}: the backend dropped the message \
                     (an un-rewritten execute_agent is silently ignored by the backend)"
                )
            })?;
        let msg = match next {
            None => bail!("the connection ended before the agent started"),
            Some(Err(err)) => return Err(err).context("reading from the WebSocket"),
            Some(Ok(msg)) => msg,
        };
        match msg {
            Message::Text(text) => {
                println!("received: {}", text.as_str());
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match value.get("type").and_then(Value::as_str) {
                    Some("received") => {
                        saw_received = true;
                        if let Some(raw) = value.get("raw").and_then(Value::as_str) {
                            explain_received(raw);
                        }
                    }
                    Some("agent_started") => {
                        saw_started = true;
                        println!("  -> the backend started the agent run");
                    }
                    _ => {}
                }
            }
            Message::Binary(data) => println!("received: <binary, {} bytes>", data.len()),
            Message::Close(frame) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                    .unwrap_or((1005, String::new()));
                println!("received: close {code} {reason:?}");
                bail!(
                    "the backend closed the connection with {code} {reason:?} before the agent \
                     started (a string timestamp fails its validation: send the message through \
                     wsnorm so it is rewritten)"
                );
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "demo done".into(),
    }))
    .await
    .context("sending the close frame")?;
    // Wait for the server's close reply so the close handshake completes.
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    println!("closed normally (1000)");
    Ok(())
}

/// Print how the text the backend received differs from what the client sent.
fn explain_received(raw: &str) {
    println!("  -> the backend received exactly: {raw}");
    if raw == INCIDENT_MESSAGE {
        println!("  -> unchanged: nothing rewrote the message on the way");
        return;
    }
    let (Ok(sent), Ok(got)) = (
        serde_json::from_str::<Value>(INCIDENT_MESSAGE),
        serde_json::from_str::<Value>(raw),
    ) else {
        return;
    };
    for field in ["type", "timestamp"] {
        let (before, after) = (&sent[field], &got[field]);
        if before != after {
            println!("  -> {field} rewritten: {before} -> {after}");
        }
    }
}

fn explain_connect_error(err: WsError, url: &str) -> anyhow::Error {
    match err {
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => anyhow!(
            "{url} accepted the WebSocket but negotiated no subprotocol although {SUBPROTOCOL} was \
             offered, so this strict client (like Chrome) refuses the connection. That is the \
             backend's bug: connect through wsnorm, which negotiates {SUBPROTOCOL}"
        ),
        WsError::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let hint = if status.as_u16() == 403 {
                " (the backend wants a token: pass one, e.g. the demo token)"
            } else {
                ""
            };
            anyhow!("handshake refused with HTTP {status} {body}{hint}")
        }
        other => anyhow::Error::new(other).context(format!("connecting to {url}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{serve, BackendOptions};

    #[test]
    fn demo_token_looks_like_a_jwt() {
        assert_eq!(DEMO_TOKEN.split('.').count(), 3);
        assert!(DEMO_TOKEN.len() >= 10);
        assert!(!DEMO_TOKEN.contains(char::is_whitespace));
        let _: Value = serde_json::from_str(INCIDENT_MESSAGE).unwrap();
    }

    #[tokio::test]
    async fn direct_connection_fails_on_missing_subprotocol() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, BackendOptions { verbose: false }));
        let err = run(&format!("ws://{addr}/ws"), Some(DEMO_TOKEN))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no subprotocol"), "{err:#}");
        let err = run(&format!("ws://{addr}/ws"), None).await.unwrap_err();
        assert!(err.to_string().contains("403"), "{err:#}");
    }

    /// A minimal stand-in for wsnorm: negotiates `agent_chat`, rewrites the incident message
    /// naively and relays text/close frames both ways.
    async fn fake_normalizer(listener: tokio::net::TcpListener, backend: String) {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let backend = backend.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)]
                let callback = |_req: &Request, mut resp: Response| {
                    resp.headers_mut().insert(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static(SUBPROTOCOL),
                    );
                    Ok(resp)
                };
                let client = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .unwrap();
                let mut req = backend.into_client_request().unwrap();
                req.headers_mut().insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {DEMO_TOKEN}")).unwrap(),
                );
                let (backend, _) = tokio_tungstenite::connect_async(req).await.unwrap();
                let (mut c_tx, mut c_rx) = client.split();
                let (mut u_tx, mut u_rx) = backend.split();
                let up = async {
                    while let Some(Ok(msg)) = c_rx.next().await {
                        let msg = match msg {
                            Message::Text(t) => Message::text(
                                t.as_str()
                                    .replace("execute_agent", "start_agent")
                                    .replace("\"2025-09-08T16:50:01.447585\"", "1757350201.447585"),
                            ),
                            other => other,
                        };
                        if u_tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(msg)) = u_rx.next().await {
                        if c_tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    }

    #[tokio::test]
    async fn through_a_normalizer_the_agent_starts() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(serve(backend, BackendOptions { verbose: true }));
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        tokio::spawn(fake_normalizer(front, format!("ws://{backend_addr}/ws")));
        run(&format!("ws://{front_addr}/ws"), Some(DEMO_TOKEN))
            .await
            .unwrap();
    }
}
