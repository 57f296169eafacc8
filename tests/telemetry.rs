//! What an SRE reads, from a real run: the access log, the connection record, refusal lines and
//! the metrics added for them (README "Logs" and "Metrics"). Real binary, real sockets.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A ping the strict backend answers with `received` and `pong`.
const PING: &str = r#"{"type":"ping","timestamp":1757350201447}"#;

fn number(e: &serde_json::Value, field: &str) -> f64 {
    e[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {e}"))
}

/// A duration field: a number, rounded to the microsecond.
fn assert_millis(e: &serde_json::Value, field: &str) {
    let ms = number(e, field);
    assert!(ms >= 0.0, "{field}: {e}");
    let text = e[field].to_string();
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3, "{field} not rounded: {text}");
}

#[tokio::test]
async fn every_plain_http_request_gets_an_access_log_line() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let body = r#"{"hello":"world"}"#;
    let resp = http_request(
        wsnorm.listen,
        &format!(
            "POST /api/echo?token=SECRETQUERY HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let response_body = resp.split("\r\n\r\n").nth(1).unwrap();

    let line = wsnorm.events("HTTP request.").await.remove(0);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["http.request.method"], "POST", "{line}");
    assert_eq!(line["url.path"], "/api/echo", "{line}");
    assert_eq!(line["http.response.status_code"], 200, "{line}");
    assert_eq!(line["http.request.body.size"], body.len(), "{line}");
    assert_eq!(
        line["http.response.body.size"],
        response_body.len(),
        "{line}"
    );
    assert_eq!(line["network.peer.address"], "127.0.0.1", "{line}");
    assert!(line["network.peer.port"].as_u64().is_some(), "{line}");
    // As the client sent it (wsnorm does not trust it, but the line says what was claimed).
    assert_eq!(
        line["http.request.header.x-forwarded-for"], "203.0.113.7",
        "{line}"
    );
    assert_millis(&line, "wsnorm.duration_ms");
    assert_millis(&line, "wsnorm.backend.time_ms");
    assert!(number(&line, "wsnorm.backend.time_ms") <= number(&line, "wsnorm.duration_ms"));
    assert!(!wsnorm.logs().contains("SECRETQUERY"));

    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_http_request_duration_seconds_count{status_class="2xx"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_access_log_can_be_sampled_or_turned_off() {
    let backend = start_backend().await;
    let get = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let sampled = Wsnorm::start(
        &backend.to_string(),
        "[log]\naccess_log_sample_one_in = 3\n",
    )
    .await;
    for _ in 0..6 {
        http_request(sampled.listen, get).await;
    }
    let off = Wsnorm::start(&backend.to_string(), "[log]\naccess_log = false\n").await;
    http_request(off.listen, get).await;
    // The metric counts every request, so once it shows the last one, its line was written.
    for (wsnorm, want) in [(&sampled, 6.0), (&off, 1.0)] {
        let series = r#"wsnorm_http_requests_total{status_class="2xx"}"#;
        assert_eq!(metric_reaches(wsnorm, series, want).await, want);
    }
    let lines = |w: &Wsnorm| w.logs().matches(r#""message":"HTTP request.""#).count();
    assert_eq!(lines(&sampled), 2, "{}", sampled.logs());
    assert_eq!(lines(&off), 0, "{}", off.logs());
}

#[tokio::test]
async fn the_close_line_is_a_complete_connection_record() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut req = wsnorm
        .url("/ws?session=SECRETQUERY")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("agent_chat"),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    next_text(&mut ws).await; // connection_established
    send(&mut ws, PING).await;
    // Rewritten (milliseconds to seconds): sent and received bytes differ.
    let rewritten = backend_saw(&mut ws).await;
    assert_ne!(rewritten.len(), PING.len());
    assert!(next_text(&mut ws).await.contains("pong"));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();

    let closed = wsnorm.events("WebSocket closed.").await.remove(0);
    let span = &closed["span"];
    assert_eq!(span["http.route"], "/ws", "{closed}");
    assert_eq!(span["url.path"], "/ws", "{closed}");
    assert_eq!(
        span["http.request.header.traceparent"], TRACEPARENT,
        "{closed}"
    );
    assert_eq!(span["network.peer.address"], "127.0.0.1", "{closed}");
    for field in [
        "wsnorm.duration_ms",
        "wsnorm.handshake_ms",
        "wsnorm.backend.handshake_ms",
    ] {
        assert_millis(&closed, field);
    }
    assert!(
        number(&closed, "wsnorm.backend.handshake_ms") <= number(&closed, "wsnorm.handshake_ms")
    );
    assert_eq!(closed["wsnorm.messages.from_client"], 1, "{closed}");
    assert_eq!(closed["wsnorm.bytes.from_client"], PING.len(), "{closed}");
    // connection_established, received, pong.
    assert_eq!(closed["wsnorm.messages.from_backend"], 3, "{closed}");
    assert!(number(&closed, "wsnorm.bytes.from_backend") > PING.len() as f64);
    assert_eq!(closed["wsnorm.close.code"], 1000, "{closed}");
    assert_eq!(closed["wsnorm.close.reason"], "done", "{closed}");
    assert_eq!(closed["wsnorm.close.initiator"], "client", "{closed}");
    assert!(!wsnorm.logs().contains("SECRETQUERY"));

    // The same connection in the metrics, under its route.
    let metrics = wsnorm.metrics().await;
    let series = [
        (
            r#"wsnorm_connection_duration_seconds_count{route="/ws"}"#,
            1.0,
        ),
        (r#"wsnorm_handshakes_total{result="ok",route="/ws"}"#, 1.0),
        (
            r#"wsnorm_handshake_duration_seconds_count{route="/ws"}"#,
            1.0,
        ),
        ("wsnorm_backend_connect_duration_seconds_count", 1.0),
        (
            r#"wsnorm_messages_total{direction="client_to_backend",kind="json",route="/ws"}"#,
            1.0,
        ),
        (
            r#"wsnorm_message_bytes_total{direction="client_to_backend",route="/ws"}"#,
            PING.len() as f64,
        ),
        (
            r#"wsnorm_message_bytes_sent_total{direction="client_to_backend",route="/ws"}"#,
            rewritten.len() as f64,
        ),
        (
            r#"wsnorm_message_size_bytes_count{direction="backend_to_client"}"#,
            3.0,
        ),
        (r#"wsnorm_connections_active{route="/ws"}"#, 0.0),
    ];
    for (name, want) in series {
        assert_eq!(metric(&metrics, name), want, "{name}:\n{metrics}");
    }
    let closes = r#"wsnorm_closes_total{code="1000",initiator="client",route="/ws"}"#;
    assert_eq!(metric_reaches(&wsnorm, closes, 1.0).await, 1.0);
}

#[tokio::test]
async fn refusals_log_peer_path_and_reason_and_a_backend_403_is_no_warning() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    // No Sec-WebSocket-Key: 400 from wsnorm.
    let resp = http_request(
        wsnorm.listen,
        "GET /ws?session=SECRETQUERY HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let refused = wsnorm
        .events("WebSocket handshake refused.")
        .await
        .remove(0);
    assert_eq!(refused["network.peer.address"], "127.0.0.1", "{refused}");
    assert_eq!(refused["url.path"], "/ws", "{refused}");
    assert_eq!(refused["http.route"], "/ws", "{refused}");
    assert_eq!(refused["http.response.status_code"], 400, "{refused}");
    assert_eq!(
        refused["wsnorm.handshake.result"], "bad_request",
        "{refused}"
    );
    assert!(
        refused["wsnorm.reason"]
            .as_str()
            .is_some_and(|r| r.contains("Sec-WebSocket-Key")),
        "{refused}"
    );

    // No token: the backend's 403, logged at INFO.
    let resp = http_request(
        wsnorm.listen,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let line = wsnorm
        .events("Backend refused the handshake.")
        .await
        .remove(0);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["http.response.status_code"], 403, "{line}");
    assert!(
        !wsnorm.logs().contains(r#""level":"WARN""#),
        "{}",
        wsnorm.logs()
    );
    assert!(!wsnorm.logs().contains("SECRETQUERY"));
}

/// The default rule stamps "now" over an invalid timestamp; the input still counts as invalid.
#[tokio::test]
async fn an_invalid_timestamp_replaced_by_now_counts_as_invalid() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let mut ws = connected(&wsnorm).await;
    send(&mut ws, r#"{"type":"ping","timestamp":"yesterday"}"#).await;
    let saw = backend_saw(&mut ws).await;
    assert!(!saw.contains("yesterday"), "{saw}");
    ws.close(None).await.unwrap();
    let metrics = wsnorm.metrics().await;
    let rule = |result: &str| {
        metric(
            &metrics,
            &format!(
                r#"wsnorm_rewrites_total{{direction="client_to_backend",result="{result}",rule="iso-timestamps"}}"#
            ),
        )
    };
    assert_eq!(rule("invalid"), 1.0, "{metrics}");
    assert_eq!(rule("rewritten"), 0.0, "{metrics}");
}

#[tokio::test]
async fn process_and_config_state_are_in_the_metrics() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let metrics = wsnorm.metrics().await;
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_max_fds",
        "wsnorm_config_last_reload_success_timestamp_seconds",
        "wsnorm_config_last_reload_successful",
    ] {
        assert!(metric(&metrics, name) > 0.0, "{name}:\n{metrics}");
    }
    assert!(
        metrics.contains("\nprocess_cpu_seconds_total "),
        "{metrics}"
    );
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wsnorm_config_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{metrics}");
    assert!(info[0].ends_with(" 1"), "{metrics}");
    let hash = info[0].split('"').nth(1).expect("a hash label");
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );

    // Another config: another hash, one series still.
    std::fs::write(
        wsnorm.config_path(),
        "[websocket]\nmax_message_bytes = 4096\n",
    )
    .unwrap();
    let series = r#"wsnorm_config_reloads_total{result="ok"}"#;
    assert_eq!(metric_reaches(&wsnorm, series, 1.0).await, 1.0);
    let metrics = wsnorm.metrics().await;
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wsnorm_config_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{metrics}");
    assert!(!info[0].contains(hash), "{metrics}");

    // A broken file: the last reload failed, the live config (and its hash) stays.
    std::fs::write(wsnorm.config_path(), "[websocket]\nno_such_key = 1\n").unwrap();
    let series = r#"wsnorm_config_reloads_total{result="error"}"#;
    assert_eq!(metric_reaches(&wsnorm, series, 1.0).await, 1.0);
    let after = wsnorm.metrics().await;
    assert_eq!(metric(&after, "wsnorm_config_last_reload_successful"), 0.0);
    assert!(after.contains(info[0]), "{after}");
}

async fn admin_json(wsnorm: &Wsnorm, request_line: &str) -> (String, serde_json::Value) {
    let resp = http_request(
        wsnorm.admin,
        &format!(
            "{request_line} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().to_string();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}")),
    )
}

#[tokio::test]
async fn admin_config_shows_the_effective_config_and_the_hash_of_the_metrics() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[log]\naccess_log_sample_one_in = 7\n",
    )
    .await;
    let (status, config) = admin_json(&wsnorm, "GET /config").await;
    assert_eq!(status, "200");
    let effective = config["effective"].as_str().unwrap();
    assert!(
        effective.contains("access_log_sample_one_in: 7\n"),
        "{effective}"
    );
    assert!(
        effective.contains(&format!("backend: {backend}\n")),
        "{effective}"
    );
    let hash = config["hash"].as_str().unwrap();
    let series = format!(r#"wsnorm_config_info{{hash="{hash}"}}"#);
    assert_eq!(metric(&wsnorm.metrics().await, &series), 1.0);
}

