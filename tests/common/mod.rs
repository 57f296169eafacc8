//! Test harness: the real `wsnorm` binary on free loopback ports, in front of a real backend.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod raw;
pub mod recorder;
#[allow(unused_imports)] // Not every test file uses the raw helpers.
pub use raw::*;
#[allow(unused_imports)]
pub use recorder::*;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const TOKEN: &str = wsnorm_testkit::client::DEMO_TOKEN;

/// A free port on 127.0.0.1. Ports are handed out from a per-process counter below the
/// kernel's ephemeral range, so tests running in parallel never get the same one (a port the
/// kernel hands out for port 0 can be handed out again once released).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + std::process::id() % 20_000,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(10_000 + port % 22_000).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A binary of the testkit crate, built beside wsnorm by `scripts/test.sh` (`--workspace`).
pub fn testkit_bin(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_wsnorm")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p wsnorm-testkit`",
        path.display()
    );
    path
}

/// Starts the strict demo backend in this process.
pub async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wsnorm_testkit::backend::serve(
        listener,
        wsnorm_testkit::backend::BackendOptions { verbose: false },
    ));
    addr
}

/// A running wsnorm process; killed when dropped.
pub struct Wsnorm {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    config_path: PathBuf,
    _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wsnorm-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Wsnorm {
    /// Starts wsnorm for `backend` with `config` (TOML, may be empty) and waits until it serves.
    pub async fn start(backend: &str, config: &str) -> Wsnorm {
        Self::start_with_rust_log(backend, config, "debug").await
    }

    /// [`Wsnorm::start`] with `RUST_LOG` set to `rust_log`.
    pub async fn start_with_rust_log(backend: &str, config: &str, rust_log: &str) -> Wsnorm {
        let dir = TempDir::new();
        let config_path = dir.0.join("wsnorm.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::spawn(backend, config_path, dir, rust_log, "127.0.0.1").await
    }

    /// [`Wsnorm::start`] with both listeners given to wsnorm as `{host}:{port}` (a host name,
    /// say); they are reached on 127.0.0.1.
    pub async fn start_on_host(host: &str, backend: &str, config: &str) -> Wsnorm {
        let dir = TempDir::new();
        let config_path = dir.0.join("wsnorm.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::spawn(backend, config_path, dir, "debug", host).await
    }

    /// Starts wsnorm reading the config file at `path` (kept where it is).
    pub async fn start_with_config_file(backend: &str, path: &std::path::Path) -> Wsnorm {
        Self::spawn(
            backend,
            path.to_path_buf(),
            TempDir::new(),
            "debug",
            "127.0.0.1",
        )
        .await
    }

    async fn spawn(
        backend: &str,
        config_path: PathBuf,
        dir: TempDir,
        rust_log: &str,
        host: &str,
    ) -> Wsnorm {
        let log = dir.0.join("wsnorm.log");
        // Port 0: wsnorm reserves what the system gives and logs it, so no port is probed here
        // and handed over (another process could take it in between).
        let child = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", &format!("{host}:0")])
            .args(["--admin", &format!("{host}:0")])
            .args(["--backend", backend])
            .args(["--log-format", "json"])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start wsnorm");
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut wsnorm = Wsnorm {
            child,
            listen: unknown,
            admin: unknown,
            log,
            config_path,
            _dir: dir,
        };
        (wsnorm.listen, wsnorm.admin) = wsnorm.bound_addresses().await;
        wsnorm.wait_listening().await;
        wsnorm
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// The addresses of the start-up line (`wsnorm starting.`), once it is logged.
    async fn bound_addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wsnorm exited with {status}; log:\n{}", self.logs());
            }
            let logs = self.logs();
            let started = logs
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == "wsnorm starting.");
            if let Some(v) = started {
                let addr = |key: &str| v[key].as_str().and_then(|a| a.parse().ok());
                match (addr("listen"), addr("admin")) {
                    (Some(listen), Some(admin)) => return (listen, admin),
                    _ => panic!("no listen/admin address in the start-up line: {v}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("wsnorm did not start; log:\n{}", self.logs());
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wsnorm exited with {status}; log:\n{}", self.logs());
            }
            if TcpStream::connect(self.listen).await.is_ok()
                && TcpStream::connect(self.admin).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("wsnorm did not start; log:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (10 s at most) until the log contains `needle`, and returns the whole log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no `{needle}` in the log:\n{}", self.logs());
    }

    /// Every JSON log event whose message is `message`, once at least one was written.
    pub async fn events(&self, message: &str) -> Vec<serde_json::Value> {
        let logs = self.wait_for_log(message).await;
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["message"] == message)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.listen, path)
    }

    /// Connects offering `protocols`, with the demo token as a Bearer header.
    pub async fn connect(
        &self,
        path: &str,
        protocols: &str,
    ) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
        let mut req = self.url(path).into_client_request().unwrap();
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocols).unwrap(),
            );
        }
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
        let protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Ok((ws, protocol))
    }

    /// GET `/metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        http_request(
            self.admin,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
    }
}

impl Drop for Wsnorm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a raw HTTP request and returns the response ([`http_exchange`] for text).
pub async fn http_request(addr: SocketAddr, raw: &str) -> String {
    http_exchange(addr, raw.as_bytes()).await
}

/// The next text message, skipping nothing; panics after 5 s.
pub async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("message within 5 s")
        .expect("stream open")
        .expect("no error")
}

/// Reads until the backend's `received` report and returns the raw text it saw.
pub async fn backend_saw(ws: &mut Ws) -> String {
    loop {
        let text = next_text(ws).await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "received" {
            return v["raw"].as_str().unwrap().to_string();
        }
    }
}

/// Connects and consumes the backend's `connection_established` greeting.
pub async fn connected(wsnorm: &Wsnorm) -> Ws {
    let (mut ws, protocol) = wsnorm.connect("/ws", "agent_chat").await.unwrap();
    assert_eq!(protocol.as_deref(), Some("agent_chat"));
    let hello = next_text(&mut ws).await;
    assert!(hello.contains("connection_established"), "{hello}");
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string())).await.unwrap();
}

/// Polls the metrics until `series` reaches `want` (or 5 s pass) and returns the last value.
pub async fn metric_reaches(wsnorm: &Wsnorm, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(&wsnorm.metrics().await, series);
        if value == want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the samples of a Prometheus text exposition that `series` selects, or 0 when
/// none: `name{a="x"}` selects every sample of `name` with at least that label (any `route`,
/// for instance), as a PromQL selector does.
pub fn metric(text: &str, series: &str) -> f64 {
    let (name, wanted) = split_series(series);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            let (n, labels) = split_series(sample);
            (n == name && wanted.iter().all(|w| labels.contains(w)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A series' name and its `label="value"` pairs (values here hold no commas).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => (
            name,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        None => (series, Vec::new()),
    }
}
