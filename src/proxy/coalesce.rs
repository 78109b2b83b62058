//! Small vectored writes go out as one `send`.
//!
//! hyper (an HTTP/1 head and its body), h2 (a frame head and its payload) and rustls (its
//! queued records) write through `poll_write_vectored`, which on a socket is a `writev`.
//! The kernel's `writev` path (importing the iovec array, `vfs_writev`'s position and
//! permission checks) costs more than a `send` of the same bytes: about 2.5% of the proxy
//! core's time on the bench VM, two writes per proxied request, by `perf record`
//! (README, *Performance*). [`Coalesce`] hands a lone non-empty slice to `poll_write`,
//! copies two or more that total at most [`MAX_COALESCED`] bytes into a per-thread buffer
//! and writes that once, and leaves larger writes vectored (copying them would cost more than
//! the system call saves). Above TLS it also makes a small response one record instead of
//! one per slice.
//!
//! A short write stays a short write: the count returned is of the bytes the inner stream
//! took, in slice order, as `poll_write_vectored` promises.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest total of several slices that is copied into one write.
pub const MAX_COALESCED: usize = 4096;

thread_local! {
    /// Where slices are copied: one per thread (it grows to [`MAX_COALESCED`] once), so a
    /// connection holds no buffer of its own and a write neither allocates nor zeroes one.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A stream whose small vectored writes are single writes (see the module docs).
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
}

impl<S> Coalesce<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Coalesce { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.get_mut().inner);
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = parts.next() else {
            return Poll::Ready(Ok(0));
        };
        if parts.next().is_none() {
            return inner.poll_write(cx, first);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > MAX_COALESCED {
            return inner.poll_write_vectored(cx, bufs);
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                for b in bufs {
                    buf.extend_from_slice(b);
                }
                inner.poll_write(cx, &buf)
            }
            // In use by a `Coalesce` above this one on the thread (TLS over a coalesced
            // socket, whose records rarely come two at a time): written as given.
            Err(_) => inner.poll_write_vectored(cx, bufs),
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write it is given; takes at most `take` bytes per write.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(&'static str, Vec<u8>)>,
        take: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            let n = me.take.map_or(buf.len(), |t| t.min(buf.len()));
            me.writes.push(("write", buf[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.get_mut().writes.push(("writev", all));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write_vectored(c: &mut Coalesce<Recorder>, bufs: &[&[u8]]) -> usize {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(c).poll_write_vectored(&mut cx, &slices) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_slices_become_one_write_in_order() {
        let mut c = Coalesce::new(Recorder::default());
        let n = write_vectored(&mut c, &[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"stable\n"]);
        assert_eq!(n, 26);
        assert_eq!(
            c.inner.writes,
            [("write", b"HTTP/1.1 200 OK\r\n\r\nstable\n".to_vec())]
        );
    }

    #[test]
    fn a_lone_slice_is_written_as_is_and_nothing_writes_nothing() {
        let mut c = Coalesce::new(Recorder::default());
        assert_eq!(write_vectored(&mut c, &[b"", b"head", b""]), 4);
        assert_eq!(write_vectored(&mut c, &[b"", b""]), 0);
        assert_eq!(write_vectored(&mut c, &[]), 0);
        assert_eq!(c.inner.writes, [("write", b"head".to_vec())]);
    }

    #[test]
    fn large_writes_stay_vectored_and_the_boundary_is_copied() {
        let big = vec![7u8; MAX_COALESCED];
        let mut c = Coalesce::new(Recorder::default());
        assert_eq!(write_vectored(&mut c, &[b"h", &big]), MAX_COALESCED + 1);
        assert_eq!(write_vectored(&mut c, &[b"h", &big[1..]]), MAX_COALESCED);
        assert_eq!(c.inner.writes[0].0, "writev");
        assert_eq!(c.inner.writes[1].0, "write");
        assert_eq!(c.inner.writes[1].1.len(), MAX_COALESCED);
    }

    #[test]
    fn a_short_write_reports_what_the_stream_took() {
        let mut c = Coalesce::new(Recorder {
            take: Some(5),
            ..Recorder::default()
        });
        assert_eq!(write_vectored(&mut c, &[b"abc", b"defgh"]), 5);
        assert_eq!(c.inner.writes, [("write", b"abcde".to_vec())]);
    }
}
