//! wsnorm in front of the strict demo backend, over real sockets: negotiation, rewrites, refusals,
//! close codes, untouched data and plain HTTP on the same port.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

const INCIDENT: &str = r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#;

#[tokio::test]
async fn incident_message_reaches_the_strict_backend_rewritten() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;

    send(&mut ws, INCIDENT).await;
    assert_eq!(
        backend_saw(&mut ws).await,
        r#"{"type":"start_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":1757350201.447585,"message_id":"m1"}"#
    );
    // The backend now routes it instead of dropping it or closing with 1011.
    let ack = next_text(&mut ws).await;
    assert!(ack.contains(r#""received_type":"start_agent""#), "{ack}");
    let started = next_text(&mut ws).await;
    assert!(started.contains("agent_started"), "{started}");
    // Backend-to-client messages are not touched by the default (client_to_backend) rules.
    assert!(started.contains(r#""timestamp":"20"#), "{started}");

    ws.close(None).await.unwrap();
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(&metrics, r#"wsnorm_handshakes_total{result="ok"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_rewrites_total{direction="client_to_backend",result="rewritten",rule="agent-aliases"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_timestamp_inputs_total{format="iso_naive"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_subprotocols_total{protocol="agent_chat"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn without_wsnorm_the_strict_client_fails_and_the_backend_closes_1011() {
    // The incident, reproduced against the backend alone.
    let backend = start_backend().await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{backend}/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "agent_chat".parse().unwrap());
    req.headers_mut()
        .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("subprotocol"), "{err}");
}

#[tokio::test]
async fn untouched_messages_keep_their_exact_bytes() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;

    let exact = "{ \"type\" : \"echo\", \"big\": 123456789012345678901234567890, \"f\": 1.50, \"e\": 1.0e3, \"u\": \"\\u00e9\", \"timestamp\": 1757350201.5 }";
    send(&mut ws, exact).await;
    assert_eq!(backend_saw(&mut ws).await, exact);
    assert_eq!(next_text(&mut ws).await, exact, "echoed back unchanged too");

    // Not JSON: relayed as it is (the backend answers it with INVALID_JSON).
    send(&mut ws, "hello {not json").await;
    let reply = next_text(&mut ws).await;
    assert!(reply.contains("INVALID_JSON"), "{reply}");

    // Binary: echoed byte for byte.
    let blob = vec![0u8, 159, 146, 150, 255, b'{'];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(blob));
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_and_rewritten() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    let (a, rest) = INCIDENT.split_at(20);
    let (b, c) = rest.split_at(40);
    let frame =
        |s: &str, op, fin| Message::Frame(Frame::message(Bytes::from(s.to_string()), op, fin));
    ws.send(frame(a, OpCode::Data(Data::Text), false))
        .await
        .unwrap();
    ws.send(frame(b, OpCode::Data(Data::Continue), false))
        .await
        .unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"between fragments")))
        .await
        .unwrap();
    ws.send(frame(c, OpCode::Data(Data::Continue), true))
        .await
        .unwrap();

    // wsnorm answers the ping itself, exactly once.
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(Bytes::from_static(b"between fragments"))
    );
    let saw = backend_saw(&mut ws).await;
    assert!(saw.contains(r#""type":"start_agent""#), "{saw}");
    assert!(saw.contains(r#""timestamp":1757350201.447585"#), "{saw}");
    let ack = next_text(&mut ws).await;
    assert!(ack.contains("ack"), "{ack}");
}

#[tokio::test]
async fn backend_close_codes_reach_the_client_with_their_reason() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    send(
        &mut ws,
        r#"{"type":"close_with","payload":{"code":1011,"reason":"agent crashed"}}"#,
    )
    .await;
    backend_saw(&mut ws).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Error);
            assert_eq!(frame.reason.as_str(), "agent crashed");
        }
        other => panic!("expected close, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_closes_total{code="1011",initiator="backend"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn client_close_codes_reach_the_backend() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Library(4001),
        reason: "user left".into(),
    }))
    .await
    .unwrap();
    // The close is answered and the stream ends cleanly.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("{e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_closes_total{code="other",initiator="client"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn backend_refusals_keep_their_status_and_body() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;

    // No token: the backend's 403 and its body reach the client.
    let raw = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: agent_chat\r\n\r\n";
    let resp = http_request(wsnorm.listen, raw).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.ends_with(r#"{"detail":"missing or invalid token"}"#),
        "{resp}"
    );

    // 500 stays 500.
    let err = wsnorm
        .connect("/ws/fail500", "agent_chat")
        .await
        .unwrap_err();
    match err {
        WsError::Http(resp) => {
            assert_eq!(resp.status(), 500);
            assert_eq!(resp.body().as_deref(), Some(&br#"{"detail":"boom"}"#[..]));
        }
        other => panic!("expected HTTP 500, got {other}"),
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(&metrics, r#"wsnorm_handshakes_total{result="backend_4xx"}"#),
        1.0
    );
    assert_eq!(
        metric(&metrics, r#"wsnorm_handshakes_total{result="backend_5xx"}"#),
        1.0
    );
}

#[tokio::test]
async fn unreachable_backend_gives_502_not_101() {
    // Bound but not listening: connections are refused, and no other test can take the port.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap();
    let wsnorm = Wsnorm::start(&closed.to_string(), "").await;
    match wsnorm.connect("/ws", "agent_chat").await.unwrap_err() {
        WsError::Http(resp) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other}"),
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_handshakes_total{result="connect_error"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn silent_backend_gives_504_after_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept, never answer
        }
    });
    let wsnorm = Wsnorm::start(
        &addr.to_string(),
        "[websocket]\nhandshake_timeout_ms = 300\n",
    )
    .await;
    let started = std::time::Instant::now();
    match wsnorm.connect("/ws", "agent_chat").await.unwrap_err() {
        WsError::Http(resp) => assert_eq!(resp.status(), 504),
        other => panic!("expected 504, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn garbage_instead_of_101_gives_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"\x16\x03\x01 this is not http\r\n\r\n").await;
        }
    });
    let wsnorm = Wsnorm::start(&addr.to_string(), "").await;
    match wsnorm.connect("/ws", "agent_chat").await.unwrap_err() {
        WsError::Http(resp) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other}"),
    }
}

