//! The verdict of `analysis.method: sequential`: an always-valid test, evaluated continuously,
//! whose chance of failing a healthy canary **over the whole rollout** is at most
//! `1 − confidence`, however long it runs and however often it looks.
//!
//! ## What is tested
//!
//! The canary is *healthy* (the null hypothesis) when its error rate `p_c` is at most
//! `min(max_error_rate, p_s + δ)` — `p_s` the stable rate, `δ` = `max_error_rate_increase` —
//! and, with `max_p99`, when at most 1% of its requests are slower than `max_p99` (that is
//! what "p99 ≤ max_p99" means). Both absolute limits are judged with the same confidence as the
//! increase, never on a point estimate. A rollback says "the canary is not healthy" at level
//! `α = 1 − confidence`.
//!
//! ## How (the README cites the references)
//!
//! 1. **One-sided mixture likelihood ratios** (Robbins' method of mixtures; the mSPRT of
//!    Johari et al. with a discrete mixing distribution). For a Bernoulli rate and the null
//!    `p ≤ p0`, each alternative is an odds ratio `R > 1` over `p0`
//!    (`q = R p0 / (1 − p0 + R p0)`); its likelihood ratio after `n` trials with `x` successes
//!    is `R^x (1 + (R − 1) p0)^(−n)`. The average over a fixed set of `R` ([`ORIGIN_ODDS`],
//!    [`RECENT_ODDS`] weighted by [`RECENT_WEIGHTS`]) is a nonnegative supermartingale
//!    with initial value 1 whenever every trial's rate is at most `p0`, so by **Ville's
//!    inequality** it ever reaches `1/α` with probability at most `α` — whatever the number
//!    of looks. It is also *decreasing in p0*,
//!    which (2) relies on. The mirror image (odds ratios `1/R`) tests `p ≥ p0` and gives
//!    time-uniform upper confidence bounds by inversion (a confidence sequence, as in Howard
//!    et al.).
//! 2. **Stable as a confidence sequence.** `p_s` is unknown; its upper confidence bound `U_s`
//!    (level `α/20`, [`STABLE_SHARE`]) replaces it: the canary is tested against
//!    `p0 = min(max_error_rate, U_s + δ)`. If `U_s ≥ p_s` (probability ≥ 1 − α/20 over all
//!    time) then `p0 ≥ p_c` under the null, and by (1)'s monotonicity the canary's statistic
//!    is below its value at the true rate, a supermartingale. The canary side gets `19α/20`.
//! 3. **Sudden failures without dilution** (an e-detector, as Shin, Ramdas and Rinaldo): a
//!    test started when the rollout started is slow to see a failure that begins after a long
//!    healthy history. So besides that *origin* test (prior weight [`ORIGIN_WEIGHT`]), a new
//!    test starts at every evaluation whose last batch of canary traffic looks bad — the
//!    decision uses only the past, so the `m`-th such start may carry prior weight
//!    [`SUSPICION_WEIGHT`]`·½` for `m = 1` and `·½·h(m − 1)` after, with
//!    `h(m) = m^(−1.2)/ζ(1.2)`, `Σ h = 1` — and one at every evaluation (weight
//!    [`TICK_WEIGHT`]`·h(k)`, kept [`TICK_KEEP`] evaluations) for the first batch of a
//!    failure, which a suspicion-started test cannot include. The weighted sum of all the
//!    tests (plus the weight not yet spent) is a single supermartingale starting at 1, so the
//!    rollback threshold `1/α` bounds the false-rollback probability over the entire rollout.
//!    Dropping decayed tests only lowers the sum, so pruning is safe. Starts numbered by
//!    *suspicious batches* rather than by time keep the penalty `ln(1/h(m))` small on a
//!    healthy canary: after 30 clean seconds `m` is 0–20, not 600.
//! 4. The stable reference for a recent test is the stable traffic since the last
//!    checkpoint at least `window` old (checkpoints every `window/2`, weights as in (3)), so a
//!    slow drift of the stable rate over hours is followed; older tests compare with all of
//!    stable since the origin.
//!
//! ## What the guarantee assumes
//!
//! Requests are independent given the past, and the stable error rate is the same within the
//! segment each test compares with. A failure that hits stable and canary at the same moment
//! (a shared dependency) can roll the canary back before the stable reference shows it; with
//! `max_error_rate` set it fails the absolute limit anyway, as with any method.
//!
//! Everything here is pure: counts and an injected clock in, a decision out.

