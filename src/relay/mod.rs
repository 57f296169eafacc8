//! The relay: one task per proxied WebSocket, moving frames between the client leg and the
//! backend leg and passing JSON text through the rules of its direction.
//!
//! Each leg is a socket with a read buffer and a write buffer; [`frames::Codec`] checks the
//! peer's frames in place (masking, reserved bits, control frames, fragmentation, UTF-8, the
//! size limit). What the relay does with them:
//! - a text message goes through [`crate::rules::CompiledRules::apply`]; one no rule changes is
//!   forwarded as its original bytes, a rejected one is answered to its sender instead, and one
//!   whose rewrite would exceed `max_message_bytes` is answered or closes its sender's leg with
//!   1009 (`on_oversized_rewrite`);
//! - binary frames are forwarded one by one as they arrive, never reassembled;
//! - pings are answered on the leg that sent them, not relayed (that would double the pongs);
//! - a close is answered on its leg and forwarded to the other with its code and reason;
//! - a leg that fails closes the other one: 1011 "upstream error" towards the client when the
//!   backend failed, 1001 "client gone" towards the backend when the client went away.
//!
//! One task serves both directions: it relays everything one leg has already received into the
//! other leg's write buffer, then writes that out at once. While a write waits on a slow peer,
//! nothing more is read from the other side, so memory per connection stays bounded.

mod frames;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info, warn};

use crate::config::{Config, OnOversizedRewrite};
use crate::logging::ConnectionLog;
use crate::metrics::{Initiator, MessageKind, Metrics, RuleMetrics};
use crate::rules::{Direction, Outcome, UnixTime};
use frames::{Codec, Event, FrameError, Parsed};

/// How long the second half of a close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffer per leg, and the least read per syscall. Chat messages are a few hundred bytes;
/// the buffer grows for a larger frame and is given back once that frame is relayed.
const READ_BUFFER_BYTES: usize = 2048;

/// Buffers that grew past this for one large message are freed once it is relayed.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

/// How long, and how many bytes, a failed peer is drained before its socket is closed.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Reads relayed from one leg's already-received bytes before the batch is written out, and
/// the most output gathered for one write.
const MAX_BATCH: usize = 64;
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Replies to rejected messages held back while a binary message is forwarded to the same
/// peer in fragments; past this, reading from that peer waits for the fragments' end.
const MAX_HELD_BYTES: usize = 64 * 1024;

/// What the relay needs from the rest of the process.
pub struct RelayContext {
    /// Read on every message, so a reload applies to open connections' next messages.
    pub config: Arc<arc_swap::ArcSwap<Config>>,
    pub metrics: Arc<Metrics>,
    /// Becomes true when the process shuts down: both legs are then closed with 1001.
    pub shutdown: watch::Receiver<bool>,
    pub keepalive: Keepalive,
    /// The largest message (and frame) accepted from either side; larger ones close with 1009.
    pub max_message_bytes: usize,
    /// Whether text messages go through the rules (not on an unrouted path).
    pub rewrite: bool,
    /// Names the connection in the relay's log events (the relay future is not instrumented:
    /// entering a span on every poll costs more than the rules).
    pub log: Arc<ConnectionLog>,
}

/// Liveness of the legs.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    /// A leg quiet for this long gets a ping.
    pub ping_interval: Duration,
    /// A leg that sent nothing (not even a pong) for this long is dead and is closed; a write
    /// that cannot complete for this long (a peer that stopped reading) fails the same way.
    pub idle_timeout: Duration,
}

/// How a connection ended, for the close log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub close_code: Option<u16>,
    pub close_reason: String,
    pub initiator: Option<&'static str>,
    pub messages: [u64; 2],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leg {
    Client,
    Upstream,
}

impl Leg {
    /// The direction of messages read from this leg.
    fn direction(self) -> Direction {
        match self {
            Leg::Client => Direction::ClientToBackend,
            Leg::Upstream => Direction::BackendToClient,
        }
    }

    fn other(self) -> Leg {
        match self {
            Leg::Client => Leg::Upstream,
            Leg::Upstream => Leg::Client,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Upstream => "upstream",
        }
    }

    fn initiator(self) -> Initiator {
        match self {
            Leg::Client => Initiator::Client,
            Leg::Upstream => Initiator::Upstream,
        }
    }
}

