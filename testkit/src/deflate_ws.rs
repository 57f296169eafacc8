//! permessage-deflate (RFC 7692) over a small WebSocket frame path, for the load tool:
//! tungstenite refuses frames with RSV1 set, so compressed connections cannot go through it.
//!
//! * [`DeflateWs`] is the client: its handshake offers what browsers send ([`CLIENT_OFFER`]),
//!   fails unless the 101 accepts permessage-deflate, and the parameters of the answer (window
//!   bits, no context takeover) are honoured both ways. Text messages of at least
//!   [`MIN_COMPRESSED_BYTES`] go compressed (RSV1 set), shorter ones as they are.
//! * [`echo`] is the echo backend's side, a server like python `websockets` at its defaults: it
//!   accepts the first offer it can honour, inflates what it reads and compresses what it
//!   echoes (messages of at least [`MIN_COMPRESSED_BYTES`]) with its own stream.
//!
//! Deflate itself is wsnorm's own sans-IO compressor ([`wsnorm::relay::deflate`]), frame headers
//! are tungstenite's [`FrameHeader`] and the handshakes' HTTP heads are read with httparse.
//! Nothing here unwraps network input: every error says what was being done.

use std::io::Cursor;
use std::ops::Range;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::{generate_request, Request};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsnorm::proxy::extensions::{deflate_elements, Params};
use wsnorm::relay::deflate::{Deflater, Inflater, LegDeflate, Window};
use wsnorm::relay::{apply_mask, write_frame_rsv1};

/// What the client offers: what Chrome and Firefox send.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Text messages shorter than this go uncompressed (RSV1 clear), as wsnorm's default does.
pub const MIN_COMPRESSED_BYTES: usize = 32;
/// zlib's default level, what browsers and python `websockets` compress with.
const CLIENT_LEVEL: u32 = 6;
/// An HTTP head longer than this ends the handshake.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Read buffer per connection, as the tungstenite path of the load tool has.
const READ_BUFFER_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Negotiation

/// The echo's answer to `offer`, everything it asks honoured, and the windows that follow from
/// the server's side: how it compresses (`send`) and how the client does.
fn answer_to(offer: &Params) -> (String, LegDeflate) {
    // `client_max_window_bits` without a value only says the client supports it.
    let client_bits = offer.client_max_window_bits.flatten();
    let answer = Params {
        client_max_window_bits: client_bits.map(Some),
        ..offer.clone()
    };
    let windows = LegDeflate {
        send: Window {
            bits: offer.server_max_window_bits.unwrap_or(15),
            no_context_takeover: offer.server_no_context_takeover,
        },
        receive: Window {
            bits: client_bits.unwrap_or(15),
            no_context_takeover: offer.client_no_context_takeover,
        },
    };
    (answer.render(), windows)
}

/// The echo's answer to an offer (a `Sec-WebSocket-Extensions` value) and its windows, for the
/// first valid `permessage-deflate` element; `None` when there is none.
pub fn echo_answer(offer: &str) -> Option<(String, LegDeflate)> {
    deflate_elements([offer])
        .into_iter()
        .find_map(|offer| Some(answer_to(&offer?)))
}

