use std::time::Duration;

use super::*;
use crate::config::Dur;

fn analysis() -> Analysis {
    Analysis {
        interval: Dur::secs(1),
        window: Dur::secs(30),
        min_requests: 50,
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.01),
        confidence: 0.99,
        ..Analysis::default()
    }
}

fn tally(requests: u64, errors: u64) -> Tally {
    Tally {
        requests,
        errors,
        slow: 0,
    }
}

#[test]
fn one_trial_is_fair_at_the_null_and_unfavourable_below_it() {
    for odds in [&ORIGIN_ODDS[..], &RECENT_ODDS[..], &[TRIGGER_ODDS][..]] {
        for p0 in [0.0005, 0.01, 0.05, 0.3, 0.9] {
            let m = |p: f64| {
                p * ln_upper(odds, p0, 1, 1).exp() + (1.0 - p) * ln_upper(odds, p0, 1, 0).exp()
            };
            assert!((m(p0) - 1.0).abs() < 1e-12, "E at the null, p0 {p0}");
            assert!(m(p0 * 0.5) < 1.0, "E below the null, p0 {p0}");
            let l = |p: f64| {
                p * ln_lower(&STABLE_ODDS, p0, 1, 1).exp()
                    + (1.0 - p) * ln_lower(&STABLE_ODDS, p0, 1, 0).exp()
            };
            assert!((l(p0) - 1.0).abs() < 1e-12, "lower E at the null, p0 {p0}");
            assert!(
                l((p0 * 1.5).min(1.0)) < 1.0,
                "lower E above the null, p0 {p0}"
            );
        }
    }
}

