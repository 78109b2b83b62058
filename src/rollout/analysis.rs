//! The verdict of SPEC §6: canary counts judged against `analysis` thresholds and against
//! stable, with every number kept for status and audit.
//!
//! Rules, in order; the first that fails names the verdict:
//! 1. inconclusive when `n_c < min_requests` (nothing else is judged on too little traffic);
//! 2. `error_rate`: `e_c / n_c > max_error_rate`;
//! 3. `error_rate_increase`: `z = (p_c − p_s − δ) / sqrt(p_c(1−p_c)/n_c + p_s(1−p_s)/n_s)`
//!    exceeds the one-sided normal quantile of `confidence`; a zero denominator counts as
//!    exceeding when the numerator is positive;
//! 4. `p99`: canary p99 > `max_p99`;
//!
//! otherwise passed. A threshold that is not configured is not tested.
//!
//! **No stable traffic** (`n_s = 0`, e.g. a canary step at 100% or blue-green after promotion):
//! an *increase over stable* has no baseline, so rule 3 is skipped (`z` is `None`) and the
//! absolute rules 2 and 4 still apply. Treating the missing stable as error-free instead would
//! fail every healthy service whose normal error rate exceeds δ the moment it reaches 100%.

use std::time::Duration;

use serde::Serialize;

use super::normal::normal_quantile;
use super::sequential::Evidence;
use super::window::{RolloutWindows, WindowStats};
use crate::config::traffic::Analysis;
use crate::metric_check::MetricResult;

/// The outcome of one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    /// Every configured threshold holds.
    Passed,
    /// A threshold is broken ([`Verdict::rule`] says which).
    Failed,
    /// Too few canary requests to judge.
    Inconclusive,
}

/// The rule a failed verdict broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Canary error rate above `max_error_rate`.
    ErrorRate,
    /// Canary error rate significantly above stable plus `max_error_rate_increase`.
    ErrorRateIncrease,
    /// Canary p99 above `max_p99`.
    P99,
    /// An `analysis.metrics` check failed `failure_limit` times in a row.
    Metric,
    /// A `pre_rollout` or `rollout` hook failed.
    Hook,
}

/// One verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// passed, failed or inconclusive.
    pub outcome: VerdictOutcome,
    /// The first rule that failed: `Some` exactly when `outcome` is failed (the controller
    /// reads this field to decide).
    pub rule: Option<Criterion>,
    /// n_c: canary requests in the window.
    pub canary_requests: u64,
    /// e_c: canary errors in the window.
    pub canary_errors: u64,
    /// n_s: stable requests in the window.
    pub stable_requests: u64,
    /// e_s: stable errors in the window.
    pub stable_errors: u64,
    /// p_c = e_c / n_c (0 without requests).
    pub canary_error_rate: f64,
    /// p_s = e_s / n_s; `None` without stable requests.
    pub stable_error_rate: Option<f64>,
    /// The z statistic; `None` when not computed (no increase threshold, or no traffic on a
    /// side). ±∞ for a zero denominator (serialized as `null`; see `increase_exceeded`).
    pub z: Option<f64>,
    /// The one-sided quantile of `confidence` that `z` is compared with.
    pub z_critical: Option<f64>,
    /// Whether the increase test failed (true also for a zero denominator and positive numerator).
    pub increase_exceeded: bool,
    /// Canary p99 over the window.
    #[serde(
        rename = "canary_p99_ms",
        serialize_with = "super::serde_millis::option"
    )]
    pub canary_p99: Option<Duration>,
    /// `method: sequential`: the always-valid test's numbers (the counts above are then the
    /// counts since the step began; `z` is not computed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Evidence>,
    /// `analysis.metrics`: each check's latest result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricResult>,
}

// === impl VerdictOutcome ===

impl VerdictOutcome {
    /// The label value of `sluice_rollout_verdicts_total{verdict}`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictOutcome::Passed => "passed",
            VerdictOutcome::Failed => "failed",
            VerdictOutcome::Inconclusive => "inconclusive",
        }
    }
}

