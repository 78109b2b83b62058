//! The live side of `analysis.method: sequential`: cumulative counts read from a rollout's
//! windows since its evidence origin, fed to its [`Sequential`] test at every evaluation
//! ([`EVALUATE_EVERY`]).

use std::time::{Duration, Instant};

use crate::clock;
use crate::config::traffic::Analysis;
use crate::rollout::analysis::Verdict;
use crate::rollout::fleet::Fleet;
use crate::rollout::sequential::Sequential;
use crate::rollout::tally::{Accumulator, Tally};
use crate::snapshot::RolloutRt;

/// How often a sequential rollout is evaluated: a failure is acted on at the first
/// evaluation after the request that proves it, so this is the decision's latency (half of
/// it on average). 50 ms (it was 100 ms) took ~50 ms off the slowest rollbacks in the
/// simulation; an evaluation reads the windows and sums a few dozen tests (microseconds).
pub const EVALUATE_EVERY: Duration = Duration::from_millis(50);

/// Where a rollout's counts come from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// This node's windows.
    Local,
    /// The fleet's sum (this node leads): rollout name and the fleet.
    Fleet(&'a str, &'a dyn Fleet),
}

/// One rollout's running sequential test and what feeds it.
#[derive(Debug, Clone)]
pub(super) struct Continuous {
    /// The analysis the test was built for (a new document may change it).
    analysis: Analysis,
    test: Sequential,
    canary: Accumulator,
    stable: Accumulator,
}

// === impl Continuous ===

impl Continuous {
    /// A test over the evidence since monotonic second `origin_sec`.
    pub(super) fn new(analysis: &Analysis, origin_sec: u64) -> Continuous {
        Continuous {
            analysis: analysis.clone(),
            test: Sequential::new(analysis, origin_sec.saturating_mul(1000)),
            canary: Accumulator::new(origin_sec, analysis.max_p99.map(|d| d.0)),
            stable: Accumulator::new(origin_sec, analysis.max_p99.map(|d| d.0)),
        }
    }

    /// Whether this test judges as `analysis` would: everything but what is judged beside
    /// it (`metrics`, each its own input) and the controller's streak limits
    /// (`failure_limit`, `inconclusive_limit`) is the same. A new document that edits only
    /// those keeps the test and its accumulated evidence; any other change (a threshold,
    /// `confidence`, `window`, `interval`, `min_requests`, `error_statuses`, the method)
    /// starts a new one, since the evidence was weighed against the old criteria.
    pub(super) fn judges(&self, analysis: &Analysis) -> bool {
        let mut same = analysis.clone();
        same.metrics.clone_from(&self.analysis.metrics);
        same.failure_limit = self.analysis.failure_limit;
        same.inconclusive_limit = self.analysis.inconclusive_limit;
        self.analysis == same
    }

    /// Reads the windows and evaluates; a verdict when the controller should see one (a
    /// failure at once, otherwise each `interval`, or always with `report`), with the
    /// canary's p99 over the trailing window for people.
    pub(super) fn evaluate(
        &mut self,
        rt: &RolloutRt,
        source: Source<'_>,
        now: Instant,
        report: bool,
    ) -> Option<Verdict> {
        let now_sec = clock::mono_secs(now);
        let (canary, stable) = match source {
            Source::Local => (
                self.canary.read(&rt.windows.canary, now_sec),
                self.stable.read(&rt.windows.stable, now_sec),
            ),
            Source::Fleet(name, fleet) => {
                // Other nodes publish each `interval`: a second is final once that much
                // later (the local ring holds `window` ≥ `interval` seconds and two more).
                let settle = self.analysis.interval.0.as_secs() + 2;
                let held = rt.windows.canary.held_secs();
                let slow = self.canary.slow_from();
                let side = |stable: bool| {
                    move |sec| {
                        let (s, c) = fleet.second(name, &rt.windows, sec);
                        Tally::of_counts(if stable { &s } else { &c }, slow)
                    }
                };
                (
                    self.canary.read_by(now_sec, settle, held, side(false)),
                    self.stable.read_by(now_sec, settle, held, side(true)),
                )
            }
        };
        let mut v = self
            .test
            .observe(clock::mono_millis(now), canary, stable, report)?;
        v.canary_p99 = rt
            .windows
            .canary
            .snapshot(now_sec, self.analysis.window.0)
            .p99;
        Some(v)
    }

    /// A new step began: its counts start now (the test goes on).
    pub(super) fn step_started(&mut self) {
        self.test.step_started();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_only_metrics_or_streak_limits_keeps_the_test_and_a_criterion_does_not() {
        let a = Analysis {
            max_error_rate_increase: Some(0.01),
            ..Analysis::default()
        };
        let c = Continuous::new(&a, 7);
        let mut b = a.clone();
        b.metrics = vec![
            serde_json::from_str(
                r#"{"name":"m","provider":"web","url":"http://p/x","condition":"result < 1"}"#,
            )
            .unwrap(),
        ];
        b.failure_limit = 3;
        b.inconclusive_limit = 9;
        assert!(c.judges(&b));
        for edit in [
            |x: &mut Analysis| x.max_error_rate_increase = Some(0.02),
            |x: &mut Analysis| x.max_error_rate = Some(0.05),
            |x: &mut Analysis| x.confidence = 0.95,
            |x: &mut Analysis| x.min_requests = 1,
            |x: &mut Analysis| x.window.0 *= 2,
        ] {
            let mut d = b.clone();
            edit(&mut d);
            assert!(!c.judges(&d), "{d:?}");
        }
    }
}