use serde::Serialize;

use super::analysis::{Criterion, Verdict, VerdictOutcome};
use super::tally::{Kind, Tally};
use crate::config::traffic::Analysis;

/// Odds ratios of the origin test's alternatives: from a 20% relative increase (slow drifts
/// need the small ones) to ~1000× (20 failures in 20 requests).
pub const ORIGIN_ODDS: [f64; 15] = [
    1.2, 1.92, 3.07, 4.92, 7.86, 12.6, 20.1, 32.2, 51.5, 82.5, 132.0, 211.0, 338.0, 540.0, 865.0,
];

/// Odds ratios of the tests started on a suspicious batch: they are there for sudden, large
/// failures, so fewer and larger alternatives.
pub const RECENT_ODDS: [f64; 3] = [12.0, 40.0, 250.0];

/// The prior weights of [`RECENT_ODDS`] (they sum to 1). Not uniform: a sudden failure is
/// slowest to prove when its first second happens to fail far less than its rate (30%
/// failing showing 4 errors in 30 requests), and that evidence is best weighed at the
/// smallest odds ratio; the largest only speeds up a canary failing (almost) every request,
/// which proves itself in a few requests anyway. Against `1/3` each, this takes ~0.6 nats
/// off the slowest rollbacks for ~1.2 nats (less than one failing request at odds 250) on
/// the all-failing ones.
pub const RECENT_WEIGHTS: [f64; 3] = [0.6, 0.3, 0.1];

/// Odds ratios below 1 (as `1/R`) for the stable side's upper confidence bound.
pub const STABLE_ODDS: [f64; 14] = [
    1.1, 1.16, 1.25, 1.35, 1.5, 1.7, 2.0, 2.5, 3.2, 4.5, 7.0, 12.0, 25.0, 80.0,
];

/// ζ(1.2), rounded up so that the start weights `m^(−1.2)/ζ` sum to slightly less than 1.
const ZETA_1_2: f64 = 5.591_583;

/// A batch starts a new test when its own log likelihood ratio at this odds ratio exceeds
/// [`TRIGGER_LN`].
const TRIGGER_ODDS: f64 = 10.0;
/// See [`TRIGGER_ODDS`].
const TRIGGER_LN: f64 = 1.0;

/// Tests started on suspicious batches kept at most; beyond, the weakest is dropped
/// (dropping a test is always safe: the sum only gets smaller).
const MAX_STARTS: usize = 48;
/// Tests started at every evaluation are kept this many evaluations (3 s at the runner's
/// 50 ms): they are there for the first batch of a sudden failure, which the
/// suspicion-started tests cannot include.
const TICK_KEEP: usize = 60;

/// Prior weights of the three families of tests (they sum to 1): the origin test, the tests
/// started on suspicious batches (`·h(m)`), the tests started at every evaluation (`·h(k)`).
const ORIGIN_WEIGHT: f64 = 0.15;
/// See [`ORIGIN_WEIGHT`].
const SUSPICION_WEIGHT: f64 = 0.7;
/// See [`ORIGIN_WEIGHT`].
const TICK_WEIGHT: f64 = 0.15;
/// A test whose weighted log statistic falls below this can never matter again in practice;
/// it is dropped.
const DROP_LN: f64 = -60.0;

/// The share of α given to the stable side's confidence bound when it is used.
const STABLE_SHARE: f64 = 0.05;

/// The latency criterion: "p99 ≤ max_p99" is "at most 1% of requests slower than max_p99".
const SLOW_NULL: f64 = 0.01;

