//! Strict imitation of the fragile agent_chat backend (a Python FastAPI service).
//!
//! One listener serves both plain HTTP and WebSocket upgrades:
//!
//! * Plain HTTP/1.x with keep-alive: `GET /health`, `POST|PUT|PATCH /api/echo` (echoes method,
//!   path, lowercased headers and body as JSON), `GET /api/status/{code}`, `GET /api/stream`
//!   (chunked, five `chunk-N\n` chunks) and 404 for everything else. Request bodies may use
//!   `Content-Length` or `Transfer-Encoding: chunked`.
//! * WebSocket upgrades on `/ws` (any query), `/ws/<anything>` and `/api/v1/websocket`, handled by
//!   tungstenite. Like the real backend it negotiates **no** subprotocol and no extension, wants
//!   a token (`Authorization: Bearer <t>` or a `jwt.`/`jwt-auth.`/`bearer.`/`staging-auth.`
//!   subprotocol, at least 10 characters) and refuses the handshake with HTTP 403 otherwise.
//!   `/ws/fail500` always refuses with HTTP 500.
//!
//! WebSocket message rules (see the module docs of [`crate`] and the agent_chat protocol
//! notes): every JSON object is first answered with `{"type":"received","raw":"<exact text>"}`;
//! a non-numeric `timestamp` gets a `VALIDATION_ERROR` and a 1011 close; `execute_agent` is
//! silently dropped; `start_agent` is acknowledged and followed by `agent_started`; `ping` gets a
//! `pong`; `close_with`, `send_big` and `echo` are test hooks; anything else gets an `ack`.
//! Binary messages are echoed unchanged.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{self, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use wsnorm::headers::OwnedHeaders;

/// Largest WebSocket message the backend accepts (like uvicorn's default).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Largest message the `send_big` test hook will produce.
pub const MAX_SEND_BIG: usize = 64 * 1024 * 1024;
/// Largest request head (request line + headers) accepted on plain HTTP.
const MAX_HEAD: usize = 64 * 1024;
/// Largest plain HTTP request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle time after which a keep-alive HTTP connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the peer's close frame after the backend initiated a close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay between the chunks of `GET /api/stream`.
const STREAM_CHUNK_DELAY: Duration = Duration::from_millis(50);

/// Options of the demo backend.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Print each received WebSocket message as `backend received: <raw text>` on stdout, plus
    /// one line per accepted, refused or closed connection.
    pub verbose: bool,
}

struct Shared {
    verbose: bool,
    next_connection: AtomicU64,
}

/// Serve forever on `listener`, one task per connection. Errors on one connection are logged
/// (at debug level) and never stop the server.
pub async fn serve(listener: TcpListener, opts: BackendOptions) -> io::Result<()> {
    let shared = Arc::new(Shared {
        verbose: opts.verbose,
        next_connection: AtomicU64::new(1),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically EMFILE or a connection reset before accept: back off and go on.
                tracing::warn!(error = %err, "demo backend: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(err) = handle_connection(stream, &shared).await {
                tracing::debug!(%peer, error = %err, "demo backend: connection ended with error");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: OwnedHeaders,
    len: usize,
}

impl Head {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers.has_token(name, token)
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn keep_alive(&self) -> bool {
        if self.version >= 1 {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive")
        }
    }
}

enum HeadParse {
    Partial,
    Complete(Head),
    Invalid,
}

fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return HeadParse::Invalid;
            };
            HeadParse::Complete(Head {
                method: method.to_owned(),
                target: target.to_owned(),
                version,
                headers: OwnedHeaders::from_httparse(req.headers),
                len,
            })
        }
        Err(_) => HeadParse::Invalid,
    }
}

/// Read more bytes into `buf`; `Ok(0)` means EOF.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    match tokio::time::timeout(IDLE_TIMEOUT, stream.read_buf(buf)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}

