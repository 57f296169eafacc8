//! Hardening of the operational surface, over real sockets against the real binary: no
//! credential reaches the logs on any error path, the admin listener's limits on request heads
//! and methods, and the bound on `server.threads`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every credential in the requests below contains this; the log must never.
const SECRET: &str = "SECRET";

/// How a backend fails a plain HTTP request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Nothing listens: connection refused.
    Down,
    /// Reads the request, then resets the connection.
    Reset,
    /// Reads the request and never answers.
    Silent,
    /// Answers non-HTTP bytes followed by the request it got, credentials included.
    Garbage,
}

/// Starts a backend with `fault`; each request it reads is reported on the channel.
async fn faulty_backend(fault: Fault) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (seen, rx) = mpsc::unbounded_channel();
    if let Fault::Down = fault {
        let port = free_port();
        return (format!("127.0.0.1:{port}").parse().unwrap(), rx);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let request = read_request_head(&mut stream).await;
                let _ = seen.send(());
                match fault {
                    Fault::Reset => {
                        let _ = stream.set_zero_linger();
                    }
                    Fault::Silent => tokio::time::sleep(Duration::from_secs(600)).await,
                    Fault::Garbage => {
                        let mut answer = b"\x00\x01NOT HTTP\r\n".to_vec();
                        answer.extend_from_slice(&request);
                        let _ = stream.write_all(&answer).await;
                    }
                    Fault::Down => {}
                }
            });
        }
    });
    (addr, rx)
}

