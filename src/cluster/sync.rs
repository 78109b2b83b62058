//! The cluster thread: connect, register, adopt, watch — and reconnect when etcd goes away.
//!
//! Each connection is a *session*: a lease, this node's registration, a full read of the
//! fleet's state (so a node that joins or reconnects adopts the fleet's active document and
//! rollout progress, after judging the document itself), then the watch from the revision
//! read. Candidates and tokens seen on the watch become jobs, judged one at a time through
//! this node's change gate, in the order etcd delivered them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use serde_json::{Value, json};

use super::Cluster;
use super::etcd::ClusterError;
use super::keys::{Key, hex_of};
use super::publish::{self, ActionRequest, DocPointer, RevertRequest};
use super::session::{LastOutcome, NodeRecord, Session};
use crate::change::audit::{Event as AuditEvent, EventKind};
use crate::change::gate::{Outcome, Source};
use crate::change::store;
use crate::rollout::fleet::FleetProgress;

/// Work for the job worker, in arrival order.
pub(super) enum Job {
    /// Judge the candidate stored at `P/docs/<hex>` with its tokens.
    Candidate {
        /// The key's hex.
        hex: String,
        /// When its revision was seen.
        seen: Instant,
    },
    /// An emergency review token.
    Review(String),
    /// A revert request.
    Revert(RevertRequest),
    /// Publish this node's `traffic.yaml` and approvals folder.
    PublishFiles,
    /// Answers once every job before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost(ClusterError),
}

// === impl Cluster ===

