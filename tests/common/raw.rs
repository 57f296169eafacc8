//! Raw sockets for tests that must send what no WebSocket library would: frames byte by byte,
//! upgrade requests by hand, HTTP exchanges read as they come.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TOKEN;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// One WebSocket frame as bytes on the wire; `rsv` is the three RSV bits (0..=7).
pub fn frame_bytes(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_bytes(true, 0, opcode, true, payload)
}

#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    /// The three RSV bits (RSV1 = 4: a compressed message's first frame).
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Parses one frame from the start of `buf`: the frame and the bytes it used.
pub fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let mut payload = buf.get(pos..pos + len)?.to_vec();
    if let Some(k) = key {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= k[i % 4]);
    }
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        rsv: (buf[0] >> 4) & 7,
        opcode: buf[0] & 0x0f,
        masked,
        payload,
    };
    Some((frame, pos + len))
}

/// A WebSocket client at the TCP level: it sends whatever bytes a test wants and reads frames
/// without answering anything.
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

pub fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: agent_chat\r\nAuthorization: Bearer {TOKEN}\r\n{extra_headers}\r\n"
    )
}

impl RawWs {
    /// Completes the handshake on `path` (asserting the 101); bytes after the head are kept.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        Self::connect_with(addr, &upgrade_request(path, "")).await
    }

    pub async fn connect_with(addr: SocketAddr, request: &str) -> RawWs {
        let (ws, head) = Self::open(addr, request.as_bytes()).await;
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "{:?} got {head}",
            request.lines().next()
        );
        ws
    }

    /// Sends `bytes` (a request head, maybe followed by frames) and reads the response head,
    /// whatever its status; what follows the head stays buffered for `read_frame`.
    pub async fn open(addr: SocketAddr, bytes: &[u8]) -> (RawWs, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("handshake answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed during the handshake: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        (RawWs { stream, buf }, head)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The peer may already have closed on an earlier frame; that is for the reader to see.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or `None` once the connection is closed (FIN or RST).
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame within `limit`; `Err(())` on timeout.
    pub async fn read_frame_within(&mut self, limit: Duration) -> Result<Option<RawFrame>, ()> {
        tokio::time::timeout(limit, self.read_frame())
            .await
            .map_err(|_| ())
    }

    /// The next frame, which must be an unmasked text frame, within 5 s.
    pub async fn next_text(&mut self) -> String {
        let frame = self
            .read_frame_within(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
            .expect("a frame before close");
        assert_eq!(frame.opcode, OP_TEXT, "{frame:?}");
        assert!(!frame.masked, "server frames are never masked");
        String::from_utf8(frame.payload).unwrap()
    }

    /// Consumes the backend's greeting (the first text frame).
    pub async fn greeting(&mut self) -> String {
        let text = self.next_text().await;
        assert!(text.contains("connection_established"), "{text}");
        text
    }

    /// Reads until a close frame and returns its code and reason (`None`: closed without one,
    /// or nothing within 5 s). Other frames are skipped.
    pub async fn close_code(&mut self) -> Option<(u16, String)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(left).await {
                Ok(Some(f)) if f.opcode == OP_CLOSE => {
                    assert!(!f.masked, "server frames are never masked");
                    if f.payload.len() < 2 {
                        return Some((1005, String::new()));
                    }
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let reason = String::from_utf8_lossy(&f.payload[2..]).into_owned();
                    return Some((code, reason));
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(()) => return None,
            }
        }
    }
}

/// The status line of a raw HTTP response.
pub fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

/// Sends a raw request and reads the response head and up to `Content-Length` body bytes or
/// until close; 5 s at most.
pub async fn http_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no complete response within 5 s: {}",
                String::from_utf8_lossy(&out)
            ),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some(pos) = text.find("\r\n\r\n") {
            let length = text[..pos].lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|len| out.len() >= pos + 4 + len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Server side: reads up to the end of a request head (or EOF) and returns what was read.
pub async fn read_request_head(stream: &mut TcpStream) -> Vec<u8> {
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
