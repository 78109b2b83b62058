//! Fleet windows (SPEC §12): every node publishes its per-variant, per-second counts
//! (requests, errors, latency histogram) for each running rollout under its lease, every
//! `analysis.interval` (twice per interval, so that what the leader judges is at most half an
//! interval old); the leader adds the live nodes' seconds to its own and judges the sum
//! with SPEC §6 unchanged. A node's keys go with its lease, and so its counts with it.
//!
//! Seconds are wall-clock (unix) seconds on the wire, so that nodes agree on which second is
//! which; each node converts its monotonic window seconds when it publishes. A publication
//! carries the last few seconds (the current, partial one included), and the leader keeps the
//! newest value of each (node, second): republishing is harmless, and a second is final once
//! it is no longer current.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::rollout::histogram::BUCKETS;
use crate::rollout::{Counts, RolloutWindows, WindowStats};

/// Seconds of history kept per node: the longest window a verdict may look at.
pub const KEEP_SECS: u64 = 3600;

/// What a node publishes for one rollout: `P/windows/<node>/<rollout>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Seconds, oldest first.
    pub seconds: Vec<Second>,
}

/// One second of one rollout on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    /// Unix second.
    pub t: u64,
    /// Stable.
    pub s: Side,
    /// Canary.
    pub c: Side,
}

/// One variant's counts in one second; the histogram sparse as `[bucket, count]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// Requests.
    pub n: u64,
    /// Errors.
    pub e: u64,
    /// Non-empty latency buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub h: Vec<[u64; 2]>,
}

/// The leader's cache of every node's published seconds.
#[derive(Debug, Default)]
pub struct FleetWindows {
    /// (rollout, node) → unix second → (stable, canary).
    by: HashMap<(String, String), BTreeMap<u64, (Side, Side)>>,
}

// === impl Side ===

impl Side {
    fn of(c: &Counts) -> Side {
        Side {
            n: c.requests,
            e: c.errors,
            h: c.latency
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| [i as u64, *n])
                .collect(),
        }
    }

    fn add_to(&self, into: &mut Counts) {
        into.requests += self.n;
        into.errors += self.e;
        for [i, n] in &self.h {
            if let Some(cell) = usize::try_from(*i)
                .ok()
                .filter(|i| *i < BUCKETS)
                .and_then(|i| into.latency.get_mut(i))
            {
                *cell += n;
            }
        }
    }
}

// === impl Published ===

impl Published {
    /// The last `secs` seconds of `windows` up to mono second `now_mono`, as unix seconds
    /// (`unix_of_mono` maps one to the other). Seconds with no request are left out.
    pub fn of(
        windows: &RolloutWindows,
        now_mono: u64,
        secs: u64,
        unix_of_mono: impl Fn(u64) -> u64,
    ) -> Published {
        let mut seconds = Vec::new();
        for m in now_mono.saturating_sub(secs.saturating_sub(1))..=now_mono {
            let (mut s, mut c) = (Counts::default(), Counts::default());
            windows.stable.add_second(m, &mut s);
            windows.canary.add_second(m, &mut c);
            if s.is_empty() && c.is_empty() {
                continue;
            }
            seconds.push(Second {
                t: unix_of_mono(m),
                s: Side::of(&s),
                c: Side::of(&c),
            });
        }
        Published { seconds }
    }
}

// === impl FleetWindows ===

impl FleetWindows {
    /// Records a node's publication for a rollout.
    pub fn update(&mut self, node: &str, rollout: &str, p: Published, now_unix: u64) {
        let e = self
            .by
            .entry((rollout.to_string(), node.to_string()))
            .or_default();
        for s in p.seconds {
            e.insert(s.t, (s.s, s.c));
        }
        let oldest = now_unix.saturating_sub(KEEP_SECS);
        e.retain(|t, _| *t >= oldest);
    }

    /// Forgets a node's counts for a rollout (its key was deleted: lease lapsed).
    pub fn remove(&mut self, node: &str, rollout: &str) {
        self.by.remove(&(rollout.to_string(), node.to_string()));
    }

    /// Forgets everything of a node.
    pub fn remove_node(&mut self, node: &str) {
        self.by.retain(|(_, n), _| n != node);
    }