/// What a leg's peer sent that is not relayed yet.
struct Incoming {
    codec: Codec,
    buf: BytesMut,
    /// Bytes the frame at the start of `buf` needs in all (0 when unknown).
    need: usize,
    /// `buf` was grown past [`KEEP_BUFFER_BYTES`] for a large frame (its `capacity()` shrinks
    /// as bytes are consumed, so it cannot tell).
    grown: bool,
    /// The last read filled the buffer: more may be waiting in the socket.
    filled: bool,
}

/// A leg's output and what is known about its closing.
struct LegState {
    role: Role,
    /// Frames to write, sent at the end of each batch.
    out: Vec<u8>,
    /// `out` is inside a fragmented binary message: a data frame of our own must wait.
    mid_message: bool,
    /// Our own data frames (replies to rejected messages) waiting for that message's end.
    held: Vec<u8>,
    /// The peer sent something since the last keepalive check (a flag, not a clock read per
    /// message).
    heard: bool,
    /// When the peer was last found to have sent anything, to within a keepalive check.
    last_heard: tokio::time::Instant,
    /// When we last pinged it.
    last_ping: Option<tokio::time::Instant>,
    /// Nothing more will be read from it.
    done: bool,
    /// Its socket failed or reached its end: nothing more is written to it.
    broken: bool,
    /// We sent it a close frame (forwarded or our own).
    close_sent: bool,
    /// It sent us a close frame.
    close_received: bool,
    /// We failed it for breaking the protocol: drain it before closing the socket.
    linger: bool,
}

impl LegState {
    fn new(role: Role) -> LegState {
        LegState {
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
        }
    }

    /// Whether frames may still be queued for it.
    fn writable(&self) -> bool {
        !self.close_sent && !self.broken
    }

    /// Whether to read from its peer: not while too many replies wait to be sent to it.
    fn readable(&self) -> bool {
        !self.done && self.held.len() < MAX_HELD_BYTES
    }

    fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        frames::write_frame(&mut self.out, self.role, opcode, fin, payload);
    }

    /// Queues one frame of a message relayed from the other leg; the last one releases the
    /// replies held meanwhile.
    fn relay(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.send(opcode, fin, payload);
        self.mid_message = !fin;
        if fin && !self.held.is_empty() {
            self.out.append(&mut self.held);
            free_if_large(&mut self.held);
        }
    }

    /// Queues a text message of our own, after any fragmented message being relayed to it.
    fn reply(&mut self, text: &[u8]) {
        let out = if self.mid_message {
            &mut self.held
        } else {
            &mut self.out
        };
        frames::write_frame(out, self.role, OpCode::Data(Data::Text), true, text);
    }
}

/// Both legs' states, the summary and the metrics: everything the relaying logic changes
/// except the sockets and read buffers.
struct Legs {
    states: [LegState; 2],
    summary: Summary,
    metrics: Arc<Metrics>,
    log: Arc<ConnectionLog>,
}

/// Bytes each peer sent right behind its handshake, read before the relay started: the start
/// of that leg's stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Leftovers<'a> {
    pub client: &'a [u8],
    pub upstream: &'a [u8],
}

/// Relays until both legs are closed (or a close handshake times out).
pub async fn run<C, U>(
    client: C,
    upstream: U,
    leftovers: Leftovers<'_>,
    ctx: RelayContext,
) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn::new(client, upstream, leftovers, &ctx);
    conn.serve(&ctx).await;
    for leg in [Leg::Client, Leg::Upstream] {
        if conn.legs.states[leg as usize].linger {
            match leg {
                Leg::Client => linger(&mut conn.client).await,
                Leg::Upstream => linger(&mut conn.upstream).await,
            }
        }
    }
    conn.legs.summary
}

/// Both sockets of one proxied connection and their state.
struct Conn<C, U> {
    client: C,
    upstream: U,
    incoming: [Incoming; 2],
    legs: Legs,
    write_timeout: Duration,
}

/// What woke the relay.
enum Wake {
    Read(Leg, io::Result<usize>),
    Tick,
    CloseTimedOut,
    Shutdown,
}