/// The always-valid test of one rollout (see the module documentation).
#[derive(Debug, Clone)]
pub struct Sequential {
    /// `ln(1/α_c)`: the canary side's rollback threshold.
    ln_threshold: f64,
    /// `ln(1/α_s)`: the stable bound's base threshold (segment weights add to it).
    ln_stable_threshold: f64,
    max_error_rate: Option<f64>,
    increase: Option<f64>,
    min_requests: u64,
    interval_ms: u64,
    window_ms: u64,
    errors: Option<CriterionTests>,
    slow: Option<CriterionTests>,
    stable: StableRef,
    origin_ms: u64,
    latest_canary: Tally,
    latest_stable: Tally,
    /// The counts when the current step began (for `min_requests` and status).
    step_canary: Tally,
    step_stable: Tally,
    /// When the last verdict was reported (`None`: never).
    reported_ms: Option<u64>,
    /// Set at the first crossing; a rejection at level α is final.
    failed: Option<Failure>,
}

/// The numbers of a sequential verdict, for status and audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// log10 of the combined e-value (the weighted sum of every running test).
    pub log10_e: f64,
    /// log10 of the threshold `1/α_c`; the canary fails when `log10_e` reaches it.
    pub log10_threshold: f64,
    /// The error rate the canary is tested against, `min(max_error_rate, stable_upper + δ)`
    /// (recent stable segment); `None` without an error criterion or stable evidence yet.
    pub null_rate: Option<f64>,
    /// The stable error rate's upper confidence bound over the recent segment.
    pub stable_upper: Option<f64>,
    /// Age in seconds of the test that carries the most evidence (the origin test's age
    /// when it is that one).
    pub strongest_age_secs: f64,
    /// Recent tests running besides the origin test.
    pub running_tests: usize,
}

/// Why the test failed, latched at the crossing.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    rule: Criterion,
    evidence: Evidence,
}

/// One criterion's tests: the origin test and the recent ones.
#[derive(Debug, Clone)]
struct CriterionTests {
    kind: Kind,
    /// `ln` of this criterion's share of the canary's α.
    ln_share: f64,
    /// Suspicious batches so far (the index `m` of the next start is this + 1).
    triggers: u64,
    /// Evaluations so far (the index `k` of the next tick start is this + 1).
    ticks: u64,
    starts: Vec<Start>,
}

/// A test started at `at_ms` on the canary counts after `base`.
#[derive(Debug, Clone)]
struct Start {
    at_ms: u64,
    base: Tally,
    ln_weight: f64,
    family: Family,
}

/// Which family a test belongs to (module documentation, point 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Origin,
    Suspicion,
    Tick,
}

/// The stable side: checkpoints every `window/2` from the origin.
#[derive(Debug, Clone, Default)]
struct StableRef {
    /// `(index m ≥ 1, taken at, stable counts then)`, the last few.
    checkpoints: Vec<(u64, u64, Tally)>,
    next_index: u64,
}

/// A stable segment a canary test is compared with.
#[derive(Debug, Clone, Copy)]
struct Segment {
    from_ms: u64,
    counts: Tally,
    ln_weight: f64,
}

// === impl Sequential ===

impl Sequential {
    /// A test starting at `now_ms` (any monotonic millisecond clock; the same one for every
    /// later call) under `analysis`'s thresholds.
    pub fn new(analysis: &Analysis, now_ms: u64) -> Sequential {
        let alpha = (1.0 - analysis.confidence).clamp(f64::MIN_POSITIVE, 1.0);
        let uses_stable = analysis.max_error_rate_increase.is_some();
        let (alpha_c, alpha_s) = if uses_stable {
            (alpha * (1.0 - STABLE_SHARE), alpha * STABLE_SHARE)
        } else {
            (alpha, alpha)
        };
        let judges_errors =
            analysis.max_error_rate.is_some() || analysis.max_error_rate_increase.is_some();
        let judges_slow = analysis.max_p99.is_some();
        let criteria = u32::from(judges_errors) + u32::from(judges_slow);
        let ln_share = -f64::from(criteria.max(1)).ln();
        let criterion = |kind| CriterionTests {
            kind,
            ln_share,
            triggers: 0,
            ticks: 0,
            starts: vec![Start {
                at_ms: now_ms,
                base: Tally::default(),
                ln_weight: ORIGIN_WEIGHT.ln(),
                family: Family::Origin,
            }],
        };
        Sequential {
            ln_threshold: -alpha_c.ln(),
            ln_stable_threshold: -alpha_s.ln(),
            max_error_rate: analysis.max_error_rate,
            increase: analysis.max_error_rate_increase,
            min_requests: analysis.min_requests,
            interval_ms: millis(analysis.interval.0).max(1),
            window_ms: millis(analysis.window.0).max(1),
            errors: judges_errors.then(|| criterion(Kind::Errors)),
            slow: judges_slow.then(|| criterion(Kind::Slow)),
            stable: StableRef {
                checkpoints: Vec::new(),
                next_index: 1,
            },
            origin_ms: now_ms,
            latest_canary: Tally::default(),
            latest_stable: Tally::default(),
            step_canary: Tally::default(),
            step_stable: Tally::default(),
            reported_ms: None,
            failed: None,
        }
    }

