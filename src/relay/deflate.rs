//! permessage-deflate (RFC 7692) for one leg, without IO: the inflater for what its peer sends
//! and the deflater for what wsnorm sends it. Raw deflate from `flate2` (zlib-ng);
//! a message's compressed bytes are the deflate stream up to a sync flush, without the flush's
//! `00 00 ff ff` tail (RFC 7692 §7.2.1), which the receiver appends back (§7.2.2).
//!
//! A direction with context takeover keeps its stream (and its LZ77 window) between messages,
//! allocated when the first compressed message goes that way. A direction without it needs no
//! stream of its own between messages: a message in one frame (the norm) borrows a stream from
//! a per-thread pool and gives it back reset, so such a connection holds no compression memory
//! at all; a fragmented one gets a stream of its own until its last frame.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a sync flush ends with; taken off each compressed message and put back to inflate it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grown per step while inflating: a message is inflated as far as the limit, never past.
const INFLATE_STEP: usize = 16 * 1024;

/// The smallest window `flate2` (and zlib) will compress with. A peer that allows only 8 bits
/// gets a 9-bit deflater: deflate never reaches back further than the window less 262 bytes,
/// so a 9-bit stream references at most 250 bytes back and an 8-bit inflater reads it (what
/// zlib itself does when asked for 8; RFC 7692 §7.1.2.1 bounds the distance, not the setting).
const MIN_ZLIB_WINDOW_BITS: u8 = 9;

/// Streams lent to messages that need no context (no context takeover, one frame each), per
/// thread and per setting: reset after each message, so one per setting serves every
/// connection of the thread.
const POOL_MAX: usize = 8;

thread_local! {
    static DEFLATERS: std::cell::RefCell<Vec<((u32, u8), Compress)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static INFLATERS: std::cell::RefCell<Vec<(u8, Decompress)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes a stream for `key` out of `pool`, or makes one.
fn lend<K: PartialEq, S>(
    pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<(K, S)>>>,
    key: &K,
    make: impl FnOnce() -> S,
) -> S {
    let found = pool.with_borrow_mut(|pool| {
        let at = pool.iter().position(|(k, _)| k == key)?;
        Some(pool.swap_remove(at).1)
    });
    found.unwrap_or_else(make)
}

/// Gives a reset stream back to `pool` (dropped when the pool is full).
fn give_back<K, S>(
    pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<(K, S)>>>,
    key: K,
    stream: S,
) {
    pool.with_borrow_mut(|pool| {
        if pool.len() < POOL_MAX {
            pool.push((key, stream));
        }
    });
}

/// How one direction of a leg is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Base-2 logarithm of the LZ77 window, 8 to 15.
    pub bits: u8,
    /// Every message is compressed on its own (`*_no_context_takeover`).
    pub no_context_takeover: bool,
}

impl Window {
    /// A window that can read (or write) what this one allows, in the range zlib accepts.
    fn zlib_bits(self) -> u8 {
        self.bits.clamp(MIN_ZLIB_WINDOW_BITS, 15)
    }
}

/// permessage-deflate as negotiated on one leg, from wsnorm's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegDeflate {
    /// How wsnorm compresses what it sends on this leg.
    pub send: Window,
    /// How the peer compresses what it sends: what wsnorm inflates.
    pub receive: Window,
}

/// Settings shared by every compressed leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateSettings {
    /// zlib level, 0 to 9.
    pub level: u32,
    /// Messages shorter than this go uncompressed (RSV1 clear): RSV1 is set per message.
    pub min_message_bytes: usize,
}

/// Why a compressed message could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// Inflated past the message limit: closed with 1009, as an uncompressed one would be.
    #[error("inflated message over the {0}-byte limit")]
    TooBig(usize),
    /// Not a deflate stream: closed with 1007.
    #[error("invalid deflate data: {0}")]
    Invalid(String),
}

/// Compression failed: cannot happen with valid settings; the caller closes the connection.
#[derive(Debug, thiserror::Error)]
#[error("deflate failed: {0}")]
pub struct DeflateError(String);

/// Inflates the messages a compressed peer sends.
pub struct Inflater {
    window: Window,
    stream: Option<Decompress>,
}

impl Inflater {
    pub fn new(window: Window) -> Inflater {
        Inflater {
            window,
            stream: None,
        }
    }

    /// Inflates one frame of a compressed message, appending to `out`, which never grows past
    /// `limit` bytes (plus one, to tell an exact fit from too much): a decompression bomb is
    /// refused after at most `limit` bytes of output. `fin` ends the message.
    pub fn inflate(
        &mut self,
        data: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let bits = self.window.zlib_bits();
        let make = || Decompress::new_with_window_bits(false, bits);
        if self.window.no_context_takeover && fin && self.stream.is_none() {
            // A whole message that needs no context: a pooled stream, given back reset.
            let mut stream = lend(&INFLATERS, &bits, make);
            if !inflate_into(&mut stream, data, out, limit)? {
                inflate_into(&mut stream, &TAIL, out, limit)?;
            }
            stream.reset(false);
            give_back(&INFLATERS, bits, stream);
            return Ok(());
        }
        let stream = self.stream.get_or_insert_with(make);
        let mut ended = inflate_into(stream, data, out, limit)?;
        if fin {
            if !ended {
                ended = inflate_into(stream, &TAIL, out, limit)?;
            }
            if ended || self.window.no_context_takeover {
                // A final block ends the stream; the next message starts a new one.
                self.stream = None;
            }
        }
        Ok(())
    }
}

