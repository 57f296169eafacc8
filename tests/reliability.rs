//! Reliability and security over real sockets: every row of the bad-input table, backend and
//! client faults, keepalive, slow readers, connection limits and what reaches the logs. Each case
//! asserts the documented outcome and then that the same wsnorm still serves a fresh connection.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fresh, normal WebSocket through the same wsnorm works: greeting, then an echo.
async fn still_serves(wsnorm: &Wsnorm) {
    let mut ws = connected(wsnorm).await;
    let probe = r#"{"type":"echo","probe":"still serving"}"#;
    send(&mut ws, probe).await;
    loop {
        if next_text(&mut ws).await == probe {
            break;
        }
    }
    ws.close(None).await.unwrap();
}

/// Plain HTTP through the same wsnorm works (demo backend only).
async fn still_serves_http(wsnorm: &Wsnorm) {
    let resp = http_request(
        wsnorm.listen,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

fn closes(code: &str, initiator: &str) -> String {
    format!(r#"wsnorm_closes_total{{code="{code}",initiator="{initiator}"}}"#)
}

fn client_gone() -> Option<BackendEnd> {
    Some(BackendEnd::Close(Some((1001, "client gone".into()))))
}

/// The demo backend as its own process, so it can be killed.
struct DemoBackendProcess {
    child: Child,
    addr: SocketAddr,
}

impl DemoBackendProcess {
    async fn start(addr: SocketAddr) -> DemoBackendProcess {
        let child = Command::new(testkit_bin("wsnorm-demo"))
            .args(["backend", "--quiet", "--bind", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo backend");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "demo backend did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        DemoBackendProcess { child, addr }
    }

    /// SIGKILL, then reap.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for DemoBackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// Bad input table
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_json_and_deeply_nested_json_are_relayed_unchanged() {
    let mut recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;

    for text in [
        "hello {not json",
        r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01"#, // cut short
        r#"{"type":"execute_agent",,}"#,
        "{\"type\":\"execute_agent\",\"timestamp\":\"2025\u{0}\"}",
        "",
    ] {
        send(&mut ws, text).await;
        assert_eq!(
            next_text(&mut ws).await,
            text,
            "relayed unchanged both ways"
        );
    }

    // 100,000 levels deep: no stack overflow, no quadratic time, relayed as it is.
    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
    let under_payload = format!(
        r#"{{"type":"execute_agent","timestamp":"2025-09-08T16:50:01","payload":{{"timestamp":{arrays}}}}}"#
    );
    for text in [&arrays, &objects, &under_payload] {
        let started = Instant::now();
        send(&mut ws, text).await;
        let back = next_text(&mut ws).await;
        let elapsed = started.elapsed();
        assert!(
            back == *text,
            "deep JSON came back changed ({} bytes)",
            back.len()
        );
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_messages_total{direction="client_to_backend",kind="text"}"#
        ),
        8.0,
        "invalid and too-deep JSON count as text: {metrics}"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let _ = recorder.end_of("/ws", Duration::from_secs(2)).await;
    still_serves(&wsnorm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_message_gets_1009_with_default_limits() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let ws = connected(&wsnorm).await;
    let (mut sink, mut stream) = ws.split();
    let big = format!(
        r#"{{"type":"echo","pad":"{}"}}"#,
        "x".repeat(20 * 1024 * 1024)
    );
    // Send in the background: wsnorm may stop reading (and close) before all of it is written.
    let writer = tokio::spawn(async move { sink.send(Message::text(big)).await });
    let started = Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an answer within 10 s")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a 1009 close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close code");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    writer.abort();
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1009", "proxy"), 1.0).await,
        1.0
    );
    // The backend leg is closed with 1001.
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1001", "proxy"), 1.0).await,
        1.0
    );
    still_serves(&wsnorm).await;
    still_serves_http(&wsnorm).await;
}

#[tokio::test]
async fn binary_frames_are_relayed_byte_for_byte() {
    let recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let not_utf8 = vec![0xff, 0xfe, b'{', 0xc3, 0x28, 0x00];
    let large: Vec<u8> = (0..900_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for blob in [every_byte, not_utf8, Vec::new(), large] {
        ws.send(Message::binary(blob.clone())).await.unwrap();
        match next(&mut ws).await {
            Message::Binary(b) => assert!(b.as_ref() == blob.as_slice(), "binary changed"),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_messages_total{direction="client_to_backend",kind="binary"}"#
        ),
        4.0,
        "{metrics}"
    );
    ws.close(None).await.unwrap();
    still_serves(&wsnorm).await;
}

/// Protocol violations on the client leg: the offender gets the documented code, the backend
/// leg gets 1001 "client gone", and the next connection works.
#[tokio::test]
async fn protocol_violations_close_the_offender_and_the_proxy_keeps_serving() {
    let mut recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;

    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8 in a text frame",
            client_frame(OP_TEXT, b"{\"type\":\"echo\",\"x\":\"\xff\xfe\"}"),
            1007,
        ),
        (
            "invalid UTF-8 split across fragments",
            [
                frame_bytes(false, 0, OP_TEXT, true, b"ok \xc3"),
                frame_bytes(true, 0, OP_CONT, true, b"\x28 not a continuation byte"),
            ]
            .concat(),
            1007,
        ),
        (
            "continuation frame with no start",
            client_frame(OP_CONT, b"orphan"),
            1002,
        ),
        (
            "reserved data opcode 0x3",
            client_frame(0x3, b"reserved"),
            1002,
        ),
        (
            "reserved control opcode 0xB",
            client_frame(0xB, b"reserved"),
            1002,
        ),
        (
            "RSV1 set (no extension negotiated)",
            frame_bytes(true, 0b100, OP_TEXT, true, b"{\"type\":\"echo\"}"),
            1002,
        ),
        (
            "RSV2 and RSV3 set",
            frame_bytes(true, 0b011, OP_BINARY, true, b"bin"),
            1002,
        ),
        (
            "ping with a 126-byte payload",
            client_frame(OP_PING, &[b'p'; 126]),
            1002,
        ),
        (
            "fragmented ping",
            frame_bytes(false, 0, OP_PING, true, b"half"),
            1002,
        ),
        (
            "unmasked client frame",
            frame_bytes(true, 0, OP_TEXT, false, b"{\"type\":\"echo\"}"),
            1002,
        ),
        (
            "new text frame inside a fragmented message",
            [
                frame_bytes(false, 0, OP_TEXT, true, b"{\"a\":"),
                frame_bytes(true, 0, OP_TEXT, true, b"1}"),
            ]
            .concat(),
            1002,
        ),
    ];
    let mut report = Vec::new();
    for (i, (name, bytes, want)) in cases.drain(..).enumerate() {
        let path = format!("/ws/violation-{i}");
        let mut raw = RawWs::connect(wsnorm.listen, &path).await;
        raw.greeting().await;
        raw.send(&bytes).await;
        let got = raw.close_code().await;
        let backend = recorder.end_of(&path, Duration::from_secs(3)).await;
        let ok = got.as_ref().map(|(c, _)| *c) == Some(want) && backend == client_gone();
        report.push(format!(
            "{} {name}: want {want}, client got {got:?}, backend leg got {backend:?}",
            if ok { "ok  " } else { "FAIL" }
        ));
        still_serves(&wsnorm).await;
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(!report.contains("FAIL"), "\n{report}");
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1002", "proxy"), 9.0).await,
        9.0
    );
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1007", "proxy"), 2.0).await,
        2.0
    );
}

#[tokio::test]
async fn oversized_request_heads_get_431_for_http_and_websocket() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let big = "a".repeat(40_000);

    let resp = http_exchange(
        wsnorm.listen,
        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 431"), "{resp}");
    still_serves_http(&wsnorm).await;

    let resp = http_exchange(
        wsnorm.listen,
        upgrade_request("/ws", &format!("Cookie: {big}\r\n")).as_bytes(),
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 431"), "{resp}");
    still_serves(&wsnorm).await;

    // Many headers adding up past the limit count too.
    let many: String = (0..200)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(200)))
        .collect();
    let resp = http_exchange(wsnorm.listen, upgrade_request("/ws", &many).as_bytes()).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 431"), "{resp}");

    // Under the limit: served.
    let resp = http_request(
        wsnorm.listen,
        &format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "c".repeat(20_000)
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    still_serves(&wsnorm).await;
}

/// A client that sends half a request head and then nothing. The config documents that "the
/// client's own handshake is bounded by" `handshake_timeout_ms`.
#[tokio::test]
async fn a_handshake_that_never_completes_is_cut_off() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[websocket]\nhandshake_timeout_ms = 1000\n",
    )
    .await;
    let half = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgr";
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(wsnorm.listen).await.unwrap();
        s.write_all(half).await.unwrap();
        slow.push(s);
    }
    // Others are served meanwhile.
    still_serves(&wsnorm).await;
    still_serves_http(&wsnorm).await;

    let started = Instant::now();
    let mut s = slow.pop().unwrap();
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(Ok(n)) => println!(
            "slowloris: closed after {elapsed:?} with {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Ok(Err(e)) => println!("slowloris: reset after {elapsed:?}: {e}"),
        Err(_) => panic!(
            "a half-sent request head is still open 5 s after the 1 s handshake_timeout_ms \
             (pingora's own read timeout for a request head is 60 s)"
        ),
    }
    still_serves(&wsnorm).await;
}