#[test]
fn the_weighted_recent_mixture_is_fair_at_the_null_and_monotone() {
    assert!((RECENT_WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    for p0 in [0.0005, 0.01, 0.05, 0.3, 0.9] {
        let m = |p: f64| p * ln_recent(p0, 1, 1).exp() + (1.0 - p) * ln_recent(p0, 1, 0).exp();
        assert!((m(p0) - 1.0).abs() < 1e-12, "E at the null, p0 {p0}");
        assert!(m(p0 * 0.5) < 1.0, "E below the null, p0 {p0}");
    }
    let mut prev = f64::INFINITY;
    for i in 1..200 {
        let up = ln_recent(i as f64 / 200.0, 30, 4);
        assert!(up <= prev, "not decreasing in p0");
        prev = up;
    }
}

#[test]
fn statistics_are_monotone_in_the_null_rate() {
    let mut prev = f64::INFINITY;
    for i in 1..200 {
        let p0 = i as f64 / 200.0;
        let up = ln_upper(&ORIGIN_ODDS, p0, 300, 12);
        assert!(up <= prev, "upper not decreasing at {p0}");
        prev = up;
    }
    let mut prev = f64::NEG_INFINITY;
    for i in 1..200 {
        let p0 = i as f64 / 200.0;
        let low = ln_lower(&STABLE_ODDS, p0, 300, 12);
        assert!(low >= prev, "lower not increasing at {p0}");
        prev = low;
    }
}

#[test]
fn upper_bounds_cover_and_tighten_with_data() {
    let l = 8.0;
    assert_eq!(upper_bound(&STABLE_ODDS, 0, 0, l), 1.0);
    assert_eq!(upper_bound(&STABLE_ODDS, 5, 5, l), 1.0);
    let small = upper_bound(&STABLE_ODDS, 1_000, 10, l);
    let large = upper_bound(&STABLE_ODDS, 100_000, 1_000, l);
    assert!(small > 0.01 && small < 0.04, "{small}");
    assert!(large > 0.01 && large < 0.0115, "{large}");
    assert!(upper_bound(&STABLE_ODDS, 1_000, 10, l + 4.0) > small);
    assert!(upper_bound(&STABLE_ODDS, 9_000, 0, l) < 0.002);
    // At the bound the evidence is exactly the threshold.
    assert!((ln_lower(&STABLE_ODDS, small, 1_000, 10) - l).abs() < 1e-6);
}

/// Feeds `secs` seconds of traffic in 100 ms batches; returns the first failed verdict's
/// time (ms) and the verdict.
fn feed(
    seq: &mut Sequential,
    from_ms: u64,
    secs: u64,
    canary: &mut Tally,
    stable: &mut Tally,
    mut batch: impl FnMut(u64) -> (Tally, Tally),
) -> Option<(u64, Verdict)> {
    for i in 1..=secs * 10 {
        let now = from_ms + i * 100;
        let (c, s) = batch(now);
        canary.add(c);
        stable.add(s);
        if let Some(v) = seq.observe(now, *canary, *stable, false)
            && v.outcome == VerdictOutcome::Failed
        {
            return Some((now, v));
        }
    }
    None
}

#[test]
fn twenty_of_twenty_failing_rolls_back_without_waiting_for_min_requests() {
    // The reviewer's case: ~1 canary request a second, every one failing; stable clean.
    let mut seq = Sequential::new(&analysis(), 0);
    let (mut c, mut s) = (Tally::default(), Tally::default());
    let failed = feed(&mut seq, 0, 60, &mut c, &mut s, |now| {
        let canary = if now % 1000 == 0 {
            tally(1, 1)
        } else {
            Tally::default()
        };
        (canary, tally(1, 0))
    });
    let (at, v) = failed.expect("rolled back");
    assert!(v.canary_requests < 20, "{v:?}");
    assert!(at <= 20_000, "after {at} ms");
    assert_eq!(v.canary_errors, v.canary_requests);
    let e = v.sequential.expect("numbers");
    assert!(e.log10_e >= e.log10_threshold);
}

#[test]
fn three_errors_in_fifty_five_at_a_one_percent_baseline_is_not_a_failure() {
    // The reviewer's false rollbacks: 3/55 canary against a 1% stable, max_error_rate 5%.
    let mut seq = Sequential::new(&analysis(), 0);
    let v = seq
        .observe(1_000, tally(55, 3), tally(1_000, 10), true)
        .expect("a report");
    assert_eq!(v.outcome, VerdictOutcome::Passed, "{v:?}");
    let e = v.sequential.expect("numbers");
    assert!(e.log10_e < 0.0, "{e:?}");
    let null = e.null_rate.expect("a null rate");
    assert!(null > 0.02 && null <= 0.05, "{e:?}");
}

#[test]
fn spec_worked_example_passes() {
    let mut seq = Sequential::new(
        &Analysis {
            min_requests: 50,
            max_error_rate: None,
            max_error_rate_increase: Some(0.01),
            ..analysis()
        },
        0,
    );
    let v = seq
        .observe(30_000, tally(60, 1), tally(1_140, 0), true)
        .expect("a report");
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    assert_eq!((v.canary_requests, v.canary_errors), (60, 1));
    assert_eq!((v.stable_requests, v.stable_errors), (1_140, 0));
    assert_eq!(v.z, None);
    // 18 in 60 against the same clean stable does fail.
    let v = seq
        .observe(30_100, tally(78, 18), tally(1_140, 0), true)
        .expect("a report");
    assert_eq!(
        (v.outcome, v.rule),
        (VerdictOutcome::Failed, Some(Criterion::ErrorRateIncrease))
    );
}

#[test]
fn absolute_limit_is_judged_with_confidence() {
    let a = Analysis {
        max_error_rate: Some(0.05),
        max_error_rate_increase: None,
        ..analysis()
    };
    // 4/60 (6.7%) is above 5% as a point estimate, far from proven.
    let mut seq = Sequential::new(&a, 0);
    let v = seq
        .observe(10_000, tally(60, 4), tally(0, 0), true)
        .unwrap();
    assert_eq!(v.outcome, VerdictOutcome::Passed, "{v:?}");
    // 30% over 200 requests is proven.
    let v = seq
        .observe(20_000, tally(260, 64), tally(0, 0), true)
        .unwrap();
    assert_eq!(
        (v.outcome, v.rule),
        (VerdictOutcome::Failed, Some(Criterion::ErrorRate))
    );
    assert_eq!(v.sequential.unwrap().null_rate, Some(0.05));
}

#[test]
fn too_few_canary_requests_is_inconclusive_but_not_immune() {
    let mut seq = Sequential::new(&analysis(), 0);
    let v = seq
        .observe(1_000, tally(10, 0), tally(90, 1), true)
        .unwrap();
    assert_eq!(v.outcome, VerdictOutcome::Inconclusive);
    let v = seq
        .observe(2_000, tally(20, 10), tally(180, 1), true)
        .unwrap();
    assert_eq!(v.outcome, VerdictOutcome::Failed, "{v:?}");
}

#[test]
fn latency_is_judged_as_the_share_of_slow_requests() {
    let a = Analysis {
        max_error_rate: None,
        max_error_rate_increase: None,
        max_p99: Some(Dur(Duration::from_millis(800))),
        ..analysis()
    };
    let slow = |n: u64, s: u64| Tally {
        requests: n,
        errors: 0,
        slow: s,
    };
    let mut seq = Sequential::new(&a, 0);
    // 2 slow in 1000 (p99 well under the limit).
    let v = seq
        .observe(1_000, slow(1_000, 2), Tally::default(), true)
        .unwrap();
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    // Then 10% slow for a while.
    let mut failed = None;
    for i in 1..=100u64 {
        if let Some(v) = seq.observe(
            1_000 + i * 100,
            slow(1_000 + i * 10, 2 + i),
            Tally::default(),
            false,
        ) && v.outcome == VerdictOutcome::Failed
        {
            failed = Some(v);
            break;
        }
    }
    let v = failed.expect("a p99 failure");
    assert_eq!(v.rule, Some(Criterion::P99));
}

#[test]
fn reports_each_interval_and_a_failure_at_once_then_stays_failed() {
    let mut seq = Sequential::new(&analysis(), 0);
    let mut reports = 0;
    let (mut c, mut s) = (Tally::default(), Tally::default());
    for i in 1..=50u64 {
        c.add(tally(3, 0));
        s.add(tally(30, 0));
        if seq.observe(i * 100, c, s, false).is_some() {
            reports += 1;
        }
    }
    assert_eq!(reports, 5, "one report a second");
    // Every canary request fails from now on: the failure is reported at the evaluation
    // that proves it, between two interval reports.
    let mut at = None;
    for i in 51..=58u64 {
        c.add(tally(3, 3));
        s.add(tally(30, 0));
        if let Some(v) = seq.observe(i * 100, c, s, false)
            && v.outcome == VerdictOutcome::Failed
        {
            at = Some(i);
            break;
        }
    }
    assert!(at.is_some_and(|i| i < 55), "{at:?}");
    assert!(seq.has_failed());
    c.add(tally(100, 0));
    let v = seq.observe(6_000, c, s, false).expect("and stays reported");
    assert_eq!(v.outcome, VerdictOutcome::Failed);
}

#[test]
fn a_new_step_restarts_the_counts_not_the_test() {
    let mut seq = Sequential::new(&analysis(), 0);
    seq.observe(10_000, tally(500, 5), tally(4_500, 45), true);
    seq.step_started();
    let v = seq
        .observe(11_000, tally(520, 5), tally(4_680, 47), true)
        .unwrap();
    assert_eq!((v.canary_requests, v.canary_errors), (20, 0));
    assert_eq!((v.stable_requests, v.stable_errors), (180, 2));
    assert_eq!(v.outcome, VerdictOutcome::Inconclusive);
}
