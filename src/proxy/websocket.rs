//! A WebSocket upgrade taken over from pingora: validate it, open the backend leg first, then
//! answer the client (the backend's refusal as it is, or a 101), take the raw stream out of
//! pingora and hand both legs to the relay.

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info, warn, Instrument};

use super::backend::{self, BackendError, Connected, HandshakeRequest};
use super::extensions::{self, Agreed};
use super::forwarded;
use super::metrics::HandshakeResult;
use super::upgrade::{self, Negotiation, Refusal};
use super::{peer_addr, RequestCtx};
use crate::config::{Config, Route, WebSocketConfig};
use crate::headers::{InvalidHeader, OutgoingHeaders};
use crate::logging::{self, millis, ConnectionLog};
use crate::relay::metrics::OpenConnection;
use crate::relay::{self, RelayContext};
use crate::state::{AppState, ConnectionSlot};

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

/// Serves one upgrade request to its end (refusal or closed relay): admit it, check it and
/// negotiate, dial the backend, answer 101 and take the socket, start the relay.
pub async fn serve(
    session: &mut Session,
    config: &Config,
    route: &Route,
    state: &Arc<AppState>,
    ctx: &RequestCtx,
) {
    let started = ctx.started;
    let refuse = |session, refusal| refuse(session, state, &route.pattern, started, refusal);
    let slot = match admit(config, state) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(session, &refusal).await,
    };
    let client_ip = peer_addr(session).map(|a| a.ip());
    // The backend's messages can pass to the client compressed as they are only where no rule
    // would read them.
    let backend_rules = !route.transparent
        && state
            .rules
            .load()
            .applies_to(crate::rules::Direction::BackendToClient);
    let prepared = match prepare(
        session.req_header(),
        config,
        route,
        client_ip,
        backend_rules,
    ) {
        Ok(prepared) => prepared,
        Err(refusal) => return refuse(session, &refusal).await,
    };
    let req = session.req_header();
    let mut log = ConnectionLog {
        id: slot.id,
        route: route.pattern.clone(),
        path: req.uri.path().to_string(),
        subprotocol: prepared.negotiation.client_protocol.clone(),
        peer: peer_addr(session),
        traceparent: logging::traceparent(req.headers.get("traceparent").map(|v| v.as_bytes())),
    };
    // For the handshake only: the open connection keeps `log`, not a span.
    let span = log.span();
    let ws = &config.websocket;
    let dialing = Instant::now();
    let backend = match dial(config, &prepared).instrument(span.clone()).await {
        Ok(backend) => backend,
        Err(error) => {
            let _enter = span.enter();
            return refuse_backend(session, state, &route.pattern, started, error).await;
        }
    };
    let backend_handshake = dialing.elapsed();
    state
        .metrics
        .proxy
        .backend_connect(backend.connect_time.as_secs_f64());
    let client_protocol = if route.transparent {
        backend.protocol.clone()
    } else {
        prepared.negotiation.client_protocol
    };
    // On an unrouted path the backend may choose a token-bearing protocol: echoed, never logged.
    log.subprotocol = client_protocol.as_deref().map(|p| {
        if ws.is_token_subprotocol(p) {
            "(token)".to_string()
        } else {
            p.to_string()
        }
    });

    // Active from before the 101, so a client that has its 101 finds itself counted.
    let route_metrics = state.metrics.relay.route(&route.pattern);
    let open = route_metrics.open();
    // The 101 goes out only now that the backend has accepted.
    let client_deflate = prepared.client_deflate.as_ref();
    let Some((client, client_leftover)) = switch_protocols(
        session,
        &prepared.key,
        client_protocol.as_deref(),
        client_deflate.map(|a| a.header.as_str()),
        ws,
        &span,
    )
    .await
    else {
        return;
    };
    let timings = Timings {
        handshake: started.elapsed(),
        backend_handshake,
    };
    let proxy_metrics = &state.metrics.proxy;
    proxy_metrics.handshake(
        &route.pattern,
        HandshakeResult::Ok,
        timings.handshake.as_secs_f64(),
    );
    proxy_metrics.subprotocol(subprotocol_label(client_protocol.as_deref(), ws));
    drop(span);

    let log = Arc::new(log);
    let ctx = RelayContext {
        rules: (!route.transparent).then(|| state.rules.clone()),
        metrics: state.metrics.clone(),
        route_metrics,
        shutdown: state.shutdown.subscribe(),
        drain_delay: slot.drain_delay(config.server.drain_spread()),
        keepalive: relay::Keepalive {
            ping_interval: ws.ping_interval(),
            idle_timeout: ws.idle_timeout(),
        },
        max_message_bytes: ws.max_message_bytes,
        log: log.clone(),
        deflate: relay::Deflate {
            client: client_deflate.map(|a| a.deflate),
            backend: backend.deflate.as_ref().map(|a| a.deflate),
            passthrough: prepared.passthrough.is_some() && backend.deflate.is_some(),
            compress_to_backend: ws.compression.compress_to_backend,
            settings: relay::deflate::DeflateSettings {
                level: ws.compression.level,
                min_message_bytes: ws.compression.min_message_bytes,
            },
        },
    };
    let extension =
        |agreed: Option<&Agreed>| agreed.map_or("none".to_string(), |a| a.header.clone());
    info!(
        parent: &log.span(),
        wsnorm.handshake_ms = millis(timings.handshake),
        wsnorm.backend.handshake_ms = millis(timings.backend_handshake),
        wsnorm.backend.subprotocol = backend.protocol.is_some(),
        wsnorm.client.extension = %extension(client_deflate),
        wsnorm.backend.extension = %extension(backend.deflate.as_ref()),
        "WebSocket connected."
    );
    // The relay gets a task of its own, so pingora's session (its futures, request header and
    // buffers, ~20 KiB) is freed now instead of living as long as the WebSocket.
    session.set_keepalive(None);
    let open_for = Accounting {
        slot,
        open,
        timings,
    };
    // Each kind of client socket gets a task of its own type, sized for it alone.
    let client = client.into_inner();
    let backend = (backend.stream, backend.leftover);
    match plain_socket(&client) {
        Ok(socket) => {
            drop(client);
            tokio::spawn(relay(socket, client_leftover, backend, ctx, open_for));
        }
        Err(e) => {
            warn!(parent: &log.span(), error = %e, "Cannot take the client socket; relaying through pingora's stream.");
            tokio::spawn(relay(client, client_leftover, backend, ctx, open_for));
        }
    }
}

