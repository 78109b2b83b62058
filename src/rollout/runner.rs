//! The rollout runtime: the one place where the pure controller meets clocks, atomics, the
//! audit log and `state/`. It runs on the control thread, never on the data plane.
//!
//! Every `analysis.interval` (1 s for rollouts without analysis, which only wait for holds)
//! each live rollout is ticked: its windows are judged, [`controller::tick`] moves its
//! [`Progress`], the new weight is stored into the snapshot's weight atomic at once (a
//! rollback is that one store), and only then is the progress persisted
//! (`state/rollouts.json`, atomically) and the transitions audited and counted.
//!
//! Time: holds and timestamps use the injected wall [`Clock`] (persisted, so downtime
//! counts); windows are read at [`clock::mono_secs`], the monotonic seconds the data plane
//! records with. Tests inject a manual clock and call [`Runner::tick_now`] instead of
//! waiting for the timer.
//!
//! Activations: the gate's publication of a new snapshot wakes the runner (a watch channel,
//! [`Published::subscribe`]); the snapshot carries the document's version, digest and
//! rollout definitions, so the runner needs no lock of the gate to follow it. It carries
//! each rollout's progress over by SPEC §6, with one refinement that
//! makes "aborted is final for that document" hold: an aborted rollout stays aborted under a
//! new document version unless that version changes the rollout's own definition (anything
//! under `rollouts.<name>` other than `paused`). A flag flip elsewhere in the document must
//! not send users back to a canary that was just rolled back; editing the rollout (say, a
//! fixed `canary` upstream or new thresholds) is how an operator asks for a fresh start.
//!
//! Evidence: the windows outlive a restarted progress (they belong to the snapshot's
//! rollout), so verdicts only look at seconds since the progress last (re)started or
//! resumed — a rollout restarted after a rollback must not fail on the errors that caused it.

mod actions;
mod continuous;
mod fleet;
mod hooks;
mod persist;
mod probes;
mod report;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};

use super::analysis::{Verdict, judge};
use super::controller::{self, Event};
use super::fleet::{Fleet, Role};
use super::progress::{PauseReason, Phase, Progress, RollbackReason};
use crate::change::TrustStore;
use crate::change::audit::{Event as AuditEvent, EventKind};
use crate::change::gate::GateHandle;
use crate::change::store::StateDir;
use crate::clock::{self, Clock};
use crate::config::traffic::{AnalysisMethod, Rollout, Strategy};
use crate::metric_check;
use crate::shutdown::Shutdown;
use crate::snapshot::{Published, RolloutRt, Snapshot};
use crate::telemetry::{self, Registry};

pub use actions::{Action, ActionRefused};
pub use continuous::EVALUATE_EVERY;
use continuous::{Continuous, Source};
use hooks::HookRuns;
use probes::Probes;
pub use report::verdict_summary;

/// How soon the timer retries when a tick or an admin action holds the runner's state.
const BUSY_RETRY: Duration = Duration::from_millis(50);

/// The longest the timer sleeps with nothing due (a publication wakes it sooner).
const IDLE: Duration = Duration::from_secs(60);

/// How many verdicts per rollout status keeps.
const KEPT_VERDICTS: usize = 5;

/// How soon the timer wakes while a hook runs or its result waits to be audited.
const HOOK_WAKE: Duration = Duration::from_millis(100);

/// The tick interval of a rollout without `analysis` (holds only).
const HOLD_INTERVAL: Duration = Duration::from_secs(1);

/// Drives every rollout of the active document.
pub struct Runner {
    inner: Mutex<Inner>,
    gate: GateHandle,
    published: Arc<Published>,
    registry: Registry,
    clock: Clock,
    state: StateDir,
    trust: Arc<TrustStore>,
    /// The fleet this node belongs to (SPEC §12); unset for a single instance.
    fleet: OnceLock<Arc<dyn Fleet>>,
    /// The timer task runs; without it (manual ticks) [`Runner::tick_now`] makes the
    /// outbound calls itself.
    timer: AtomicBool,
}