#[tokio::test]
async fn admin_logging_reads_and_changes_the_filter_at_run_time() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start_with_rust_log(&backend.to_string(), "", "info").await;
    let (status, filter) = admin_json(&wsnorm, "GET /logging").await;
    assert_eq!(status, "200");
    assert!(
        filter["filter"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|d| d == "info"),
        "{filter}"
    );

    let not_json = "hello, not JSON";
    let debug_line = "Message is not JSON the rules can read";
    let mut ws = connected(&wsnorm).await;
    send(&mut ws, not_json).await;
    let series = r#"wsnorm_messages_total{direction="client_to_backend",kind="text"}"#;
    assert_eq!(metric_reaches(&wsnorm, series, 1.0).await, 1.0);
    assert!(!wsnorm.logs().contains(debug_line));

    let (status, changed) = admin_json(&wsnorm, "POST /logging?filter=info,wsnorm%3Ddebug").await;
    assert_eq!(status, "200", "{changed}");
    assert!(
        changed["filter"].as_str().unwrap().contains("wsnorm=debug"),
        "{changed}"
    );
    // Dependencies that dump requests stay capped whatever is asked.
    assert!(
        changed["filter"]
            .as_str()
            .unwrap()
            .contains("tungstenite=info"),
        "{changed}"
    );
    send(&mut ws, not_json).await;
    wsnorm.wait_for_log(debug_line).await;
    wsnorm.wait_for_log("Log filter changed.").await;

    let (status, refused) = admin_json(&wsnorm, "POST /logging?filter=%3D%3D%3D").await;
    assert_eq!(status, "400", "{refused}");
    let (status, _) = admin_json(&wsnorm, "POST /metrics").await;
    assert_eq!(status, "405");
}

/// A backend that is down is logged when it goes down and when it comes back, not per check.
#[tokio::test]
async fn the_backend_state_is_logged_when_it_changes() {
    let port = free_port();
    let wsnorm = Wsnorm::start(&format!("127.0.0.1:{port}"), "").await;
    // Each /readyz past the probe's 1 s cache checks the backend again.
    for _ in 0..3 {
        let (status, _) = admin_json(&wsnorm, "GET /readyz").await;
        assert_eq!(status, "503");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let _backend = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (status, _) = admin_json(&wsnorm, "GET /readyz").await;
    assert_eq!(status, "200");
    let logs = wsnorm.wait_for_log("Backend is reachable.").await;
    assert_eq!(
        logs.matches("Backend is not reachable.").count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("Backend is reachable.").count(), 1, "{logs}");
    // pingora's own start-up lines, bridged, carry no build-machine paths.
    assert!(logs.contains(r#""message":"Server starting""#), "{logs}");
    assert!(
        !logs.contains("log.file") && !logs.contains(".cargo/registry"),
        "{logs}"
    );
}
