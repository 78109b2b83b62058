//! The one change gate: every path that can change what is served — startup, the file
//! watcher, the admin API (push, approvals), revert — goes through the gate, and every new
//! document through one function, [`Gate::consider`]'s judgement. There is no second way in.
//!
//! parse → anti-rollback → diff and classify → verify tokens → policy (the pure
//! [`assess`]) → then, by ruling: activate (build snapshot → persist → audit → swap), keep
//! pending (`state/pending/`), or refuse (audit, metric, log — all with the reason code).
//! The audit line is the commit point: a document is active after a restart only if the
//! log's last activation names its digest, and the high-water mark, the open emergency
//! reviews and the activation history are all re-derived from the log at start.
//!
//! - [`handle`]: the gate as the control plane shares it; reading and resolving a
//!   candidate ([`Candidate::prepare`]) happen before its lock is taken.
//! - [`approvals`]: tokens arriving later (API, folder), re-checks, emergency reviews.
//! - [`revert`]: re-activating an earlier document; single-use tokens.
//! - [`status`]: the status document.

mod approvals;
mod handle;
mod revert;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::assess::{ChangeInput, Ruling, assess};
use super::audit::{AuditLog, Event, EventKind, Head, Record, Replay};
use super::classify::{Classification, class_name};
use super::folder::Folder;
use super::pending::{self, PendingChange, Shortfalls};
use super::policy::Decision;
use super::reason::{Reason, Refusal};
use super::reviews::{self, Review};
use super::store::{self, HighWater, StateDir};
use super::token::Act;
use super::trust::TrustStore;
use crate::clock::{self, Clock};
use crate::config::Settings;
use crate::config::traffic::{ChangeClass, CheckContext, ParsedTraffic, TrafficDoc};
use crate::snapshot::{Addresses, BuildCtx, Published, Snapshot};
use crate::telemetry::{self, Registry};

pub use approvals::REJUDGE_EVERY_SECS;
pub use handle::GateHandle;

/// Where a candidate (or a token) came from; recorded as the audit `actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `traffic.yaml` read at start.
    Start,
    /// `traffic.yaml` or the approvals folder changed on disk, or a periodic re-check.
    File,
    /// `PUT /api/v1/traffic`.
    Push,
    /// `POST /api/v1/approvals`.
    Approval,
    /// `POST /api/v1/revert`.
    Revert,
    /// sluice itself (dropping what can never activate).
    Sluice,
    /// A candidate or token delivered by the fleet's etcd watch (SPEC §12).
    Cluster,
}

/// What happened to a candidate, a token or a revert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Now serving (HTTP 200).
    Activated {
        /// Version.
        version: u64,
        /// Digest.
        digest: String,
        /// Class it activated as.
        class: ChangeClass,
    },
    /// Valid, short of approvals: kept in `state/pending/` (HTTP 202).
    Pending {
        /// Version.
        version: u64,
        /// Digest.
        digest: String,
        /// Class it is handled as.
        class: ChangeClass,
        /// What is missing, as a sentence.
        missing: String,
    },
    /// An earlier document serves again (HTTP 200).
    Reverted {
        /// Its version.
        version: u64,
        /// Its digest.
        digest: String,
    },
    /// An emergency change's review is complete (HTTP 200).
    Reviewed {
        /// Its version.
        version: u64,
        /// Its digest.
        digest: String,
    },
    /// A review token was kept; the review still lacks some (HTTP 202).
    ReviewPending {
        /// The emergency's version.
        version: u64,
        /// Its digest.
        digest: String,
        /// What is missing, as a sentence.
        missing: String,
    },
    /// Nothing to do (already active, or no change) (HTTP 200).
    NoOp {
        /// Why.
        detail: String,
    },
    /// Refused; the active document keeps serving.
    Rejected(Refusal),
}