/// Which document the rollouts belong to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocRef {
    /// Its version.
    pub version: u64,
    /// Its digest.
    pub digest: String,
}

struct Inner {
    /// The snapshot the rollouts were last synced with.
    synced: Option<Arc<Snapshot>>,
    /// The active document.
    document: Option<DocRef>,
    rollouts: BTreeMap<String, Tracked>,
    /// Replay keys of `promote` tokens already used, with their expiry (unix seconds).
    promotions_used: BTreeMap<String, u64>,
    /// Progress read from `state/` at start, consumed by the first sync.
    restored: BTreeMap<String, persist::Entry>,
    /// A rollout was dropped since the last save: `state/` must forget it.
    dirty: bool,
}

/// One live rollout.
struct Tracked {
    spec: Rollout,
    progress: Progress,
    rt: Arc<RolloutRt>,
    /// Verdicts only count seconds from here (mono): when this progress began or resumed.
    evidence_from: u64,
    next_due: Instant,
    verdicts: VecDeque<Stamped>,
    metrics: Handles,
    /// What was last written to `state/` (streaks excluded: they are cheap to rebuild).
    saved: Option<persist::Key>,
    /// `method: sequential`: the running test.
    continuous: Option<Continuous>,
    /// `analysis.metrics`: the checks and their latest results.
    probes: Option<Probes>,
    /// `hooks`: the webhooks and their latest runs.
    hooks: Option<HookRuns>,
    /// Fleet: the progress last written to (or read from) etcd.
    committed: Option<String>,
}

/// A verdict and when it was computed.
#[derive(Debug, Clone)]
struct Stamped {
    at_ms: u64,
    verdict: Verdict,
}

/// Metric handles of one rollout, resolved once.
struct Handles {
    weight: Gauge,
    phase: [Gauge; 5],
    /// passed, failed, inconclusive.
    verdicts: [Counter; 3],
}

// === impl Runner ===

impl Runner {
    /// A runner for the gate's active document: reads persisted progress and brings every
    /// rollout's weight up to date before returning, so an instance starts serving at the
    /// step it stopped at.
    pub fn start(
        gate: GateHandle,
        published: Arc<Published>,
        registry: Registry,
        clock: Clock,
    ) -> Arc<Runner> {
        // Fix the monotonic origin before the data plane records anything.
        let _ = clock::mono_secs(Instant::now());
        let (state, trust) = {
            let g = gate.lock();
            (g.state().clone(), g.trust().clone())
        };
        let saved = persist::load(&state);
        let runner = Arc::new(Runner {
            inner: Mutex::new(Inner {
                synced: None,
                document: None,
                rollouts: BTreeMap::new(),
                promotions_used: saved.promotions_used,
                restored: saved.rollouts,
                dirty: false,
            }),
            gate,
            published,
            registry,
            clock,
            state,
            trust,
            fleet: OnceLock::new(),
            timer: AtomicBool::new(false),
        });
        runner.tick(Which::SyncOnly);
        runner
    }

    /// Ticks every live rollout once, now, whatever its interval (tests and tools; the timer
    /// task calls the same code for rollouts that are due). Without the timer task (manual
    /// ticks) one tick is one interval: first every metric check is fetched and every hook
    /// run that is due (each gate, `rollback` poll and failed check once per tick) is made,
    /// to its end, so the tick judges their results.
    pub fn tick_now(&self) {
        if !self.timer.load(Ordering::Relaxed) {
            self.sync_now();
            self.call_out_now();
        }
        self.tick(Which::All);
    }

