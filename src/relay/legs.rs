//! The state of both legs, and what each event does to it: the close handshake, keepalive,
//! replies held behind fragmented messages. No IO: the relay's loop feeds it events and writes
//! out what it queues.

use std::io;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info, warn};

use super::buffers::{self, free_if_large};
use super::deflate::{DeflateError, DeflateSettings, Deflater, InflateError, Inflater, LegDeflate};
use super::frames::{self, Event, FrameError};
use super::metrics::{Initiator, MessageKind, RouteMetrics};
use super::rewrite::{recycle, transform, Forward};
use super::wire_metrics::WireLeg;
use super::{Keepalive, RelayContext, Summary};
use crate::logging::ConnectionLog;
use crate::rules::Direction;

thread_local! {
    /// Compressed or inflated bytes on their way into a leg's output: copied there at once, so
    /// one per thread does for every connection.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Replies to rejected messages held back while a binary message is forwarded to the same
/// peer in fragments; past this, reading from that peer waits for the fragments' end.
const MAX_HELD_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Leg {
    Client,
    Backend,
}

impl Leg {
    /// The direction of messages read from this leg.
    pub(super) fn direction(self) -> Direction {
        match self {
            Leg::Client => Direction::ClientToBackend,
            Leg::Backend => Direction::BackendToClient,
        }
    }

    pub(super) fn other(self) -> Leg {
        match self {
            Leg::Client => Leg::Backend,
            Leg::Backend => Leg::Client,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Backend => "backend",
        }
    }

    pub(super) fn initiator(self) -> Initiator {
        match self {
            Leg::Client => Initiator::Client,
            Leg::Backend => Initiator::Backend,
        }
    }

    fn wire(self) -> WireLeg {
        match self {
            Leg::Client => WireLeg::Client,
            Leg::Backend => WireLeg::Backend,
        }
    }
}

/// permessage-deflate on one leg: the peer's messages inflated, ours deflated.
struct Compression {
    inflater: Inflater,
    /// How wsnorm compresses what it sends on this leg; none where it sends uncompressed: where
    /// the other leg's compressed messages are passed through (its stream would interleave with
    /// theirs in the peer's inflater), and to the backend unless `compress_to_backend`.
    deflater: Option<Deflater>,
    min_message_bytes: usize,
    /// A compressed text message from the peer being inflated: its text so far.
    inflated: Vec<u8>,
    /// The message being written to the peer is compressed (its later frames are too).
    compressing: bool,
    /// A message was compressed for the peer since the last keepalive check.
    deflated: bool,
}

impl Compression {
    fn new(leg: LegDeflate, settings: DeflateSettings, sends_compressed: bool) -> Box<Compression> {
        Box::new(Compression {
            inflater: Inflater::new(leg.receive),
            deflater: sends_compressed.then(|| Deflater::new(leg.send, settings.level)),
            min_message_bytes: settings.min_message_bytes,
            inflated: Vec::new(),
            compressing: false,
            deflated: false,
        })
    }
}

/// A leg's output and what is known about its closing.
pub(super) struct LegState {
    pub(super) role: Role,
    /// Frames to write, sent at the end of each batch; a buffer from the pool only while there
    /// are any ([`LegState::output`]).
    pub(super) out: Vec<u8>,
    /// `out` is inside a fragmented binary message: a data frame of our own must wait.
    pub(super) mid_message: bool,
    /// Our own data frames (replies to rejected messages) waiting for that message's end.
    pub(super) held: Vec<u8>,
    /// The peer sent something since the last keepalive check (a flag, not a clock read per
    /// message).
    pub(super) heard: bool,
    /// When the peer was last found to have sent anything, to within a keepalive check.
    pub(super) last_heard: tokio::time::Instant,
    /// When we last pinged it.
    pub(super) last_ping: Option<tokio::time::Instant>,
    /// Nothing more will be read from it.
    pub(super) done: bool,
    /// Its socket failed or reached its end: nothing more is written to it.
    pub(super) broken: bool,
    /// We sent it a close frame (forwarded or our own).
    pub(super) close_sent: bool,
    /// It sent us a close frame.
    pub(super) close_received: bool,
    /// We failed it for breaking the protocol: drain it before closing the socket.
    pub(super) linger: bool,
    /// permessage-deflate, when negotiated on this leg (boxed: most legs have none).
    compression: Option<Box<Compression>>,
    /// Payload bytes so far (inflated, if compressed) of the binary message being received
    /// from its peer.
    pub(super) binary_bytes: usize,
}

impl LegState {
    /// `sends_compressed`: whether wsnorm compresses what it sends on this leg, if negotiated.
    pub(super) fn new(
        role: Role,
        deflate: Option<LegDeflate>,
        settings: DeflateSettings,
        sends_compressed: bool,
    ) -> LegState {
        LegState {
            compression: deflate.map(|leg| Compression::new(leg, settings, sends_compressed)),
            role,
            out: Vec::new(),
            mid_message: false,
            held: Vec::new(),
            heard: false,
            last_heard: tokio::time::Instant::now(),
            last_ping: None,
            done: false,
            broken: false,
            close_sent: false,
            close_received: false,
            linger: false,
            binary_bytes: 0,
        }
    }

    /// Whether frames may still be queued for it.
    pub(super) fn writable(&self) -> bool {
        !self.close_sent && !self.broken
    }

    /// Whether to read from its peer: not while too many replies wait to be sent to it.
    pub(super) fn readable(&self) -> bool {
        !self.done && self.held.len() < MAX_HELD_BYTES
    }

    pub(super) fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let role = self.role;
        frames::write_frame(self.output(), role, opcode, fin, payload);
    }

    /// Queues one frame of a message relayed from the other leg (compressed when this leg is
    /// and the message is worth it) and tells its payload's size on the wire; the last frame
    /// releases the replies held meanwhile.
    pub(super) fn relay(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
    ) -> Result<usize, DeflateError> {
        let wire = self.write_data(opcode, fin, payload)?;
        self.frame_written(fin);
        Ok(wire)
    }

    /// Queues one frame of a compressed message passed through from the other leg as it came
    /// (RSV1 on its first frame).
    pub(super) fn pass(&mut self, opcode: OpCode, fin: bool, first: bool, payload: &[u8]) {
        let role = self.role;
        frames::write_frame_rsv1(self.output(), role, opcode, fin, first, payload);
        self.frame_written(fin);
    }

    /// After a relayed frame: the last one of a message releases the replies held meanwhile.
    fn frame_written(&mut self, fin: bool) {
        self.mid_message = !fin;
        if fin && !self.held.is_empty() {
            self.out.append(&mut self.held);
            self.held = Vec::new();
        }
    }

    fn write_data(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
    ) -> Result<usize, DeflateError> {
        let Some(compression) = self.compression.as_mut() else {
            self.send(opcode, fin, payload);
            return Ok(payload.len());
        };
        let first = opcode != OpCode::Data(Data::Continue);
        // A message is compressed or not as a whole; a fragmented one may grow past the minimum.
        let compress = if first {
            !fin || payload.len() >= compression.min_message_bytes
        } else {
            compression.compressing
        };
        let Some(deflater) = compression.deflater.as_mut().filter(|_| compress) else {
            self.send(opcode, fin, payload);
            return Ok(payload.len());
        };
        compression.compressing = !fin;
        compression.deflated = true;
        let mut compressed = SCRATCH.take();
        compressed.clear();
        let result = deflater.compress(payload, fin, &mut compressed);
        if result.is_ok() {
            let role = self.role;
            frames::write_frame_rsv1(self.output(), role, opcode, fin, first, &compressed);
        }
        let wire = compressed.len();
        free_if_large(&mut compressed);
        SCRATCH.set(compressed);
        result.map(|()| wire)
    }

    /// Queues a text message of our own, after any fragmented message being relayed to it.
    pub(super) fn reply(&mut self, text: &[u8]) {
        let role = self.role;
        let out = if self.mid_message {
            &mut self.held
        } else {
            self.output()
        };
        frames::write_frame(out, role, OpCode::Data(Data::Text), true, text);
    }

    /// Its output, in a buffer lent from the thread's pool while it has frames to write.
    fn output(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = buffers::take_write();
        }
        &mut self.out
    }
}