impl<C, U> Conn<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    fn new(client: C, upstream: U, leftovers: Leftovers<'_>, ctx: &RelayContext) -> Self {
        let incoming = |role, leftover: &[u8]| {
            let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES.max(leftover.len()));
            buf.extend_from_slice(leftover);
            Incoming {
                codec: Codec::new(role, ctx.max_message_bytes),
                buf,
                need: 0,
                grown: false,
                filled: false,
            }
        };
        Conn {
            incoming: [
                incoming(Role::Server, leftovers.client),
                incoming(Role::Client, leftovers.upstream),
            ],
            client,
            upstream,
            legs: Legs {
                states: [LegState::new(Role::Server), LegState::new(Role::Client)],
                summary: Summary::default(),
                metrics: ctx.metrics.clone(),
                log: ctx.log.clone(),
            },
            write_timeout: ctx.keepalive.idle_timeout,
        }
    }

    async fn serve(&mut self, ctx: &RelayContext) {
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut shutting_down = false;
        let keepalive = ctx.keepalive;
        // Checking twice per interval keeps a ping at most half an interval late.
        let check_every = keepalive.ping_interval / 2;
        let tick = tokio::time::sleep(check_every);
        tokio::pin!(tick);
        let mut tick_waiting = false;
        let shutdown = shutdown_signalled(ctx.shutdown.clone());
        tokio::pin!(shutdown);
        let mut shutdown_waiting = false;
        // Either peer may have sent frames right behind its handshake.
        self.relay_frames(Leg::Client, ctx);
        self.relay_frames(Leg::Upstream, ctx);
        self.flush().await;

        let shutdown_sent = |_: &_| ctx.shutdown.has_changed().unwrap_or(false);
        while !self.legs.states.iter().all(|s| s.done) {
            let wake = {
                let [client_in, upstream_in] = &mut self.incoming;
                let [client, upstream] = &self.legs.states;
                tokio::select! {
                    r = read_some(&mut self.client, client_in), if client.readable() => Wake::Read(Leg::Client, r),
                    r = read_some(&mut self.upstream, upstream_in), if upstream.readable() => Wake::Read(Leg::Upstream, r),
                    _ = Gated::new(tick.as_mut(), &mut tick_waiting, Sleep::is_elapsed), if deadline.is_none() => Wake::Tick,
                    _ = sleep_until(deadline), if deadline.is_some() => Wake::CloseTimedOut,
                    _ = Gated::new(shutdown.as_mut(), &mut shutdown_waiting, shutdown_sent), if !shutting_down => Wake::Shutdown,
                }
            };
            match wake {
                Wake::Read(from, read) => {
                    self.on_read(from, read, ctx);
                    self.relay_ready(from, ctx);
                }
                Wake::Tick => {
                    tick.as_mut()
                        .reset(tokio::time::Instant::now() + check_every);
                    tick_waiting = false;
                    // A long blocked write kept us from reading: what arrived meanwhile
                    // counts before a leg is judged silent.
                    for leg in [Leg::Client, Leg::Upstream] {
                        self.incoming[leg as usize].filled = true;
                        self.relay_ready(leg, ctx);
                    }
                    self.legs.keepalive(keepalive);
                }
                Wake::CloseTimedOut => {
                    debug!(parent: &self.legs.log.span(), "Close handshake timed out; dropping the connection.");
                    break;
                }
                Wake::Shutdown => {
                    shutting_down = true;
                    info!(parent: &self.legs.log.span(), "Shutting down: closing both legs with 1001.");
                    for leg in [Leg::Client, Leg::Upstream] {
                        self.legs.close_leg(leg, 1001, "going away");
                    }
                }
            }
            self.flush().await;
            if self
                .legs
                .states
                .iter()
                .any(|l| l.done || l.close_sent || l.close_received)
            {
                deadline.get_or_insert_with(close_deadline);
            }
        }
    }

    /// Relays what `leg` has already received, up to a batch, without waiting. A read that did
    /// not fill the buffer drained the socket (tokio assumes so too), so it is not tried again.
    fn relay_ready(&mut self, leg: Leg, ctx: &RelayContext) {
        for _ in 1..MAX_BATCH {
            let states = &self.legs.states;
            let full = states.iter().any(|s| s.out.len() >= WRITE_BATCH_BYTES);
            let incoming = &mut self.incoming[leg as usize];
            if full || !incoming.filled || !states[leg as usize].readable() {
                return;
            }
            let read = match leg {
                Leg::Client => read_some(&mut self.client, incoming).now_or_never(),
                Leg::Upstream => read_some(&mut self.upstream, incoming).now_or_never(),
            };
            let Some(read) = read else {
                return;
            };
            self.on_read(leg, read, ctx);
        }
    }

    fn on_read(&mut self, from: Leg, read: io::Result<usize>, ctx: &RelayContext) {
        self.legs.states[from as usize].heard = true;
        match read {
            Ok(0) => self.legs.on_end(from),
            Ok(_) => self.relay_frames(from, ctx),
            Err(e) => self.legs.on_io_error(from, &e),
        }
    }

    /// Relays every complete frame in `from`'s read buffer.
    fn relay_frames(&mut self, from: Leg, ctx: &RelayContext) {
        let incoming = &mut self.incoming[from as usize];
        while !self.legs.states[from as usize].done {
            match incoming.codec.parse(&mut incoming.buf[..]) {
                Ok(Parsed::NeedMore(need)) => {
                    incoming.need = need;
                    break;
                }
                Ok(Parsed::Frame { consumed, event }) => {
                    if let Some(event) = event {
                        self.legs.on_event(from, event, ctx);
                        incoming.codec.release();
                    }
                    incoming.buf.advance(consumed);
                    incoming.need = 0;
                }
                Err(e) => {
                    self.legs.on_frame_error(from, &e);
                    break;
                }
            }
        }
        if incoming.grown && incoming.buf.len() <= READ_BUFFER_BYTES {
            let mut small = BytesMut::with_capacity(READ_BUFFER_BYTES);
            small.extend_from_slice(&incoming.buf);
            incoming.buf = small;
            incoming.grown = false;
        }
    }

    /// Writes out every leg's queued frames; a failed write closes the other leg, whose close
    /// frame is then written too.
    async fn flush(&mut self) {
        while let Some(leg) = [Leg::Client, Leg::Upstream].into_iter().find(|l| {
            let state = &self.legs.states[*l as usize];
            !state.broken && !state.out.is_empty()
        }) {
            let state = &mut self.legs.states[leg as usize];
            let result = match leg {
                Leg::Client => write_out(&mut self.client, &state.out, self.write_timeout).await,
                Leg::Upstream => {
                    write_out(&mut self.upstream, &state.out, self.write_timeout).await
                }
            };
            state.out.clear();
            free_if_large(&mut state.out);
            if let Err(e) = result {
                self.legs.on_io_error(leg, &e);
            }
        }
    }
}