    /// Manual ticks: the due fetches and hook runs, on a runtime of their own (the caller
    /// may be inside another), awaited. Each is bounded by its own timeouts.
    fn call_out_now(&self) {
        let any = self
            .lock()
            .rollouts
            .values()
            .any(|t| t.probes.is_some() || t.hooks.is_some());
        if !any {
            return;
        }
        std::thread::scope(|s| {
            let done = s.spawn(|| {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "No runtime for the rollout hooks and metric checks; this tick judges without them.");
                        return;
                    }
                };
                rt.block_on(async {
                    for h in self.start_probes(true) {
                        let _ = h.await;
                    }
                });
            });
            let _ = done.join();
        });
    }

    /// Brings the tracked rollouts in line with the active snapshot now (after a start-up
    /// activation), without judging anything.
    pub fn sync_now(&self) {
        self.tick(Which::SyncOnly);
    }

    /// The timer: ticks rollouts as they fall due until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        self.timer.store(true, Ordering::Relaxed);
        let mut publications = self.published.subscribe();
        loop {
            let wait = self.until_due();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = publications.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = shutdown.wait() => return,
            }
            self.start_probes(false);
            if !self.has_work() {
                continue;
            }
            let me = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || me.tick(Which::Due)).await {
                tracing::error!(error = %e, "A rollout tick panicked; the next tick retries.");
            }
        }
    }

    /// Starts the `analysis.metrics` fetches and the hook runs that are due, on the current
    /// runtime (the control runtime's, or a manual tick's); `every_poll`: each check and
    /// poll is due whatever its interval (manual ticks). Only the node that decides — a
    /// single instance or the fleet's leader — fetches and calls: a follower's results
    /// would never be read, and N nodes must not load Prometheus or a gate N times.
    fn start_probes(&self, every_poll: bool) -> Vec<tokio::task::JoinHandle<()>> {
        let decides = matches!(self.role(), None | Some(Role::Lead));
        let inner = if every_poll {
            self.lock()
        } else {
            match self.inner.try_lock() {
                Ok(inner) => inner,
                Err(_) => return Vec::new(),
            }
        };
        let now = Instant::now();
        let mut started = Vec::new();
        for (name, t) in inner.rollouts.iter() {
            if let Some(p) = &t.probes
                && decides
                && !t.progress.phase.is_final()
            {
                started.extend(p.start_due(now, every_poll));
            }
            match &t.hooks {
                Some(h) if decides => started.extend(h.start_due(
                    name,
                    &t.spec,
                    &t.progress,
                    inner.document.as_ref(),
                    now,
                    every_poll,
                )),
                // A follower applies the leader's end: the leader calls `post_rollout`.
                Some(h) => h.not_deciding(),
                None => {}
            }
        }
        started
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every write under this lock leaves `Inner` consistent; a panic cannot tear it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The timer task asks these on the control thread's runtime: `try_lock`, so a tick busy
    // with an fsync never stalls the admin API sharing that thread.

    fn until_due(&self) -> Duration {
        let now = Instant::now();
        let Ok(inner) = self.inner.try_lock() else {
            return BUSY_RETRY;
        };
        let hooks = inner
            .rollouts
            .values()
            .any(|t| t.hooks.as_ref().is_some_and(|h| h.busy()));
        let next = inner
            .rollouts
            .values()
            .filter(|t| !t.progress.phase.is_final())
            .map(|t| t.next_due.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE);
        if hooks { next.min(HOOK_WAKE) } else { next }
    }

    /// A new snapshot to sync with, or a rollout due.
    fn has_work(&self) -> bool {
        let Ok(inner) = self.inner.try_lock() else {
            return false;
        };
        let current = self.published.load();
        let fresh = match (&*current, &inner.synced) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        let now = Instant::now();
        fresh
            || inner.rollouts.values().any(|t| {
                (!t.progress.phase.is_final() && t.next_due <= now)
                    || t.hooks.as_ref().is_some_and(|h| h.busy())
            })
    }

    fn tick(&self, which: Which) {
        let role = self.role();
        let mut inner = self.lock();
        let now_ms = self.clock.unix_millis();
        let now_sec = clock::mono_secs(Instant::now());
        let mut audit = Vec::new();
        let synced = self.sync(&mut inner, now_ms, now_sec);
        let now = Instant::now();
        let document = inner.document.clone();
        for (name, t) in inner.rollouts.iter_mut() {
            if let Some(h) = &t.hooks {
                for r in h.take_reports() {
                    audit.push(report::hook_event(name, t, &r, document.as_ref()));
                }
            }
            let due = match which {
                Which::SyncOnly => false,
                Which::All => true,
                Which::Due => t.next_due <= now,
            };
            if due {
                // Keep the timer's cadence; after a stall (or a tick by hand), start afresh
                // rather than catch up.
                let next = t.next_due + t.interval();
                t.next_due = if which == Which::Due && next > now {
                    next
                } else {
                    now + t.interval()
                };
            }
            match role {
                // The leader decides; a follower applies, a node cut off waits.
                Some(Role::Follow) => {
                    self.adopt(name, t, document.as_ref(), now_sec, &mut audit);
                    continue;
                }
                Some(Role::Frozen) => continue,
                // A leader whose rollout ended while it was cut off tells the fleet now.
                Some(Role::Lead) if t.progress.phase.is_final() => {
                    if let Err(e) = self.commit(name, t, document.as_ref(), None, now_ms) {
                        tracing::debug!(rollout = %name, error = %e, "Could not write rollout progress to the fleet.");
                    }
                    continue;
                }
                _ => {}
            }
            // A new document is ticked at once, without a verdict: `paused` and gates apply
            // before the first interval passes.
            if due || synced {
                let at = Now {
                    ms: now_ms,
                    sec: now_sec,
                };
                let report = which == Which::All;
                self.tick_one(
                    name,
                    t,
                    due,
                    report,
                    at,
                    document.as_ref(),
                    role,
                    &mut audit,
                );
            }
        }
        self.persist(&mut inner);
        drop(inner);
        self.audit(audit);
    }

    /// Brings the tracked rollouts in line with the active snapshot; true when it changed.
    fn sync(&self, inner: &mut Inner, now_ms: u64, now_sec: u64) -> bool {
        let current = self.published.load_full();
        let same = match (&current, &inner.synced) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if same {
            return false;
        }
        inner.synced = current.clone();
        let Some(snap) = current else {
            return false;
        };
        // The snapshot is the whole document as activated: no need to ask the gate.
        let docref = DocRef {
            version: snap.version,
            digest: snap.digest.clone(),
        };
        let specs: Vec<(String, Rollout)> = snap
            .rollouts
            .iter()
            .map(|r| (r.name.to_string(), r.spec.clone()))
            .collect();
        let mut old = std::mem::take(&mut inner.rollouts);
        for ((name, spec), rt) in specs.into_iter().zip(snap.rollouts.iter().cloned()) {
            // What a kept progress keeps besides itself: verdicts, evidence, schedule, save.
            let prior = match old.remove(&name) {
                Some(t) => Some((
                    t.spec,
                    t.progress,
                    Some((
                        t.verdicts,
                        t.evidence_from,
                        t.next_due,
                        t.saved,
                        t.continuous,
                        t.probes,
                        t.hooks,
                    )),
                )),
                None => inner
                    .restored
                    .remove(&name)
                    .map(|e| (e.spec, e.progress, None)),
            };
            let (mut progress, mut history) = match prior {
                Some((old_spec, old_progress, history)) => {
                    let p = carry(&old_spec, &spec, &old_progress, now_ms);
                    let kept = p == old_progress;
                    // The saved spec must be the one the progress now runs under.
                    inner.dirty |= old_spec != spec;
                    let mut p = p;
                    if !kept {
                        tracing::info!(rollout = %name, version = docref.version, "The new document changes this rollout: it starts again at step 0.");
                        p.awaiting_start = hooks::gates_start(&spec);
                    }
                    (p, history.filter(|_| kept))
                }
                None => {
                    let mut p = Progress::new(now_ms);
                    p.awaiting_start = hooks::gates_start(&spec);
                    (p, None)
                }
            };
            // In a fleet, the leader's progress for this document wins over anything local
            // (a joining node and a new leader continue where the fleet stands) — except
            // that a rollback made here is never undone: aborted is final for a document.
            let fleet_p = self.fleet_progress(&name, &docref);
            let committed = fleet_p.as_ref().map(|fp| {
                let undoes_rollback =
                    progress.phase == Phase::Aborted && fp.progress.phase != Phase::Aborted;
                if fp.progress != progress && !undoes_rollback {
                    progress = fp.progress.clone();
                    history = None;
                }
                // What etcd holds: a leader writes its own progress when it differs.
                fleet::committed_key(&docref, &fp.progress)
            });
            // Frequent reloads must not keep postponing a kept rollout's next tick.
            let (verdicts, evidence_from, next_due, saved, continuous, probes, hooks) = history
                .unwrap_or_else(|| {
                    (
                        VecDeque::new(),
                        now_sec,
                        Instant::now() + interval_of(&spec),
                        None,
                        None,
                        None,
                        None,
                    )
                });
            // Kept hooks keep their results unless the new document changes them.
            let hooks = match hooks {
                Some(h) if h.built_for(&name, &spec) => Some(h),
                _ => HookRuns::new(&name, &spec, &self.registry),
            };
            // Kept checks keep their streaks unless the new document changes them.
            let probes = match probes {
                Some(p) if p.built_for(&name, &spec) => Some(p),
                _ => Probes::new(&name, &spec),
            };
            // A kept test goes on unless the new document judges differently.
            let continuous = sequential_analysis(&spec).map(|a| match continuous {
                Some(c) if c.judges(a) => c,
                _ => Continuous::new(a, evidence_from),
            });
            let metrics = Handles::new(&self.registry, &name);
            let t = Tracked {
                next_due,
                spec,
                progress,
                rt,
                evidence_from,
                verdicts,
                metrics,
                saved,
                continuous,
                probes,
                hooks,
                committed,
            };
            t.publish();
            inner.rollouts.insert(name, t);
        }
        for (name, t) in &old {
            tracing::info!(rollout = %name, "The new document has no such rollout; it is no longer driven.");
            // Its series stay registered; nothing is current any more.
            t.metrics.weight.set(0.0);
            for g in &t.metrics.phase {
                g.set(0.0);
            }
            inner.dirty = true;
        }
        inner.document = Some(docref);
        true
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn tick_one(
        &self,
        name: &str,
        t: &mut Tracked,
        judge_now: bool,
        report: bool,
        now: Now,
        document: Option<&DocRef>,
        role: Option<Role>,
        audit: &mut Vec<AuditEvent>,
    ) {
        let (now_ms, now_sec) = (now.ms, now.sec);
        if t.progress.phase.is_final() {
            return;
        }
        let mut verdict = match (&t.spec.analysis, judge_now) {
            (Some(_), true) if t.continuous.is_some() => {
                // The leader judges the fleet's sum; anyone else (a node cut off) its own.
                let source = match (self.fleet.get(), role) {
                    (Some(f), Some(Role::Lead)) => Source::Fleet(name, &**f),
                    _ => Source::Local,
                };
                t.continuous
                    .as_mut()
                    .and_then(|c| c.evaluate(&t.rt, source, Instant::now(), report))
            }
            (Some(a), true) => {
                let span = Duration::from_secs(now_sec.saturating_sub(t.evidence_from) + 1);
                let window = a.window.0.min(span);
                let (stable, canary) = self.window_stats(name, &t.rt.windows, now_sec, window);
                Some(judge(a, &canary, &stable))
            }
            _ => None,
        };
        if let (Some(v), Some(p)) = (&mut verdict, &t.probes) {
            metric_check::combine(v, p.results());
        }
        let signals = t
            .hooks
            .as_ref()
            .map(|h| h.signals(&t.progress, &t.spec))
            .unwrap_or_default();
        let hook_failed = if t.progress.awaiting_start {
            signals.start == controller::Gate::Failed
        } else {
            signals.step == controller::Gate::Failed
        };
        if let Some(v) = &mut verdict
            && hook_failed
        {
            v.outcome = super::analysis::VerdictOutcome::Failed;
            v.rule = Some(super::analysis::Criterion::Hook);
        }
        if let Some(v) = &verdict {
            t.metrics.count(v);
            t.verdicts.push_front(Stamped {
                at_ms: now_ms,
                verdict: v.clone(),
            });
            t.verdicts.truncate(KEPT_VERDICTS);
            tracing::debug!(rollout = name, outcome = v.outcome.as_str(), summary = %verdict_summary(v), "Rollout verdict.");
        }
        if role == Some(Role::CutOff) {
            self.tick_alone(name, t, verdict.as_ref(), now_ms, now_sec, document, audit);
            return;
        }
        let before = t.progress.clone();
        let events = controller::tick_with_hooks(
            &mut t.progress,
            &t.spec,
            verdict.as_ref(),
            signals,
            now_ms,
        );
        if role == Some(Role::Lead)
            && let Err(e) = self.commit(name, t, document, verdict.as_ref(), now_ms)
        {
            // Not written fleet-wide, so not applied here either: the next tick tries again.
            tracing::warn!(rollout = name, error = %e, "Could not write rollout progress to the fleet; it does not take effect.");
            t.progress = before;
            return;
        }
        self.apply(
            name,
            t,
            &events,
            now_sec,
            document,
            "sluice",
            verdict.as_ref(),
            audit,
        );
    }

    /// Applies a controller call's events: the weight first (one store), then metrics,
    /// logs and the audit lines to write.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        name: &str,
        t: &mut Tracked,
        events: &[Event],
        now_sec: u64,
        document: Option<&DocRef>,
        actor: &str,
        verdict: Option<&Verdict>,
        audit: &mut Vec<AuditEvent>,
    ) {
        t.publish();
        let mut prev: Option<&Event> = None;
        for e in events {
            log_event(name, t, e, verdict);
            match e {
                Event::Resumed { .. } => {
                    // The evidence from before the pause no longer describes the rollout.
                    t.evidence_from = now_sec;
                    t.continuous =
                        sequential_analysis(&t.spec).map(|a| Continuous::new(a, now_sec));
                }
                Event::StepAdvanced { .. } | Event::Promoted { .. } => {
                    if let Some(c) = &mut t.continuous {
                        c.step_started();
                    }
                }
                Event::RolledBack { reason } | Event::SwappedBack { reason } => {
                    self.registry
                        .counter(
                            telemetry::ROLLBACKS,
                            &[("rollout", name), ("reason", reason.as_str())],
                        )
                        .increment(1);
                    t.finished_hooks();
                }
                Event::Completed => t.finished_hooks(),
                _ => {}
            }
            // Reaching a gate right after a step is part of that step's line; reaching one
            // without a step (a first step that is a gate, a manual blue-green) is a phase
            // change of its own, audited as the step the rollout now stands at.
            let event = match e {
                Event::WaitingForPromotion { .. }
                    if !matches!(prev, Some(Event::StepAdvanced { .. })) =>
                {
                    Some(EventKind::RolloutStep)
                }
                _ => e.audit_event(),
            };
            if let Some(kind) = event {
                audit.push(report::audit_event(
                    kind, name, t, e, document, actor, verdict,
                ));
            }
            prev = Some(e);
        }
    }

    /// Writes `state/rollouts.json` when a rollout's persisted fields changed.
    fn persist(&self, inner: &mut Inner) {
        let changed = inner
            .rollouts
            .values()
            .any(|t| t.saved.as_ref() != Some(&persist::Key::of(&t.progress)));
        if !changed && !inner.dirty {
            return;
        }
        match persist::save(&self.state, inner) {
            Ok(()) => {
                inner.dirty = false;
                for t in inner.rollouts.values_mut() {
                    t.saved = Some(persist::Key::of(&t.progress));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Could not persist rollout progress; a restart would resume from the last saved step.")
            }
        }
    }

    fn audit(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        self.audit_fleet(&events);
        let mut g = self.gate.lock();
        for event in events {
            let kind = event.kind();
            if let Err(e) = g.record(event) {
                tracing::error!(event = %kind, error = %e, "Could not append a rollout event to the audit log.");
            }
        }
    }
}

/// The two clocks of one tick: wall (unix ms, holds) and monotonic seconds (windows).
#[derive(Debug, Clone, Copy)]
struct Now {
    ms: u64,
    sec: u64,
}

/// Which rollouts a tick judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// None: only pick up a new document.
    SyncOnly,
    /// Those whose interval has passed.
    Due,
    /// Every live one.
    All,
}