#[tokio::test]
async fn a_plain_request_on_a_websocket_path_is_proxied_as_http() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    for path in ["/ws", "/ws/factory?x=1", "/api/v1/websocket"] {
        let resp = http_request(
            wsnorm.listen,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("server: wsnorm-demo-backend"),
            "the backend answered: {resp}"
        );
        assert!(resp.ends_with(r#"{"detail":"Not Found"}"#), "{resp}");
    }
    // An upgrade on a path that is not a route goes to the backend as it is (which refuses it).
    let resp = http_exchange(
        wsnorm.listen,
        upgrade_request("/not-a-route", "").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("server: wsnorm-demo-backend"),
        "{resp}"
    );
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(&metrics, r#"wsnorm_handshakes_total{result="ok"}"#),
        0.0
    );
    still_serves(&wsnorm).await;
}

#[tokio::test]
async fn an_oversized_backend_message_gives_the_client_1011() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    // Just under the limit passes.
    send(
        &mut ws,
        r#"{"type":"send_big","payload":{"bytes":1048576}}"#,
    )
    .await;
    backend_saw(&mut ws).await;
    assert_eq!(next_text(&mut ws).await.len(), 1_048_576);
    // Over it: the backend leg gets 1009, the client 1011 "backend error".
    send(
        &mut ws,
        r#"{"type":"send_big","payload":{"bytes":2000000}}"#,
    )
    .await;
    backend_saw(&mut ws).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Error);
            assert_eq!(frame.reason.as_str(), "backend error");
        }
        other => panic!("expected 1011, got {other:?}"),
    }
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1009", "proxy"), 1.0).await,
        1.0
    );
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1011", "proxy"), 1.0).await,
        1.0
    );
    still_serves(&wsnorm).await;
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_gives_every_client_1011_and_a_restarted_one_is_used() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut backend = DemoBackendProcess::start(addr).await;
    let wsnorm = Wsnorm::start(&backend.addr.to_string(), "").await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = connected(&wsnorm).await;
        send(&mut ws, r#"{"type":"ping"}"#).await;
        backend_saw(&mut ws).await;
        clients.push(ws);
    }

    backend.kill9();
    let killed = Instant::now();
    let closes_seen = futures_util::future::join_all(clients.iter_mut().map(|ws| async {
        loop {
            match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some((
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()),
                        killed.elapsed(),
                    ))
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }))
    .await;
    for seen in &closes_seen {
        let (code, reason, after) = seen.clone().expect("a close frame");
        assert_eq!(code, Some(1011), "{closes_seen:?}");
        assert_eq!(reason.as_deref(), Some("backend error"));
        assert!(after < Duration::from_secs(1), "{closes_seen:?}");
    }
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1011", "proxy"), 5.0).await,
        5.0
    );
    // Down: new upgrades get 502.
    match wsnorm.connect("/ws", "agent_chat").await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502 while the backend is down, got {other:?}"),
    }

    let _restarted = DemoBackendProcess::start(addr).await;
    still_serves(&wsnorm).await;
    still_serves_http(&wsnorm).await;
}