#[tokio::test]
async fn invalid_upgrades_are_refused_clearly() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let upgrade = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let resp = http_request(
        wsnorm.listen,
        &upgrade("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{resp}"
    );
    let resp = http_request(wsnorm.listen, &upgrade("Sec-WebSocket-Version: 13\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("Sec-WebSocket-Key"), "{resp}");
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[websocket]\nmax_message_bytes = 4096\n",
    )
    .await;
    let mut ws = connected(&wsnorm).await;
    let big = format!(r#"{{"type":"echo","pad":"{}"}}"#, "x".repeat(8000));
    let _ = ws.send(Message::text(big)).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_passes_through_with_forwarded_headers() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;

    let resp = http_request(
        wsnorm.listen,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with(r#"{"status":"ok"}"#), "{resp}");

    let body = r#"{"hello":"world"}"#;
    let resp = http_request(
        wsnorm.listen,
        &format!(
            "POST /api/echo?q=1 HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/api/echo?q=1");
    assert_eq!(json["body"], body);
    assert_eq!(json["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(json["headers"]["x-forwarded-proto"], "http");
    assert_eq!(json["headers"]["host"], "example.test");

    let resp = http_request(
        wsnorm.listen,
        "GET /api/status/503 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");

    let resp = http_request(
        wsnorm.listen,
        "GET /api/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    for i in 0..5 {
        assert!(resp.contains(&format!("chunk-{i}")), "{resp}");
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_http_requests_total{status_class="2xx"}"#
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_http_requests_total{status_class="5xx"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_query_string_and_headers_reach_the_backend() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let (mut ws, _) = wsnorm
        .connect("/ws/factory?mode=factory&x=1", "agent_chat")
        .await
        .unwrap();
    let hello = next_text(&mut ws).await;
    let v: serde_json::Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(v["data"]["path"], "/ws/factory?mode=factory&x=1");
    assert_eq!(v["data"]["authorization"], true);
    // agent_chat is not offered to a backend that does not know it.
    assert_eq!(v["data"]["offered_subprotocols"], "");
}

#[tokio::test]
async fn tokens_are_never_logged() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let secret = "jwt.c2VjcmV0LXRva2VuLXZhbHVlLTQyNDI0Mg";
    let (mut ws, protocol) = wsnorm
        .connect("/ws", &format!("agent_chat, {secret}"))
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("agent_chat"));
    let hello = next_text(&mut ws).await;
    // The token-bearing protocol went to the backend ...
    assert!(hello.contains(secret), "{hello}");
    send(&mut ws, INCIDENT).await;
    backend_saw(&mut ws).await;
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... but neither it nor the Authorization header appears in the logs.
    let logs = wsnorm.logs();
    assert!(logs.contains("WebSocket connected"), "{logs}");
    assert!(!logs.contains("c2VjcmV0LXRva2Vu"), "{logs}");
    assert!(!logs.contains(&TOKEN[..20]), "{logs}");
}

/// Every event of a connection names it (id, route, path, subprotocol, peer), from the
/// handshake to the close line, though the open connection holds no span.
#[tokio::test]
async fn a_connections_log_events_name_it() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    send(&mut ws, INCIDENT).await;
    backend_saw(&mut ws).await;
    ws.close(None).await.unwrap();
    let closed = wsnorm.events("WebSocket closed.").await.remove(0);
    let connected = wsnorm.events("WebSocket connected.").await.remove(0);
    for e in [&connected, &closed] {
        let span = &e["span"];
        assert_eq!(span["name"], "connection", "{e}");
        assert_eq!(span["http.route"], "/ws", "{e}");
        assert_eq!(span["url.path"], "/ws", "{e}");
        assert_eq!(span["wsnorm.subprotocol"], "agent_chat", "{e}");
        assert_eq!(span["network.peer.address"], "127.0.0.1", "{e}");
        assert!(span["network.peer.port"].as_u64().is_some(), "{e}");
    }
    assert_eq!(
        connected["span"]["wsnorm.connection.id"],
        closed["span"]["wsnorm.connection.id"]
    );
    assert_eq!(closed["wsnorm.close.initiator"], "client", "{closed}");
    assert_eq!(closed["wsnorm.messages.from_client"], 1, "{closed}");
}

/// A backend that sends its first frame in the same write as its 101 (FastAPI apps that greet
/// on accept can do that): the frame arrives with the handshake bytes and must still be relayed.
#[tokio::test]
async fn a_frame_sent_right_behind_the_101_reaches_the_client() {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let greeting = br#"{"type":"welcome","timestamp":"2025-09-08T16:50:01.447585"}"#;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let Some(key) = head.lines().find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            }) else {
                continue;
            };
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.trim().as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(&[0x81, greeting.len() as u8]);
            out.extend_from_slice(greeting);
            s.write_all(&out).await.unwrap();
            // Keep the connection open until the client is done.
            let _ = s.read(&mut buf).await;
        }
    });
    let wsnorm = Wsnorm::start(&addr.to_string(), "").await;
    let (mut ws, _) = wsnorm.connect("/ws", "agent_chat").await.unwrap();
    let text = next_text(&mut ws).await;
    assert!(
        text.starts_with(r#"{"type":"welcome","timestamp":"#),
        "{text}"
    );
}
