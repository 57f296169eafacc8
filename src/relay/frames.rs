//! One leg's WebSocket framing without IO: the frames a peer sent, checked as RFC 6455 §5 asks,
//! and the frames we send it. tungstenite parses and writes the headers
//! ([`FrameHeader::parse`], [`FrameHeader::format`]); this module adds the checks an endpoint
//! must make and works in place on the leg's read buffer, so a message is neither copied into a
//! frame object nor reassembled unless it is fragmented text (which the rules must see whole).
//! Binary messages are forwarded frame by frame as they come.

use std::io::Cursor;

use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Why a peer's bytes cannot be relayed; each maps to the close code it is answered with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message over the {0}-byte limit")]
    TooBig(usize),
    #[error("text is not valid UTF-8")]
    Utf8,
    /// A compressed message that does not inflate. RFC 7692 fails the connection without naming a
    /// code; 1007 says the payload is not what its message claims (python `websockets` uses 1002).
    #[error("compressed message is not valid deflate data")]
    Deflate,
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        let code = match self {
            FrameError::Protocol(_) => CloseCode::Protocol,
            FrameError::TooBig(_) => CloseCode::Size,
            FrameError::Utf8 | FrameError::Deflate => CloseCode::Invalid,
        };
        code.into()
    }

    pub fn close_reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(_) => "protocol error",
            FrameError::TooBig(_) => "message too big",
            FrameError::Utf8 => "invalid UTF-8",
            FrameError::Deflate => "invalid compressed data",
        }
    }
}

/// What one complete frame from the peer amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message (validated here, so the rules need not check it again).
    Text(&'a str),
    /// One frame of a binary message, to be forwarded as a frame of its own.
    Binary {
        payload: &'a [u8],
        first: bool,
        fin: bool,
    },
    /// One frame of a compressed message (RSV1 on its first frame, RFC 7692 §6): deflate data,
    /// to be inflated before it means anything.
    Compressed {
        payload: &'a [u8],
        text: bool,
        first: bool,
        fin: bool,
    },
    Ping(&'a [u8]),
    Pong,
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, &'a str)>),
}

/// A frame read from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The buffer does not hold a whole frame yet; at least this many bytes are needed in all.
    NeedMore(usize),
    /// `consumed` bytes at the start of the buffer were one frame; `event` is `None` for a
    /// fragment of a text message still being assembled.
    Frame {
        consumed: usize,
        event: Option<Event<'a>>,
    },
}

/// A fragmented message being received.
#[derive(Debug)]
enum Partial {
    None,
    /// Text so far, and how much of it is known to be valid UTF-8.
    Text {
        bytes: Vec<u8>,
        checked: usize,
    },
    Binary {
        bytes: usize,
    },
    /// Compressed bytes so far of a compressed message (its inflated size is checked as it is
    /// inflated).
    Compressed {
        text: bool,
        bytes: usize,
    },
}

/// The framing state of one leg.
#[derive(Debug)]
pub struct Codec {
    /// `Server` for the client leg (its frames must be masked, ours are not), `Client` for the
    /// backend leg (the other way round).
    role: Role,
    max_message: usize,
    /// permessage-deflate was negotiated on this leg: RSV1 marks a compressed message.
    compressed: bool,
    partial: Partial,
    /// A fragmented text message completed by the last frame, lent out as [`Event::Text`].
    assembled: Vec<u8>,
}

impl Codec {
    pub fn new(role: Role, max_message: usize, compressed: bool) -> Codec {
        Codec {
            role,
            max_message,
            compressed,
            partial: Partial::None,
            assembled: Vec::new(),
        }
    }