/// Both legs' states, the summary and the metrics: everything the relaying logic changes
/// except the sockets and read buffers.
pub(super) struct Legs {
    pub(super) states: [LegState; 2],
    pub(super) summary: Summary,
    metrics: Arc<RouteMetrics>,
    pub(super) log: Arc<ConnectionLog>,
}

impl Legs {
    /// The client leg is served (frames to it unmasked), the backend leg dialled.
    pub(super) fn new(ctx: &RelayContext) -> Legs {
        let deflate = &ctx.deflate;
        Legs {
            states: [
                LegState::new(
                    Role::Server,
                    deflate.client,
                    deflate.settings,
                    !deflate.passthrough,
                ),
                LegState::new(
                    Role::Client,
                    deflate.backend,
                    deflate.settings,
                    deflate.compress_to_backend,
                ),
            ],
            summary: Summary::default(),
            metrics: ctx.route_metrics.clone(),
            log: ctx.log.clone(),
        }
    }

    pub(super) fn on_event(&mut self, from: Leg, event: Event<'_>, ctx: &RelayContext) {
        match event {
            Event::Text(text) => {
                self.count_received(from, text.len(), text.len());
                self.on_text(from, text, ctx);
            }
            Event::Binary {
                payload,
                first,
                fin,
            } => {
                self.count_received(from, payload.len(), payload.len());
                self.on_binary(from, payload, first, fin);
            }
            Event::Compressed {
                payload,
                text,
                first,
                fin,
            } => self.on_compressed(from, payload, text, first, fin, ctx),
            Event::Ping(payload) => {
                let state = &mut self.states[from as usize];
                if state.writable() {
                    state.send(OpCode::Control(Control::Pong), true, payload);
                }
            }
            Event::Pong => {}
            Event::Close(close) => self.on_close(from, close),
        }
    }

