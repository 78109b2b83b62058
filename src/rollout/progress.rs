//! Where a rollout stands: the serializable state the controller moves and the integrator
//! persists in `state/` (phase, step, step start, streaks). Times are unix milliseconds.

use serde::{Deserialize, Serialize};

use super::analysis::{Criterion, VerdictOutcome};

/// The persisted progress of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Canary: index into `steps` (`steps.len()` once completed). Blue-green: 0 before
    /// promotion, 1 after.
    pub step: usize,
    /// When this progress began (unix ms).
    pub started_at_ms: u64,
    /// When the current step began (unix ms); holds and the post-promotion window count from
    /// here, wall clock, so downtime counts.
    pub step_started_at_ms: u64,
    /// Failed verdicts in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Inconclusive verdicts in a row.
    #[serde(default)]
    pub consecutive_inconclusive: u32,
    /// Blue-green: when preview was promoted (unix ms).
    #[serde(default)]
    pub promoted_at_ms: Option<u64>,
    /// Set exactly when `phase` is paused.
    #[serde(default)]
    pub pause: Option<PauseState>,
    /// Why the rollout was aborted, once it is.
    #[serde(default)]
    pub abort_reason: Option<RollbackReason>,
    /// When the rollout completed or aborted (unix ms).
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The outcome of the latest verdict since the current step began. Not persisted: after a
    /// restart a step advances only on fresh evidence.
    #[serde(skip)]
    pub last_outcome: Option<VerdictOutcome>,
    /// The step an operator's full promotion (`promote --full`) was taken at, once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_promotion_from: Option<usize>,
    /// A fresh start whose `confirm_rollout`/`pre_rollout` hooks have not all passed yet:
    /// the canary gets no traffic and step 0's hold has not begun.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_start: bool,
    /// The hook gate the last tick stopped at (for the runner to poll, and for status).
    #[serde(skip)]
    pub waiting_for: Option<HookGate>,
}

/// A hook gate a rollout can stand at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookGate {
    /// `confirm_rollout` or `pre_rollout`, before the canary gets traffic.
    Start,
    /// The current step's `rollout` hooks.
    Step,
    /// `confirm_promotion`.
    Promotion,
}

/// Rollout phases (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps advancing on hold and verdicts.
    Progressing,
    /// Frozen by the document, an operator or the analysis.
    Paused,
    /// At a manual gate (blue-green: awaiting a manual promote).
    WaitingForPromotion,
    /// Past the last step (blue-green: promoted and through the post-promotion window).
    Completed,
    /// Rolled back or aborted; final for this document.
    Aborted,
}

/// Why and since when a rollout is paused, and the phase `resume` returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseState {
    /// Who or what paused it.
    pub reason: PauseReason,
    /// When (unix ms).
    pub since_ms: u64,
    /// The phase before the pause.
    pub resume_to: Phase,
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum PauseReason {
    /// `paused: true` in the document; lifts when the document says otherwise.
    Document,
    /// An operator's pause action.
    Operator,
    /// `failure_limit` failed verdicts with `on_failure: pause`.
    Failed {
        /// The rule the last failed verdict broke.
        rule: Criterion,
    },
    /// `inconclusive_limit` inconclusive verdicts in a row.
    Inconclusive,
}

/// Why weight went back to 0 and the rollout aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// Canary error rate above `max_error_rate`.
    ErrorRate,
    /// Canary error rate significantly above stable.
    ErrorRateIncrease,
    /// Canary p99 above `max_p99`.
    P99,
    /// An `analysis.metrics` check.
    Metric,
    /// A failed `pre_rollout`/`rollout` hook, or a `rollback` hook that answered 2xx.
    Hook,
    /// An operator's abort action.
    Operator,
}

// === impl Progress ===

impl Progress {
    /// A fresh progress at step 0, started at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Progress {
            phase: Phase::Progressing,
            step: 0,
            started_at_ms: now_ms,
            step_started_at_ms: now_ms,
            consecutive_failures: 0,
            consecutive_inconclusive: 0,
            promoted_at_ms: None,
            pause: None,
            abort_reason: None,
            finished_at_ms: None,
            last_outcome: None,
            full_promotion_from: None,
            awaiting_start: false,
            waiting_for: None,
        }
    }

    /// Why it is paused, when it is.
    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.pause.map(|p| p.reason)
    }
}

// === impl HookGate ===

impl HookGate {
    /// The snake_case name used in status (`waiting_for`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookGate::Start => "start_hooks",
            HookGate::Step => "rollout_hooks",
            HookGate::Promotion => "confirm_promotion",
        }
    }
}

// === impl Phase ===

impl Phase {
    /// Every phase, for the `sluice_rollout_phase{phase}` gauge (1 for the current, 0 others).
    pub const ALL: [Phase; 5] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::WaitingForPromotion,
        Phase::Completed,
        Phase::Aborted,
    ];

    /// The snake_case name used in status and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::WaitingForPromotion => "waiting_for_promotion",
            Phase::Completed => "completed",
            Phase::Aborted => "aborted",
        }
    }

    /// Completed or aborted: nothing moves any more under this document.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::Aborted)
    }
}

// === impl PauseReason ===

impl PauseReason {
    /// The snake_case cause used in audit reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Document => "document",
            PauseReason::Operator => "operator",
            PauseReason::Failed { .. } => "analysis_failed",
            PauseReason::Inconclusive => "inconclusive",
        }
    }
}

// === impl RollbackReason ===

impl RollbackReason {
    /// The label value of `sluice_rollbacks_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::ErrorRate => "error_rate",
            RollbackReason::ErrorRateIncrease => "error_rate_increase",
            RollbackReason::P99 => "p99",
            RollbackReason::Metric => "metric",
            RollbackReason::Hook => "hook",
            RollbackReason::Operator => "operator",
        }
    }
}

impl From<Criterion> for RollbackReason {
    fn from(rule: Criterion) -> Self {
        match rule {
            Criterion::ErrorRate => RollbackReason::ErrorRate,
            Criterion::ErrorRateIncrease => RollbackReason::ErrorRateIncrease,
            Criterion::P99 => RollbackReason::P99,
            Criterion::Metric => RollbackReason::Metric,
            Criterion::Hook => RollbackReason::Hook,
        }
    }
}