    /// Reads the frame at the start of `buf`, unmasking its payload in place.
    pub fn parse<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Parsed<'a>, FrameError> {
        let mut cursor = Cursor::new(&*buf);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Parsed::NeedMore(buf.len() + 1)),
            Err(WsError::Protocol(_)) => return Err(FrameError::Protocol("reserved opcode")),
            Err(_) => return Err(FrameError::Protocol("malformed frame header")),
        };
        let header_len = cursor.position() as usize;
        self.check_header(&header, len)?;
        // `check_header` bounded `len` by the message limit, a usize.
        let total = header_len + len as usize;
        if buf.len() < total {
            return Ok(Parsed::NeedMore(total));
        }
        let payload = &mut buf[header_len..total];
        if let Some(key) = header.mask {
            apply_mask(payload, key);
        }
        let event = if header.rsv1 {
            self.compressed_start(header.opcode, header.is_final, payload)?
        } else {
            self.event(header.opcode, header.is_final, payload)?
        };
        Ok(Parsed::Frame {
            consumed: total,
            event,
        })
    }

    /// Frees the message lent out by the last [`Event::Text`] when it was assembled from
    /// fragments, so a large one's memory is not kept until the next.
    pub fn release(&mut self) {
        self.assembled = Vec::new();
    }

    fn check_header(&self, header: &FrameHeader, len: u64) -> Result<(), FrameError> {
        if header.rsv2 || header.rsv3 {
            // No extension defines them.
            return Err(FrameError::Protocol("reserved bits set"));
        }
        // RSV1 marks a compressed message: only with permessage-deflate, only on the first
        // frame of a data message (RFC 7692 §6).
        let first_data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if header.rsv1 && !(self.compressed && first_data) {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(FrameError::Protocol("unmasked client frame")),
            (Role::Client, true) => return Err(FrameError::Protocol("masked server frame")),
            _ => {}
        }
        if let OpCode::Control(_) = header.opcode {
            if !header.is_final {
                return Err(FrameError::Protocol("fragmented control frame"));
            }
            if len > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::Protocol("control frame too long"));
            }
        }
        if len >> 63 != 0 {
            return Err(FrameError::Protocol("payload length with its top bit set"));
        }
        // Refused before its payload is buffered, counting what a fragmented message has so far.
        let so_far = match (&self.partial, header.opcode) {
            (Partial::Text { bytes, .. }, OpCode::Data(Data::Continue)) => bytes.len(),
            (Partial::Binary { bytes }, OpCode::Data(Data::Continue)) => *bytes,
            (Partial::Compressed { bytes, .. }, OpCode::Data(Data::Continue)) => *bytes,
            _ => 0,
        };
        // Compressed data may come out a little longer than the message it holds (stored
        // blocks); the inflated size is held to the limit itself.
        let limit = if self.compressed {
            self.max_message.saturating_add(self.max_message / 64 + 64)
        } else {
            self.max_message
        };
        if len.saturating_add(so_far as u64) > limit as u64 {
            return Err(FrameError::TooBig(self.max_message));
        }
        Ok(())
    }

    fn event<'a>(
        &'a mut self,
        opcode: OpCode,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, FrameError> {
        let event = match opcode {
            OpCode::Data(Data::Text) => {
                self.no_message_in_progress()?;
                if fin {
                    let text = utf8(payload)?;
                    return Ok(Some(Event::Text(text)));
                }
                let mut checked = 0;
                check_utf8_prefix(payload, &mut checked)?;
                self.partial = Partial::Text {
                    bytes: payload.to_vec(),
                    checked,
                };
                return Ok(None);
            }
            OpCode::Data(Data::Binary) => {
                self.no_message_in_progress()?;
                if !fin {
                    self.partial = Partial::Binary {
                        bytes: payload.len(),
                    };
                }
                Event::Binary {
                    payload,
                    first: true,
                    fin,
                }
            }
            OpCode::Data(Data::Continue) => return self.continuation(fin, payload),
            OpCode::Control(Control::Ping) => Event::Ping(payload),
            OpCode::Control(Control::Pong) => Event::Pong,
            OpCode::Control(Control::Close) => Event::Close(close_payload(payload)?),
            // FrameHeader::parse refuses reserved opcodes.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(FrameError::Protocol("reserved opcode"))
            }
        };
        Ok(Some(event))
    }

    /// The first frame of a compressed message.
    fn compressed_start<'a>(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, FrameError> {
        self.no_message_in_progress()?;
        let text = opcode == OpCode::Data(Data::Text);
        if !fin {
            self.partial = Partial::Compressed {
                text,
                bytes: payload.len(),
            };
        }
        Ok(Some(Event::Compressed {
            payload,
            text,
            first: true,
            fin,
        }))
    }

    fn no_message_in_progress(&self) -> Result<(), FrameError> {
        match self.partial {
            Partial::None => Ok(()),
            _ => Err(FrameError::Protocol("new message inside a fragmented one")),
        }
    }

    fn continuation<'a>(
        &'a mut self,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, FrameError> {
        match std::mem::replace(&mut self.partial, Partial::None) {
            Partial::None => Err(FrameError::Protocol("continuation without a message")),
            Partial::Binary { bytes } => {
                let bytes = bytes + payload.len();
                if !fin {
                    self.partial = Partial::Binary { bytes };
                }
                Ok(Some(Event::Binary {
                    payload,
                    first: false,
                    fin,
                }))
            }
            Partial::Compressed { text, bytes } => {
                if !fin {
                    self.partial = Partial::Compressed {
                        text,
                        bytes: bytes + payload.len(),
                    };
                }
                Ok(Some(Event::Compressed {
                    payload,
                    text,
                    first: false,
                    fin,
                }))
            }
            Partial::Text {
                mut bytes,
                mut checked,
            } => {
                bytes.extend_from_slice(payload);
                // Checked as it arrives, so bad text fails at its first bad byte.
                check_utf8_prefix(&bytes, &mut checked)?;
                if !fin {
                    self.partial = Partial::Text { bytes, checked };
                    return Ok(None);
                }
                if checked != bytes.len() {
                    return Err(FrameError::Utf8); // Ends inside a character.
                }
                self.assembled = bytes;
                // Valid already; checked whole once more for the `&str` the rules take.
                let text = utf8(&self.assembled)?;
                Ok(Some(Event::Text(text)))
            }
        }
    }
}

