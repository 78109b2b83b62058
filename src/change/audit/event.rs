//! Audit events (SPEC §11): every event name sluice writes is a variant of [`EventKind`],
//! every line is built by one builder ([`Event`]), and every line read back on restart is a
//! [`Record`] with its kind parsed. No event name is spelled outside this file.
//!
//! To add an event: a variant, its name in [`EventKind::name`] and its row in
//! [`EventKind::ALL`]; then build it with [`Event::new`] where it happens.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// What an audit line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `sluice.started`: an instance opened its state.
    Started,
    /// `change.activated`: a document passed the gate and serves.
    ChangeActivated,
    /// `change.restored`: the last activated document serves again after a restart.
    ChangeRestored,
    /// `change.pending`: a valid document waits for approvals.
    ChangePending,
    /// `change.rejected`: a document or token was refused.
    ChangeRejected,
    /// `change.reverted`: an earlier document serves again.
    ChangeReverted,
    /// `emergency.reviewed`: an emergency change's post-facto review is complete.
    EmergencyReviewed,
    /// `review.overdue`: an emergency change's review deadline passed.
    ReviewOverdue,
    /// `rollout.step`: a rollout moved to a step.
    RolloutStep,
    /// `rollout.promoted`: a manual gate was passed.
    RolloutPromoted,
    /// `rollout.paused`.
    RolloutPaused,
    /// `rollout.resumed`.
    RolloutResumed,
    /// `rollout.aborted`: rolled back or swapped back.
    RolloutAborted,
    /// `rollout.completed`.
    RolloutCompleted,
    /// `rollout.hook`: a rollout hook run's result (a check passed or failed, a gate
    /// refused or confirmed, a rollback hook triggered).
    RolloutHook,
    /// `admin.action`: an operator action on a rollout, allowed or refused.
    AdminAction,
    /// `cluster.joined`: this node joined its fleet (SPEC §12).
    ClusterJoined,
    /// `cluster.leader`: this node became the fleet's leader.
    ClusterLeader,
    /// `cluster.disconnected`: this node lost etcd.
    ClusterDisconnected,
    /// `cluster.reconnected`: this node is back in its fleet.
    ClusterReconnected,
    /// `cluster.rolled_back_alone`: cut off from etcd, this node rolled a rollout back on
    /// its own traffic (published to the fleet when it reconnects).
    ClusterRolledBackAlone,
}

/// An audit line being built: its kind and its fields. The log adds `seq`, `ts`, `event`
/// and `prev` when it appends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: EventKind,
    fields: Map<String, Value>,
}

/// One line of the log, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The event's kind; `None` for a name this version does not know.
    pub kind: Option<EventKind>,
    /// The whole line.
    pub line: Value,
}

// === impl EventKind ===

impl EventKind {
    /// Every kind, in SPEC §11 order.
    pub const ALL: [EventKind; 21] = [
        EventKind::Started,
        EventKind::ChangeActivated,
        EventKind::ChangeRestored,
        EventKind::ChangePending,
        EventKind::ChangeRejected,
        EventKind::ChangeReverted,
        EventKind::EmergencyReviewed,
        EventKind::ReviewOverdue,
        EventKind::RolloutStep,
        EventKind::RolloutPromoted,
        EventKind::RolloutPaused,
        EventKind::RolloutResumed,
        EventKind::RolloutAborted,
        EventKind::RolloutCompleted,
        EventKind::RolloutHook,
        EventKind::AdminAction,
        EventKind::ClusterJoined,
        EventKind::ClusterLeader,
        EventKind::ClusterDisconnected,
        EventKind::ClusterReconnected,
        EventKind::ClusterRolledBackAlone,
    ];