#[tokio::test]
async fn a_vanished_client_gets_its_backend_leg_closed_with_1001() {
    let mut recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(&recorder.addr.to_string(), "").await;

    // Socket closed (FIN) without a close frame.
    let mut raw = RawWs::connect(wsnorm.listen, "/ws/dropped").await;
    raw.greeting().await;
    let started = Instant::now();
    drop(raw);
    assert_eq!(
        recorder.end_of("/ws/dropped", Duration::from_secs(2)).await,
        client_gone()
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Half-close: the client shuts down its write side only.
    let mut raw = RawWs::connect(wsnorm.listen, "/ws/half-closed").await;
    raw.greeting().await;
    raw.stream.shutdown().await.unwrap();
    assert_eq!(
        recorder
            .end_of("/ws/half-closed", Duration::from_secs(2))
            .await,
        client_gone()
    );
    // wsnorm then closes the client's socket too.
    assert!(
        matches!(
            raw.read_frame_within(Duration::from_secs(6)).await,
            Ok(None)
        ),
        "the half-closed client's socket is closed"
    );

    // Reset (RST) instead of FIN.
    let mut raw = RawWs::connect(wsnorm.listen, "/ws/reset").await;
    raw.greeting().await;
    raw.stream.set_zero_linger().unwrap();
    drop(raw);
    assert_eq!(
        recorder.end_of("/ws/reset", Duration::from_secs(2)).await,
        client_gone()
    );

    // A tokio-tungstenite client dropped mid-conversation.
    let (mut ws, _) = wsnorm
        .connect("/ws/dropped-ws", "agent_chat")
        .await
        .unwrap();
    next_text(&mut ws).await;
    drop(ws);
    assert_eq!(
        recorder
            .end_of("/ws/dropped-ws", Duration::from_secs(2))
            .await,
        client_gone()
    );

    assert_eq!(
        metric_reaches(&wsnorm, &closes("1001", "proxy"), 4.0).await,
        4.0
    );
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1006", "client"), 4.0).await,
        4.0
    );
    still_serves(&wsnorm).await;
}

