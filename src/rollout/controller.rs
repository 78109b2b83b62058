//! The rollout state machine (SPEC §6): pure functions over [`Progress`], a rollout spec, the
//! latest [`Verdict`] and an injected clock (`now_ms`, unix milliseconds). It never reads a
//! clock, never touches an atomic and never does I/O; the integrator ticks it every
//! `analysis.interval`, stores [`current_weight`] into the rollout's weight atomic after every
//! call, persists the progress, and turns the returned [`Event`]s into audit lines and metrics.
//!
//! Decisions worth knowing:
//! - A weight step advances when its `hold` has passed since the step began **and** the latest
//!   verdict *since the step began* passed (or no `analysis` is configured). Advancing clears
//!   the latest verdict, so every step needs its own passed verdict; without analysis, steps
//!   whose hold has passed chain within one tick.
//! - Failed verdicts count in every live phase (progressing, waiting for promotion, paused):
//!   a pause freezes progress, not safety. Inconclusive verdicts only count while progressing
//!   — at a gate the operator decides, and a paused rollout is already paused.
//! - `resume` restarts the current step's hold and clears both streaks: the evidence from
//!   before the pause no longer describes the rollout.
//! - Blue-green is step 0 (weight 0, only `preview_match` traffic reaches preview) and step 1
//!   (weight 100). Promotion is automatic once `promote.after` has passed since the start and
//!   the latest verdict passed (no `promote` at all: `after` 0), or manual with
//!   `promote.manual`, which also needs a passed verdict when analysis is configured. After
//!   promotion one failed verdict swaps back at once, whatever `failure_limit` and
//!   `on_failure` say; once `post_promotion_window` has passed it is completed.

use thiserror::Error;

use super::analysis::Criterion;
use super::analysis::{Verdict, VerdictOutcome};
use super::progress::{HookGate, PauseReason, PauseState, Phase, Progress, RollbackReason};
use crate::change::audit::EventKind;
use crate::config::Weight;
use crate::config::traffic::{OnFailure, Rollout, Step, Strategy};

/// Something that happened in one controller call, for audit, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The canary weight changed: store `to` into the weight atomic (listed first).
    WeightChanged {
        /// The weight before.
        from: Weight,
        /// The weight now.
        to: Weight,
    },
    /// A new step began (a gate step holds the previous weight).
    StepAdvanced {
        /// The step index now current.
        step: usize,
        /// The weight served at that step.
        weight: Weight,
    },
    /// A manual gate (or a manual blue-green promotion) is waiting for promote.
    WaitingForPromotion {
        /// The gate's step index.
        step: usize,
    },
    /// A gate was passed or blue-green preview promoted.
    Promoted {
        /// The gate's step index (blue-green: 0).
        step: usize,
    },
    /// An operator's full promotion (`promote --full`): the remaining steps were skipped.
    PromotedFull {
        /// The step it was taken at (blue-green: 0 before the swap, 1 within the window).
        from_step: usize,
    },
    /// The rollout paused.
    Paused {
        /// Who or what paused it.
        reason: PauseReason,
    },
    /// The rollout resumed.
    Resumed {
        /// Who had paused it.
        reason: PauseReason,
    },
    /// Weight back to 0 and phase aborted (canary, or blue-green before promotion).
    RolledBack {
        /// Why.
        reason: RollbackReason,
    },
    /// Blue-green after promotion: weight back to 0 (all traffic to active), phase aborted.
    SwappedBack {
        /// Why.
        reason: RollbackReason,
    },
    /// Past the last step.
    Completed,
}

/// What a rollout's hooks say at one tick (pure input; the runner makes the calls).
/// The default — every gate open, no rollback — is a rollout without hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSignals {
    /// `confirm_rollout` then `pre_rollout`, while the rollout awaits its start.
    pub start: Gate,
    /// The current step's `rollout` hooks.
    pub step: Gate,
    /// `confirm_promotion`.
    pub promotion: Gate,
    /// A `rollback` hook answered 2xx.
    pub rollback: bool,
}

