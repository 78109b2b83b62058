use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::change::audit::EventKind;
use crate::config::Dur;
use crate::config::traffic::{Analysis, AnalysisMethod, Promote, StepGate, Sticky};
use crate::rollout::analysis::{Criterion, judge_windows};
use crate::rollout::window::{RolloutWindows, Variant};

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
/// An arbitrary wall-clock start (unix ms), far from zero so nothing saturates by accident.
const T0: u64 = 1_700_000_000_000;

pub(crate) fn weight(percent: u32, hold_secs: u64) -> Step {
    Step {
        weight: Some(Weight(percent * 100)),
        hold: (hold_secs > 0).then(|| Dur::secs(hold_secs)),
        gate: None,
        mirror: None,
    }
}

fn gate() -> Step {
    Step {
        weight: None,
        hold: None,
        gate: Some(StepGate::Manual),
        mirror: None,
    }
}

pub(crate) fn canary(steps: Vec<Step>, analysis: Option<Analysis>) -> Rollout {
    Rollout {
        strategy: Strategy::Canary,
        stable: Some("v1".into()),
        canary: Some("v2".into()),
        active: None,
        preview: None,
        sticky: Sticky::default(),
        canary_match: None,
        preview_match: None,
        paused: false,
        steps,
        analysis,
        on_failure: OnFailure::Rollback,
        promote: None,
        post_promotion_window: None,
        hooks: Default::default(),
        mirror: None,
    }
}

fn blue_green(promote: Promote, post_window_secs: u64, analysis: Option<Analysis>) -> Rollout {
    Rollout {
        strategy: Strategy::BlueGreen,
        stable: None,
        canary: None,
        active: Some("blue".into()),
        preview: Some("green".into()),
        steps: Vec::new(),
        promote: Some(promote),
        post_promotion_window: (post_window_secs > 0).then(|| Dur::secs(post_window_secs)),
        hooks: Default::default(),
        mirror: None,
        ..canary(Vec::new(), analysis)
    }
}

/// The SPEC example's analysis.
fn analysis() -> Analysis {
    Analysis {
        interval: Dur::secs(1),
        window: Dur::secs(30),
        min_requests: 50,
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.01),
        confidence: 0.99,
        max_p99: Some(Dur::millis(800)),
        error_statuses: vec!["5xx".into()],
        failure_limit: 1,
        inconclusive_limit: 600,
        method: AnalysisMethod::ZTest,
        metrics: Vec::new(),
    }
}

/// A verdict with only the outcome that matters to the controller.
fn verdict(outcome: VerdictOutcome) -> Verdict {
    Verdict {
        outcome,
        rule: (outcome == VerdictOutcome::Failed).then_some(Criterion::ErrorRate),
        canary_requests: 0,
        canary_errors: 0,
        stable_requests: 0,
        stable_errors: 0,
        canary_error_rate: 0.0,
        stable_error_rate: None,
        z: None,
        z_critical: None,
        increase_exceeded: false,
        canary_p99: None,
        sequential: None,
        metrics: Vec::new(),
    }
}

fn passed() -> Verdict {
    verdict(VerdictOutcome::Passed)
}

fn weight_of(p: &Progress, spec: &Rollout) -> u32 {
    current_weight(p, spec).0
}

/// Synthetic traffic through real windows, the real verdict and the controller, one tick a
/// second (interval 1 s). Requests split by a fixed low-discrepancy sequence against the
/// current weight; errors are spread evenly so a rate is exact over any long stretch.
struct Sim {
    spec: Rollout,
    windows: RolloutWindows,
    progress: Progress,
    sec: u64,
    seq: u64,
    errors_owed: [f64; 2],
}

/// What one simulated second produced.
struct Second {
    events: Vec<Event>,
    verdict: Verdict,
}

impl Sim {
    fn new(spec: Rollout) -> Self {
        let window = spec
            .analysis
            .as_ref()
            .map_or(Duration::from_secs(30), |a| a.window.0);
        let sec = T0 / SEC;
        Sim {
            windows: RolloutWindows::new(window),
            progress: Progress::new(T0),
            spec,
            sec,
            seq: 0,
            errors_owed: [0.0; 2],
        }
    }

    fn now_ms(&self) -> u64 {
        self.sec * SEC
    }

    /// One second of `rps` requests; canary and stable fail at the given rates.
    fn second(&mut self, rps: u64, canary_error_rate: f64, stable_error_rate: f64) -> Second {
        let w = weight_of(&self.progress, &self.spec) as u64;
        for _ in 0..rps {
            self.seq += 1;
            let bucket = self.seq.wrapping_mul(6_151) % 10_000;
            let (variant, i, rate) = if bucket < w {
                (Variant::Canary, 0, canary_error_rate)
            } else {
                (Variant::Stable, 1, stable_error_rate)
            };
            self.errors_owed[i] += rate;
            let is_error = self.errors_owed[i] >= 1.0;
            if is_error {
                self.errors_owed[i] -= 1.0;
            }
            self.windows
                .record(variant, self.sec, is_error, Duration::from_millis(20));
        }
        let a = self.spec.analysis.clone().unwrap_or_default();
        let v = judge_windows(&a, &self.windows, self.sec);
        let now_ms = self.now_ms();
        let events = tick(&mut self.progress, &self.spec, Some(&v), now_ms);
        self.sec += 1;
        Second { events, verdict: v }
    }
}

