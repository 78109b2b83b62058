//! What the runner tells people: audit fields of each transition, the `rollouts` part of
//! `GET /api/v1/status`, and a one-line summary of a verdict with its numbers.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{DocRef, Runner, Stamped, Tracked, strategy_str};
use crate::change::audit::{Event as AuditEvent, EventKind};
use crate::clock;
use crate::config::traffic::Strategy;
use crate::metric_check::MetricState;
use crate::rollout::analysis::{Verdict, VerdictOutcome};
use crate::rollout::controller::Event;
use crate::rollout::progress::{HookGate, PauseReason, Phase};

/// One line for logs, status and the demo: outcome, broken rule and the numbers behind it,
/// e.g. `failed (error_rate): canary 18/60 errors (30.00%), stable 0/1140 (0.00%), z 5.02 > 2.33, p99 3.1ms`,
/// or with the sequential test `..., e-value 10^4.2 ≥ 10^2.1 against 1.15%, ...`.
pub fn verdict_summary(v: &Verdict) -> String {
    let mut s = String::from(v.outcome.as_str());
    if let Some(rule) = v.rule {
        s.push_str(&format!(" ({})", rule.as_str()));
    }
    s.push_str(&format!(
        ": canary {}/{} errors ({:.2}%)",
        v.canary_errors,
        v.canary_requests,
        v.canary_error_rate * 100.0
    ));
    match v.stable_error_rate {
        Some(p) => s.push_str(&format!(
            ", stable {}/{} ({:.2}%)",
            v.stable_errors,
            v.stable_requests,
            p * 100.0
        )),
        None => s.push_str(", no stable traffic"),
    }
    if let (Some(z), Some(crit)) = (v.z, v.z_critical) {
        let cmp = if v.increase_exceeded { ">" } else { "≤" };
        s.push_str(&format!(", z {z:.2} {cmp} {crit:.2}"));
    }
    if let Some(e) = &v.sequential {
        let cmp = if e.log10_e >= e.log10_threshold {
            "≥"
        } else {
            "<"
        };
        s.push_str(&format!(
            ", e-value 10^{:.1} {cmp} 10^{:.1}",
            e.log10_e.max(-99.0),
            e.log10_threshold
        ));
        if let Some(p0) = e.null_rate {
            s.push_str(&format!(" against {:.2}%", p0 * 100.0));
        }
    }
    if let Some(p99) = v.canary_p99 {
        s.push_str(&format!(", p99 {:.1}ms", p99.as_secs_f64() * 1000.0));
    }
    for m in &v.metrics {
        s.push_str(&format!(", metric {} ", m.name));
        match (&m.value, &m.error) {
            (_, Some(e)) => s.push_str(&format!("error ({e})")),
            (Some(x), None) => s.push_str(&format!(
                "{x} {} ({}/{})",
                m.state.as_str(),
                m.consecutive_failures,
                m.failure_limit
            )),
            (None, None) => s.push_str(m.state.as_str()),
        }
    }
    if v.outcome == VerdictOutcome::Inconclusive {
        let metrics_hold = v.metrics.iter().any(|m| m.state != MetricState::Passed);
        s.push_str(if metrics_hold {
            " (metrics not all passing)"
        } else {
            " (too few canary requests)"
        });
    }
    s
}

/// The verdict as JSON, with when it was computed.
fn stamped_json(s: &Stamped) -> Value {
    let mut v = serde_json::to_value(&s.verdict).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("at".into(), json!(rfc3339_ms(s.at_ms)));
        m.insert("summary".into(), json!(verdict_summary(&s.verdict)));
    }
    v
}

