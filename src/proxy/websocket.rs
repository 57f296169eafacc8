//! A WebSocket upgrade taken over from pingora: validate it, open the backend leg first, then
//! answer the client (the backend's refusal as it is, or a 101), take the raw stream out of
//! pingora and hand both legs to the relay.

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info, warn, Instrument};

use super::upgrade::{self, Refusal};
use super::upstream::{self, HandshakeRequest, UpstreamError};
use crate::config::{Config, Route};
use crate::logging::ConnectionLog;
use crate::metrics::HandshakeResult;
use crate::relay::{self, RelayContext};
use crate::state::AppState;

/// Headers that belong to one hop or to the handshake itself; wsnorm writes its own.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Serves one upgrade request to its end (refusal or closed relay).
pub async fn serve(session: &mut Session, config: &Config, route: &Route, state: &Arc<AppState>) {
    let started = Instant::now();
    let ws = &config.websocket;
    if state.is_shutting_down() {
        let refusal = Refusal {
            status: 503,
            reason: "shutting down".into(),
            result: HandshakeResult::Overloaded,
        };
        return refuse(session, state, started, &refusal).await;
    }
    let Some(slot) = state.try_open_connection(config.server.max_connections) else {
        let refusal = Refusal {
            status: 503,
            reason: "too many WebSocket connections".into(),
            result: HandshakeResult::Overloaded,
        };
        return refuse(session, state, started, &refusal).await;
    };
    let req = session.req_header();
    let client_upgrade = match upgrade::validate(req) {
        Ok(u) => u,
        Err(refusal) => return refuse(session, state, started, &refusal).await,
    };
    let has_authorization = req.headers.contains_key("authorization");
    let negotiation =
        match upgrade::negotiate(&client_upgrade.offered, ws, route, has_authorization) {
            Ok(n) => n,
            Err(refusal) => return refuse(session, state, started, &refusal).await,
        };
    let peer = session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let log = Arc::new(ConnectionLog {
        id: slot.id,
        route: route.pattern.clone(),
        subprotocol: negotiation.client_protocol,
        peer,
    });
    // For the handshake only: the open connection keeps `log`, not a span.
    let span = log.span();

    let path_and_query = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let mut headers = handshake_headers(req, client_ip, config);
    let bearer = negotiation.bearer.as_ref().map(|t| format!("Bearer {t}"));
    if let Some(b) = &bearer {
        headers.push(("Authorization".into(), b.as_bytes().to_vec()));
    }
    let borrowed: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let handshake = HandshakeRequest {
        path_and_query: &path_and_query,
        headers: borrowed,
        subprotocols: &negotiation.upstream_offer,
    };
    let backend =
        match upstream::handshake(&config.upstream.address, &handshake, ws.handshake_timeout())
            .instrument(span.clone())
            .await
        {
            Ok(backend) => backend,
            Err(error) => {
                let _enter = span.enter();
                return refuse_upstream(session, state, started, error).await;
            }
        };

    // The 101 goes out only now that the backend has accepted.
    let resp = match switching_protocols(&client_upgrade.key, log.subprotocol.as_deref()) {
        Ok(resp) => resp,
        Err(e) => {
            warn!(parent: &span, error = %e, "Building the 101 failed.");
            return;
        }
    };
    if let Err(e) = session.write_response_header(Box::new(resp), false).await {
        info!(parent: &span, error = %e, "Client went away before the 101 was written.");
        return;
    }
    let placeholder = ServerSession::new_http1(Box::new(Cursor::new(Vec::<u8>::new())));
    let downstream = std::mem::replace(&mut session.downstream_session, Box::new(placeholder));
    let ServerSession::H1(h1) = *downstream else {
        warn!(parent: &span, "Upgrade on a non-HTTP/1 session; dropping it.");
        return;
    };
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.handshake(HandshakeResult::Ok, elapsed);
    state
        .metrics
        .subprotocol(log.subprotocol.as_deref().unwrap_or("none"));

    let ctx = RelayContext {
        config: state.config.clone(),
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.subscribe(),
        keepalive: relay::Keepalive {
            ping_interval: ws.ping_interval(),
            idle_timeout: ws.idle_timeout(),
        },
        max_message_bytes: ws.max_message_bytes,
        log: log.clone(),
    };
    drop(span);
    // The relay gets a task of its own, so pingora's session (its futures, request header and
    // buffers, ~20 KiB) is freed now instead of living as long as the WebSocket.
    session.set_keepalive(None);
    let relay_task = async move {
        info!(
            parent: &log.span(),
            handshake_ms = elapsed * 1e3,
            upstream_subprotocol = backend.protocol.is_some(),
            "WebSocket connected."
        );
        let client = h1.into_inner();
        let summary = match plain_socket(&client) {
            Ok(socket) => {
                drop(client);
                relay::run(socket, backend.stream, &backend.leftover, ctx).await
            }
            Err(e) => {
                warn!(parent: &log.span(), error = %e, "Cannot take the client socket; relaying through pingora's stream.");
                relay::run(client, backend.stream, &backend.leftover, ctx).await
            }
        };
        info!(
            parent: &log.span(),
            close_code = summary.close_code,
            close_reason = %summary.close_reason,
            initiator = summary.initiator.unwrap_or("none"),
            messages_from_client = summary.messages[0],
            messages_from_upstream = summary.messages[1],
            "WebSocket closed."
        );
        drop(slot);
    };
    tokio::spawn(relay_task);
}