// === impl Tracked ===

impl Tracked {
    fn interval(&self) -> Duration {
        interval_of(&self.spec)
    }

    /// Stores the weight the progress calls for into the data plane's atomic and updates the
    /// weight and phase gauges.
    fn publish(&self) {
        let w = controller::current_weight(&self.progress, &self.spec);
        self.rt.state.weight_bp.store(w.0, Ordering::Relaxed);
        // The live step picks a step's `mirror`: none once finished or before the start.
        let p = &self.progress;
        let live = if p.phase.is_final() || p.awaiting_start {
            crate::snapshot::NO_STEP
        } else {
            u32::try_from(p.step).unwrap_or(crate::snapshot::NO_STEP)
        };
        self.rt.state.live_step.store(live, Ordering::Relaxed);
        self.metrics.weight.set(f64::from(w.0) / 100.0);
        for (g, phase) in self.metrics.phase.iter().zip(Phase::ALL) {
            g.set(if phase == self.progress.phase {
                1.0
            } else {
                0.0
            });
        }
    }

    /// The rollout finished: its `post_rollout` hooks are due.
    fn finished_hooks(&self) {
        if let Some(h) = &self.hooks {
            h.finished(
                self.progress.step,
                self.progress.finished_at_ms.unwrap_or_default(),
            );
        }
    }