#[tokio::test]
async fn idle_clients_get_pings_and_silent_ones_are_dropped() {
    let mut recorder = Recorder::start().await;
    let wsnorm = Wsnorm::start(
        &recorder.addr.to_string(),
        "[websocket]\nping_interval_secs = 1\nidle_timeout_secs = 3\n",
    )
    .await;

    // A raw client that completes the handshake and never answers a ping.
    let mut silent = RawWs::connect(wsnorm.listen, "/ws/silent").await;
    let connected_at = Instant::now();
    // A normal client that answers pings (tungstenite does) but sends nothing else.
    let (mut live, _) = wsnorm.connect("/ws/live", "agent_chat").await.unwrap();

    let live_task = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(4500);
        loop {
            match tokio::time::timeout_at(until, live.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Text(_)))) => {}
                Ok(other) => panic!("the live client lost its connection: {other:?}"),
                Err(_) => break,
            }
        }
        // Still open past the idle timeout: it answered the pings.
        let probe = r#"{"type":"echo","after":"idle"}"#;
        live.send(Message::text(probe)).await.unwrap();
        let back = loop {
            match tokio::time::timeout(Duration::from_secs(3), live.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no echo after idling: {other:?}"),
            }
        };
        assert_eq!(back, probe);
        live.close(None).await.unwrap();
        pings
    });

    let mut pings_seen = 0;
    let closed_after = loop {
        match silent.read_frame_within(Duration::from_secs(6)).await {
            Ok(Some(f)) if f.opcode == OP_PING => pings_seen += 1,
            Ok(Some(f)) if f.opcode == OP_CLOSE => {}
            Ok(Some(_)) => {}
            Ok(None) => break connected_at.elapsed(),
            Err(()) => panic!("the silent client is still open 6 s after its handshake"),
        }
    };
    println!("silent client: {pings_seen} pings, dropped after {closed_after:?}");
    assert!(pings_seen >= 2, "pinged every second: {pings_seen}");
    assert!(
        closed_after >= Duration::from_millis(2500) && closed_after < Duration::from_millis(4500),
        "dropped after {closed_after:?} (idle_timeout_secs = 3)"
    );
    assert_eq!(
        recorder.end_of("/ws/silent", Duration::from_secs(1)).await,
        client_gone()
    );

    let live_pings = live_task.await.unwrap();
    println!("live client: {live_pings} pings in 4.5 s");
    assert!(live_pings >= 2, "the live client saw {live_pings} pings");
    still_serves(&wsnorm).await;
}

