//! The live side of `analysis.metrics`: each check of a rollout fetched on its own
//! `interval` by a short task on the control runtime (never the data plane), its latest
//! result kept for the tick to fold into the verdict ([`metric_check::combine`]).
//!
//! The runner's timer loop starts the fetches that are due ([`Probes::start_due`]); at most
//! one fetch per check is in flight, and each is bounded by the check's `timeout`. A fetch
//! that outlives its rollout (a new document, a rollback) writes into a state nobody reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::traffic::{Rollout, Strategy};
use crate::metric_check::{CompiledCheck, MAX_BODY, MetricResult, MetricState, Vars};

/// The checks of one rollout.
pub(super) struct Probes {
    /// What they were built from (a new document with other checks or names rebuilds them).
    key: (Vec<crate::config::traffic::MetricCheck>, Vars),
    list: Vec<Arc<Probe>>,
}

/// One check with its latest result.
struct Probe {
    check: CompiledCheck,
    /// The URL, rendered once.
    url: String,
    in_flight: AtomicBool,
    state: Mutex<ProbeState>,
}

struct ProbeState {
    next_due: Instant,
    result: MetricResult,
}

// === impl Probes ===

impl Probes {
    /// The checks of `spec`, none fetched yet; `None` without `analysis.metrics`.
    pub(super) fn new(name: &str, spec: &Rollout) -> Option<Probes> {
        let analysis = spec.analysis.as_ref()?;
        if analysis.metrics.is_empty() {
            return None;
        }
        let vars = vars(name, spec);
        let now = Instant::now();
        let list = analysis
            .metrics
            .iter()
            .filter_map(|m| match CompiledCheck::compile(m, analysis) {
                Ok(check) => Some(Arc::new(Probe {
                    url: check.url.render(&vars),
                    state: Mutex::new(ProbeState {
                        next_due: now,
                        result: MetricResult {
                            name: check.name.clone(),
                            state: MetricState::Pending,
                            value: None,
                            error: None,
                            consecutive_failures: 0,
                            failure_limit: check.failure_limit,
                        },
                    }),
                    check,
                    in_flight: AtomicBool::new(false),
                })),
                Err(e) => {
                    // Validation refused this already; an active document cannot hold it.
                    tracing::error!(rollout = name, metric = %m.name, field = e.0, error = %e.1, "A metric check does not compile; it is not run.");
                    None
                }
            })
            .collect();
        Some(Probes {
            key: (analysis.metrics.clone(), vars),
            list,
        })
    }

    /// Whether these probes were built for `spec` (then a new document keeps them, with
    /// their failure streaks).
    pub(super) fn built_for(&self, name: &str, spec: &Rollout) -> bool {
        spec.analysis
            .as_ref()
            .is_some_and(|a| a.metrics == self.key.0 && vars(name, spec) == self.key.1)
    }

    /// Starts every fetch that is due (`every`: whatever its interval) and not in flight,
    /// on the current runtime; the started fetches.
    pub(super) fn start_due(&self, now: Instant, every: bool) -> Vec<tokio::task::JoinHandle<()>> {
        let mut started = Vec::new();
        for p in &self.list {
            let due = {
                let mut s = p.lock();
                let due = (every || s.next_due <= now) && !p.in_flight.load(Ordering::Acquire);
                if due {
                    s.next_due = now + p.check.interval;
                    p.in_flight.store(true, Ordering::Release);
                }
                due
            };
            if due {
                started.push(tokio::spawn(p.clone().fetch()));
            }
        }
        started
    }

    /// Every check's latest result.
    pub(super) fn results(&self) -> Vec<MetricResult> {
        self.list.iter().map(|p| p.lock().result.clone()).collect()
    }
}

/// The names a rollout's templates are filled with.
fn vars(name: &str, spec: &Rollout) -> Vars {
    let (stable, canary) = match spec.strategy {
        Strategy::Canary => (&spec.stable, &spec.canary),
        Strategy::BlueGreen => (&spec.active, &spec.preview),
    };
    Vars {
        rollout: name.to_string(),
        stable: stable.clone().unwrap_or_default(),
        canary: canary.clone().unwrap_or_default(),
    }
}

// === impl Probe ===

impl Probe {
    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        // Writes under this lock are single assignments; a panic cannot tear them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One fetch, judged and recorded.
    async fn fetch(self: Arc<Self>) {
        let outcome = match tokio::time::timeout(
            self.check.timeout,
            crate::outbound::get(
                &self.url,
                self.check.ca_file.as_deref(),
                "sluice-analysis",
                MAX_BODY,
            ),
        )
        .await
        {
            Ok(Ok(body)) => self.check.judge(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no answer within {:?} from {}",
                self.check.timeout, self.url
            )),
        };
        {
            let mut s = self.lock();
            let r = &mut s.result;
            match outcome {
                Ok((value, holds)) => {
                    r.value = Some(value);
                    r.error = None;
                    if holds {
                        r.state = MetricState::Passed;
                        r.consecutive_failures = 0;
                    } else {
                        r.state = MetricState::Failed;
                        r.consecutive_failures = r.consecutive_failures.saturating_add(1);
                    }
                }
                Err(e) => {
                    // An error neither counts as a failure nor clears the streak.
                    if r.state != MetricState::Error {
                        tracing::warn!(metric = %r.name, error = %e, "A metric provider gave no usable answer; the verdict stays inconclusive until it does.");
                    }
                    r.state = MetricState::Error;
                    r.value = None;
                    r.error = Some(e);
                }
            }
        }
        self.in_flight.store(false, Ordering::Release);
    }
}
