//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config` (the effective config and its
//! hash) and `/logging` (the log filter; `POST /logging?filter=<RUST_LOG syntax>` changes it, as
//! Envoy's `/logging` does); GET and HEAD, and that one POST. Separate from the proxy port and
//! bound to loopback by default, with the proxy port's limits on request heads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::logging::LogFilter;
use crate::proxy::header_bytes;
use crate::reload::config_hash;
use crate::state::AppState;

/// How long a backend reachability check is reused, so probes stay cheap.
const BACKEND_CHECK_TTL: Duration = Duration::from_secs(1);
/// How long `/healthz` and `/readyz` wait for a TCP connect to the proxy listener or the backend.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the backend is checked in the background, so `wsnorm_backend_up` stays current
/// between probes.
pub const BACKEND_CHECK_INTERVAL: Duration = Duration::from_secs(5);

pub struct Admin {
    state: Arc<AppState>,
    backend: Arc<BackendProbe>,
    /// Where `/healthz` finds the proxy listener (loopback for a wildcard address).
    proxy: SocketAddr,
    /// None when logging was set up by someone else (nothing to change then).
    log_filter: Option<LogFilter>,
}

impl Admin {
    /// `listen` is the proxy listener's bound address.
    pub fn new(
        state: Arc<AppState>,
        backend: Arc<BackendProbe>,
        listen: SocketAddr,
        log_filter: Option<LogFilter>,
    ) -> Admin {
        Admin {
            state,
            backend,
            proxy: reachable(listen),
            log_filter,
        }
    }

    /// The effective config as `wsnorm check` prints it (the file holds no credentials: tokens
    /// come with requests), and the hash `wsnorm_config_info` carries.
    fn effective_config(&self) -> serde_json::Value {
        let config = self.state.config();
        serde_json::json!({
            "hash": config_hash(&config),
            "source": config.source,
            "effective": config.describe(),
        })
    }

    /// `POST /logging?filter=...`: replaces the log filter (dependency caps kept).
    fn set_log_filter(&self, req: &RequestHeader) -> Reply {
        let Some(log_filter) = &self.log_filter else {
            return Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"error":"the log filter cannot be changed in this process"}"#,
            );
        };
        let wanted = req.uri.query().unwrap_or("").split('&').find_map(|pair| {
            pair.strip_prefix("filter=")
                .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
        });
        let Some(wanted) = wanted else {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                br#"{"error":"give the filter as ?filter=<RUST_LOG syntax>, e.g. ?filter=debug"}"#,
            );
        };
        let before = log_filter.current();
        match log_filter.set(&wanted) {
            Ok(()) => {
                let now = log_filter.current();
                tracing::info!(before = %before, now = %now, "Log filter changed.");
                Reply::value(StatusCode::OK, &serde_json::json!({ "filter": now }))
            }
            Err(e) => Reply::value(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": format!("not a valid filter: {e}") }),
            ),
        }
    }

    /// Alive while the proxy listener accepts connections: pingora runs it on a thread of its
    /// own, and a process whose proxy service died must not look alive to an orchestrator. Not
    /// checked once shutting down, when pingora closes it on purpose.
    async fn liveness(&self) -> Reply {
        if self.state.is_shutting_down() {
            return Reply::json(StatusCode::OK, br#"{"status":"ok"}"#);
        }
        match connects(self.proxy, &self.proxy).await {
            Ok(()) => Reply::json(StatusCode::OK, br#"{"status":"ok"}"#),
            Err(e) => Reply::value(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "failing", "error": format!("proxy listener: {e}") }),
            ),
        }
    }

    async fn readiness(&self) -> (StatusCode, serde_json::Value) {
        let config = self.state.config();
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

/// `addr` as a client dials it: a wildcard listener is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Whether something accepts a TCP connection at `addr` (named `shown` in the error) within
/// [`CONNECT_CHECK_TIMEOUT`].
async fn connects(addr: SocketAddr, shown: &(dyn std::fmt::Display + Sync)) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_CHECK_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {shown}: {e}")),
        Err(_) => Err(format!("connect to {shown} timed out")),
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
        let backend = self.state.config().backend.address.clone();
        let result = connects(backend.socket, &backend).await;
        self.state
            .metrics
            .proxy
            .backend_up
            .set(i64::from(result.is_ok()));
        // Logged when it changes, not at every check: a backend down for an hour is two lines.
        let was_up = cached.as_ref().map(|(_, previous)| previous.is_ok());
        match (&result, was_up) {
            (Err(e), None | Some(true)) => tracing::warn!(error = %e, "Backend is not reachable."),
            (Ok(()), None | Some(false)) => {
                tracing::info!(backend = %backend.authority(), "Backend is reachable.")
            }
            _ => {}
        }
        *cached = Some((Instant::now(), result.clone()));
        result
    }
}

