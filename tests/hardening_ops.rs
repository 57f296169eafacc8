//! Hardening of the operational surface, over real sockets against the real binary: no
//! credential reaches the logs on any error path.

mod common;

use std::net::SocketAddr;
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
                let request = read_head(&mut stream).await;
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

/// Reads up to the end of a request head (or EOF).
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
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

/// Waits until the log contains `needle`.
async fn wait_for_log(wsnorm: &Wsnorm, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if wsnorm.logs().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no `{needle}` in the log:\n{}", wsnorm.logs());
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
    wait_for_log(&wsnorm, &format!("GET {path}?<redacted>")).await;

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