/// What a relayed connection holds until it ends: its place under `max_connections`, its count
/// in `wsnorm_connections_active`, and its handshake times for the close line.
struct Accounting {
    slot: ConnectionSlot,
    open: OpenConnection,
    timings: Timings,
}

/// How long a connection's handshake took, for its close line.
#[derive(Clone, Copy)]
struct Timings {
    /// The client's upgrade request to the 101.
    handshake: Duration,
    /// Connecting to the backend and its handshake.
    backend_handshake: Duration,
}

/// Relays an upgraded connection to its end and logs how it ended; the connection's slot is
/// given back then.
async fn relay<C>(
    client: C,
    client_leftover: Vec<u8>,
    (backend, backend_leftover): (tokio::net::TcpStream, Vec<u8>),
    ctx: RelayContext,
    accounting: Accounting,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Accounting {
        slot,
        open,
        timings,
    } = accounting;
    let log = ctx.log.clone();
    let leftovers = relay::Leftovers {
        client: &client_leftover,
        backend: &backend_leftover,
    };
    let summary = relay::run(client, backend, leftovers, ctx).await;
    info!(
        parent: &log.span(),
        wsnorm.duration_ms = millis(open.elapsed()),
        wsnorm.handshake_ms = millis(timings.handshake),
        wsnorm.backend.handshake_ms = millis(timings.backend_handshake),
        wsnorm.close.code = summary.close_code,
        wsnorm.close.reason = %summary.close_reason,
        wsnorm.close.initiator = summary.initiator.unwrap_or("none"),
        wsnorm.messages.from_client = summary.messages[0],
        wsnorm.messages.from_backend = summary.messages[1],
        wsnorm.bytes.from_client = summary.bytes[0],
        wsnorm.bytes.from_backend = summary.bytes[1],
        "WebSocket closed."
    );
    drop(open);
    drop(slot);
}