    /// Counts from now on belong to a new step: `min_requests` and the reported counts start
    /// again. The test itself goes on (restarting it per step would spend α once per step).
    pub fn step_started(&mut self) {
        self.step_canary = self.latest_canary;
        self.step_stable = self.latest_stable;
    }

    /// Whether the test has rejected (final).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Takes in the cumulative counts at `now_ms` and evaluates. Returns a verdict when the
    /// controller should see one: at once when the test fails (and on every call after),
    /// otherwise when `interval` has passed since the last one, or always with `report`.
    pub fn observe(
        &mut self,
        now_ms: u64,
        canary: Tally,
        stable: Tally,
        report: bool,
    ) -> Option<Verdict> {
        let canary = canary.max(self.latest_canary);
        let stable = stable.max(self.latest_stable);
        let batch = canary.since(self.latest_canary);
        self.latest_canary = canary;
        self.latest_stable = stable;
        self.stable
            .checkpoint(now_ms, self.origin_ms, self.window_ms, stable);

        let due = report
            || self
                .reported_ms
                .is_none_or(|at| now_ms >= at.saturating_add(self.interval_ms));
        if self.failed.is_none() {
            // The full numbers (stable bounds) only when reporting or when the cheap upper
            // bound of the statistic says a rejection is possible.
            let mut judged = self.evaluate(now_ms, due);
            if judged.0 >= self.ln_threshold && !due {
                judged = self.evaluate(now_ms, true);
            }
            let (ln_e, rule, evidence) = judged;
            match (rule, evidence) {
                (Some(rule), Some(evidence)) if ln_e >= self.ln_threshold => {
                    self.failed = Some(Failure { rule, evidence });
                }
                (_, evidence) => {
                    self.trigger(now_ms, batch);
                    self.prune(now_ms);
                    let evidence = evidence.filter(|_| due)?;
                    self.reported_ms = Some(now_ms);
                    return Some(self.verdict(None, evidence));
                }
            }
        }
        let failure = self.failed.clone()?;
        self.reported_ms = Some(now_ms);
        Some(self.verdict(Some(failure.rule), failure.evidence))
    }

    fn verdict(&self, failed: Option<Criterion>, evidence: Evidence) -> Verdict {
        let c = self.latest_canary.since(self.step_canary);
        let s = self.latest_stable.since(self.step_stable);
        let (n_c, e_c) = (c.requests, c.count(Kind::Errors));
        let (n_s, e_s) = (s.requests, s.count(Kind::Errors));
        let outcome = match failed {
            Some(_) => VerdictOutcome::Failed,
            None if n_c < self.min_requests => VerdictOutcome::Inconclusive,
            None => VerdictOutcome::Passed,
        };
        Verdict {
            outcome,
            rule: failed,
            canary_requests: n_c,
            canary_errors: e_c,
            stable_requests: n_s,
            stable_errors: e_s,
            canary_error_rate: rate(e_c, n_c).unwrap_or(0.0),
            stable_error_rate: rate(e_s, n_s),
            z: None,
            z_critical: None,
            increase_exceeded: failed == Some(Criterion::ErrorRateIncrease),
            canary_p99: None,
            sequential: Some(evidence),
            metrics: Vec::new(),
        }
    }

