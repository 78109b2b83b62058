//! One timer per HTTP/1 client connection for both of its clocks: `header_read_timeout`
//! (a request head must arrive within it of the previous response's end, or of the
//! accept; it also ends idle keep-alive) and the upstream `request_timeout` of the request
//! in flight.
//!
//! Per request this costs a few relaxed atomic stores and one clock read (when the
//! response body ends), instead of two timers registered in and removed from tokio's wheel
//! and a boxed `Sleep` allocated by hyper. The connection's single `Sleep` is armed at the
//! earliest deadline known when it was last set, and is reset only when a new deadline
//! comes earlier than that (a `request_timeout` shorter than `header_read_timeout`); when
//! it fires it checks the real deadlines and re-arms. An HTTP/1 connection serves one
//! request at a time, so one deadline slot is enough.
//!
//! HTTP/2 streams run as tasks of their own, many at once on a connection: their upstream
//! deadlines share one timer per connection too ([`StreamClock`]). A stream that waits
//! keeps its deadline and waker in the clock's slots (a lock, a slot and a waker clone,
//! ~240 instructions per stream against ~700 for a tokio `timeout`'s wheel entry, and a
//! smaller request future); the connection's loop keeps one `Sleep` armed at the earliest
//! deadline and wakes the streams whose deadline passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// No deadline set.
const NONE: u64 = u64::MAX;

/// The clocks of one HTTP/1 client connection (shared by the connection loop, the request
/// in flight and its response body).
#[derive(Debug)]
pub struct ConnClock {
    /// Times below are milliseconds after this.
    origin: Instant,
    /// `header_read_timeout`, in milliseconds.
    header_ms: u64,
    /// A request is being served (from its head to the end of its response body).
    busy: AtomicBool,
    /// When the last response ended (0: the accept).
    last_end: AtomicU64,
    /// When the upstream attempt in flight times out ([`NONE`]: no attempt).
    deadline: AtomicU64,
    /// That deadline passed: the attempt gives up.
    expired: AtomicBool,
    /// When the connection's timer fires next.
    armed: AtomicU64,
    /// A deadline earlier than `armed` was set: the loop resets its timer.
    rearm: AtomicBool,
}

/// What the connection loop does when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// No request head arrived within `header_read_timeout`: close the connection.
    Close,
    /// Sleep until this instant and check again.
    Until(Instant),
}

/// How an upstream attempt is bounded by `request_timeout`.
#[derive(Debug, Clone)]
pub enum Deadline {
    /// The HTTP/1 connection's timer.
    Conn(Arc<ConnClock>),
    /// The HTTP/2 connection's timer for its streams.
    Stream(Arc<StreamClock>),
}

/// The upstream deadlines of one HTTP/2 connection's streams, on one timer that the
/// connection's loop keeps armed at the earliest of them.
#[derive(Debug)]
pub struct StreamClock {
    /// Times below are milliseconds after this.
    origin: Instant,
    slots: Mutex<Slots>,
    /// When the connection's timer fires next ([`NONE`]: not armed).
    armed: AtomicU64,
    /// A deadline earlier than `armed` was set: the loop resets its timer.
    rearm: AtomicBool,
    /// The connection loop, woken to re-arm.
    task: AtomicWaker,
    /// The last attempt's timeout: how far ahead the timer looks when none is pending.
    look_ms: AtomicU64,
}

/// The attempts waiting, by key; free keys are reused.
#[derive(Debug, Default)]
struct Slots {
    all: Vec<Slot>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct Slot {
    deadline: u64,
    waker: Option<Waker>,
    expired: bool,
}

/// One attempt's place on a [`StreamClock`], released when the attempt ends or is dropped.
#[derive(Debug)]
pub struct StreamReg<'a> {
    clock: &'a StreamClock,
    deadline: u64,
    key: usize,
}

/// No slot taken.
const NO_KEY: usize = usize::MAX;

/// The attempt's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project! {
    /// A response body that marks the end of its request on the connection's clock when it
    /// ends or is dropped.
    #[derive(Debug)]
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        clock: Option<Arc<ConnClock>>,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(c) = this.project().clock.take() {
                c.end();
            }
        }
    }
}