impl Cluster {
    /// The cluster thread's body.
    pub(super) fn run_thread(
        self: Arc<Self>,
        ready: std::sync::mpsc::Sender<Result<(), ClusterError>>,
    ) {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-cluster")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(ClusterError::Settings(format!(
                    "cannot start the cluster runtime: {e}"
                ))));
                return;
            }
        };
        let _ = self.handle.set(rt.handle().clone());
        rt.block_on(self.supervise(ready));
    }

    async fn supervise(self: Arc<Self>, ready: std::sync::mpsc::Sender<Result<(), ClusterError>>) {
        let rx = self
            .jobs_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().work(rx));
        }
        let mut ready = Some(ready);
        let mut shutdown = self.shutdown.subscribe();
        let mut backoff = Duration::from_millis(200);
        let mut was_connected = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.connect(was_connected).await {
                Ok((session, rev)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    backoff = Duration::from_millis(200);
                    was_connected = true;
                    let end = self.serve(&session, rev).await;
                    self.session.store(None);
                    self.set_connected(false);
                    self.metrics.nodes.set(0.0);
                    match end {
                        End::Shutdown => {
                            session.revoke().await;
                            return;
                        }
                        End::Lost(e) => {
                            tracing::warn!(error = %e, "Lost etcd: serving the active configuration; nothing activates and no rollout advances until it is back.");
                            self.view().last_error = Some(e.to_string());
                            self.audit_local(
                                AuditEvent::new(EventKind::ClusterDisconnected, "cluster")
                                    .with("reason", e.to_string()),
                            );
                        }
                    }
                }
                Err(e @ (ClusterError::NodeIdTaken { .. } | ClusterError::WrongPrefix { .. })) => {
                    tracing::error!(error = %e, "This node cannot join the fleet.");
                    self.view().last_error = Some(e.to_string());
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    backoff = self.ttl * 2;
                }
                Err(e) => {
                    if ready.is_some() {
                        let version = self.gate.lock().active().map(|a| a.doc.version);
                        tracing::warn!(error = %e, active_version = version, "etcd is unreachable at start: serving the persisted document (if any); nothing activates until etcd is reachable.");
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    } else {
                        tracing::debug!(error = %e, "etcd still unreachable.");
                    }
                    self.view().last_error = Some(e.to_string());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
            backoff = (backoff * 2).min(self.ttl.max(Duration::from_secs(1)));
        }
    }

    /// Opens a session: lease, fleet marker, registration, full read, adoption.
    async fn connect(
        self: &Arc<Self>,
        reconnect: bool,
    ) -> Result<(Arc<Session>, i64), ClusterError> {
        let s = Session::open(&self.conn, &self.keys, &self.node_id, self.ttl).await?;
        self.check_fleet(&s).await?;
        let record = {
            let mut v = self.view();
            let r = v
                .record
                .get_or_insert_with(|| NodeRecord::new(&self.node_id, &self.instance, &self.admin));
            let g = self.gate.lock();
            if let Some(a) = g.active() {
                r.version = a.doc.version;
                r.digest = a.digest.clone();
            }
            r.clone()
        };
        if let Err(e) = s.register(&record).await {
            s.revoke().await;
            return Err(e);
        }
        let s = Arc::new(s);
        self.session.store(Some(s.clone()));
        self.set_connected(true);
        let rev = match self.read_all(&s).await {
            Ok(rev) => rev,
            Err(e) => {
                self.session.store(None);
                self.set_connected(false);
                return Err(e);
            }
        };
        self.view().last_error = None;
        // Adopt before anything else: what the fleet runs is judged first.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.jobs.send(Job::Barrier(tx));
        let _ = tokio::time::timeout(self.ttl * 4 + Duration::from_secs(10), rx).await;
        let kind = if reconnect {
            EventKind::ClusterReconnected
        } else {
            EventKind::ClusterJoined
        };
        let event = AuditEvent::new(kind, "cluster")
            .with("prefix", self.keys.prefix())
            .with("endpoints", &self.conn.endpoints);
        self.audit_local(event.clone());
        self.audit_fleet(event, None);
        if reconnect {
            tracing::info!(node_id = %self.node_id, prefix = self.keys.prefix(), "Reconnected to the fleet.");
        } else {
            tracing::info!(node_id = %self.node_id, prefix = self.keys.prefix(), "Joined the fleet.");
        }
        self.publish_alone(&s).await;
        let _ = self.jobs.send(Job::PublishFiles);
        self.campaign(&s).await;
        self.nudge_runner();
        Ok((s, rev))
    }

    /// `P/fleet` names the trust environment that owns the prefix; another's is refused.
    async fn check_fleet(&self, s: &Session) -> Result<(), ClusterError> {
        let ours = self.settings.trust.environment.clone();
        let marker = super::session::to_json(&json!({ "environment": ours }));
        if s.put_if_absent(&self.keys.fleet(), marker, false).await? {
            tracing::warn!(
                prefix = self.keys.prefix(),
                "No fleet under this prefix yet: this node starts one."
            );
            return Ok(());
        }
        let theirs = s
            .get(&self.keys.fleet())
            .await?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["environment"].as_str().map(str::to_string))
            .unwrap_or_default();
        if theirs != ours {
            return Err(ClusterError::WrongPrefix {
                prefix: self.keys.prefix().to_string(),
                theirs,
                ours,
            });
        }
        Ok(())
    }

    /// Reads the fleet's state into the view and queues the candidates to judge: the fleet's
    /// active document first, then every newer one in publication order. Returns the revision
    /// read at (the watch starts after it).
    async fn read_all(&self, s: &Session) -> Result<i64, ClusterError> {
        let (kvs, rev) = s.get_prefix(&self.keys.all()).await?;
        let hw = self.gate.lock().high_water().version;
        let mut docs: Vec<(String, u64)> = Vec::new();
        // Documents at or below the fleet's high-water mark can only activate as the fleet's
        // active one (a joining node adopting it); the rest are history.
        let fleet_hw = kvs
            .iter()
            .find(|(k, _)| self.keys.parse(k) == Key::HighWater)
            .and_then(|(_, v)| serde_json::from_slice::<DocPointer>(v).ok());
        let active_hex = kvs
            .iter()
            .find(|(k, _)| self.keys.parse(k) == Key::Active)
            .and_then(|(_, v)| serde_json::from_slice::<DocPointer>(v).ok())
            .map(|a| hex_of(&a.digest).to_string());
        let floor = hw.max(fleet_hw.map_or(0, |p| p.version));
        let mut v = self.view();
        v.nodes.clear();
        v.rollouts.clear();
        v.leader = None;
        v.windows = Default::default();
        for (key, value) in &kvs {
            match self.keys.parse(key) {
                Key::Node(id) => {
                    if let Ok(r) = serde_json::from_slice::<NodeRecord>(value) {
                        v.nodes.insert(id.to_string(), r);
                    }
                }
                Key::Leader => v.leader = Some(String::from_utf8_lossy(value).into_owned()),
                Key::Active => v.active = serde_json::from_slice(value).ok(),
                Key::HighWater => v.high_water = serde_json::from_slice(value).ok(),
                Key::Rollout(name) => {
                    if let Ok(p) = serde_json::from_slice::<FleetProgress>(value) {
                        v.rollouts.insert(name.to_string(), p);
                    }
                }
                Key::Window { node, rollout } => {
                    if let Ok(p) = serde_json::from_slice(value) {
                        v.windows
                            .update(node, rollout, p, crate::clock::Clock::System.unix_secs());
                    }
                }
                Key::Doc(hex) => {
                    // What can never activate here is not judged again at every reconnect.
                    let is_active = active_hex.as_deref() == Some(hex);
                    if let Some(version) = publish::peek_version(value)
                        && version > hw
                        && (version > floor || is_active)
                    {
                        docs.push((hex.to_string(), version));
                    }
                }
                _ => {}
            }
        }
        self.metrics.nodes.set(v.nodes.len() as f64);
        let active = v.active.clone();
        drop(v);
        // The fleet's active document first (a joining node adopts it), then the rest by version.
        docs.sort_by_key(|(hex, version)| {
            let is_active = active.as_ref().is_some_and(|a| hex_of(&a.digest) == hex);
            (!is_active, *version)
        });
        let now = Instant::now();
        for (hex, _) in docs {
            let _ = self.jobs.send(Job::Candidate { hex, seen: now });
        }
        // A previous session's judgements may be stale: judge again what arrives.
        self.view().seen.clear();
        Ok(rev)
    }

    /// Serves one session until etcd is lost or the node shuts down.
    async fn serve(self: &Arc<Self>, s: &Arc<Session>, rev: i64) -> End {
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow() {
            return End::Shutdown;
        }
        let mut c = s.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let stream = match s.conn.call(c.watch(self.keys.all(), Some(opts))).await {
            Ok(w) => w,
            Err(e) => return End::Lost(e),
        };
        tokio::select! {
            e = s.keep_alive() => End::Lost(e),
            e = self.watch_loop(stream) => End::Lost(e),
            e = self.clone().heartbeat(s.clone()) => End::Lost(e),
            _ = shutdown.changed() => End::Shutdown,
        }
    }

    async fn watch_loop(self: &Arc<Self>, mut stream: etcd_client::WatchStream) -> ClusterError {
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return ClusterError::Unreachable {
                        endpoints: self.conn.endpoints.join(", "),
                        detail: "the watch stream closed".into(),
                    };
                }
                Err(e) => return self.conn.error(e),
            };
            if msg.canceled() {
                return ClusterError::Unreachable {
                    endpoints: self.conn.endpoints.join(", "),
                    detail: format!(
                        "the watch was cancelled ({}; compacted at revision {}): reading the fleet again",
                        msg.cancel_reason(),
                        msg.compact_revision()
                    ),
                };
            }
            let seen = Instant::now();
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let put = ev.event_type() == EventType::Put;
                self.on_event(&key, put, kv.value(), seen);
            }
        }
    }

    /// One watch event.
    fn on_event(self: &Arc<Self>, key: &str, put: bool, value: &[u8], seen: Instant) {
        match self.keys.parse(key) {
            Key::Node(id) => {
                let mut v = self.view();
                match serde_json::from_slice::<NodeRecord>(value) {
                    Ok(r) if put => {
                        v.nodes.insert(id.to_string(), r);
                    }
                    _ => {
                        v.nodes.remove(id);
                        v.windows.remove_node(id);
                    }
                }
                self.metrics.nodes.set(v.nodes.len() as f64);
            }
            Key::Leader => {
                let leader = put.then(|| String::from_utf8_lossy(value).into_owned());
                let lost = leader.as_deref() != Some(self.node_id.as_str()) && self.is_leader();
                self.view().leader = leader.clone();
                if lost {
                    tracing::warn!(leader = ?leader, "This node no longer leads the fleet.");
                    self.set_term(None);
                }
                if leader.is_none() {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Ok(s) = me.live() {
                            me.campaign(&s).await;
                        }
                    });
                }
            }
            Key::Doc(hex) if put => {
                let _ = self.jobs.send(Job::Candidate {
                    hex: hex.to_string(),
                    seen,
                });
            }
            Key::Token(hex) if put => {
                let token = String::from_utf8_lossy(value).trim().to_string();
                let act = crate::change::folder::peek_claims(&token)
                    .and_then(|c| c.get("act").and_then(Value::as_str).map(str::to_string));
                let job = if act.as_deref() == Some("review") {
                    Job::Review(token)
                } else {
                    Job::Candidate {
                        hex: hex.to_string(),
                        seen,
                    }
                };
                let _ = self.jobs.send(job);
            }
            Key::Active => self.view().active = serde_json::from_slice::<DocPointer>(value).ok(),
            Key::HighWater => {
                self.view().high_water = serde_json::from_slice::<DocPointer>(value).ok()
            }
            Key::Rollout(name) => {
                let p = put
                    .then(|| serde_json::from_slice::<FleetProgress>(value).ok())
                    .flatten();
                {
                    let mut v = self.view();
                    match p {
                        Some(p) => v.rollouts.insert(name.to_string(), p),
                        None => v.rollouts.remove(name),
                    };
                }
                if !self.is_leader() {
                    self.nudge_runner();
                }
            }
            Key::Action(id) if put => {
                let Ok(a) = serde_json::from_slice::<ActionRequest>(value) else {
                    return;
                };
                match &a.result {
                    Some(r) if a.from == self.node_id => {
                        self.view().results.insert(id.to_string(), r.clone());
                        self.changed.notify_waiters();
                    }
                    None if self.is_leader() => {
                        let me = self.clone();
                        tokio::spawn(async move { me.lead_action(a).await });
                    }
                    _ => {}
                }
            }
            Key::Revert(_) if put => {
                if let Ok(r) = serde_json::from_slice::<RevertRequest>(value) {
                    let _ = self.jobs.send(Job::Revert(r));
                }
            }
            Key::Window { node, rollout } => {
                let mut v = self.view();
                match put.then(|| serde_json::from_slice(value).ok()).flatten() {
                    Some(p) => {
                        v.windows
                            .update(node, rollout, p, crate::clock::Clock::System.unix_secs())
                    }
                    None => v.windows.remove(node, rollout),
                }
            }
            _ => {}
        }
    }

    /// The job worker: one job at a time, in order.
    async fn work(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Candidate { hex, seen } => self.judge_candidate(&hex, seen).await,
                Job::Review(token) => {
                    let sub = crate::change::folder::peek_sub(&token).unwrap_or_default();
                    let gate = self.gate.clone();
                    let o = tokio::task::spawn_blocking(move || gate.lock().approve(&token)).await;
                    if let Ok(o) = o {
                        self.after(&sub, o, None);
                    }
                }
                Job::Revert(r) => self.judge_revert(r).await,
                Job::PublishFiles => self.publish_files().await,
                Job::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Judges the candidate at `P/docs/<hex>` with every token stored for it.
    async fn judge_candidate(self: &Arc<Self>, hex: &str, seen: Instant) {
        let Ok(s) = self.live() else {
            // Judged again after the reconnect's full read.
            return;
        };
        let key = format!("{}{hex}", self.keys.docs());
        let bytes = match s.get(&key).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(key, error = %e, "Cannot read a candidate from etcd; it is judged again after reconnecting.");
                return;
            }
        };
        // The key only addresses the document: its digest is what its bytes hash to.
        let digest = store::digest(&bytes);
        let tokens: Vec<String> = match s.get_prefix(&self.keys.tokens_of(&digest)).await {
            Ok((kvs, _)) => kvs
                .into_iter()
                .map(|(_, v)| String::from_utf8_lossy(&v).trim().to_string())
                .filter(|t| {
                    crate::change::folder::peek_claims(t)
                        .is_none_or(|c| c.get("act").and_then(Value::as_str) != Some("review"))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(digest, error = %e, "Cannot read a candidate's tokens from etcd; it is judged again after reconnecting.");
                return;
            }
        };
        let mut sorted = tokens.clone();
        sorted.sort();
        let fingerprint = store::digest(sorted.join("\n").as_bytes());
        let repeat = self.view().seen.get(&digest) == Some(&fingerprint);
        if repeat {
            // Nothing new: answer waiters with the judgement already made.
            let last = self.view().judged.get(&digest).map(|j| j.outcome.clone());
            if let Some(o) = last {
                self.judged(&digest, o);
            }
            return;
        }
        let gate = self.gate.clone();
        let judged =
            tokio::task::spawn_blocking(move || gate.submit(bytes, Source::Cluster, &tokens)).await;
        let Ok(outcome) = judged else {
            tracing::error!(digest, "Judging a candidate panicked.");
            return;
        };
        self.view().seen.insert(digest.clone(), fingerprint);
        self.after(&digest, outcome, Some(seen));
    }

    /// What follows a judgement: waiters, this node's record, and — on activation — the
    /// fleet's active pointer, high-water mark and audit chain.
    fn after(self: &Arc<Self>, digest: &str, outcome: Outcome, seen: Option<Instant>) {
        let (name, reason) = match &outcome {
            Outcome::Activated { .. } => ("activated", String::new()),
            Outcome::Reverted { .. } => ("reverted", String::new()),
            Outcome::Pending { missing, .. } => ("pending", missing.clone()),
            Outcome::ReviewPending { missing, .. } => ("review_pending", missing.clone()),
            Outcome::Reviewed { .. } => ("reviewed", String::new()),
            Outcome::NoOp { detail } => ("no_op", detail.clone()),
            Outcome::Rejected(r) => ("rejected", r.reason.to_string()),
        };
        self.judged(digest, outcome.clone());
        let record = {
            let mut v = self.view();
            let Some(r) = v.record.as_mut() else { return };
            r.last = Some(LastOutcome {
                digest: digest.to_string(),
                outcome: name.to_string(),
                reason,
            });
            if let Some(a) = self.gate.lock().active() {
                r.version = a.doc.version;
                r.digest = a.digest.clone();
            }
            r.seen_at = crate::clock::rfc3339(std::time::SystemTime::now());
            r.clone()
        };
        let me = self.clone();
        let activated = match &outcome {
            Outcome::Activated {
                version, digest, ..
            } => Some((*version, digest.clone())),
            _ => None,
        };
        if let (Some(_), Some(seen)) = (&activated, seen) {
            self.metrics.sync.record(seen.elapsed().as_secs_f64());
        }
        let change = activated.as_ref().and_then(|_| self.active_change());
        tokio::spawn(async move {
            let Ok(s) = me.live() else { return };
            if let Err(e) = s.update_record(&record).await {
                tracing::debug!(error = %e, "Could not update this node's record.");
            }
            let Some((version, digest)) = activated else {
                return;
            };
            let p = DocPointer { version, digest };
            for key in [me.keys.active(), me.keys.high_water()] {
                if let Err(e) = publish::raise(&s, &key, &p).await {
                    tracing::warn!(key, error = %e, "Could not record the activation in etcd.");
                }
            }
            me.audit_fleet(
                AuditEvent::new(EventKind::ChangeActivated, "cluster")
                    .change(change.unwrap_or(Value::Null)),
                Some(format!("activated-{}", hex_of(&p.digest))),
            );
        });
        self.nudge_runner();
    }

    /// The `change` object of the active document, for the fleet chain.
    fn active_change(&self) -> Option<Value> {
        let g = self.gate.lock();
        let a = g.active()?;
        Some(json!({
            "id": a.doc.change.id,
            "version": a.doc.version,
            "digest": a.digest,
            "class": crate::change::classify::class_name(a.class),
            "author": a.doc.change.author,
            "approvers": a.approvers,
        }))
    }

    async fn judge_revert(self: &Arc<Self>, r: RevertRequest) {
        let gate = self.gate.clone();
        let (version, token) = (r.version, r.token.clone());
        let Ok(outcome) =
            tokio::task::spawn_blocking(move || gate.lock().revert(version, &token)).await
        else {
            return;
        };
        self.judged(&format!("revert:{}", r.id), outcome.clone());
        let digest = match &outcome {
            Outcome::Reverted { digest, .. } => digest.clone(),
            _ => crate::change::folder::peek_sub(&r.token).unwrap_or_default(),
        };
        if let Outcome::Reverted { version, digest } = &outcome
            && r.from == self.node_id
        {
            let me = self.clone();
            let (p, id) = (
                DocPointer {
                    version: *version,
                    digest: digest.clone(),
                },
                r.id.clone(),
            );
            tokio::spawn(async move {
                let Ok(s) = me.live() else { return };
                // A revert lowers the active version on purpose; the high-water mark stays.
                let _ = s.put(&me.keys.active(), super::session::to_json(&p)).await;
                let _ = s.delete(&me.keys.revert(&id)).await;
                me.audit_fleet(
                    AuditEvent::new(EventKind::ChangeReverted, "cluster")
                        .change(json!({ "version": p.version, "digest": p.digest })),
                    Some(format!("reverted-{id}")),
                );
            });
        }
        self.after(&digest, outcome, None);
    }

    /// Publishes this node's `traffic.yaml` with the approvals-folder tokens naming it, and
    /// every other folder token (an approval for a pending change may arrive that way).
    async fn publish_files(self: &Arc<Self>) {
        let Ok(s) = self.live() else { return };
        let paths = self.settings.paths.clone();
        let read = tokio::task::spawn_blocking(move || {
            let doc = std::fs::read(&paths.traffic).ok();
            let folder = crate::change::folder::Folder::read(&paths.approvals);
            (doc, folder)
        })
        .await;
        let Ok((doc, folder)) = read else { return };
        let fleet_hw = self.view().high_water.as_ref().map_or(0, |p| p.version);
        if let Some(bytes) = doc {
            let digest = store::digest(&bytes);
            let version = publish::peek_version(&bytes);
            // A ConfigMap that lags the fleet must not put old documents back into etcd.
            if version.is_some_and(|v| v > fleet_hw) {
                let tokens: Vec<String> = folder
                    .tokens
                    .iter()
                    .filter(|t| t.sub.as_deref() == Some(digest.as_str()))
                    .map(|t| t.token.clone())
                    .collect();
                match publish::candidate(&s, &bytes, &tokens).await {
                    Ok(true) => tracing::info!(
                        digest,
                        version,
                        "Published this node's traffic document to the fleet."
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not publish the traffic document; retrying after reconnecting.")
                    }
                }
            }
        }
        for t in &folder.tokens {
            let Some(sub) = &t.sub else { continue };
            if s.get(&self.keys.doc(sub)).await.ok().flatten().is_none() {
                continue;
            }
            if let Err(e) = publish::token(&s, sub, &t.token).await {
                tracing::warn!(file = %t.file, error = %e, "Could not publish an approval token.");
            }
        }
    }

    /// Tries to lead; on success, says so in both audit chains.
    pub(super) async fn campaign(self: &Arc<Self>, s: &Session) {
        if self.is_leader() {
            return;
        }
        match s.campaign().await {
            Ok(Some(term)) => {
                if !self.won_term(term) {
                    return;
                }
                self.view().leader = Some(self.node_id.clone());
                tracing::info!(node_id = %self.node_id, term = term.0, "This node now leads the fleet.");
                let event =
                    AuditEvent::new(EventKind::ClusterLeader, "cluster").with("term", term.0);
                self.audit_local(event.clone());
                self.audit_fleet(event, None);
                self.nudge_runner();
                let me = self.clone();
                tokio::spawn(async move { me.pending_actions().await });
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "Campaign failed."),
        }
    }
}