/// Feeds all of `input` to `stream`; true when the deflate stream ended (a final block). The
/// output is written into `out` grown by at most what the limit leaves, so it never holds more.
fn inflate_into(
    stream: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, InflateError> {
    loop {
        // Small messages get a small step; what is left of the limit (plus one) caps it.
        let step = (input.len() * 4).clamp(256, INFLATE_STEP);
        let room = (limit + 1).saturating_sub(out.len()).min(step);
        if room == 0 {
            return Err(InflateError::TooBig(limit));
        }
        let start = out.len();
        if start + room > out.capacity() {
            // Doubling, but never past the limit: a bomb cannot make it allocate more.
            let target = (out.capacity() * 2).clamp(start + room, limit + 1);
            out.reserve_exact(target - start);
        }
        out.resize(start + room, 0);
        let before_in = stream.total_in();
        let before_out = stream.total_out();
        let status = stream.decompress(input, &mut out[start..], FlushDecompress::Sync);
        // Both are bounded by the slices just given, whose lengths are usizes.
        let consumed = (stream.total_in() - before_in) as usize;
        let produced = (stream.total_out() - before_out) as usize;
        out.truncate(start + produced);
        let status = status.map_err(|e| InflateError::Invalid(e.to_string()))?;
        input = &input[consumed..];
        if out.len() > limit {
            return Err(InflateError::TooBig(limit));
        }
        match status {
            Status::StreamEnd => return Ok(true),
            // Room left over means all the output there is for this input was written.
            _ if input.is_empty() && produced < room => return Ok(false),
            Status::BufError if consumed == 0 && produced == 0 => {
                return Err(InflateError::Invalid("no progress".into()))
            }
            _ => {}
        }
    }
}

/// Compresses the messages wsnorm sends to a compressed peer.
pub struct Deflater {
    window: Window,
    level: Compression,
    stream: Option<Compress>,
}

impl Deflater {
    pub fn new(window: Window, level: u32) -> Deflater {
        Deflater {
            window,
            level: Compression::new(level.min(9)),
            stream: None,
        }
    }

    /// Appends the compressed form of `data`, one frame's part of a message, to `out`. `fin`
    /// ends the message: its output is flushed and loses the sync flush's tail.
    pub fn compress(
        &mut self,
        data: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), DeflateError> {
        let (level, bits) = (self.level, self.window.zlib_bits());
        let make = || Compress::new_with_window_bits(level, false, bits);
        if self.window.no_context_takeover && fin && self.stream.is_none() {
            // A whole message that needs no context: a pooled stream, given back reset.
            let key = (level.level(), bits);
            let mut stream = lend(&DEFLATERS, &key, make);
            compress_into(&mut stream, data, true, out)?;
            stream.reset();
            give_back(&DEFLATERS, key, stream);
            return Ok(());
        }
        let stream = self.stream.get_or_insert_with(make);
        compress_into(stream, data, fin, out)?;
        if fin && self.window.no_context_takeover {
            self.stream = None;
        }
        Ok(())
    }

    /// Frees the stream kept for context takeover, between messages. Context takeover lets
    /// wsnorm refer back to earlier messages, it does not oblige it to: the next message starts
    /// a fresh stream, which the peer's inflater (still holding its window) reads as it is.
    pub fn release(&mut self) {
        self.stream = None;
    }
}

/// Compresses `data` into `out`; `fin` flushes and drops the flush's tail (the message's end).
fn compress_into(
    stream: &mut Compress,
    data: &[u8],
    fin: bool,
    out: &mut Vec<u8>,
) -> Result<(), DeflateError> {
    let flush = if fin {
        FlushCompress::Sync
    } else {
        FlushCompress::None
    };
    let start = out.len();
    let mut input = data;
    loop {
        out.reserve(input.len() / 2 + 64);
        let before_in = stream.total_in();
        let before_out = out.len();
        stream
            .compress_vec(input, out, flush)
            .map_err(|e| DeflateError(e.to_string()))?;
        // Bounded by `input.len()`, which is a usize.
        input = &input[(stream.total_in() - before_in) as usize..];
        // A flush is complete once it leaves output room unused.
        if input.is_empty() && (out.len() < out.capacity() || out.len() == before_out) {
            break;
        }
    }
    if fin {
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // Nothing was pending (an empty message): one empty stored block without its
            // tail, as RFC 7692 §7.2.3.6 writes it.
            out.push(0x00);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