/// A candidate document, parsed and its hostnames resolved before the gate's lock is
/// taken ([`Candidate::prepare`]); the gate then judges it without doing I/O for it.
#[derive(Debug)]
pub struct Candidate {
    bytes: Vec<u8>,
    digest: String,
    parsed: Result<ParsedTraffic, Refusal>,
    /// `None` for a pending change judged again: the gate uses what it resolved at submission.
    addresses: Option<Addresses>,
}

/// The active document.
#[derive(Debug, Clone)]
pub struct Active {
    /// The document.
    pub doc: TrafficDoc,
    /// Its JSON form (for diffs).
    pub json: Value,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Class it activated as.
    pub class: ChangeClass,
    /// Approvers recorded at activation (`{principal, role, kid, iat}`).
    pub approvers: Vec<Value>,
    /// RFC 3339 activation time.
    pub activated_at: String,
    /// Accepted departures from the flagd schema (SPEC §4), shown in status.
    pub warnings: Vec<crate::config::ConfigError>,
}

/// A document activated at some point (from `change.activated` records): what a revert may
/// restore.
#[derive(Debug, Clone)]
struct Activated {
    digest: String,
    /// The `change` object of its activation record.
    change: Value,
}

/// The change gate: owns the state directory, the audit log, the active document, the
/// pending changes and the open emergency reviews.
pub struct Gate {
    settings: Arc<Settings>,
    trust: Arc<TrustStore>,
    listeners: Vec<String>,
    registry: Registry,
    published: Arc<Published>,
    clock: Clock,
    state: StateDir,
    audit: AuditLog,
    active: Option<Active>,
    hw: HighWater,
    /// Every activated document by version (versions only increase, so one each).
    history: BTreeMap<u64, Activated>,
    /// Pending changes by digest.
    pending: BTreeMap<String, PendingChange>,
    /// Emergency changes awaiting review, oldest first.
    reviews: Vec<Review>,
    /// Replay keys of spent single-use tokens (`revert`, `promote`).
    used: BTreeSet<String>,
    last_rejected: Option<(String, Reason)>,
    /// Approval files already reported as unusable (file name + content digest).
    reported_files: HashSet<String>,
    /// The folder fingerprint and time of the last full re-check.
    last_recheck: Option<(String, u64)>,
    /// Whether the approvals folder feeds the gate. In cluster mode it does not: the folder's
    /// tokens are published to etcd and reach every node through the watch.
    folder_tokens: bool,
    /// Hostnames of pending changes, resolved when they were submitted, by digest.
    resolved: HashMap<String, Addresses>,
}

const USED_TOKENS: &str = "used_tokens.json";

// === impl Candidate ===

impl Candidate {
    /// Parses `bytes` against the listener names of `sluice.yaml` and resolves the
    /// hostnames of its upstreams. Blocking (DNS): call it before taking the gate's lock.
    pub fn prepare(bytes: Vec<u8>, listeners: &[String]) -> Candidate {
        let parsed = parse_doc(&bytes, listeners);
        let addresses = Some(match &parsed {
            Ok(p) => Addresses::resolve(&p.doc),
            Err(_) => Addresses::default(),
        });
        Candidate {
            digest: store::digest(&bytes),
            bytes,
            parsed,
            addresses,
        }
    }

    /// A pending change judged again under the lock: parsed (CPU only), not resolved.
    fn pending(bytes: Vec<u8>, listeners: &[String]) -> Candidate {
        Candidate {
            digest: store::digest(&bytes),
            parsed: parse_doc(&bytes, listeners),
            bytes,
            addresses: None,
        }
    }
}

/// Parses and checks a document against the listener names of `sluice.yaml`.
fn parse_doc(bytes: &[u8], listeners: &[String]) -> Result<ParsedTraffic, Refusal> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Reason::InvalidDocument.because(format!("the document is not UTF-8: {e}")))?;
    let ctx = CheckContext {
        listeners: Some(listeners.to_vec()),
    };
    TrafficDoc::parse(text, &ctx).map_err(|errs| Reason::InvalidDocument.because(errs.to_string()))
}

