use super::*;
use crate::config::traffic::Analysis;
use crate::rollout::controller::tests::{canary, weight};

const T0: u64 = 1_700_000_000_000;

fn spec(first_weight: u32) -> Rollout {
    canary(
        vec![weight(first_weight, 0), weight(100, 0)],
        Some(Analysis::default()),
    )
}

fn aborted() -> Progress {
    let mut p = Progress::new(T0);
    p.step = 1;
    p.phase = Phase::Aborted;
    p.abort_reason = Some(RollbackReason::ErrorRate);
    p.finished_at_ms = Some(T0 + 5_000);
    p
}

#[test]
fn an_aborted_rollout_stays_aborted_under_an_unchanged_definition() {
    let old = aborted();
    assert_eq!(carry(&spec(10), &spec(10), &old, T0 + 60_000), old);
    // Toggling `paused` is not a new definition either.
    let mut paused = spec(10);
    paused.paused = true;
    assert_eq!(carry(&spec(10), &paused, &old, T0 + 60_000), old);
}

#[test]
fn an_aborted_rollout_restarts_when_its_definition_changes() {
    let old = aborted();
    // Steps changed: SPEC §6 restarts at step 0 anyway.
    assert_eq!(
        carry(&spec(10), &spec(5), &old, T0 + 60_000),
        Progress::new(T0 + 60_000)
    );
    // Only the thresholds changed: progress would carry, but aborted restarts.
    let mut stricter = spec(10);
    if let Some(a) = stricter.analysis.as_mut() {
        a.max_error_rate = Some(0.01);
    }
    assert_eq!(
        carry(&spec(10), &stricter, &old, T0 + 60_000),
        Progress::new(T0 + 60_000)
    );
}

#[test]
fn live_progress_carries_over_when_stable_canary_and_steps_are_unchanged() {
    let mut live = Progress::new(T0);
    live.step = 1;
    let mut other = spec(10);
    if let Some(a) = other.analysis.as_mut() {
        a.min_requests = 10;
    }
    assert_eq!(carry(&spec(10), &other, &live, T0 + 1), live);
    assert_eq!(
        carry(&spec(10), &spec(20), &live, T0 + 1),
        Progress::new(T0 + 1)
    );
}

#[test]
fn persisted_keys_ignore_streaks() {
    let mut p = Progress::new(T0);
    let k = persist::Key::of(&p);
    p.consecutive_inconclusive = 9;
    p.consecutive_failures = 1;
    assert_eq!(persist::Key::of(&p), k);
    p.step = 1;
    assert_ne!(persist::Key::of(&p), k);
}

#[test]
fn the_saved_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let mut saved = persist::Saved::default();
    saved.rollouts.insert(
        "web".into(),
        persist::Entry {
            document: Some(DocRef {
                version: 3,
                digest: "sha256:00".into(),
            }),
            spec: spec(5),
            progress: aborted(),
        },
    );
    saved.promotions_used.insert("[\"bob\",\"j\"]".into(), 99);
    state.write_json(persist::FILE, &saved).unwrap();
    let back = persist::load(&state);
    assert_eq!(back.rollouts["web"].spec, spec(5));
    assert_eq!(back.rollouts["web"].progress, aborted());
    assert_eq!(back.promotions_used["[\"bob\",\"j\"]"], 99);

    std::fs::write(dir.path().join(persist::FILE), b"{ not json").unwrap();
    assert!(persist::load(&state).rollouts.is_empty());
}
