//! Cluster mode (SPEC §12): a fleet of sluice instances on etcd v3 acts as one — one active
//! document, one rollout state, verdicts on the fleet's traffic. Control plane only: the data
//! plane does not know a fleet exists.
//!
//! - [`keys`]: the key layout under `cluster.etcd.prefix`.
//! - [`etcd`]: client options (TLS), call timeouts, [`ClusterError`].
//! - [`session`]: lease, node registration (node-id collisions), election and fenced writes.
//! - [`publish`]: candidates, tokens, reverts and operator actions into etcd, idempotent.
//! - `sync` (private): the watch — every candidate and token goes through this node's own
//!   change gate; rollout progress goes to the runner.
//! - `lead` (private): what the leader does besides ticking (operator actions, housekeeping)
//!   and what every node publishes (windows, its record).
//! - [`windows`]: per-second fleet windows and their sum.
//! - [`audit`]: the fleet audit chain (compare-and-swap on its head) and its verification.
//! - [`status`]: `GET /api/v1/cluster` and `sluice status --etcd`.
//!
//! **etcd carries, it does not vouch.** Nothing read from etcd activates except through
//! [`Gate`](crate::change::gate::Gate) with this node's trust store and high-water mark;
//! activation happens only through the watch, even for what this node published itself.
//!
//! **Fail static, fail safe.** Without etcd a node serves what it has: nothing activates and
//! no rollout advances (role `Frozen`); after `lease_ttl` cut off it judges its own traffic
//! for rollback only (role `CutOff`) and publishes that abort when it reconnects.
//!
//! Threads: the cluster runs on a runtime of its own (two workers); gate and runner calls,
//! which fsync and take locks, run on its blocking pool — never on a worker, because the
//! runner may wait on this runtime (a fenced write) while holding its lock.

pub mod audit;
pub mod etcd;
pub mod keys;
mod lead;
pub mod publish;
pub mod requests;
pub mod session;
pub mod status;
mod sync;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use metrics::{Gauge, Histogram};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use crate::change::audit::Event as AuditEvent;
use crate::change::gate::{GateHandle, Outcome};
use crate::config::Settings;
use crate::rollout::Runner;
use crate::rollout::fleet::{FleetProgress, Role};
use crate::telemetry::{self, Registry};

pub use etcd::{ClusterError, Conn};
pub use keys::Keys;
pub use session::{NodeRecord, Session, Term};

/// The cluster side of one node.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    me: Weak<Cluster>,
    instance: String,
    keys: Keys,
    conn: Conn,
    ttl: Duration,
    settings: Arc<Settings>,
    gate: GateHandle,
    runner: OnceLock<Arc<Runner>>,
    admin: String,
    /// The live session, while connected.
    session: ArcSwapOption<Session>,
    connected: AtomicBool,
    /// Leadership term while leading (0: not leading).
    term: AtomicU64,
    view: Mutex<View>,
    /// Woken whenever a judgement, an action result or the connection changes.
    changed: Notify,
    jobs: mpsc::UnboundedSender<sync::Job>,
    jobs_rx: Mutex<Option<mpsc::UnboundedReceiver<sync::Job>>>,
    metrics: Metrics,
    handle: OnceLock<tokio::runtime::Handle>,
    shutdown: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// When the node lost etcd (or started without it); `None` while connected.
    cut_since: Mutex<Option<Instant>>,
}

/// What this node knows of the fleet (from the watch).
#[derive(Default)]
struct View {
    nodes: BTreeMap<String, NodeRecord>,
    leader: Option<String>,
    rollouts: BTreeMap<String, FleetProgress>,
    active: Option<publish::DocPointer>,
    high_water: Option<publish::DocPointer>,
    windows: windows::FleetWindows,
    /// This node's judgement of each candidate, by digest, with a sequence number.
    judged: HashMap<String, Judged>,
    /// Results of reverts and operator actions, by request id.
    results: HashMap<String, Value>,
    judge_seq: u64,
    /// Rollbacks made alone (cut off), to publish on reconnect.
    alone: Vec<publish::ActionRequest>,
    /// This node's record as last written.
    record: Option<NodeRecord>,
    last_error: Option<String>,
    /// Digests and token sets already judged (skip repeats).
    seen: HashMap<String, String>,
}