fn unexpected_eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed mid-request",
    )
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Handle one accepted TCP connection: plain HTTP requests (keep-alive) until one of them is a
/// WebSocket upgrade on a WebSocket path, which is then handed to tungstenite.
async fn handle_connection(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let head = loop {
            if !buf.is_empty() {
                match parse_head(&buf) {
                    HeadParse::Complete(head) => break head,
                    HeadParse::Invalid => {
                        write_simple(&mut stream, 400, &detail("Bad Request"), false, false)
                            .await?;
                        return Ok(());
                    }
                    HeadParse::Partial => {}
                }
            }
            if buf.len() > MAX_HEAD {
                write_simple(
                    &mut stream,
                    431,
                    &detail("Request Header Fields Too Large"),
                    false,
                    false,
                )
                .await?;
                return Ok(());
            }
            let idle = buf.is_empty();
            match fill(&mut stream, &mut buf).await {
                Ok(0) if idle => return Ok(()),
                Ok(0) => return Err(unexpected_eof().into()),
                Ok(_) => {}
                Err(err) if idle && err.kind() == io::ErrorKind::TimedOut => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        };

        if head.has_token("upgrade", "websocket") {
            if is_ws_path(head.path()) {
                // Hand the connection, including the buffered request head, to tungstenite.
                let prefix = buf.split().freeze();
                return handle_websocket(Prefixed::new(prefix, stream), shared).await;
            }
            if shared.verbose {
                println!(
                    "backend refused WebSocket upgrade on {}: 404 not a WebSocket path",
                    head.target
                );
            }
            write_simple(&mut stream, 404, &detail("Not Found"), false, false).await?;
            return Ok(());
        }

        buf.advance(head.len);
        let body = match read_body(&mut stream, &mut buf, &head).await {
            Ok(body) => body,
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                write_simple(&mut stream, 400, &detail(&err.to_string()), false, false).await?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };

        let keep_alive = head.keep_alive();
        respond(&mut stream, &head, &body, keep_alive).await?;
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

async fn read_body(stream: &mut TcpStream, buf: &mut BytesMut, head: &Head) -> io::Result<Vec<u8>> {
    let chunked = head.has_token("transfer-encoding", "chunked");
    let content_length = match head.header("content-length") {
        None => None,
        Some(raw) => Some(
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("invalid Content-Length"))?,
        ),
    };
    if !chunked && content_length.unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    if let Some(len) = content_length {
        if len > MAX_BODY {
            return Err(invalid("request body too large"));
        }
    }
    if head.has_token("expect", "100-continue") && buf.is_empty() {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    if chunked {
        return read_chunked(stream, buf).await;
    }
    let len = content_length.unwrap_or(0);
    while buf.len() < len {
        if fill(stream, buf).await? == 0 {
            return Err(unexpected_eof());
        }
    }
    Ok(buf.split_to(len).to_vec())
}

/// Read one CRLF-terminated line (without the CRLF) from the buffered stream.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Vec<u8>> {
    loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(pos).to_vec();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("chunk line too long"));
        }
        if fill(stream, buf).await? == 0 {
            return Err(unexpected_eof());
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let line = String::from_utf8_lossy(&line);
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_str, 16).map_err(|_| invalid("invalid chunk size"))?;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("request body too large"));
        }
        while buf.len() < size + 2 {
            if fill(stream, buf).await? == 0 {
                return Err(unexpected_eof());
            }
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err(invalid("missing CRLF after chunk"));
        }
        buf.advance(size + 2);
    }
}

fn detail(text: &str) -> Vec<u8> {
    json!({ "detail": text }).to_string().into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// Write a complete JSON response.
async fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    out.push_str("server: wsnorm-demo-backend\r\n");
    // 1xx, 204 and 304 responses carry no body.
    let bodiless = status < 200 || status == 204 || status == 304;
    if !bodiless {
        out.push_str("content-type: application/json\r\n");
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !bodiless && !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes).await?;
    stream.flush().await
}