#[test]
fn canary_failing_thirty_percent_rolls_back_within_two_intervals_of_min_requests() {
    for failure_limit in [1, 2] {
        let spec = canary(
            vec![weight(5, 120), weight(25, 300), weight(100, 0)],
            Some(Analysis {
                failure_limit,
                ..analysis()
            }),
        );
        let mut sim = Sim::new(spec);
        let mut reached_at = None;
        let mut rolled_back_at = None;
        for t in 0..120 {
            let s = sim.second(400, 0.30, 0.005);
            if reached_at.is_none() && s.verdict.canary_requests >= 50 {
                reached_at = Some(t);
            }
            if reached_at.is_none() {
                assert_eq!(s.verdict.outcome, VerdictOutcome::Inconclusive, "t = {t}");
            }
            if s.events
                .iter()
                .any(|e| matches!(e, Event::RolledBack { .. }))
            {
                assert_eq!(
                    s.events,
                    vec![
                        Event::WeightChanged {
                            from: Weight(500),
                            to: Weight(0)
                        },
                        Event::RolledBack {
                            reason: RollbackReason::ErrorRate
                        },
                    ]
                );
                rolled_back_at = Some(t);
                break;
            }
        }
        let (reached, rolled) = (reached_at.unwrap(), rolled_back_at.unwrap());
        assert!(
            rolled - reached < 2,
            "limit {failure_limit}: min_requests at {reached}, rollback at {rolled}"
        );
        assert_eq!(sim.progress.phase, Phase::Aborted);
        assert_eq!(sim.progress.abort_reason, Some(RollbackReason::ErrorRate));
        assert_eq!(weight_of(&sim.progress, &sim.spec), 0);
        // Aborted is final: no more traffic to canary, nothing moves.
        for _ in 0..10 {
            assert!(sim.second(400, 0.0, 0.0).events.is_empty());
        }
        assert_eq!(
            sim.windows
                .canary
                .snapshot(sim.sec - 1, Duration::from_secs(5))
                .requests,
            0
        );
    }
}

#[test]
fn healthy_canary_walks_every_step_to_completed() {
    let spec = canary(
        vec![
            weight(5, 60),
            weight(25, 120),
            weight(50, 60),
            weight(100, 0),
        ],
        Some(analysis()),
    );
    let mut sim = Sim::new(spec);
    let mut steps = Vec::new();
    let mut weights = vec![weight_of(&sim.progress, &sim.spec)];
    let mut completed = false;
    for _ in 0..1_000 {
        let now = sim.now_ms();
        let s = sim.second(400, 0.005, 0.005);
        assert_ne!(s.verdict.outcome, VerdictOutcome::Failed, "{:?}", s.verdict);
        for e in s.events {
            match e {
                Event::StepAdvanced { step, weight } => steps.push((step, weight.0, now)),
                Event::WeightChanged { to, .. } => weights.push(to.0),
                Event::Completed => completed = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if completed {
            break;
        }
    }
    assert!(completed);
    assert_eq!(sim.progress.phase, Phase::Completed);
    assert_eq!(weights, [500, 2500, 5000, 10_000]);
    assert_eq!(weight_of(&sim.progress, &sim.spec), 10_000);
    // Each hold was respected: step 1 after 60 s, step 2 ≥ 120 s later, step 3 ≥ 60 s later.
    let at: Vec<u64> = steps.iter().map(|s| s.2).collect();
    assert_eq!(
        steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(1, 2500), (2, 5000), (3, 10_000)]
    );
    assert!(at[0] >= T0 + MIN);
    assert!(at[1] >= at[0] + 2 * MIN);
    assert!(at[2] >= at[1] + MIN);
}

#[test]
fn one_error_in_sixty_against_a_clean_stable_does_not_roll_back() {
    let spec = canary(vec![weight(5, 120), weight(100, 0)], Some(analysis()));
    let windows = RolloutWindows::new(Duration::from_secs(30));
    let now_sec = T0 / SEC;
    for i in 0..60 {
        windows.record(
            Variant::Canary,
            now_sec - i % 30,
            i == 0,
            Duration::from_millis(30),
        );
    }
    for i in 0..1140 {
        windows.record(
            Variant::Stable,
            now_sec - i % 30,
            false,
            Duration::from_millis(30),
        );
    }
    let v = judge_windows(spec.analysis.as_ref().unwrap(), &windows, now_sec);
    assert_eq!(
        (v.canary_requests, v.canary_errors, v.stable_requests),
        (60, 1, 1140)
    );
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    assert!((v.z.unwrap() - 0.40).abs() < 0.005);
    let mut p = Progress::new(T0);
    assert!(tick(&mut p, &spec, Some(&v), T0 + SEC).is_empty());
    assert_eq!(p.phase, Phase::Progressing);
    assert_eq!(p.consecutive_failures, 0);
}

#[test]
fn low_traffic_stays_inconclusive_and_pauses_without_rolling_back() {
    let spec = canary(
        vec![weight(5, 10), weight(100, 0)],
        Some(Analysis {
            inconclusive_limit: 20,
            ..analysis()
        }),
    );
    let mut sim = Sim::new(spec);
    let mut paused_at = None;
    for t in 0..300 {
        // 20 rps total: about one canary request a second, every one an error.
        let s = sim.second(20, 1.0, 0.0);
        assert_eq!(s.verdict.outcome, VerdictOutcome::Inconclusive, "t = {t}");
        assert!(
            !s.events
                .iter()
                .any(|e| matches!(e, Event::RolledBack { .. }))
        );
        if s.events
            == [Event::Paused {
                reason: PauseReason::Inconclusive,
            }]
        {
            assert_eq!(paused_at, None, "paused once");
            paused_at = Some(t);
        } else {
            assert!(s.events.is_empty(), "t = {t}: {:?}", s.events);
        }
    }
    assert_eq!(paused_at, Some(19), "the 20th inconclusive verdict pauses");
    assert_eq!(sim.progress.phase, Phase::Paused);
    assert_eq!(
        weight_of(&sim.progress, &sim.spec),
        500,
        "paused keeps the weight"
    );
    // Resume clears the streak and restarts the hold.
    let now = sim.now_ms();
    let ev = resume(&mut sim.progress, &sim.spec, now).unwrap();
    assert_eq!(
        ev,
        [Event::Resumed {
            reason: PauseReason::Inconclusive
        }]
    );
    assert_eq!(
        (sim.progress.phase, sim.progress.consecutive_inconclusive),
        (Phase::Progressing, 0)
    );
    assert_eq!(sim.progress.step_started_at_ms, now);
}

#[test]
fn manual_gate_waits_for_promote() {
    let spec = canary(vec![weight(10, 0), gate(), weight(50, 0)], None);
    let mut p = Progress::new(T0);
    assert_eq!(weight_of(&p, &spec), 1000);
    // No analysis and no hold: step 0 passes at once, and the gate holds 10%.
    let ev = tick(&mut p, &spec, None, T0);
    assert_eq!(
        ev,
        [
            Event::StepAdvanced {
                step: 1,
                weight: Weight(1000)
            },
            Event::WaitingForPromotion { step: 1 }
        ]
    );
    assert_eq!(p.phase, Phase::WaitingForPromotion);
    for t in 1..100 {
        assert!(tick(&mut p, &spec, None, T0 + t * MIN).is_empty());
    }
    assert_eq!((p.step, weight_of(&p, &spec)), (1, 1000));
    // A promote token for another step is refused.
    assert_eq!(
        promote(&mut p, &spec, Some(0), T0),
        Err(ActionError::StepMismatch {
            requested: 0,
            current: 1
        })
    );
    let ev = promote(&mut p, &spec, Some(1), T0 + 100 * MIN).unwrap();
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(1000),
                to: Weight(5000)
            },
            Event::Promoted { step: 1 },
            Event::StepAdvanced {
                step: 2,
                weight: Weight(5000)
            },
        ]
    );
    assert_eq!(p.phase, Phase::Progressing);
    let err = promote(&mut p, &spec, None, T0 + 100 * MIN).unwrap_err();
    assert_eq!(err, ActionError::NotWaitingForPromotion(Phase::Progressing));
    assert_eq!(err.code(), "not_waiting_for_promotion");
    assert_eq!(
        tick(&mut p, &spec, None, T0 + 101 * MIN),
        [Event::Completed]
    );
    assert_eq!(
        weight_of(&p, &spec),
        5000,
        "completed keeps the last weight"
    );
}