/// One judgement, numbered so that a waiter can tell a fresh one from an older one.
#[derive(Debug, Clone)]
struct Judged {
    seq: u64,
    outcome: Outcome,
}

struct Metrics {
    connected: Gauge,
    leader: Gauge,
    nodes: Gauge,
    sync: Histogram,
}

/// Why a request to the fleet could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct FleetRefusal {
    /// HTTP status for the admin API.
    pub status: u16,
    /// snake_case reason code.
    pub code: &'static str,
    /// What happened, for people.
    pub detail: String,
}

pub use crate::rollout::fleet::CLUSTER_UNAVAILABLE;

// === impl FleetRefusal ===

impl FleetRefusal {
    fn unavailable(detail: impl Into<String>) -> FleetRefusal {
        FleetRefusal {
            status: 503,
            code: CLUSTER_UNAVAILABLE,
            detail: detail.into(),
        }
    }
}

// === impl Cluster ===

impl Cluster {
    /// Starts the cluster side of a node: reads TLS files, connects (waiting at most a few
    /// seconds), registers and adopts the fleet's document before returning. A node-id
    /// collision or a prefix of another environment is an error; an unreachable etcd is not —
    /// the node serves its persisted document and keeps trying.
    pub fn start(
        settings: Arc<Settings>,
        gate: GateHandle,
        registry: &Registry,
        admin: std::net::SocketAddr,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let Some(c) = settings.cluster.clone() else {
            return Err(ClusterError::Settings("no cluster section".into()));
        };
        let conn = Conn::new(&c)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let metrics = Metrics {
            connected: registry.gauge(telemetry::CLUSTER_CONNECTED, &[]),
            leader: registry.gauge(telemetry::CLUSTER_LEADER, &[]),
            nodes: registry.gauge(telemetry::CLUSTER_NODES, &[]),
            sync: registry.histogram(telemetry::CLUSTER_SYNC, &[]),
        };
        metrics.connected.set(0.0);
        metrics.leader.set(0.0);
        metrics.nodes.set(0.0);
        let instance = hex::encode(rand::random::<[u8; 8]>());
        let cluster = Arc::new_cyclic(|me| Cluster {
            node_id: c.node_id(),
            me: me.clone(),
            instance,
            keys: Keys::new(c.prefix()),
            conn,
            ttl: c.lease_ttl.0,
            settings,
            gate,
            runner: OnceLock::new(),
            admin: admin.to_string(),
            session: ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
            term: AtomicU64::new(0),
            view: Mutex::new(View::default()),
            changed: Notify::new(),
            jobs: tx,
            jobs_rx: Mutex::new(Some(rx)),
            metrics,
            handle: OnceLock::new(),
            shutdown,
            thread: Mutex::new(None),
            cut_since: Mutex::new(Some(Instant::now())),
        });
        cluster.gate.lock().set_folder_tokens(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let me = cluster.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-cluster".into())
            .spawn(move || me.run_thread(ready_tx))
            .map_err(|e| ClusterError::Settings(format!("cannot start the cluster thread: {e}")))?;
        *cluster.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        // The first connection is awaited, bounded: a fleet member should serve the fleet's
        // document from its first request, but an unreachable etcd must not stop it serving.
        let first = ready_rx
            .recv_timeout(cluster.ttl * 2 + Duration::from_secs(3))
            .unwrap_or(Ok(()));
        if let Err(e) = first {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    /// Hands the cluster the rollout runner (created after the gate).
    pub fn attach_runner(&self, runner: Arc<Runner>) {
        let _ = self.runner.set(runner);
    }

    /// The traffic document or the approvals folder changed on disk: publish them (in
    /// cluster mode files are sources like any other; activation comes through the watch).
    pub fn files_changed(&self) {
        let _ = self.jobs.send(sync::Job::PublishFiles);
    }

    /// Stops: revokes the lease (handing leadership over at once) and joins the thread.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// True while connected to etcd with a live lease.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// True while this node leads.
    pub fn is_leader(&self) -> bool {
        self.connected() && self.term.load(Ordering::Acquire) != 0
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This node's role for the rollout runner.
    pub fn role(&self) -> Role {
        if self.connected() {
            return if self.is_leader() {
                Role::Lead
            } else {
                Role::Follow
            };
        }
        let since = *self.cut_since.lock().unwrap_or_else(|p| p.into_inner());
        match since {
            Some(t) if t.elapsed() >= self.ttl => Role::CutOff,
            _ => Role::Frozen,
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // Every write under this lock leaves the view consistent.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runner(&self) -> Option<&Arc<Runner>> {
        self.runner.get()
    }

    /// The live session, or why there is none.
    fn live(&self) -> Result<Arc<Session>, FleetRefusal> {
        match self.session.load_full() {
            Some(s) if self.connected() => Ok(s),
            _ => {
                let why = self
                    .view()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not connected yet".into());
                Err(FleetRefusal::unavailable(format!(
                    "etcd is unreachable ({why}); no change can activate while the fleet cannot agree, and the active configuration keeps serving"
                )))
            }
        }
    }

    /// Runs `fut` on the cluster runtime and waits for it from any thread (never from the
    /// cluster runtime itself), at most `timeout`.
    fn block_on<T: Send + 'static>(
        &self,
        timeout: Duration,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let handle = self.handle.get()?;
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(timeout).ok()
    }

    /// Runs `fut` on the cluster runtime and awaits it from another runtime (the admin API's).
    async fn on_cluster<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let handle = self.handle.get()?;
        handle.spawn(fut).await.ok()
    }

    /// Appends a local audit event (`cluster.*`).
    fn audit_local(&self, event: AuditEvent) {
        let event = event.with("node", &self.node_id);
        let kind = event.kind();
        if let Err(e) = self.gate.lock().record(event) {
            tracing::error!(event = %kind, error = %e, "Could not append to the audit log.");
        }
    }

    fn me(&self) -> Option<Arc<Cluster>> {
        self.me.upgrade()
    }

    /// Appends to the fleet chain in the background (retrying while connected); with
    /// `once`, only the first append with that key fleet-wide happens.
    fn audit_fleet(&self, event: AuditEvent, once: Option<String>) {
        let (Some(me), Some(handle)) = (self.me(), self.handle.get()) else {
            return;
        };
        handle.spawn(async move {
            let kind = event.kind();
            for attempt in 0..5u32 {
                let Ok(s) = me.live() else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                match audit::append(&s, event.clone(), once.as_deref()).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(event = %kind, attempt, error = %e, "Could not append to the fleet audit chain; retrying.");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
            tracing::error!(event = %kind, "Gave up appending to the fleet audit chain.");
        });
    }

    fn set_connected(&self, on: bool) {
        self.connected.store(on, Ordering::Release);
        self.metrics.connected.set(if on { 1.0 } else { 0.0 });
        let mut cut = self.cut_since.lock().unwrap_or_else(|p| p.into_inner());
        *cut = if on {
            None
        } else {
            Some(cut.unwrap_or_else(Instant::now))
        };
        drop(cut);
        if !on {
            self.set_term(None);
        }
        self.changed.notify_waiters();
    }

    fn set_term(&self, term: Option<Term>) {
        let t = term.map_or(0, |t| t.0.max(0) as u64);
        self.term.store(t, Ordering::Release);
        self.metrics.leader.set(if t != 0 { 1.0 } else { 0.0 });
    }

    /// Sets a term won by a campaign; false when this node already held it. Campaigns run
    /// from the lead loop and the watch at once, and both may win the same term: only the
    /// first reports it, so `cluster.leader` is audited once per term.
    fn won_term(&self, term: Term) -> bool {
        let t = term.0.max(0) as u64;
        let prev = self.term.swap(t, Ordering::AcqRel);
        self.metrics.leader.set(if t != 0 { 1.0 } else { 0.0 });
        prev != t
    }

    /// Records a judgement for waiters and status.
    fn judged(&self, digest: &str, outcome: Outcome) {
        let mut v = self.view();
        v.judge_seq += 1;
        let seq = v.judge_seq;
        v.judged.insert(digest.to_string(), Judged { seq, outcome });
        drop(v);
        self.changed.notify_waiters();
    }

    fn judge_seq(&self) -> u64 {
        self.view().judge_seq
    }

    /// Waits until this node judged `digest` after judgement number `after`.
    async fn wait_judged(&self, digest: &str, after: u64, timeout: Duration) -> Option<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(j) = self.view().judged.get(digest)
                && j.seq > after
            {
                return Some(j.outcome.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits for the result of request `id` (a revert or an operator action).
    async fn wait_result(&self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(r) = self.view().results.remove(id) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
