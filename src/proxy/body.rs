//! Body types of the proxy: one enum each way, so no request boxes its body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Returner;

/// A body sent upstream: the client's body streamed through, or nothing.
#[derive(Debug)]
pub enum UpBody {
    /// The client's request body.
    Stream(Incoming),
    /// No body.
    Empty,
}

/// A body sent to the client: an upstream's body streamed through, or sluice's own text.
#[derive(Debug)]
pub enum DownBody {
    /// An upstream response; its connection returns to the pool when the body ends.
    Upstream(Incoming, Option<Returner>),
    /// A complete body produced by sluice.
    Full(Option<Bytes>),
    /// An OFREP event stream (`builtin: ofrep` routes).
    Events(crate::flagsvc::sse::EventStream),
}

// Both wrap `Incoming`, which is `Unpin`; that lets them implement `Drop` without pin projection.
const _: fn() = || {
    fn unpin<T: Unpin>() {}
    unpin::<Incoming>();
};

// === impl UpBody ===

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Stream(inner) => Pin::new(inner).poll_frame(cx),
            UpBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Stream(inner) => inner.is_end_stream(),
            UpBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Stream(inner) => inner.size_hint(),
            UpBody::Empty => SizeHint::with_exact(0),
        }
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Upstream(inner, _) => inner.is_end_stream(),
            DownBody::Full(data) => data.is_none(),
            DownBody::Events(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Upstream(inner, _) => inner.size_hint(),
            DownBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
            DownBody::Events(s) => s.size_hint(),
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        // hyper may drop a body that reports its end without polling it (empty bodies, HEAD):
        // the upstream connection is still reusable then. A body dropped midway is not, and
        // its connection closes with the `Returner`.
        if let DownBody::Upstream(inner, done) = self
            && inner.is_end_stream()
            && let Some(ret) = done.take()
        {
            ret.give_back();
        }
    }
}
