use std::time::Duration;

use super::*;
use crate::config::Dur;

fn stats(requests: u64, errors: u64) -> WindowStats {
    WindowStats {
        requests,
        errors,
        p99: None,
    }
}

fn analysis() -> Analysis {
    Analysis {
        min_requests: 50,
        ..Analysis::default()
    }
}

#[test]
fn worked_example_one_in_sixty_passes_the_increase_test() {
    let a = Analysis {
        max_error_rate_increase: Some(0.01),
        ..analysis()
    };
    let v = judge(&a, &stats(60, 1), &stats(1140, 0));
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    assert_eq!(v.rule, None);
    let z = v.z.unwrap();
    assert!((z - 0.40).abs() < 0.005, "z = {z}");
    assert!((v.z_critical.unwrap() - 2.326).abs() < 0.001);
    assert!(!v.increase_exceeded);
    assert!((v.canary_error_rate - 1.0 / 60.0).abs() < 1e-12);
    assert_eq!(v.stable_error_rate, Some(0.0));
}

#[test]
fn worked_example_eighteen_in_sixty_fails_max_error_rate() {
    let a = Analysis {
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.01),
        ..analysis()
    };
    let v = judge(&a, &stats(60, 18), &stats(1140, 0));
    assert_eq!(v.outcome, VerdictOutcome::Failed);
    assert_eq!(
        v.rule,
        Some(Criterion::ErrorRate),
        "the absolute rule is checked first"
    );
    // The increase test fails too, and says so.
    assert!(v.increase_exceeded);
    assert!(v.z.unwrap() > 2.326);
}

#[test]
fn significant_increase_fails_without_an_absolute_threshold() {
    // 6 in 200 (3%) against 10 in 10,000 (0.1%), δ = 0.5%: z ≈ 1.99, which passes at 0.99
    // (2.326) and fails at 0.95 (1.645).
    let mut a = Analysis {
        max_error_rate_increase: Some(0.005),
        ..analysis()
    };
    let v = judge(&a, &stats(200, 6), &stats(10_000, 10));
    let z = v.z.unwrap();
    assert!((z - 1.989).abs() < 0.001, "z = {z}");
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    a.confidence = 0.95;
    let v = judge(&a, &stats(200, 6), &stats(10_000, 10));
    assert_eq!(
        (v.outcome, v.rule),
        (VerdictOutcome::Failed, Some(Criterion::ErrorRateIncrease))
    );
}

#[test]
fn too_few_canary_requests_is_inconclusive_whatever_the_errors() {
    let a = Analysis {
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.0),
        ..analysis()
    };
    let v = judge(&a, &stats(49, 49), &stats(1000, 0));
    assert_eq!(v.outcome, VerdictOutcome::Inconclusive);
    assert_eq!(v.rule, None);
    assert_eq!(v.canary_requests, 49);
    assert!(v.increase_exceeded, "the numbers are still reported");
}

#[test]
fn zero_denominator_with_positive_numerator_exceeds() {
    // Every canary request failed, stable clean: both variances are zero.
    let a = Analysis {
        max_error_rate_increase: Some(0.01),
        ..analysis()
    };
    let v = judge(&a, &stats(50, 50), &stats(1000, 0));
    assert_eq!(v.z, Some(f64::INFINITY));
    assert_eq!(
        (v.outcome, v.rule),
        (VerdictOutcome::Failed, Some(Criterion::ErrorRateIncrease))
    );
    // Both clean: numerator −δ, zero denominator: not exceeding.
    let v = judge(&a, &stats(50, 0), &stats(1000, 0));
    assert_eq!(v.z, Some(f64::NEG_INFINITY));
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    // δ = 0 and both clean: 0/0 counts as not exceeding.
    assert_eq!(z_score(0, 50, 0, 1000, 0.0), Some(0.0));
}

#[test]
fn no_stable_traffic_skips_only_the_increase_test() {
    let a = Analysis {
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.0),
        ..analysis()
    };
    let v = judge(&a, &stats(100, 4), &stats(0, 0));
    assert_eq!(v.z, None);
    assert_eq!(v.stable_error_rate, None);
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    let v = judge(&a, &stats(100, 6), &stats(0, 0));
    assert_eq!(v.rule, Some(Criterion::ErrorRate));
}

#[test]
fn p99_above_max_fails() {
    let a = Analysis {
        max_p99: Some(Dur::millis(800)),
        ..analysis()
    };
    let slow = WindowStats {
        requests: 100,
        errors: 0,
        p99: Some(Duration::from_millis(900)),
    };
    let v = judge(&a, &slow, &stats(100, 0));
    assert_eq!(
        (v.outcome, v.rule),
        (VerdictOutcome::Failed, Some(Criterion::P99))
    );
    let ok = WindowStats {
        p99: Some(Duration::from_millis(800)),
        ..slow
    };
    assert_eq!(
        judge(&a, &ok, &stats(100, 0)).outcome,
        VerdictOutcome::Passed,
        "equal is not above"
    );
}

#[test]
fn nothing_configured_passes_on_volume_alone() {
    let v = judge(&analysis(), &stats(50, 50), &stats(0, 0));
    assert_eq!(v.outcome, VerdictOutcome::Passed);
    assert_eq!(v.z_critical, None);
}

#[test]
fn serializes_for_status_and_audit() {
    let a = Analysis {
        max_error_rate_increase: Some(0.01),
        max_p99: Some(Dur::millis(800)),
        ..analysis()
    };
    let c = WindowStats {
        requests: 60,
        errors: 1,
        p99: Some(Duration::from_micros(12_500)),
    };
    let j = serde_json::to_value(judge(&a, &c, &stats(1140, 0))).unwrap();
    assert_eq!(j["outcome"], "passed");
    assert_eq!(j["rule"], serde_json::Value::Null);
    assert_eq!(j["canary_requests"], 60);
    assert_eq!(j["canary_p99_ms"], 12.5);
    assert!(j["z"].as_f64().unwrap() > 0.39);
}
