//! The live side of `hooks` (SPEC §2.2, Flagger's webhooks): each kind of hook of a rollout
//! POSTed a Flagger-compatible payload by a short task on the control runtime (never the
//! data plane), its latest result kept for the tick to turn into [`HookSignals`].
//!
//! Each kind runs for a *stage*: the rollout's start (`confirm_rollout`, `pre_rollout`,
//! `rollback`), the current step (`rollout`, `confirm_promotion`) or its end
//! (`post_rollout`). A run calls the kind's hooks in order and passes when every one
//! answered 2xx. How a run is repeated:
//! - checks (`pre_rollout`, `rollout`): each try bounded by the hook's `timeout`, `retries`
//!   extra tries with a doubling backoff; a failed run is given to the controller once (one
//!   failed verdict), then run again after the poll interval, so `failure_limit` counts runs;
//! - gates (`confirm_rollout`, `confirm_promotion`): one try per poll until a run passes;
//! - `rollback`: one try per poll while the rollout is live; a pass rolls it back;
//! - `post_rollout`: one run (with retries) when the rollout completes or aborts.
//!
//! At most one run per kind is in flight; a run that outlives its stage (a new step, a new
//! document) writes into a state nobody reads. A dead endpoint therefore holds or fails only
//! the rollout whose hook it is. Results are reported once each (checks: every run; gates:
//! the first refusal and the pass; rollback: the trigger) for the audit log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::DocRef;
use crate::config::traffic::{Hook, Hooks, Rollout, Strategy};
use crate::rollout::controller::{Gate, HookSignals, current_weight};
use crate::rollout::progress::{HookGate, Phase, Progress};
use crate::telemetry::{self, Registry};

/// The wait before a check's second try; doubled before each later one.
const BACKOFF: Duration = Duration::from_millis(200);

/// The poll interval of a rollout without analysis.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// A kind of hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Gate before the canary gets traffic.
    ConfirmRollout,
    /// Check before the canary gets traffic.
    PreRollout,
    /// Check at each weight step.
    Rollout,
    /// Gate before promotion.
    ConfirmPromotion,
    /// Called once the rollout finished.
    PostRollout,
    /// Polled; a pass rolls back.
    Rollback,
}

const KINDS: [HookKind; 6] = [
    HookKind::ConfirmRollout,
    HookKind::PreRollout,
    HookKind::Rollout,
    HookKind::ConfirmPromotion,
    HookKind::PostRollout,
    HookKind::Rollback,
];

/// Which run of a kind a result belongs to: (step or 0, the stage's start in unix ms).
type Stage = (usize, u64);

/// The hooks of one rollout.
pub(super) struct HookRuns {
    /// What they were built from (a new document with other hooks rebuilds them).
    built: (String, Hooks),
    slots: Vec<Arc<Slot>>,
    poll: Duration,
    /// Results not yet audited.
    reports: Arc<Mutex<Vec<HookReport>>>,
    /// `post_rollout` due for this stage (the finish time).
    post_due: Mutex<Option<Stage>>,
    /// Where each call is counted and timed.
    meter: Meter,
}

/// Counts and times each hook call (`sluice_hook_calls_total`,
/// `sluice_hook_duration_seconds`) under the rollout's name.
#[derive(Clone)]
struct Meter {
    registry: Registry,
    rollout: Arc<str>,
}

