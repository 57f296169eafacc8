//! One proxied connection's loop: waits for either socket, a timer or shutdown, feeds what
//! arrived to the legs' state and writes out what that queued.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info};

use super::frames::{Codec, Parsed};
use super::io::{
    linger, read_some, shutdown_signalled, write_out, Gated, Incoming, READ_BUFFER_BYTES,
};
use super::legs::{free_if_large, Leg, Legs};
use super::{Leftovers, RelayContext, Summary};

/// How long the second half of a close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads relayed from one leg's already-received bytes before the batch is written out, and
/// the most output gathered for one write.
const MAX_BATCH: usize = 64;
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Both sockets of one proxied connection and their state.
pub(super) struct Conn<C, U> {
    client: C,
    backend: U,
    pub(super) incoming: [Incoming; 2],
    pub(super) legs: Legs,
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
    pub(super) fn new(client: C, backend: U, leftovers: Leftovers<'_>, ctx: &RelayContext) -> Self {
        let incoming = |role, leftover: &[u8], compressed: bool| {
            let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES.max(leftover.len()));
            buf.extend_from_slice(leftover);
            Incoming {
                codec: Codec::new(role, ctx.max_message_bytes, compressed),
                buf,
                need: 0,
                grown: false,
                filled: false,
            }
        };
        Conn {
            incoming: [
                incoming(Role::Server, leftovers.client, ctx.deflate.client.is_some()),
                incoming(
                    Role::Client,
                    leftovers.backend,
                    ctx.deflate.backend.is_some(),
                ),
            ],
            client,
            backend,
            legs: Legs::new(ctx),
            write_timeout: ctx.keepalive.idle_timeout,
        }
    }

    /// Lingers on a leg failed for breaking the protocol, then tells how the connection ended.
    pub(super) async fn finish(mut self) -> Summary {
        if self.legs.states[Leg::Client as usize].linger {
            linger(&mut self.client).await;
        }
        if self.legs.states[Leg::Backend as usize].linger {
            linger(&mut self.backend).await;
        }
        self.legs.summary
    }

    pub(super) async fn serve(&mut self, ctx: &RelayContext) {
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut shutting_down = false;
        let keepalive = ctx.keepalive;
        // Checking twice per interval keeps a ping at most half an interval late.
        let check_every = keepalive.ping_interval / 2;
        let tick = tokio::time::sleep(check_every);
        tokio::pin!(tick);
        let mut tick_waiting = false;
        let shutdown = shutdown_signalled(ctx.shutdown.clone(), ctx.drain_delay);
        tokio::pin!(shutdown);
        let mut shutdown_waiting = false;
        // Either peer may have sent frames right behind its handshake.
        self.relay_frames(Leg::Client, ctx);
        self.relay_frames(Leg::Backend, ctx);
        self.flush().await;

        let shutdown_sent = |_: &_| ctx.shutdown.has_changed().unwrap_or(false);
        while !self.legs.states.iter().all(|s| s.done) {
            let wake = {
                let [client_in, backend_in] = &mut self.incoming;
                let [client, backend] = &self.legs.states;
                tokio::select! {
                    r = read_some(&mut self.client, client_in), if client.readable() => Wake::Read(Leg::Client, r),
                    r = read_some(&mut self.backend, backend_in), if backend.readable() => Wake::Read(Leg::Backend, r),
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
                    for leg in [Leg::Client, Leg::Backend] {
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
                    for leg in [Leg::Client, Leg::Backend] {
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
                Leg::Backend => read_some(&mut self.backend, incoming).now_or_never(),
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
        while let Some(leg) = [Leg::Client, Leg::Backend].into_iter().find(|l| {
            let state = &self.legs.states[*l as usize];
            !state.broken && !state.out.is_empty()
        }) {
            let state = &mut self.legs.states[leg as usize];
            let result = match leg {
                Leg::Client => write_out(&mut self.client, &state.out, self.write_timeout).await,
                Leg::Backend => write_out(&mut self.backend, &state.out, self.write_timeout).await,
            };
            state.out.clear();
            free_if_large(&mut state.out);
            if let Err(e) = result {
                self.legs.on_io_error(leg, &e);
            }
        }
    }
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