/// A request carrying a credential in every place a client puts one.
fn request_with_credentials(method: &str, path: &str, name: &str, extra: &str) -> String {
    format!(
        "{method} {path}?access_token={SECRET}-query-{name}&x=1 HTTP/1.1\r\nHost: wsnorm\r\n\
         Cookie: session={SECRET}-cookie-{name}; theme=dark\r\n\
         Authorization: Bearer {SECRET}-auth-{name}\r\n\
         Proxy-Authorization: Basic {SECRET}-proxy-auth-{name}\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// Drives one failing plain request through a wsnorm in front of a `fault` backend, at trace
/// level, and returns the whole log. The request's error line must be there, without the query.
async fn log_of_a_failed_request(fault: Fault) -> String {
    let (backend, mut seen) = faulty_backend(fault).await;
    // A silent backend's WebSocket handshake then times out well within `http_request`'s 10 s.
    let config = "[websocket]\nhandshake_timeout_ms = 2000\n";
    let wsnorm = Wsnorm::start_with_rust_log(&backend.to_string(), config, "trace").await;
    let name = format!("{fault:?}").to_lowercase();
    let path = format!("/api/{name}");
    let request = request_with_credentials("GET", &path, &name, "");
    if let Fault::Silent = fault {
        // The client gives up on a backend that never answers.
        let mut client = TcpStream::connect(wsnorm.listen).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("the backend got the request");
        drop(client);
    } else {
        let response = http_request(wsnorm.listen, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 502"),
            "{fault:?}: {response}"
        );
    }
    // Not vacuous: the line that used to carry the query is written, naming the path.
    wsnorm.wait_for_log(&format!("GET {path}?<redacted>")).await;

    // A WebSocket upgrade on a route, carrying a token subprotocol too, fails the same way.
    let upgrade = request_with_credentials(
        "GET",
        "/ws",
        &format!("ws-{name}"),
        &format!(
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: agent_chat, jwt.{SECRET}-jwt-{name}\r\nConnection: Upgrade\r\n"
        ),
    );
    let response = http_request(wsnorm.listen, &upgrade).await;
    let status = match fault {
        Fault::Silent => "HTTP/1.1 504",
        _ => "HTTP/1.1 502",
    };
    assert!(response.starts_with(status), "{fault:?}: {response}");
    wsnorm.logs()
}

#[tokio::test]
async fn no_credential_reaches_the_log_on_any_plain_http_error_path() {
    for fault in [Fault::Down, Fault::Reset, Fault::Silent, Fault::Garbage] {
        let log = log_of_a_failed_request(fault).await;
        assert!(log.contains("Fail to proxy"), "{fault:?}:\n{log}");
        for line in log.lines() {
            assert!(!line.contains(SECRET), "{fault:?}: a credential in\n{line}");
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{fault:?}: not JSON:\n{line}"
            );
        }
    }
}

/// One request without a body to the admin listener; the whole response.
async fn admin_request(wsnorm: &Wsnorm, method: &str, path: &str) -> String {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    http_request(wsnorm.admin, &raw).await
}

/// The status line and headers of a raw response, lowercased names.
fn status_and_headers(response: &str) -> (String, Vec<(String, String)>) {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_admin_listener_serves_get_and_head_only() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    for (method, path) in [
        ("DELETE", "/metrics"),
        ("POST", "/readyz"),
        ("PUT", "/healthz"),
        ("OPTIONS", "/nope"),
    ] {
        let response = admin_request(&wsnorm, method, path).await;
        let (status, headers) = status_and_headers(&response);
        assert!(status.starts_with("HTTP/1.1 405"), "{method}: {response}");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"), "{response}");
    }
    let get = admin_request(&wsnorm, "GET", "/healthz").await;
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.ends_with(r#"{"status":"ok"}"#), "{get}");
    let head = admin_request(&wsnorm, "HEAD", "/metrics").await;
    let (status, headers) = status_and_headers(&head);
    assert!(status.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    assert!(length > 0, "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
}

#[tokio::test]
async fn the_admin_listener_refuses_heads_too_large_with_431() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "[server]\nmax_header_bytes = 2048\n").await;
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(4096)
    );
    // pingora used to log the head it could not parse, credentials and all.
    let many: String = (0..300).map(|i| format!("X-{i}: y\r\n")).collect();
    let numerous = request_with_credentials("GET", "/metrics", "admin", &many);
    for (name, raw) in [("over max_header_bytes", big), ("300 headers", numerous)] {
        let response = http_request(wsnorm.admin, &raw).await;
        assert!(response.starts_with("HTTP/1.1 431"), "{name}: {response}");
    }
    assert!(!wsnorm.logs().contains(SECRET), "{}", wsnorm.logs());
    // Under the limit, served as before.
    let metrics = wsnorm.metrics().await;
    assert!(metrics.contains("wsnorm_build_info"), "{metrics}");
}

#[tokio::test]
async fn a_stalled_admin_head_is_closed_after_the_handshake_timeout() {
    let config = "[websocket]\nhandshake_timeout_ms = 1000\n";
    let wsnorm = Wsnorm::start(&start_backend().await.to_string(), config).await;
    let mut stalled = TcpStream::connect(wsnorm.admin).await.unwrap();
    let partial = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
    stalled.write_all(partial).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // pingora's own limit is 60 s; 1 s (per read) was configured.
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest))
        .await
        .expect("the stalled head is closed well before pingora's 60 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "no answer to a partial head: {rest:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Others are still served.
    assert!(wsnorm.metrics().await.contains("wsnorm_build_info"));
}

fn check(config: &str) -> (bool, String, String) {
    let dir = TempDir::new();
    let path = dir.0.join("threads.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn check_refuses_a_thread_count_out_of_bounds_naming_file_line_and_key() {
    for threads in ["0", "1025", "100000"] {
        let (ok, stderr, file) = check(&format!("\n[server]\nthreads = {threads}\n"));
        assert!(!ok, "threads = {threads} accepted");
        assert!(stderr.contains(&file), "{stderr}");
        assert!(stderr.contains("line 3"), "{stderr}");
        assert!(
            stderr.contains("server.threads: must be between 1 and 1024"),
            "{stderr}"
        );
    }
    for threads in ["1", "1024"] {
        let (ok, stderr, _) = check(&format!("[server]\nthreads = {threads}\n"));
        assert!(ok, "threads = {threads}: {stderr}");
    }
}
