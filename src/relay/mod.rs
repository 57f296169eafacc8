//! The relay: one task per proxied WebSocket, moving messages between the client leg and the
//! backend leg and passing JSON text through the rules of its direction.
//!
//! tungstenite does the protocol work on each leg: it validates frames (masking, RSV bits,
//! control-frame sizes, UTF-8), reassembles fragments, enforces the size limit and answers pings
//! itself, so pings are not relayed (relaying them too would produce double pongs). What the
//! relay adds:
//! - text that parses as JSON goes through [`crate::rules::CompiledRules::apply`]; a message no rule changes is
//!   forwarded as its original bytes, a rejected one is answered to its sender instead;
//! - a close from one side is forwarded to the other with its code and reason;
//! - a leg that fails closes the other one itself: 1011 "upstream error" towards the client when
//!   the backend failed, 1001 towards the backend when the client went away.
//!
//! One task serves both directions with `select!`: while a message waits to be written to a slow
//! peer, nothing more is read from the other side, so memory per connection stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::{Initiator, MessageKind, Metrics, RuleMetrics};
use crate::rules::{Direction, Outcome, UnixTime};

/// How long the second half of a close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Initial read buffer per leg, also the most read per syscall. tungstenite's default (128 KiB)
/// would cost ~256 KiB per idle connection; chat messages are a few hundred bytes, and the
/// buffer grows on demand for a large one.
const READ_BUFFER_BYTES: usize = 2048;

/// How long, and how many bytes, a failed peer is drained before its socket is closed.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Queued output above this is written out even before the flush.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Messages relayed from one leg's already-received bytes before flushing the other leg.
const MAX_BATCH: usize = 64;

/// What the relay needs from the rest of the process.
pub struct RelayContext {
    /// Read on every message, so a reload applies to open connections' next messages.
    pub config: Arc<arc_swap::ArcSwap<Config>>,
    pub metrics: Arc<Metrics>,
    /// Becomes true when the process shuts down: both legs are then closed with 1001.
    pub shutdown: watch::Receiver<bool>,
    pub keepalive: Keepalive,
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

/// The tungstenite settings for both legs.
pub fn leg_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Messages are queued and written together (see `run`), then flushed at once.
        .write_buffer_size(WRITE_BATCH_BYTES)
        // tungstenite requires it above the write buffer size, whatever the message limit.
        .max_write_buffer_size(
            max_message_bytes
                .saturating_mul(2)
                .max(2 * WRITE_BATCH_BYTES),
        )
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Wraps an already-upgraded stream; `leftover` holds bytes read past the handshake.
pub async fn leg<S>(
    stream: S,
    leftover: Vec<u8>,
    role: Role,
    config: WebSocketConfig,
) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(stream, leftover, role, Some(config)).await
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

/// Per-leg state.
struct LegState {
    /// When the peer last sent anything (data, control or close).
    last_heard: tokio::time::Instant,
    /// When we last pinged it.
    last_ping: Option<tokio::time::Instant>,
    /// Nothing more will be read from it.
    done: bool,
    /// We sent it a close frame (forwarded or our own).
    close_sent: bool,
    /// It sent us a close frame.
    close_received: bool,
    /// We failed it for breaking the protocol: drain it before closing the socket.
    linger: bool,
}

/// Both legs of one proxied connection and what is known about their closing.
struct Conn<C, U> {
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    legs: [LegState; 2],
    summary: Summary,
    metrics: Arc<Metrics>,
    write_timeout: Duration,
    /// Legs with messages queued but not flushed.
    dirty: [bool; 2],
}

impl LegState {
    fn new() -> LegState {
        LegState {
            last_heard: tokio::time::Instant::now(),
            last_ping: None,
            done: false,
            close_sent: false,
            close_received: false,
            linger: false,
        }
    }
}

/// Relays until both legs are closed (or a close handshake times out).
pub async fn run<C, U>(
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    mut ctx: RelayContext,
) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        client,
        upstream,
        legs: [LegState::new(), LegState::new()],
        write_timeout: ctx.keepalive.idle_timeout,
        dirty: [false; 2],
        summary: Summary::default(),
        metrics: ctx.metrics.clone(),
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut shutting_down = false;
    let keepalive = ctx.keepalive;
    // Checking twice per interval keeps a ping at most half an interval late.
    let mut tick = tokio::time::interval(keepalive.ping_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !(conn.legs[0].done && conn.legs[1].done) {
        let (from, read) = tokio::select! {
            m = conn.client.next(), if !conn.legs[0].done => (Leg::Client, m),
            m = conn.upstream.next(), if !conn.legs[1].done => (Leg::Upstream, m),
            _ = tick.tick(), if deadline.is_none() => {
                conn.keepalive(keepalive).await;
                continue;
            }
            _ = sleep_until(deadline) => {
                debug!("Close handshake timed out; dropping the connection.");
                break;
            }
            _ = shutdown_signalled(&mut ctx.shutdown), if !shutting_down => {
                shutting_down = true;
                info!("Shutting down: closing both legs with 1001.");
                for leg in [Leg::Client, Leg::Upstream] {
                    conn.close_leg(leg, CloseCode::Away, "going away").await;
                }
                deadline.get_or_insert_with(close_deadline);
                continue;
            }
        };
        conn.legs[from as usize].last_heard = tokio::time::Instant::now();
        conn.handle(from, read, &ctx).await;
        // Relay whatever else that leg already has (no syscall: tokio knows the socket is
        // drained), then write the batch with one flush per leg.
        for _ in 1..MAX_BATCH {
            if conn.legs[from as usize].done {
                break;
            }
            let more = match from {
                Leg::Client => conn.client.next().now_or_never(),
                Leg::Upstream => conn.upstream.next().now_or_never(),
            };
            let Some(read) = more else { break };
            conn.handle(from, read, &ctx).await;
        }
        conn.flush_dirty().await;
        if conn
            .legs
            .iter()
            .any(|l| l.done || l.close_sent || l.close_received)
        {
            deadline.get_or_insert_with(close_deadline);
        }
    }
    if conn.legs[Leg::Client as usize].linger {
        linger(conn.client.get_mut()).await;
    }
    if conn.legs[Leg::Upstream as usize].linger {
        linger(conn.upstream.get_mut()).await;
    }
    conn.summary
}

/// Closes our side of a socket whose peer may still be sending, and discards what arrives for a
/// moment: closing with unread data makes the kernel send a reset, which can destroy the close
/// frame we just sent before the peer reads it.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A write that must finish within `timeout`: a peer that stopped reading must not hold the
/// other direction (and our memory) forever.
async fn within(
    timeout: Duration,
    write: impl std::future::Future<Output = Result<(), WsError>>,
) -> Result<(), WsError> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once; only a pending one pays for a timer.
    if let Some(done) = (&mut write).now_or_never() {
        return done;
    }
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| {
            Err(WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer stopped reading (write timed out)",
            )))
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