    /// The combined log e-value with the rule of its largest term. With `full`, the stable
    /// side's confidence bounds are computed and the evidence returned; without, the stable
    /// point estimates stand in for them (a valid *upper* bound of the statistic, since the
    /// bound is never below the estimate) and no evidence is returned.
    fn evaluate(&self, now_ms: u64, full: bool) -> (f64, Option<Criterion>, Option<Evidence>) {
        let segments = self.stable_segments(now_ms);
        let bound = |seg: &Option<Segment>| -> f64 {
            match seg {
                None => 1.0,
                Some(s) if full => upper_bound(
                    &STABLE_ODDS,
                    s.counts.requests,
                    s.counts.count(Kind::Errors),
                    self.ln_stable_threshold - s.ln_weight,
                ),
                Some(s) => rate(s.counts.count(Kind::Errors), s.counts.requests).unwrap_or(1.0),
            }
        };
        // [recent, all]: the stable upper bound and the null rate each is compared with.
        let uppers = [bound(&segments[0]), bound(&segments[1])];
        let nulls = uppers.map(|u| self.null_rate(u));

        let mut terms: Vec<(f64, Criterion, u64)> = Vec::new();
        for c in [&self.errors, &self.slow].into_iter().flatten() {
            for s in &c.starts {
                let counts = self.latest_canary.since(s.base);
                let (n, x) = (counts.requests, counts.count(c.kind));
                let (p0, rule) = match c.kind {
                    Kind::Slow => (SLOW_NULL, Criterion::P99),
                    Kind::Errors => {
                        let recent = segments[0].is_some_and(|seg| s.at_ms >= seg.from_ms);
                        let i = if recent { 0 } else { 1 };
                        let Some((p0, rule)) = nulls[i] else {
                            continue;
                        };
                        (p0, rule)
                    }
                };
                if x == 0 && s.family != Family::Origin {
                    // At most its weight: nothing that could matter, and most of them.
                    continue;
                }
                let up = match s.family {
                    Family::Origin => ln_upper(&ORIGIN_ODDS, p0, n, x),
                    Family::Suspicion | Family::Tick => ln_recent(p0, n, x),
                };
                let ln = c.ln_share + s.ln_weight + up;
                terms.push((ln, rule, s.at_ms));
            }
        }
        let ln_e = log_sum_exp(terms.iter().map(|t| t.0));
        let strongest = terms
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|t| (t.1, t.2));
        let evidence = full.then(|| Evidence {
            log10_e: ln_e / std::f64::consts::LN_10,
            log10_threshold: self.ln_threshold / std::f64::consts::LN_10,
            null_rate: self
                .errors
                .as_ref()
                .and_then(|_| nulls[if segments[0].is_some() { 0 } else { 1 }])
                .map(|n| n.0),
            stable_upper: self
                .increase
                .map(|_| uppers[if segments[0].is_some() { 0 } else { 1 }]),
            strongest_age_secs: strongest
                .map_or(0.0, |s| now_ms.saturating_sub(s.1) as f64 / 1000.0),
            running_tests: [&self.errors, &self.slow]
                .into_iter()
                .flatten()
                .map(|c| c.starts.len() - 1)
                .sum(),
        });
        (ln_e, strongest.map(|s| s.0), evidence)
    }

    /// `min(max_error_rate, stable_upper + δ)` and which limit it is; `None` when neither
    /// limit can be tested yet.
    fn null_rate(&self, stable_upper: f64) -> Option<(f64, Criterion)> {
        let inc = self.increase.map(|d| (stable_upper + d).min(1.0));
        match (self.max_error_rate, inc) {
            (Some(m), Some(i)) if i < m => Some((i, Criterion::ErrorRateIncrease)),
            (Some(m), _) => Some((m.min(1.0), Criterion::ErrorRate)),
            (None, Some(i)) => Some((i, Criterion::ErrorRateIncrease)),
            (None, None) => None,
        }
    }

    /// `[recent, all]` stable segments at `now_ms`: the recent one since the newest
    /// checkpoint at least `window` old (`None` before there is one), and all of stable since
    /// the origin (weight ½).
    fn stable_segments(&self, now_ms: u64) -> [Option<Segment>; 2] {
        let all = Segment {
            from_ms: self.origin_ms,
            counts: self.latest_stable,
            ln_weight: -std::f64::consts::LN_2,
        };
        let recent = self
            .stable
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.1.saturating_add(self.window_ms) <= now_ms)
            .map(|&(m, at, base)| Segment {
                from_ms: at,
                counts: self.latest_stable.since(base),
                ln_weight: -std::f64::consts::LN_2 + ln_h(m),
            });
        [recent, Some(all)]
    }

    /// Starts this evaluation's tick test, and a suspicion test for each criterion whose
    /// last batch looks bad on its own.
    fn trigger(&mut self, now_ms: u64, batch: Tally) {
        let floor = self.trigger_null(now_ms);
        let canary = self.latest_canary;
        for c in [&mut self.errors, &mut self.slow].into_iter().flatten() {
            c.ticks += 1;
            c.starts.push(Start {
                at_ms: now_ms,
                base: canary,
                ln_weight: TICK_WEIGHT.ln() + ln_h(c.ticks),
                family: Family::Tick,
            });
            let p0 = match c.kind {
                Kind::Errors => match floor {
                    Some(p) => p,
                    None => continue,
                },
                Kind::Slow => SLOW_NULL,
            };
            let x = batch.count(c.kind);
            if x == 0 || ln_upper(&[TRIGGER_ODDS], p0, batch.requests, x) <= TRIGGER_LN {
                continue;
            }
            c.triggers += 1;
            c.starts.push(Start {
                at_ms: now_ms,
                base: canary,
                ln_weight: SUSPICION_WEIGHT.ln() + ln_h_first(c.triggers),
                family: Family::Suspicion,
            });
        }
    }

    /// The null rate a trigger compares a batch with: as [`Self::null_rate`], with the recent
    /// stable point estimate in place of its bound (a trigger needs no guarantee).
    fn trigger_null(&self, now_ms: u64) -> Option<f64> {
        let [recent, all] = self.stable_segments(now_ms);
        let seg = recent.or(all)?;
        let p = rate(seg.counts.count(Kind::Errors), seg.counts.requests).unwrap_or(1.0);
        self.null_rate(p).map(|n| n.0)
    }

    /// Drops tick tests older than [`TICK_KEEP`] evaluations, suspicion tests that decayed to
    /// nothing, and the weakest suspicion tests beyond [`MAX_STARTS`].
    fn prune(&mut self, now_ms: u64) {
        // The pruning order needs no guarantee: the recent point estimate for the null.
        let trigger_p0 = self.trigger_null(now_ms);
        let canary = self.latest_canary;
        for c in [&mut self.errors, &mut self.slow].into_iter().flatten() {
            let p0 = match c.kind {
                Kind::Slow => SLOW_NULL,
                Kind::Errors => trigger_p0.unwrap_or(1.0),
            };
            let kind = c.kind;
            let score = |s: &Start| {
                let counts = canary.since(s.base);
                s.ln_weight + ln_recent(p0, counts.requests, counts.count(kind))
            };
            // Tick tests are pushed one per evaluation, in order: all but the newest
            // TICK_KEEP go.
            let mut old_ticks = c
                .starts
                .iter()
                .filter(|s| s.family == Family::Tick)
                .count()
                .saturating_sub(TICK_KEEP);
            c.starts.retain(|s| match s.family {
                Family::Origin => true,
                Family::Tick if old_ticks > 0 => {
                    old_ticks -= 1;
                    false
                }
                Family::Tick => true,
                Family::Suspicion => score(s) > DROP_LN,
            });
            let mut scores: Vec<f64> = c
                .starts
                .iter()
                .filter(|s| s.family == Family::Suspicion)
                .map(score)
                .collect();
            if scores.len() > MAX_STARTS {
                scores.sort_by(f64::total_cmp);
                let cut = scores[scores.len() - MAX_STARTS];
                let mut kept = 0;
                c.starts.retain(|s| {
                    if s.family != Family::Suspicion {
                        return true;
                    }
                    let keep = score(s) >= cut && kept < MAX_STARTS;
                    kept += usize::from(keep);
                    keep
                });
            }
        }
    }
}