/// Where a hook gate stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gate {
    /// Passed (or no such hook).
    #[default]
    Open,
    /// Not answered yet, or (confirmations) not confirmed yet.
    Waiting,
    /// A check run failed: counted once as a failed verdict, then it waits for the re-run.
    Failed,
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ActionError {
    /// Promote outside a gate (or before a manual blue-green promotion is possible).
    #[error("the rollout is {}, not waiting for promotion", .0.as_str())]
    NotWaitingForPromotion(Phase),
    /// The promote names another step than the current gate.
    #[error("promote names step {requested}, but the rollout is at step {current}")]
    StepMismatch {
        /// The step the token or request names.
        requested: usize,
        /// The step the rollout is at.
        current: usize,
    },
    /// Blue-green preview has not passed analysis yet.
    #[error("the preview has not passed analysis yet")]
    AnalysisNotPassed,
    /// Resume of a rollout that is not paused.
    #[error("the rollout is {}, not paused", .0.as_str())]
    NotPaused(Phase),
    /// Pause of a paused rollout.
    #[error("the rollout is already paused")]
    AlreadyPaused,
    /// Resume while the document says `paused: true`.
    #[error("the document says `paused: true`; activate a version without it to resume")]
    PausedByDocument,
    /// Any action on a completed or aborted rollout.
    #[error("the rollout is {}; a new document version starts it again", .0.as_str())]
    Finished(Phase),
}

// === impl Event ===

impl Event {
    /// The audit event (SPEC §11) this event is recorded as, if any.
    pub fn audit_event(&self) -> Option<EventKind> {
        match self {
            Event::StepAdvanced { .. } => Some(EventKind::RolloutStep),
            Event::Promoted { .. } | Event::PromotedFull { .. } => Some(EventKind::RolloutPromoted),
            Event::Paused { .. } => Some(EventKind::RolloutPaused),
            Event::Resumed { .. } => Some(EventKind::RolloutResumed),
            Event::RolledBack { .. } | Event::SwappedBack { .. } => Some(EventKind::RolloutAborted),
            Event::Completed => Some(EventKind::RolloutCompleted),
            Event::WeightChanged { .. } | Event::WaitingForPromotion { .. } => None,
        }
    }
}

// === impl ActionError ===

impl ActionError {
    /// The snake_case reason code for API errors and audit.
    pub fn code(&self) -> &'static str {
        match self {
            ActionError::NotWaitingForPromotion(_) => "not_waiting_for_promotion",
            ActionError::StepMismatch { .. } => "step_mismatch",
            ActionError::AnalysisNotPassed => "analysis_not_passed",
            ActionError::NotPaused(_) => "not_paused",
            ActionError::AlreadyPaused => "already_paused",
            ActionError::PausedByDocument => "paused_by_document",
            ActionError::Finished(_) => "rollout_finished",
        }
    }
}

/// The progress a new activation continues from: the old progress when the rollout is the
/// same rollout (same strategy; canary: `stable`, `canary` and `steps` unchanged; blue-green:
/// `active` and `preview` unchanged) and not aborted, otherwise a fresh start at step 0.
/// An aborted rollout restarts because aborted is final only for the document that aborted it.
/// Tick the result right away (as a [`Progress::new`]): the tick applies `paused` and gates.
/// The runner narrows this for aborted rollouts: it keeps them aborted under a new version
/// that leaves the rollout's own definition unchanged (see [`super::runner`]).
pub fn carry_over(old_spec: &Rollout, new_spec: &Rollout, old: &Progress, now_ms: u64) -> Progress {
    let same = old_spec.strategy == new_spec.strategy
        && match new_spec.strategy {
            Strategy::Canary => {
                old_spec.stable == new_spec.stable
                    && old_spec.canary == new_spec.canary
                    && old_spec.steps == new_spec.steps
            }
            Strategy::BlueGreen => {
                old_spec.active == new_spec.active && old_spec.preview == new_spec.preview
            }
        };
    if same && old.phase != Phase::Aborted {
        old.clone()
    } else {
        Progress::new(now_ms)
    }
}