    fn on_text(&mut self, from: Leg, text: &str, ctx: &RelayContext) {
        let to = from.other();
        let dir = from.direction();
        self.summary.messages[from as usize] += 1;
        self.metrics.message_size(dir, text.len());
        if !self.states[to as usize].writable() {
            debug!(parent: &self.log.span(), direction = dir.as_str(), "Message dropped: its receiver is closing.");
            return;
        }
        let text_frame = OpCode::Data(Data::Text);
        match transform(text, dir, ctx) {
            Forward::Original => self.forward(to, text_frame, true, text.as_bytes()),
            Forward::Rewritten(bytes) => {
                self.forward(to, text_frame, true, &bytes);
                recycle(bytes);
            }
            Forward::Back(reply) => {
                let sender = &mut self.states[from as usize];
                if sender.writable() {
                    sender.reply(&reply);
                }
            }
            Forward::Close => {
                self.close_leg(from, 1009, "message too big");
                self.close_other(from);
            }
        }
    }

    fn on_binary(&mut self, from: Leg, payload: &[u8], first: bool, fin: bool) {
        self.count_frame(from, MessageKind::Binary, first, payload.len());
        let sender = &mut self.states[from as usize];
        if first {
            sender.binary_bytes = 0;
        }
        sender.binary_bytes += payload.len();
        if fin {
            self.metrics
                .message_size(from.direction(), sender.binary_bytes);
        }
        let to = from.other();
        if self.states[to as usize].writable() {
            self.forward(to, data_opcode(first, false), fin, payload);
        }
    }

    /// Counts a data frame received from `from` whose message is not text inflated whole: a
    /// message at its first frame, a fragment after it.
    fn count_frame(&mut self, from: Leg, kind: MessageKind, first: bool, len: usize) {
        let dir = from.direction();
        if first {
            self.summary.messages[from as usize] += 1;
            self.metrics.message(dir, kind, len);
        } else {
            self.metrics.fragment(dir, len);
        }
    }

