//! OFREP change push (ADR 0008): `GET …/ofrep/v1/events`, a Server-Sent Events stream that
//! sends `refetchEvaluation` after every activation that changes a flag (see [`feed`]).
//!
//! ```text
//! id: 7
//! event: message
//! data: {"type":"refetchEvaluation","etag":"\"<flags fingerprint>\"","lastModified":1771622898}
//! ```
//!
//! - `id` is the version of the document that made the flags what they are. A client that
//!   reconnects with `Last-Event-ID` equal to it gets nothing; with any other value, one
//!   event at once (missed events collapse into one refetch: a refetch is idempotent).
//!   Without `Last-Event-ID` the client is assumed to have just fetched.
//! - Streams live across activations; each sees each change once.
//! - A heartbeat comment (`:`) every `ofrep.heartbeat` keeps intermediaries from closing an
//!   idle stream.
//! - At most `ofrep.max_streams` streams are open; beyond, 503 (OFREP's error shape, with
//!   `Retry-After`).
//! - Nothing is queued per stream: a stream holds no frames, it reads the current change
//!   when the connection asks for bytes. Activation only publishes to the feed; one task
//!   wakes the streams. A stream whose connection has taken none of the last
//!   [`SLOW_AFTER_BEATS`] heartbeats (its client is not reading, its socket buffers are
//!   full) is dropped with a log line: its body ends when the connection is next polled.
//!
//! [`feed`]: super::feed

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::feed::{Feed, FlagChange};

/// Heartbeats a stream may leave untaken before it is dropped as slow.
pub const SLOW_AFTER_BEATS: u32 = 4;

/// How long a client should wait before reconnecting (the `retry:` field), milliseconds.
const RETRY_MS: u32 = 2000;

/// The open event streams.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    open: AtomicUsize,
    max: usize,
    heartbeat: Duration,
    feed: Arc<Feed>,
}

/// What the hub shares with one stream.
#[derive(Debug, Default)]
struct Slot {
    waker: AtomicWaker,
    /// Heartbeats due and not yet taken by the connection.
    beats: AtomicU32,
    /// Set when the stream must end (slow client, shutdown).
    closed: AtomicBool,
}

/// Too many streams are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} event streams are open, the most allowed (ofrep.max_streams)")]
pub struct TooManyStreams(pub usize);

/// One event stream: an HTTP response body.
#[derive(Debug)]
pub struct EventStream {
    id: u64,
    slot: Arc<Slot>,
    hub: Arc<Inner>,
    feed: watch::Receiver<Option<Arc<FlagChange>>>,
    /// The version the client knows about.
    sent: Option<u64>,
    /// Bytes to send first.
    head: Option<Bytes>,
}

// === impl Hub ===

impl Hub {
    /// A hub for at most `max` streams, heartbeating every `heartbeat`.
    pub fn new(feed: Arc<Feed>, max: usize, heartbeat: Duration) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                max,
                heartbeat,
                feed,
            }),
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Opens a stream for a client that sent `last_event_id` (if any).
    pub fn open(&self, last_event_id: Option<&str>) -> Result<EventStream, TooManyStreams> {
        let inner = &self.inner;
        let n = inner.open.fetch_add(1, Ordering::AcqRel);
        if n >= inner.max {
            inner.open.fetch_sub(1, Ordering::AcqRel);
            return Err(TooManyStreams(n));
        }
        let id = inner.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, slot.clone());
        let feed = inner.feed.subscribe();
        let current = feed.borrow().as_ref().map(|c| c.version);
        let sent = match last_event_id.map(str::trim) {
            None => current,
            Some(v) => v.parse::<u64>().ok().filter(|v| Some(*v) == current),
        };
        Ok(EventStream {
            id,
            slot,
            hub: inner.clone(),
            feed,
            sent,
            head: Some(Bytes::from(format!(
                ": sluice flag events\nretry: {RETRY_MS}\n\n"
            ))),
        })
    }

    /// Wakes streams on every change and heartbeats them, until `shutdown`, which ends
    /// every stream.
    pub async fn run(self, mut shutdown: crate::shutdown::Shutdown) {
        let mut changes = self.inner.feed.subscribe();
        let mut beat = tokio::time::interval(self.inner.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        beat.tick().await;
        loop {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.wake_all();
                }
                _ = beat.tick() => self.heartbeat(),
                _ = shutdown.wait() => {
                    let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
                    for s in slots.values() {
                        s.closed.store(true, Ordering::Release);
                        s.waker.wake();
                    }
                    return;
                }
            }
        }
    }

    fn wake_all(&self) {
        let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.values() {
            s.waker.wake();
        }
    }

    /// One heartbeat: every stream gets one due; those that left too many untaken go.
    fn heartbeat(&self) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|id, s| {
            let due = s.beats.fetch_add(1, Ordering::AcqRel) + 1;
            if due > SLOW_AFTER_BEATS {
                tracing::warn!(
                    stream = id,
                    heartbeats = due - 1,
                    "Event stream dropped: its client has not read it."
                );
                s.closed.store(true, Ordering::Release);
            }
            s.waker.wake();
            due <= SLOW_AFTER_BEATS
        });
    }
}