/// A slot under `max_connections`, unless the process is shutting down.
fn admit(config: &Config, state: &Arc<AppState>) -> Result<ConnectionSlot, Refusal> {
    let overloaded = |reason: &str| Refusal {
        status: 503,
        reason: reason.into(),
        result: HandshakeResult::Overloaded,
    };
    if state.is_shutting_down() {
        return Err(overloaded("shutting down"));
    }
    state
        .try_open_connection(config.server.max_connections)
        .ok_or_else(|| overloaded("too many WebSocket connections"))
}

/// The backend leg's request line and headers.
struct BackendRequest {
    path_and_query: http::uri::PathAndQuery,
    headers: OutgoingHeaders,
}

/// A checked upgrade request: what the 101 and the backend's handshake are built from.
struct Prepared {
    /// The client's `Sec-WebSocket-Key`.
    key: String,
    negotiation: Negotiation,
    /// The client's permessage-deflate offer wsnorm accepts, if any.
    client_deflate: Option<Agreed>,
    /// The client leg's sending window, when the backend's compressed messages are to pass to
    /// the client as they are (`[websocket.compression] passthrough`).
    passthrough: Option<relay::deflate::Window>,
    backend: BackendRequest,
}

/// Validates the client's upgrade, checks its origin, negotiates subprotocols and builds the
/// backend's request.
fn prepare(
    req: &RequestHeader,
    config: &Config,
    route: &Route,
    client_ip: Option<IpAddr>,
    backend_rules: bool,
) -> Result<Prepared, Refusal> {
    let client_upgrade = upgrade::validate(req)?;
    upgrade::check_origin(req, route)?;
    let has_authorization = req.headers.contains_key("authorization");
    let negotiation = upgrade::negotiate(
        &client_upgrade.offered,
        &config.websocket,
        route,
        has_authorization,
    )?;
    let trusted = client_ip.is_some_and(|ip| config.server.trusts(ip));
    let headers =
        handshake_headers(req, client_ip, trusted, config, &negotiation).map_err(|e| Refusal {
            status: 400,
            reason: e.to_string(),
            result: HandshakeResult::BadRequest,
        })?;
    let path_and_query = req
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let offers = req
        .headers
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let compression = &config.websocket.compression;
    let client_deflate = extensions::accept_client_offer(offers, compression);
    let passthrough = client_deflate
        .as_ref()
        .filter(|_| compression.passthrough && !backend_rules)
        .and_then(extensions::passthrough_window);
    Ok(Prepared {
        key: client_upgrade.key,
        negotiation,
        client_deflate,
        passthrough,
        backend: BackendRequest {
            path_and_query,
            headers,
        },
    })
}

/// Opens the backend leg with the prepared request.
async fn dial(config: &Config, prepared: &Prepared) -> Result<Connected, BackendError> {
    let handshake = HandshakeRequest {
        path_and_query: &prepared.backend.path_and_query,
        headers: &prepared.backend.headers,
        subprotocols: &prepared.negotiation.backend_offer,
        deflate: extensions::backend_offer(&config.websocket.compression, prepared.passthrough),
    };
    backend::handshake(
        &config.backend.address,
        &handshake,
        config.websocket.handshake_timeout(),
    )
    .await
}

