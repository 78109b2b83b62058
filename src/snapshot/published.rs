//! The published snapshot: the one value the change gate writes and everyone else reads.
//! The data plane loads it lock-free on every request; control-plane tasks (the rollout
//! runner) are told of each publication through a watch channel rather than polling it.

use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::watch;

use super::Snapshot;

/// The active snapshot, and a signal for each new one.
#[derive(Debug)]
pub struct Published {
    current: ArcSwapOption<Snapshot>,
    /// Counts publications; subscribers wake on each.
    publications: watch::Sender<u64>,
}

// === impl Published ===

impl Default for Published {
    fn default() -> Self {
        Published {
            current: ArcSwapOption::empty(),
            publications: watch::channel(0).0,
        }
    }
}

impl Published {
    /// The active snapshot (`None` until a document is active); lock-free.
    #[inline]
    pub fn load(&self) -> Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    /// The active snapshot, owned.
    pub fn load_full(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Makes `snap` the active snapshot and wakes every subscriber. The change gate is
    /// the only caller.
    pub fn publish(&self, snap: Arc<Snapshot>) {
        self.current.store(Some(snap));
        self.publications.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes on every later publication.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.publications.subscribe()
    }
}