/// The canary weight (basis points) the data plane should split by.
pub fn current_weight(p: &Progress, spec: &Rollout) -> Weight {
    if p.phase == Phase::Aborted || p.awaiting_start {
        return Weight(0);
    }
    match spec.strategy {
        Strategy::BlueGreen if p.promoted_at_ms.is_some() => Weight::FULL,
        Strategy::BlueGreen => Weight(0),
        Strategy::Canary => {
            // The latest weight step at or before the current one: a gate holds the weight
            // before it, and completed keeps the last.
            let upto = if p.phase == Phase::Completed {
                spec.steps.len()
            } else {
                p.step + 1
            };
            spec.steps[..upto.min(spec.steps.len())]
                .iter()
                .rev()
                .find_map(|s| s.weight)
                .unwrap_or(Weight(0))
        }
    }
}

/// One controller step at `now_ms` with the verdict computed for this tick (`None` when none
/// was computed, e.g. no `analysis`). Applies the document's `paused`, the verdict's streaks
/// and `on_failure`, then advances what may advance.
pub fn tick(
    p: &mut Progress,
    spec: &Rollout,
    verdict: Option<&Verdict>,
    now_ms: u64,
) -> Vec<Event> {
    tick_with_hooks(p, spec, verdict, HookSignals::default(), now_ms)
}

/// [`tick`] with what the rollout's hooks say (see the module notes).
pub fn tick_with_hooks(
    p: &mut Progress,
    spec: &Rollout,
    verdict: Option<&Verdict>,
    hooks: HookSignals,
    now_ms: u64,
) -> Vec<Event> {
    let mut ev = Vec::new();
    p.waiting_for = None;
    if p.phase.is_final() {
        return ev;
    }
    let before = current_weight(p, spec);
    if hooks.rollback {
        roll_back(p, spec, RollbackReason::Hook, now_ms, &mut ev);
        weight_event(before, current_weight(p, spec), &mut ev);
        return ev;
    }

    if spec.paused {
        if p.phase != Phase::Paused {
            enter_pause(p, PauseReason::Document, now_ms, &mut ev);
        }
    } else if p.pause_reason() == Some(PauseReason::Document) {
        leave_pause(p, now_ms, &mut ev);
    }

    // A failed check hook is a failed verdict input, with analysis or without.
    let hook_failed = if p.awaiting_start {
        hooks.start == Gate::Failed
    } else {
        hooks.step == Gate::Failed
    };
    let judged = if hook_failed {
        Some((VerdictOutcome::Failed, Some(Criterion::Hook)))
    } else {
        match (&spec.analysis, verdict) {
            (Some(_), Some(v)) => Some((v.outcome, v.rule)),
            _ => None,
        }
    };
    let failure_limit = spec.analysis.as_ref().map_or(1, |a| a.failure_limit);
    let inconclusive_limit = spec
        .analysis
        .as_ref()
        .map_or(u32::MAX, |a| a.inconclusive_limit);
    if let Some((outcome, rule)) = judged {
        p.last_outcome = Some(outcome);
        match (outcome, rule) {
            (VerdictOutcome::Failed, Some(rule)) => {
                p.consecutive_failures = p.consecutive_failures.saturating_add(1);
                p.consecutive_inconclusive = 0;
                if p.promoted_at_ms.is_some() {
                    roll_back(p, spec, rule.into(), now_ms, &mut ev);
                } else if p.consecutive_failures >= failure_limit {
                    match spec.on_failure {
                        OnFailure::Rollback => roll_back(p, spec, rule.into(), now_ms, &mut ev),
                        OnFailure::Pause => {
                            if p.phase != Phase::Paused {
                                enter_pause(p, PauseReason::Failed { rule }, now_ms, &mut ev);
                            }
                        }
                    }
                }
            }
            (VerdictOutcome::Inconclusive, _) => {
                p.consecutive_failures = 0;
                if p.phase == Phase::Progressing {
                    p.consecutive_inconclusive = p.consecutive_inconclusive.saturating_add(1);
                    if p.consecutive_inconclusive >= inconclusive_limit {
                        enter_pause(p, PauseReason::Inconclusive, now_ms, &mut ev);
                    }
                }
            }
            _ => {
                p.consecutive_failures = 0;
                p.consecutive_inconclusive = 0;
            }
        }
    }

    if p.phase == Phase::Progressing && p.awaiting_start {
        if hooks.start != Gate::Open {
            p.waiting_for = Some(HookGate::Start);
        } else {
            // Step 0 begins now, its hold with it.
            p.awaiting_start = false;
            p.step_started_at_ms = now_ms;
            p.last_outcome = None;
            if spec.strategy == Strategy::Canary && !is_gate(spec.steps.first()) {
                ev.push(Event::StepAdvanced {
                    step: 0,
                    weight: current_weight(p, spec),
                });
            }
        }
    }
    if p.phase == Phase::Progressing && !p.awaiting_start {
        match spec.strategy {
            Strategy::Canary => advance_canary(p, spec, hooks, now_ms, &mut ev),
            Strategy::BlueGreen => advance_blue_green(p, spec, hooks, now_ms, &mut ev),
        }
    }
    weight_event(before, current_weight(p, spec), &mut ev);
    ev
}

