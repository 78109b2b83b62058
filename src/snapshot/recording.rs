//! What the data plane feeds the rollout runner: every proxied request on a rollout route
//! lands in that rollout's per-variant windows, with no lock and no allocation.
//!
//! The windows belong to the rollout's runtime state: a snapshot that keeps the rollout's
//! progress (same stable, canary and steps) keeps its windows, so a reload loses no evidence.
//! A new `analysis.window` longer than the carried ring can hold starts fresh windows — the
//! ring is sized once, and a verdict over a shorter ring than configured would be wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::RolloutRt;
use crate::clock;
use crate::config::traffic::Rollout;
use crate::proxy::split::Side;
use crate::rollout::{RolloutWindows, Variant};

/// The ring length of a rollout without `analysis`: enough for status to show recent traffic.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

// === impl RolloutRt ===

impl RolloutRt {
    /// Records one answered request of `variant` that ran from `start` to `end`. Errors are the
    /// rollout's `error_statuses` plus sluice's own 502/503/504 (`sluice_generated`), which
    /// mean the variant could not be reached or did not answer in time.
    #[inline]
    pub fn record(
        &self,
        variant: Variant,
        status: StatusCode,
        sluice_generated: bool,
        start: Instant,
        end: Instant,
    ) {
        let is_error = self.errors.is_error(status.as_u16(), sluice_generated);
        self.windows.record(
            variant,
            clock::mono_secs(end),
            is_error,
            end.saturating_duration_since(start),
        );
    }
}

impl From<Side> for Variant {
    fn from(side: Side) -> Variant {
        match side {
            Side::Stable => Variant::Stable,
            Side::Canary => Variant::Canary,
        }
    }
}

/// The windows for rollout `r`: the previous snapshot's when its progress carries over and
/// its ring is long enough, fresh ones otherwise.
pub(super) fn windows(kept: Option<&Arc<RolloutRt>>, r: &Rollout) -> Arc<RolloutWindows> {
    let want = r.analysis.as_ref().map_or(DEFAULT_WINDOW, |a| a.window.0);
    match kept {
        Some(old) if Duration::from_secs(old.windows.canary.max_window_secs()) >= want => {
            old.windows.clone()
        }
        _ => Arc::new(RolloutWindows::new(want)),
    }
}