/// Writes the 101 and takes the client's connection out of pingora, with the bytes the client
/// sent right behind its request head (an eager first frame): they start the client leg's
/// stream. `None` when the client is gone or sent more than one message's worth early.
async fn switch_protocols(
    session: &mut Session,
    key: &str,
    protocol: Option<&str>,
    extension: Option<&str>,
    ws: &WebSocketConfig,
    span: &tracing::Span,
) -> Option<(HttpSession, Vec<u8>)> {
    let resp = match switching_protocols(key, protocol, extension) {
        Ok(resp) => resp,
        Err(e) => {
            warn!(parent: span, error = %e, "Building the 101 failed.");
            return None;
        }
    };
    if let Err(e) = session.write_response_header(Box::new(resp), false).await {
        info!(parent: span, error = %e, "Client went away before the 101 was written.");
        return None;
    }
    let placeholder = ServerSession::new_http1(Box::new(Cursor::new(Vec::<u8>::new())));
    let downstream = std::mem::replace(&mut session.downstream_session, Box::new(placeholder));
    let ServerSession::H1(mut h1) = *downstream else {
        warn!(parent: span, "Upgrade on a non-HTTP/1 session; dropping it.");
        return None;
    };
    // After the 101, pingora reads the connection as an upgraded body: first what it read past
    // the request head, then its own read buffer, then the socket. Take all that is there now
    // (a pending read is dropped before it takes anything); the relay reads the rest.
    let most = ws.max_message_bytes + MAX_FRAME_HEAD;
    let mut leftover = Vec::new();
    while let Some(Ok(Some(bytes))) = h1.read_body_bytes().now_or_never() {
        leftover.extend_from_slice(&bytes);
        if leftover.len() > most {
            info!(parent: span, bytes = leftover.len(), "Client sent more than one message before its 101; dropping it.");
            return None;
        }
    }
    Some((h1, leftover))
}

/// The longest frame header (RFC 6455 §5.2): 2 bytes, 8 of length, 4 of mask.
const MAX_FRAME_HEAD: usize = 14;

/// The `subprotocol` label: a configured protocol's name, `none`, or `other` (a protocol the
/// backend chose on an unrouted path), so the label stays bounded.
fn subprotocol_label<'a>(protocol: Option<&'a str>, ws: &WebSocketConfig) -> &'a str {
    match protocol {
        None => "none",
        Some(p) if ws.subprotocols.iter().any(|s| s == p) => p,
        Some(_) => "other",
    }
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

