//! Body types of the proxy: one enum each way, so no request boxes its body.
//!
//! A client's request body is watched on its way upstream ([`BodyWatch`]): whether it was
//! sent to its end (only then may the upstream connection carry another request), and
//! whether it failed by the client's doing (the client went away, garbled its framing, or
//! stopped sending) — which is answered as a client error and never held against the
//! upstream, its health or a rollout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::mirror::Tee;
use super::pool::Returner;
use super::record::Recorded;

/// A body sent upstream: the client's body streamed through, or nothing.
#[derive(Debug)]
pub enum UpBody {
    /// The client's request body, watched when it has one.
    Stream(Incoming, Option<Arc<BodyWatch>>),
    /// The client's request body, watched, with a copy kept for a mirror.
    Teed(Incoming, Option<Arc<BodyWatch>>, Box<Tee>),
    /// A complete body (a mirror's copy).
    Copy(Option<Bytes>),
    /// No body.
    Empty,
}

/// How a client's request body is doing on its way upstream.
#[derive(Debug, Default)]
pub struct BodyWatch {
    state: AtomicU8,
    /// Body bytes read from the client (the access log's `bytes_in`).
    bytes: AtomicU64,
}

/// A request failure the client caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The client went away before its body ended.
    Aborted,
    /// The body's framing is invalid (a bad chunk, more data than announced).
    Malformed,
    /// No response in time while the upstream waited for the client's body.
    Timeout,
}

/// `BodyWatch` states: the first two change as the body streams, the others are final.
const STREAMING: u8 = 0;
/// Streaming, and the last read waited for the client.
const WAITING: u8 = 1;
const DONE: u8 = 2;
const ABORTED: u8 = 3;
const MALFORMED: u8 = 4;

/// A body sent to the client: an upstream's body streamed through, or sluice's own text.
#[derive(Debug)]
pub enum DownBody {
    /// An upstream response; its connection returns to the pool when the body ends.
    Upstream(Incoming, Option<Returner>),
    /// A complete body produced by sluice.
    Full(Option<Bytes>),
    /// An OFREP event stream (`builtin: ofrep` routes).
    Events(crate::flagsvc::sse::EventStream),
    /// One of the above, whose request is recorded (access log, span) when it ends.
    Recorded(Box<Recorded>),
}

// Both wrap `Incoming`, which is `Unpin`; that lets them implement `Drop` without pin projection.
const _: fn() = || {
    fn unpin<T: Unpin>() {}
    unpin::<Incoming>();
};

// === impl UpBody ===

impl UpBody {
    /// The client's body, with a watch when there is a body to watch (none for bodiless
    /// requests: nothing is allocated for them).
    pub fn client(body: Incoming) -> (UpBody, Option<Arc<BodyWatch>>) {
        let watch = (!body.is_end_stream()).then(|| Arc::new(BodyWatch::default()));
        (UpBody::Stream(body, watch.clone()), watch)
    }

    /// The watch of a client's body, if any.
    pub fn watch(&self) -> Option<&Arc<BodyWatch>> {
        match self {
            UpBody::Stream(_, w) | UpBody::Teed(_, w, _) => w.as_ref(),
            UpBody::Copy(_) | UpBody::Empty => None,
        }
    }

    /// This client body with a copy kept for a mirror.
    pub fn teed(self, tee: Tee) -> UpBody {
        match self {
            UpBody::Stream(b, w) => UpBody::Teed(b, w, Box::new(tee)),
            other => other,
        }
    }
}

