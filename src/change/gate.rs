//! The one change gate: every path that can change what is served — startup, the file
//! watcher, the admin API, revert — goes through [`Gate::submit`] (or, at start,
//! [`Gate::open`]'s restore). There is no second way in.
//!
//! parse → validate → anti-rollback → diff → approvals → build snapshot → persist + audit →
//! swap. The audit line is the commit point: a document is active after a restart only if
//! the log's last activation names its digest.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::audit::{AuditLog, Head};
use super::store::{self, HighWater, StateDir};
use super::trust::TrustStore;
use crate::clock::{self, Clock};
use crate::config::Settings;
use crate::config::traffic::{ChangeClass, CheckContext, ParsedTraffic, TrafficDoc};
use crate::proxy::Shared;
use crate::snapshot::{BuildCtx, Snapshot};
use crate::telemetry::{self, Registry};

/// Where a candidate came from (recorded as the audit `actor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `traffic.yaml` read at start.
    Start,
    /// `traffic.yaml` changed on disk.
    File,
    /// Pushed through the admin API.
    Push,
}

/// What happened to a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Now serving.
    Activated {
        /// Version.
        version: u64,
        /// Digest.
        digest: String,
        /// Class it activated as.
        class: ChangeClass,
    },
    /// Nothing to do (already active, or no change).
    NoOp {
        /// Why.
        detail: String,
    },
    /// Refused; the active document keeps serving.
    Rejected(Rejection),
}

/// A refusal with its reason code (SPEC §5) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// snake_case reason code.
    pub reason: &'static str,
    /// What exactly is wrong.
    pub detail: String,
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
    /// Approvers recorded at activation.
    pub approvers: Vec<Value>,
    /// RFC 3339 activation time.
    pub activated_at: String,
}

/// The change gate: owns the state directory, the audit log and the active document.
pub struct Gate {
    settings: Arc<Settings>,
    trust: Arc<TrustStore>,
    listeners: Vec<String>,
    registry: Registry,
    shared: Arc<Shared>,
    clock: Clock,
    state: StateDir,
    audit: AuditLog,
    active: Option<Active>,
    hw: HighWater,
    last_rejected: Option<(String, &'static str)>,
}

// === impl Rejection ===

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }

    /// The admin API status for this refusal (SPEC §8).
    pub fn http_status(&self) -> u16 {
        match self.reason {
            "invalid_document" | "malformed_token" => 400,
            "version_not_increasing" | "equivocation" => 409,
            _ => 403,
        }
    }
}

fn class_str(c: ChangeClass) -> &'static str {
    match c {
        ChangeClass::Standard => "standard",
        ChangeClass::Normal => "normal",
        ChangeClass::Emergency => "emergency",
        ChangeClass::Unapproved => "unapproved",
    }
}

/// The document without `/version` and `/change`: what a diff compares.
fn content(json: &Value) -> Value {
    let mut v = json.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("version");
        m.remove("change");
    }
    v
}

// === impl Gate ===

impl Gate {
    /// Opens the state, audits `sluice.started`, and restores the last activated document.
    pub fn open(
        settings: Arc<Settings>,
        trust: Arc<TrustStore>,
        shared: Arc<Shared>,
        registry: Registry,
        clock: Clock,
    ) -> std::io::Result<Gate> {
        let state = StateDir::open(&settings.paths.state_dir)?;
        let (audit, entries) = AuditLog::open(&state.audit_path())?;
        let listeners = settings.listeners.iter().map(|l| l.name.clone()).collect();
        let mut hw = state.high_water()?.unwrap_or(HighWater {
            version: 0,
            digest: String::new(),
        });
        // The log is the commit record: the high-water mark can lag it after a crash, never lead it.
        let mut last: Option<&Value> = None;
        for e in &entries {
            let ev = e["event"].as_str().unwrap_or("");
            if matches!(
                ev,
                "change.activated" | "change.reverted" | "change.restored"
            ) {
                last = Some(e);
            }
            if ev == "change.activated"
                && let Some(v) = e["change"]["version"].as_u64()
                && v > hw.version
            {
                hw = HighWater {
                    version: v,
                    digest: e["change"]["digest"].as_str().unwrap_or("").to_string(),
                };
            }
        }
        let restore = last.cloned();
        let mut gate = Gate {
            settings,
            trust,
            listeners,
            registry,
            shared,
            clock,
            state,
            audit,
            active: None,
            hw,
            last_rejected: None,
        };
        gate.state.set_high_water(&gate.hw)?;
        let trust = serde_json::to_vec(&gate.settings.trust).map_err(std::io::Error::other)?;
        let mut f = Map::new();
        f.insert("actor".into(), json!("sluice"));
        f.insert("trust_digest".into(), json!(store::digest(&trust)));
        f.insert("pid".into(), json!(std::process::id()));
        gate.audit.append(gate.clock.now(), "sluice.started", f)?;
        gate.registry.gauge(telemetry::CONFIG_VERSION, &[]).set(0.0);
        if let Some(e) = restore {
            gate.restore(&e)?;
        }
        Ok(gate)
    }