/// The 101; every value goes through [`OutgoingHeaders`], the one checked path.
fn switching_protocols(
    key: &str,
    protocol: Option<&str>,
    extension: Option<&str>,
) -> Result<ResponseHeader, Box<dyn std::error::Error>> {
    let mut headers = OutgoingHeaders::default();
    headers.push("Upgrade", "websocket")?;
    headers.push("Connection", "Upgrade")?;
    headers.push("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))?;
    if let Some(p) = protocol {
        headers.push("Sec-WebSocket-Protocol", p)?;
    }
    if let Some(e) = extension {
        headers.push("Sec-WebSocket-Extensions", e)?;
    }
    let mut resp = ResponseHeader::build(101, Some(5))?;
    for (name, value) in headers.iter() {
        resp.append_header(name.clone(), value.clone())?;
    }
    Ok(resp)
}

/// The backend leg's request headers: the client's end-to-end headers (Authorization, Cookie,
/// Origin, User-Agent, Host, ...), `X-Forwarded-*`, and a bearer token moved out of a
/// subprotocol.
fn handshake_headers(
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    trusted: bool,
    config: &Config,
    negotiation: &Negotiation,
) -> Result<OutgoingHeaders, InvalidHeader> {
    let mut out = OutgoingHeaders::default();
    for (name, value) in &req.headers {
        let dropped = NOT_FORWARDED.contains(&name.as_str())
            || (!trusted && forwarded::CLAIMS.contains(&name.as_str()));
        if !dropped {
            out.push_typed(name.clone(), value.clone());
        }
    }
    if !out.contains("host") {
        out.push("Host", config.backend.address.authority())?;
    }
    for (name, value) in forwarded::headers(req, client_ip, trusted)?.iter() {
        out.push_typed(name.clone(), value.clone());
    }
    if let Some(token) = &negotiation.bearer {
        out.push("Authorization", format!("Bearer {token}"))?;
    }
    Ok(out)
}

/// Answers a refused upgrade with its status and a JSON reason, counted and logged.
pub(super) async fn refuse(
    session: &mut Session,
    state: &AppState,
    route: &str,
    started: Instant,
    refusal: &Refusal,
) {
    let peer = peer_addr(session);
    info!(
        network.peer.address = peer.map(|p| tracing::field::display(p.ip())),
        network.peer.port = peer.map(|p| p.port()),
        url.path = session.req_header().uri.path(),
        http.route = route,
        http.response.status_code = refusal.status,
        wsnorm.handshake.result = refusal.result.as_str(),
        wsnorm.reason = %refusal.reason,
        "WebSocket handshake refused."
    );
    // Counted before answering, so a client that saw the answer also sees the count.
    state
        .metrics
        .proxy
        .handshake(route, refusal.result, started.elapsed().as_secs_f64());
    let mut headers = OutgoingHeaders::default();
    if refusal.status == 426 {
        let _ = headers.push("Sec-WebSocket-Version", "13");
    }
    respond_json(session, refusal.status, headers, &refusal.reason).await;
}

async fn refuse_backend(
    session: &mut Session,
    state: &AppState,
    route: &str,
    started: Instant,
    error: BackendError,
) {
    let (status, result) = match &error {
        BackendError::Refused(r) if r.status >= 500 => (r.status, HandshakeResult::Backend5xx),
        BackendError::Refused(r) => (r.status, HandshakeResult::Backend4xx),
        BackendError::Timeout(_) => (504, HandshakeResult::Timeout),
        BackendError::Connect { .. } => (502, HandshakeResult::ConnectError),
        BackendError::BadResponse(_) => (502, HandshakeResult::BackendInvalid),
    };
    // A backend that refuses (an expired token's 401 or 403) is routine, not a fault of the
    // proxy or the backend: no WARN per connection.
    if result == HandshakeResult::Backend4xx {
        info!(error = %error, http.response.status_code = status, wsnorm.handshake.result = result.as_str(), "Backend refused the handshake.");
    } else {
        warn!(error = %error, http.response.status_code = status, wsnorm.handshake.result = result.as_str(), "Backend handshake failed.");
    }
    state
        .metrics
        .proxy
        .handshake(route, result, started.elapsed().as_secs_f64());
    match error {
        BackendError::Refused(r) => respond(session, r.status, r.headers, r.body).await,
        other => {
            respond_json(
                session,
                status,
                OutgoingHeaders::default(),
                &other.to_string(),
            )
            .await
        }
    }
}

/// Answers with `{"error": reason}`.
async fn respond_json(
    session: &mut Session,
    status: u16,
    mut headers: OutgoingHeaders,
    reason: &str,
) {
    let body = serde_json::json!({ "error": reason }).to_string();
    let _ = headers.push("Content-Type", "application/json");
    respond(session, status, headers, body.into_bytes()).await;
}

async fn respond(session: &mut Session, status: u16, headers: OutgoingHeaders, body: Vec<u8>) {
    // The client asked for an upgrade, not for more requests on this connection.
    session.set_keepalive(None);
    let result = async {
        let mut resp = ResponseHeader::build(status, Some(headers.iter().count() + 2))?;
        for (name, value) in headers.iter() {
            resp.append_header(name.clone(), value.clone())?;
        }
        resp.insert_header(http::header::CONNECTION, "close")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    };
    if let Err(e) = result.await {
        info!(error = %e, "Could not write the refusal to the client.");
    }
}