fn rfc3339_ms(ms: u64) -> String {
    clock::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The `rollout.hook` event of a hook run's result.
pub(super) fn hook_event(
    name: &str,
    t: &Tracked,
    r: &super::hooks::HookReport,
    document: Option<&DocRef>,
) -> AuditEvent {
    let mut a = AuditEvent::new(EventKind::RolloutHook, "sluice").with("rollout", name);
    if let Some(d) = document {
        a = a.change(json!({ "version": d.version, "digest": d.digest }));
    }
    a.with("hook", r.kind.as_str())
        .with("result", r.result)
        .with("step", r.step)
        .with("phase", t.progress.phase.as_str())
        .with("run", &r.run)
}

/// The audit event of transition `e` of rollout `name`, as `kind`.
pub(super) fn audit_event(
    kind: EventKind,
    name: &str,
    t: &Tracked,
    e: &Event,
    document: Option<&DocRef>,
    actor: &str,
    verdict: Option<&Verdict>,
) -> AuditEvent {
    let mut a = AuditEvent::new(kind, actor).with("rollout", name);
    if let Some(d) = document {
        a = a.change(json!({ "version": d.version, "digest": d.digest }));
    }
    a = a
        .with("phase", t.progress.phase.as_str())
        .with("step", t.progress.step)
        .with("weight", t.weight_percent());
    a = match e {
        Event::StepAdvanced { step, .. } => a.with("step", step),
        Event::Promoted { step } => a.with("promoted_step", step),
        Event::PromotedFull { from_step } => a.with("promoted_step", from_step).with("full", true),
        Event::Paused { reason } => {
            let a = a.with("reason", reason.as_str());
            match reason {
                PauseReason::Failed { rule } => a.with("rule", rule.as_str()),
                _ => a,
            }
        }
        Event::Resumed { reason } => a.with("paused_by", reason.as_str()),
        Event::RolledBack { reason } => a.with("reason", reason.as_str()),
        Event::SwappedBack { reason } => {
            a.with("reason", reason.as_str()).with("swapped_back", true)
        }
        Event::Completed | Event::WeightChanged { .. } | Event::WaitingForPromotion { .. } => a,
    };
    let latest = verdict.or_else(|| t.verdicts.front().map(|s| &s.verdict));
    if let Some(v) = latest {
        let mut vj = serde_json::to_value(v).unwrap_or(Value::Null);
        if let Some(m) = vj.as_object_mut() {
            m.insert("summary".into(), json!(verdict_summary(v)));
        }
        a = a.with("verdict", vj);
    }
    a
}

// === impl Runner ===

impl Runner {
    /// The `rollouts` array of `GET /api/v1/status`: per rollout its phase, step, weight,
    /// what it waits for, the current window per variant, and the last verdicts with numbers.
    pub fn status_json(&self) -> Value {
        let inner = self.lock();
        let now_ms = self.clock.unix_millis();
        let now_sec = clock::mono_secs(std::time::Instant::now());
        let list: Vec<Value> = inner
            .rollouts
            .iter()
            .map(|(name, t)| status_of(name, t, now_ms, now_sec))
            .collect();
        Value::Array(list)
    }
}

pub(super) fn status_of(name: &str, t: &Tracked, now_ms: u64, now_sec: u64) -> Value {
    let p = &t.progress;
    let window = t
        .spec
        .analysis
        .as_ref()
        .map_or(super::HOLD_INTERVAL * 30, |a| a.window.0);
    let stable = t.rt.windows.stable.snapshot(now_sec, window);
    let canary = t.rt.windows.canary.snapshot(now_sec, window);
    let mut v = json!({
        "name": name,
        "strategy": strategy_str(t.spec.strategy),
        "phase": p.phase.as_str(),
        "step": p.step,
        "steps": match t.spec.strategy {
            Strategy::Canary => t.spec.steps.len(),
            Strategy::BlueGreen => 1,
        },
        "weight": t.weight_percent(),
        "started_at": rfc3339_ms(p.started_at_ms),
        "step_started_at": rfc3339_ms(p.step_started_at_ms),
        "paused_by": p.pause.map(|s| s.reason.as_str()),
        "abort_reason": p.abort_reason.map(|r| r.as_str()),
        "consecutive_failures": p.consecutive_failures,
        "consecutive_inconclusive": p.consecutive_inconclusive,
        "window": { "stable": stable, "canary": canary },
        "last_verdict": t.verdicts.front().map(|s| verdict_summary(&s.verdict)),
        "verdicts": t.verdicts.iter().map(stamped_json).collect::<Vec<_>>(),
    });
    if let Some(m) = v.as_object_mut() {
        if let Some(left) = hold_left_ms(t, now_ms) {
            m.insert("hold_left_s".into(), json!((left as f64 / 1000.0).ceil()));
        }
        if p.phase == Phase::WaitingForPromotion {
            m.insert("waiting_for".into(), json!("promote"));
        } else if let Some(g) = p.waiting_for {
            m.insert("waiting_for".into(), json!(g.as_str()));
        } else if p.awaiting_start {
            m.insert("waiting_for".into(), json!(HookGate::Start.as_str()));
        }
        if let Some(h) = &t.hooks {
            m.insert("hooks".into(), h.status());
        }
        if let Some(at) = p.promoted_at_ms {
            m.insert("promoted_at".into(), json!(rfc3339_ms(at)));
        }
        if let Some(mirror) = active_mirror_json(t) {
            m.insert("mirror".into(), mirror);
        }
        if let Some(from) = p.full_promotion_from {
            m.insert("full_promotion_from_step".into(), json!(from));
        }
    }
    v
}

/// The mirror copying the rollout's requests now (the live step's, else the rollout's), and
/// whether its copies are judged (a mirror of the canary is canary evidence).
fn active_mirror_json(t: &Tracked) -> Option<Value> {
    let p = &t.progress;
    let live = !p.phase.is_final() && !p.awaiting_start;
    let step = live
        .then(|| t.spec.steps.get(p.step)?.mirror.as_ref())
        .flatten();
    let (m, from) = match (step, &t.spec.mirror) {
        (Some(m), _) => (m, "step"),
        (None, Some(m)) => (m, "rollout"),
        (None, None) => return None,
    };
    let canary = match t.spec.strategy {
        Strategy::Canary => t.spec.canary.as_ref(),
        Strategy::BlueGreen => t.spec.preview.as_ref(),
    };
    Some(json!({
        "upstream": m.upstream,
        "percent": f64::from(m.percent.0) / 100.0,
        "from": from,
        "judged": canary == Some(&m.upstream),
    }))
}

/// Time left in the current canary step's hold (or until automatic blue-green promotion, or
/// the end of the post-promotion window), while progressing.
fn hold_left_ms(t: &Tracked, now_ms: u64) -> Option<u64> {
    let p = &t.progress;
    if p.phase != Phase::Progressing {
        return None;
    }
    let span = match t.spec.strategy {
        Strategy::Canary => t.spec.steps.get(p.step)?.hold?.0,
        Strategy::BlueGreen if p.promoted_at_ms.is_some() => t.spec.post_promotion_window?.0,
        Strategy::BlueGreen => t.spec.promote.as_ref()?.after?.0,
    };
    let end = p
        .step_started_at_ms
        .saturating_add(u64::try_from(span.as_millis()).unwrap_or(u64::MAX));
    Some(end.saturating_sub(now_ms))
}