// === impl StableRef ===

impl StableRef {
    /// Takes the checkpoints that fell due (one every `window/2` from the origin; a late
    /// call takes only the newest, the skipped indexes' weights go unspent) and keeps the
    /// last few.
    fn checkpoint(&mut self, now_ms: u64, origin_ms: u64, window_ms: u64, stable: Tally) {
        let every = (window_ms / 2).max(1);
        let due = now_ms.saturating_sub(origin_ms) / every;
        if due >= self.next_index {
            self.checkpoints.push((due, now_ms, stable));
            self.next_index = due + 1;
            if self.checkpoints.len() > 4 {
                self.checkpoints.remove(0);
            }
        }
    }
}

/// `ln` of `½` for `m = 1` and `½·h(m − 1)` after: the first suspicious batch — the one a
/// failure after a clean history produces — gets half of its family's weight.
fn ln_h_first(m: u64) -> f64 {
    match m {
        0 | 1 => -std::f64::consts::LN_2,
        m => -std::f64::consts::LN_2 + ln_h(m - 1),
    }
}

/// `ln h(m)`, `h(m) = m^(−1.2)/ζ(1.2)` for `m ≥ 1`: prior weights that sum to 1 over all
/// `m` and fall slowly, so a test started late still counts.
fn ln_h(m: u64) -> f64 {
    -1.2 * (m.max(1) as f64).ln() - ZETA_1_2.ln()
}

