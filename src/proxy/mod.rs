//! The pingora front door. Phases, in the order pingora runs them:
//! - `request_filter`: a WebSocket upgrade on a configured route is taken over here
//!   ([`websocket::serve`]: backend handshake, 101, relay) and pingora is told the request is
//!   done; everything else continues as plain HTTP;
//! - `upstream_peer`: the configured backend, always (no request can choose another);
//! - `upstream_request_filter`: adds `X-Forwarded-For` / `-Proto`;
//! - `logging`: counts plain HTTP requests by status class.

pub mod upgrade;
pub mod upstream;
pub mod websocket;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::Result;

use crate::state::AppState;

/// The proxy service.
pub struct Proxy {
    pub state: Arc<AppState>,
}

/// Per-request state.
#[derive(Default)]
pub struct RequestCtx {
    /// The request was a WebSocket handled by wsnorm: pingora's session no longer holds it.
    websocket: bool,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        if !upgrade::is_websocket_upgrade(req) {
            return Ok(false);
        }
        let config = self.state.config.load_full();
        let Some(route) = config.routes.find(req.uri.path()).cloned() else {
            // Upgrades elsewhere pass through to the backend untouched.
            return Ok(false);
        };
        ctx.websocket = true;
        websocket::serve(session, &config, &route, &self.state).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let authority = self.state.config.load().upstream.address.authority();
        Ok(Box::new(HttpPeer::new(
            authority.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        for (name, value) in websocket::forwarded_headers(session.req_header(), client_ip) {
            upstream_request.insert_header(name, value)?;
        }
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
        self.state.metrics.http_request(status);
    }
}