async fn respond(
    stream: &mut TcpStream,
    head: &Head,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let method = head.method.as_str();
    let path = head.path();
    let head_only = method == "HEAD";
    let get = method == "GET" || head_only;
    match path {
        "/health" if get => {
            write_simple(stream, 200, br#"{"status":"ok"}"#, keep_alive, head_only).await
        }
        "/api/echo" if matches!(method, "POST" | "PUT" | "PATCH") => {
            let mut headers = Map::new();
            for (name, value) in head.headers.iter() {
                let name = name.to_ascii_lowercase();
                let value = String::from_utf8_lossy(value).into_owned();
                let joined = match headers.get(&name).and_then(Value::as_str) {
                    Some(prev) => format!("{prev}, {value}"),
                    None => value,
                };
                headers.insert(name, Value::String(joined));
            }
            let reply = json!({
                "method": method,
                "path": head.target,
                "headers": headers,
                "body": String::from_utf8_lossy(body),
            });
            write_simple(stream, 200, reply.to_string().as_bytes(), keep_alive, false).await
        }
        "/api/stream" if get => write_stream(stream, head, keep_alive, head_only).await,
        _ if get && path.starts_with("/api/status/") => {
            match path["/api/status/".len()..].parse::<u16>() {
                Ok(code) if (200..=599).contains(&code) => {
                    let reply = json!({ "status": code, "reason": reason_phrase(code) });
                    write_simple(
                        stream,
                        code,
                        reply.to_string().as_bytes(),
                        keep_alive,
                        head_only,
                    )
                    .await
                }
                _ => {
                    let reply = detail("status code must be a number between 200 and 599");
                    write_simple(stream, 400, &reply, keep_alive, head_only).await
                }
            }
        }
        _ => write_simple(stream, 404, &detail("Not Found"), keep_alive, head_only).await,
    }
}

/// `GET /api/stream`: five chunks `chunk-0\n` .. `chunk-4\n` with small delays in between.
async fn write_stream(
    stream: &mut TcpStream,
    head: &Head,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    // HTTP/1.0 has no chunked encoding: stream until close instead.
    let chunked = head.version >= 1;
    let mut out = String::from("HTTP/1.1 200 OK\r\nserver: wsnorm-demo-backend\r\n");
    out.push_str("content-type: text/plain\r\n");
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    }
    if !keep_alive || !chunked {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await?;
    if head_only {
        return Ok(());
    }
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(STREAM_CHUNK_DELAY).await;
        }
        let data = format!("chunk-{i}\n");
        let frame = if chunked {
            format!("{:x}\r\n{data}\r\n", data.len())
        } else {
            data
        };
        stream.write_all(frame.as_bytes()).await?;
        stream.flush().await?;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    } else {
        stream.shutdown().await?;
    }
    stream.flush().await
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

/// Whether `path` (without query) is one of the backend's WebSocket endpoints.
pub fn is_ws_path(path: &str) -> bool {
    path == "/ws" || path.starts_with("/ws/") || path == "/api/v1/websocket"
}

/// A stream that first yields already-buffered bytes (the request head read by the HTTP
/// dispatcher), then reads from the inner stream.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the backend recorded about a WebSocket handshake request.
#[derive(Debug, Clone, Default)]
struct HandshakeInfo {
    /// Request path including the query string.
    path: String,
    /// Raw `Sec-WebSocket-Protocol` value(s), joined with ", " if the header was repeated.
    offered_subprotocols: String,
    has_subprotocol_header: bool,
    has_authorization: bool,
    token: Option<String>,
}

const TOKEN_PROTOCOL_PREFIXES: [&str; 4] = ["jwt.", "jwt-auth.", "bearer.", "staging-auth."];
const MIN_TOKEN_LEN: usize = 10;

impl HandshakeInfo {
    fn from_request(req: &Request) -> Self {
        let path = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned());
        let protocols: Vec<String> = req
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());

        // Token extraction order of the real backend: Authorization: Bearer, then subprotocols.
        let bearer = authorization.as_deref().and_then(|auth| {
            let (scheme, rest) = auth.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
        let from_protocol = || {
            protocols
                .iter()
                .flat_map(|h| h.split(','))
                .map(str::trim)
                .find_map(|p| {
                    TOKEN_PROTOCOL_PREFIXES
                        .iter()
                        .find_map(|prefix| p.strip_prefix(prefix))
                        .map(str::to_owned)
                })
        };
        let token = bearer
            .filter(|t| !t.is_empty())
            .or_else(from_protocol)
            .filter(|t| t.len() >= MIN_TOKEN_LEN);

        HandshakeInfo {
            path,
            offered_subprotocols: protocols.join(", "),
            has_subprotocol_header: !protocols.is_empty(),
            has_authorization: authorization.is_some(),
            token,
        }
    }

    /// The backend's decision: `Err((status, detail))` refuses the handshake.
    fn decide(&self) -> Result<(), (u16, &'static str)> {
        let path = self.path.split('?').next().unwrap_or("");
        if path == "/ws/fail500" {
            return Err((500, "boom"));
        }
        if self.token.is_none() {
            return Err((403, "missing or invalid token"));
        }
        Ok(())
    }
}