#[test]
fn a_gate_at_step_zero_holds_weight_zero() {
    let spec = canary(vec![gate(), weight(100, 0)], Some(analysis()));
    let mut p = Progress::new(T0);
    assert_eq!(
        tick(&mut p, &spec, None, T0),
        [Event::WaitingForPromotion { step: 0 }]
    );
    assert_eq!(weight_of(&p, &spec), 0);
    let ev = promote(&mut p, &spec, Some(0), T0 + SEC).unwrap();
    assert_eq!(
        ev[0],
        Event::WeightChanged {
            from: Weight(0),
            to: Weight(10_000)
        }
    );
    // The last step still needs its own passed verdict.
    assert!(tick(&mut p, &spec, None, T0 + 2 * SEC).is_empty());
    assert_eq!(
        tick(&mut p, &spec, Some(&passed()), T0 + 3 * SEC),
        [Event::Completed]
    );
}

#[test]
fn document_pause_freezes_progress() {
    let mut spec = canary(vec![weight(5, 60), weight(50, 60)], Some(analysis()));
    spec.paused = true;
    let mut p = Progress::new(T0);
    assert_eq!(
        tick(&mut p, &spec, Some(&passed()), T0),
        [Event::Paused {
            reason: PauseReason::Document
        }]
    );
    for t in 1..=60 {
        assert!(tick(&mut p, &spec, Some(&passed()), T0 + t * MIN).is_empty());
    }
    assert_eq!(
        (p.phase, p.step, weight_of(&p, &spec)),
        (Phase::Paused, 0, 500)
    );
    // An operator cannot resume what the document pauses.
    assert_eq!(
        resume(&mut p, &spec, T0 + 61 * MIN),
        Err(ActionError::PausedByDocument)
    );
    // A new version without `paused` resumes on the next tick, with the hold restarted.
    spec.paused = false;
    let t1 = T0 + 62 * MIN;
    assert_eq!(
        tick(&mut p, &spec, Some(&passed()), t1),
        [Event::Resumed {
            reason: PauseReason::Document
        }]
    );
    assert_eq!(p.phase, Phase::Progressing);
    assert!(tick(&mut p, &spec, Some(&passed()), t1 + 59 * SEC).is_empty());
    let ev = tick(&mut p, &spec, Some(&passed()), t1 + 60 * SEC);
    assert_eq!(
        ev[1],
        Event::StepAdvanced {
            step: 1,
            weight: Weight(5000)
        }
    );
}