/// The `change` object of an audit record (SPEC §11).
fn change_json(
    doc: &TrafficDoc,
    digest: &str,
    class: ChangeClass,
    author_kid: &str,
    approvers: &[Value],
) -> Value {
    let mut c = json!({
        "id": doc.change.id,
        "version": doc.version,
        "digest": digest,
        "class": class_name(class),
        "author": doc.change.author,
        "approvers": approvers,
    });
    if !author_kid.is_empty() {
        c["author_kid"] = json!(author_kid);
    }
    c
}

fn source_actor(s: Source) -> &'static str {
    match s {
        Source::Start => "startup",
        Source::File => "file",
        Source::Push | Source::Approval | Source::Revert => "admin",
        Source::Sluice => "sluice",
        Source::Cluster => "cluster",
    }
}

// === impl Gate ===

impl Gate {
    /// Opens the state, audits `sluice.started`, restores the last activated document, the
    /// pending changes and the open emergency reviews.
    pub fn open(
        settings: Arc<Settings>,
        trust: Arc<TrustStore>,
        published: Arc<Published>,
        registry: Registry,
        clock: Clock,
    ) -> std::io::Result<Gate> {
        let state = StateDir::open(&settings.paths.state_dir)?;
        let (audit, entries) = AuditLog::open(&state.audit_path())?;
        // Every reason at zero from the start: an alert on `increase()` sees the first
        // refusal too (a series born at 1 shows no increase).
        for r in Reason::ALL {
            let _ = registry.counter(telemetry::CONFIG_REJECTIONS, &[("reason", r.as_str())]);
        }
        let listeners = settings.listeners.iter().map(|l| l.name.clone()).collect();
        let mut hw = state.high_water()?.unwrap_or(HighWater {
            version: 0,
            digest: String::new(),
        });
        // The log is the commit record: the high-water mark can lag it after a crash, never lead it.
        let replay = Replay::of(&entries);
        if let Some((v, digest)) = replay.highest()
            && v > hw.version
        {
            hw = HighWater {
                version: v,
                digest: digest.to_string(),
            };
        }
        let history = replay
            .activations
            .iter()
            .map(|(v, e)| {
                let a = Activated {
                    digest: e.digest().to_string(),
                    change: e.change().clone(),
                };
                (*v, a)
            })
            .collect();
        let Replay {
            installed: restore,
            pending: audited_pending,
            ..
        } = replay;
        let mut open_reviews = reviews::open_from_audit(&entries);
        let mut pushed_reviews = reviews::load_tokens(&state);
        for r in &mut open_reviews {
            r.tokens = pushed_reviews.remove(&r.digest).unwrap_or_default();
        }
        let used = state.read_json::<BTreeSet<String>>(USED_TOKENS)?;
        drop(entries);
        let mut gate = Gate {
            settings,
            trust,
            listeners,
            registry,
            published,
            clock,
            state,
            audit,
            active: None,
            hw,
            history,
            pending: BTreeMap::new(),
            reviews: open_reviews,
            used: used.unwrap_or_default(),
            last_rejected: None,
            reported_files: HashSet::new(),
            last_recheck: None,
            folder_tokens: true,
            resolved: HashMap::new(),
        };
        // A full disk must not keep the approved state from serving (SPEC §2): what cannot
        // be written at start is logged, and changes are refused (`state_unwritable`) until
        // it can be. The mark is re-derived from the log at every start anyway.
        if let Err(e) = gate.state.set_high_water(&gate.hw) {
            tracing::error!(error = %e, "Could not persist the high-water mark at start.");
        }
        let trust = serde_json::to_vec(&gate.settings.trust).map_err(std::io::Error::other)?;
        if let Err(e) = gate.record(
            Event::new(EventKind::Started, "sluice")
                .with("trust_digest", store::digest(&trust))
                .with("pid", std::process::id()),
        ) {
            tracing::error!(error = %e, "Could not audit the start; serving what the log says is active.");
        }
        gate.registry.gauge(telemetry::CONFIG_VERSION, &[]).set(0.0);
        if let Some(e) = restore {
            gate.restore(&e)?;
        }
        gate.restore_pending(&audited_pending)?;
        gate.tick();
        Ok(gate)
    }