    fn restore(&mut self, entry: &Value) -> std::io::Result<()> {
        let change = &entry["change"];
        let digest = change["digest"].as_str().unwrap_or("").to_string();
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
                tracing::error!(digest, reason = r.reason, detail = %r.detail, "The last activated document no longer validates; nothing is active.");
                return Ok(());
            }
        };
        let class = serde_json::from_value(change["class"].clone()).unwrap_or(ChangeClass::Normal);
        let approvers = change["approvers"].as_array().cloned().unwrap_or_default();
        let snap = match Snapshot::build(&parsed.doc, &digest, &self.build_ctx(), None) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(digest, error = %e, "The last activated document cannot be compiled; nothing is active.");
                return Ok(());
            }
        };
        let activated_at = entry["ts"].as_str().unwrap_or("").to_string();
        self.audit_change(
            "change.restored",
            "sluice",
            &parsed.doc,
            &digest,
            class,
            &approvers,
            None,
        )?;
        self.install(parsed, digest, class, approvers, activated_at, snap);
        tracing::info!(
            version = self.active.as_ref().map(|a| a.doc.version),
            "Restored the last activated document."
        );
        Ok(())
    }

    fn build_ctx(&self) -> BuildCtx<'_> {
        BuildCtx {
            listeners: &self.listeners,
            registry: &self.registry,
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<ParsedTraffic, Rejection> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Rejection::new(
                "invalid_document",
                format!("the document is not UTF-8: {e}"),
            )
        })?;
        let ctx = CheckContext {
            listeners: Some(self.listeners.clone()),
        };
        TrafficDoc::parse(text, &ctx)
            .map_err(|errs| Rejection::new("invalid_document", errs.to_string()))
    }

    /// The compiled trust section (keys, roles, policy).
    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.trust
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Appends an event that is not a change (rollout transitions, admin actions) to the
    /// audit log; durable when this returns.
    pub fn audit_event(
        &mut self,
        event: &str,
        fields: Map<String, Value>,
    ) -> std::io::Result<Head> {
        self.audit.append(self.clock.now(), event, fields)
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

    /// Submits a candidate document.
    pub fn submit(&mut self, bytes: &[u8], source: Source) -> Outcome {
        let digest = store::digest(bytes);
        if self.active.as_ref().is_some_and(|a| a.digest == digest) {
            return Outcome::NoOp {
                detail: "this document is already active".into(),
            };
        }
        match self.try_activate(bytes, &digest, source) {
            Ok(o) => o,
            Err(r) => {
                self.reject(&digest, source, &r);
                Outcome::Rejected(r)
            }
        }
    }

    fn try_activate(
        &mut self,
        bytes: &[u8],
        digest: &str,
        source: Source,
    ) -> Result<Outcome, Rejection> {
        let parsed = self.parse(bytes)?;
        let v = parsed.doc.version;
        if v == self.hw.version && digest == self.hw.digest {
            return Ok(Outcome::NoOp {
                detail: format!("version {v} with this digest was already activated"),
            });
        }
        if v == self.hw.version {
            return Err(Rejection::new(
                "equivocation",
                format!(
                    "version {v} was already activated with digest {}; this document has the same version and other bytes",
                    self.hw.digest
                ),
            ));
        }
        if v < self.hw.version {
            return Err(Rejection::new(
                "version_not_increasing",
                format!(
                    "version {v} is not above the high-water mark {}",
                    self.hw.version
                ),
            ));
        }
        let step = self.settings.trust.policy.max_version_step;
        if v - self.hw.version > step {
            return Err(Rejection::new(
                "version_step_too_large",
                format!(
                    "version {v} exceeds the high-water mark {} by more than max_version_step {step}",
                    self.hw.version
                ),
            ));
        }
        if let Some(a) = &self.active
            && content(&a.json) == content(&parsed.json)
        {
            return Ok(Outcome::NoOp {
                detail: "the document changes nothing but its version and change header".into(),
            });
        }
        let class = if self.settings.trust.require_approvals {
            return Err(Rejection::new(
                "insufficient_approvals",
                "approval checking is not available in this build; set trust.require_approvals: false",
            ));
        } else {
            ChangeClass::Unapproved
        };
        let prev = self.shared.snapshot.load_full();
        let snap = Snapshot::build(&parsed.doc, digest, &self.build_ctx(), prev.as_deref())
            .map_err(|e| Rejection::new("invalid_document", e))?;
        let actor = source_actor(source);
        let persisted = self
            .state
            .put_doc(digest, bytes)
            .and_then(|_| {
                self.audit_change(
                    "change.activated",
                    actor,
                    &parsed.doc,
                    digest,
                    class,
                    &[],
                    None,
                )
            })
            .and_then(|_| {
                self.hw = HighWater {
                    version: v,
                    digest: digest.to_string(),
                };
                self.state.set_high_water(&self.hw)
            });
        if let Err(e) = persisted {
            return Err(Rejection::new(
                "state_unwritable",
                format!("the state directory could not be written: {e}"),
            ));
        }
        if class == ChangeClass::Unapproved {
            tracing::warn!(
                version = v,
                digest,
                "Activated a document without approvals (trust.require_approvals is false)."
            );
        } else {
            tracing::info!(
                version = v,
                digest,
                class = class_str(class),
                "Activated a document."
            );
        }
        self.registry
            .counter(
                telemetry::CONFIG_ACTIVATIONS,
                &[("class", class_str(class))],
            )
            .increment(1);
        let now = clock::rfc3339(self.clock.now());
        self.install(parsed, digest.to_string(), class, Vec::new(), now, snap);
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
        self.shared.snapshot.store(Some(Arc::new(snap)));
        self.active = Some(Active {
            doc: parsed.doc,
            json: parsed.json,
            digest,
            class,
            approvers,
            activated_at,
        });
    }

    fn reject(&mut self, digest: &str, source: Source, r: &Rejection) {
        tracing::warn!(reason = r.reason, digest, source = ?source, "Change refused; the active configuration keeps serving: {}", r.detail);
        self.registry
            .counter(telemetry::CONFIG_REJECTIONS, &[("reason", r.reason)])
            .increment(1);
        // The watcher may see the same bad file many times: audit each refusal once.
        let key = (digest.to_string(), r.reason);
        if self.last_rejected.as_ref() == Some(&key) {
            return;
        }
        self.last_rejected = Some(key);
        let mut f = Map::new();
        f.insert("actor".into(), json!(source_actor(source)));
        f.insert("reason".into(), json!(r.reason));
        f.insert("detail".into(), json!(r.detail));
        f.insert("change".into(), json!({ "digest": digest }));
        if let Err(e) = self.audit.append(self.clock.now(), "change.rejected", f) {
            tracing::error!(error = %e, "Could not append to the audit log.");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_change(
        &mut self,
        event: &str,
        actor: &str,
        doc: &TrafficDoc,
        digest: &str,
        class: ChangeClass,
        approvers: &[Value],
        extra: Option<Map<String, Value>>,
    ) -> std::io::Result<Head> {
        let mut f = extra.unwrap_or_default();
        f.insert("actor".into(), json!(actor));
        f.insert(
            "change".into(),
            json!({
                "id": doc.change.id,
                "version": doc.version,
                "digest": digest,
                "class": class_str(class),
                "author": doc.change.author,
                "approvers": approvers,
            }),
        );
        self.audit.append(self.clock.now(), event, f)
    }

    /// The status document (`GET /api/v1/status`).
    pub fn status_json(&self) -> Value {
        let active = self.active.as_ref().map(|a| {
            json!({
                "version": a.doc.version,
                "digest": a.digest,
                "class": class_str(a.class),
                "id": a.doc.change.id,
                "author": a.doc.change.author,
                "summary": a.doc.change.summary,
                "approvers": a.approvers,
                "activated_at": a.activated_at,
            })
        });
        let rollouts: Vec<Value> = self
            .shared
            .snapshot
            .load_full()
            .map(|s| {
                s.rollouts
                    .iter()
                    .map(|r| json!({ "name": &*r.name, "weight": r.weight() as f64 / 100.0 }))
                    .collect()
            })
            .unwrap_or_default();
        let head = self.audit.head();
        json!({
            "active": active,
            "high_water": { "version": self.hw.version, "digest": self.hw.digest },
            "pending": [],
            "rollouts": rollouts,
            "audit": { "seq": head.seq, "head": head.hash },
        })
    }
}

fn source_actor(s: Source) -> &'static str {
    match s {
        Source::Start => "startup",
        Source::File => "file",
        Source::Push => "admin",
    }
}