/// One answer of the admin listener.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, body: &'static [u8]) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.to_vec(),
        }
    }

    fn value(status: StatusCode, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    fn head_too_large() -> Reply {
        Reply::json(HEAD_TOO_LARGE, br#"{"error":"request headers too large"}"#)
    }

    /// The answer to a head pingora could not parse, if it can take one: more headers than
    /// pingora parses (256) is a head too large, anything else a bad request.
    fn for_unparsable_head(e: &pingora::Error) -> Option<Reply> {
        if e.etype != ErrorType::InvalidHTTPHeader {
            // The connection broke or timed out: nobody to answer.
            return None;
        }
        let too_many_headers = e
            .cause
            .as_ref()
            .and_then(|cause| cause.downcast_ref::<httparse::Error>())
            == Some(&httparse::Error::TooManyHeaders);
        Some(if too_many_headers {
            Reply::head_too_large()
        } else {
            Reply::json(StatusCode::BAD_REQUEST, br#"{"error":"bad request"}"#)
        })
    }
}

const HEAD_TOO_LARGE: StatusCode = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;

/// The only methods the admin listener serves.
const ALLOWED_METHODS: &str = "GET, HEAD";

impl Admin {
    async fn answer(&self, req: &RequestHeader) -> Reply {
        let limit = self.state.config().server.max_header_bytes;
        if header_bytes(req) > limit {
            return Reply::head_too_large();
        }
        if req.uri.path() == "/logging" && req.method == Method::POST {
            return self.set_log_filter(req);
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                br#"{"error":"method not allowed; use GET or HEAD"}"#,
            );
        }
        match req.uri.path() {
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: self.state.metrics.encode().into_bytes(),
            },
            "/healthz" => self.liveness().await,
            "/readyz" => {
                let (status, body) = self.readiness().await;
                Reply::value(status, &body)
            }
            "/config" => Reply::value(StatusCode::OK, &self.effective_config()),
            "/logging" => match &self.log_filter {
                Some(f) => Reply::value(
                    StatusCode::OK,
                    &serde_json::json!({ "filter": f.current() }),
                ),
                None => Reply::value(StatusCode::OK, &serde_json::json!({ "filter": null })),
            },
            _ => Reply::json(
                StatusCode::NOT_FOUND,
                br#"{"error":"not found; try /metrics, /healthz, /readyz, /config or /logging"}"#,
            ),
        }
    }
}

/// Writes `reply`; no body after a HEAD (`head_only`), but its length all the same.
async fn write_reply(
    session: &mut ServerSession,
    reply: Reply,
    head_only: bool,
) -> pingora::Result<()> {
    let mut head = ResponseHeader::build(reply.status, Some(3))?;
    head.insert_header("Content-Type", reply.content_type)?;
    head.insert_header("Content-Length", reply.body.len())?;
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        head.insert_header("Allow", ALLOWED_METHODS)?;
    }
    session.write_response_header(Box::new(head)).await?;
    if !head_only && !reply.body.is_empty() {
        session.write_response_body(reply.body.into(), true).await?;
    }
    Ok(())
}

/// Serves one request on the admin listener. Its head is bounded as on the proxy port: by
/// [`HeadTimeout`](crate::proxy::HeadTimeout), which wraps this, and by
/// `server.max_header_bytes`.
#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // Closed by the client, or no complete head in time.
            Ok(false) => return None,
            Err(e) => {
                if let Some(reply) = Reply::for_unparsable_head(&e) {
                    if let Err(e) = write_reply(&mut session, reply, false).await {
                        tracing::debug!(error = %e, "Admin: refusing a bad request head failed.");
                    }
                }
                session.shutdown().await;
                return None;
            }
        }
        let reply = self.answer(session.req_header()).await;
        if *shutdown.borrow() || reply.status == HEAD_TOO_LARGE {
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == Method::HEAD;
        if let Err(e) = write_reply(&mut session, reply, head_only).await {
            tracing::debug!(error = %e, "Admin: writing a response failed.");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!(error = %e, "Admin: finishing a response failed.");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use crate::metrics::Metrics;

    fn admin(listen: SocketAddr) -> Admin {
        let config = Config::from_toml("t.toml", "", &Overrides::default()).unwrap();
        let state = AppState::new(config, Arc::new(Metrics::new().unwrap()));
        Admin::new(state.clone(), BackendProbe::new(state), listen, None)
    }

    /// `/healthz` answers for the proxy listener: alive while it accepts, 503 once nothing
    /// listens there (as after pingora's proxy thread died).
    #[tokio::test]
    async fn liveness_follows_the_proxy_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = admin(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()));
        let reply = admin.liveness().await;
        assert_eq!(reply.status, StatusCode::OK);

        drop(listener);
        let reply = admin.liveness().await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["status"], "failing");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("proxy listener: cannot connect to {addr}: ")),
            "{error}"
        );
    }

    #[test]
    fn a_wildcard_listener_is_checked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        let own: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:8080");
        assert_eq!(reachable(v6).to_string(), "[::1]:8080");
        assert_eq!(reachable(own), own);
    }
}
