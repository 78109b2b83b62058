//! A seeded simulation of rollouts for judging the verdict methods: synthetic traffic in,
//! the real verdict code ([`super::sequential`] or the z test of [`super::analysis`]) and the
//! real [`controller::tick`] on an injected clock, the time of the rollback out.
//!
//! Traffic: each variant's requests arrive as a Poisson process; each request fails
//! independently with the variant's error rate (the canary's may change at an onset). Counts
//! are drawn per [`DRAW_MS`] as independent Poisson counts of successes and failures (the
//! thinning of a Poisson process, so exactly the same distribution as per-request draws; an
//! onset inside a draw splits it at the onset), then split into slices of [`SLICE_MS`] by
//! binomial thinning from a second stream (given a count, a Poisson process's events are
//! uniform over the interval). The draws are the ones every published table used, so a
//! finer slice or cadence sees the same traffic. The sequential test is evaluated every
//! [`TICK_MS`] — the runner's cadence — or, with [`run_every`], at another multiple of the
//! slice: that is how cadences are compared.
//!
//! `cargo run --release --example rollout_sim` prints the README's table.

use std::time::Duration;

use super::analysis::{Criterion, judge};
use super::controller::{self, Event};
use super::progress::Progress;
use super::sequential::Sequential;
use super::tally::Tally;
use super::window::WindowStats;
use crate::config::Weight;
use crate::config::traffic::{Analysis, OnFailure, Rollout, Step, Sticky, Strategy};

/// How often a sequential rollout is evaluated (the runner's cadence,
/// `runner::EVALUATE_EVERY`).
pub const TICK_MS: u64 = 50;

/// The traffic's time step: every cadence compared is a multiple of it.
pub const SLICE_MS: u64 = 50;

/// The step traffic is drawn at (then split into slices).
pub const DRAW_MS: u64 = 100;

/// Which verdict to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// SPEC §6's z test, each `interval` over the trailing `window`.
    ZTest,
    /// The always-valid test, every [`TICK_MS`].
    Sequential,
    /// Not a method: the SPRT an oracle could run, told the onset instant and the failure
    /// rate. Among tests with its error probability it needs the fewest requests on average
    /// (Wald and Wolfowitz, 1948): a reference for time to rollback, meaningless without a
    /// failure.
    Oracle,
}

/// One simulated rollout.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The thresholds (`interval`, `window`, `min_requests`, limits, `confidence`).
    pub analysis: Analysis,
    /// The verdict method.
    pub method: Method,
    /// Canary requests per second.
    pub canary_rps: f64,
    /// Stable requests per second.
    pub stable_rps: f64,
    /// Stable's error rate throughout.
    pub stable_error_rate: f64,
    /// The canary's error rate before the onset.
    pub canary_error_rate: f64,
    /// From this many ms after the start, the canary fails at this rate.
    pub failure: Option<(u64, f64)>,
    /// How long the rollout runs (one step at 10% holding this long).
    pub duration_ms: u64,
}

/// What happened in one simulated rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// When the rollout was rolled back, ms after its start.
    pub rolled_back_at_ms: Option<u64>,
    /// The rule that failed.
    pub rule: Option<Criterion>,
}

/// xoshiro256++ (Blackman and Vigna), seeded through SplitMix64: small, fast, reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

/// Drawn counts of `(from, to)` not yet handed to a slice: `bad` failures and `good`
/// successes, uniform over the interval; `failing` after the onset.
#[derive(Debug, Clone, Copy)]
struct Part {
    from: u64,
    to: u64,
    bad: u64,
    good: u64,
    failing: bool,
}

/// One draw: the canary's parts (split at an onset) and stable's.
#[derive(Debug, Clone, Copy)]
struct Draw {
    canary: [Option<Part>; 2],
    stable: Part,
}

/// Per-second counts for the z test's trailing window.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    canary: (u64, u64),
    stable: (u64, u64),
}

// === impl Rng ===

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A binomial variate: inversion (from the smaller tail), halving `n` above 512.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        if n > 512 {
            let half = n / 2;
            return self.binomial(half, p) + self.binomial(n - half, p);
        }
        // q ≥ ½ and n ≤ 512: q^n ≥ 2^−512, well inside f64.
        let q = 1.0 - p;
        let ratio = p / q;
        let u = self.uniform();
        let mut f = q.powi(n as i32);
        let mut cdf = f;
        let mut k = 0;
        while cdf < u && k < n {
            f *= ratio * (n - k) as f64 / (k + 1) as f64;
            k += 1;
            cdf += f;
        }
        k
    }

    /// A Poisson variate: multiplication of uniforms below a mean of 10, Hörmann's PTRS
    /// (transformed rejection with squeeze, 1993) above.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 10.0 {
            let limit = (-mean).exp();
            let (mut k, mut p) = (0u64, self.uniform());
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        let slam = mean.sqrt();
        let loglam = mean.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            if lhs <= -mean + k * loglam - ln_factorial(k) {
                return k as u64;
            }
        }
    }
}

