//! Polling a rarely-ready branch of a connection's loop only when it was woken.
//!
//! An HTTP/1 connection's task waits on its hyper connection, its timer and the instance's
//! stop signal at once (a `select!`). The task wakes a few times per request, for the
//! connection, and every wake polled the timer (~250 instructions: the timer entry's
//! state) and the stop signal (~450: a `watch` channel's lock and notification list),
//! though neither is ever ready then. A [`WakeGate`] gives such a branch a waker of its
//! own and polls it only after that waker was woken: every other poll costs a waker
//! registration check and one atomic swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Polls what it guards only when the guarded future's own waker fired (or after
/// [`open`](WakeGate::open)).
#[derive(Debug)]
pub struct WakeGate {
    flag: Arc<Flag>,
    /// Wakes `flag`: the waker the guarded future registers.
    waker: Waker,
}

/// The gate's state, shared with its waker.
#[derive(Debug)]
struct Flag {
    /// The guarded future was woken since it was last polled (true at first: it has not
    /// registered a waker yet).
    woken: AtomicBool,
    /// The task that polls the gate.
    task: AtomicWaker,
}

// === impl WakeGate ===

impl Default for WakeGate {
    fn default() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WakeGate {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl WakeGate {
    /// Polls `f` with the gate's waker if it was woken since the last poll; `Pending`
    /// otherwise (the task is woken when it is).
    #[inline]
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake after the read finds this task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        f(&mut Context::from_waker(&self.waker))
    }

    /// Makes the next [`poll`](WakeGate::poll) poll the guarded future (after it was
    /// changed, e.g. a timer reset).
    pub fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

// === impl Flag ===

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking the waker it was polled with
    /// when `wake` is called.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    impl Probe {
        fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }

        fn fire(&self) {
            self.ready.store(true, Ordering::Relaxed);
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    #[derive(Default)]
    struct TaskWakes(AtomicUsize);

    impl Wake for TaskWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn polls_only_after_its_own_wake_and_wakes_the_task() {
        let gate = WakeGate::default();
        let probe = Probe::default();
        let task = Arc::new(TaskWakes::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        // First poll: the guarded future registers its waker.
        assert!(gate.poll(&mut cx, |cx| probe.poll(cx)).is_pending());
        assert_eq!(probe.polls.load(Ordering::Relaxed), 1);
        // The task woken for something else: the guarded future is not polled.
        for _ in 0..3 {
            assert!(gate.poll(&mut cx, |cx| probe.poll(cx)).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::Relaxed), 1);
        // Its own wake reaches the task, and the next poll polls it.
        probe.fire();
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert!(gate.poll(&mut cx, |cx| probe.poll(cx)).is_ready());
        assert_eq!(probe.polls.load(Ordering::Relaxed), 2);
        // `open` forces a poll.
        gate.open();
        assert!(gate.poll(&mut cx, |cx| probe.poll(cx)).is_ready());
        assert_eq!(probe.polls.load(Ordering::Relaxed), 3);
    }
}