    /// A frame of a compressed message: text is inflated whole before the rules see it; binary
    /// is inflated frame by frame and forwarded as it comes, as uncompressed binary is.
    fn on_compressed(
        &mut self,
        from: Leg,
        payload: &[u8],
        text: bool,
        first: bool,
        fin: bool,
        ctx: &RelayContext,
    ) {
        if ctx.deflate.passes(from.direction()) {
            return self.on_passed(from, payload, text, first, fin);
        }
        let limit = ctx.max_message_bytes;
        let state = &mut self.states[from as usize];
        // Binary is limited by what its earlier frames inflated to.
        let so_far = if first { 0 } else { state.binary_bytes };
        let Some(compression) = state.compression.as_mut() else {
            // The codec lets RSV1 through only on a compressed leg.
            return self.on_frame_error(from, &FrameError::Protocol("reserved bits set"));
        };
        if text {
            let mut inflated = std::mem::take(&mut compression.inflated);
            let result = compression
                .inflater
                .inflate(payload, fin, &mut inflated, limit);
            let whole = result.is_ok() && fin;
            if !whole {
                compression.inflated = inflated;
                inflated = Vec::new();
            }
            // Each frame's wire bytes now, the message's payload once it is whole.
            self.count_received(from, 0, payload.len());
            match result {
                Err(e) => self.on_inflate_error(from, &e),
                Ok(()) if whole => self.on_inflated_text(from, &inflated, ctx),
                Ok(()) => {}
            }
            if whole {
                inflated.clear();
                free_if_large(&mut inflated);
                if let Some(compression) = self.states[from as usize].compression.as_mut() {
                    compression.inflated = inflated;
                }
            }
            return;
        }
        let mut inflated = SCRATCH.take();
        inflated.clear();
        let left = limit.saturating_sub(so_far);
        match compression
            .inflater
            .inflate(payload, fin, &mut inflated, left)
        {
            Ok(()) => {
                self.count_received(from, inflated.len(), payload.len());
                self.on_binary(from, &inflated, first, fin);
            }
            Err(InflateError::TooBig(_)) => {
                self.on_inflate_error(from, &InflateError::TooBig(limit))
            }
            Err(e) => self.on_inflate_error(from, &e),
        }
        free_if_large(&mut inflated);
        SCRATCH.set(inflated);
    }

    /// A frame of a compressed message passed through as it came: not inflated, so its size
    /// counts as on the wire, and the message size histogram does not see it.
    fn on_passed(&mut self, from: Leg, payload: &[u8], text: bool, first: bool, fin: bool) {
        let dir = from.direction();
        let kind = if text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        self.count_frame(from, kind, first, payload.len());
        self.summary.bytes[from as usize] += payload.len() as u64;
        let to = from.other();
        let state = &mut self.states[to as usize];
        if !state.writable() {
            return;
        }
        state.pass(data_opcode(first, text), fin, first, payload);
        self.metrics.sent(dir, payload.len());
        self.metrics.passed(dir, payload.len());
    }

    fn on_inflated_text(&mut self, from: Leg, inflated: &[u8], ctx: &RelayContext) {
        match frames::utf8(inflated) {
            Ok(message) => {
                self.count_received(from, message.len(), 0);
                self.on_text(from, message, ctx);
            }
            Err(e) => self.on_frame_error(from, &e),
        }
    }

    fn on_inflate_error(&mut self, from: Leg, error: &InflateError) {
        let error = match error {
            InflateError::TooBig(limit) => FrameError::TooBig(*limit),
            InflateError::Invalid(_) => FrameError::Deflate,
        };
        self.on_frame_error(from, &error);
    }

    /// Queues a frame of a message from the other leg on `to`; counted as it goes on the wire.
    fn forward(&mut self, to: Leg, opcode: OpCode, fin: bool, payload: &[u8]) {
        let dir = to.other().direction();
        match self.states[to as usize].relay(opcode, fin, payload) {
            Ok(wire) => {
                self.metrics.sent(dir, payload.len());
                self.metrics.wire(to.wire(), dir, payload.len(), wire);
            }
            Err(e) => {
                warn!(parent: &self.log.span(), leg = to.as_str(), error = %e, "Compressing a message failed; closing.");
                self.close_leg(to, 1011, "internal error");
                self.close_leg(to.other(), 1011, "internal error");
            }
        }
    }

    fn count_received(&mut self, from: Leg, payload: usize, wire: usize) {
        self.summary.bytes[from as usize] += payload as u64;
        self.metrics
            .wire(from.wire(), from.direction(), payload, wire);
    }

    pub(super) fn on_close(&mut self, from: Leg, close: Option<(u16, &str)>) {
        let to = from.other();
        let state = &mut self.states[from as usize];
        state.close_received = true;
        state.done = true;
        if state.close_sent {
            return; // The answer to a close we sent.
        }
        // Answered on its leg with the same code, as RFC 6455 §5.5.1 suggests.
        state.close_sent = true;
        let role = state.role;
        frames::write_close(state.output(), role, close);
        let (code, reason) = close.unwrap_or((1005, ""));
        self.metrics.close(code, from.initiator());
        self.record_close(code, reason, from.initiator());
        let other = &mut self.states[to as usize];
        if other.writable() {
            other.close_sent = true;
            let role = other.role;
            frames::write_close(other.output(), role, close);
        }
    }