/// The recent tests' statistic: `ln` of the [`RECENT_WEIGHTS`]-weighted average over
/// [`RECENT_ODDS`] of `R^x (1 + (R − 1) p0)^(−n)` (a weighted mixture of likelihood ratios
/// is one as well: the weights sum to 1).
pub fn ln_recent(p0: f64, n: u64, x: u64) -> f64 {
    let p0 = p0.clamp(0.0, 1.0);
    let (n, x) = (n as f64, x.min(n) as f64);
    log_sum_exp(
        RECENT_ODDS
            .iter()
            .zip(RECENT_WEIGHTS)
            .map(|(&r, w)| w.ln() + x * r.ln() - n * ((r - 1.0) * p0).ln_1p()),
    )
}

/// `ln` of the average over `odds` of `R^x (1 + (R − 1) p0)^(−n)`: the evidence, from `x`
/// successes in `n` trials, that the rate exceeds `p0`. Decreasing in `p0`.
pub fn ln_upper(odds: &[f64], p0: f64, n: u64, x: u64) -> f64 {
    let p0 = p0.clamp(0.0, 1.0);
    let (n, x) = (n as f64, x.min(n) as f64);
    let k = (odds.len() as f64).ln();
    log_sum_exp(
        odds.iter()
            .map(|&r| x * r.ln() - n * ((r - 1.0) * p0).ln_1p()),
    ) - k
}

/// `ln` of the average over `odds` of `R^(−x) (1 − (1 − 1/R) p0)^(−n)`: the evidence, from `x`
/// successes in `n` trials, that the rate is below `p0`. Increasing in `p0`.
pub fn ln_lower(odds: &[f64], p0: f64, n: u64, x: u64) -> f64 {
    let p0 = p0.clamp(0.0, 1.0);
    let (n, x) = (n as f64, x.min(n) as f64);
    let k = (odds.len() as f64).ln();
    log_sum_exp(
        odds.iter()
            .map(|&r| -x * r.ln() - n * (-(1.0 - 1.0 / r) * p0).ln_1p()),
    ) - k
}

/// The time-uniform upper confidence bound of a rate from `x` successes in `n` trials: the
/// smallest `p0` that [`ln_lower`] rejects at `ln_threshold` (1 when none is; never below
/// `x/n`, where the statistic is at most 0).
pub fn upper_bound(odds: &[f64], n: u64, x: u64, ln_threshold: f64) -> f64 {
    if n == 0 || ln_lower(odds, 1.0, n, x) < ln_threshold {
        return 1.0;
    }
    let (mut lo, mut hi) = (x.min(n) as f64 / n as f64, 1.0);
    // 50 halvings: below 1e-15 absolute, finer than any rate that matters here.
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if ln_lower(odds, mid, n, x) >= ln_threshold {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// `ln Σ exp(v)` without overflow; −∞ for nothing.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn rate(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x.min(n) as f64 / n as f64)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
