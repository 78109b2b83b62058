//! Progressive delivery: per-variant request windows, the verdict, the rollout state
//! machine, and the runner that drives them. Everything but [`runner`] is pure and
//! synchronous — no hyper, no tokio, no clock reads; [`runner`] wires it into the tick loop,
//! the weight atomics, the admin actions, the audit log and `state/` (the data plane records
//! into the windows through `RolloutRt::record`).
//!
//! - [`window`]: lock-free per-second rings of requests, errors and latency per variant,
//!   written on every request; [`histogram`] is their latency bucket layout.
//! - [`error_status`]: `error_statuses` compiled into a bitmap (sluice's own 502/503/504 always count).
//! - [`analysis`]: the SPEC §6 verdict with its numbers; [`normal`]: the inverse normal CDF.
//! - [`progress`]: the persisted [`Progress`]; [`controller`]: `tick`, operator actions,
//!   [`current_weight`] and [`carry_over`] across activations.
//! - [`runner`]: the control-plane task that ticks every rollout each `analysis.interval`,
//!   stores weights, persists progress, audits transitions and serves operator actions.
//!
//! Per tick of a rollout with analysis:
//! ```text
//! let v = judge_windows(a, &windows, now_sec);                // count v.outcome
//! let events = controller::tick(&mut progress, spec, Some(&v), now_ms);
//! weight.store(current_weight(&progress, spec).0, Relaxed);   // persist progress, audit events
//! ```

pub mod analysis;
pub mod controller;
pub mod error_status;
pub mod fleet;
pub mod histogram;
pub mod normal;
pub mod progress;
pub mod runner;
pub mod sequential;
pub mod simulation;
pub mod tally;
pub mod window;

pub use analysis::{Criterion, Verdict, VerdictOutcome, judge, judge_windows};
pub use controller::{ActionError, Event, carry_over, current_weight, tick};
pub use error_status::ErrorStatuses;
pub use progress::{PauseReason, Phase, Progress, RollbackReason};
pub use runner::Runner;
pub use sequential::Sequential;
pub use tally::{Accumulator, Tally};
pub use window::{Counts, RolloutWindows, Variant, Window, WindowStats};

/// Serializes durations as (fractional) milliseconds, the unit status and audit speak.
mod serde_millis {
    use std::time::Duration;

    use serde::Serializer;

    /// `Some(d)` as milliseconds, `None` as null.
    pub fn option<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
            None => s.serialize_none(),
        }
    }
}
