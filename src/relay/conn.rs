//! One proxied connection's loop: waits for either socket, a timer or shutdown, feeds what
//! arrived to the legs' state and writes out what that queued.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info};

use super::buffers::{self, READ_BYTES};
use super::frames::{Codec, Parsed};
use super::io::{linger, read_some, shutdown_signalled, write_out, Gated, Incoming};
use super::legs::{Leg, Legs};
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
    Timer,
    Shutdown,
}

/// What the connection's one timer is set for: the next keepalive check, the connection's turn
/// in a staged drain, and the close handshake's deadline. One timer, not three: each sits in
/// every connection's task for its whole life.
struct Clocks {
    check_at: Instant,
    /// When the process began shutting down, plus this connection's wait.
    drain_at: Option<Instant>,
    shutting_down: bool,
    /// Once a leg is closing: keepalive stops, and the close must finish by then.
    close_by: Option<Instant>,
}

impl Clocks {
    fn next(&self) -> Instant {
        let own = self.close_by.unwrap_or(self.check_at);
        match self.drain_at {
            Some(at) if !self.shutting_down => own.min(at),
            _ => own,
        }
    }
}

impl<C, U> Conn<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn new(client: C, backend: U, leftovers: Leftovers<'_>, ctx: &RelayContext) -> Self {
        let incoming = |role, leftover: &[u8], compressed: bool| Incoming {
            codec: Codec::new(role, ctx.max_message_bytes, compressed),
            buf: BytesMut::from(leftover),
            fresh: 0,
            need: 0,
            grown: false,
            filled: false,
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
    pub(super) async fn finish(&mut self) -> Summary {
        if self.legs.states[Leg::Client as usize].linger {
            linger(&mut self.client).await;
        }
        if self.legs.states[Leg::Backend as usize].linger {
            linger(&mut self.backend).await;
        }
        std::mem::take(&mut self.legs.summary)
    }

    pub(super) async fn serve(&mut self, ctx: &RelayContext) {
        let keepalive = ctx.keepalive;
        // Checking twice per interval keeps a ping at most half an interval late.
        let check_every = keepalive.ping_interval / 2;
        let mut clocks = Clocks {
            check_at: Instant::now() + check_every,
            drain_at: None,
            shutting_down: false,
            close_by: None,
        };
        let timer = tokio::time::sleep_until(clocks.next());
        tokio::pin!(timer);
        let mut timer_waiting = false;
        let signal = shutdown_signalled(ctx.shutdown.clone());
        tokio::pin!(signal);
        let mut signal_waiting = false;
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
                    _ = Gated::new(timer.as_mut(), &mut timer_waiting, Sleep::is_elapsed) => Wake::Timer,
                    _ = Gated::new(signal.as_mut(), &mut signal_waiting, shutdown_sent), if clocks.drain_at.is_none() => Wake::Shutdown,
                }
            };
            match wake {
                Wake::Read(from, read) => {
                    self.on_read(from, read, ctx);
                    self.relay_ready(from, ctx);
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if clocks.close_by.is_some_and(|by| now >= by) {
                        debug!(parent: &self.legs.log.span(), "Close handshake timed out; dropping the connection.");
                        break;
                    }
                    if !clocks.shutting_down && clocks.drain_at.is_some_and(|at| now >= at) {
                        clocks.shutting_down = true;
                        info!(parent: &self.legs.log.span(), "Shutting down: closing both legs with 1001.");
                        for leg in [Leg::Client, Leg::Backend] {
                            self.legs.close_leg(leg, 1001, "going away");
                        }
                    }
                    if clocks.close_by.is_none() && now >= clocks.check_at {
                        clocks.check_at = now + check_every;
                        // A long blocked write kept us from reading: what arrived meanwhile
                        // counts before a leg is judged silent.
                        for leg in [Leg::Client, Leg::Backend] {
                            self.incoming[leg as usize].filled = true;
                            self.relay_ready(leg, ctx);
                        }
                        self.legs.keepalive(keepalive);
                    }
                    // Every clock that was due has moved on, so this does not fire again at once.
                    timer_waiting = false;
                }
                // Its turn in the staged drain comes `drain_delay` later; it relays until then.
                Wake::Shutdown => clocks.drain_at = Some(Instant::now() + ctx.drain_delay),
            }
            self.flush().await;
            let closing = self
                .legs
                .states
                .iter()
                .any(|l| l.done || l.close_sent || l.close_received);
            if closing && clocks.close_by.is_none() {
                clocks.close_by = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            if timer.deadline() != clocks.next() {
                timer.as_mut().reset(clocks.next());
                timer_waiting = false;
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

    /// Relays every complete frame `from` has sent: the bytes just read into the thread's
    /// buffer, or those held after a partial frame. Only the start of a frame still arriving
    /// stays with the connection.
    fn relay_frames(&mut self, from: Leg, ctx: &RelayContext) {
        let fresh = std::mem::take(&mut self.incoming[from as usize].fresh);
        if fresh > 0 {
            buffers::with_read(|buf| {
                let used = self.parse(from, &mut buf[..fresh], ctx);
                if !self.legs.states[from as usize].done {
                    let held = &mut self.incoming[from as usize].buf;
                    held.extend_from_slice(&buf[used..fresh]);
                }
            });
        } else {
            let mut held = std::mem::take(&mut self.incoming[from as usize].buf);
            let used = self.parse(from, &mut held[..], ctx);
            held.advance(used);
            self.incoming[from as usize].buf = held;
        }
        let incoming = &mut self.incoming[from as usize];
        if incoming.buf.is_empty() {
            incoming.buf = BytesMut::new();
            incoming.grown = false;
        } else if incoming.grown && incoming.buf.len() <= READ_BYTES {
            incoming.buf = BytesMut::from(&incoming.buf[..]);
            incoming.grown = false;
        }
    }

    /// Relays the complete frames at the start of `data`; tells how many bytes they took.
    fn parse(&mut self, from: Leg, data: &mut [u8], ctx: &RelayContext) -> usize {
        let mut used = 0;
        let incoming = &mut self.incoming[from as usize];
        while !self.legs.states[from as usize].done {
            match incoming.codec.parse(&mut data[used..]) {
                Ok(Parsed::NeedMore(need)) => {
                    incoming.need = need;
                    break;
                }
                Ok(Parsed::Frame { consumed, event }) => {
                    if let Some(event) = event {
                        self.legs.on_event(from, event, ctx);
                        incoming.codec.release();
                    }
                    used += consumed;
                    incoming.need = 0;
                }
                Err(e) => {
                    self.legs.on_frame_error(from, &e);
                    break;
                }
            }
        }
        used
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
            buffers::give_back(std::mem::take(&mut state.out));
            if let Err(e) = result {
                self.legs.on_io_error(leg, &e);
            }
        }
    }
}
