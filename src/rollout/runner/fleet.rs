//! The runner in a fleet (SPEC §12; roles in [`crate::rollout::fleet`]):
//! - **Lead**: ticks on the fleet's summed windows and writes every change of progress to
//!   etcd *before* storing the weight — if the fenced write fails (deposed, etcd gone) the
//!   change does not happen here either, so no node ever serves a weight the fleet did not.
//! - **Follow**: applies the leader's progress for the document it serves (weight, phase,
//!   step), logging and auditing the transitions as the leader's.
//! - **Frozen**: nothing moves.
//! - **CutOff**: judges its own traffic and keeps only a rollback, which the fleet learns
//!   when the node reconnects.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DocRef, Runner, Tracked, Which};
use crate::change::audit::Event as AuditEvent;
use crate::rollout::analysis::Verdict;
use crate::rollout::controller::{self, Event};
use crate::rollout::fleet::{Fleet, FleetProgress, Role};
use crate::rollout::progress::{Phase, Progress};
use crate::rollout::{RolloutWindows, WindowStats};

// === impl Runner ===

impl Runner {
    /// Makes this runner a fleet member.
    pub fn set_fleet(&self, fleet: Arc<dyn Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// The role this node has now; `None` for a single instance.
    pub(super) fn role(&self) -> Option<Role> {
        self.fleet.get().map(|f| f.role())
    }

    /// Applies the leader's progress (or a change of role) now instead of at the next tick.
    pub fn follow_fleet(&self) {
        self.tick(Which::SyncOnly);
    }

    /// The live rollouts with analysis whose windows a fleet node publishes, with their
    /// intervals.
    pub fn fleet_windows(&self) -> Vec<(String, Arc<RolloutWindows>, Duration)> {
        self.lock()
            .rollouts
            .iter()
            .filter(|(_, t)| !t.progress.phase.is_final() && t.spec.analysis.is_some())
            .map(|(name, t)| (name.clone(), t.rt.windows.clone(), t.interval()))
            .collect()
    }

    /// Whether rollout `name` currently runs under the document `digest`.
    pub fn runs_under(&self, name: &str, digest: &str) -> bool {
        let inner = self.lock();
        inner.rollouts.contains_key(name)
            && inner.document.as_ref().is_some_and(|d| d.digest == digest)
    }

    /// The fleet's progress for `name` under `document`, if the leader wrote one.
    pub(super) fn fleet_progress(&self, name: &str, document: &DocRef) -> Option<FleetProgress> {
        let p = self.fleet.get()?.progress(name)?;
        (p.document.digest == document.digest).then_some(p)
    }

    /// The (stable, canary) stats a verdict reads: the fleet's sum when leading.
    pub(super) fn window_stats(
        &self,
        name: &str,
        windows: &RolloutWindows,
        now_sec: u64,
        window: Duration,
    ) -> (WindowStats, WindowStats) {
        match (self.fleet.get(), self.role()) {
            (Some(f), Some(Role::Lead)) => f.stats(name, windows, now_sec, window),
            _ => (
                windows.stable.snapshot(now_sec, window),
                windows.canary.snapshot(now_sec, window),
            ),
        }
    }

    /// Follow: takes the leader's progress when it differs, with the transitions it implies.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopt(
        &self,
        name: &str,
        t: &mut Tracked,
        document: Option<&DocRef>,
        now_sec: u64,
        audit: &mut Vec<AuditEvent>,
    ) {
        let Some(doc) = document else { return };
        let Some(fp) = self.fleet_progress(name, doc) else {
            return;
        };
        if same_progress(&t.progress, &fp.progress) {
            return;
        }
        // Aborted is final for a document: a rollback this node made (cut off, say) is never
        // undone by a record the leader wrote before it learned of it.
        if t.progress.phase == Phase::Aborted && fp.progress.phase != Phase::Aborted {
            return;
        }
        let events = transitions(&t.progress, &fp.progress, &t.spec);
        t.progress = fp.progress.clone();
        t.committed = Some(committed_key(doc, &t.progress));
        let actor = format!("leader {}", fp.leader);
        self.apply(name, t, &events, now_sec, document, &actor, None, audit);
    }