/// The client's socket as a plain tokio `TcpStream`, taken from pingora's stream (which is then
/// dropped): pingora's layers (buffered writes, per-poll timing) cost the relay about as much per
/// message as its own framing. The 101 was flushed when it was written.
fn plain_socket(client: &pingora::protocols::Stream) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::BorrowedFd;
    if client.get_ssl().is_some() {
        return Err(std::io::Error::other("TLS stream"));
    }
    let raw = client.id();
    if raw < 0 {
        return Err(std::io::Error::other("no socket descriptor"));
    }
    // SAFETY: `id()` of a plain pingora stream is its socket's descriptor (checked not to be -1
    // above), open for as long as `client` is borrowed here; the duplicate is an independent
    // descriptor of the same socket.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()?;
    let socket = std::net::TcpStream::from(fd);
    socket.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(socket)
}

fn switching_protocols(key: &str, protocol: Option<&str>) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(101, Some(4))?;
    resp.insert_header("Upgrade", "websocket")?;
    resp.insert_header("Connection", "Upgrade")?;
    resp.insert_header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))?;
    if let Some(p) = protocol {
        resp.insert_header("Sec-WebSocket-Protocol", p)?;
    }
    Ok(resp)
}

/// The backend leg's request headers: the client's end-to-end headers (Authorization, Cookie,
/// Origin, User-Agent, Host, ...) plus `X-Forwarded-*`.
fn handshake_headers(
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    config: &Config,
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    if !req.headers.contains_key("host") {
        out.push((
            "Host".into(),
            config.upstream.address.authority().into_bytes(),
        ));
    }
    for (name, value) in forwarded_headers(req, client_ip) {
        out.push((name.to_string(), value.into_bytes()));
    }
    out
}

/// `X-Forwarded-For` (the client's address appended to any it sent), `X-Forwarded-Proto` and
/// `X-Forwarded-Host`, for both plain HTTP and WebSocket requests.
pub fn forwarded_headers(
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
) -> Vec<(&'static str, String)> {
    let existing = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut out = Vec::with_capacity(3);
    if let Some(ip) = client_ip {
        let xff = match existing("x-forwarded-for") {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        out.push(("X-Forwarded-For", xff));
    }
    out.push((
        "X-Forwarded-Proto",
        existing("x-forwarded-proto").unwrap_or_else(|| "http".into()),
    ));
    if let Some(host) = existing("x-forwarded-host").or_else(|| existing("host")) {
        out.push(("X-Forwarded-Host", host));
    }
    out
}

async fn refuse(session: &mut Session, state: &AppState, started: Instant, refusal: &Refusal) {
    info!(
        status = refusal.status,
        result = refusal.result.as_str(),
        reason = %refusal.reason,
        "WebSocket handshake refused."
    );
    let body = serde_json::json!({ "error": refusal.reason }).to_string();
    let extra: &[(&str, &str)] = if refusal.status == 426 {
        &[("Sec-WebSocket-Version", "13")]
    } else {
        &[]
    };
    // Counted before answering, so a client that saw the answer also sees the count.
    state
        .metrics
        .handshake(refusal.result, started.elapsed().as_secs_f64());
    respond(
        session,
        refusal.status,
        Some(b"application/json"),
        body.into_bytes(),
        extra,
    )
    .await;
}

async fn refuse_upstream(
    session: &mut Session,
    state: &AppState,
    started: Instant,
    error: UpstreamError,
) {
    let (status, result) = match &error {
        UpstreamError::Refused(r) if r.status >= 500 => (r.status, HandshakeResult::Upstream5xx),
        UpstreamError::Refused(r) => (r.status, HandshakeResult::Upstream4xx),
        UpstreamError::Timeout(_) => (504, HandshakeResult::Timeout),
        UpstreamError::Connect { .. } => (502, HandshakeResult::ConnectError),
        UpstreamError::BadResponse(_) => (502, HandshakeResult::UpstreamInvalid),
    };
    warn!(error = %error, status, result = result.as_str(), "Backend handshake failed.");
    state
        .metrics
        .handshake(result, started.elapsed().as_secs_f64());
    match error {
        UpstreamError::Refused(r) => {
            respond(session, r.status, r.content_type.as_deref(), r.body, &[]).await
        }
        other => {
            let body = serde_json::json!({ "error": other.to_string() }).to_string();
            respond(
                session,
                status,
                Some(b"application/json"),
                body.into_bytes(),
                &[],
            )
            .await
        }
    }
}

async fn respond(
    session: &mut Session,
    status: u16,
    content_type: Option<&[u8]>,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) {
    // The client asked for an upgrade, not for more requests on this connection.
    session.set_keepalive(None);
    let result = async {
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header("Connection", "close")?;
        if let Some(ct) = content_type {
            resp.insert_header("Content-Type", ct)?;
        }
        resp.insert_header("Content-Length", body.len().to_string())?;
        for (name, value) in extra {
            resp.insert_header(name.to_string(), value.to_string())?;
        }
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    };
    if let Err(e) = result.await {
        info!(error = %e, "Could not write the refusal to the client.");
    }
}
