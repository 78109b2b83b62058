//! `state/rollouts.json`: each rollout's progress with the spec it was made under (so a
//! restart under another document applies SPEC §6's carry-over rules), and the `promote`
//! tokens already used. Written atomically by [`StateDir::write_json`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DocRef, Inner};
use crate::change::store::StateDir;
use crate::config::traffic::Rollout;
use crate::rollout::progress::{PauseState, Phase, Progress, RollbackReason};

/// The file's name in `state/`.
pub const FILE: &str = "rollouts.json";

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// Progress by rollout name.
    #[serde(default)]
    pub rollouts: BTreeMap<String, Entry>,
    /// Replay keys of used `promote` tokens → their `exp` (unix seconds).
    #[serde(default)]
    pub promotions_used: BTreeMap<String, u64>,
}

/// One rollout's saved progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The document the progress was made under.
    pub document: Option<DocRef>,
    /// The rollout's definition in that document.
    pub spec: Rollout,
    /// Where it stood.
    pub progress: Progress,
}

/// The fields whose change is worth an fsync: everything a restart must not lose. The
/// verdict streaks are left out — they change every interval, and rebuilding them after a
/// restart only delays a decision by `failure_limit` verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    phase: Phase,
    step: usize,
    started_at_ms: u64,
    step_started_at_ms: u64,
    promoted_at_ms: Option<u64>,
    pause: Option<PauseState>,
    abort_reason: Option<RollbackReason>,
    finished_at_ms: Option<u64>,
    awaiting_start: bool,
}

// === impl Key ===

impl Key {
    /// The persisted fields of `p`.
    pub fn of(p: &Progress) -> Key {
        Key {
            phase: p.phase,
            step: p.step,
            started_at_ms: p.started_at_ms,
            step_started_at_ms: p.step_started_at_ms,
            promoted_at_ms: p.promoted_at_ms,
            pause: p.pause,
            abort_reason: p.abort_reason,
            finished_at_ms: p.finished_at_ms,
            awaiting_start: p.awaiting_start,
        }
    }
}

/// Reads the file; a missing file is an empty one. An unreadable file is logged and treated
/// as empty: rollouts then start at step 0, the conservative choice.
pub fn load(state: &StateDir) -> Saved {
    match state.read_json::<Saved>(FILE) {
        Ok(Some(s)) => s,
        Ok(None) => Saved::default(),
        Err(e) => {
            tracing::error!(file = FILE, error = %e, "Saved rollout progress is unreadable; rollouts start at step 0.");
            Saved::default()
        }
    }
}

/// Writes the runner's current progress and used promotions.
pub fn save(state: &StateDir, inner: &Inner) -> std::io::Result<()> {
    let saved = Saved {
        rollouts: inner
            .rollouts
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    Entry {
                        document: inner.document.clone(),
                        spec: t.spec.clone(),
                        progress: t.progress.clone(),
                    },
                )
            })
            .collect(),
        promotions_used: inner.promotions_used.clone(),
    };
    state.write_json(FILE, &saved)
}