    fn weight_percent(&self) -> f64 {
        f64::from(controller::current_weight(&self.progress, &self.spec).0) / 100.0
    }
}

// === impl Handles ===

impl Handles {
    fn new(r: &Registry, name: &str) -> Handles {
        for reason in [
            RollbackReason::ErrorRate,
            RollbackReason::ErrorRateIncrease,
            RollbackReason::P99,
            RollbackReason::Metric,
            RollbackReason::Hook,
            RollbackReason::Operator,
        ] {
            // Registered at zero so dashboards see every series before the first rollback.
            let _ = r.counter(
                telemetry::ROLLBACKS,
                &[("rollout", name), ("reason", reason.as_str())],
            );
        }
        let verdict = |v: &str| {
            r.counter(
                telemetry::ROLLOUT_VERDICTS,
                &[("rollout", name), ("verdict", v)],
            )
        };
        Handles {
            weight: r.gauge(telemetry::ROLLOUT_WEIGHT, &[("rollout", name)]),
            phase: Phase::ALL.map(|p| {
                r.gauge(
                    telemetry::ROLLOUT_PHASE,
                    &[("rollout", name), ("phase", p.as_str())],
                )
            }),
            verdicts: [
                verdict("passed"),
                verdict("failed"),
                verdict("inconclusive"),
            ],
        }
    }

