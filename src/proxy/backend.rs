//! The backend side of a WebSocket upgrade: dial the configured backend, send the handshake,
//! read its answer. Done before the client gets its 101, so a refusal reaches the client as the
//! backend's own status and body.
//!
//! tungstenite's client handshake is strict in a way that does not fit a proxy (a backend that
//! does not echo an offered subprotocol is an error there, but old backends do exactly that), so
//! the request is written here and the answer parsed with httparse; the accept key comes from
//! tungstenite.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::extensions::{self, Agreed, DeflateOffer};
use crate::config::Address;
use crate::headers::{OutgoingHeaders, OwnedHeaders};

/// Largest backend response head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest refusal body relayed to the client; the rest is cut.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Why the backend handshake did not produce a WebSocket.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached: answer 502.
    #[error("cannot connect to backend {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Connect plus handshake took longer than the handshake timeout: answer 504.
    #[error("backend handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The backend answered with a non-101 status: relay it to the client as it is.
    #[error("backend refused the upgrade with HTTP {}", .0.status)]
    Refused(BackendRefusal),
    /// The backend's answer is not a valid WebSocket handshake response: answer 502.
    #[error("backend answered something that is not a WebSocket handshake: {0}")]
    BadResponse(String),
}

/// A backend's non-101 answer, relayed to the client as it is.
#[derive(Debug)]
pub struct BackendRefusal {
    pub status: u16,
    /// Its end-to-end headers (`Location`, `Retry-After`, `Set-Cookie`, `Content-Type`, ...).
    pub headers: OutgoingHeaders,
    pub body: Vec<u8>,
}

/// Response headers that describe one hop or the handshake, not the refusal: they are not
/// relayed (wsnorm writes its own framing for the client).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// What goes into the backend handshake request.
pub struct HandshakeRequest<'a> {
    pub path_and_query: &'a http::uri::PathAndQuery,
    /// End-to-end headers to pass on, already filtered; `Sec-WebSocket-*` and the upgrade
    /// headers are added here.
    pub headers: &'a OutgoingHeaders,
    pub subprotocols: &'a [String],
    /// The permessage-deflate offer (and so what the answer may say).
    pub deflate: Option<DeflateOffer>,
}

/// An established backend WebSocket, before any frame was read.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    /// Bytes the backend sent right after its 101 (already frames).
    pub leftover: Vec<u8>,
    pub protocol: Option<String>,
    /// permessage-deflate as the backend accepted it.
    pub deflate: Option<Agreed>,
    /// How long the TCP connect took, apart from the handshake.
    pub connect_time: Duration,
}

/// Connects and performs the handshake within `timeout`.
pub async fn handshake(
    backend: &Address,
    req: &HandshakeRequest<'_>,
    timeout: Duration,
) -> Result<Connected, BackendError> {
    tokio::time::timeout(timeout, handshake_inner(backend, req))
        .await
        .unwrap_or(Err(BackendError::Timeout(timeout)))
}

