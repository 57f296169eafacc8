//! Buffers lent to a connection only while it has bytes to move. Chat sockets are quiet most of
//! their life, so what a quiet connection holds decides how many fit in a pod: it holds no read
//! or write buffer, only the bytes of a frame that has not fully arrived. Reads land in one
//! buffer per thread; write buffers come from a per-thread pool and go back once flushed.

use std::cell::{Cell, RefCell};

/// The per-thread read buffer: the most read per syscall when a connection holds no partial
/// frame. Large enough that a burst of chat messages is one read.
pub(super) const READ_BYTES: usize = 16 * 1024;

/// Buffers that grew past this for one large message are freed instead of kept (in a pool or
/// by a connection).
pub(super) const KEEP_BYTES: usize = 64 * 1024;

/// Write buffers kept per thread: one per leg being flushed at once is all a thread uses, the
/// rest absorbs bursts.
const POOL_MAX: usize = 8;

/// The largest write buffer the pool keeps: one that grew for a large message is freed, so the
/// pool holds at most `POOL_MAX` of these after a burst.
const POOL_BUFFER_BYTES: usize = 16 * 1024;

thread_local! {
    static READ: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's read buffer ([`READ_BYTES`] long). `f` must not call back into
/// `with_read` (it would get an empty buffer).
pub(super) fn with_read<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ.take();
    if buf.len() < READ_BYTES {
        buf = vec![0; READ_BYTES];
    }
    let result = f(&mut buf);
    READ.set(buf);
    result
}

/// An empty write buffer, from the pool when it has one.
pub(super) fn take_write() -> Vec<u8> {
    POOL.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Gives a flushed write buffer back to the pool (or frees it, when it grew large or the pool
/// is full).
pub(super) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > POOL_BUFFER_BYTES {
        return;
    }
    buf.clear();
    POOL.with_borrow_mut(|pool| {
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

/// Frees `buf` when one large message made it grow past [`KEEP_BYTES`].
pub(super) fn free_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BYTES {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_buffers_are_reused_unless_large() {
        let mut buf = take_write();
        buf.extend_from_slice(&[1; 100]);
        let at = buf.as_ptr();
        give_back(buf);
        let again = take_write();
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        give_back(vec![0; POOL_BUFFER_BYTES + 1]);
        assert_eq!(take_write().capacity(), 0);
    }

    #[test]
    fn the_read_buffer_is_one_per_thread() {
        let first = with_read(|buf| {
            buf[0] = 7;
            buf.as_ptr()
        });
        let (second, len) = with_read(|buf| (buf.as_ptr(), buf.len()));
        assert_eq!(first, second);
        assert_eq!(len, READ_BYTES);
    }
}