/// One kind's hooks and their latest run.
struct Slot {
    kind: HookKind,
    hooks: Vec<Hook>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    stage: Option<Stage>,
    running: bool,
    result: Option<RunResult>,
    /// A failed check run was given to the controller.
    counted: bool,
    /// A gate's refusal for this stage was reported (once).
    refusal_reported: bool,
    next_run: Option<Instant>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RunResult {
    passed: bool,
    /// The hook that decided (the failing one, or the last).
    url: String,
    /// HTTP status of its last try, when it answered.
    status: Option<u16>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Tries of that hook.
    tries: u32,
}

/// A result for the audit log.
pub(super) struct HookReport {
    /// Which kind.
    pub kind: HookKind,
    /// `passed`, `failed`, `waiting` (a gate not confirmed yet) or `rollback` (a rollback
    /// hook answered 2xx).
    pub result: &'static str,
    /// The step the run was for.
    pub step: usize,
    /// The run.
    pub run: RunResult,
}

/// What a run needs to know about the rollout, taken when it starts.
struct Context {
    name: String,
    document: Option<DocRef>,
    phase: Phase,
    step: usize,
    weight: f64,
    stable: String,
    canary: String,
}

// === impl HookKind ===

impl HookKind {
    /// The snake_case name used in status and audit (as in `hooks:`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::ConfirmRollout => "confirm_rollout",
            HookKind::PreRollout => "pre_rollout",
            HookKind::Rollout => "rollout",
            HookKind::ConfirmPromotion => "confirm_promotion",
            HookKind::PostRollout => "post_rollout",
            HookKind::Rollback => "rollback",
        }
    }

    /// Flagger's `type` for the payload.
    fn flagger_type(self) -> &'static str {
        match self {
            HookKind::ConfirmRollout => "confirm-rollout",
            HookKind::PreRollout => "pre-rollout",
            HookKind::Rollout => "rollout",
            HookKind::ConfirmPromotion => "confirm-promotion",
            HookKind::PostRollout => "post-rollout",
            HookKind::Rollback => "rollback",
        }
    }

    /// Polled until a pass, one try per poll (rather than a check with retries).
    fn is_poll(self) -> bool {
        matches!(
            self,
            HookKind::ConfirmRollout | HookKind::ConfirmPromotion | HookKind::Rollback
        )
    }

    fn of(self, h: &Hooks) -> &Vec<Hook> {
        match self {
            HookKind::ConfirmRollout => &h.confirm_rollout,
            HookKind::PreRollout => &h.pre_rollout,
            HookKind::Rollout => &h.rollout,
            HookKind::ConfirmPromotion => &h.confirm_promotion,
            HookKind::PostRollout => &h.post_rollout,
            HookKind::Rollback => &h.rollback,
        }
    }
}

/// Whether `spec` has hooks that must pass before its canary gets traffic.
pub(super) fn gates_start(spec: &Rollout) -> bool {
    !spec.hooks.confirm_rollout.is_empty() || !spec.hooks.pre_rollout.is_empty()
}

// === impl HookRuns ===

impl HookRuns {
    /// The hooks of `spec`, none run yet, their calls counted in `registry`; `None` without
    /// hooks.
    pub(super) fn new(name: &str, spec: &Rollout, registry: &Registry) -> Option<HookRuns> {
        if spec.hooks == Hooks::default() {
            return None;
        }
        let slots = KINDS
            .iter()
            .map(|&kind| {
                Arc::new(Slot {
                    kind,
                    hooks: kind.of(&spec.hooks).clone(),
                    state: Mutex::new(SlotState::default()),
                })
            })
            .collect();
        Some(HookRuns {
            built: (name.to_string(), spec.hooks.clone()),
            slots,
            poll: spec
                .analysis
                .as_ref()
                .map_or(DEFAULT_POLL, |a| a.interval.0),
            reports: Arc::default(),
            post_due: Mutex::new(None),
            meter: Meter {
                registry: registry.clone(),
                rollout: name.into(),
            },
        })
    }

    /// Whether these were built for `spec` (then a new document keeps their results).
    pub(super) fn built_for(&self, name: &str, spec: &Rollout) -> bool {
        self.built.0 == name
            && self.built.1 == spec.hooks
            && self.poll
                == spec
                    .analysis
                    .as_ref()
                    .map_or(DEFAULT_POLL, |a| a.interval.0)
    }