impl Legs {
    fn on_event(&mut self, from: Leg, event: Event<'_>, ctx: &RelayContext) {
        let to = from.other();
        let dir = from.direction();
        match event {
            Event::Text(text) => {
                self.summary.messages[from as usize] += 1;
                if !self.states[to as usize].writable() {
                    debug!(parent: &self.log.span(), direction = dir.as_str(), "Message dropped: its receiver is closing.");
                    return;
                }
                let text_frame = OpCode::Data(Data::Text);
                match transform(text, dir, ctx) {
                    Forward::Original => {
                        self.states[to as usize].relay(text_frame, true, text.as_bytes())
                    }
                    Forward::Rewritten(mut bytes) => {
                        self.states[to as usize].relay(text_frame, true, &bytes);
                        free_if_large(&mut bytes);
                        REWRITE_BUFFER.set(bytes);
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
            Event::Binary {
                payload,
                first,
                fin,
            } => {
                if first {
                    self.summary.messages[from as usize] += 1;
                    ctx.metrics.message(dir, MessageKind::Binary, payload.len());
                } else {
                    ctx.metrics.fragment(dir, payload.len());
                }
                let opcode = OpCode::Data(if first { Data::Binary } else { Data::Continue });
                let state = &mut self.states[to as usize];
                if state.writable() {
                    state.relay(opcode, fin, payload);
                }
            }
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

    fn on_close(&mut self, from: Leg, close: Option<(u16, &str)>) {
        let to = from.other();
        let state = &mut self.states[from as usize];
        state.close_received = true;
        state.done = true;
        if state.close_sent {
            return; // The answer to a close we sent.
        }
        // Answered on its leg with the same code, as RFC 6455 §5.5.1 suggests.
        state.close_sent = true;
        frames::write_close(&mut state.out, state.role, close);
        let (code, reason) = close.unwrap_or((1005, ""));
        self.metrics.close(code, from.initiator());
        self.record_close(code, reason, from.initiator());
        let other = &mut self.states[to as usize];
        if other.writable() {
            other.close_sent = true;
            frames::write_close(&mut other.out, other.role, close);
        }
    }

    /// The peer ended the stream (or reset it).
    fn on_end(&mut self, leg: Leg) {
        let state = &mut self.states[leg as usize];
        state.done = true;
        state.broken = true;
        if !state.close_received && !state.close_sent {
            info!(parent: &self.log.span(), leg = leg.as_str(), "Peer went away without a close frame.");
            self.metrics.close(1006, leg.initiator());
            self.close_other(leg);
        }
    }

    fn on_io_error(&mut self, leg: Leg, error: &io::Error) {
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
    fn on_frame_error(&mut self, leg: Leg, error: &FrameError) {
        info!(parent: &self.log.span(), leg = leg.as_str(), error = %error, "Peer broke the protocol; closing its leg.");
        self.close_leg(leg, error.close_code(), error.close_reason());
        let state = &mut self.states[leg as usize];
        state.done = true;
        state.linger = true;
        self.close_other(leg);
    }

    fn close_other(&mut self, failed: Leg) {
        match failed {
            Leg::Upstream => self.close_leg(Leg::Client, 1011, "upstream error"),
            Leg::Client => self.close_leg(Leg::Upstream, 1001, "client gone"),
        }
    }

    /// Queues our own close frame for `leg`, once.
    fn close_leg(&mut self, leg: Leg, code: u16, reason: &'static str) {
        let state = &mut self.states[leg as usize];
        if !state.writable() {
            return;
        }
        state.close_sent = true;
        frames::write_close(&mut state.out, state.role, Some((code, reason)));
        self.metrics.close(code, Initiator::Proxy);
        self.record_close(code, reason, Initiator::Proxy);
    }

    /// Pings quiet legs; closes legs that have been silent past the idle timeout.
    fn keepalive(&mut self, keepalive: Keepalive) {
        for leg in [Leg::Client, Leg::Upstream] {
            let log = &self.log;
            let state = &mut self.states[leg as usize];
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

/// Reads what the socket has into the leg's buffer, with room for at least the frame being
/// received (so a large one is not read a few bytes at a time).
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    incoming: &mut Incoming,
) -> io::Result<usize> {
    let have = incoming.buf.len();
    let want = incoming.need.saturating_sub(have);
    // Grown with what has arrived, at most doubling, not with what a header claims.
    let step = want.min(have.max(KEEP_BUFFER_BYTES));
    incoming.buf.reserve(step.max(READ_BUFFER_BYTES / 2));
    if incoming.buf.capacity() > KEEP_BUFFER_BYTES {
        incoming.grown = true;
    }
    let room = incoming.buf.capacity() - incoming.buf.len();
    let read = stream.read_buf(&mut incoming.buf).await;
    incoming.filled = matches!(read, Ok(n) if n == room);
    read
}

/// Gives back an emptied buffer that grew for one large message.
fn free_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER_BYTES {
        *buf = Vec::new();
    }
}

async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    within(timeout, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
}

/// Closes our side of a socket whose peer may still be sending, and discards what arrives for a
/// moment: closing with unread data makes the kernel send a reset, which can destroy the close
/// frame we just sent before the peer reads it.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let drain = async {
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 4096];
        let mut left = LINGER_MAX_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// Resolves once the process starts shutting down (never, if the signal is gone).
async fn shutdown_signalled(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A write that must finish within `timeout`: a peer that stopped reading must not hold the
/// other direction (and our memory) forever.
async fn within(
    timeout: Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once; only a pending one pays for a timer.
    if let Some(done) = (&mut write).now_or_never() {
        return done;
    }
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading (write timed out)",
            ))
        })
}

fn close_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + CLOSE_TIMEOUT
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A timer or signal future that is polled again only once `may_have_fired` says so: one that
/// answered `Pending` keeps the task's waker until it fires, and polling it on every pass of the
/// relay loop (twice per message) is measurable. The check runs inside `poll`, not as a
/// `select!` precondition: those are evaluated once per `select!`, so a wake-up from this future
/// alone would find its branch still off and be lost.
struct Gated<'a, F, P> {
    inner: Pin<&'a mut F>,
    waiting: &'a mut bool,
    may_have_fired: P,
}

impl<'a, F: Future, P: Fn(&F) -> bool> Gated<'a, F, P> {
    fn new(inner: Pin<&'a mut F>, waiting: &'a mut bool, may_have_fired: P) -> Self {
        Gated {
            inner,
            waiting,
            may_have_fired,
        }
    }
}

impl<F: Future, P: Fn(&F) -> bool + Unpin> Future for Gated<'_, F, P> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if *this.waiting && !(this.may_have_fired)(this.inner.as_ref().get_ref()) {
            return Poll::Pending;
        }
        // Out of coop budget, tokio's timers and watches answer `Pending` without keeping the
        // waker: such an answer is no wait.
        let registered = tokio::task::coop::has_budget_remaining();
        let polled = this.inner.as_mut().poll(cx);
        *this.waiting = polled.is_pending() && registered;
        polled
    }
}