/// The operator's promote: passes the manual gate the rollout waits at (blue-green: promotes
/// preview). `step`, when given (the `step` claim of a promote token), must be the current one.
pub fn promote(
    p: &mut Progress,
    spec: &Rollout,
    step: Option<usize>,
    now_ms: u64,
) -> Result<Vec<Event>, ActionError> {
    if p.phase.is_final() {
        return Err(ActionError::Finished(p.phase));
    }
    check_step(p, step)?;
    let before = current_weight(p, spec);
    let mut ev = Vec::new();
    match spec.strategy {
        Strategy::Canary => {
            if p.phase != Phase::WaitingForPromotion || !is_gate(spec.steps.get(p.step)) {
                return Err(ActionError::NotWaitingForPromotion(p.phase));
            }
            ev.push(Event::Promoted { step: p.step });
            p.phase = Phase::Progressing;
            enter_step(p, spec, p.step + 1, now_ms, &mut ev);
        }
        Strategy::BlueGreen => {
            let waiting = matches!(p.phase, Phase::Progressing | Phase::WaitingForPromotion);
            // Hooks still to pass (`waiting_for`) hold the promotion, as analysis does.
            if !waiting || p.promoted_at_ms.is_some() || p.waiting_for.is_some() {
                return Err(ActionError::NotWaitingForPromotion(p.phase));
            }
            if spec.analysis.is_some() && p.last_outcome != Some(VerdictOutcome::Passed) {
                return Err(ActionError::AnalysisNotPassed);
            }
            promote_preview(p, spec, now_ms, &mut ev);
        }
    }
    weight_event(before, current_weight(p, spec), &mut ev);
    Ok(ev)
}

/// The operator's full promotion (Argo Rollouts' `promote --full`): skips every remaining
/// step, hold, gate, hook gate and verdict, and completes at once — a canary at the weight of
/// its last weight step (as if every step had passed), blue-green swapped to preview without
/// a post-promotion window. Allowed while progressing, waiting for promotion or paused by an
/// operator or the analysis; not while the document says `paused: true` (the document
/// decides that), nor once finished. `step`, when given (the `step` claim of a full
/// `promote` token), must be the current one.
pub fn promote_full(
    p: &mut Progress,
    spec: &Rollout,
    step: Option<usize>,
    now_ms: u64,
) -> Result<Vec<Event>, ActionError> {
    if p.phase.is_final() {
        return Err(ActionError::Finished(p.phase));
    }
    if p.pause_reason() == Some(PauseReason::Document) {
        return Err(ActionError::PausedByDocument);
    }
    check_step(p, step)?;
    let before = current_weight(p, spec);
    let mut ev = vec![Event::PromotedFull { from_step: p.step }];
    p.pause = None;
    p.awaiting_start = false;
    p.waiting_for = None;
    p.consecutive_failures = 0;
    p.consecutive_inconclusive = 0;
    p.last_outcome = None;
    p.full_promotion_from = Some(p.step);
    match spec.strategy {
        Strategy::Canary => p.step = spec.steps.len(),
        Strategy::BlueGreen => {
            p.step = 1;
            p.promoted_at_ms.get_or_insert(now_ms);
        }
    }
    p.step_started_at_ms = now_ms;
    complete(p, now_ms, &mut ev);
    weight_event(before, current_weight(p, spec), &mut ev);
    Ok(ev)
}