    fn count(&self, v: &Verdict) {
        use super::analysis::VerdictOutcome;
        let i = match v.outcome {
            VerdictOutcome::Passed => 0,
            VerdictOutcome::Failed => 1,
            VerdictOutcome::Inconclusive => 2,
        };
        self.verdicts[i].increment(1);
    }
}

/// The progress a new document continues from: SPEC §6's [`controller::carry_over`], except
/// that an aborted rollout whose definition is unchanged (but for `paused`) stays aborted.
fn carry(old_spec: &Rollout, new_spec: &Rollout, old: &Progress, now_ms: u64) -> Progress {
    if old.phase == Phase::Aborted && same_but_paused(old_spec, new_spec) {
        return old.clone();
    }
    controller::carry_over(old_spec, new_spec, old, now_ms)
}

fn same_but_paused(a: &Rollout, b: &Rollout) -> bool {
    let mut b = b.clone();
    b.paused = a.paused;
    *a == b
}

/// How often a rollout is ticked: every [`EVALUATE_EVERY`] with a sequential analysis (its
/// verdicts still come each `interval`, failures at once), each `interval` for the z test,
/// each second for holds alone.
fn interval_of(spec: &Rollout) -> Duration {
    match &spec.analysis {
        None => HOLD_INTERVAL,
        Some(a) if a.method == AnalysisMethod::Sequential => EVALUATE_EVERY,
        Some(a) => a.interval.0,
    }
}