    /// The peer ended the stream (or reset it).
    pub(super) fn on_end(&mut self, leg: Leg) {
        let state = &mut self.states[leg as usize];
        state.done = true;
        state.broken = true;
        if !state.close_received && !state.close_sent {
            info!(parent: &self.log.span(), leg = leg.as_str(), "Peer went away without a close frame.");
            self.metrics.close(1006, leg.initiator());
            self.close_other(leg);
        }
    }

    pub(super) fn on_io_error(&mut self, leg: Leg, error: &io::Error) {
        let state = &mut self.states[leg as usize];
        if state.broken {
            return;
        }
        state.done = true;
        state.broken = true;
        if state.close_received {
            debug!(parent: &self.log.span(), leg = leg.as_str(), error = %error, "Leg closed.");
        } else {
            warn!(parent: &self.log.span(), leg = leg.as_str(), error = %error, "Leg failed.");
            self.metrics.close(1006, leg.initiator());
        }
        self.close_other(leg);
    }

    /// The peer broke the protocol: tell it why, read nothing more from it (its framing can no
    /// longer be trusted), and close the other leg on its behalf.
    pub(super) fn on_frame_error(&mut self, leg: Leg, error: &FrameError) {
        info!(parent: &self.log.span(), leg = leg.as_str(), error = %error, "Peer broke the protocol; closing its leg.");
        self.close_leg(leg, error.close_code(), error.close_reason());
        let state = &mut self.states[leg as usize];
        state.done = true;
        state.linger = true;
        self.close_other(leg);
    }

    pub(super) fn close_other(&mut self, failed: Leg) {
        match failed {
            Leg::Backend => self.close_leg(Leg::Client, 1011, "backend error"),
            Leg::Client => self.close_leg(Leg::Backend, 1001, "client gone"),
        }
    }

    /// Queues our own close frame for `leg`, once.
    pub(super) fn close_leg(&mut self, leg: Leg, code: u16, reason: &'static str) {
        let state = &mut self.states[leg as usize];
        if !state.writable() {
            return;
        }
        state.close_sent = true;
        let role = state.role;
        frames::write_close(state.output(), role, Some((code, reason)));
        self.metrics.close(code, Initiator::Proxy);
        self.record_close(code, reason, Initiator::Proxy);
    }

    /// Pings quiet legs; closes legs that have been silent past the idle timeout.
    pub(super) fn keepalive(&mut self, keepalive: Keepalive) {
        for leg in [Leg::Client, Leg::Backend] {
            let log = &self.log;
            let state = &mut self.states[leg as usize];
            // A leg nothing was compressed for since the last check gives its deflater back:
            // a quiet connection then keeps only the inflaters its peers' context needs.
            if let Some(compression) = state.compression.as_mut() {
                if !std::mem::take(&mut compression.deflated) && !compression.compressing {
                    if let Some(deflater) = compression.deflater.as_mut() {
                        deflater.release();
                    }
                }
            }
            if state.done || state.close_sent {
                continue;
            }
            // A leg we stopped reading (replies held for it) is not to blame for its silence.
            if std::mem::take(&mut state.heard) || !state.readable() {
                state.last_heard = tokio::time::Instant::now();
            }
            let quiet = state.last_heard.elapsed();
            if quiet >= keepalive.idle_timeout {
                info!(
                    parent: &log.span(),
                    leg = leg.as_str(),
                    quiet_ms = quiet.as_millis() as u64,
                    "Peer is silent past the idle timeout; closing."
                );
                state.done = true;
                state.broken = true;
                self.metrics.close(1006, leg.initiator());
                self.close_other(leg);
            } else if quiet >= keepalive.ping_interval
                && state
                    .last_ping
                    .is_none_or(|p| p.elapsed() >= keepalive.ping_interval)
            {
                state.last_ping = Some(tokio::time::Instant::now());
                state.send(OpCode::Control(Control::Ping), true, &[]);
            }
        }
    }

    fn record_close(&mut self, code: u16, reason: &str, initiator: Initiator) {
        if self.summary.initiator.is_none() {
            self.summary.close_code = Some(code);
            self.summary.close_reason = reason.to_string();
            self.summary.initiator = Some(initiator.as_str());
        }
    }
}

/// The opcode of a data frame: its message's type on the first frame, continuation after.
fn data_opcode(first: bool, text: bool) -> OpCode {
    OpCode::Data(match (first, text) {
        (false, _) => Data::Continue,
        (true, true) => Data::Text,
        (true, false) => Data::Binary,
    })
}

#[cfg(test)]
mod tests;