fn refusal(status: u16, detail_text: &str) -> ErrorResponse {
    let body = json!({ "detail": detail_text }).to_string();
    let len = body.len();
    let mut resp = http::Response::new(Some(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn now_unix() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

/// `datetime.utcnow().isoformat()`: naive UTC with six fraction digits.
fn now_naive_iso() -> String {
    chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

enum Flow {
    Continue,
    /// The backend sent a close frame; wait for the peer's reply.
    Closing,
}

async fn handle_websocket<S>(stream: S, shared: &Shared) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut info = HandshakeInfo::default();
    // The Err type is dictated by tungstenite's Callback trait.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, response: Response| -> Result<Response, ErrorResponse> {
        info = HandshakeInfo::from_request(req);
        match info.decide() {
            // The response tungstenite prepared carries no Sec-WebSocket-Protocol and no
            // extensions; the real backend sends none either, and neither do we.
            Ok(()) => Ok(response),
            Err((status, text)) => Err(refusal(status, text)),
        }
    };
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_SIZE));
    let mut ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
        {
            Ok(ws) => ws,
            Err(err) => {
                if shared.verbose {
                    match info.decide() {
                        Err((status, text)) if !info.path.is_empty() => println!(
                            "backend refused WebSocket handshake on {}: HTTP {status} {text}",
                            info.path
                        ),
                        _ => println!("backend WebSocket handshake failed: {err}"),
                    }
                }
                return Ok(());
            }
        };

    let n = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let conn_id = format!("c{n}");
    if shared.verbose {
        println!(
            "backend accepted {conn_id} on {} (offered subprotocols: {}, authorization header: {}; negotiated subprotocol: none)",
            info.path,
            if info.has_subprotocol_header {
                format!("{:?}", info.offered_subprotocols)
            } else {
                "none".to_owned()
            },
            if info.has_authorization { "yes" } else { "no" },
        );
    }
    let data = Obj::new()
        .field("connection_id", conn_id.as_str())
        .field("path", info.path.as_str())
        .field("offered_subprotocols", info.offered_subprotocols.as_str())
        .field("authorization", info.has_authorization)
        .field("timestamp", now_naive_iso())
        .build();
    let established = Obj::new()
        .field("type", "connection_established")
        .raw("data", &data)
        .field("timestamp", now_unix())
        .build();
    ws.send(Message::text(established)).await?;

    let mut closing_deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match closing_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if shared.verbose {
                        println!("backend {conn_id}: peer did not answer the close, dropping");
                    }
                    break;
                }
            },
            None => ws.next().await,
        };
        let msg = match next {
            None => break,
            Some(Ok(msg)) => msg,
            Some(Err(err)) => {
                if shared.verbose {
                    println!("backend {conn_id}: connection error: {err}");
                }
                break;
            }
        };
        match msg {
            Message::Text(text) => {
                if shared.verbose {
                    println!("backend received: {}", text.as_str());
                }
                if closing_deadline.is_some() {
                    continue;
                }
                if let Flow::Closing = handle_text(&mut ws, text, &conn_id, shared).await? {
                    closing_deadline = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                }
            }
            Message::Binary(data) => {
                if shared.verbose {
                    println!("backend received: <binary, {} bytes>", data.len());
                }
                if closing_deadline.is_none() {
                    ws.send(Message::Binary(data)).await?;
                }
            }
            Message::Close(frame) => {
                if shared.verbose {
                    match (&frame, closing_deadline.is_some()) {
                        (_, true) => println!("backend {conn_id}: close handshake completed"),
                        (Some(f), false) => println!(
                            "backend {conn_id}: closed by client: {} {}",
                            u16::from(f.code),
                            f.reason.as_str()
                        ),
                        (None, false) => println!("backend {conn_id}: closed by client (no code)"),
                    }
                }
                // tungstenite answers the close frame itself; the stream then ends.
            }
            // Pings are answered by tungstenite; pongs and raw frames need nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}

/// JSON object text with the fields in insertion order, like the real backend writes them
/// (`type` first). serde_json's own map sorts keys unless `preserve_order` is enabled.
struct Obj(String);

impl Obj {
    fn new() -> Self {
        Obj(String::from("{"))
    }

    fn field(self, key: &str, value: impl Into<Value>) -> Self {
        let text = value.into().to_string();
        self.raw(key, &text)
    }

    /// Add a field whose value is already JSON text.
    fn raw(mut self, key: &str, json_text: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&Value::from(key).to_string());
        self.0.push(':');
        self.0.push_str(json_text);
        self
    }

    fn build(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

async fn send_text<S>(ws: &mut WebSocketStream<S>, text: String) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await?;
    Ok(())
}

fn error_message(code: &str, message: &str) -> String {
    Obj::new()
        .field("type", "error_message")
        .field("error_code", code)
        .field("error_message", message)
        .raw("details", "{}")
        .field("timestamp", now_unix())
        .build()
}

async fn close_with<S>(
    ws: &mut WebSocketStream<S>,
    code: u16,
    reason: &str,
    conn_id: &str,
    shared: &Shared,
) -> anyhow::Result<Flow>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Close reasons are limited to 123 bytes; cut at a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    if shared.verbose {
        println!("backend {conn_id}: closing with {code} {reason}");
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    }))
    .await?;
    Ok(Flow::Closing)
}