#[test]
fn operator_pause_and_resume() {
    let spec = canary(vec![weight(5, 60), weight(50, 60)], Some(analysis()));
    let mut p = Progress::new(T0);
    assert_eq!(
        resume(&mut p, &spec, T0),
        Err(ActionError::NotPaused(Phase::Progressing))
    );
    assert_eq!(
        pause(&mut p, T0 + SEC).unwrap(),
        [Event::Paused {
            reason: PauseReason::Operator
        }]
    );
    assert_eq!(pause(&mut p, T0 + SEC), Err(ActionError::AlreadyPaused));
    assert!(tick(&mut p, &spec, Some(&passed()), T0 + 10 * MIN).is_empty());
    assert_eq!(p.step, 0);
    assert_eq!(
        resume(&mut p, &spec, T0 + 10 * MIN).unwrap(),
        [Event::Resumed {
            reason: PauseReason::Operator
        }]
    );
    assert!(
        tick(&mut p, &spec, Some(&passed()), T0 + 10 * MIN + 30 * SEC).is_empty(),
        "hold restarted"
    );
    assert_eq!(tick(&mut p, &spec, Some(&passed()), T0 + 11 * MIN).len(), 2);
}

#[test]
fn a_pause_does_not_stop_a_rollback() {
    let spec = canary(vec![weight(5, 60), weight(50, 60)], Some(analysis()));
    let mut p = Progress::new(T0);
    pause(&mut p, T0).unwrap();
    let ev = tick(
        &mut p,
        &spec,
        Some(&verdict(VerdictOutcome::Failed)),
        T0 + SEC,
    );
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(500),
                to: Weight(0)
            },
            Event::RolledBack {
                reason: RollbackReason::ErrorRate
            }
        ]
    );
    assert_eq!((p.phase, p.pause), (Phase::Aborted, None));
}

#[test]
fn failure_limit_counts_consecutive_failures_only() {
    let spec = canary(
        vec![weight(5, 60), weight(50, 60)],
        Some(Analysis {
            failure_limit: 3,
            ..analysis()
        }),
    );
    let mut p = Progress::new(T0);
    let fail = verdict(VerdictOutcome::Failed);
    let seq = [
        &fail,
        &fail,
        &passed(),
        &fail,
        &fail,
        &verdict(VerdictOutcome::Inconclusive),
        &fail,
        &fail,
    ];
    for (i, v) in seq.iter().enumerate() {
        assert!(
            tick(&mut p, &spec, Some(v), T0 + i as u64 * SEC).is_empty(),
            "verdict {i}"
        );
    }
    assert_eq!(p.consecutive_failures, 2);
    let ev = tick(&mut p, &spec, Some(&fail), T0 + 10 * SEC);
    assert_eq!(
        ev.last(),
        Some(&Event::RolledBack {
            reason: RollbackReason::ErrorRate
        })
    );
}

#[test]
fn on_failure_pause_keeps_the_weight() {
    let mut spec = canary(vec![weight(5, 60), weight(50, 60)], Some(analysis()));
    spec.on_failure = OnFailure::Pause;
    let mut p = Progress::new(T0);
    let mut fail = verdict(VerdictOutcome::Failed);
    fail.rule = Some(Criterion::P99);
    let ev = tick(&mut p, &spec, Some(&fail), T0);
    assert_eq!(
        ev,
        [Event::Paused {
            reason: PauseReason::Failed {
                rule: Criterion::P99
            }
        }]
    );
    assert!(
        tick(&mut p, &spec, Some(&fail), T0 + SEC).is_empty(),
        "already paused"
    );
    assert_eq!((p.phase, weight_of(&p, &spec)), (Phase::Paused, 500));
    resume(&mut p, &spec, T0 + 2 * SEC).unwrap();
    assert_eq!(p.consecutive_failures, 0);
}

#[test]
fn abort_is_final() {
    let spec = canary(
        vec![weight(20, 60), gate(), weight(50, 60)],
        Some(analysis()),
    );
    let mut p = Progress::new(T0);
    let ev = abort(&mut p, &spec, T0 + SEC).unwrap();
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(2000),
                to: Weight(0)
            },
            Event::RolledBack {
                reason: RollbackReason::Operator
            }
        ]
    );
    assert!(tick(&mut p, &spec, Some(&passed()), T0 + 10 * MIN).is_empty());
    assert_eq!(weight_of(&p, &spec), 0);
    assert_eq!(
        pause(&mut p, T0),
        Err(ActionError::Finished(Phase::Aborted))
    );
    assert_eq!(
        resume(&mut p, &spec, T0),
        Err(ActionError::Finished(Phase::Aborted))
    );
    assert_eq!(
        promote(&mut p, &spec, None, T0),
        Err(ActionError::Finished(Phase::Aborted))
    );
    assert_eq!(
        abort(&mut p, &spec, T0),
        Err(ActionError::Finished(Phase::Aborted))
    );
    assert_eq!(p.finished_at_ms, Some(T0 + SEC));
}

#[test]
fn restart_resumes_the_same_step_with_the_hold_timer_running() {
    let spec = canary(
        vec![weight(5, 60), weight(25, 300), weight(100, 0)],
        Some(analysis()),
    );
    let mut p = Progress::new(T0);
    tick(&mut p, &spec, Some(&passed()), T0 + MIN);
    assert_eq!(p.step, 1);
    let step_start = p.step_started_at_ms;
    tick(&mut p, &spec, Some(&passed()), step_start + MIN);

    // Persist, "restart", restore.
    let json = serde_json::to_string(&p).unwrap();
    let mut restored: Progress = serde_json::from_str(&json).unwrap();
    assert_eq!(
        restored.last_outcome, None,
        "a verdict is not carried across a restart"
    );
    assert_eq!(
        (restored.step, restored.step_started_at_ms),
        (1, step_start)
    );

    // Back 2 minutes later: the 5 minute hold has 2 minutes left, it does not start over.
    assert!(
        tick(&mut restored, &spec, None, step_start + 3 * MIN).is_empty(),
        "needs a fresh verdict"
    );
    assert!(tick(&mut restored, &spec, Some(&passed()), step_start + 4 * MIN).is_empty());
    let ev = tick(&mut restored, &spec, Some(&passed()), step_start + 5 * MIN);
    assert_eq!(
        ev[1],
        Event::StepAdvanced {
            step: 2,
            weight: Weight(10_000)
        }
    );

    // Downtime counts: a restart long after the hold advances on the first passed verdict.
    let mut p = serde_json::from_str::<Progress>(&json).unwrap();
    let ev = tick(&mut p, &spec, Some(&passed()), step_start + 60 * MIN);
    assert_eq!(
        ev[1],
        Event::StepAdvanced {
            step: 2,
            weight: Weight(10_000)
        }
    );
}

