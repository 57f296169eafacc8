//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Separate from the proxy port and bound
//! to loopback by default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::state::AppState;

/// How long a backend reachability check is reused, so probes stay cheap.
const BACKEND_CHECK_TTL: Duration = Duration::from_secs(1);
const BACKEND_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the backend is checked in the background, so `wsnorm_backend_up` stays current
/// between probes.
pub const BACKEND_CHECK_INTERVAL: Duration = Duration::from_secs(5);

pub struct Admin {
    state: Arc<AppState>,
    backend: Arc<BackendProbe>,
}

impl Admin {
    pub fn new(state: Arc<AppState>, backend: Arc<BackendProbe>) -> Admin {
        Admin { state, backend }
    }

    async fn readiness(&self) -> (StatusCode, serde_json::Value) {
        let config = self.state.config.load();
        let backend = self.backend.check().await;
        let shutting_down = self.state.is_shutting_down();
        let ready = backend.is_ok() && !shutting_down;
        let body = serde_json::json!({
            "ready": ready,
            "checks": {
                "config": { "ok": true, "source": config.source },
                "backend": match &backend {
                    Ok(()) => serde_json::json!({ "ok": true }),
                    Err(e) => serde_json::json!({ "ok": false, "error": e }),
                },
                "shutting_down": shutting_down,
                "last_reload": self.state.reload_status().map(|r| serde_json::json!({
                    "ok": r.ok,
                    "message": r.message,
                    "unix_time": r.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                })),
            },
            "open_connections": self.state.open_connections(),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }
}

/// Whether the backend answers a TCP connect, cached for [`BACKEND_CHECK_TTL`]; also kept in
/// `wsnorm_backend_up`.
pub struct BackendProbe {
    state: Arc<AppState>,
    cache: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl BackendProbe {
    pub fn new(state: Arc<AppState>) -> Arc<BackendProbe> {
        Arc::new(BackendProbe {
            state,
            cache: Mutex::new(None),
        })
    }

    /// Checks the backend (or returns the cached result) and keeps the gauge current.
    pub async fn check(&self) -> Result<(), String> {
        let mut cached = self.cache.lock().await;
        if let Some((at, result)) = cached.as_ref() {
            if at.elapsed() < BACKEND_CHECK_TTL {
                return result.clone();
            }
        }
        let upstream = self.state.config.load().upstream.address.clone();
        let connect = TcpStream::connect((upstream.host.as_str(), upstream.port));
        let result = match tokio::time::timeout(BACKEND_CHECK_TIMEOUT, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", upstream.authority())),
            Err(_) => Err(format!("connect to {} timed out", upstream.authority())),
        };
        self.state.metrics.backend_up.set(i64::from(result.is_ok()));
        *cached = Some((Instant::now(), result.clone()));
        result
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.state.metrics.encode().into_bytes(),
            ),
            "/healthz" => (
                StatusCode::OK,
                "application/json",
                br#"{"status":"ok"}"#.to_vec(),
            ),
            "/readyz" => {
                let (status, body) = self.readiness().await;
                (status, "application/json", body.to_string().into_bytes())
            }
            _ => (
                StatusCode::NOT_FOUND,
                "application/json",
                br#"{"error":"not found; try /metrics, /healthz or /readyz"}"#.to_vec(),
            ),
        };
        let len = body.len();
        Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("Content-Length", len)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