/// Whether a `timestamp` value fails the backend's `float | None` validation.
fn invalid_timestamp(value: Option<&Value>) -> bool {
    matches!(value, Some(v) if !v.is_number() && !v.is_null())
}

async fn handle_text<S>(
    ws: &mut WebSocketStream<S>,
    text: Utf8Bytes,
    conn_id: &str,
    shared: &Shared,
) -> anyhow::Result<Flow>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let value: Value = match serde_json::from_str(text.as_str()) {
        Ok(value) => value,
        Err(err) => {
            let msg = error_message("INVALID_JSON", &format!("Invalid JSON: {err}"));
            send_text(ws, msg).await?;
            return Ok(Flow::Continue);
        }
    };
    let Value::Object(obj) = value else {
        let msg = error_message("VALIDATION_ERROR", "Input should be a valid dictionary");
        send_text(ws, msg).await?;
        return Ok(Flow::Continue);
    };

    let received = Obj::new()
        .field("type", "received")
        .field("raw", text.as_str())
        .build();
    send_text(ws, received).await?;

    let explicit_payload = obj.get("payload").and_then(Value::as_object);
    if invalid_timestamp(obj.get("timestamp"))
        || invalid_timestamp(explicit_payload.and_then(|p| p.get("timestamp")))
    {
        let msg = Obj::new()
            .field("type", "error_message")
            .field("error_code", "VALIDATION_ERROR")
            .field("error_message", "timestamp: Input should be a valid number")
            .field("timestamp", now_unix())
            .build();
        send_text(ws, msg).await?;
        return close_with(ws, 1011, "validation error", conn_id, shared).await;
    }

    // Flat messages (no payload object): the whole message is the payload.
    let payload: &Map<String, Value> = explicit_payload.unwrap_or(&obj);
    let Some(msg_type) = obj.get("type").and_then(Value::as_str) else {
        send_text(
            ws,
            error_message("VALIDATION_ERROR", "type: Field required"),
        )
        .await?;
        return Ok(Flow::Continue);
    };

    match msg_type {
        "execute_agent" | "EXECUTE_AGENT" => {
            // The incident: the legacy type map lacked execute_agent, so it was dropped.
            if shared.verbose {
                println!("backend dropped unknown type {msg_type}");
            }
        }
        "start_agent" => {
            send_text(ws, ack(msg_type)).await?;
            let run_id = payload.get("run_id").cloned().unwrap_or(Value::Null);
            let data = Obj::new()
                .field("run_id", run_id)
                .field("agent_name", "triage")
                .build();
            let started = Obj::new()
                .field("type", "agent_started")
                .raw("data", &data)
                .field("timestamp", now_naive_iso())
                .field("critical", true)
                .build();
            send_text(ws, started).await?;
        }
        "ping" => {
            let pong = Obj::new()
                .field("type", "pong")
                .field("timestamp", now_unix())
                .build();
            send_text(ws, pong).await?;
        }
        "close_with" => {
            let code = payload
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(1000);
            let reason = payload.get("reason").and_then(Value::as_str).unwrap_or("");
            return close_with(ws, code, reason, conn_id, shared).await;
        }
        "send_big" => {
            let size = payload
                .get("bytes")
                .and_then(Value::as_u64)
                .map(|b| usize::try_from(b).unwrap_or(MAX_SEND_BIG).min(MAX_SEND_BIG))
                .unwrap_or(0);
            ws.send(Message::text(big_message(size))).await?;
        }
        "echo" => ws.send(Message::Text(text)).await?,
        other => send_text(ws, ack(other)).await?,
    }
    Ok(Flow::Continue)
}