/// Reads the server's answer to the client's offer (every `Sec-WebSocket-Extensions` value of the
/// 101, joined): exactly one `permessage-deflate`, with valid parameters (RFC 7692 §7.1). Its
/// windows: how the client compresses (`send`) and how the server does (`receive`).
pub fn read_answer(answer: Option<&str>) -> Result<LegDeflate> {
    let Some(answer) = answer else {
        bail!("permessage-deflate not negotiated: the 101 has no Sec-WebSocket-Extensions");
    };
    let params = match deflate_elements([answer]).as_mut_slice() {
        [Some(params)] => std::mem::take(params),
        _ => {
            bail!("the 101 answered something other than one valid permessage-deflate: `{answer}`")
        }
    };
    let client_bits = match params.client_max_window_bits {
        Some(Some(bits)) => bits,
        Some(None) => bail!("the 101 answered client_max_window_bits without a value"),
        None => 15,
    };
    Ok(LegDeflate {
        send: Window {
            bits: client_bits,
            no_context_takeover: params.client_no_context_takeover,
        },
        receive: Window {
            bits: params.server_max_window_bits.unwrap_or(15),
            no_context_takeover: params.server_no_context_takeover,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Frames

/// A frame read: its header and where its payload (unmasked) lies in the read buffer.
struct FrameRef {
    header: FrameHeader,
    payload: Range<usize>,
}

/// Frames over one stream. Reading parses in place and is cancel-safe (its only await is a read
/// into the buffer); what is written is queued and sent by `flush`, cancel-safe too (what was
/// written is remembered), and before waiting for input.
struct Frames<S> {
    io: S,
    read: Vec<u8>,
    /// Where the unread part of `read` starts; frames before it were returned.
    start: usize,
    write: Vec<u8>,
    written: usize,
    /// A client masks what it sends.
    role: Role,
    max_frame: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Frames<S> {
    fn new(io: S, read: Vec<u8>, role: Role, max_frame: usize) -> Self {
        Frames {
            io,
            read,
            start: 0,
            write: Vec::new(),
            written: 0,
            role,
            max_frame,
        }
    }

    /// Queues one frame; `payload`: bytes of its own, or a range of the read buffer (to send a
    /// frame read back).
    fn queue(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: Payload<'_>) {
        let data = match payload {
            Payload::Bytes(b) => b,
            Payload::Read(range) => &self.read[range],
        };
        write_frame_rsv1(&mut self.write, self.role, opcode, fin, rsv1, data);
    }

    async fn flush(&mut self) -> Result<()> {
        while self.written < self.write.len() {
            let n = self
                .io
                .write(&self.write[self.written..])
                .await
                .context("write failed")?;
            if n == 0 {
                bail!("write failed: connection closed");
            }
            self.written += n;
        }
        self.write.clear();
        self.written = 0;
        self.io.flush().await.context("write failed")
    }

    /// The next frame, its payload unmasked in place (valid until the next call). What is
    /// queued is sent before waiting for input.
    async fn next(&mut self) -> Result<FrameRef> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            self.flush().await?;
            if self.start > 0 {
                self.read.drain(..self.start);
                self.start = 0;
            }
            if self.read.capacity() - self.read.len() < READ_BUFFER_BYTES / 4 {
                self.read.reserve(READ_BUFFER_BYTES);
            }
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .context("read failed")?;
            if n == 0 {
                bail!("connection closed");
            }
        }
    }

    fn parse(&mut self) -> Result<Option<FrameRef>> {
        let mut cursor = Cursor::new(&self.read[self.start..]);
        let Some((header, len)) = FrameHeader::parse(&mut cursor).context("invalid frame")? else {
            return Ok(None);
        };
        let max = self.max_frame;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= max)
            .with_context(|| format!("a frame of {len} bytes, over the {max}-byte limit"))?;
        // The header is at most 14 bytes.
        let begin = self.start + cursor.position() as usize;
        let end = begin + len;
        if end > self.read.len() {
            self.read.reserve(end - self.read.len());
            return Ok(None);
        }
        if let Some(key) = header.mask {
            apply_mask(&mut self.read[begin..end], key);
        }
        self.start = end;
        Ok(Some(FrameRef {
            header,
            payload: begin..end,
        }))
    }

    fn payload(&self, frame: &FrameRef) -> &[u8] {
        &self.read[frame.payload.clone()]
    }

    /// Sends a close frame and waits for the peer's (or the end of the stream).
    async fn close(&mut self) -> Result<()> {
        self.queue(
            OpCode::Control(Control::Close),
            true,
            false,
            Payload::Bytes(&1000u16.to_be_bytes()),
        );
        self.flush().await?;
        loop {
            let frame = self.next().await?;
            if frame.header.opcode == OpCode::Control(Control::Close) {
                return Ok(());
            }
        }
    }
}

enum Payload<'a> {
    Bytes(&'a [u8]),
    Read(Range<usize>),
}

/// "code 1000 reason" of a close frame's payload.
fn describe_close(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!(
            "code {} {}",
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason)
        ),
        _ => "no code".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes

/// Reads an HTTP head into `buf` (which may hold more: the first frames); its length.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Result<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(at + 4);
        }
        if buf.len() > MAX_HEAD_BYTES {
            bail!("HTTP head over {MAX_HEAD_BYTES} bytes");
        }
        buf.reserve(READ_BUFFER_BYTES);
        if io.read_buf(buf).await.context("reading the HTTP head")? == 0 {
            bail!("connection closed during the handshake");
        }
    }
}