enum Forward {
    /// Pass on to the other leg.
    To(Message),
    /// Answer the sender (a rejected message).
    Back(Message),
}

/// Applies the rules to a data message.
fn transform(msg: Message, dir: Direction, ctx: &RelayContext) -> Forward {
    let text = match msg {
        Message::Text(text) => text,
        other => {
            ctx.metrics.message(dir, MessageKind::Binary, other.len());
            return Forward::To(other);
        }
    };
    let config = ctx.config.load();
    if !config.rules.applies_to(dir) {
        // No rule for this direction: not parsed, so not known to be JSON.
        ctx.metrics.message(dir, MessageKind::Text, text.len());
        return Forward::To(Message::Text(text));
    }
    let started = Instant::now();
    let outcome = config.rules.apply(
        dir,
        text.as_bytes(),
        UnixTime::now(),
        &mut RuleMetrics(&ctx.metrics),
    );
    let kind = if matches!(outcome, Outcome::NotJson) {
        MessageKind::Text
    } else {
        ctx.metrics.conversion(dir, started.elapsed().as_secs_f64());
        MessageKind::Json
    };
    ctx.metrics.message(dir, kind, text.len());
    match outcome {
        Outcome::Unchanged | Outcome::NotJson => Forward::To(Message::Text(text)),
        Outcome::Rewritten(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Forward::To(Message::text(s)),
            // The engine only splices UTF-8 into UTF-8; should that ever break, send the original.
            Err(_) => Forward::To(Message::Text(text)),
        },
        Outcome::Rejected { reply, rule } => {
            debug!(rule = %rule, direction = dir.as_str(), "Message rejected by a rule; the sender was told.");
            Forward::Back(Message::text(String::from_utf8_lossy(&reply).into_owned()))
        }
    }
}