/// A client that stops reading while the backend streams: wsnorm's memory stays bounded and the
/// write timeout (idle_timeout_secs) closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_make_wsnorm_buffer_without_bound() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[websocket]\nping_interval_secs = 1\nidle_timeout_secs = 3\n",
    )
    .await;
    still_serves(&wsnorm).await;
    let pid = wsnorm.child.id();
    let baseline = vm_rss(pid);

    let mut slow = RawWs::connect(wsnorm.listen, "/ws").await;
    const MESSAGE: usize = 1_000_000;
    const COUNT: usize = 120;
    let request = client_frame(
        OP_TEXT,
        format!(r#"{{"type":"send_big","payload":{{"bytes":{MESSAGE}}}}}"#).as_bytes(),
    );
    let requests: Vec<u8> = std::iter::repeat_n(request, COUNT).flatten().collect();
    slow.send(&requests).await;
    println!(
        "offered {} MiB to a client that reads nothing",
        (MESSAGE * COUNT) >> 20
    );

    let started = Instant::now();
    let mut peak = baseline;
    let gone_after = loop {
        peak = peak.max(vm_rss(pid));
        let active = metric(&wsnorm.metrics().await, "wsnorm_connections_active");
        if active == 0.0 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the connection to the client that stopped reading is still open after 12 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "VmRSS baseline {} MiB, peak {} MiB; connection closed after {gone_after:?}",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        peak < baseline + (64 << 20),
        "wsnorm grew from {} MiB to {} MiB",
        baseline >> 20,
        peak >> 20
    );
    let logs = wsnorm.logs();
    assert!(
        logs.contains("write timed out") || logs.contains("silent past the idle timeout"),
        "closed by the write or idle timeout: {logs}"
    );
    println!(
        "closed by: {}",
        if logs.contains("write timed out") {
            "write timeout"
        } else {
            "idle timeout"
        }
    );
    assert_eq!(
        metric_reaches(&wsnorm, &closes("1001", "proxy"), 1.0).await,
        1.0,
        "the backend leg was closed with 1001"
    );
    drop(slow);
    still_serves(&wsnorm).await;
}

// ---------------------------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------------------------

/// A listener that only counts connections: nothing may ever dial it.
async fn decoy() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, count)
}