/// The operator's pause (from progressing or waiting for promotion).
pub fn pause(p: &mut Progress, now_ms: u64) -> Result<Vec<Event>, ActionError> {
    match p.phase {
        Phase::Completed | Phase::Aborted => Err(ActionError::Finished(p.phase)),
        Phase::Paused => Err(ActionError::AlreadyPaused),
        Phase::Progressing | Phase::WaitingForPromotion => {
            let mut ev = Vec::new();
            enter_pause(p, PauseReason::Operator, now_ms, &mut ev);
            Ok(ev)
        }
    }
}

/// The operator's resume (from paused, unless the document itself says `paused: true`).
/// Restarts the current step's hold.
pub fn resume(p: &mut Progress, spec: &Rollout, now_ms: u64) -> Result<Vec<Event>, ActionError> {
    match p.phase {
        Phase::Completed | Phase::Aborted => Err(ActionError::Finished(p.phase)),
        Phase::Paused if spec.paused => Err(ActionError::PausedByDocument),
        Phase::Paused => {
            let mut ev = Vec::new();
            leave_pause(p, now_ms, &mut ev);
            Ok(ev)
        }
        other => Err(ActionError::NotPaused(other)),
    }
}

/// The operator's abort: weight 0 and phase aborted, final for this document.
pub fn abort(p: &mut Progress, spec: &Rollout, now_ms: u64) -> Result<Vec<Event>, ActionError> {
    if p.phase.is_final() {
        return Err(ActionError::Finished(p.phase));
    }
    let before = current_weight(p, spec);
    let mut ev = Vec::new();
    roll_back(p, spec, RollbackReason::Operator, now_ms, &mut ev);
    weight_event(before, current_weight(p, spec), &mut ev);
    Ok(ev)
}

/// A promotion names the step it approves (a `promote` token's `step` claim): it must be the
/// current one.
fn check_step(p: &Progress, step: Option<usize>) -> Result<(), ActionError> {
    match step {
        Some(requested) if requested != p.step => Err(ActionError::StepMismatch {
            requested,
            current: p.step,
        }),
        _ => Ok(()),
    }
}

fn is_gate(step: Option<&Step>) -> bool {
    step.is_some_and(|s| s.gate.is_some())
}

/// Puts `WeightChanged` first, so the store precedes the audit of why.
fn weight_event(from: Weight, to: Weight, ev: &mut Vec<Event>) {
    if from != to {
        ev.insert(0, Event::WeightChanged { from, to });
    }
}

fn enter_pause(p: &mut Progress, reason: PauseReason, now_ms: u64, ev: &mut Vec<Event>) {
    p.pause = Some(PauseState {
        reason,
        since_ms: now_ms,
        resume_to: p.phase,
    });
    p.phase = Phase::Paused;
    ev.push(Event::Paused { reason });
}

fn leave_pause(p: &mut Progress, now_ms: u64, ev: &mut Vec<Event>) {
    let Some(state) = p.pause.take() else {
        return;
    };
    p.phase = state.resume_to;
    p.step_started_at_ms = now_ms;
    p.consecutive_failures = 0;
    p.consecutive_inconclusive = 0;
    p.last_outcome = None;
    ev.push(Event::Resumed {
        reason: state.reason,
    });
}

/// Rollback or swap-back: weight 0, phase aborted.
fn roll_back(
    p: &mut Progress,
    spec: &Rollout,
    reason: RollbackReason,
    now_ms: u64,
    ev: &mut Vec<Event>,
) {
    let swapped = spec.strategy == Strategy::BlueGreen && p.promoted_at_ms.is_some();
    p.phase = Phase::Aborted;
    p.pause = None;
    p.abort_reason = Some(reason);
    p.finished_at_ms = Some(now_ms);
    ev.push(if swapped {
        Event::SwappedBack { reason }
    } else {
        Event::RolledBack { reason }
    });
}

fn complete(p: &mut Progress, now_ms: u64, ev: &mut Vec<Event>) {
    p.phase = Phase::Completed;
    p.finished_at_ms = Some(now_ms);
    ev.push(Event::Completed);
}

/// Moves a canary to step `next` (completed past the last), entering a gate if it is one.
fn enter_step(p: &mut Progress, spec: &Rollout, next: usize, now_ms: u64, ev: &mut Vec<Event>) {
    p.step = next;
    p.step_started_at_ms = now_ms;
    p.last_outcome = None;
    match spec.steps.get(next) {
        None => complete(p, now_ms, ev),
        Some(step) => {
            ev.push(Event::StepAdvanced {
                step: next,
                weight: current_weight(p, spec),
            });
            if step.gate.is_some() {
                p.phase = Phase::WaitingForPromotion;
                ev.push(Event::WaitingForPromotion { step: next });
            }
        }
    }
}