fn ack(received_type: &str) -> String {
    Obj::new()
        .field("type", "ack")
        .field("received_type", received_type)
        .field("timestamp", now_unix())
        .field("status", "acknowledged")
        .build()
}

/// A JSON object of exactly `size` bytes (or the smallest possible one if `size` is smaller).
fn big_message(size: usize) -> String {
    const PREFIX: &str = r#"{"type":"big","data":""#;
    const SUFFIX: &str = r#""}"#;
    let pad = size.saturating_sub(PREFIX.len() + SUFFIX.len());
    let mut out = String::with_capacity(PREFIX.len() + pad + SUFFIX.len());
    out.push_str(PREFIX);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str(SUFFIX);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::error::{
        Error as WsError, ProtocolError, SubProtocolError,
    };
    use tokio_tungstenite::MaybeTlsStream;

    type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln";

    async fn start() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, BackendOptions { verbose: false }));
        addr
    }

    fn request(
        addr: std::net::SocketAddr,
        path: &str,
        token: Option<&str>,
        protocol: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        req
    }

    async fn connect(addr: std::net::SocketAddr) -> Client {
        let (mut ws, resp) =
            tokio_tungstenite::connect_async(request(addr, "/ws?mode=main", Some(TOKEN), None))
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "connection_established");
        ws
    }

    async fn next_msg(ws: &mut Client) -> Message {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error")
    }

    async fn next_json(ws: &mut Client) -> Value {
        match next_msg(ws).await {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Send a raw HTTP request and read until the server closes the connection.
    async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Read one complete response with Content-Length from a keep-alive connection.
    async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, String) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
                let status = resp.code.unwrap();
                let cl: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap_or(0);
                let head = String::from_utf8(buf[..len].to_vec()).unwrap();
                if buf.len() >= len + cl {
                    let body = String::from_utf8(buf[len..len + cl].to_vec()).unwrap();
                    buf.drain(..len + cl);
                    return (status, head, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn upgrade_request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    #[tokio::test]
    async fn refuses_without_token_with_403_and_body() {
        let addr = start().await;
        match tokio_tungstenite::connect_async(request(addr, "/ws", None, Some("agent_chat"))).await
        {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!("expected HTTP 403, got {other:?}"),
        }
        let raw = raw_http(
            addr,
            &upgrade_request("/ws", "Sec-WebSocket-Protocol: agent_chat\r\n"),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
        assert!(
            raw.ends_with(r#"{"detail":"missing or invalid token"}"#),
            "{raw}"
        );
        // A too-short token is refused as well.
        match tokio_tungstenite::connect_async(request(addr, "/ws", Some("short"), None)).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!("expected HTTP 403, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn fail500_and_unknown_path() {
        let addr = start().await;
        let raw = raw_http(
            addr,
            &upgrade_request("/ws/fail500", "Authorization: Bearer 0123456789abc\r\n"),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 500"), "{raw}");
        assert!(raw.ends_with(r#"{"detail":"boom"}"#), "{raw}");
        let raw = raw_http(
            addr,
            &upgrade_request("/nope", "Authorization: Bearer 0123456789abc\r\n"),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    }

    #[tokio::test]
    async fn accepts_bearer_without_negotiating_a_subprotocol() {
        let addr = start().await;
        // Happy path with a tungstenite client that offers no subprotocol.
        let (mut ws, resp) =
            tokio_tungstenite::connect_async(request(addr, "/ws?mode=main", Some(TOKEN), None))
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        assert!(resp.headers().get("sec-websocket-protocol").is_none());
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "connection_established");
        assert_eq!(hello["data"]["connection_id"], "c1");
        assert_eq!(hello["data"]["path"], "/ws?mode=main");
        assert_eq!(hello["data"]["offered_subprotocols"], "");
        assert_eq!(hello["data"]["authorization"], true);
        assert!(hello["timestamp"].is_f64());
        let iso = hello["data"]["timestamp"].as_str().unwrap();
        assert!(chrono::NaiveDateTime::parse_from_str(iso, "%Y-%m-%dT%H:%M:%S%.6f").is_ok());
        assert_eq!(iso.len(), 26, "{iso}");

        // Offering agent_chat (and permessage-deflate): still a 101 without a subprotocol or
        // extension header. Checked on the raw response, since tungstenite clients fail here.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = upgrade_request(
            "/api/v1/websocket",
            "Authorization: Bearer 0123456789abc\r\nSec-WebSocket-Protocol: agent_chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head = loop {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break String::from_utf8(buf[..pos].to_vec())
                    .unwrap()
                    .to_ascii_lowercase();
            }
        };
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(!head.contains("sec-websocket-protocol"), "{head}");
        assert!(!head.contains("sec-websocket-extensions"), "{head}");
    }

    #[tokio::test]
    async fn token_from_subprotocol_is_accepted() {
        let addr = start().await;
        // Offered token-bearing subprotocol: accepted, but none is echoed, so the client fails.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = upgrade_request(
            "/ws/factory",
            "Sec-WebSocket-Protocol: jwt-auth, jwt.eyJhbGciOiJIUzI1NiJ9\r\n",
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.unwrap();
        let head = String::from_utf8_lossy(&chunk[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }

    #[tokio::test]
    async fn tungstenite_client_offering_agent_chat_fails_directly() {
        let addr = start().await;
        let result =
            tokio_tungstenite::connect_async(request(addr, "/ws", Some(TOKEN), Some("agent_chat")))
                .await;
        match result {
            Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            ))) => {}
            other => panic!("expected NoSubProtocol error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn iso_timestamp_closes_with_1011() {
        let addr = start().await;
        let mut ws = connect(addr).await;
        let incident = r#"{"type":"start_agent","payload":{"user_request":"why is p99 up?"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#;
        ws.send(Message::text(incident)).await.unwrap();
        let received = next_json(&mut ws).await;
        assert_eq!(received["type"], "received");
        assert_eq!(received["raw"], incident);
        let err = next_json(&mut ws).await;
        assert_eq!(err["type"], "error_message");
        assert_eq!(err["error_code"], "VALIDATION_ERROR");
        assert_eq!(
            err["error_message"],
            "timestamp: Input should be a valid number"
        );
        match next_msg(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Error);
                assert_eq!(frame.reason.as_str(), "validation error");
            }
            other => panic!("expected close, got {other:?}"),
        }
        // The close handshake completes and the stream ends.
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(end.is_none(), "{end:?}");
    }

    #[tokio::test]
    async fn payload_timestamp_string_also_fails_but_numbers_and_null_pass() {
        let addr = start().await;
        let mut ws = connect(addr).await;
        ws.send(Message::text(
            r#"{"type":"ping","timestamp":1757350201447}"#,
        ))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        assert_eq!(next_json(&mut ws).await["type"], "pong");
        ws.send(Message::text(r#"{"type":"ping","timestamp":null}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        assert_eq!(next_json(&mut ws).await["type"], "pong");
        ws.send(Message::text(
            r#"{"type":"user_message","payload":{"timestamp":"2025-09-08T16:50:01Z"}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        assert_eq!(next_json(&mut ws).await["error_code"], "VALIDATION_ERROR");
        assert!(
            matches!(next_msg(&mut ws).await, Message::Close(Some(f)) if f.code == CloseCode::Error)
        );
    }

    #[tokio::test]
    async fn execute_agent_is_silently_dropped() {
        let addr = start().await;
        let mut ws = connect(addr).await;
        let msg = r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":1757350201.447585,"message_id":"m1"}"#;
        ws.send(Message::text(msg)).await.unwrap();
        let received = next_json(&mut ws).await;
        assert_eq!(received["type"], "received");
        assert_eq!(received["raw"], msg);
        let silence = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
        assert!(silence.is_err(), "expected nothing, got {silence:?}");
        // The connection is still usable.
        ws.send(Message::text(r#"{"type":"EXECUTE_AGENT"}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        assert_eq!(next_json(&mut ws).await["type"], "pong");
    }

    #[tokio::test]
    async fn start_agent_is_acked_and_started() {
        let addr = start().await;
        let mut ws = connect(addr).await;
        let msg = r#"{"type":"start_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":1757350201.447585,"message_id":"m1"}"#;
        ws.send(Message::text(msg)).await.unwrap();
        assert_eq!(next_json(&mut ws).await["raw"], msg);
        let ack = next_json(&mut ws).await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["received_type"], "start_agent");
        assert_eq!(ack["status"], "acknowledged");
        assert!(ack["timestamp"].is_f64());
        let started = next_json(&mut ws).await;
        assert_eq!(started["type"], "agent_started");
        assert_eq!(started["data"]["run_id"], "r1");
        assert_eq!(started["data"]["agent_name"], "triage");
        assert_eq!(started["critical"], true);
        assert!(started["timestamp"].is_string());

        // Unknown types are acked; invalid JSON gets an error but no close.
        ws.send(Message::text(r#"{"type":"chat_message","content":"hi"}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        assert_eq!(next_json(&mut ws).await["received_type"], "chat_message");
        ws.send(Message::text("not json")).await.unwrap();
        let err = next_json(&mut ws).await;
        assert_eq!(err["error_code"], "INVALID_JSON");
        ws.send(Message::text(r#"{"type":"echo","x":[1, 2]}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        match next_msg(&mut ws).await {
            Message::Text(t) => assert_eq!(t.as_str(), r#"{"type":"echo","x":[1, 2]}"#),
            other => panic!("{other:?}"),
        }
        ws.close(None).await.unwrap();
    }

    #[tokio::test]
    async fn binary_is_echoed_and_test_hooks_work() {
        let addr = start().await;
        let mut ws = connect(addr).await;
        let data: Vec<u8> = (0..=255u8).collect();
        ws.send(Message::binary(data.clone())).await.unwrap();
        match next_msg(&mut ws).await {
            Message::Binary(b) => assert_eq!(b.as_ref(), data.as_slice()),
            other => panic!("expected binary, got {other:?}"),
        }
        ws.send(Message::text(
            r#"{"type":"send_big","payload":{"bytes":100000}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        match next_msg(&mut ws).await {
            Message::Text(t) => {
                assert_eq!(t.len(), 100_000);
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["type"], "big");
            }
            other => panic!("{other:?}"),
        }
        ws.send(Message::text(
            r#"{"type":"close_with","payload":{"code":4001,"reason":"bye"}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "received");
        match next_msg(&mut ws).await {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4001);
                assert_eq!(f.reason.as_str(), "bye");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn plain_http_health_echo_status_and_keep_alive() {
        let addr = start().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, _, body) = read_response(&mut s, &mut buf).await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"status":"ok"}"#);

        // Same connection: POST with Content-Length.
        s.write_all(
            b"POST /api/echo?a=1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .unwrap();
        let (status, _, body) = read_response(&mut s, &mut buf).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/api/echo?a=1");
        assert_eq!(v["headers"]["x-forwarded-for"], "10.1.2.3");
        assert_eq!(v["body"], "hello");

        // Chunked request body, pipelined with a status request.
        s.write_all(
            b"PUT /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n\
              GET /api/status/503 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        let (status, _, body) = read_response(&mut s, &mut buf).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["body"], "abcdefg");
        let (status, _, _) = read_response(&mut s, &mut buf).await;
        assert_eq!(status, 503);

        s.write_all(b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (status, head, _) = read_response(&mut s, &mut buf).await;
        assert_eq!(status, 404);
        assert!(head.to_ascii_lowercase().contains("connection: close"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn plain_http_stream_is_chunked() {
        let addr = start().await;
        let raw = raw_http(
            addr,
            "GET /api/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let lower = raw.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200"), "{raw}");
        assert!(lower.contains("transfer-encoding: chunked"), "{raw}");
        let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
        let expected: String = (0..5)
            .map(|i| format!("8\r\nchunk-{i}\n\r\n"))
            .collect::<String>()
            + "0\r\n\r\n";
        assert_eq!(body, expected);
    }

    #[test]
    fn big_message_has_exact_size() {
        for size in [24, 25, 1000, 65536] {
            assert_eq!(big_message(size).len(), size);
        }
        assert_eq!(big_message(0).len(), 24);
    }
}