thread_local! {
    /// The buffer the rules wrote the last rewritten message into, lent to the next: it is
    /// copied into the leg's output at once, so one per thread does for every connection.
    static REWRITE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Where a text message goes after the rules.
enum Forward {
    /// To the other leg, as received.
    Original,
    /// To the other leg, rewritten.
    Rewritten(Vec<u8>),
    /// Back to the sender (a rejected message).
    Back(Vec<u8>),
    /// Nowhere: the sender's leg is closed with 1009 (a rewrite over the size limit).
    Close,
}

impl Forward {
    /// A reply of the engine to the sender, as valid UTF-8 whatever happens: it goes in a text
    /// frame.
    fn back(reply: Vec<u8>) -> Forward {
        Forward::Back(String::from_utf8_lossy(&reply).into_owned().into_bytes())
    }
}

/// Applies the rules of `dir` to a text message.
fn transform(text: &str, dir: Direction, ctx: &RelayContext) -> Forward {
    let config = ctx.config.load();
    if !ctx.rewrite || !config.rules.applies_to(dir) {
        // No rule for this direction: not parsed, so not known to be JSON.
        ctx.metrics.message(dir, MessageKind::Text, text.len());
        return Forward::Original;
    }
    let started = Instant::now();
    let outcome = config.rules.apply_text_into(
        dir,
        text,
        UnixTime::now,
        &mut RuleMetrics::new(&ctx.metrics),
        REWRITE_BUFFER.take(),
    );
    let kind = if matches!(outcome, Outcome::NotJson) {
        debug!(parent: &ctx.log.span(), direction = dir.as_str(), bytes = text.len(), "Message is not JSON the rules can read; forwarded unchanged.");
        MessageKind::Text
    } else {
        ctx.metrics.conversion(dir, started.elapsed().as_secs_f64());
        MessageKind::Json
    };
    ctx.metrics.message(dir, kind, text.len());
    match outcome {
        Outcome::Unchanged | Outcome::NotJson => Forward::Original,
        // The engine splices UTF-8 into UTF-8; should that ever break, send the original.
        Outcome::Rewritten(bytes) if frames::utf8(&bytes).is_ok() => Forward::Rewritten(bytes),
        Outcome::Rewritten(_) => Forward::Original,
        Outcome::Rejected { reply, rule } => {
            debug!(parent: &ctx.log.span(), rule = %rule, direction = dir.as_str(), "Message rejected by a rule; the sender was told.");
            Forward::back(reply)
        }
        Outcome::TooLarge { reply, len } => {
            let policy = config.websocket.on_oversized_rewrite;
            debug!(parent: &ctx.log.span(), direction = dir.as_str(), bytes = len, limit = config.websocket.max_message_bytes, policy = policy.as_str(), "Rewritten message would exceed max_message_bytes; not forwarded.");
            match policy {
                OnOversizedRewrite::Reject => Forward::back(reply),
                OnOversizedRewrite::Close => Forward::Close,
            }
        }
    }
}

#[cfg(test)]
mod tests;