// === impl EventStream ===

impl EventStream {
    /// The frame announcing `c`.
    fn event(c: &FlagChange) -> Bytes {
        Bytes::from(format!(
            "id: {}\nevent: message\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"\\\"{}\\\"\",\"lastModified\":{}}}\n\n",
            c.version, c.fingerprint, c.at
        ))
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(h) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        // Register first, then look: a wake between the two is not lost.
        this.slot.waker.register(cx.waker());
        if this.slot.closed.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        let event = {
            let current = this.feed.borrow_and_update();
            match current.as_ref() {
                Some(c) if Some(c.version) != this.sent => {
                    this.sent = Some(c.version);
                    Some(Self::event(c))
                }
                _ => None,
            }
        };
        // Any frame taken shows the client reads: the heartbeats due are settled with it.
        let beats = this.slot.beats.swap(0, Ordering::AcqRel);
        if let Some(e) = event {
            return Poll::Ready(Some(Ok(Frame::data(e))));
        }
        if beats > 0 {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b":\n\n")))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.hub
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn change(version: u64) -> Option<Arc<FlagChange>> {
        Some(Arc::new(FlagChange {
            version,
            fingerprint: format!("fp{version}"),
            at: 1_700_000_000,
            changed: Vec::new(),
        }))
    }

    async fn next(s: &mut EventStream) -> Option<String> {
        let f = poll_fn(|cx| Pin::new(&mut *s).poll_frame(cx)).await?;
        Some(String::from_utf8(f.ok()?.into_data().ok()?.to_vec()).unwrap())
    }

    fn now(s: &mut EventStream) -> Poll<Option<String>> {
        let waker = std::task::Waker::noop();
        match Pin::new(&mut *s).poll_frame(&mut Context::from_waker(waker)) {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(
                String::from_utf8(f.into_data().unwrap().to_vec()).unwrap(),
            )),
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    #[tokio::test]
    async fn events_resume_heartbeats_and_slow_clients() {
        let feed = Arc::new(Feed::default());
        feed.publish_for_tests(change(3));
        let hub = Hub::new(feed.clone(), 3, Duration::from_secs(3600));
        // No Last-Event-ID: the client just fetched; nothing until the next change.
        let mut fresh = hub.open(None).unwrap();
        assert!(next(&mut fresh).await.unwrap().starts_with(": sluice"));
        assert_eq!(now(&mut fresh), Poll::Pending);
        // A stale Last-Event-ID gets one event at once; the current one gets none.
        let mut behind = hub.open(Some("2")).unwrap();
        let _ = now(&mut behind);
        assert_eq!(
            now(&mut behind),
            Poll::Ready(Some(
                "id: 3\nevent: message\ndata: {\"type\":\"refetchEvaluation\",\"etag\":\"\\\"fp3\\\"\",\"lastModified\":1700000000}\n\n".into()
            ))
        );
        let mut current = hub.open(Some("3")).unwrap();
        let _ = now(&mut current);
        assert_eq!(now(&mut current), Poll::Pending);
        assert_eq!(hub.open(None).unwrap_err(), TooManyStreams(3));
        assert_eq!(hub.open_streams(), 3);

        // A change reaches every stream once.
        feed.publish_for_tests(change(4));
        for s in [&mut fresh, &mut behind, &mut current] {
            assert!(matches!(now(s), Poll::Ready(Some(e)) if e.starts_with("id: 4\n")));
            assert_eq!(now(s), Poll::Pending);
        }
        // Heartbeats: a reading stream takes them; one that takes none is dropped.
        hub.heartbeat();
        assert_eq!(now(&mut fresh), Poll::Ready(Some(":\n\n".into())));
        for _ in 0..SLOW_AFTER_BEATS {
            hub.heartbeat();
            let _ = now(&mut fresh);
            let _ = now(&mut current);
        }
        assert_eq!(now(&mut behind), Poll::Ready(None), "slow stream ends");
        assert!(matches!(
            now(&mut fresh),
            Poll::Pending | Poll::Ready(Some(_))
        ));
        drop(behind);
        assert_eq!(hub.open_streams(), 2);
        let _again = hub.open(None).unwrap();
    }
}