// === impl Criterion ===

impl Criterion {
    /// The snake_case name used in status, audit and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::ErrorRate => "error_rate",
            Criterion::ErrorRateIncrease => "error_rate_increase",
            Criterion::P99 => "p99",
            Criterion::Metric => "metric",
            Criterion::Hook => "hook",
        }
    }
}

// === impl Verdict ===

impl Verdict {
    /// Whether this verdict lets a step advance.
    pub fn passed(&self) -> bool {
        self.outcome == VerdictOutcome::Passed
    }
}

/// Judges the canary window against the stable window under `analysis`.
pub fn judge(analysis: &Analysis, canary: &WindowStats, stable: &WindowStats) -> Verdict {
    let (n_c, e_c) = (canary.requests, canary.errors.min(canary.requests));
    let (n_s, e_s) = (stable.requests, stable.errors.min(stable.requests));
    let p_c = if n_c == 0 {
        0.0
    } else {
        e_c as f64 / n_c as f64
    };
    let p_s = (n_s > 0).then(|| e_s as f64 / n_s as f64);

    let (mut z, mut z_critical, mut increase_exceeded) = (None, None, false);
    if let Some(delta) = analysis.max_error_rate_increase {
        let crit = normal_quantile(analysis.confidence);
        z_critical = Some(crit);
        z = z_score(e_c, n_c, e_s, n_s, delta);
        increase_exceeded = z.is_some_and(|z| z > crit);
    }

    let rule = if n_c < analysis.min_requests {
        None
    } else if analysis.max_error_rate.is_some_and(|max| p_c > max) {
        Some(Criterion::ErrorRate)
    } else if increase_exceeded {
        Some(Criterion::ErrorRateIncrease)
    } else if analysis
        .max_p99
        .zip(canary.p99)
        .is_some_and(|(max, p99)| p99 > max.0)
    {
        Some(Criterion::P99)
    } else {
        None
    };
    let outcome = match rule {
        _ if n_c < analysis.min_requests => VerdictOutcome::Inconclusive,
        Some(_) => VerdictOutcome::Failed,
        None => VerdictOutcome::Passed,
    };
    Verdict {
        outcome,
        rule,
        canary_requests: n_c,
        canary_errors: e_c,
        stable_requests: n_s,
        stable_errors: e_s,
        canary_error_rate: p_c,
        stable_error_rate: p_s,
        z,
        z_critical,
        increase_exceeded,
        canary_p99: canary.p99,
        sequential: None,
        metrics: Vec::new(),
    }
}

/// Judges the trailing `analysis.window` ending at second `now_sec` (the clock the windows
/// were recorded with).
pub fn judge_windows(analysis: &Analysis, windows: &RolloutWindows, now_sec: u64) -> Verdict {
    let canary = windows.canary.snapshot(now_sec, analysis.window.0);
    let stable = windows.stable.snapshot(now_sec, analysis.window.0);
    judge(analysis, &canary, &stable)
}

/// `(p_c − p_s − δ) / sqrt(p_c(1−p_c)/n_c + p_s(1−p_s)/n_s)`; `None` when either side has no
/// requests. A zero denominator gives +∞ for a positive numerator, −∞ for a negative one, and
/// 0 for a zero one.
pub fn z_score(e_c: u64, n_c: u64, e_s: u64, n_s: u64, delta: f64) -> Option<f64> {
    if n_c == 0 || n_s == 0 {
        return None;
    }
    let p_c = e_c as f64 / n_c as f64;
    let p_s = e_s as f64 / n_s as f64;
    let num = p_c - p_s - delta;
    let den = (p_c * (1.0 - p_c) / n_c as f64 + p_s * (1.0 - p_s) / n_s as f64).sqrt();
    Some(if den > 0.0 {
        num / den
    } else if num > 0.0 {
        f64::INFINITY
    } else if num < 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    })
}

#[cfg(test)]
mod tests;