    /// Adds the other nodes' counts of `rollout` for unix seconds `from..=to` (`except`: this
    /// node, whose live windows are read directly) into (stable, canary).
    pub fn add_range(
        &self,
        rollout: &str,
        except: &str,
        from: u64,
        to: u64,
        stable: &mut Counts,
        canary: &mut Counts,
    ) {
        for ((r, node), secs) in &self.by {
            if r != rollout || node == except {
                continue;
            }
            for (_, (s, c)) in secs.range(from..=to) {
                s.add_to(stable);
                c.add_to(canary);
            }
        }
    }

    /// Nodes with counts for `rollout`.
    pub fn nodes(&self, rollout: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .by
            .keys()
            .filter(|(r, _)| r == rollout)
            .map(|(_, n)| n.clone())
            .collect();
        v.sort();
        v
    }
}

/// Maps monotonic window seconds to unix seconds, fixed at creation.
#[derive(Debug, Clone, Copy)]
pub struct MonoToUnix {
    /// Unix milliseconds at mono second 0.
    origin_ms: i128,
}

// === impl MonoToUnix ===

impl MonoToUnix {
    /// Reads both clocks now.
    pub fn now() -> MonoToUnix {
        let mono_now = Instant::now();
        let mono_ms = i128::from(crate::clock::mono_secs(mono_now)) * 1000;
        let unix_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i128;
        // mono_secs truncates: the fraction of the current mono second is lost, so the
        // mapping is exact to within one second, which is what a window slot is.
        MonoToUnix {
            origin_ms: unix_ms - mono_ms,
        }
    }

    /// The unix second of mono second `m`.
    pub fn unix(&self, m: u64) -> u64 {
        let ms = self.origin_ms + i128::from(m) * 1000;
        u64::try_from(ms / 1000).unwrap_or(0)
    }
}

/// The fleet's stats of one rollout over the trailing `window` ending now: this node's live
/// windows plus every other node's published seconds.
pub fn fleet_stats(
    cache: &FleetWindows,
    node: &str,
    rollout: &str,
    local: &RolloutWindows,
    now_mono: u64,
    window: Duration,
    map: MonoToUnix,
) -> (WindowStats, WindowStats) {
    let w = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    let w = w.clamp(1, local.stable.max_window_secs());
    let (mut stable, mut canary) = (Counts::default(), Counts::default());
    for m in now_mono.saturating_sub(w - 1)..=now_mono {
        local.stable.add_second(m, &mut stable);
        local.canary.add_second(m, &mut canary);
    }
    let to = map.unix(now_mono);
    cache.add_range(
        rollout,
        node,
        to.saturating_sub(w - 1),
        to,
        &mut stable,
        &mut canary,
    );
    (stable.stats(), canary.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_sum_with_local_counts() {
        let a = RolloutWindows::new(Duration::from_secs(30));
        let b = RolloutWindows::new(Duration::from_secs(30));
        for _ in 0..10 {
            a.record(
                crate::rollout::Variant::Canary,
                100,
                true,
                Duration::from_millis(5),
            );
            b.record(
                crate::rollout::Variant::Canary,
                100,
                false,
                Duration::from_millis(900),
            );
            b.record(
                crate::rollout::Variant::Stable,
                99,
                false,
                Duration::from_millis(1),
            );
        }
        let map = MonoToUnix { origin_ms: 5_000 };
        let p = Published::of(&b, 100, 3, |m| map.unix(m));
        assert_eq!(p.seconds.len(), 2, "{p:?}");
        let json = serde_json::to_string(&p).unwrap();
        let back: Published = serde_json::from_str(&json).unwrap();
        let mut cache = FleetWindows::default();
        cache.update("b", "web", back, 105);
        let (s, c) = fleet_stats(&cache, "a", "web", &a, 100, Duration::from_secs(10), map);
        assert_eq!((c.requests, c.errors), (20, 10));
        assert_eq!(s.requests, 10);
        // Half the canary requests took 900 ms: the p99 is theirs.
        assert!(c.p99.unwrap() > Duration::from_millis(850), "{c:?}");
        // Its own node is never counted twice.
        let (_, c) = fleet_stats(&cache, "b", "web", &a, 100, Duration::from_secs(10), map);
        assert_eq!(c.requests, 10);
        cache.remove_node("b");
        assert!(cache.nodes("web").is_empty());
    }
}