/// The analysis of a rollout judged by the sequential test.
fn sequential_analysis(spec: &Rollout) -> Option<&crate::config::traffic::Analysis> {
    spec.analysis
        .as_ref()
        .filter(|a| a.method == AnalysisMethod::Sequential)
}

fn log_event(name: &str, t: &Tracked, e: &Event, verdict: Option<&Verdict>) {
    let step = t.progress.step;
    let weight = t.weight_percent();
    let why = verdict.map(verdict_summary);
    let why = why.as_deref();
    match e {
        Event::WeightChanged { .. } => {}
        Event::StepAdvanced { .. } => {
            tracing::info!(
                rollout = name,
                step,
                weight,
                verdict = why,
                "Rollout advanced to the next step."
            )
        }
        Event::WaitingForPromotion { .. } => {
            tracing::info!(rollout = name, step, weight, "Rollout waits for promote.")
        }
        Event::Promoted { .. } => {
            tracing::info!(rollout = name, step, weight, "Rollout promoted.")
        }
        Event::PromotedFull { from_step } => {
            tracing::info!(
                rollout = name,
                from_step,
                weight,
                "Rollout fully promoted: the remaining steps were skipped."
            )
        }
        Event::Paused { reason } => match reason {
            PauseReason::Failed { .. } | PauseReason::Inconclusive => {
                tracing::warn!(
                    rollout = name,
                    step,
                    weight,
                    cause = reason.as_str(),
                    verdict = why,
                    "Rollout paused by its analysis."
                )
            }
            PauseReason::Document | PauseReason::Operator => {
                tracing::info!(
                    rollout = name,
                    step,
                    weight,
                    cause = reason.as_str(),
                    "Rollout paused."
                )
            }
        },
        Event::Resumed { reason } => {
            tracing::info!(
                rollout = name,
                step,
                weight,
                paused_by = reason.as_str(),
                "Rollout resumed."
            )
        }
        Event::RolledBack { reason } => {
            tracing::warn!(
                rollout = name,
                step,
                reason = reason.as_str(),
                verdict = why,
                "Rollout rolled back: the canary gets no traffic."
            )
        }
        Event::SwappedBack { reason } => {
            tracing::warn!(
                rollout = name,
                reason = reason.as_str(),
                verdict = why,
                "Blue-green swapped back: all traffic returns to active."
            )
        }
        Event::Completed => {
            tracing::info!(rollout = name, weight, "Rollout completed.")
        }
    }
}

/// The strategy's name for status.
fn strategy_str(s: Strategy) -> &'static str {
    match s {
        Strategy::Canary => "canary",
        Strategy::BlueGreen => "blue_green",
    }
}

#[cfg(test)]
mod tests;
