//! Which flags changed, as SDKs need to hear it: follows activations (a notification from
//! the change gate, never a poll) and publishes a [`FlagChange`] whenever an activation
//! changes what a flag evaluates to — a flag, an evaluator, flag-set metadata, `fractional`
//! or `flag_context` — and only then. Event streams (SSE, gRPC) subscribe to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::shutdown::Shutdown;
use crate::snapshot::Published;

/// One change of the flags, as the streams announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    /// The version of the document that made the flags what they are: the SSE event `id`.
    pub version: u64,
    /// A hash of the flag configuration (the SSE event's `etag`).
    pub fingerprint: String,
    /// When it was seen, Unix seconds (the SSE event's `lastModified`).
    pub at: u64,
    /// The flags it touched, by key (empty for the first configuration).
    pub changed: Vec<(String, ChangeKind)>,
}

/// How a flag changed (flagd's `configuration_change` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new flag.
    Write,
    /// A changed definition.
    Update,
    /// A removed flag.
    Delete,
}

/// The current flag configuration's change record; `None` until something is active.
#[derive(Debug)]
pub struct Feed {
    tx: watch::Sender<Option<Arc<FlagChange>>>,
}

// === impl ChangeKind ===

impl ChangeKind {
    /// flagd's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Write => "write",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

// === impl Feed ===

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: watch::channel(None).0,
        }
    }
}

impl Feed {
    /// A receiver of changes; its current value is the configuration now served.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<FlagChange>>> {
        self.tx.subscribe()
    }

    /// The change that made the current configuration.
    pub fn current(&self) -> Option<Arc<FlagChange>> {
        self.tx.borrow().clone()
    }

    /// Publishes `change` as the current one (unit tests of the streams).
    #[cfg(test)]
    pub(crate) fn publish_for_tests(&self, change: Option<Arc<FlagChange>>) {
        self.tx.send_replace(change);
    }

    /// Follows activations (each publication of a snapshot) until `shutdown`: after each
    /// one, publishes a change if the flags' fingerprint moved.
    pub async fn follow(self: Arc<Self>, published: Arc<Published>, mut shutdown: Shutdown) {
        let mut activations = published.subscribe();
        let mut last: Option<(String, BTreeMap<String, u64>)> = None;
        loop {
            activations.mark_unchanged();
            if let Some(snap) = published.load_full() {
                let fr = &snap.flags;
                if last.as_ref().is_none_or(|(fp, _)| *fp != fr.fingerprint) {
                    let changed = match &last {
                        Some((_, before)) => diff(before, &fr.definitions),
                        None => Vec::new(),
                    };
                    self.tx.send_replace(Some(Arc::new(FlagChange {
                        version: snap.version,
                        fingerprint: fr.fingerprint.clone(),
                        at: crate::clock::unix_secs(std::time::SystemTime::now()),
                        changed,
                    })));
                    last = Some((fr.fingerprint.clone(), fr.definitions.clone()));
                }
            }
            tokio::select! {
                r = activations.changed() => if r.is_err() { return },
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// The flags whose definitions differ between `before` and `after`.
fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, ChangeKind)> {
    let mut out = Vec::new();
    for (k, h) in after {
        match before.get(k) {
            None => out.push((k.clone(), ChangeKind::Write)),
            Some(b) if b != h => out.push((k.clone(), ChangeKind::Update)),
            Some(_) => {}
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        out.push((k.clone(), ChangeKind::Delete));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_writes_updates_and_deletes() {
        let before: BTreeMap<String, u64> =
            [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)].into();
        let after: BTreeMap<String, u64> =
            [("a".into(), 1), ("b".into(), 9), ("d".into(), 4)].into();
        assert_eq!(
            diff(&before, &after),
            vec![
                ("b".to_string(), ChangeKind::Update),
                ("d".to_string(), ChangeKind::Write),
                ("c".to_string(), ChangeKind::Delete),
            ]
        );
    }
}