#[test]
fn progress_serializes_plainly() {
    let mut p = Progress::new(T0);
    pause(&mut p, T0 + SEC).unwrap();
    let j = serde_json::to_value(&p).unwrap();
    assert_eq!(j["phase"], "paused");
    assert_eq!(
        j["pause"]["reason"],
        serde_json::json!({ "cause": "operator" })
    );
    assert_eq!(j["pause"]["resume_to"], "progressing");
    assert!(j.get("last_outcome").is_none());
    let reason = PauseReason::Failed {
        rule: Criterion::ErrorRateIncrease,
    };
    assert_eq!(
        serde_json::to_value(reason).unwrap(),
        serde_json::json!({ "cause": "failed", "rule": "error_rate_increase" })
    );
    let back: Progress = serde_json::from_value(j).unwrap();
    assert_eq!(back, p);
}

#[test]
fn blue_green_promotes_after_delay_once_analysis_passes_then_completes() {
    let a = Analysis {
        min_requests: 20,
        max_error_rate: Some(0.02),
        ..Analysis::default()
    };
    let spec = blue_green(
        Promote {
            after: Some(Dur::secs(300)),
            manual: false,
        },
        120,
        Some(a),
    );
    let mut p = Progress::new(T0);
    assert_eq!(weight_of(&p, &spec), 0);
    // Passing previews before `after`: nothing yet.
    for t in 0..300 {
        assert!(
            tick(&mut p, &spec, Some(&passed()), T0 + t * SEC).is_empty(),
            "t = {t}"
        );
    }
    // At 5 minutes an inconclusive verdict still blocks promotion.
    assert!(
        tick(
            &mut p,
            &spec,
            Some(&verdict(VerdictOutcome::Inconclusive)),
            T0 + 300 * SEC
        )
        .is_empty()
    );
    let ev = tick(&mut p, &spec, Some(&passed()), T0 + 301 * SEC);
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(0),
                to: Weight::FULL
            },
            Event::Promoted { step: 0 }
        ]
    );
    assert_eq!(
        (p.phase, p.step, p.promoted_at_ms),
        (Phase::Progressing, 1, Some(T0 + 301 * SEC))
    );
    // The post-promotion window runs two minutes.
    assert!(tick(&mut p, &spec, Some(&passed()), T0 + 420 * SEC).is_empty());
    assert_eq!(
        tick(&mut p, &spec, Some(&passed()), T0 + 421 * SEC),
        [Event::Completed]
    );
    assert_eq!((p.phase, weight_of(&p, &spec)), (Phase::Completed, 10_000));
}

#[test]
fn blue_green_swaps_back_at_once_on_a_failure_after_promotion() {
    let a = Analysis {
        min_requests: 20,
        failure_limit: 3,
        ..Analysis::default()
    };
    let spec = blue_green(
        Promote {
            after: Some(Dur::secs(60)),
            manual: false,
        },
        120,
        Some(a),
    );
    let mut p = Progress::new(T0);
    tick(&mut p, &spec, Some(&passed()), T0 + 60 * SEC);
    assert_eq!(weight_of(&p, &spec), 10_000);
    let ev = tick(
        &mut p,
        &spec,
        Some(&verdict(VerdictOutcome::Failed)),
        T0 + 70 * SEC,
    );
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight::FULL,
                to: Weight(0)
            },
            Event::SwappedBack {
                reason: RollbackReason::ErrorRate
            }
        ]
    );
    assert_eq!((p.phase, weight_of(&p, &spec)), (Phase::Aborted, 0));
    assert_eq!(
        ev[1].audit_event().map(EventKind::name),
        Some("rollout.aborted")
    );
}

#[test]
fn blue_green_before_promotion_follows_failure_limit() {
    let a = Analysis {
        min_requests: 20,
        failure_limit: 2,
        ..Analysis::default()
    };
    let spec = blue_green(
        Promote {
            after: Some(Dur::secs(60)),
            manual: false,
        },
        0,
        Some(a),
    );
    let mut p = Progress::new(T0);
    assert!(tick(&mut p, &spec, Some(&verdict(VerdictOutcome::Failed)), T0).is_empty());
    // Preview never had weight: a rollback abandons it without a weight change.
    assert_eq!(
        tick(
            &mut p,
            &spec,
            Some(&verdict(VerdictOutcome::Failed)),
            T0 + SEC
        ),
        [Event::RolledBack {
            reason: RollbackReason::ErrorRate
        }]
    );
}

