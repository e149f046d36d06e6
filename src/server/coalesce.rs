//! Coalesced writes on an HTTP/2 connection: several answers in one TLS record and one
//! syscall, instead of one each.
//!
//! hyper runs each HTTP/2 stream as its own task. When a stream's answer is ready, it wakes
//! the connection's task, and tokio runs a task woken this way next, before the other streams
//! already queued on that worker (its "LIFO slot"). So under load the connection wrote one
//! answer, encrypted it and made one `writev` per review, while the next answers were a
//! moment from ready. [`Coalesce`] makes the first write of each flush yield once instead:
//! the task wakes itself and returns `Pending`, which tokio schedules behind the tasks already
//! queued (as `yield_now` does). Those streams run, their answers join the connection's
//! buffer, and the next poll writes them all. No timer is involved: with nothing else queued,
//! the connection is polled again at once, so an answer waits one scheduler pass at most.
//!
//! Only HTTP/2 connections are wrapped with it switched on: an HTTP/1.1 connection has one
//! request in flight, so there is nothing to gather.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream whose writes yield to the scheduler once per flush (see the module's docs).
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    enabled: bool,
    /// This flush has already yielded; its writes go through until `poll_flush` completes.
    yielded: bool,
}

impl<T> Coalesce<T> {
    /// Wraps `inner`; with `enabled` false, every call goes straight through.
    pub fn new(inner: T, enabled: bool) -> Self {
        Self {
            inner,
            enabled,
            yielded: false,
        }
    }

    /// Whether a write should yield first: once per flush, when enabled.
    fn yield_first(&mut self, cx: &mut Context<'_>) -> bool {
        if self.enabled && !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.yield_first(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.yield_first(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A `Coalesce` over a `Vec`, polled by hand with a waker that counts.
    struct Polled {
        io: Coalesce<Vec<u8>>,
        wakes: Arc<Wakes>,
        waker: Waker,
    }

    impl Polled {
        fn new(enabled: bool) -> Self {
            let wakes = Arc::new(Wakes::default());
            Self {
                io: Coalesce::new(Vec::new(), enabled),
                waker: Waker::from(wakes.clone()),
                wakes,
            }
        }

        fn write(&mut self, bytes: &[u8]) -> Poll<usize> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.io)
                .poll_write(&mut cx, bytes)
                .map(|written| written.unwrap())
        }

        fn write_vectored(&mut self, bufs: &[&[u8]]) -> Poll<usize> {
            let mut cx = Context::from_waker(&self.waker);
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            Pin::new(&mut self.io)
                .poll_write_vectored(&mut cx, &slices)
                .map(|written| written.unwrap())
        }

        fn flush(&mut self) -> Poll<()> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.io)
                .poll_flush(&mut cx)
                .map(|flushed| flushed.unwrap())
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }

        fn written(&self) -> &[u8] {
            &self.io.inner
        }
    }

    #[test]
    fn the_first_write_of_each_flush_yields_once_and_loses_nothing() {
        let mut p = Polled::new(true);
        // The first write yields: nothing written, and the task is woken to come back.
        assert_eq!(p.write(b"first "), Poll::Pending);
        assert_eq!(p.wakes(), 1);
        assert!(p.written().is_empty());
        // Polled again, the writes of this flush go through.
        assert_eq!(p.write(b"first "), Poll::Ready(6));
        assert_eq!(p.write(b"second "), Poll::Ready(7));
        assert_eq!(p.flush(), Poll::Ready(()));
        // The next flush yields again, once.
        assert_eq!(p.write(b"third"), Poll::Pending);
        assert_eq!(p.write(b"third"), Poll::Ready(5));
        assert_eq!(p.wakes(), 2);
        assert_eq!(p.written(), b"first second third");
    }

    #[test]
    fn switched_off_every_write_goes_straight_through() {
        let mut p = Polled::new(false);
        assert_eq!(p.write(b"one "), Poll::Ready(4));
        assert_eq!(p.flush(), Poll::Ready(()));
        assert_eq!(p.write_vectored(&[b"two ", b"three"]), Poll::Ready(9));
        assert_eq!(p.wakes(), 0);
        assert_eq!(p.written(), b"one two three");
    }

    #[test]
    fn a_vectored_write_yields_like_a_plain_one() {
        let mut p = Polled::new(true);
        assert_eq!(p.write_vectored(&[b"a", b"b"]), Poll::Pending);
        assert_eq!(p.write_vectored(&[b"a", b"b"]), Poll::Ready(2));
        assert_eq!(p.wakes(), 1);
        assert_eq!(p.written(), b"ab");
    }
}
