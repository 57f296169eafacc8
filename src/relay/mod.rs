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
//! - with passthrough ([`Deflate::passthrough`]), the backend's compressed frames go to the
//!   client as they came, never inflated, and the rules never see that direction;
//! - pings are answered on the leg that sent them, not relayed (that would double the pongs);
//! - a close is answered on its leg and forwarded to the other with its code and reason;
//! - a leg that fails closes the other one: 1011 "backend error" towards the client when the
//!   backend failed, 1001 "client gone" towards the backend when the client went away.
//!
//! One task serves both directions: it relays everything one leg has already received into the
//! other leg's write buffer, then writes that out at once. While a write waits on a slow peer,
//! nothing more is read from the other side, so memory per connection stays bounded.
//!
//! Its stages, one file each: `conn` (the loop: sockets, timers, shutdown) reads bytes,
//! `frames` (the codec, no IO) cuts them into events, `legs` (both legs' state, no IO) decides
//! what each event does, `rewrite` passes text through the rules, and `io` holds the socket
//! helpers.

mod buffers;
mod conn;
pub mod deflate;
mod frames;
// The frame writer and masking, for the test tools' own WebSocket peers.
pub use frames::{apply_mask, write_frame_rsv1};
mod io;
mod legs;
pub mod metrics;
mod rewrite;
pub mod rule_metrics;
pub mod wire_metrics;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::logging::ConnectionLog;
use crate::metrics::Metrics;
use crate::rules::CompiledRules;
use conn::Conn;
use metrics::RouteMetrics;

/// What the relay needs from the rest of the process.
pub struct RelayContext {
    /// The rules text messages go through (none on an unrouted path). Read on every message,
    /// so a reload applies to open connections' next messages (not in a direction passed
    /// through, which was decided by the rules at the handshake).
    pub rules: Option<Arc<ArcSwap<CompiledRules>>>,
    pub metrics: Arc<Metrics>,
    /// The connection's route's series, resolved once for it.
    pub route_metrics: Arc<RouteMetrics>,
    /// Becomes true when the process shuts down: both legs are then closed with 1001, after
    /// `drain_delay` (the connection's place in the staged drain; it keeps relaying meanwhile).
    pub shutdown: watch::Receiver<bool>,
    pub drain_delay: Duration,
    pub keepalive: Keepalive,
    /// The largest message (and frame) accepted from either side; larger ones close with 1009.
    pub max_message_bytes: usize,
    /// Names the connection in the relay's log events (the relay future is not instrumented:
    /// entering a span on every poll costs more than the rules).
    pub log: Arc<ConnectionLog>,
    /// permessage-deflate as negotiated on each leg.
    pub deflate: Deflate,
}

/// permessage-deflate on both legs: `None` where it was not negotiated.
#[derive(Clone, Copy, Debug)]
pub struct Deflate {
    pub client: Option<deflate::LegDeflate>,
    pub backend: Option<deflate::LegDeflate>,
    pub settings: deflate::DeflateSettings,
    /// The backend's messages go to the client as they came, compressed ones never inflated
    /// (both legs compressed, the backend's window within the client's, and no rule for that
    /// direction when the connection opened): wsnorm then compresses nothing of its own for the
    /// client, whose inflater follows the backend's stream.
    pub passthrough: bool,
    /// What wsnorm sends the backend is compressed (where the backend leg is).
    pub compress_to_backend: bool,
}

impl Deflate {
    /// Whether messages of `dir` pass as they came, not read by the rules.
    pub fn passes(&self, dir: crate::rules::Direction) -> bool {
        self.passthrough && dir == crate::rules::Direction::BackendToClient
    }
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

/// How a connection ended, for the close log line. Counts are indexed by [`Direction`]:
/// from the client, then from the backend.
///
/// [`Direction`]: crate::rules::Direction
#[derive(Debug, Default)]
pub struct Summary {
    pub close_code: Option<u16>,
    pub close_reason: String,
    pub initiator: Option<&'static str>,
    /// Data messages received.
    pub messages: [u64; 2],
    /// Payload bytes of data messages received.
    pub bytes: [u64; 2],
}

/// Bytes each peer sent right behind its handshake, read before the relay started: the start
/// of that leg's stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Leftovers<'a> {
    pub client: &'a [u8],
    pub backend: &'a [u8],
}

/// Relays until both legs are closed (or a close handshake times out).
pub async fn run<C, U>(
    client: C,
    backend: U,
    leftovers: Leftovers<'_>,
    ctx: RelayContext,
) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn::new(client, backend, leftovers, &ctx);
    conn.serve(&ctx).await;
    conn.finish().await
}

#[cfg(test)]
mod tests;
