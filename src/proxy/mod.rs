//! The pingora front door. Before the first phase, [`HeadTimeout`] bounds how long a client may
//! take to send its request head. Phases, in the order pingora runs them:
//! - `request_filter`: every WebSocket upgrade is taken over here ([`websocket::serve`]: backend
//!   handshake, 101, relay; on a configured route with the rules, elsewhere without them or
//!   refused, by `unrouted_upgrades`) and pingora is told the request is done; everything else
//!   continues as plain HTTP;
//! - `upstream_peer`: the configured backend, always (no request can choose another);
//! - `upstream_request_filter`: sets `X-Forwarded-For` / `-Proto` / `-Host` ([`forwarded`]);
//! - `upstream_response_filter`: notes when the backend's response head arrived;
//! - `logging`: counts and times plain HTTP requests by status class and writes the access log
//!   line (`[log]`).

pub mod backend;
pub mod extensions;
pub mod forwarded;
pub mod metrics;
pub mod path;
pub mod upgrade;
pub mod websocket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use pingora::Result;

use crate::config::UNROUTED;
use crate::logging::{self, millis};
use crate::state::AppState;

/// The proxy service.
pub struct Proxy {
    pub state: Arc<AppState>,
    /// Plain HTTP requests seen, for `log.access_log_sample_one_in`.
    requests: AtomicU64,
}

impl Proxy {
    pub fn new(state: Arc<AppState>) -> Proxy {
        Proxy {
            state,
            requests: AtomicU64::new(0),
        }
    }

    /// Whether this plain HTTP request gets an access log line.
    fn sampled(&self) -> bool {
        let log = &self.state.config().log;
        let seen = self.requests.fetch_add(1, Ordering::Relaxed);
        log.access_log && seen.is_multiple_of(log.access_log_sample_one_in)
    }
}

/// Per-request state.
pub struct RequestCtx {
    /// The request was a WebSocket handled by wsnorm: pingora's session no longer holds it.
    websocket: bool,
    /// When its head had been read.
    pub(crate) started: Instant,
    /// When the request went to the backend, and how long its response head took.
    backend_sent: Option<Instant>,
    backend_time: Option<Duration>,
}

/// The client's socket address (none for a Unix socket).
pub(crate) fn peer_addr(session: &Session) -> Option<std::net::SocketAddr> {
    session.client_addr().and_then(|a| a.as_inet()).copied()
}

/// Wraps pingora's HTTP app so that reading a request head is bounded by the handshake timeout
/// (per read, rounded up to whole seconds) instead of pingora's 60 s: a client that opens a
/// connection and stalls mid-head (slowloris) is dropped.
pub struct HeadTimeout<A> {
    pub inner: Arc<A>,
    pub state: Arc<AppState>,
}

#[async_trait]
impl<A> HttpServerApp for HeadTimeout<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // pingora reads request heads under its keep-alive timeout (whole seconds, 60 by
        // default); it also bounds how long an idle kept-alive connection is held.
        if !*shutdown.borrow() {
            let timeout = self.state.config().websocket.handshake_timeout();
            session.set_keepalive(Some(timeout.as_millis().div_ceil(1000).max(1) as u64));
        }
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// The size of a request head as received (request line and headers).
pub(crate) fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            websocket: false,
            started: Instant::now(),
            backend_sent: None,
            backend_time: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let limit = self.state.config().server.max_header_bytes;
        if header_bytes(req) > limit {
            let peer = peer_addr(session);
            tracing::info!(
                network.peer.address = peer.map(|p| tracing::field::display(p.ip())),
                network.peer.port = peer.map(|p| p.port()),
                url.path = req.uri.path(),
                http.response.status_code = 431,
                limit,
                "Request headers too large; answering 431."
            );
            session.set_keepalive(None);
            session
                .respond_error_with_body(
                    431,
                    bytes::Bytes::from_static(b"request headers too large"),
                )
                .await?;
            return Ok(true);
        }
        if !upgrade::is_websocket_upgrade(req) {
            return Ok(false);
        }
        let config = self.state.config_full();
        ctx.websocket = true;
        match upgrade::route_for(req.uri.path(), &config) {
            Ok(route) => websocket::serve(session, &config, &route, &self.state, ctx).await,
            Err(refusal) => {
                websocket::refuse(session, &self.state, UNROUTED, ctx.started, &refusal).await
            }
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // The socket address resolved when the config was read: `HttpPeer::new` would resolve
        // a name on every request and panic when it does not resolve.
        let socket = self.state.config().backend.address.socket;
        Ok(Box::new(HttpPeer::new(socket, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.backend_sent = Some(Instant::now());
        // An absolute-form target (`GET http://host/path`) goes to the backend in origin form,
        // as RFC 9112 wants towards an origin server; `uri` holds only the path already.
        let raw = upstream_request.raw_path();
        if raw.starts_with(b"http://") || raw.starts_with(b"https://") {
            upstream_request.set_uri(upstream_request.uri.clone());
        }
        let client_ip = peer_addr(session).map(|a| a.ip());
        let trusted = client_ip.is_some_and(|ip| self.state.config().server.trusts(ip));
        if !trusted {
            for name in forwarded::CLAIMS {
                upstream_request.remove_header(name);
            }
        }
        let headers =
            forwarded::headers(session.req_header(), client_ip, trusted).map_err(|e| {
                pingora::Error::because(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "forwarding headers",
                    e,
                )
            })?;
        for (name, value) in headers.iter() {
            upstream_request.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.backend_time = ctx.backend_sent.map(|sent| sent.elapsed());
        Ok(())
    }

    async fn logging(
        &self,
        session: &mut Session,
        _error: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        // A WebSocket session was taken out of pingora; its placeholder has no request to read.
        if ctx.websocket {
            return;
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(502);
        let duration = ctx.started.elapsed();
        self.state
            .metrics
            .proxy
            .http_request(status, duration.as_secs_f64());
        if !self.sampled() {
            return;
        }
        let req = session.req_header();
        let peer = peer_addr(session);
        tracing::info!(
            http.request.method = req.method.as_str(),
            url.path = req.uri.path(),
            http.response.status_code = status,
            wsnorm.duration_ms = millis(duration),
            wsnorm.backend.time_ms = ctx.backend_time.map(millis),
            http.request.body.size = session.body_bytes_read(),
            http.response.body.size = session.body_bytes_sent(),
            network.peer.address = peer.map(|p| tracing::field::display(p.ip())),
            network.peer.port = peer.map(|p| p.port()),
            "http.request.header.x-forwarded-for" =
                logging::forwarded_for(req.headers.get("x-forwarded-for").map(|v| v.as_bytes())),
            "HTTP request."
        );
    }
}