    /// Lead: writes `t`'s progress fleet-wide when it changed since the last write. On
    /// failure the caller puts the old progress back.
    pub(super) fn commit(
        &self,
        name: &str,
        t: &mut Tracked,
        document: Option<&DocRef>,
        verdict: Option<&Verdict>,
        now_ms: u64,
    ) -> Result<(), String> {
        let (Some(fleet), Some(doc)) = (self.fleet.get(), document) else {
            return Ok(());
        };
        let key = committed_key(doc, &t.progress);
        if t.committed.as_ref() == Some(&key) {
            return Ok(());
        }
        let fp = FleetProgress {
            document: doc.clone(),
            progress: t.progress.clone(),
            weight_bp: controller::current_weight(&t.progress, &t.spec).0,
            leader: String::new(),
            verdict: verdict.map_or(
                Value::Null,
                |v| json!({ "outcome": v.outcome.as_str(), "summary": super::verdict_summary(v) }),
            ),
            at_ms: now_ms,
        };
        fleet.commit(name, fp)?;
        t.committed = Some(key);
        Ok(())
    }

    /// CutOff: a tick on this node's own windows that keeps only a rollback (and the streaks
    /// that lead to one); anything else waits for the fleet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tick_alone(
        &self,
        name: &str,
        t: &mut Tracked,
        verdict: Option<&Verdict>,
        now_ms: u64,
        now_sec: u64,
        document: Option<&DocRef>,
        audit: &mut Vec<AuditEvent>,
    ) {
        let mut p = t.progress.clone();
        let events = controller::tick(&mut p, &t.spec, verdict, now_ms);
        let rolled_back = events
            .iter()
            .find(|e| matches!(e, Event::RolledBack { .. } | Event::SwappedBack { .. }));
        match rolled_back {
            Some(Event::RolledBack { reason } | Event::SwappedBack { reason }) => {
                let reason = reason.as_str();
                t.progress = p;
                self.apply(
                    name, t, &events, now_sec, document, "sluice", verdict, audit,
                );
                if let (Some(f), Some(doc)) = (self.fleet.get(), document) {
                    f.rolled_back_alone(name, doc, reason);
                }
            }
            _ => {
                t.progress.consecutive_failures = p.consecutive_failures;
            }
        }
    }

    /// Appends the leader's transitions to the fleet audit chain.
    pub(super) fn audit_fleet(&self, events: &[AuditEvent]) {
        if let (Some(f), Some(Role::Lead)) = (self.fleet.get(), self.role()) {
            for e in events {
                f.audit(e.clone());
            }
        }
    }
}

/// What a commit compares: the document and the serialized progress (streaks included).
pub(super) fn committed_key(doc: &DocRef, p: &Progress) -> String {
    format!(
        "{}|{}",
        doc.digest,
        serde_json::to_string(p).unwrap_or_default()
    )
}

/// Equal as persisted (the latest verdict outcome is not part of the fleet's record).
fn same_progress(a: &Progress, b: &Progress) -> bool {
    let mut a = a.clone();
    a.last_outcome = b.last_outcome;
    a == *b
}

/// The events that lead from `old` to `new` (as the leader's controller produced them), for
/// a follower's logs, metrics and audit.
fn transitions(
    old: &Progress,
    new: &Progress,
    spec: &crate::config::traffic::Rollout,
) -> Vec<Event> {
    let mut out = Vec::new();
    let (wo, wn) = (
        controller::current_weight(old, spec),
        controller::current_weight(new, spec),
    );
    if wo != wn {
        out.push(Event::WeightChanged { from: wo, to: wn });
    }
    if let (None, Some(from_step)) = (old.full_promotion_from, new.full_promotion_from) {
        out.push(Event::PromotedFull { from_step });
    } else if old.phase == Phase::WaitingForPromotion
        && !matches!(
            new.phase,
            Phase::WaitingForPromotion | Phase::Aborted | Phase::Paused
        )
    {
        out.push(Event::Promoted { step: old.step });
    }
    if new.step > old.step && new.phase != Phase::Completed {
        out.push(Event::StepAdvanced {
            step: new.step,
            weight: wn,
        });
    }
    if new.phase != old.phase {
        match new.phase {
            Phase::WaitingForPromotion => out.push(Event::WaitingForPromotion { step: new.step }),
            Phase::Paused => {
                if let Some(reason) = new.pause_reason() {
                    out.push(Event::Paused { reason });
                }
            }
            Phase::Completed => out.push(Event::Completed),
            Phase::Aborted => {
                let reason = new
                    .abort_reason
                    .unwrap_or(crate::rollout::progress::RollbackReason::Operator);
                out.push(if new.promoted_at_ms.is_some() {
                    Event::SwappedBack { reason }
                } else {
                    Event::RolledBack { reason }
                });
            }
            Phase::Progressing => {
                if let Some(reason) = old.pause_reason() {
                    out.push(Event::Resumed { reason });
                }
            }
        }
    }
    out
}