/// `ln k!`: exact below 20, Stirling's series above (error below 1e-12 there).
fn ln_factorial(k: f64) -> f64 {
    if k < 20.0 {
        return (2..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let x = k + 1.0;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// Runs one rollout with `seed`: the canary at 10% for `duration_ms`, judged by `method`,
/// driven by the real controller.
pub fn run(s: &Scenario, seed: u64) -> Trial {
    run_every(s, seed, TICK_MS)
}

/// As [`run`], the sequential test evaluated every `every_ms` (a multiple of [`SLICE_MS`]);
/// the traffic does not depend on it.
pub fn run_every(s: &Scenario, seed: u64, every_ms: u64) -> Trial {
    let every_ms = every_ms.max(SLICE_MS);
    let mut rng = Rng::new(seed);
    // The slices' split of each draw: a stream of its own, so the draws stay the same.
    let mut split = Rng::new(seed ^ 0x51_1CE5);
    let mut draw: Option<Draw> = None;
    let spec = rollout_spec(s);
    let mut progress = Progress::new(0);
    let _ = controller::tick(&mut progress, &spec, None, 0);
    let mut seq = Sequential::new(&s.analysis, 0);
    let interval_ms = millis(s.analysis.interval.0).max(TICK_MS);
    let window_secs = s.analysis.window.0.as_secs().max(1) as usize;
    let (mut canary, mut stable) = (Tally::default(), Tally::default());
    // Canary counts after the onset, for the oracle.
    let mut after = (0u64, 0u64);
    let mut seconds: Vec<Second> = Vec::new();
    let mut now = 0u64;
    while now < s.duration_ms {
        // The z test only looks every interval; slices of SLICE_MS keep its per-second
        // buckets exact.
        let next = now + SLICE_MS;
        if now.is_multiple_of(DRAW_MS) || draw.is_none() {
            let from = now - now % DRAW_MS;
            draw = Some(sample(s, &mut rng, from, from + DRAW_MS));
        }
        let batch = match &mut draw {
            Some(d) => slice(d, next, &mut split, &mut after),
            None => Second::default(),
        };
        now = next;
        canary.requests += batch.canary.0;
        canary.errors += batch.canary.1;
        stable.requests += batch.stable.0;
        stable.errors += batch.stable.1;
        let sec = ((now - 1) / 1000) as usize;
        if seconds.len() <= sec {
            seconds.resize(sec + 1, Second::default());
        }
        let slot = &mut seconds[sec];
        slot.canary.0 += batch.canary.0;
        slot.canary.1 += batch.canary.1;
        slot.stable.0 += batch.stable.0;
        slot.stable.1 += batch.stable.1;

        let verdict = match s.method {
            Method::Sequential if now.is_multiple_of(every_ms) => {
                seq.observe(now, canary, stable, false)
            }
            Method::Sequential => None,
            Method::ZTest if now.is_multiple_of(interval_ms) => {
                let from = (sec + 1).saturating_sub(window_secs);
                let (c, st) = seconds[from..=sec].iter().fold(
                    (WindowStats::default(), WindowStats::default()),
                    |(mut c, mut st), x| {
                        c.requests += x.canary.0;
                        c.errors += x.canary.1;
                        st.requests += x.stable.0;
                        st.errors += x.stable.1;
                        (c, st)
                    },
                );
                Some(judge(&s.analysis, &c, &st))
            }
            Method::ZTest => None,
            Method::Oracle => {
                if oracle_rejects(s, after) {
                    return Trial {
                        rolled_back_at_ms: Some(now),
                        rule: None,
                    };
                }
                None
            }
        };
        let Some(v) = verdict else {
            continue;
        };
        let events = controller::tick(&mut progress, &spec, Some(&v), now);
        if events.iter().any(|e| matches!(e, Event::RolledBack { .. })) {
            return Trial {
                rolled_back_at_ms: Some(now),
                rule: v.rule,
            };
        }
    }
    Trial {
        rolled_back_at_ms: None,
        rule: None,
    }
}

/// The draw of `(from, to]`, split at the onset when it falls inside. The draws are the same
/// whatever the method and cadence.
fn sample(s: &Scenario, rng: &mut Rng, from: u64, to: u64) -> Draw {
    let mut parts = [(from, to, s.canary_error_rate, false), (to, to, 0.0, false)];
    if let Some((at, rate)) = s.failure {
        if at <= from {
            parts[0] = (from, to, rate, true);
        } else if at < to {
            parts = [(from, at, s.canary_error_rate, false), (at, to, rate, true)];
        }
    }
    let mut canary = [None, None];
    for (slot, (a, b, rate, failing)) in canary.iter_mut().zip(parts) {
        if b == a {
            continue;
        }
        let secs = (b - a) as f64 / 1000.0;
        let bad = rng.poisson(s.canary_rps * rate * secs);
        let good = rng.poisson(s.canary_rps * (1.0 - rate) * secs);
        *slot = Some(Part {
            from: a,
            to: b,
            bad,
            good,
            failing,
        });
    }
    let secs = (to - from) as f64 / 1000.0;
    let bad = rng.poisson(s.stable_rps * s.stable_error_rate * secs);
    let good = rng.poisson(s.stable_rps * (1.0 - s.stable_error_rate) * secs);
    Draw {
        canary,
        stable: Part {
            from,
            to,
            bad,
            good,
            failing: false,
        },
    }
}

/// The counts of `draw` up to `to` not handed out yet (canary counts after the onset also
/// added to `after`).
fn slice(draw: &mut Draw, to: u64, split: &mut Rng, after: &mut (u64, u64)) -> Second {
    let mut batch = Second::default();
    for part in draw.canary.iter_mut().flatten() {
        let (bad, good) = take(part, to, split);
        batch.canary.0 += bad + good;
        batch.canary.1 += bad;
        if part.failing {
            after.0 += bad + good;
            after.1 += bad;
        }
    }
    let (bad, good) = take(&mut draw.stable, to, split);
    batch.stable = (bad + good, bad);
    batch
}

/// The failures and successes of `part` that fall before `to` (each of the remaining ones
/// independently, with the remaining interval's share), taken out of it.
fn take(part: &mut Part, to: u64, split: &mut Rng) -> (u64, u64) {
    if to <= part.from {
        return (0, 0);
    }
    let (bad, good) = if to >= part.to {
        (part.bad, part.good)
    } else {
        let share = (to - part.from) as f64 / (part.to - part.from) as f64;
        (
            split.binomial(part.bad, share),
            split.binomial(part.good, share),
        )
    };
    part.bad -= bad;
    part.good -= good;
    part.from = to.min(part.to);
    (bad, good)
}

/// The SPRT of the failure rate against the healthy limit, started at the onset: the
/// likelihood ratio of `q` (the failure rate) over `p0 = min(max_error_rate, p_s + δ)` (the
/// true stable rate) reaching `1/α`.
fn oracle_rejects(s: &Scenario, (n, x): (u64, u64)) -> bool {
    let Some((_, q)) = s.failure else {
        return false;
    };
    let a = &s.analysis;
    let inc = a.max_error_rate_increase.map(|d| s.stable_error_rate + d);
    let p0 = match (a.max_error_rate, inc) {
        (Some(m), Some(i)) => m.min(i),
        (Some(m), None) => m,
        (None, Some(i)) => i,
        (None, None) => return false,
    };
    if q <= p0 || p0 <= 0.0 {
        return false;
    }
    let (n, x) = (n as f64, x as f64);
    let ln = x * (q / p0).ln() + (n - x) * ((1.0 - q) / (1.0 - p0)).ln();
    ln >= -(1.0 - a.confidence).ln()
}

/// A canary rollout at 10% holding for the whole scenario, with the scenario's analysis.
fn rollout_spec(s: &Scenario) -> Rollout {
    Rollout {
        strategy: Strategy::Canary,
        stable: Some("stable".into()),
        canary: Some("canary".into()),
        steps: vec![
            Step {
                weight: Some(Weight(1000)),
                hold: Some(crate::config::Dur(Duration::from_millis(
                    s.duration_ms.saturating_add(1),
                ))),
                ..Step::default()
            },
            Step {
                weight: Some(Weight::FULL),
                ..Step::default()
            },
        ],
        active: None,
        preview: None,
        sticky: Sticky::default(),
        canary_match: None,
        preview_match: None,
        paused: false,
        analysis: Some(s.analysis.clone()),
        on_failure: OnFailure::Rollback,
        promote: None,
        post_promotion_window: None,
        hooks: Default::default(),
        mirror: None,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