#[test]
fn blue_green_manual_promotion_needs_a_passed_preview() {
    let a = Analysis {
        min_requests: 20,
        ..Analysis::default()
    };
    let spec = blue_green(
        Promote {
            after: None,
            manual: true,
        },
        0,
        Some(a),
    );
    let mut p = Progress::new(T0);
    assert_eq!(
        tick(
            &mut p,
            &spec,
            Some(&verdict(VerdictOutcome::Inconclusive)),
            T0
        ),
        [Event::WaitingForPromotion { step: 0 }]
    );
    assert_eq!(p.phase, Phase::WaitingForPromotion);
    assert_eq!(
        promote(&mut p, &spec, None, T0 + SEC),
        Err(ActionError::AnalysisNotPassed)
    );
    // Inconclusive verdicts do not pause a rollout waiting for a person.
    for t in 0..1000 {
        assert!(
            tick(
                &mut p,
                &spec,
                Some(&verdict(VerdictOutcome::Inconclusive)),
                T0 + t * SEC
            )
            .is_empty()
        );
    }
    assert!(tick(&mut p, &spec, Some(&passed()), T0 + 2000 * SEC).is_empty());
    assert_eq!(
        promote(&mut p, &spec, Some(1), T0),
        Err(ActionError::StepMismatch {
            requested: 1,
            current: 0
        })
    );
    let ev = promote(&mut p, &spec, Some(0), T0 + 2001 * SEC).unwrap();
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(0),
                to: Weight::FULL
            },
            Event::Promoted { step: 0 },
            Event::Completed
        ]
    );
    assert_eq!(weight_of(&p, &spec), 10_000);
}

#[test]
fn blue_green_without_analysis_or_promote_promotes_at_once() {
    let mut spec = blue_green(Promote::default(), 0, None);
    spec.promote = None;
    let mut p = Progress::new(T0);
    let ev = tick(&mut p, &spec, None, T0);
    assert_eq!(ev.last(), Some(&Event::Completed));
    assert_eq!(weight_of(&p, &spec), 10_000);
}

#[test]
fn carry_over_keeps_progress_only_for_the_same_rollout() {
    let spec = canary(vec![weight(5, 60), weight(50, 60)], Some(analysis()));
    let mut p = Progress::new(T0);
    tick(&mut p, &spec, Some(&passed()), T0 + MIN);
    assert_eq!(p.step, 1);
    let later = T0 + 10 * MIN;

    // Analysis, paused and on_failure may change without restarting.
    let mut tuned = spec.clone();
    tuned.analysis = Some(Analysis {
        max_error_rate: Some(0.5),
        ..analysis()
    });
    tuned.paused = true;
    tuned.on_failure = OnFailure::Pause;
    assert_eq!(carry_over(&spec, &tuned, &p, later), p);

    let fresh = Progress::new(later);
    let mut steps = spec.clone();
    steps.steps[1].hold = Some(Dur::secs(61));
    assert_eq!(carry_over(&spec, &steps, &p, later), fresh);
    let mut other_canary = spec.clone();
    other_canary.canary = Some("v3".into());
    assert_eq!(carry_over(&spec, &other_canary, &p, later), fresh);
    let mut other_stable = spec.clone();
    other_stable.stable = Some("v0".into());
    assert_eq!(carry_over(&spec, &other_stable, &p, later), fresh);

    // Aborted is final for the document that aborted it only.
    let mut aborted = p.clone();
    abort(&mut aborted, &spec, T0 + 2 * MIN).unwrap();
    assert_eq!(carry_over(&spec, &spec, &aborted, later), fresh);
    // Completed stays completed when nothing about the rollout changed.
    let mut done = p.clone();
    tick(&mut done, &spec, Some(&passed()), T0 + 3 * MIN);
    assert_eq!(done.phase, Phase::Completed);
    assert_eq!(
        carry_over(&spec, &spec, &done, later).phase,
        Phase::Completed
    );

    // Blue-green: active and preview decide; the strategy must match.
    let bg = blue_green(
        Promote {
            after: Some(Dur::secs(60)),
            manual: false,
        },
        60,
        None,
    );
    let mut q = Progress::new(T0);
    tick(&mut q, &bg, None, T0 + MIN);
    assert_eq!(q.step, 1);
    let mut bg2 = bg.clone();
    bg2.post_promotion_window = Some(Dur::secs(600));
    assert_eq!(carry_over(&bg, &bg2, &q, later), q);
    let mut bg3 = bg.clone();
    bg3.preview = Some("green-2".into());
    assert_eq!(carry_over(&bg, &bg3, &q, later), fresh);
    assert_eq!(carry_over(&bg, &spec, &q, later), fresh);
}

#[test]
fn current_weight_follows_steps_and_gates() {
    let spec = canary(
        vec![weight(0, 0), weight(5, 0), gate(), gate(), weight(30, 0)],
        None,
    );
    let mut p = Progress::new(T0);
    let mut seen = vec![weight_of(&p, &spec)];
    for step in 1..spec.steps.len() {
        p.step = step;
        seen.push(weight_of(&p, &spec));
    }
    assert_eq!(seen, [0, 500, 500, 500, 3000]);
    p.phase = Phase::Completed;
    p.step = spec.steps.len();
    assert_eq!(weight_of(&p, &spec), 3000);
}

#[test]
fn two_gates_in_a_row_need_two_promotes() {
    let spec = canary(vec![weight(5, 0), gate(), gate(), weight(30, 0)], None);
    let mut p = Progress::new(T0);
    tick(&mut p, &spec, None, T0);
    assert_eq!(p.step, 1);
    let ev = promote(&mut p, &spec, Some(1), T0).unwrap();
    assert_eq!(
        ev,
        [
            Event::Promoted { step: 1 },
            Event::StepAdvanced {
                step: 2,
                weight: Weight(500)
            },
            Event::WaitingForPromotion { step: 2 }
        ]
    );
    assert_eq!(p.phase, Phase::WaitingForPromotion);
    promote(&mut p, &spec, Some(2), T0).unwrap();
    assert_eq!(weight_of(&p, &spec), 3000);
}