fn advance_canary(
    p: &mut Progress,
    spec: &Rollout,
    hooks: HookSignals,
    now_ms: u64,
    ev: &mut Vec<Event>,
) {
    while p.phase == Phase::Progressing {
        let Some(step) = spec.steps.get(p.step) else {
            complete(p, now_ms, ev);
            return;
        };
        if step.gate.is_some() {
            // Reached on a fresh start whose step 0 is a gate.
            p.phase = Phase::WaitingForPromotion;
            ev.push(Event::WaitingForPromotion { step: p.step });
            return;
        }
        let hold_ms = step.hold.map_or(0, |h| millis(h.0));
        if now_ms < p.step_started_at_ms.saturating_add(hold_ms) {
            return;
        }
        if spec.analysis.is_some() && p.last_outcome != Some(VerdictOutcome::Passed) {
            return;
        }
        if hooks.step != Gate::Open {
            p.waiting_for = Some(HookGate::Step);
            return;
        }
        if promotes(p, spec) && hooks.promotion != Gate::Open {
            p.waiting_for = Some(HookGate::Promotion);
            return;
        }
        enter_step(p, spec, p.step + 1, now_ms, ev);
        if !spec.hooks.rollout.is_empty() {
            // The new step's hooks have not run yet: it waits for them.
            return;
        }
    }
}

/// Whether leaving the current canary step is the promotion `confirm_promotion` gates: the
/// first move to 100%, or completion from below 100%.
fn promotes(p: &Progress, spec: &Rollout) -> bool {
    if current_weight(p, spec) == Weight::FULL {
        return false;
    }
    match spec.steps.get(p.step + 1) {
        None => true,
        Some(next) => next.weight == Some(Weight::FULL),
    }
}

fn advance_blue_green(
    p: &mut Progress,
    spec: &Rollout,
    hooks: HookSignals,
    now_ms: u64,
    ev: &mut Vec<Event>,
) {
    if p.promoted_at_ms.is_some() {
        let window_ms = spec.post_promotion_window.map_or(0, |w| millis(w.0));
        if now_ms >= p.step_started_at_ms.saturating_add(window_ms) {
            complete(p, now_ms, ev);
        }
        return;
    }
    let promote = spec.promote.clone().unwrap_or_default();
    if promote.manual {
        // As Flagger: the preview's `rollout` hooks (load tests) pass, then
        // `confirm_promotion`, and only then does the promotion wait for the operator.
        if hooks.step != Gate::Open {
            p.waiting_for = Some(HookGate::Step);
            return;
        }
        if hooks.promotion != Gate::Open {
            p.waiting_for = Some(HookGate::Promotion);
            return;
        }
        p.phase = Phase::WaitingForPromotion;
        ev.push(Event::WaitingForPromotion { step: 0 });
        return;
    }
    let after_ms = promote.after.map_or(0, |a| millis(a.0));
    if now_ms < p.step_started_at_ms.saturating_add(after_ms) {
        return;
    }
    if spec.analysis.is_some() && p.last_outcome != Some(VerdictOutcome::Passed) {
        return;
    }
    if hooks.step != Gate::Open {
        p.waiting_for = Some(HookGate::Step);
        return;
    }
    if hooks.promotion != Gate::Open {
        p.waiting_for = Some(HookGate::Promotion);
        return;
    }
    promote_preview(p, spec, now_ms, ev);
}

fn promote_preview(p: &mut Progress, spec: &Rollout, now_ms: u64, ev: &mut Vec<Event>) {
    p.phase = Phase::Progressing;
    p.step = 1;
    p.promoted_at_ms = Some(now_ms);
    p.step_started_at_ms = now_ms;
    p.last_outcome = None;
    p.consecutive_failures = 0;
    p.consecutive_inconclusive = 0;
    ev.push(Event::Promoted { step: 0 });
    if spec.post_promotion_window.is_none_or(|w| w.0.is_zero()) {
        complete(p, now_ms, ev);
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests;