#[tokio::test]
async fn no_request_can_choose_another_backend() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let (decoy, dialled) = decoy().await;

    // Plain HTTP: whatever names another host, the configured backend answers.
    let body = r#"{"hello":"world"}"#;
    let post = |target: &str, headers: &str| {
        format!(
            "POST {target} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (target, headers) in [
        ("/api/echo", "Host: evil.example:1\r\n".to_string()),
        ("/api/echo", format!("Host: {decoy}\r\n")),
        (
            "/api/echo",
            format!(
                "Host: x\r\nX-Forwarded-Host: {decoy}\r\nForwarded: host={decoy};proto=http\r\n\
                 X-Original-URL: http://{decoy}/\r\nX-Rewrite-URL: http://{decoy}/\r\n\
                 X-Forwarded-Server: {decoy}\r\nX-Host: {decoy}\r\n"
            ),
        ),
        (
            &format!("http://{decoy}/api/echo"),
            format!("Host: {decoy}\r\n"),
        ),
        (
            "http://127.0.0.2:9/api/echo",
            "Host: 127.0.0.2:9\r\n".into(),
        ),
    ] {
        let resp = http_request(wsnorm.listen, &post(target, &headers)).await;
        // The demo backend's own answer (an echo, or its 404 for a target it cannot route).
        assert!(
            resp.to_ascii_lowercase()
                .contains("server: wsnorm-demo-backend"),
            "{target} with {headers:?} did not reach the configured backend: {resp}"
        );
        if target.starts_with('/') {
            assert!(resp.starts_with("HTTP/1.1 200"), "{target}: {resp}");
            let json: serde_json::Value =
                serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(json["body"], body);
            assert_eq!(json["path"], "/api/echo");
        }
    }
    // CONNECT is not a way out either.
    let resp = http_exchange(
        wsnorm.listen,
        format!("CONNECT {decoy} HTTP/1.1\r\nHost: {decoy}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");

    // WebSocket: the demo backend's greeting proves where the upgrade went.
    for request in [
        upgrade_request("/ws", &format!("X-Forwarded-Host: {decoy}\r\n"))
            .replace("Host: 127.0.0.1\r\n", "Host: evil.example:1\r\n"),
        upgrade_request(&format!("http://{decoy}/ws"), "")
            .replace("Host: 127.0.0.1\r\n", &format!("Host: {decoy}\r\n")),
        upgrade_request("http://127.0.0.2:9/ws", "Forwarded: host=127.0.0.2:9\r\n")
            .replace("Host: 127.0.0.1\r\n", "Host: 127.0.0.2:9\r\n"),
    ] {
        let mut raw = RawWs::connect_with(wsnorm.listen, &request).await;
        let hello = raw.greeting().await;
        let v: serde_json::Value = serde_json::from_str(&hello).unwrap();
        assert!(
            v["data"]["connection_id"].is_string() && v["data"]["path"] == "/ws",
            "{hello}"
        );
    }
    // An absolute-form target whose authority differs from Host is refused outright (pingora).
    for request in [
        upgrade_request(&format!("http://{decoy}/ws"), ""),
        format!("GET http://{decoy}/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ] {
        let resp = http_exchange(wsnorm.listen, request.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{request:?}: {resp}");
    }
    assert_eq!(dialled.load(Ordering::SeqCst), 0, "the decoy was dialled");
    still_serves(&wsnorm).await;
}

/// RFC 9112 section 3.2.1: a request to an origin server carries the origin-form target. wsnorm does
/// this for WebSocket upgrades (the backend sees `/ws`); plain HTTP must not differ.
#[tokio::test]
async fn absolute_form_targets_reach_the_backend_in_origin_form() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let resp = http_request(
        wsnorm.listen,
        "POST http://127.0.0.2:9/api/echo?q=1 HTTP/1.1\r\nHost: 127.0.0.2:9\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    let sent = wsnorm.logs();
    let sent: Vec<&str> = sent
        .lines()
        .filter(|l| l.contains("Sending header to backend"))
        .collect();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{resp}\nwhat pingora sent backend: {sent:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["path"], "/api/echo?q=1", "{json}");
}

#[tokio::test]
async fn max_connections_refuses_with_503_and_frees_slots() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "[server]\nmax_connections = 2\n").await;
    let mut first = connected(&wsnorm).await;
    let _second = connected(&wsnorm).await;
    match wsnorm.connect("/ws", "agent_chat").await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // Plain HTTP is not counted.
    still_serves_http(&wsnorm).await;

    first.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), first.next()).await {}
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut third = loop {
        match wsnorm.connect("/ws", "agent_chat").await {
            Ok((ws, _)) => break ws,
            Err(WsError::Http(resp)) if resp.status() == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a freed slot was not reused: {e}"),
        }
    };
    assert!(next_text(&mut third)
        .await
        .contains("connection_established"));
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(&metrics, r#"wsnorm_handshakes_total{result="overloaded"}"#),
        1.0
    );
    assert_eq!(metric(&metrics, "wsnorm_connections_active"), 2.0);
}

