//! The socket side of the relay: reads into the thread's buffer (or, for a frame that has not
//! fully arrived, into the connection's own, sized to that frame), writes that cannot hang
//! forever, lingering on a failed peer, and the gated timers of the loop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::buffers::{self, KEEP_BYTES, READ_BYTES};
use super::frames::Codec;

/// The least a read into a connection's own buffer asks for.
const MIN_READ_BYTES: usize = 1024;

/// How long, and how many bytes, a failed peer is drained before its socket is closed.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// What a leg's peer sent that is not relayed yet.
pub(super) struct Incoming {
    pub(super) codec: Codec,
    /// The start of a frame that has not fully arrived; empty, without a buffer, otherwise.
    pub(super) buf: BytesMut,
    /// Bytes just read into the thread's read buffer ([`buffers::with_read`]), to be relayed
    /// before anything else runs on this thread.
    pub(super) fresh: usize,
    /// Bytes the frame at the start of `buf` needs in all (0 when unknown).
    pub(super) need: usize,
    /// `buf` was grown past [`KEEP_BYTES`] for a large frame (its `capacity()` shrinks as bytes
    /// are consumed, so it cannot tell).
    pub(super) grown: bool,
    /// The last read filled the buffer: more may be waiting in the socket.
    pub(super) filled: bool,
}

/// Reads what the socket has: into the thread's read buffer when the connection holds no
/// partial frame (the usual case), else into its own buffer with room for at least the frame
/// being received (so a large one is not read a few bytes at a time).
pub(super) async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    incoming: &mut Incoming,
) -> io::Result<usize> {
    if incoming.buf.is_empty() {
        // Borrowed only inside one poll: a read that is pending has written nothing.
        let read = std::future::poll_fn(|cx| {
            buffers::with_read(|buf| {
                let mut buf = ReadBuf::new(buf);
                Pin::new(&mut *stream)
                    .poll_read(cx, &mut buf)
                    .map_ok(|()| buf.filled().len())
            })
        })
        .await;
        incoming.fresh = *read.as_ref().unwrap_or(&0);
        incoming.filled = incoming.fresh == READ_BYTES;
        return read;
    }
    let have = incoming.buf.len();
    let want = incoming.need.saturating_sub(have);
    // Grown with what has arrived, at most doubling, not with what a header claims.
    let step = want.min(have.max(KEEP_BYTES));
    incoming.buf.reserve(step.max(MIN_READ_BYTES));
    if incoming.buf.capacity() > KEEP_BYTES {
        incoming.grown = true;
    }
    let room = incoming.buf.capacity() - incoming.buf.len();
    let read = stream.read_buf(&mut incoming.buf).await;
    incoming.filled = matches!(read, Ok(n) if n == room);
    read
}

pub(super) async fn write_out<S: AsyncWrite + Unpin>(
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
pub(super) async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let drain = async {
        let _ = stream.shutdown().await;
        // On the heap: an array here would sit in every connection's task for its whole life.
        let mut buf = vec![0u8; 4096];
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
pub(super) async fn shutdown_signalled(mut shutdown: watch::Receiver<bool>) {
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
    // Boxed: the timer would otherwise sit in every connection's task for its whole life.
    Box::pin(tokio::time::timeout(timeout, write))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading (write timed out)",
            ))
        })
}

/// A timer or signal future that is polled again only once `may_have_fired` says so: one that
/// answered `Pending` keeps the task's waker until it fires, and polling it on every pass of the
/// relay loop (twice per message) is measurable. The check runs inside `poll`, not as a
/// `select!` precondition: those are evaluated once per `select!`, so a wake-up from this future
/// alone would find its branch still off and be lost.
pub(super) struct Gated<'a, F, P> {
    inner: Pin<&'a mut F>,
    waiting: &'a mut bool,
    may_have_fired: P,
}

impl<'a, F: Future, P: Fn(&F) -> bool> Gated<'a, F, P> {
    pub(super) fn new(inner: Pin<&'a mut F>, waiting: &'a mut bool, may_have_fired: P) -> Self {
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