pin_project! {
    /// One upstream attempt bounded by its deadline: `fut`, unless the connection's clock
    /// (HTTP/1) or its streams' clock (HTTP/2) says the attempt's deadline passed first.
    ///
    /// A plain future rather than an `async fn`: an `async fn` would keep `fut` twice in
    /// its state (as its argument and as the awaited future), and that state is moved with
    /// every request's future.
    #[project = AttemptProj]
    pub enum Attempt<'a, F> {
        Conn {
            #[pin]
            fut: F,
            clock: &'a ConnClock,
        },
        Stream {
            #[pin]
            fut: F,
            reg: StreamReg<'a>,
        },
    }
}

// === impl ConnClock ===

impl ConnClock {
    /// A connection accepted now whose heads must arrive within `header_read_timeout`.
    pub fn new(header_read_timeout: Duration) -> ConnClock {
        let header_ms = millis(header_read_timeout);
        ConnClock {
            origin: Instant::now(),
            header_ms,
            busy: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            deadline: AtomicU64::new(NONE),
            expired: AtomicBool::new(false),
            armed: AtomicU64::new(header_ms),
            rearm: AtomicBool::new(false),
        }
    }

    /// When the connection's timer first fires: the first head's deadline.
    pub fn first(&self) -> Instant {
        self.at(self.armed.load(Ordering::Relaxed))
    }

    /// A request head arrived: the header clock stops until its response ends.
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// The response ended (or was dropped): the next head is due within
    /// `header_read_timeout` from now.
    pub fn end(&self) {
        self.end_at(Instant::now());
    }

    fn end_at(&self, now: Instant) {
        let now = self.since(now);
        self.last_end.store(now, Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
        self.earlier(now.saturating_add(self.header_ms));
    }

    /// Whether the connection loop must reset its timer to [`ConnClock::armed_at`].
    pub fn take_rearm(&self) -> bool {
        self.rearm.load(Ordering::Relaxed) && self.rearm.swap(false, Ordering::Relaxed)
    }

    /// When the timer should fire now.
    pub fn armed_at(&self) -> Instant {
        self.at(self.armed.load(Ordering::Relaxed))
    }

    /// The timer fired at `now`: expire the attempt in flight if its deadline passed, close
    /// an idle connection whose head is late, or say when to look again.
    pub fn fired(&self, now: Instant) -> Fired {
        let now = self.since(now);
        let next = if self.busy.load(Ordering::Relaxed) {
            let d = self.deadline.load(Ordering::Relaxed);
            if d <= now {
                self.deadline.store(NONE, Ordering::Relaxed);
                self.expired.store(true, Ordering::Relaxed);
            }
            // A long request or download: look again in a while (or at its deadline).
            let d = self.deadline.load(Ordering::Relaxed);
            d.min(now.saturating_add(self.header_ms.max(1)))
        } else {
            let due = self
                .last_end
                .load(Ordering::Relaxed)
                .saturating_add(self.header_ms);
            if due <= now {
                return Fired::Close;
            }
            due
        };
        self.armed.store(next, Ordering::Relaxed);
        self.rearm.store(false, Ordering::Relaxed);
        Fired::Until(self.at(next))
    }

    /// Starts an upstream attempt that began at `start` and may last `timeout`.
    fn start_attempt(&self, start: Instant, timeout: Duration) {
        let d = self.since(start).saturating_add(millis(timeout));
        self.expired.store(false, Ordering::Relaxed);
        self.deadline.store(d, Ordering::Relaxed);
        self.earlier(d);
    }

    fn end_attempt(&self) {
        self.deadline.store(NONE, Ordering::Relaxed);
        self.expired.store(false, Ordering::Relaxed);
    }

    /// Arms the timer earlier when `at` comes before it.
    fn earlier(&self, at: u64) {
        if at < self.armed.load(Ordering::Relaxed) {
            self.armed.store(at, Ordering::Relaxed);
            self.rearm.store(true, Ordering::Relaxed);
        }
    }

    fn since(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms.min(NONE / 2))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NONE / 2)
}

// === impl Deadline ===

