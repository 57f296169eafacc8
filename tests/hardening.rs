//! Regression tests for the defects an adversarial review found in the handshake path: header
//! injection through tokens, route bypass by spelling the path differently, bytes sent with
//! the upgrade request, backend refusals losing their headers, forged forwarding headers and
//! cross-site WebSocket hijacking. Real sockets, the real binary.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const INCIDENT: &str = r#"{"type":"execute_agent","payload":{"user_request":"hi"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#;

/// The upgrade request `upgrade_request` builds, with `protocols` offered instead of
/// agent_chat and without the demo token.
fn upgrade_offering(path: &str, protocols: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n{extra}\r\n"
    )
}

/// The backend's greeting (the Recorder's, as JSON) on a raw connection.
async fn greeting_json(ws: &mut RawWs) -> serde_json::Value {
    serde_json::from_str(&ws.greeting().await).unwrap()
}

/// Waits (5 s at most) until `wsnorm_connections_active` is `want`.
async fn active_reaches(wsnorm: &Wsnorm, want: f64) {
    for _ in 0..100 {
        if metric(&wsnorm.metrics().await, "wsnorm_connections_active") == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("wsnorm_connections_active never reached {want}");
}

fn handshakes(result: &str) -> String {
    format!(r#"wsnorm_handshakes_total{{result="{result}"}}"#)
}

// ---------------------------------------------------------------------------------------------
// 1. Header injection through a token-bearing subprotocol
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_that_is_not_a_bearer_token_is_refused_and_never_reaches_the_backend() {
    let connections = Arc::new(AtomicUsize::new(0));
    let backend = counting_recorder(connections.clone()).await;
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[websocket]\ntokens_to_authorization = true\n",
    )
    .await;
    let b64 = |raw: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    for evil in [
        "abc\r\nX-Injected: yes",
        "abc\r\n\r\nPOST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0",
        "abc\ndef",
        "abc def",
        "a\0b",
    ] {
        let request = upgrade_offering("/ws", &format!("agent_chat, jwt.{}", b64(evil)), "");
        let resp = http_exchange(wsnorm.listen, request.as_bytes()).await;
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 400 Bad Request",
            "{evil:?}: {resp}"
        );
        assert!(!resp.contains("X-Injected"), "{resp}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the backend was dialled"
    );
    assert_eq!(
        metric(&wsnorm.metrics().await, &handshakes("invalid_token")),
        5.0
    );

    // A real token still becomes the backend's Authorization header.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    let request = upgrade_offering("/ws", &format!("agent_chat, jwt.{}", b64(token)), "");
    let mut ws = RawWs::connect_with(wsnorm.listen, &request).await;
    let hello = greeting_json(&mut ws).await;
    assert_eq!(
        hello["data"]["headers"]["authorization"],
        format!("Bearer {token}")
    );
    assert!(hello["data"]["headers"].get("x-injected").is_none());
}

/// A Recorder behind a counter of the requests it is sent (wsnorm's reachability probes
/// connect without sending anything and are not counted).
async fn counting_recorder(count: Arc<AtomicUsize>) -> SocketAddr {
    let recorder = Recorder::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = recorder.addr;
    tokio::spawn(async move {
        let _recorder = recorder;
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 64 * 1024];
                let n = match client.read(&mut first).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = server.write_all(&first[..n]).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[test]
fn config_strings_that_would_reach_a_header_or_an_address_are_errors() {
    let dir = TempDir::new();
    for (toml, key) in [
        ("[backend]\naddress = \"user:pass@127.0.0.1:8000\"\n", "backend"),
        ("[backend]\naddress = \"127.0.0.1\\r\\nX: y:8000\"\n", "backend"),
        (
            "[[websocket.routes]]\npath = \"/ws\"\nbackend_subprotocols = [\"a\\r\\nX-Injected: y\"]\n",
            "backend_subprotocols[0]",
        ),
        (
            "[[websocket.routes]]\npath = \"/ws\"\nbackend_offer = \"fixed\"\nfixed_subprotocol = \"a\\r\\nb\"\n",
            "fixed_subprotocol",
        ),
        (
            "[[websocket.routes]]\npath = \"/ws\"\nallowed_origins = [\"https://a.example/\\r\\n\"]\n",
            "allowed_origins[0]",
        ),
        (
            "[[websocket.routes]]\npath = \"/w%73\"\n",
            "line 2: websocket.routes[0].path",
        ),
    ] {
        let path = dir.0.join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsnorm"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml}: {stderr}");
        assert!(stderr.contains(key), "{toml}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Route bypass by spelling the path differently
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_spelling_of_a_route_gets_the_rules_the_subprotocol_and_the_limit() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(
        &recorder.addr.to_string(),
        "[server]\nmax_connections = 5\n",
    )
    .await;
    let spellings = [
        "/w%73",
        "/ws/",
        "//ws",
        "/./ws",
        "/x/../ws",
        "/api/v1/websocke%74",
    ];
    let mut open = Vec::new();
    for path in spellings.iter().take(5) {
        let request = upgrade_request(path, "");
        let mut ws = RawWs::connect_with(wsnorm.listen, &request).await;
        greeting_json(&mut ws).await;
        ws.send(&client_frame(OP_TEXT, INCIDENT.as_bytes())).await;
        let echoed = ws.next_text().await;
        assert!(
            echoed.contains(r#""type":"start_agent""#)
                && echoed.contains(r#""timestamp":1757350201.447585"#),
            "{path}: the backend got {echoed}"
        );
        open.push(ws);
    }
    // The sixth spelling meets the limit like any WebSocket.
    let resp = http_exchange(wsnorm.listen, upgrade_request(spellings[5], "").as_bytes()).await;
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 503 Service Unavailable",
        "{resp}"
    );
    drop(open);
    active_reaches(&wsnorm, 0.0).await;

    // The 101 carries agent_chat for every spelling.
    let request = upgrade_request("/w%73", "");
    let (_ws, head) = RawWs::open(wsnorm.listen, request.as_bytes()).await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: agent_chat"),
        "{head}"
    );
}

#[tokio::test]
async fn ambiguous_paths_are_refused_and_unrouted_upgrades_are_relayed_without_rules() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(
        &recorder.addr.to_string(),
        "[server]\nmax_connections = 2\n",
    )
    .await;
    for path in ["/ws%2Fx", "/ws%2fx", "/ws%00", "/w%ff"] {
        let resp = http_exchange(wsnorm.listen, upgrade_request(path, "").as_bytes()).await;
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 400 Bad Request",
            "{path}: {resp}"
        );
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(metric(&metrics, &handshakes("bad_path")), 4.0);

    // A path that is no route: wsnorm's relay, no rules, counted and limited.
    let mut first = RawWs::connect_with(wsnorm.listen, &upgrade_request("/other", "")).await;
    greeting_json(&mut first).await;
    first
        .send(&client_frame(OP_TEXT, INCIDENT.as_bytes()))
        .await;
    assert_eq!(first.next_text().await, INCIDENT);
    let mut second = RawWs::connect_with(wsnorm.listen, &upgrade_request("/other/x", "")).await;
    greeting_json(&mut second).await;
    let resp = http_exchange(wsnorm.listen, upgrade_request("/third", "").as_bytes()).await;
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 503 Service Unavailable",
        "{resp}"
    );
    let metrics = wsnorm.metrics().await;
    assert_eq!(metric(&metrics, &handshakes("ok")), 2.0);
    assert_eq!(metric(&metrics, "wsnorm_connections_active"), 2.0);
}

#[tokio::test]
async fn unrouted_upgrades_can_be_refused() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(
        &recorder.addr.to_string(),
        "[websocket]\nunrouted_upgrades = \"refuse\"\n",
    )
    .await;
    let resp = http_exchange(wsnorm.listen, upgrade_request("/other", "").as_bytes()).await;
    assert_eq!(status_line(&resp), "HTTP/1.1 404 Not Found", "{resp}");
    let mut ws = RawWs::connect_with(wsnorm.listen, &upgrade_request("/w%73", "")).await;
    greeting_json(&mut ws).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bytes sent with the upgrade request
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_start_the_client_leg() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;
    let big = format!(
        r#"{{"type":"execute_agent","pad":"{}","timestamp":"2025-09-08T16:50:01.447585"}}"#,
        "x".repeat(20_000)
    );
    for first in [INCIDENT.to_string(), big] {
        // Head and two frames in one write: the first frame and the start of the second.
        let mut bytes = upgrade_request("/ws", "").into_bytes();
        bytes.extend_from_slice(&client_frame(OP_TEXT, first.as_bytes()));
        bytes.extend_from_slice(&client_frame(OP_TEXT, br#"{"type":"ping","n":2}"#));
        let (mut ws, head) = RawWs::open(wsnorm.listen, &bytes).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        greeting_json(&mut ws).await;
        let echoed = ws.next_text().await;
        assert!(
            echoed.contains(r#""type":"start_agent""#)
                && echoed.contains(r#""timestamp":1757350201.447585"#),
            "{}",
            &echoed[..echoed.len().min(200)]
        );
        assert_eq!(ws.next_text().await, r#"{"type":"ping","n":2}"#);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Backend refusals keep their headers; interim responses are skipped
// ---------------------------------------------------------------------------------------------

/// A backend that answers every handshake with `answer(sec_websocket_accept)` and then waits
/// for the client to go.
async fn scripted_backend(answer: fn(&str) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_request_head(&mut s).await;
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("sec-websocket-key")
                            .then_some(value)
                    })
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let accept = derive_accept_key(key.as_bytes());
                let _ = s.write_all(&answer(&accept)).await;
                let _ = s.read(&mut [0u8; 64]).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn refusal_headers_are_relayed_without_hop_by_hop_ones() {
    let backend = scripted_backend(|_| {
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nSet-Cookie: a=1; Path=/\r\n\
         Set-Cookie: b=2; Path=/\r\nLocation: /elsewhere\r\nConnection: keep-alive, X-Hop\r\n\
         X-Hop: secret-hop\r\nKeep-Alive: timeout=5\r\nContent-Type: application/json\r\n\
         Content-Length: 17\r\n\r\n{\"detail\":\"slow\"}"
            .as_bytes()
            .to_vec()
    })
    .await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let resp = http_exchange(wsnorm.listen, upgrade_request("/ws", "").as_bytes()).await;
    let lower = resp.to_ascii_lowercase();
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 429 Too Many Requests",
        "{resp}"
    );
    for kept in [
        "retry-after: 30",
        "set-cookie: a=1; path=/",
        "set-cookie: b=2; path=/",
        "location: /elsewhere",
        "content-type: application/json",
        "content-length: 17",
    ] {
        assert!(lower.contains(kept), "{kept} missing: {resp}");
    }
    assert!(!lower.contains("x-hop"), "{resp}");
    assert!(!lower.contains("keep-alive"), "{resp}");
    assert!(resp.ends_with("{\"detail\":\"slow\"}"), "{resp}");
}

#[tokio::test]
async fn interim_responses_before_the_101_are_skipped() {
    let backend = scripted_backend(|accept| {
        let mut out = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n\
             HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(b"\x81\x05hello");
        out
    })
    .await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = RawWs::connect_with(wsnorm.listen, &upgrade_request("/ws", "")).await;
    assert_eq!(ws.next_text().await, "hello");
}

// ---------------------------------------------------------------------------------------------
// Forwarding headers and Origin
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forged_forwarding_headers_are_overwritten_unless_the_peer_is_trusted() {
    let backend = start_backend().await;
    let forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
                  X-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n";
    let echo = |forged: &str| {
        format!(
            "POST /api/echo HTTP/1.1\r\nHost: chat.example\r\n{forged}Content-Length: 2\r\n\
             Connection: close\r\n\r\n{{}}"
        )
    };
    let headers_seen = |resp: &str| -> serde_json::Value {
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        serde_json::from_str::<serde_json::Value>(body).unwrap()["headers"].clone()
    };

    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let h = headers_seen(&http_request(wsnorm.listen, &echo(forged)).await);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "chat.example");
    assert!(h.get("x-real-ip").is_none(), "{h}");
    assert!(h.get("forwarded").is_none(), "{h}");
    drop(wsnorm);

    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let h = headers_seen(&http_request(wsnorm.listen, &echo(forged)).await);
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
}

#[tokio::test]
async fn forged_forwarding_headers_on_a_websocket_are_overwritten() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;
    let request = upgrade_request(
        "/ws",
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n",
    );
    let mut ws = RawWs::connect_with(wsnorm.listen, &request).await;
    let hello = greeting_json(&mut ws).await;
    let h = &hello["data"]["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.get("x-real-ip").is_none(), "{h}");
    assert!(h.get("forwarded").is_none(), "{h}");
}

#[tokio::test]
async fn a_route_with_allowed_origins_refuses_other_origins() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(
        &recorder.addr.to_string(),
        "[[websocket.routes]]\npath = \"/ws\"\nallowed_origins = [\"https://chat.example\"]\n",
    )
    .await;
    let resp = http_exchange(
        wsnorm.listen,
        upgrade_request("/ws", "Origin: https://evil.example\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_line(&resp), "HTTP/1.1 403 Forbidden", "{resp}");
    assert_eq!(
        metric(&wsnorm.metrics().await, &handshakes("origin_rejected")),
        1.0
    );
    for extra in [
        "Origin: https://chat.example\r\n",
        "Origin: HTTPS://Chat.Example\r\n",
        "",
    ] {
        let mut ws = RawWs::connect_with(wsnorm.listen, &upgrade_request("/ws", extra)).await;
        greeting_json(&mut ws).await;
    }
}

#[tokio::test]
async fn a_token_protocol_the_backend_chooses_on_an_unrouted_path_is_echoed_but_never_logged() {
    let backend = scripted_backend(|accept| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: jwt.c2VjcmV0LXRva2Vu\r\n\r\n"
        )
        .into_bytes()
    })
    .await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let request = upgrade_offering("/other", "jwt.c2VjcmV0LXRva2Vu", "");
    let (mut ws, head) = RawWs::open(wsnorm.listen, request.as_bytes()).await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: jwt.c2vjcmv0lxrva2vu"),
        "{head}"
    );
    ws.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !wsnorm.logs().contains("WebSocket connected.") {
        assert!(std::time::Instant::now() < deadline, "{}", wsnorm.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = wsnorm.logs();
    assert!(logs.contains(r#""wsnorm.subprotocol":"(token)""#), "{logs}");
    assert!(!logs.contains("c2VjcmV0LXRva2Vu"), "{logs}");
    assert_eq!(
        metric(
            &wsnorm.metrics().await,
            r#"wsnorm_subprotocols_total{protocol="other"}"#
        ),
        1.0
    );
}
