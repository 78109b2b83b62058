//! The live side of `analysis.method: sequential`: cumulative counts read from a rollout's
//! windows since its evidence origin, fed to its [`Sequential`] test at every evaluation
//! ([`EVALUATE_EVERY`]).

use std::time::{Duration, Instant};

use crate::clock;
use crate::config::traffic::Analysis;
use crate::rollout::analysis::Verdict;
use crate::rollout::sequential::Sequential;
use crate::rollout::tally::Accumulator;
use crate::snapshot::RolloutRt;

/// How often a sequential rollout is evaluated.
pub const EVALUATE_EVERY: Duration = Duration::from_millis(100);

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

    /// Whether this test was built for `analysis`.
    pub(super) fn judges(&self, analysis: &Analysis) -> bool {
        self.analysis == *analysis
    }

    /// Reads the windows and evaluates; a verdict when the controller should see one (a
    /// failure at once, otherwise each `interval`, or always with `report`), with the
    /// canary's p99 over the trailing window for people.
    pub(super) fn evaluate(
        &mut self,
        rt: &RolloutRt,
        now: Instant,
        report: bool,
    ) -> Option<Verdict> {
        let now_sec = clock::mono_secs(now);
        let canary = self.canary.read(&rt.windows.canary, now_sec);
        let stable = self.stable.read(&rt.windows.stable, now_sec);
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