    fn slot(&self, kind: HookKind) -> &Slot {
        // KINDS order.
        &self.slots[KINDS.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    /// What the hooks say for `p` now. A failed check run is returned as [`Gate::Failed`]
    /// once; after that it waits for its re-run.
    pub(super) fn signals(&self, p: &Progress, spec: &Rollout) -> HookSignals {
        let start = (0, p.started_at_ms);
        let step = (p.step, p.step_started_at_ms);
        let mut s = HookSignals::default();
        if p.awaiting_start {
            s.start = match self.slot(HookKind::ConfirmRollout).gate(start) {
                Gate::Open => self.slot(HookKind::PreRollout).check(start),
                other => other,
            };
        }
        if runs_step_hooks(p, spec) {
            s.step = self.slot(HookKind::Rollout).check(step);
        }
        s.promotion = self.slot(HookKind::ConfirmPromotion).gate(step);
        s.rollback = self.slot(HookKind::Rollback).triggered(start);
        s
    }

    /// Starts the runs that are due for `p` on the current runtime; `every_poll`: each
    /// gate, rollback poll or failed check is due again whatever its poll interval (manual
    /// ticks: one tick is one interval). The started runs, to wait for or not.
    pub(super) fn start_due(
        &self,
        name: &str,
        spec: &Rollout,
        p: &Progress,
        document: Option<&DocRef>,
        now: Instant,
        every_poll: bool,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let ctx = || {
            let (stable, canary) = match spec.strategy {
                Strategy::Canary => (&spec.stable, &spec.canary),
                Strategy::BlueGreen => (&spec.active, &spec.preview),
            };
            Arc::new(Context {
                name: name.to_string(),
                document: document.cloned(),
                phase: p.phase,
                step: p.step,
                weight: f64::from(current_weight(p, spec).0) / 100.0,
                stable: stable.clone().unwrap_or_default(),
                canary: canary.clone().unwrap_or_default(),
            })
        };
        let start = (0, p.started_at_ms);
        let step = (p.step, p.step_started_at_ms);
        let live = matches!(
            p.phase,
            Phase::Progressing | Phase::WaitingForPromotion | Phase::Paused
        );
        let mut due: Vec<(&Arc<Slot>, Stage)> = Vec::new();
        if p.phase == Phase::Progressing && p.awaiting_start {
            let confirm = self.slot(HookKind::ConfirmRollout);
            if confirm.gate(start) == Gate::Open {
                due.push((self.arc(HookKind::PreRollout), start));
            } else {
                due.push((self.arc(HookKind::ConfirmRollout), start));
            }
        }
        if p.phase == Phase::Progressing && runs_step_hooks(p, spec) {
            due.push((self.arc(HookKind::Rollout), step));
        }
        if p.waiting_for == Some(HookGate::Promotion) {
            due.push((self.arc(HookKind::ConfirmPromotion), step));
        }
        if live {
            due.push((self.arc(HookKind::Rollback), start));
        }
        if p.phase.is_final()
            && let Some(stage) = self.lock_post().take()
        {
            due.push((self.arc(HookKind::PostRollout), stage));
        }
        let mut ctx_once = None;
        let mut started = Vec::new();
        for (slot, stage) in due {
            if slot.hooks.is_empty() || !slot.claim(stage, now, self.poll, every_poll) {
                continue;
            }
            let c = ctx_once.get_or_insert_with(ctx).clone();
            let (poll, reports, meter) = (self.poll, self.reports.clone(), self.meter.clone());
            started.push(tokio::spawn(run(
                slot.clone(),
                stage,
                c,
                poll,
                reports,
                meter,
            )));
        }
        started
    }

    fn arc(&self, kind: HookKind) -> &Arc<Slot> {
        &self.slots[KINDS.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    fn lock_post(&self) -> MutexGuard<'_, Option<Stage>> {
        self.post_due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rollout finished at `finished_ms`: its `post_rollout` hooks are due.
    pub(super) fn finished(&self, step: usize, finished_ms: u64) {
        if !self.slot(HookKind::PostRollout).hooks.is_empty() {
            *self.lock_post() = Some((step, finished_ms));
        }
    }

    /// This node does not call hooks (a fleet follower): nothing is due here.
    pub(super) fn not_deciding(&self) {
        *self.lock_post() = None;
    }

    /// Whether something is in flight, due or unreported (the timer then wakes soon).
    pub(super) fn busy(&self) -> bool {
        self.lock_post().is_some()
            || !self.lock_reports().is_empty()
            || self.slots.iter().any(|s| s.lock().running)
    }

    fn lock_reports(&self) -> MutexGuard<'_, Vec<HookReport>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Results not yet audited.
    pub(super) fn take_reports(&self) -> Vec<HookReport> {
        std::mem::take(&mut *self.lock_reports())
    }

    /// Each kind's latest run, for status.
    pub(super) fn status(&self) -> Value {
        let mut m = serde_json::Map::new();
        for slot in &self.slots {
            if slot.hooks.is_empty() {
                continue;
            }
            let s = slot.lock();
            let state = match (&s.result, s.running) {
                (_, true) => "running",
                (None, false) => "idle",
                (Some(r), false) if r.passed => "passed",
                (Some(_), false) => "failed",
            };
            m.insert(
                slot.kind.as_str().into(),
                json!({ "state": state, "step": s.stage.map(|st| st.0), "last": s.result }),
            );
        }
        Value::Object(m)
    }
}

/// Whether the current stage of `p` is one whose `rollout` hooks run: a canary weight step
/// (not a manual gate) once started, or either stage of a blue-green.
fn runs_step_hooks(p: &Progress, spec: &Rollout) -> bool {
    if p.awaiting_start || p.phase.is_final() {
        return false;
    }
    match spec.strategy {
        Strategy::Canary => spec.steps.get(p.step).is_some_and(|s| s.gate.is_none()),
        Strategy::BlueGreen => true,
    }
}

// === impl Meter ===

impl Meter {
    /// One call of a `kind` hook ended with `outcome` after `took`.
    fn record(&self, kind: HookKind, outcome: &'static str, took: Duration) {
        let labels = [
            ("rollout", &*self.rollout),
            ("hook", kind.as_str()),
            ("outcome", outcome),
        ];
        self.registry
            .counter(telemetry::HOOK_CALLS, &labels)
            .increment(1);
        self.registry
            .histogram(telemetry::HOOK_DURATION, &labels)
            .record(took.as_secs_f64());
    }
}

// === impl Slot ===

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Writes under this lock are field assignments; a panic cannot tear them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A gate: open when there are no hooks or a run for `stage` passed.
    fn gate(&self, stage: Stage) -> Gate {
        if self.hooks.is_empty() {
            return Gate::Open;
        }
        let s = self.lock();
        match &s.result {
            Some(r) if s.stage == Some(stage) && r.passed => Gate::Open,
            _ => Gate::Waiting,
        }
    }

    /// A check: open when there are no hooks or a run for `stage` passed; a failed run is
    /// [`Gate::Failed`] once.
    fn check(&self, stage: Stage) -> Gate {
        if self.hooks.is_empty() {
            return Gate::Open;
        }
        let mut s = self.lock();
        if s.stage != Some(stage) || s.running {
            return Gate::Waiting;
        }
        match &s.result {
            Some(r) if r.passed => Gate::Open,
            Some(_) if !s.counted => {
                s.counted = true;
                Gate::Failed
            }
            _ => Gate::Waiting,
        }
    }

    /// A rollback hook answered 2xx for `stage`.
    fn triggered(&self, stage: Stage) -> bool {
        if self.hooks.is_empty() {
            return false;
        }
        let s = self.lock();
        s.stage == Some(stage) && s.result.as_ref().is_some_and(|r| r.passed)
    }

    /// Marks a run for `stage` started when one is due: a new stage, or a failed run whose
    /// poll interval passed (checks: once the controller has counted it); `every_poll`
    /// counts the interval as passed.
    fn claim(&self, stage: Stage, now: Instant, poll: Duration, every_poll: bool) -> bool {
        let mut s = self.lock();
        if s.running {
            return false;
        }
        let due = if s.stage != Some(stage) {
            *s = SlotState {
                stage: Some(stage),
                ..SlotState::default()
            };
            true
        } else {
            match &s.result {
                None => self.kind != HookKind::PostRollout || s.next_run.is_none(),
                Some(r) if r.passed => false,
                Some(_) if self.kind == HookKind::PostRollout => false,
                Some(_) => {
                    (self.kind.is_poll() || s.counted)
                        && (every_poll || s.next_run.is_none_or(|t| t <= now))
                }
            }
        };
        if due {
            s.running = true;
            s.next_run = Some(now + poll);
        }
        due
    }
}

/// One run of `slot`'s hooks for `stage`: in order, stopping at the first that fails.
async fn run(
    slot: Arc<Slot>,
    stage: Stage,
    ctx: Arc<Context>,
    poll: Duration,
    reports: Arc<Mutex<Vec<HookReport>>>,
    meter: Meter,
) {
    let mut result = None;
    for hook in &slot.hooks {
        let body = payload(slot.kind, hook, &ctx);
        let tries = if slot.kind.is_poll() {
            1
        } else {
            hook.retries.saturating_add(1)
        };
        let r = call(hook, body, tries, |outcome, took| {
            meter.record(slot.kind, outcome, took)
        })
        .await;
        let passed = r.passed;
        result = Some(r);
        if !passed {
            break;
        }
    }
    let Some(result) = result else { return };
    let mut s = slot.lock();
    s.running = false;
    if s.stage != Some(stage) {
        return;
    }
    s.next_run = Some(Instant::now() + poll);
    let report = match (slot.kind, result.passed) {
        (HookKind::Rollback, true) => Some("rollback"),
        (HookKind::Rollback, false) => None,
        (k, false) if k.is_poll() => {
            let first = !s.refusal_reported;
            s.refusal_reported = true;
            first.then_some("waiting")
        }
        (_, true) => Some("passed"),
        (_, false) => Some("failed"),
    };
    s.counted = false;
    s.result = Some(result.clone());
    drop(s);
    if let Some(what) = report {
        if !result.passed {
            tracing::warn!(rollout = %ctx.name, hook = slot.kind.as_str(), url = %result.url, error = ?result.error, "A rollout hook did not pass.");
        }
        reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(HookReport {
                kind: slot.kind,
                result: what,
                step: stage.0,
                run: result,
            });
    }
}

/// The Flagger webhook payload (`CanaryWebhookPayload`): name, namespace, phase, checksum,
/// type, and string metadata (the hook's own, then sluice's).
fn payload(kind: HookKind, hook: &Hook, ctx: &Context) -> Bytes {
    let phase = match (kind, ctx.phase) {
        (HookKind::PostRollout, Phase::Completed) => "Succeeded",
        (HookKind::PostRollout, _) | (_, Phase::Aborted) => "Failed",
        (HookKind::ConfirmRollout | HookKind::PreRollout, _) => "Initialized",
        (HookKind::ConfirmPromotion, _) => "WaitingPromotion",
        (_, Phase::Paused) => "Waiting",
        (_, Phase::WaitingForPromotion) => "WaitingPromotion",
        (_, Phase::Completed) => "Succeeded",
        (_, Phase::Progressing) => "Progressing",
    };
    let mut metadata: BTreeMap<String, String> = hook.metadata.clone();
    let mut put = |k: &str, v: String| {
        metadata.entry(k.to_string()).or_insert(v);
    };
    put("rollout", ctx.name.clone());
    put("step", ctx.step.to_string());
    put("weight", ctx.weight.to_string());
    put("stable", ctx.stable.clone());
    put("canary", ctx.canary.clone());
    if let Some(d) = &ctx.document {
        put("version", d.version.to_string());
    }
    let body = json!({
        "name": ctx.name,
        "namespace": "sluice",
        "phase": phase,
        "checksum": ctx.document.as_ref().map_or("", |d| d.digest.as_str()),
        "type": kind.flagger_type(),
        "metadata": metadata,
    });
    Bytes::from(body.to_string())
}

/// POSTs `body` to one hook, up to `tries` times with a doubling backoff; each try's
/// outcome (`passed`, `failed`, `error`) and time go to `record`.
async fn call(
    hook: &Hook,
    body: Bytes,
    tries: u32,
    record: impl Fn(&'static str, Duration),
) -> RunResult {
    let mut wait = BACKOFF;
    let mut last = RunResult {
        passed: false,
        url: hook.url.clone(),
        status: None,
        error: None,
        tries: 0,
    };
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        last.tries = attempt + 1;
        let began = Instant::now();
        let answer = tokio::time::timeout(
            hook.timeout.0,
            crate::outbound::post(
                &hook.url,
                hook.ca_file.as_deref(),
                &body,
                &[],
                "sluice-hooks",
            ),
        )
        .await;
        let outcome = match &answer {
            Ok(Ok(status)) if status.is_success() => "passed",
            Ok(Ok(_)) => "failed",
            _ => "error",
        };
        record(outcome, began.elapsed());
        match answer {
            Ok(Ok(status)) => {
                last.status = Some(status.as_u16());
                if status.is_success() {
                    last.passed = true;
                    last.error = None;
                    return last;
                }
                last.error = Some(format!("answered {status}"));
            }
            Ok(Err(e)) => {
                last.status = None;
                last.error = Some(e);
            }
            Err(_) => {
                last.status = None;
                last.error = Some(format!("no answer within {:?}", hook.timeout.0));
            }
        }
    }
    last
}
