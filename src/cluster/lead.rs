//! What a node does for the fleet's rollouts: every node publishes its windows and record;
//! the leader carries out operator actions that arrive through etcd; and the [`Fleet`] the
//! rollout runner consults (role, summed windows, fenced commits, the leader's progress).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::TxnOp;
use serde_json::{Value, json};

use crate::change::audit::{Event as AuditEvent, EventKind};

use super::etcd::ClusterError;
use super::keys::Key;
use super::publish::{self, ActionRequest, Alone};
use super::session::{Session, Term, to_json};
use super::windows::{MonoToUnix, Published, fleet_stats};
use super::{Cluster, FleetRefusal};
use crate::rollout::fleet::{Fleet, FleetProgress, Role};
use crate::rollout::runner::{Action, DocRef};
use crate::rollout::{Counts, RolloutWindows, WindowStats};

/// How often the heartbeat looks for work (windows due, the record to refresh).
const BEAT: Duration = Duration::from_millis(200);

/// How often a node rewrites its record when nothing changed ("last seen").
const RECORD_EVERY: Duration = Duration::from_secs(10);

// === impl Cluster ===

impl Cluster {
    /// Publishes windows twice every rollout interval, refreshes this node's record, and campaigns
    /// when the fleet has no leader. Returns only on an etcd error.
    pub(super) async fn heartbeat(self: Arc<Self>, s: Arc<Session>) -> ClusterError {
        let mut last_pub: HashMap<String, Instant> = HashMap::new();
        let mut last_record = Instant::now();
        loop {
            tokio::time::sleep(BEAT).await;
            // Off the runtime: the runner's lock may be held by a tick waiting on this
            // runtime for a fenced write.
            let runner = self.runner().cloned();
            let live = tokio::task::spawn_blocking(move || {
                runner.map(|r| r.fleet_windows()).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let map = MonoToUnix::now();
            let now_mono = crate::clock::mono_secs(Instant::now());
            for (name, windows, interval) in live {
                // Twice per interval: the leader's verdict, which comes at its own tick, then
                // sees counts at most half an interval old.
                let every = (interval / 2).max(BEAT);
                let due = last_pub
                    .get(&name)
                    .is_none_or(|t| t.elapsed() + BEAT / 2 >= every);
                if !due {
                    continue;
                }
                last_pub.insert(name.clone(), Instant::now());
                // The seconds since the last publication, the current partial one included.
                let secs = interval.as_secs() + 2;
                let p = Published::of(&windows, now_mono, secs, |m| map.unix(m));
                if p.seconds.is_empty() {
                    continue;
                }
                if let Err(e) = s
                    .put_leased(&self.keys.window(&self.node_id, &name), to_json(&p))
                    .await
                {
                    return e;
                }
            }
            if last_record.elapsed() >= RECORD_EVERY {
                last_record = Instant::now();
                let record = self.view().record.clone();
                if let Some(mut r) = record {
                    r.seen_at = crate::clock::rfc3339(std::time::SystemTime::now());
                    if let Err(e) = s.update_record(&r).await {
                        return e;
                    }
                    self.view().record = Some(r);
                }
            }
            let leaderless = self.view().leader.is_none();
            if leaderless {
                self.campaign(&s).await;
            }
        }
    }

    /// The leader carries out an operator action that another node took, and writes the
    /// result back for it.
    pub(super) async fn lead_action(self: Arc<Self>, a: ActionRequest) {
        let Some(runner) = self.runner().cloned() else {
            return;
        };
        let Some(action) = Action::parse(&a.action) else {
            return;
        };
        let req = a.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(alone) = &req.alone
                && !runner.runs_under(&req.rollout, &alone.digest)
            {
                return Err(crate::rollout::runner::ActionRefused {
                    status: 409,
                    code: "stale_rollback",
                    detail: "the rollback was made under another document than the fleet's".into(),
                });
            }
            runner.act(&req.rollout, action, req.approval.as_deref())
        })
        .await;
        let result = match done {
            Ok(Ok(status)) => json!({ "status": 200, "body": status }),
            Ok(Err(r)) => {
                json!({ "status": r.status, "body": { "error": r.code, "detail": r.detail } })
            }
            Err(e) => {
                json!({ "status": 500, "body": { "error": "internal", "detail": e.to_string() } })
            }
        };
        let Ok(s) = self.live() else { return };
        let mut a = a;
        a.result = Some(result);
        if a.alone.is_some() {
            // Nobody waits for a cut-off node's rollback: done is done.
            let _ = s.delete(&self.keys.action(&a.id)).await;
            return;
        }
        if let Err(e) = publish::action(&s, &a).await {
            tracing::warn!(id = %a.id, error = %e, "Could not write an action's result.");
        }
    }

    /// A new leader carries out the actions that arrived while nobody led.
    pub(super) async fn pending_actions(self: Arc<Self>) {
        let Ok(s) = self.live() else { return };
        let Ok((kvs, _)) = s.get_prefix(&self.keys.actions()).await else {
            return;
        };
        for (key, value) in kvs {
            if !matches!(self.keys.parse(&key), Key::Action(_)) {
                continue;
            }
            if let Ok(a) = serde_json::from_slice::<ActionRequest>(&value)
                && a.result.is_none()
            {
                self.clone().lead_action(a).await;
            }
        }
    }

    /// Publishes the rollbacks this node made while cut off, as abort actions for the leader.
    pub(super) async fn publish_alone(&self, s: &Session) {
        let alone = std::mem::take(&mut self.view().alone);
        for a in alone {
            tracing::info!(rollout = %a.rollout, "Publishing the rollback made while cut off from etcd.");
            if let Err(e) = publish::action(s, &a).await {
                tracing::warn!(error = %e, "Could not publish a rollback made while cut off; retrying at the next reconnect.");
                self.view().alone.push(a);
            }
        }
    }