impl<C, U> Conn<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    async fn handle(
        &mut self,
        from: Leg,
        read: Option<Result<Message, WsError>>,
        ctx: &RelayContext,
    ) {
        let to = from.other();
        match read {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                self.summary.messages[from as usize] += 1;
                let (target, msg) = match transform(msg, from.direction(), ctx) {
                    Forward::To(msg) => (to, msg),
                    Forward::Back(reply) => (from, reply),
                };
                let state = &self.legs[target as usize];
                if state.close_sent || state.done {
                    return; // That side is closing; nothing more can go there.
                }
                if let Err(e) = self.feed(target, msg).await {
                    self.on_leg_error(target, e).await;
                }
            }
            // Pings are answered by tungstenite on the leg that sent them.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                let state = &mut self.legs[from as usize];
                state.close_received = true;
                if state.close_sent {
                    return; // The answer to a close we sent.
                }
                // tungstenite answers it on that leg by itself.
                state.close_sent = true;
                let (code, reason) = match &frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                };
                self.metrics.close(code, from.initiator());
                self.record_close(code, &reason, from.initiator());
                let other = &mut self.legs[to as usize];
                if !other.close_sent && !other.done {
                    other.close_sent = true;
                    if self.send(to, Message::Close(frame)).await.is_err() {
                        self.legs[to as usize].done = true;
                    }
                }
            }
            Some(Err(e)) => self.on_leg_error(from, e).await,
            None => {
                let state = &mut self.legs[from as usize];
                state.done = true;
                if !state.close_received && !state.close_sent {
                    info!(leg = from.as_str(), "Peer went away without a close frame.");
                    self.metrics.close(1006, from.initiator());
                    self.close_other(from).await;
                }
            }
        }
    }

    /// Queues a data message on `to`; [`Conn::flush_dirty`] writes it out.
    async fn feed(&mut self, to: Leg, msg: Message) -> Result<(), WsError> {
        self.dirty[to as usize] = true;
        let write = async {
            match to {
                Leg::Client => self.client.feed(msg).await,
                Leg::Upstream => self.upstream.feed(msg).await,
            }
        };
        within(self.write_timeout, write).await
    }

    async fn flush_dirty(&mut self) {
        for leg in [Leg::Client, Leg::Upstream] {
            if !std::mem::take(&mut self.dirty[leg as usize]) || self.legs[leg as usize].done {
                continue;
            }
            let flush = async {
                match leg {
                    Leg::Client => self.client.flush().await,
                    Leg::Upstream => self.upstream.flush().await,
                }
            };
            if let Err(e) = within(self.write_timeout, flush).await {
                self.on_leg_error(leg, e).await;
            }
        }
    }

    /// Sends and flushes at once (control frames, our own closes).
    async fn send(&mut self, to: Leg, msg: Message) -> Result<(), WsError> {
        let write = async {
            match to {
                Leg::Client => self.client.send(msg).await,
                Leg::Upstream => self.upstream.send(msg).await,
            }
        };
        within(self.write_timeout, write).await
    }

    /// Pings quiet legs; closes legs that have been silent past the idle timeout.
    async fn keepalive(&mut self, keepalive: Keepalive) {
        for leg in [Leg::Client, Leg::Upstream] {
            let state = &self.legs[leg as usize];
            if state.done || state.close_sent {
                continue;
            }
            let quiet = state.last_heard.elapsed();
            if quiet >= keepalive.idle_timeout {
                info!(
                    leg = leg.as_str(),
                    quiet_ms = quiet.as_millis() as u64,
                    "Peer is silent past the idle timeout; closing."
                );
                self.metrics.close(1006, leg.initiator());
                self.legs[leg as usize].done = true;
                self.close_other(leg).await;
            } else if quiet >= keepalive.ping_interval
                && state
                    .last_ping
                    .is_none_or(|p| p.elapsed() >= keepalive.ping_interval)
            {
                self.legs[leg as usize].last_ping = Some(tokio::time::Instant::now());
                if let Err(e) = self.send(leg, Message::Ping(Default::default())).await {
                    self.on_leg_error(leg, e).await;
                }
            }
        }
    }

    /// Sends our own close frame to `leg`, once.
    async fn close_leg(&mut self, leg: Leg, code: CloseCode, reason: &'static str) {
        let state = &mut self.legs[leg as usize];
        if state.close_sent || state.done {
            return;
        }
        state.close_sent = true;
        self.metrics.close(u16::from(code), Initiator::Proxy);
        self.record_close(u16::from(code), reason, Initiator::Proxy);
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if self.send(leg, Message::Close(Some(frame))).await.is_err() {
            self.legs[leg as usize].done = true;
        }
    }

    /// A read or write on `leg` failed: tell that peer why if it can still hear it, and close
    /// the other leg on its behalf.
    async fn on_leg_error(&mut self, leg: Leg, error: WsError) {
        let own_code = match &error {
            WsError::Capacity(_) => Some((CloseCode::Size, "message too big")),
            WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            WsError::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
            _ => None,
        };
        match (&error, own_code) {
            (WsError::ConnectionClosed | WsError::AlreadyClosed, _) => {
                debug!(leg = leg.as_str(), "Leg closed.")
            }
            (_, Some(_)) => {
                info!(leg = leg.as_str(), error = %error, "Peer broke the protocol; closing its leg.")
            }
            (_, None) => warn!(leg = leg.as_str(), error = %error, "Leg failed."),
        }
        match own_code {
            Some((code, reason)) => {
                self.close_leg(leg, code, reason).await;
                // Its framing can no longer be trusted: read nothing more as frames.
                let state = &mut self.legs[leg as usize];
                state.done = true;
                state.linger = true;
            }
            None => {
                if !self.legs[leg as usize].close_received {
                    self.metrics.close(1006, leg.initiator());
                }
                self.legs[leg as usize].done = true;
            }
        }
        self.close_other(leg).await;
    }

    async fn close_other(&mut self, failed: Leg) {
        match failed {
            Leg::Upstream => {
                self.close_leg(Leg::Client, CloseCode::Error, "upstream error")
                    .await
            }
            Leg::Client => {
                self.close_leg(Leg::Upstream, CloseCode::Away, "client gone")
                    .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leg_config_is_valid_for_every_allowed_message_limit() {
        // tungstenite panics on an invalid config when a stream is created.
        for max in [125, 4096, 65_536, 1 << 20, 64 << 20] {
            let c = leg_config(max);
            assert!(c.max_write_buffer_size > c.write_buffer_size, "{max}");
            assert_eq!(c.max_message_size, Some(max));
        }
    }
}