async fn handshake_inner(
    backend: &Address,
    req: &HandshakeRequest<'_>,
) -> Result<Connected, BackendError> {
    let addr = backend.to_string();
    let connecting = std::time::Instant::now();
    // The address resolved when the config was read: no name lookup per connection.
    let mut stream =
        TcpStream::connect(backend.socket)
            .await
            .map_err(|source| BackendError::Connect {
                addr: addr.clone(),
                source,
            })?;
    let connect_time = connecting.elapsed();
    // Small messages are the norm; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let key = generate_key();
    let head = request_head(req, &key)
        .map_err(|e| BackendError::BadResponse(format!("building the handshake: {e}")))?;
    stream
        .write_all(&head)
        .await
        .map_err(|e| BackendError::BadResponse(format!("writing the handshake: {e}")))?;

    let mut buf = Vec::with_capacity(1024);
    let (head_len, response) = 'read: loop {
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| BackendError::BadResponse(format!("reading the response: {e}")))?;
        if n == 0 {
            return Err(BackendError::BadResponse(
                "connection closed before a complete response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((len, head)) = parse_head(&buf)? {
            // Interim answers (100, 102, 103 Early Hints) come before the final one: skip them.
            if head.status == 101 || !(100..200).contains(&head.status) {
                break 'read (len, head);
            }
            buf.drain(..len);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(BackendError::BadResponse(format!(
                "response head larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
    };
    let leftover = buf.split_off(head_len);

    if response.status != 101 {
        let body = read_refusal_body(&mut stream, &response, leftover).await;
        return Err(BackendError::Refused(BackendRefusal {
            status: response.status,
            headers: end_to_end(&response.headers),
            body,
        }));
    }
    let (protocol, deflate) = verify_switch(&response, &key, req)?;
    Ok(Connected {
        stream,
        leftover,
        protocol,
        deflate,
        connect_time,
    })
}

fn request_head(
    req: &HandshakeRequest<'_>,
    key: &str,
) -> Result<Vec<u8>, crate::headers::InvalidHeader> {
    let mut headers = req.headers.clone();
    headers.push("Connection", "Upgrade")?;
    headers.push("Upgrade", "websocket")?;
    headers.push("Sec-WebSocket-Version", "13")?;
    headers.push("Sec-WebSocket-Key", key)?;
    if !req.subprotocols.is_empty() {
        headers.push("Sec-WebSocket-Protocol", req.subprotocols.join(", "))?;
    }
    if let Some(offer) = &req.deflate {
        headers.push("Sec-WebSocket-Extensions", offer.header())?;
    }
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(req.path_and_query.as_str().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    headers.write_to(&mut head);
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// The headers of a refusal worth relaying: all but hop-by-hop ones and those the backend's
/// `Connection` header names. A value that is not valid HTTP is left out.
fn end_to_end(headers: &OwnedHeaders) -> OutgoingHeaders {
    let named: Vec<String> = headers.tokens("connection").collect();
    let mut out = OutgoingHeaders::default();
    for (name, value) in headers.iter() {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        // httparse has checked both already; a value `http` refuses is dropped, not relayed.
        let _ = out.push(name, value);
    }
    out
}

/// A parsed response head with owned headers.
struct ResponseHead {
    status: u16,
    headers: OwnedHeaders,
}

fn parse_head(buf: &[u8]) -> Result<Option<(usize, ResponseHead)>, BackendError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp
                .code
                .ok_or_else(|| BackendError::BadResponse("no status code".into()))?;
            let headers = OwnedHeaders::from_httparse(resp.headers);
            Ok(Some((len, ResponseHead { status, headers })))
        }
        Err(e) => Err(BackendError::BadResponse(format!("not HTTP: {e}"))),
    }
}

/// Checks a 101 answer against RFC 6455 §4.1 (and RFC 7692 for permessage-deflate) and returns
/// the backend's subprotocol and compression, if any. A backend that selects none of several
/// offered protocols is accepted: old backends do that.
fn verify_switch(
    resp: &ResponseHead,
    key: &str,
    req: &HandshakeRequest<'_>,
) -> Result<(Option<String>, Option<Agreed>), BackendError> {
    if !resp.headers.has_token("upgrade", "websocket") {
        return Err(BackendError::BadResponse(
            "101 without `Upgrade: websocket`".into(),
        ));
    }
    if !resp.headers.has_token("connection", "upgrade") {
        return Err(BackendError::BadResponse(
            "101 without `Connection: Upgrade`".into(),
        ));
    }
    let expected = derive_accept_key(key.as_bytes());
    if resp.headers.get("sec-websocket-accept") != Some(expected.as_bytes()) {
        return Err(BackendError::BadResponse(
            "wrong or missing Sec-WebSocket-Accept".into(),
        ));
    }
    let answered: Vec<String> = resp
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect();
    let deflate =
        extensions::check_backend_answer(answered.iter().map(String::as_str), req.deflate.as_ref())
            .map_err(BackendError::BadResponse)?;
    let protocol = match resp.headers.get("sec-websocket-protocol") {
        None => None,
        Some(p) => {
            let p = String::from_utf8_lossy(p).trim().to_string();
            if req.subprotocols.contains(&p) {
                Some(p)
            } else {
                // Do not echo the value: it may carry a token.
                return Err(BackendError::BadResponse(
                    "backend selected a subprotocol that was not offered".into(),
                ));
            }
        }
    };
    Ok((protocol, deflate))
}

/// Reads the body of a refusal (Content-Length, chunked, or up to close), bounded in size and
/// time; a body that cannot be read completely is relayed as far as it came.
async fn read_refusal_body(
    stream: &mut TcpStream,
    resp: &ResponseHead,
    mut body: Vec<u8>,
) -> Vec<u8> {
    let chunked = resp.headers.has_token("transfer-encoding", "chunked");
    let length = resp
        .headers
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let done = |b: &[u8]| match (chunked, length) {
        (true, _) => b.windows(5).any(|w| w == b"0\r\n\r\n"),
        (false, Some(n)) => b.len() >= n,
        (false, None) => false,
    };
    let read = async {
        let mut chunk = [0u8; 4096];
        while !done(&body) && body.len() < MAX_REFUSAL_BODY {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    // The handshake timeout bounds the whole exchange; this bounds a body that never ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    if chunked {
        body = dechunk(&body);
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    body.truncate(MAX_REFUSAL_BODY);
    body
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap_or("");
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        let data = &raw[line_end + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        raw = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_joins_chunks_and_stops_at_the_last() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"),
            b"Wikipedia"
        );
        assert_eq!(dechunk(b"4\r\nWi"), b"Wi");
        assert_eq!(dechunk(b"zz\r\n"), b"");
    }

    #[test]
    fn a_101_is_checked_against_the_key_and_the_offer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = |extra: &str| {
            let text = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
            );
            parse_head(text.as_bytes()).unwrap().unwrap().1
        };
        let offered = vec!["agent_chat".to_string()];
        let path = http::uri::PathAndQuery::from_static("/ws");
        let headers = OutgoingHeaders::default();
        let compression = crate::config::CompressionConfig::default();
        let req = HandshakeRequest {
            path_and_query: &path,
            headers: &headers,
            subprotocols: &offered,
            deflate: extensions::backend_offer(&compression, None),
        };
        let check = |extra: &str, key: &str| verify_switch(&head(extra), key, &req);
        assert_eq!(check("", key).unwrap(), (None, None));
        assert_eq!(
            check("Sec-WebSocket-Protocol: agent_chat\r\n", key)
                .unwrap()
                .0,
            Some("agent_chat".into())
        );
        assert!(check("Sec-WebSocket-Protocol: other\r\n", key).is_err());
        let deflate = check(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            key,
        )
        .unwrap();
        assert!(deflate.1.is_some());
        // The offer asked for server_no_context_takeover (the default): an answer without it fails.
        assert!(check("Sec-WebSocket-Extensions: permessage-deflate\r\n", key).is_err());
        assert!(check("Sec-WebSocket-Extensions: x-custom\r\n", key).is_err());
        assert!(check(
            "Sec-WebSocket-Extensions: permessage-deflate; mystery\r\n",
            key
        )
        .is_err());
        // Nothing offered: any extension fails.
        let req = HandshakeRequest {
            deflate: None,
            ..req
        };
        assert!(verify_switch(
            &head("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            key,
            &req
        )
        .is_err());
        assert!(check("", "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }

    #[test]
    fn garbage_is_not_http() {
        assert!(matches!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(BackendError::BadResponse(_))
        ));
        assert!(parse_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
    }
}