    /// The name written in the `event` field.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Started => "sluice.started",
            EventKind::ChangeActivated => "change.activated",
            EventKind::ChangeRestored => "change.restored",
            EventKind::ChangePending => "change.pending",
            EventKind::ChangeRejected => "change.rejected",
            EventKind::ChangeReverted => "change.reverted",
            EventKind::EmergencyReviewed => "emergency.reviewed",
            EventKind::ReviewOverdue => "review.overdue",
            EventKind::RolloutStep => "rollout.step",
            EventKind::RolloutPromoted => "rollout.promoted",
            EventKind::RolloutPaused => "rollout.paused",
            EventKind::RolloutResumed => "rollout.resumed",
            EventKind::RolloutAborted => "rollout.aborted",
            EventKind::RolloutCompleted => "rollout.completed",
            EventKind::RolloutHook => "rollout.hook",
            EventKind::AdminAction => "admin.action",
            EventKind::ClusterJoined => "cluster.joined",
            EventKind::ClusterLeader => "cluster.leader",
            EventKind::ClusterDisconnected => "cluster.disconnected",
            EventKind::ClusterReconnected => "cluster.reconnected",
            EventKind::ClusterRolledBackAlone => "cluster.rolled_back_alone",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether, after this event, the document it names is the one serving
    /// (activated, reverted to, restored).
    pub fn installs_document(self) -> bool {
        matches!(
            self,
            EventKind::ChangeActivated | EventKind::ChangeReverted | EventKind::ChangeRestored
        )
    }

    /// Whether this is a rollout transition (`rollout.*`).
    pub fn is_rollout(self) -> bool {
        matches!(
            self,
            EventKind::RolloutStep
                | EventKind::RolloutPromoted
                | EventKind::RolloutPaused
                | EventKind::RolloutResumed
                | EventKind::RolloutAborted
                | EventKind::RolloutCompleted
                | EventKind::RolloutHook
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Event ===

impl Event {
    /// An event of `kind` done by `actor` (a principal, or `sluice`, `startup`, `file`,
    /// `admin`).
    pub fn new(kind: EventKind, actor: &str) -> Event {
        let mut fields = Map::new();
        fields.insert("actor".into(), json!(actor));
        Event { kind, fields }
    }

    /// The `change` object (SPEC §11: `id`, `version`, `digest`, `class`, `author`,
    /// `approvers`; at least `digest`).
    pub fn change(self, change: Value) -> Event {
        self.with("change", change)
    }

    /// A refusal's reason code and sentence.
    pub fn refusal(self, reason: &str, detail: &str) -> Event {
        self.with("reason", reason).with("detail", detail)
    }

    /// Any other field of this event; a later value for the same key replaces the earlier.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Event {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.fields.insert(key.to_string(), v);
        self
    }

    /// Its kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// Its fields and the `event` name: the line without `seq`, `ts` and `prev`.
    pub(crate) fn into_fields(self) -> Map<String, Value> {
        let mut f = self.fields;
        f.insert("event".into(), json!(self.kind.name()));
        f
    }
}

// === impl Record ===

impl Record {
    /// A line read back from the log.
    pub fn new(line: Value) -> Record {
        let kind = line["event"].as_str().and_then(EventKind::from_name);
        Record { kind, line }
    }

    /// Whether it is an event of `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.kind == Some(kind)
    }

    /// Its `change` object (`Null` when it has none).
    pub fn change(&self) -> &Value {
        &self.line["change"]
    }

    /// `change.digest` (empty when absent).
    pub fn digest(&self) -> &str {
        self.change()["digest"].as_str().unwrap_or("")
    }

    /// `change.version`.
    pub fn version(&self) -> Option<u64> {
        self.change()["version"].as_u64()
    }

    /// Another field (`Null` when absent).
    pub fn get(&self, key: &str) -> &Value {
        &self.line[key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
        }
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!(EventKind::from_name("change.unknown"), None);
    }

    #[test]
    fn built_and_read_back() {
        let e = Event::new(EventKind::ChangeRejected, "file")
            .refusal("expired", "the token expired.")
            .change(json!({ "digest": "sha256:ab" }));
        let r = Record::new(Value::Object(e.into_fields()));
        assert!(r.is(EventKind::ChangeRejected));
        assert_eq!(r.digest(), "sha256:ab");
        assert_eq!(r.get("actor"), "file");
        assert_eq!(r.get("reason"), "expired");
    }
}
