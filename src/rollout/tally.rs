//! Cumulative counts since an origin, read from the per-second windows: what the sequential
//! test consumes. The windows only hold the last `window` seconds; an [`Accumulator`] folds
//! each second into a running total once no writer can still add to it, so its totals reach
//! back to the origin however long the rollout runs.

use serde::Serialize;

use super::histogram;
use super::window::{Counts, Window};

/// Cumulative counts of one variant since an origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Requests counted as errors.
    pub errors: u64,
    /// Requests slower than `max_p99` (0 when it is not configured).
    pub slow: u64,
}

/// Which count of a [`Tally`] a test judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `errors`.
    Errors,
    /// `slow`.
    Slow,
}

/// Running totals of one variant's window since an origin second.
#[derive(Debug, Clone)]
pub struct Accumulator {
    /// The first second not folded into `done` yet.
    next: u64,
    done: Tally,
    slow_from: usize,
}

// === impl Tally ===

impl Tally {
    /// Counts of `self` not in `base` (an earlier tally of the same variant).
    pub fn since(self, base: Tally) -> Tally {
        Tally {
            requests: self.requests.saturating_sub(base.requests),
            errors: self.errors.saturating_sub(base.errors),
            slow: self.slow.saturating_sub(base.slow),
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.slow += other.slow;
    }

    /// The larger of each count (tallies are cumulative; a racing read never goes back).
    pub fn max(self, other: Tally) -> Tally {
        Tally {
            requests: self.requests.max(other.requests),
            errors: self.errors.max(other.errors),
            slow: self.slow.max(other.slow),
        }
    }

    /// The tally of raw counts (a fleet's sum of one second), requests in latency buckets
    /// `slow_from..` counted slow.
    pub fn of_counts(c: &Counts, slow_from: usize) -> Tally {
        Tally {
            requests: c.requests,
            errors: c.errors,
            slow: c.latency.get(slow_from..).unwrap_or(&[]).iter().sum(),
        }
    }

    /// The count `kind` judges, never above `requests`.
    pub fn count(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Errors => self.errors.min(self.requests),
            Kind::Slow => self.slow.min(self.requests),
        }
    }
}

// === impl Accumulator ===

impl Accumulator {
    /// Totals from second `origin` on; requests slower than `max_p99` (when given) counted
    /// as slow.
    pub fn new(origin: u64, max_p99: Option<std::time::Duration>) -> Accumulator {
        Accumulator {
            next: origin,
            done: Tally::default(),
            slow_from: max_p99.map_or(histogram::BUCKETS, slow_from),
        }
    }

    /// The totals up to second `now_sec` (the current, partial one included). Seconds before
    /// `now_sec − 1` are final: writers name the second their request finished in, at most a
    /// second behind a reader on the same monotonic clock. A reader that stalled longer than
    /// the ring loses the seconds that fell out of it.
    pub fn read(&mut self, w: &Window, now_sec: u64) -> Tally {
        let slow_from = self.slow_from;
        self.read_by(now_sec, 1, w.held_secs(), |sec| w.second(sec, slow_from))
    }

    /// As [`read`](Self::read), with each second's counts from `second` (a fleet's sum, say),
    /// final once `settle` seconds old, and only the last `held` seconds still readable.
    pub fn read_by(
        &mut self,
        now_sec: u64,
        settle: u64,
        held: u64,
        mut second: impl FnMut(u64) -> Tally,
    ) -> Tally {
        let oldest = (now_sec + 1).saturating_sub(held);
        self.next = self.next.max(oldest);
        while self.next + settle <= now_sec {
            self.done.add(second(self.next));
            self.next += 1;
        }
        let mut t = self.done;
        for sec in self.next..=now_sec {
            t.add(second(sec));
        }
        t
    }

    /// The first latency bucket counted slow.
    pub fn slow_from(&self) -> usize {
        self.slow_from
    }
}

/// The first latency bucket whose every value exceeds `max` (values are whole microseconds,
/// so a bucket counts when its lower bound is above `max`): requests in a bucket that
/// straddles `max` are not counted slow, which errs toward the canary by at most one bucket
/// width (1/16 of the value).
fn slow_from(max: std::time::Duration) -> usize {
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    (0..histogram::BUCKETS)
        .find(|&i| histogram::bounds_micros(i).0 > max_us)
        .unwrap_or(histogram::BUCKETS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn folds_seconds_that_left_the_ring() {
        let w = Window::new(Duration::from_secs(3)); // 5 slots
        let mut acc = Accumulator::new(10, Some(Duration::from_millis(100)));
        for sec in 10..40 {
            w.record(sec, sec % 3 == 0, Duration::from_millis(5));
            w.record(sec, false, Duration::from_millis(500));
            let t = acc.read(&w, sec);
            let secs = sec - 9;
            assert_eq!(t.requests, 2 * secs, "second {sec}");
            assert_eq!(t.errors, (10..=sec).filter(|s| s % 3 == 0).count() as u64);
            assert_eq!(t.slow, secs);
        }
    }

    #[test]
    fn a_long_stall_loses_only_what_left_the_ring() {
        let w = Window::new(Duration::from_secs(3));
        let mut acc = Accumulator::new(0, None);
        for sec in 0..20 {
            w.record(sec, false, Duration::from_millis(1));
        }
        // Read only at 19: seconds 15..=19 are still held.
        assert_eq!(acc.read(&w, 19).requests, 5);
        w.record(20, false, Duration::from_millis(1));
        assert_eq!(acc.read(&w, 20).requests, 6);
    }

    #[test]
    fn slow_means_wholly_above_the_limit() {
        let b = slow_from(Duration::from_millis(800));
        assert!(histogram::bounds_micros(b).0 > 800_000);
        assert!(histogram::bounds_micros(b - 1).0 <= 800_000);
        assert_eq!(
            slow_from(Duration::from_secs(1_000_000)),
            histogram::BUCKETS
        );
    }
}