impl Deadline {
    /// One upstream attempt that began at `start`, bounded by `timeout`.
    pub fn within<F: Future>(&self, start: Instant, timeout: Duration, fut: F) -> Attempt<'_, F> {
        match self {
            Deadline::Conn(clock) => {
                clock.start_attempt(start, timeout);
                Attempt::Conn { fut, clock }
            }
            Deadline::Stream(clock) => Attempt::Stream {
                reg: clock.start_attempt(start, timeout),
                fut,
            },
        }
    }
}

// === impl Attempt ===

impl<F: Future> Future for Attempt<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AttemptProj::Conn { fut, clock } => {
                if let Poll::Ready(v) = fut.poll(cx) {
                    clock.end_attempt();
                    return Poll::Ready(Ok(v));
                }
                // The connection loop sets this when its timer fires, then polls the
                // connection (and so this request) again in the same task.
                if clock.expired.load(Ordering::Relaxed) {
                    clock.end_attempt();
                    return Poll::Ready(Err(Elapsed));
                }
                Poll::Pending
            }
            AttemptProj::Stream { fut, reg } => {
                if let Poll::Ready(v) = fut.poll(cx) {
                    reg.release();
                    return Poll::Ready(Ok(v));
                }
                if reg.wait(cx.waker()) {
                    return Poll::Ready(Err(Elapsed));
                }
                Poll::Pending
            }
        }
    }
}

// === impl StreamClock ===

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock {
            origin: Instant::now(),
            slots: Mutex::default(),
            armed: AtomicU64::new(NONE),
            rearm: AtomicBool::new(false),
            task: AtomicWaker::new(),
            look_ms: AtomicU64::new(NONE),
        }
    }
}

impl StreamClock {
    /// When the timer should fire now.
    pub fn armed_at(&self) -> Instant {
        self.at(self.armed.load(Ordering::Relaxed))
    }

    /// Ready when the connection loop must reset its timer to [`StreamClock::armed_at`].
    pub fn poll_rearm(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.task.register(cx.waker());
        if self.rearm.load(Ordering::Relaxed) && self.rearm.swap(false, Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The timer fired at `now`: wakes the attempts whose deadline passed and says when to
    /// fire next.
    pub fn fired(&self, now: Instant) -> Instant {
        let now = self.since(now);
        let mut slots = self.lock();
        let mut next = now.saturating_add(self.look_ms.load(Ordering::Relaxed).max(1));
        for s in slots.all.iter_mut() {
            let Some(w) = s.waker.as_ref() else { continue };
            if s.expired {
                continue;
            }
            if s.deadline <= now {
                s.expired = true;
                w.wake_by_ref();
            } else {
                next = next.min(s.deadline);
            }
        }
        // Under the lock: an attempt that starts meanwhile compares against this.
        self.armed.store(next, Ordering::Relaxed);
        self.rearm.store(false, Ordering::Relaxed);
        drop(slots);
        self.at(next)
    }

    fn start_attempt(&self, start: Instant, timeout: Duration) -> StreamReg<'_> {
        let ms = millis(timeout);
        self.look_ms.store(ms, Ordering::Relaxed);
        StreamReg {
            clock: self,
            deadline: self.since(start).saturating_add(ms),
            key: NO_KEY,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms.min(NONE / 2))
    }
}

// === impl StreamReg ===

impl StreamReg<'_> {
    /// The attempt waits: keeps its waker on the clock; true when its deadline passed.
    fn wait(&mut self, waker: &Waker) -> bool {
        let mut slots = self.clock.lock();
        if self.key == NO_KEY {
            let slot = Slot {
                deadline: self.deadline,
                waker: Some(waker.clone()),
                expired: false,
            };
            self.key = match slots.free.pop() {
                Some(k) => {
                    slots.all[k] = slot;
                    k
                }
                None => {
                    slots.all.push(slot);
                    slots.all.len() - 1
                }
            };
            // Under the lock, against what `fired` stored.
            let armed = self.clock.armed.fetch_min(self.deadline, Ordering::Relaxed);
            if self.deadline < armed {
                self.clock.rearm.store(true, Ordering::Relaxed);
                drop(slots);
                self.clock.task.wake();
            }
            return false;
        }
        let slot = &mut slots.all[self.key];
        if slot.expired {
            slot.waker = None;
            slots.free.push(self.key);
            self.key = NO_KEY;
            return true;
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            slot.waker = Some(waker.clone());
        }
        false
    }