    fn restore(&mut self, entry: &Record) -> std::io::Result<()> {
        let change = entry.change();
        let digest = entry.digest().to_string();
        let bytes = match self.state.get_doc(&digest) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(digest, error = %e, "The last activated document cannot be read from state; nothing is active.");
                return Ok(());
            }
        };
        let parsed = match self.parse(&bytes) {
            Ok(p) => p,
            Err(r) => {
                tracing::error!(digest, reason = %r.reason, detail = %r.detail, "The last activated document no longer validates; nothing is active.");
                return Ok(());
            }
        };
        let class = serde_json::from_value(change["class"].clone()).unwrap_or(ChangeClass::Normal);
        let approvers = change["approvers"].as_array().cloned().unwrap_or_default();
        // At start the gate is not shared yet: resolving here holds no lock.
        let addresses = Addresses::resolve(&parsed.doc);
        let snap = match Snapshot::build(&parsed, &digest, &self.build_ctx(&addresses), None) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(digest, error = %e, "The last activated document cannot be compiled; nothing is active.");
                return Ok(());
            }
        };
        let activated_at = entry.get("ts").as_str().unwrap_or("").to_string();
        let change = change.clone();
        // Not a commit point (the activation is): a restore that cannot be audited still serves.
        if let Err(e) = self.record(Event::new(EventKind::ChangeRestored, "sluice").change(change))
        {
            tracing::error!(digest, error = %e, "Could not audit the restore; serving the last activated document anyway.");
        }
        self.install(parsed, digest, class, approvers, activated_at, snap);
        tracing::info!(
            version = self.active.as_ref().map(|a| a.doc.version),
            "Restored the last activated document."
        );
        Ok(())
    }

    /// Loads `state/pending/`, dropping what the high-water mark has passed, and audits
    /// `change.pending` for any whose record a crash kept out of the log.
    fn restore_pending(&mut self, audited: &HashSet<String>) -> std::io::Result<()> {
        for mut p in pending::load_all(&self.state) {
            if super::version::is_stale(p.version, Some(&self.hw)) {
                self.drop_stale(&p);
                continue;
            }
            p.audited = audited.contains(&p.digest);
            let digest = p.digest.clone();
            if !p.audited {
                let change = match self.parse(p.text.as_bytes()) {
                    Ok(parsed) => {
                        change_json(&parsed.doc, &digest, parsed.doc.change.class, "", &[])
                    }
                    Err(_) => json!({ "digest": digest, "version": p.version }),
                };
                // Audited when it is next judged, if not now.
                match self.record(Event::new(EventKind::ChangePending, "sluice").change(change)) {
                    Ok(_) => p.audited = true,
                    Err(e) => {
                        tracing::error!(digest, error = %e, "Could not audit a restored pending change.")
                    }
                }
            }
            self.pending.insert(digest, p);
        }
        self.pending_gauge();
        Ok(())
    }

    fn build_ctx<'a>(&'a self, addresses: &'a Addresses) -> BuildCtx<'a> {
        BuildCtx {
            registry: &self.registry,
            addresses,
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<ParsedTraffic, Refusal> {
        parse_doc(bytes, &self.listeners)
    }

    /// The listener names of `sluice.yaml`, which a candidate is checked against.
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }

    /// The compiled trust section (keys, roles, policy).
    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.trust
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Appends an event to the audit log (the gate's own, and rollout transitions and
    /// admin actions); durable when this returns.
    pub fn record(&mut self, event: Event) -> std::io::Result<Head> {
        self.audit.append(self.clock.now(), event)
    }

    /// Offers every audit line appended from now on to `n` (notifications).
    pub fn set_notifier(&mut self, n: crate::notify::Notifier) {
        self.audit.set_tap(n);
    }

    /// The active document, if any.
    pub fn active(&self) -> Option<&Active> {
        self.active.as_ref()
    }

    /// The high-water mark.
    pub fn high_water(&self) -> &HighWater {
        &self.hw
    }

    /// The audit log's head.
    pub fn audit_head(&self) -> Head {
        self.audit.head()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The clock the gate judges time by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Turns reading the approvals folder on or off (off in cluster mode, where the folder's
    /// tokens arrive through etcd like every other token).
    pub fn set_folder_tokens(&mut self, on: bool) {
        self.folder_tokens = on;
    }

    /// The approvals folder as it is now (empty when folder tokens are off).
    fn folder(&self) -> Folder {
        if self.folder_tokens {
            Folder::read(&self.settings.paths.approvals)
        } else {
            Folder::default()
        }
    }

    /// Submits a prepared candidate with tokens pushed alongside it (`Sluice-Approval`
    /// headers; none for the file); tokens in the approvals folder that name it are added.
    pub fn submit(&mut self, candidate: Candidate, source: Source, pushed: &[String]) -> Outcome {
        let folder = self.folder();
        self.consider(candidate, source, pushed, &folder)
    }

    /// Judges a pending change again (a token arrived, or time passed).
    fn reconsider(
        &mut self,
        text: &str,
        source: Source,
        pushed: &[String],
        folder: &Folder,
    ) -> Outcome {
        let candidate = Candidate::pending(text.as_bytes().to_vec(), &self.listeners);
        self.consider(candidate, source, pushed, folder)
    }

    /// The gate proper: every candidate, new or pending, is judged and acted on here.
    fn consider(
        &mut self,
        candidate: Candidate,
        source: Source,
        pushed: &[String],
        folder: &Folder,
    ) -> Outcome {
        let digest = candidate.digest.clone();
        if self.active.as_ref().is_some_and(|a| a.digest == digest) {
            return Outcome::NoOp {
                detail: "this document is already active".into(),
            };
        }
        let outcome = match self.judge(candidate, source, pushed, folder) {
            Ok(o) => o,
            Err(r) => {
                self.reject(&digest, source, &r);
                Outcome::Rejected(r)
            }
        };
        if !self.pending.contains_key(&digest) {
            self.resolved.remove(&digest);
        }
        outcome
    }

    fn judge(
        &mut self,
        candidate: Candidate,
        source: Source,
        pushed: &[String],
        folder: &Folder,
    ) -> Result<Outcome, Refusal> {
        let Candidate {
            bytes,
            digest,
            parsed,
            addresses,
        } = candidate;
        let (bytes, digest) = (&bytes[..], &digest[..]);
        let parsed = parsed.inspect_err(|_| self.forget(digest))?;
        let now = self.clock.unix_secs();
        // Pushed tokens first, so their positions tell which refusals the caller sent.
        let mut tokens: Vec<String> = Vec::new();
        pushed.iter().for_each(|t| push_unique(&mut tokens, t));
        let n_pushed = tokens.len();
        if let Some(p) = self.pending.get(digest) {
            p.tokens.iter().for_each(|t| push_unique(&mut tokens, t));
        }
        folder
            .naming(digest)
            .for_each(|t| push_unique(&mut tokens, &t.token));
        let author = parsed.doc.change.author.clone();
        let mark = (self.hw.version > 0).then_some(&self.hw);
        let a = assess(
            &self.trust,
            &ChangeInput {
                bytes,
                doc: &parsed.doc,
                json: &parsed.json,
                active: self.active.as_ref().map(|a| &a.json),
                high_water: mark,
                tokens: &tokens,
                author_review_overdue: self.author_overdue(&author, now),
                now,
            },
        );
        // A token the caller sent must be valid (and, below, must count): its refusal is
        // the answer, rather than a change kept waiting on a token that will never help or
        // a policy refusal that hides the cause.
        if let Some(bad) = a.rejected.iter().find(|t| t.index < n_pushed) {
            return Err(bad.refusal.clone());
        }
        let decision = match a.ruling {
            Ruling::NoOp => {
                self.forget(digest);
                let v = parsed.doc.version;
                let detail = if a.classification.as_ref().is_some_and(|c| c.no_op) {
                    "the document changes nothing but its version and change header".to_string()
                } else {
                    format!("version {v} with this digest was already activated")
                };
                return Ok(Outcome::NoOp { detail });
            }
            Ruling::Refused(r) => {
                self.forget(digest);
                return Err(r);
            }
            Ruling::Pending(d) | Ruling::Activate(d) => d,
        };
        let accepted_pushed = (0..n_pushed)
            .filter(|i| !a.rejected.iter().any(|r| r.index == *i))
            .count();
        if let Some(r) = not_counting(&a.accepted[..accepted_pushed], &decision) {
            return Err(r);
        }
        let classification = a.classification.unwrap_or_else(|| Classification {
            class: decision.class,
            claimed: parsed.doc.change.class,
            no_op: false,
            nothing_active: self.active.is_none(),
            paths: Vec::new(),
            not_standard: Vec::new(),
        });
        if decision.satisfied() {
            let addresses = addresses
                .or_else(|| self.resolved.get(digest).cloned())
                .unwrap_or_default();
            self.commit(
                parsed,
                digest,
                bytes,
                source,
                decision,
                classification,
                &addresses,
            )
        } else {
            if let Some(a) = addresses {
                self.resolved.insert(digest.to_string(), a);
            }
            self.keep_pending(
                parsed,
                digest,
                bytes,
                source,
                pushed,
                decision,
                &classification,
            )
        }
    }

    /// Keeps (or updates) a pending change; audits `change.pending` the first time.
    #[allow(clippy::too_many_arguments)]
    fn keep_pending(
        &mut self,
        parsed: ParsedTraffic,
        digest: &str,
        bytes: &[u8],
        source: Source,
        pushed: &[String],
        d: Decision,
        classification: &Classification,
    ) -> Result<Outcome, Refusal> {
        let missing = d.detail();
        let approvers: Vec<Value> = d
            .approvers
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        let is_new = !self.pending.contains_key(digest);
        let since = clock::rfc3339(self.clock.now());
        let entry = self
            .pending
            .entry(digest.to_string())
            .or_insert_with(|| PendingChange {
                digest: digest.to_string(),
                version: parsed.doc.version,
                // It parsed, so it is UTF-8: the lossy conversion keeps every byte.
                text: String::from_utf8_lossy(bytes).into_owned(),
                source: source_actor(source).to_string(),
                tokens: Vec::new(),
                since,
                last: None,
                audited: false,
            });
        let added = entry.add_tokens(pushed);
        entry.last = Some(Shortfalls {
            class: d.class,
            classification: classification.explain(),
            missing: missing.clone(),
            shortfalls: d.shortfalls.clone(),
            approvers: d.approvers.clone(),
            author: d.author.clone(),
            id: parsed.doc.change.id.clone(),
        });
        if is_new || added {
            let saved = pending::save(&self.state, entry);
            if let Err(e) = saved {
                if is_new {
                    self.pending.remove(digest);
                }
                return Err(Refusal::unwritable(e));
            }
        }
        let entry_audited = self.pending.get(digest).is_some_and(|p| p.audited);
        if !entry_audited {
            let change = change_json(&parsed.doc, digest, d.class, &d.author_kid, &approvers);
            let event = Event::new(EventKind::ChangePending, source_actor(source))
                .change(change)
                .with("missing", &missing);
            self.record(event).map_err(Refusal::unwritable)?;
            if let Some(p) = self.pending.get_mut(digest) {
                p.audited = true;
            }
            tracing::info!(
                version = parsed.doc.version,
                digest,
                class = class_name(d.class),
                missing = %missing,
                "Change is valid but short of approvals; keeping it pending."
            );
        } else if added {
            tracing::info!(version = parsed.doc.version, digest, missing = %missing, "Approval attached to a pending change; it still waits.");
        }
        self.pending_gauge();
        Ok(Outcome::Pending {
            version: parsed.doc.version,
            digest: digest.to_string(),
            class: d.class,
            missing,
        })
    }

    /// Activates a judged document: build, persist, audit (the commit point), swap.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        parsed: ParsedTraffic,
        digest: &str,
        bytes: &[u8],
        source: Source,
        d: Decision,
        classification: Classification,
        addresses: &Addresses,
    ) -> Result<Outcome, Refusal> {
        let v = parsed.doc.version;
        let class = d.class;
        let prev = self.published.load_full();
        let snap = Snapshot::build(&parsed, digest, &self.build_ctx(addresses), prev.as_deref())
            .map_err(|e| {
                self.forget(digest);
                Reason::InvalidDocument.because(e)
            })?;
        self.state
            .put_doc(digest, bytes)
            .map_err(Refusal::unwritable)?;
        let approvers: Vec<Value> = d
            .approvers
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        let now = self.clock.now();
        let rules = self.trust.rules();
        let review_due = (class == ChangeClass::Emergency && rules.review_required())
            .then(|| rules.review_due(clock::unix_secs(now)));
        let change = change_json(&parsed.doc, digest, class, &d.author_kid, &approvers);
        let mut event =
            Event::new(EventKind::ChangeActivated, source_actor(source)).change(change.clone());
        let due_text = review_due
            .map(|due| clock::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(due)));
        if let Some(t) = &due_text {
            event = event.with("review_due", t);
        }
        self.audit.append(now, event).map_err(Refusal::unwritable)?;
        // Committed. What follows is derived from the log if a crash interrupts it.
        let prev_digest = self.active.as_ref().map(|a| a.digest.clone());
        self.hw = HighWater {
            version: v,
            digest: digest.to_string(),
        };
        if let Err(e) = self.state.set_high_water(&self.hw) {
            tracing::error!(error = %e, "Could not persist the high-water mark; it is re-derived from the audit log at start.");
        }
        self.history.insert(
            v,
            Activated {
                digest: digest.to_string(),
                change: change.clone(),
            },
        );
        if class == ChangeClass::Unapproved {
            tracing::warn!(
                version = v,
                digest,
                "Activated a document without approvals (trust.require_approvals is false)."
            );
        } else {
            let names: Vec<&str> = d.approvers.iter().map(|a| a.principal.as_str()).collect();
            tracing::info!(
                version = v,
                digest,
                class = class_name(class),
                author = %d.author,
                approvers = ?names,
                "Activated a document."
            );
        }
        self.registry
            .counter(
                telemetry::CONFIG_ACTIVATIONS,
                &[("class", class_name(class))],
            )
            .increment(1);
        self.install(
            parsed,
            digest.to_string(),
            class,
            approvers,
            clock::rfc3339(now),
            snap,
        );
        if let (Some(due), Some(text)) = (review_due, due_text) {
            self.reviews.push(Review {
                digest: digest.to_string(),
                version: v,
                author: d.author.clone(),
                approvers: d.approvers.iter().map(|a| a.principal.clone()).collect(),
                change,
                prev_digest,
                due,
                review_due: text,
                overdue_audited: false,
                tokens: Vec::new(),
                classification: Some(classification),
                last: None,
            });
            self.overdue_gauge();
        }
        self.forget(digest);
        let stale: Vec<PendingChange> = self
            .pending
            .values()
            .filter(|p| super::version::is_stale(p.version, Some(&self.hw)))
            .cloned()
            .collect();
        for p in stale {
            self.drop_stale(&p);
        }
        self.last_rejected = None;
        Ok(Outcome::Activated {
            version: v,
            digest: digest.to_string(),
            class,
        })
    }

    fn install(
        &mut self,
        parsed: ParsedTraffic,
        digest: String,
        class: ChangeClass,
        approvers: Vec<Value>,
        activated_at: String,
        snap: Snapshot,
    ) {
        self.registry
            .gauge(telemetry::CONFIG_VERSION, &[])
            .set(parsed.doc.version as f64);
        self.published.publish(Arc::new(snap));
        // Series of names this document no longer has go (SPEC §10).
        self.registry
            .retain(crate::snapshot::series_of(&parsed.doc));
        for w in &parsed.warnings {
            tracing::warn!(
                version = parsed.doc.version,
                path = %w.path,
                line = w.line,
                detail = %w.message,
                "Flag definition does not conform to the flagd schema; loaded as flagd loads it."
            );
        }
        self.active = Some(Active {
            doc: parsed.doc,
            json: parsed.json,
            digest,
            class,
            approvers,
            activated_at,
            warnings: parsed.warnings,
        });
    }

    /// Removes a pending change (if it is one) from memory and state.
    fn forget(&mut self, digest: &str) {
        if self.pending.remove(digest).is_some() {
            if let Err(e) = pending::remove(&self.state, digest) {
                tracing::error!(digest, error = %e, "Could not remove a pending change from state; it is dropped again at start.");
            }
            self.pending_gauge();
        }
    }

    /// Drops a pending change the high-water mark has passed; audited as a refusal.
    fn drop_stale(&mut self, p: &PendingChange) {
        let r = Reason::VersionNotIncreasing.because(format!(
                "pending version {} is at or below the high-water mark {}; it can never activate and is dropped",
                p.version, self.hw.version
            ),
        );
        self.pending.remove(&p.digest);
        if let Err(e) = pending::remove(&self.state, &p.digest) {
            tracing::error!(digest = %p.digest, error = %e, "Could not remove a pending change from state; it is dropped again at start.");
        }
        self.pending_gauge();
        self.reject(&p.digest, Source::Sluice, &r);
    }

    fn pending_gauge(&self) {
        self.registry
            .gauge(telemetry::CONFIG_PENDING, &[])
            .set(self.pending.len() as f64);
    }

    /// Whether `author` has an emergency change whose review is overdue at `now`.
    fn author_overdue(&self, author: &str, now: u64) -> bool {
        self.reviews
            .iter()
            .any(|r| r.author == author && r.overdue(now))
    }

    /// Reports a refusal: log, metric, and (once per digest and reason) the audit log.
    fn reject(&mut self, digest: &str, source: Source, r: &Refusal) {
        tracing::warn!(
            reason = r.reason.as_str(),
            digest,
            source = source_actor(source),
            detail = %r.detail,
            "Change refused; the active configuration keeps serving."
        );
        self.registry
            .counter(
                telemetry::CONFIG_REJECTIONS,
                &[("reason", r.reason.as_str())],
            )
            .increment(1);
        // The watcher may see the same bad file many times: audit each refusal once.
        let key = (digest.to_string(), r.reason);
        if self.last_rejected.as_ref() == Some(&key) {
            return;
        }
        self.last_rejected = Some(key);
        let event = Event::new(EventKind::ChangeRejected, source_actor(source))
            .refusal(r.reason.as_str(), &r.detail)
            .change(json!({ "digest": digest }));
        if let Err(e) = self.record(event) {
            tracing::error!(error = %e, "Could not append to the audit log.");
        }
    }
}

/// Adds a token (trimmed) unless it is empty or already there.
fn push_unique(tokens: &mut Vec<String>, t: &str) {
    let t = t.trim();
    if !t.is_empty() && !tokens.iter().any(|x| x == t) {
        tokens.push(t.to_string());
    }
}

/// The first pushed token that counts toward nothing (`self_approval`, `missing_role`,
/// `author_mismatch`), as a refusal.
fn not_counting(pushed: &[super::token::VerifiedToken], d: &Decision) -> Option<Refusal> {
    pushed.iter().find_map(|t| {
        d.ignored
            .iter()
            .find(|i| {
                i.principal == t.principal
                    && match i.reason {
                        Reason::AuthorMismatch => t.act == Act::Author,
                        _ => t.act == Act::Approve,
                    }
            })
            .map(|i| i.reason.because(i.detail.clone()))
    })
}