#[test]
fn events_name_their_audit_records() {
    let names: BTreeMap<&str, Option<&str>> = [
        (
            "step",
            Event::StepAdvanced {
                step: 1,
                weight: Weight(1),
            }
            .audit_event()
            .map(EventKind::name),
        ),
        (
            "promoted",
            Event::Promoted { step: 1 }
                .audit_event()
                .map(EventKind::name),
        ),
        (
            "paused",
            Event::Paused {
                reason: PauseReason::Operator,
            }
            .audit_event()
            .map(EventKind::name),
        ),
        (
            "resumed",
            Event::Resumed {
                reason: PauseReason::Operator,
            }
            .audit_event()
            .map(EventKind::name),
        ),
        (
            "rolled_back",
            Event::RolledBack {
                reason: RollbackReason::P99,
            }
            .audit_event()
            .map(EventKind::name),
        ),
        (
            "completed",
            Event::Completed.audit_event().map(EventKind::name),
        ),
        (
            "weight",
            Event::WeightChanged {
                from: Weight(0),
                to: Weight(1),
            }
            .audit_event()
            .map(EventKind::name),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(names["step"], Some("rollout.step"));
    assert_eq!(names["promoted"], Some("rollout.promoted"));
    assert_eq!(names["paused"], Some("rollout.paused"));
    assert_eq!(names["resumed"], Some("rollout.resumed"));
    assert_eq!(names["rolled_back"], Some("rollout.aborted"));
    assert_eq!(names["completed"], Some("rollout.completed"));
    assert_eq!(names["weight"], None);
    assert_eq!(RollbackReason::P99.as_str(), "p99");
    assert_eq!(Phase::WaitingForPromotion.as_str(), "waiting_for_promotion");
}

// === hooks ===

fn hooked(steps: Vec<Step>, analysis: Option<Analysis>) -> Rollout {
    let mut spec = canary(steps, analysis);
    let hook = crate::config::traffic::Hook {
        url: "http://127.0.0.1:9/h".into(),
        ca_file: None,
        timeout: Dur::secs(1),
        retries: 0,
        metadata: BTreeMap::new(),
    };
    spec.hooks.pre_rollout = vec![hook.clone()];
    spec.hooks.rollout = vec![hook];
    spec
}

fn signals(start: Gate, step: Gate, promotion: Gate) -> HookSignals {
    HookSignals {
        start,
        step,
        promotion,
        rollback: false,
    }
}

#[test]
fn a_start_awaiting_hooks_serves_weight_zero_and_starts_step_zero_when_they_pass() {
    let spec = hooked(vec![weight(20, 60), weight(100, 0)], None);
    let mut p = Progress::new(T0);
    p.awaiting_start = true;
    let open = Gate::Open;
    let ev = tick_with_hooks(
        &mut p,
        &spec,
        None,
        signals(Gate::Waiting, open, open),
        T0 + MIN,
    );
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(
        (weight_of(&p, &spec), p.waiting_for),
        (0, Some(HookGate::Start))
    );
    // They pass: step 0 begins now (its hold from here), then waits for its rollout hooks.
    let at = T0 + 2 * MIN;
    let ev = tick_with_hooks(&mut p, &spec, None, signals(open, Gate::Waiting, open), at);
    assert_eq!(weight_of(&p, &spec), 2000);
    assert_eq!(p.step_started_at_ms, at);
    assert!(
        ev.contains(&Event::StepAdvanced {
            step: 0,
            weight: Weight(2000)
        }),
        "{ev:?}"
    );
    // Hold passed, hooks still running: no advance.
    tick_with_hooks(
        &mut p,
        &spec,
        None,
        signals(open, Gate::Waiting, open),
        at + 2 * MIN,
    );
    assert_eq!((p.step, p.waiting_for), (0, Some(HookGate::Step)));
    // The step's hooks passed: advance, and the new step waits for its own.
    tick_with_hooks(&mut p, &spec, None, signals(open, open, open), at + 2 * MIN);
    assert_eq!((p.step, weight_of(&p, &spec)), (1, 10000));
    assert_eq!(
        p.phase,
        Phase::Progressing,
        "the last step's hooks have not run"
    );
}

#[test]
fn a_failed_check_hook_counts_once_as_a_failed_verdict_without_analysis() {
    let spec = hooked(vec![weight(20, 0), weight(100, 0)], None);
    let mut p = Progress::new(T0);
    p.awaiting_start = true;
    let ev = tick_with_hooks(
        &mut p,
        &spec,
        None,
        signals(Gate::Failed, Gate::Open, Gate::Open),
        T0,
    );
    assert_eq!(p.phase, Phase::Aborted);
    assert_eq!(p.abort_reason, Some(RollbackReason::Hook));
    assert!(ev.contains(&Event::RolledBack {
        reason: RollbackReason::Hook
    }));
    assert_eq!(weight_of(&p, &spec), 0);
}

#[test]
fn failure_limit_counts_failed_hook_runs_with_analysis() {
    let mut a = analysis();
    a.failure_limit = 2;
    let spec = hooked(vec![weight(20, 0), weight(100, 0)], Some(a));
    let mut p = Progress::new(T0);
    let open = Gate::Open;
    tick_with_hooks(
        &mut p,
        &spec,
        Some(&passed()),
        signals(open, Gate::Failed, open),
        T0,
    );
    assert_eq!((p.phase, p.consecutive_failures), (Phase::Progressing, 1));
    // Waiting for the re-run: not a failure, not an advance.
    tick_with_hooks(
        &mut p,
        &spec,
        Some(&passed()),
        signals(open, Gate::Waiting, open),
        T0,
    );
    assert_eq!(
        (p.phase, p.step, p.consecutive_failures),
        (Phase::Progressing, 0, 0)
    );
    tick_with_hooks(
        &mut p,
        &spec,
        Some(&passed()),
        signals(open, Gate::Failed, open),
        T0,
    );
    tick_with_hooks(
        &mut p,
        &spec,
        Some(&passed()),
        signals(open, Gate::Failed, open),
        T0,
    );
    assert_eq!(p.abort_reason, Some(RollbackReason::Hook));
}

#[test]
fn confirm_promotion_gates_the_move_to_full_weight_and_a_rollback_hook_rolls_back() {
    let mut spec = canary(vec![weight(20, 0), weight(50, 0), weight(100, 0)], None);
    spec.hooks.confirm_promotion = hooked(Vec::new(), None).hooks.pre_rollout;
    let mut p = Progress::new(T0);
    let open = Gate::Open;
    tick_with_hooks(&mut p, &spec, None, signals(open, open, Gate::Waiting), T0);
    assert_eq!((p.step, weight_of(&p, &spec)), (1, 5000));
    assert_eq!(p.waiting_for, Some(HookGate::Promotion));
    tick_with_hooks(&mut p, &spec, None, signals(open, open, open), T0);
    assert_eq!(p.phase, Phase::Completed);

    let mut p = Progress::new(T0);
    spec.steps[0].hold = Some(Dur::secs(60));
    let rollback = HookSignals {
        rollback: true,
        ..HookSignals::default()
    };
    let ev = tick_with_hooks(&mut p, &spec, None, rollback, T0);
    assert_eq!(p.abort_reason, Some(RollbackReason::Hook));
    assert_eq!(
        ev[0],
        Event::WeightChanged {
            from: Weight(2000),
            to: Weight(0)
        }
    );
}

#[test]
fn promote_full_skips_the_remaining_steps_from_any_live_phase() {
    let spec = canary(
        vec![weight(10, 600), gate(), weight(50, 600), weight(100, 0)],
        Some(analysis()),
    );
    // From a step still holding, with no verdict yet: completed at the last weight.
    let mut p = Progress::new(T0);
    assert!(tick(&mut p, &spec, None, T0).is_empty());
    assert_eq!(
        promote_full(&mut p, &spec, Some(1), T0),
        Err(ActionError::StepMismatch {
            requested: 1,
            current: 0
        })
    );
    let ev = promote_full(&mut p, &spec, Some(0), T0 + SEC).unwrap();
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(1000),
                to: Weight::FULL
            },
            Event::PromotedFull { from_step: 0 },
            Event::Completed
        ]
    );
    assert_eq!(
        (p.phase, p.step, p.full_promotion_from),
        (Phase::Completed, 4, Some(0))
    );
    assert_eq!(
        Event::PromotedFull { from_step: 0 }.audit_event(),
        Some(EventKind::RolloutPromoted)
    );
    assert!(
        tick(
            &mut p,
            &spec,
            Some(&verdict(VerdictOutcome::Inconclusive)),
            T0 + MIN
        )
        .is_empty()
    );
    assert_eq!(
        promote_full(&mut p, &spec, None, T0 + MIN),
        Err(ActionError::Finished(Phase::Completed))
    );

    // From an operator's (or the analysis') pause: the operator decides.
    let mut p = Progress::new(T0);
    pause(&mut p, T0).unwrap();
    promote_full(&mut p, &spec, None, T0 + SEC).unwrap();
    assert_eq!(
        (p.phase, p.pause, weight_of(&p, &spec)),
        (Phase::Completed, None, 10_000)
    );

    // Not over the document's `paused: true`, and not once aborted.
    let mut paused = spec.clone();
    paused.paused = true;
    let mut p = Progress::new(T0);
    tick(&mut p, &paused, None, T0);
    assert_eq!(
        promote_full(&mut p, &paused, None, T0 + SEC),
        Err(ActionError::PausedByDocument)
    );
    let mut p = Progress::new(T0);
    abort(&mut p, &spec, T0).unwrap();
    assert_eq!(
        promote_full(&mut p, &spec, None, T0 + SEC),
        Err(ActionError::Finished(Phase::Aborted))
    );

    // A canary whose last step is below 100 completes there, as a walk through its steps would.
    let partial = canary(vec![weight(10, 600), weight(40, 600)], None);
    let mut p = Progress::new(T0);
    promote_full(&mut p, &partial, Some(0), T0).unwrap();
    assert_eq!((p.phase, weight_of(&p, &partial)), (Phase::Completed, 4000));
}

#[test]
fn blue_green_promote_full_swaps_without_waiting_for_analysis_or_the_window() {
    let spec = blue_green(
        Promote {
            after: None,
            manual: true,
        },
        600,
        Some(analysis()),
    );
    let mut p = Progress::new(T0);
    tick(
        &mut p,
        &spec,
        Some(&verdict(VerdictOutcome::Inconclusive)),
        T0,
    );
    assert_eq!(
        promote(&mut p, &spec, Some(0), T0),
        Err(ActionError::AnalysisNotPassed)
    );
    let ev = promote_full(&mut p, &spec, Some(0), T0 + SEC).unwrap();
    assert_eq!(
        ev,
        [
            Event::WeightChanged {
                from: Weight(0),
                to: Weight::FULL
            },
            Event::PromotedFull { from_step: 0 },
            Event::Completed
        ]
    );
    assert_eq!(
        (p.phase, p.promoted_at_ms),
        (Phase::Completed, Some(T0 + SEC))
    );
}