/// Appends one frame to `out`; masked when we are the client (the backend leg), as RFC 6455
/// §5.3 requires.
pub fn write_frame(out: &mut Vec<u8>, role: Role, opcode: OpCode, fin: bool, payload: &[u8]) {
    write_frame_rsv1(out, role, opcode, fin, false, payload);
}

/// [`write_frame`], with RSV1 set on the first frame of a compressed message.
pub fn write_frame_rsv1(
    out: &mut Vec<u8>,
    role: Role,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
) {
    let header = FrameHeader {
        is_final: fin,
        rsv1,
        opcode,
        mask: match role {
            Role::Client => Some(rand::random()),
            Role::Server => None,
        },
        ..FrameHeader::default()
    };
    let len = payload.len() as u64;
    out.reserve(header.len(len) + payload.len());
    // Writing to a Vec cannot fail.
    let _ = header.format(len, out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start..], key);
    }
}

/// Appends a close frame; `None` sends one without a code.
pub fn write_close(out: &mut Vec<u8>, role: Role, close: Option<(u16, &str)>) {
    let mut payload = Vec::new();
    if let Some((code, reason)) = close {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
    }
    write_frame(out, role, OpCode::Control(Control::Close), true, &payload);
}

/// `bytes` as text, or the error that closes the connection with 1007.
pub(super) fn utf8(bytes: &[u8]) -> Result<&str, FrameError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| FrameError::Utf8)
}

/// Advances `checked` over the valid UTF-8 at the start of `bytes[checked..]`; a character cut
/// at the end is not an error yet (the next fragment may complete it).
fn check_utf8_prefix(bytes: &[u8], checked: &mut usize) -> Result<(), FrameError> {
    match simdutf8::compat::from_utf8(&bytes[*checked..]) {
        Ok(_) => *checked = bytes.len(),
        Err(e) if e.error_len().is_none() => *checked += e.valid_up_to(),
        Err(_) => return Err(FrameError::Utf8),
    }
    Ok(())
}

/// The code and reason of a close frame (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("one-byte close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::Utf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// XORs `buf` with the 4-byte masking key (RFC 6455 §5.3). tungstenite keeps its own masking
/// function private; this one is checked against tungstenite's `Frame::format` in the tests.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    // Eight bytes per step (the key twice): a byte loop cost ~290 instructions per round trip.
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at the key's first byte.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests;
