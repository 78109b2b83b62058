//! Lock-free per-second request windows, one per rollout variant, written on every request
//! and read by the controller each `analysis.interval`.
//!
//! A [`Window`] is a ring of one-second slots; each slot holds a request count, an error
//! count and a latency histogram ([`super::histogram`] layout). Every counter is
//! one `AtomicU64` packing `(second as u32) << 32 | count`: the second tags which second the
//! count belongs to, so a slot never needs a separate reset step.
//!
//! **Lazy reset, and its race.** A writer whose second differs from a counter's tag replaces
//! the counter with `(its second, 1)` by compare-and-swap; a writer whose second matches adds
//! one by compare-and-swap. Every increment is therefore applied exactly once to the second
//! its writer named — there is no window in which a reset can wipe a fresh increment, which a
//! "swap the slot epoch, then zero the counters" scheme cannot promise without making writers
//! wait. The tradeoff: tags are per counter, so a slot's request count and its histogram may
//! briefly disagree while a second is being written, and a writer that names a second at
//! least a ring length older than the current one (a thread stalled for the whole ring, or a
//! wall clock stepped back) resets that counter to its own second, discarding the newer count.
//! Pass seconds from a monotonic source (e.g. an `Instant` anchored at start-up) and the second
//! case cannot happen; the first is a stall of `capacity` seconds.
//!
//! Recording costs two or three CAS operations and no allocation. Snapshots read
//! `window × 371` atomics with relaxed loads; a snapshot is not atomic across counters, so
//! increments racing with it may or may not be in it.
//!
//! Memory: about 3 KiB per second of ring per variant (369 histogram buckets × 8 bytes).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use super::histogram::{self, BUCKETS};
use super::tally::Tally;

/// Extra slots beyond the longest window, so writers a second ahead of a snapshot (threads
/// whose clocks already ticked) never land in a slot the snapshot is summing.
const SPARE_SLOTS: usize = 2;

/// Counts over a trailing window of one variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Requests seen.
    pub requests: u64,
    /// Requests counted as errors.
    pub errors: u64,
    /// 99th percentile latency; `None` without requests.
    #[serde(serialize_with = "super::serde_millis::option")]
    pub p99: Option<Duration>,
}

/// Raw counts of one second or a sum of seconds, histogram included: what a fleet node
/// publishes and the leader adds up (SPEC §12) before judging the sum like any window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Latency histogram ([`super::histogram`] layout).
    pub latency: Box<[u64; BUCKETS]>,
}

/// Which side of a rollout a request went to (blue-green: active = stable, preview = canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The current version (blue-green: active).
    Stable,
    /// The new version (blue-green: preview).
    Canary,
}

/// The two windows of one rollout.
#[derive(Debug)]
pub struct RolloutWindows {
    /// Requests that went to stable.
    pub stable: Window,
    /// Requests that went to canary.
    pub canary: Window,
}

/// A ring of per-second slots for one variant.
#[derive(Debug)]
pub struct Window {
    slots: Box<[Slot]>,
}

/// One second: counters tagged with the second they belong to.
#[derive(Debug)]
struct Slot {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

// === impl Variant ===

impl Variant {
    /// The label value used in metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
        }
    }
}

// === impl RolloutWindows ===

impl RolloutWindows {
    /// Windows able to answer for trailing windows up to `max_window`.
    pub fn new(max_window: Duration) -> Self {
        RolloutWindows {
            stable: Window::new(max_window),
            canary: Window::new(max_window),
        }
    }

    /// The window of one variant.
    #[inline]
    pub fn get(&self, variant: Variant) -> &Window {
        match variant {
            Variant::Stable => &self.stable,
            Variant::Canary => &self.canary,
        }
    }

    /// Records one request for `variant` (hot path: see [`Window::record`]).
    #[inline]
    pub fn record(&self, variant: Variant, now_sec: u64, is_error: bool, latency: Duration) {
        self.get(variant).record(now_sec, is_error, latency);
    }
}

// === impl Window ===

impl Window {
    /// A ring long enough for trailing windows up to `max_window` (rounded up to seconds).
    pub fn new(max_window: Duration) -> Self {
        let secs = whole_seconds(max_window);
        let slots = (0..secs + SPARE_SLOTS).map(|_| Slot::new()).collect();
        Window { slots }
    }