#[tokio::test]
async fn the_admin_listener_defaults_to_loopback() {
    let dir = TempDir::new();
    let empty = dir.0.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let no_admin = dir.0.join("no-admin.toml");
    std::fs::write(&no_admin, "[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    for config in [None, Some(&empty), Some(&no_admin)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsnorm"));
        cmd.arg("check")
            .env_remove("WSNORM_ADMIN")
            .env_remove("WSNORM_CONFIG")
            .env_remove("WSNORM_LISTEN")
            .env_remove("WSNORM_BACKEND");
        if let Some(path) = config {
            cmd.arg("--config").arg(path);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let admin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("admin: "))
            .expect("an admin line");
        let addr: SocketAddr = admin.trim().parse().unwrap();
        assert!(addr.ip().is_loopback(), "admin listens on {addr}");
    }
}

#[tokio::test]
async fn cookies_and_authorization_never_reach_the_logs() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let cookie = "session=SECRETCOOKIE-4f1c9a";
    let auth = "Bearer SECRETAUTH-8d2e7b6a5c";

    // Plain HTTP: the headers reach the backend ...
    let resp = http_request(
        wsnorm.listen,
        &format!(
            "POST /api/echo?access_token=SECRETQUERY-11 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nAuthorization: {auth}\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["headers"]["cookie"], cookie);
    assert_eq!(json["headers"]["authorization"], auth);
    // ... also when the backend fails the request.
    let resp = http_request(
        wsnorm.listen,
        &format!(
            "GET /api/status/500 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nAuthorization: {auth}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");

    // WebSocket: accepted, refused by the backend, and rejected by wsnorm itself.
    for path in [
        "/ws?access_token=SECRETQUERY-22",
        "/ws/fail500?access_token=SECRETQUERY-33",
    ] {
        let mut req = wsnorm.url(path).into_client_request().unwrap();
        let headers = req.headers_mut();
        headers.insert("Cookie", HeaderValue::from_static(cookie));
        headers.insert("Authorization", HeaderValue::from_static(auth));
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("agent_chat"),
        );
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, _)) => {
                let hello = next_text(&mut ws).await;
                assert!(hello.contains(r#""authorization":true"#), "{hello}");
                send(&mut ws, r#"{"type":"ping"}"#).await;
                backend_saw(&mut ws).await;
                ws.close(None).await.unwrap();
            }
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 500),
            Err(e) => panic!("{e}"),
        }
    }
    let resp = http_exchange(
        wsnorm.listen,
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 7\r\nCookie: {cookie}\r\nAuthorization: {auth}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    let resp = http_exchange(
        wsnorm.listen,
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nAuthorization: {auth}\r\n\
             X-Big: {}\r\n\r\n",
            "z".repeat(40_000)
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = wsnorm.logs();
    assert!(logs.contains("WebSocket connected"), "debug logs: {logs}");
    let leaks: Vec<&str> = logs
        .lines()
        .filter(|l| {
            l.contains("SECRETCOOKIE") || l.contains("SECRETAUTH") || l.contains("SECRETQUERY")
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}
