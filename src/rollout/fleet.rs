//! How a rollout runner takes part in a fleet (SPEC §12). A single instance has no fleet and
//! runs as before. In a fleet only the leader runs the controller — on the summed windows of
//! every live node, writing each step fleet-wide before it takes effect — and every other
//! node applies the leader's progress. The runner asks its [`Fleet`] which [`Role`] it has at
//! each tick; the cluster module implements the trait.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::progress::Progress;
use super::runner::DocRef;
use super::window::{Counts, RolloutWindows, WindowStats};
use crate::change::audit::Event as AuditEvent;

/// Reason code: etcd cannot be reached, so nothing changes fleet-wide.
pub const CLUSTER_UNAVAILABLE: &str = "cluster_unavailable";

/// What this node may do with rollouts right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The leader: judge the fleet's windows, advance, roll back; write before applying.
    Lead,
    /// Connected, not leading: apply the leader's progress, decide nothing.
    Follow,
    /// Cut off from etcd for less than `lease_ttl`: serve the last weights, decide nothing.
    Frozen,
    /// Cut off for longer: judge this node's own traffic, for rollback only.
    CutOff,
}

/// A rollout's progress as the leader wrote it: `P/rollouts/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetProgress {
    /// The document it runs under.
    pub document: DocRef,
    /// Where it stands (streaks included, so a new leader continues them).
    pub progress: Progress,
    /// The canary weight in basis points that the progress calls for.
    pub weight_bp: u32,
    /// The leader that wrote it.
    pub leader: String,
    /// The latest verdict, for status (`null` when none).
    #[serde(default)]
    pub verdict: Value,
    /// When it was written (unix ms).
    pub at_ms: u64,
}

/// The runner's view of the fleet.
pub trait Fleet: Send + Sync {
    /// This node's role now.
    fn role(&self) -> Role;

    /// The (stable, canary) stats over the trailing `window` ending at mono second `now_sec`:
    /// for the leader, every live node's counts of rollout `name` summed.
    fn stats(
        &self,
        name: &str,
        local: &RolloutWindows,
        now_sec: u64,
        window: Duration,
    ) -> (WindowStats, WindowStats);

    /// The (stable, canary) counts of monotonic second `mono_sec`: for the leader, every live
    /// node's counts of rollout `name` in that second summed (the sequential test accumulates
    /// them second by second). This node's own counts alone by default.
    fn second(&self, name: &str, local: &RolloutWindows, mono_sec: u64) -> (Counts, Counts) {
        let _ = name;
        let (mut stable, mut canary) = (Counts::default(), Counts::default());
        local.stable.add_second(mono_sec, &mut stable);
        local.canary.add_second(mono_sec, &mut canary);
        (stable, canary)
    }

    /// Writes a rollout's progress fleet-wide (the fleet fills in `leader`), fenced by this
    /// node's leadership. An error
    /// (deposed, etcd unreachable) means the progress must not take effect here either.
    fn commit(&self, name: &str, progress: FleetProgress) -> Result<(), String>;

    /// The fleet's progress of rollout `name`, as last seen in etcd.
    fn progress(&self, name: &str) -> Option<FleetProgress>;

    /// Appends a rollout event to the fleet audit chain (the leader's transitions).
    fn audit(&self, event: AuditEvent);

    /// A node cut off from etcd rolled rollout `name` back on its own traffic (or an
    /// operator aborted it here while cut off): publish the abort when etcd is back.
    fn rolled_back_alone(&self, name: &str, document: &DocRef, reason: &str);
}