    /// The longest trailing window this ring can sum, in seconds.
    pub fn max_window_secs(&self) -> u64 {
        (self.slots.len() - SPARE_SLOTS) as u64
    }

    /// Records one request finished in second `now_sec` (any clock, as long as snapshots use
    /// the same one; monotonic preferred). No lock, no allocation.
    #[inline]
    pub fn record(&self, now_sec: u64, is_error: bool, latency: Duration) {
        let slot = &self.slots[(now_sec % self.slots.len() as u64) as usize];
        let tag = now_sec as u32;
        bump(&slot.requests, tag);
        if is_error {
            bump(&slot.errors, tag);
        }
        bump(&slot.latency[histogram::bucket_of(latency)], tag);
    }

    /// Sums the trailing `window` ending at second `now_sec` inclusive: seconds
    /// `now_sec - w + 1 ..= now_sec` with `w` the window in whole seconds (rounded up, at
    /// least 1, at most [`max_window_secs`](Self::max_window_secs)). The current second is
    /// partial; counting it lets a rollback react to the freshest traffic.
    pub fn snapshot(&self, now_sec: u64, window: Duration) -> WindowStats {
        let w = (whole_seconds(window) as u64).min(self.max_window_secs());
        let len = self.slots.len() as u64;
        let mut stats = WindowStats::default();
        let mut counts = [0u64; BUCKETS];
        for sec in now_sec.saturating_sub(w - 1)..=now_sec {
            let slot = &self.slots[(sec % len) as usize];
            let tag = sec as u32;
            stats.requests += read(&slot.requests, tag);
            stats.errors += read(&slot.errors, tag);
            for (sum, cell) in counts.iter_mut().zip(slot.latency.iter()) {
                *sum += read(cell, tag);
            }
        }
        stats.p99 = histogram::quantile(&counts, 0.99);
        stats
    }

    /// The counts of second `sec` alone (zero once the ring has moved past it): requests,
    /// errors, and requests in latency buckets `slow_from..` ([`BUCKETS`] counts none).
    pub fn second(&self, sec: u64, slow_from: usize) -> Tally {
        let slot = &self.slots[(sec % self.slots.len() as u64) as usize];
        let tag = sec as u32;
        Tally {
            requests: read(&slot.requests, tag),
            errors: read(&slot.errors, tag),
            slow: slot
                .latency
                .get(slow_from..)
                .unwrap_or(&[])
                .iter()
                .map(|c| read(c, tag))
                .sum(),
        }
    }

    /// How many of the latest seconds the ring still holds (the current one included).
    pub fn held_secs(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Adds the counts of second `sec` into `into` (nothing when the ring no longer holds it).
    pub fn add_second(&self, sec: u64, into: &mut Counts) {
        let slot = &self.slots[(sec % self.slots.len() as u64) as usize];
        let tag = sec as u32;
        into.requests += read(&slot.requests, tag);
        into.errors += read(&slot.errors, tag);
        for (sum, cell) in into.latency.iter_mut().zip(slot.latency.iter()) {
            *sum += read(cell, tag);
        }
    }
}

// === impl Counts ===

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    /// The stats a verdict reads.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            requests: self.requests,
            errors: self.errors,
            p99: histogram::quantile(&self.latency, 0.99),
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.errors == 0
    }
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            requests: 0,
            errors: 0,
            latency: Box::new([0; BUCKETS]),
        }
    }
}

// === impl Slot ===

impl Slot {
    fn new() -> Self {
        Slot {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

/// Whole seconds in `d`, rounded up, at least one.
fn whole_seconds(d: Duration) -> usize {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    usize::try_from(s.max(1)).unwrap_or(usize::MAX)
}

/// Adds one to the count of second `tag`, replacing a count of another second.
#[inline]
fn bump(cell: &AtomicU64, tag: u32) {
    let mut cur = cell.load(Relaxed);
    loop {
        let next = if (cur >> 32) as u32 == tag {
            // Saturate rather than carry into the tag: 4 billion a second is not a real rate.
            if cur as u32 == u32::MAX {
                return;
            }
            cur + 1
        } else {
            (u64::from(tag) << 32) | 1
        };
        match cell.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// The count of second `tag` in `cell`, zero when the cell holds another second.
#[inline]
fn read(cell: &AtomicU64, tag: u32) -> u64 {
    let v = cell.load(Relaxed);
    if (v >> 32) as u32 == tag {
        v & u64::from(u32::MAX)
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