    /// Lets the runner apply what changed (the leader's progress, a new role) now.
    pub(super) fn nudge_runner(&self) {
        let Some(runner) = self.runner().cloned() else {
            return;
        };
        let Some(handle) = self.handle.get() else {
            return;
        };
        handle.spawn_blocking(move || runner.follow_fleet());
    }

    /// Forwards an operator action to the leader through etcd and waits for its result
    /// (`Ok(None)`: this node leads, or is cut off and may act alone — act locally).
    pub async fn forward_action(
        self: &Arc<Self>,
        rollout: &str,
        action: Action,
        approval: Option<String>,
    ) -> Result<Option<(u16, Value)>, FleetRefusal> {
        match self.role() {
            Role::Lead => return Ok(None),
            // Cut off, an operator may still stop a rollout here; the runner allows only that.
            Role::Frozen | Role::CutOff => return Ok(None),
            Role::Follow => {}
        }
        let s = self.live()?;
        if self.view().leader.is_none() {
            return Err(FleetRefusal {
                status: 503,
                code: "no_leader",
                detail: format!(
                    "the fleet has no leader right now; a new one is elected within {} s, retry then",
                    self.ttl.as_secs()
                ),
            });
        }
        let a = ActionRequest {
            id: publish::request_id(),
            rollout: rollout.to_string(),
            action: action.as_str().to_string(),
            approval,
            from: self.node_id.clone(),
            alone: None,
            result: None,
        };
        let me = self.clone();
        let sent = {
            let a = a.clone();
            self.on_cluster(async move { publish::action(&s, &a).await })
                .await
        };
        match sent {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(FleetRefusal::unavailable(e.to_string())),
            None => return Err(FleetRefusal::unavailable("the cluster thread stopped")),
        }
        let wait = self.ttl * 2 + Duration::from_secs(5);
        let result = me.wait_result(&a.id, wait).await;
        let id = a.id.clone();
        let cleanup = self.clone();
        let _ = self
            .on_cluster(async move {
                if let Ok(s) = cleanup.live() {
                    let _ = s.delete(&cleanup.keys.action(&id)).await;
                }
            })
            .await;
        match result {
            Some(r) => {
                let status = r["status"].as_u64().unwrap_or(500) as u16;
                Ok(Some((status, r["body"].clone())))
            }
            None => Err(FleetRefusal {
                status: 504,
                code: "leader_unavailable",
                detail: format!(
                    "the leader did not answer within {} s; the action may still be carried out",
                    wait.as_secs()
                ),
            }),
        }
    }
}

impl Fleet for Cluster {
    fn role(&self) -> Role {
        Cluster::role(self)
    }

    fn stats(
        &self,
        name: &str,
        local: &RolloutWindows,
        now_sec: u64,
        window: Duration,
    ) -> (WindowStats, WindowStats) {
        let v = self.view();
        let (stable, canary) = fleet_stats(
            &v.windows,
            &self.node_id,
            name,
            local,
            now_sec,
            window,
            MonoToUnix::now(),
        );
        (stable, canary)
    }

    fn second(&self, name: &str, local: &RolloutWindows, mono_sec: u64) -> (Counts, Counts) {
        let (mut stable, mut canary) = (Counts::default(), Counts::default());
        local.stable.add_second(mono_sec, &mut stable);
        local.canary.add_second(mono_sec, &mut canary);
        let unix = MonoToUnix::now().unix(mono_sec);
        self.view()
            .windows
            .add_range(name, &self.node_id, unix, unix, &mut stable, &mut canary);
        (stable, canary)
    }

    fn commit(&self, name: &str, mut progress: FleetProgress) -> Result<(), String> {
        progress.leader = self.node_id.clone();
        let term = self.term.load(Ordering::Acquire);
        let Some(s) = self.session.load_full().filter(|_| term != 0) else {
            return Err("this node does not lead the fleet".into());
        };
        let key = self.keys.rollout(name);
        let value = to_json(&progress);
        let timeout = s.conn.timeout + Duration::from_millis(500);
        let done = self.block_on(timeout, async move {
            s.fenced(Term(term as i64), vec![TxnOp::put(key, value, None)])
                .await
        });
        match done {
            Some(Ok(_)) => {
                self.view().rollouts.insert(name.to_string(), progress);
                Ok(())
            }
            Some(Err(ClusterError::Deposed)) => {
                tracing::warn!(
                    rollout = name,
                    "A fenced write failed: this node no longer leads."
                );
                self.set_term(None);
                Err(ClusterError::Deposed.to_string())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("etcd did not answer in time".into()),
        }
    }

    fn progress(&self, name: &str) -> Option<FleetProgress> {
        self.view().rollouts.get(name).cloned()
    }

    fn audit(&self, event: AuditEvent) {
        self.audit_fleet(event, None);
    }

    fn rolled_back_alone(&self, name: &str, document: &DocRef, reason: &str) {
        tracing::warn!(
            rollout = name,
            reason,
            "Rolled back on this node's own traffic while cut off from etcd; the fleet learns it on reconnect."
        );
        self.audit_local(
            AuditEvent::new(EventKind::ClusterRolledBackAlone, "cluster")
                .with("rollout", name)
                .with("reason", reason),
        );
        self.view().alone.push(ActionRequest {
            id: publish::request_id(),
            rollout: name.to_string(),
            action: "abort".into(),
            approval: None,
            from: self.node_id.clone(),
            alone: Some(Alone {
                digest: document.digest.clone(),
                reason: reason.to_string(),
            }),
            result: None,
        });
    }
}