/// Every value of header `name`, joined with ", " (None when absent).
fn header(headers: &[httparse::Header<'_>], name: &str) -> Result<Option<String>> {
    let mut values = Vec::new();
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        values.push(std::str::from_utf8(h.value).with_context(|| format!("{name} is not text"))?);
    }
    Ok((!values.is_empty()).then(|| values.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// Client

/// A client connection with permessage-deflate negotiated.
pub struct DeflateWs<S> {
    frames: Frames<S>,
    deflater: Deflater,
    inflater: Inflater,
    /// What was negotiated: how the client compresses and how the server does.
    pub negotiated: LegDeflate,
    /// The message being read: its opcode and whether it is compressed.
    reading: Option<(Data, bool)>,
    message: Vec<u8>,
    compressed: Vec<u8>,
    max_message: usize,
    /// The peer sent a close frame (what ended `next_data`).
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeflateWs<S> {
    fn new(frames: Frames<S>, negotiated: LegDeflate, max_message: usize) -> Self {
        DeflateWs {
            frames,
            deflater: Deflater::new(negotiated.send, CLIENT_LEVEL),
            inflater: Inflater::new(negotiated.receive),
            negotiated,
            reading: None,
            message: Vec::new(),
            compressed: Vec::new(),
            max_message,
            closed: false,
        }
    }

    /// Opens a compressed connection over `io` with tungstenite's client `request` (the URL, the
    /// key and the caller's headers), offering `offer` (a `Sec-WebSocket-Extensions` value, such
    /// as [`CLIENT_OFFER`]). Fails unless the 101 accepts permessage-deflate and selects the
    /// subprotocol offered, if any (as tungstenite does).
    pub async fn handshake(
        mut request: Request,
        mut io: S,
        offer: &str,
        max_message: usize,
    ) -> Result<Self> {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            HeaderValue::from_str(offer).context("bad permessage-deflate offer")?,
        );
        let protocol = match request.headers().get("Sec-WebSocket-Protocol") {
            Some(v) => Some(v.to_str().context("bad Sec-WebSocket-Protocol")?.to_owned()),
            None => None,
        };
        let (bytes, key) = generate_request(request).context("building the request")?;
        io.write_all(&bytes).await.context("sending the request")?;
        let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
        let head_len = read_head(&mut io, &mut buf).await?;
        let head = &buf[..head_len];
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        response.parse(head).context("parsing the response")?;
        if response.code != Some(101) {
            let line = String::from_utf8_lossy(head);
            bail!("no upgrade: {}", line.lines().next().unwrap_or_default());
        }
        let accept = header(response.headers, "Sec-WebSocket-Accept")?;
        if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
            bail!("wrong Sec-WebSocket-Accept: {accept:?}");
        }
        let selected = header(response.headers, "Sec-WebSocket-Protocol")?;
        if selected != protocol {
            bail!("subprotocol {protocol:?} offered, {selected:?} selected");
        }
        let negotiated =
            read_answer(header(response.headers, "Sec-WebSocket-Extensions")?.as_deref())?;
        buf.drain(..head_len);
        let frames = Frames::new(io, buf, Role::Client, max_message);
        Ok(DeflateWs::new(frames, negotiated, max_message))
    }

    /// The server's side of a handshake over `io`: accepts the first permessage-deflate offer
    /// it can honour ([`echo_answer`]) and no subprotocol; fails without an offer.
    async fn accept(mut io: S, max_message: usize) -> Result<Self> {
        let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
        let head_len = read_head(&mut io, &mut buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        request
            .parse(&buf[..head_len])
            .context("parsing the request")?;
        let key = header(request.headers, "Sec-WebSocket-Key")?.context("no Sec-WebSocket-Key")?;
        let offer = header(request.headers, "Sec-WebSocket-Extensions")?;
        let (answer, negotiated) = offer
            .as_deref()
            .and_then(echo_answer)
            .with_context(|| format!("no permessage-deflate offer it can honour: {offer:?}"))?;
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        io.write_all(response.as_bytes())
            .await
            .context("sending the 101")?;
        buf.drain(..head_len);
        let frames = Frames::new(io, buf, Role::Server, max_message);
        Ok(DeflateWs::new(frames, negotiated, max_message))
    }

    /// Queues a text message, compressed when it has at least [`MIN_COMPRESSED_BYTES`].
    pub fn feed(&mut self, text: &str) -> Result<()> {
        self.send(Data::Text, text.as_bytes())
    }

    /// Queues a text or binary message, compressed when it has at least
    /// [`MIN_COMPRESSED_BYTES`].
    fn send(&mut self, kind: Data, payload: &[u8]) -> Result<()> {
        let opcode = OpCode::Data(kind);
        if payload.len() < MIN_COMPRESSED_BYTES {
            self.frames
                .queue(opcode, true, false, Payload::Bytes(payload));
            return Ok(());
        }
        self.compressed.clear();
        self.deflater
            .compress(payload, true, &mut self.compressed)
            .context("compressing")?;
        self.frames
            .queue(opcode, true, true, Payload::Bytes(&self.compressed));
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.frames.flush().await
    }

    /// The next text or binary message, inflated; pings are answered. A close, the end of the
    /// stream or a protocol error is an error. Cancel-safe.
    pub async fn next_data(&mut self) -> Result<Message> {
        loop {
            let frame = self.frames.next().await?;
            let (fin, rsv1) = (frame.header.is_final, frame.header.rsv1);
            let compressed = match (frame.header.opcode, self.reading) {
                (OpCode::Control(Control::Ping), _) => {
                    let pong = OpCode::Control(Control::Pong);
                    self.frames
                        .queue(pong, true, false, Payload::Read(frame.payload));
                    continue;
                }
                (OpCode::Control(Control::Pong), _) => continue,
                (OpCode::Control(Control::Close), _) => {
                    self.closed = true;
                    bail!(
                        "peer closed: {}",
                        describe_close(self.frames.payload(&frame))
                    )
                }
                (OpCode::Data(d @ (Data::Text | Data::Binary)), None) => {
                    self.reading = Some((d, rsv1));
                    self.message.clear();
                    rsv1
                }
                (OpCode::Data(Data::Continue), Some((_, compressed))) if !rsv1 => compressed,
                (opcode, reading) => bail!(
                    "unexpected frame {opcode} (RSV1 {rsv1}) with {} message in progress",
                    if reading.is_some() { "a" } else { "no" }
                ),
            };
            let data = &self.frames.read[frame.payload];
            if compressed {
                self.inflater
                    .inflate(data, fin, &mut self.message, self.max_message)
                    .map_err(|e| anyhow!("inflating: {e}"))?;
            } else if self.message.len() + data.len() > self.max_message {
                bail!("message over {} bytes", self.max_message);
            } else {
                self.message.extend_from_slice(data);
            }
            if !fin {
                continue;
            }
            let message = std::mem::take(&mut self.message);
            return match self.reading.take() {
                Some((Data::Binary, _)) => Ok(Message::Binary(message.into())),
                _ => Ok(Message::Text(
                    Utf8Bytes::try_from(message).context("a text message that is not UTF-8")?,
                )),
            };
        }
    }

    /// Frees the client's compression stream between messages (context takeover allows a fresh
    /// one): 5,000 idle connections need not hold 5,000 deflaters in the load tool.
    pub fn release_compressor(&mut self) {
        self.deflater.release();
    }

    /// A polite close: a close frame, then the peer's.
    pub async fn close(&mut self) -> Result<()> {
        self.frames.close().await
    }
}

// ---------------------------------------------------------------------------------------------
// Echo

/// Serves one echo connection: the handshake within `handshake_timeout` (the first
/// permessage-deflate offer it can honour, no subprotocol), then every data message echoed,
/// inflated on the way in and compressed on the way out as a real backend's stack does, pings
/// answered, a close echoed.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    max_message: usize,
    handshake_timeout: Duration,
) -> Result<()> {
    let mut ws = tokio::time::timeout(handshake_timeout, DeflateWs::accept(io, max_message))
        .await
        .context("handshake timed out")??;
    loop {
        // What is queued goes out before the next read.
        match ws.next_data().await {
            Ok(Message::Text(text)) => ws.send(Data::Text, text.as_bytes())?,
            Ok(Message::Binary(bytes)) => ws.send(Data::Binary, &bytes)?,
            Ok(_) => {}
            Err(_) if ws.closed => {
                let close = OpCode::Control(Control::Close);
                ws.frames
                    .queue(close, true, false, Payload::Bytes(&1000u16.to_be_bytes()));
                return ws.flush().await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