/// Polls a client's body, keeping its watch up to date.
#[inline]
fn poll_watched(
    inner: &mut Incoming,
    w: Option<&BodyWatch>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let r = Pin::new(&mut *inner).poll_frame(cx);
    if let Some(w) = w {
        match &r {
            Poll::Pending => w.set(WAITING),
            Poll::Ready(None) => w.set(DONE),
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    w.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                w.set(if inner.is_end_stream() {
                    DONE
                } else {
                    STREAMING
                })
            }
            Poll::Ready(Some(Err(e))) => w.set(fault_of(e)),
        }
    }
    r
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Stream(inner, None) => Pin::new(inner).poll_frame(cx),
            UpBody::Stream(inner, Some(w)) => poll_watched(inner, Some(w), cx),
            UpBody::Teed(inner, w, tee) => {
                let r = poll_watched(inner, w.as_deref(), cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            tee.data(d);
                        }
                        if inner.is_end_stream() {
                            tee.end();
                        }
                    }
                    Poll::Ready(None) => tee.end(),
                    _ => {}
                }
                r
            }
            UpBody::Copy(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Stream(inner, w) | UpBody::Teed(inner, w, _) => {
                let end = inner.is_end_stream();
                if end && let Some(w) = w {
                    w.set(DONE);
                }
                end
            }
            UpBody::Copy(b) => b.is_none(),
            UpBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Stream(inner, _) | UpBody::Teed(inner, _, _) => inner.size_hint(),
            UpBody::Copy(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Why reading a client's body failed: bad framing, or the client went away.
fn fault_of(e: &hyper::Error) -> u8 {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => MALFORMED,
                _ => ABORTED,
            };
        }
        cur = err.source();
    }
    if e.is_parse() { MALFORMED } else { ABORTED }
}

// === impl BodyWatch ===

impl BodyWatch {
    fn set(&self, state: u8) {
        // Final states stay: a later poll cannot undo an end or a fault.
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s < DONE && s != state).then_some(state)
            });
    }

    /// The body was sent to its end.
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Relaxed) == DONE
    }

    /// The client's fault, if the body failed by it. `timed_out`: no response came in time,
    /// which is the client's fault when the upstream was waiting for its body.
    pub fn fault(&self, timed_out: bool) -> Option<ClientFault> {
        match self.state.load(Ordering::Relaxed) {
            ABORTED => Some(ClientFault::Aborted),
            MALFORMED => Some(ClientFault::Malformed),
            WAITING if timed_out => Some(ClientFault::Timeout),
            _ => None,
        }
    }

    /// Body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

// === impl DownBody ===

impl DownBody {
    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        DownBody::Full((!data.is_empty()).then_some(data))
    }

    /// An empty body.
    pub fn empty() -> Self {
        DownBody::Full(None)
    }

    /// The upstream endpoint the body comes from, if it comes from one.
    pub fn upstream_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            DownBody::Upstream(_, Some(r)) => Some(r.addr()),
            DownBody::Recorded(r) => r.body.upstream_addr(),
            _ => None,
        }
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownBody::Upstream(inner, done) => {
                let r = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(None) = r
                    && let Some(ret) = done.take()
                {
                    ret.give_back();
                }
                r
            }
            DownBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            DownBody::Events(s) => Pin::new(s)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            DownBody::Recorded(r) => {
                let f = Pin::new(&mut r.body).poll_frame(cx);
                r.observe(&f);
                f
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Upstream(inner, _) => inner.is_end_stream(),
            DownBody::Full(data) => data.is_none(),
            DownBody::Events(s) => s.is_end_stream(),
            DownBody::Recorded(r) => r.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Upstream(inner, _) => inner.size_hint(),
            DownBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
            DownBody::Events(s) => s.size_hint(),
            DownBody::Recorded(r) => r.body.size_hint(),
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        // hyper may drop a body that reports its end without polling it (empty bodies, HEAD):
        // the upstream connection is still reusable then. A body dropped midway is not, and
        // its connection closes with the `Returner`.
        match self {
            DownBody::Upstream(inner, done) if inner.is_end_stream() => {
                if let Some(ret) = done.take() {
                    ret.give_back();
                }
            }
            // Dropped at its end (never polled to `None`) or midway (the client left).
            DownBody::Recorded(r) => {
                let complete = r.body.is_end_stream();
                r.finish(complete);
            }
            _ => {}
        }
    }
}
