//! A request's record — its access-log entry and its span — finished when the response
//! body ends, or when it is dropped midway (the client went away: what was sent is
//! recorded, marked incomplete).
//!
//! The response head fills in what routing learned; the body, wrapped in [`Recorded`]
//! (one allocation, only when the access log or span export is on), counts the bytes it
//! hands to the connection and, at its end, reads the clock once, reads the request body's
//! byte count and queues the entry and the span (bounded channels, `try_send`: no lock,
//! no wait).

use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use http_body::Body as _;

use super::Shared;
use super::access_log::Entry;
use super::body::{BodyWatch, DownBody};
use crate::telemetry::otlp::SpanRecord;

/// A response body whose request is recorded when it ends.
#[derive(Debug)]
pub struct Recorded {
    /// The body streamed to the client.
    pub body: DownBody,
    /// What is still to be recorded (`None` once recorded).
    tail: Option<Tail>,
}

/// What a request's record still needs when its body ends.
#[derive(Debug)]
pub struct Tail {
    /// Where the entry and the span go.
    pub shared: Arc<Shared>,
    /// Request start (monotonic), for the duration.
    pub start: Instant,
    /// Request start (wall clock), for the span's end.
    pub started: SystemTime,
    /// The access-log entry (log on); its byte counts, duration and completeness are
    /// filled in at the end.
    pub entry: Option<Entry>,
    /// The span (sampled, exporter on); its end is filled in at the end.
    pub span: Option<SpanRecord>,
    /// The request body's progress (none: the request had no body).
    pub request_body: Option<Arc<BodyWatch>>,
    /// Body bytes handed to the client so far.
    pub bytes_out: u64,
}

// === impl Recorded ===

impl Recorded {
    /// Wraps `body`; `tail` is recorded when it ends.
    pub fn new(body: DownBody, tail: Tail) -> Self {
        Recorded {
            body,
            tail: Some(tail),
        }
    }

    /// Counts a frame handed to the client, and records the request at the body's end
    /// (or when it failed: the stream stops there).
    #[inline]
    pub fn observe<E>(&mut self, r: &Poll<Option<Result<http_body::Frame<bytes::Bytes>, E>>>) {
        match r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(t)) = (f.data_ref(), self.tail.as_mut()) {
                    t.bytes_out += d.len() as u64;
                }
                // The last frame: recorded before the connection gets it, so a client that
                // saw the response end finds the entry queued (entries keep request order
                // on a connection).
                if self.body.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
    }

    /// Records the request now (once): `complete` when the body was sent to its end.
    pub fn finish(&mut self, complete: bool) {
        let Some(t) = self.tail.take() else {
            return;
        };
        let duration = t.start.elapsed();
        let bytes_in = t.request_body.as_ref().map_or(0, |w| w.bytes());
        if let Some(mut span) = t.span
            && let Some(exp) = t.shared.tracer.as_ref().and_then(|tr| tr.exporter.as_ref())
        {
            span.end_unix_nanos = unix_nanos(t.started + duration);
            exp.record(span);
        }
        if let Some(mut e) = t.entry
            && let Some(log) = &t.shared.access_log
        {
            e.duration = duration;
            e.bytes_in = bytes_in;
            e.bytes_out = t.bytes_out;
            e.complete = complete;
            log.record(e);
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