    /// The attempt ended: frees its slot.
    fn release(&mut self) {
        if self.key == NO_KEY {
            return;
        }
        let mut slots = self.clock.lock();
        slots.all[self.key].waker = None;
        slots.free.push(self.key);
        self.key = NO_KEY;
    }
}

impl Drop for StreamReg<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

// === impl Tracked ===

impl<B> Tracked<B> {
    /// `inner`, ending its request on `clock` when it ends.
    pub fn new(inner: B, clock: Arc<ConnClock>) -> Self {
        Tracked {
            inner,
            clock: Some(clock),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = r
            && let Some(c) = this.clock.take()
        {
            c.end();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_closes_after_the_header_timeout() {
        let c = ConnClock::new(Duration::from_secs(10));
        let t0 = c.origin;
        assert_eq!(c.first(), t0 + Duration::from_secs(10));
        assert_eq!(c.fired(t0 + Duration::from_secs(10)), Fired::Close);
    }

    #[test]
    fn a_request_keeps_the_connection_and_its_end_restarts_the_clock() {
        let c = ConnClock::new(Duration::from_secs(10));
        let t0 = c.origin;
        c.begin();
        // Busy at the first deadline: look again later, never close.
        assert_eq!(
            c.fired(t0 + Duration::from_secs(10)),
            Fired::Until(t0 + Duration::from_secs(20))
        );
        c.end_at(t0 + Duration::from_secs(20));
        assert_eq!(
            c.fired(t0 + Duration::from_secs(20)),
            Fired::Until(t0 + Duration::from_secs(30))
        );
        assert_eq!(c.fired(t0 + Duration::from_secs(30)), Fired::Close);
    }

    #[test]
    fn a_short_request_timeout_rearms_earlier_and_expires() {
        let c = ConnClock::new(Duration::from_secs(10));
        let t0 = c.origin;
        c.begin();
        c.start_attempt(t0, Duration::from_millis(300));
        assert!(c.take_rearm());
        assert!(!c.take_rearm());
        assert_eq!(c.armed_at(), t0 + Duration::from_millis(300));
        assert!(!c.expired.load(Ordering::Relaxed));
        c.fired(t0 + Duration::from_millis(300));
        assert!(c.expired.load(Ordering::Relaxed));
        c.end_attempt();
        assert!(!c.expired.load(Ordering::Relaxed));
    }

    #[test]
    fn a_stream_past_its_deadline_is_woken_and_expires() {
        let c = StreamClock::default();
        let t0 = c.origin;
        let woken = Arc::new(Woken::default());
        let w = Waker::from(woken.clone());
        let mut slow = c.start_attempt(t0, Duration::from_millis(300));
        let mut fast = c.start_attempt(t0, Duration::from_millis(500));
        assert!(!slow.wait(&w));
        // The first deadline arms the timer earlier than "never".
        assert!(c.rearm.load(Ordering::Relaxed));
        assert_eq!(c.armed_at(), t0 + Duration::from_millis(300));
        assert!(!fast.wait(&w));
        assert_eq!(c.armed_at(), t0 + Duration::from_millis(300));
        let next = c.fired(t0 + Duration::from_millis(300));
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert_eq!(next, t0 + Duration::from_millis(500));
        assert!(slow.wait(&w));
        fast.release();
        // Nothing pending: look again one timeout later; a new attempt does not re-arm.
        c.rearm.store(false, Ordering::Relaxed);
        assert_eq!(
            c.fired(t0 + Duration::from_millis(500)),
            t0 + Duration::from_millis(1000)
        );
        let mut next = c.start_attempt(t0 + Duration::from_millis(600), Duration::from_millis(500));
        assert!(!next.wait(&w));
        assert!(!c.rearm.load(Ordering::Relaxed));
        drop(next);
        assert_eq!(c.lock().free.len(), 2);
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_long_request_timeout_does_not_touch_the_timer() {
        let c = ConnClock::new(Duration::from_secs(10));
        c.begin();
        c.start_attempt(c.origin, Duration::from_secs(30));
        assert!(!c.take_rearm());
    }
}
