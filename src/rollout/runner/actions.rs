//! Operator actions (SPEC §6, §8): promote, promote_full (`promote --full`), pause, resume,
//! abort. The admin API has already checked the bearer token; a promote also needs a `promote`
//! approval token when `trust.require_approvals` is true — for the active document, this
//! rollout and its current step, and of the same scope (a full promotion needs a token with
//! `full: true`; a one-step promote refuses one), used once (its replay key is persisted before the promote takes effect, so a crash
//! can lose a promote but never allow a second one).

use std::time::Instant;

use serde_json::{Value, json};

use super::Runner;
use crate::change::audit::{Event as AuditEvent, EventKind};
use crate::change::token::{self, Act, Expected, VerifiedToken};
use crate::change::{Reason, Refusal};
use crate::clock;
use crate::rollout::controller;
use crate::rollout::fleet::Role;

/// An operator action on one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass a manual gate (blue-green: promote preview).
    Promote,
    /// Skip every remaining step and complete (`promote --full`).
    PromoteFull,
    /// Freeze progress.
    Pause,
    /// Continue from paused.
    Resume,
    /// Weight 0, phase aborted.
    Abort,
}

/// Why an action was refused: HTTP status, reason code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ActionRefused {
    /// The admin API status.
    pub status: u16,
    /// snake_case reason code.
    pub code: &'static str,
    /// What is wrong, for people.
    pub detail: String,
}

// === impl Action ===

impl Action {
    /// Parses the last path segment of `/api/v1/rollouts/{name}/{action}`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "promote" => Some(Action::Promote),
            "promote_full" => Some(Action::PromoteFull),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }

    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "promote_full",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

// === impl ActionRefused ===

impl ActionRefused {
    fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        ActionRefused {
            status,
            code,
            detail: detail.into(),
        }
    }
}

impl From<Refusal> for ActionRefused {
    fn from(r: Refusal) -> Self {
        ActionRefused::new(r.reason.http_status(), r.reason.as_str(), r.detail)
    }
}

impl From<controller::ActionError> for ActionRefused {
    fn from(e: controller::ActionError) -> Self {
        // The request is fine; the rollout is in the wrong state for it.
        ActionRefused::new(409, e.code(), e.to_string())
    }
}

// === impl Runner ===

impl Runner {
    /// Applies `action` to rollout `name`; `approval` is the `Sluice-Approval` header, if any.
    /// Audits the attempt as `admin.action` (refusals too) and the transitions it caused.
    /// Returns the rollout's status after the action.
    pub fn act(
        &self,
        name: &str,
        action: Action,
        approval: Option<&str>,
    ) -> Result<Value, ActionRefused> {
        let mut audit = Vec::new();
        let role = self.role();
        let result = match role {
            // Only the leader acts; the admin API forwards to it.
            Some(Role::Follow) => Err(ActionRefused::new(
                409,
                "not_leader",
                "this node follows the fleet's leader; rollout actions are carried out by the leader",
            )),
            // Cut off from etcd, an operator may still stop a rollout on this node.
            Some(Role::Frozen | Role::CutOff) if action != Action::Abort => {
                Err(ActionRefused::new(
                    503,
                    crate::rollout::fleet::CLUSTER_UNAVAILABLE,
                    "etcd is unreachable: no rollout advances, pauses or resumes until it is back (abort still works on this node)",
                ))
            }
            _ => self.act_inner(name, action, approval, role, &mut audit),
        };
        let event = match &result {
            Ok((principal, token, _)) => {
                let e = AuditEvent::new(EventKind::AdminAction, principal).with("outcome", "ok");
                match token {
                    Some(t) => e.with(
                        "approval",
                        json!({ "principal": t.principal, "kid": t.kid, "jti": t.jti, "iat": t.iat, "step": t.step, "full": t.full }),
                    ),
                    None => e,
                }
            }
            Err(r) => AuditEvent::new(EventKind::AdminAction, "admin")
                .with("outcome", "refused")
                .refusal(r.code, &r.detail),
        };
        let event = event.with("action", action.as_str()).with("rollout", name);
        // The admin action first, then what it caused.
        audit.insert(0, event);
        self.audit(audit);
        match result {
            Ok((_, _, status)) => Ok(status),
            Err(r) => {
                tracing::warn!(rollout = name, action = action.as_str(), reason = r.code, detail = %r.detail, "Rollout action refused.");
                Err(r)
            }
        }
    }

    /// The action itself: (actor, the verified promote token, status afterwards).
    fn act_inner(
        &self,
        name: &str,
        action: Action,
        approval: Option<&str>,
        role: Option<Role>,
        audit: &mut Vec<AuditEvent>,
    ) -> Result<(String, Option<VerifiedToken>, Value), ActionRefused> {
        let mut guard = self.lock();
        let now_ms = self.clock.unix_millis();
        let now_sec = clock::mono_secs(Instant::now());
        // Act on the document that is active now, not the one last ticked.
        if self.sync(&mut guard, now_ms, now_sec) {
            let document = guard.document.clone();
            let at = super::Now {
                ms: now_ms,
                sec: now_sec,
            };
            for (n, t) in guard.rollouts.iter_mut() {
                self.tick_one(n, t, false, false, at, document.as_ref(), role, audit);
            }
        }
        let inner = &mut *guard;
        let document = inner.document.clone();
        let Some(t) = inner.rollouts.get_mut(name) else {
            return Err(ActionRefused::new(
                404,
                "unknown_rollout",
                format!("the active document has no rollout `{name}`"),
            ));
        };

        let mut verified = None;
        let promotes = matches!(action, Action::Promote | Action::PromoteFull);
        if promotes && self.trust.require_approvals() {
            let Some(jwt) = approval else {
                return Err(ActionRefused::new(
                    403,
                    Reason::InsufficientApprovals.as_str(),
                    if action == Action::PromoteFull {
                        "trust.require_approvals is true: a full promotion needs a `Sluice-Approval` header with a full `promote` token for this rollout and its current step (sluice approve --act promote --full)"
                    } else {
                        "trust.require_approvals is true: promote needs a `Sluice-Approval` header with a `promote` token for this rollout and step (sluice approve --act promote)"
                    },
                ));
            };
            let Some(doc) = &document else {
                return Err(ActionRefused::new(
                    409,
                    "no_config",
                    "no document is active",
                ));
            };
            let now_secs = now_ms / 1000;
            let t_ok = token::verify(jwt, &self.trust, now_secs)?;
            token::check_fresh(&t_ok, |k| inner.promotions_used.contains_key(k))?;
            t_ok.check_use(&Expected {
                acts: &[Act::Promote],
                digest: &doc.digest,
                version: doc.version,
                target: Some((name, t.progress.step as u64)),
            })?;
            // A one-step token must not complete the rollout, nor a full one pass one gate.
            t_ok.check_promotion_scope(action == Action::PromoteFull)?;
            verified = Some(t_ok);
        }

        // Try the action on a copy, so a refused action changes nothing and burns no token.
        let mut p = t.progress.clone();
        let step = p.step;
        let events = match action {
            Action::Promote => controller::promote(&mut p, &t.spec, Some(step), now_ms),
            Action::PromoteFull => controller::promote_full(&mut p, &t.spec, Some(step), now_ms),
            Action::Pause => controller::pause(&mut p, now_ms),
            Action::Resume => controller::resume(&mut p, &t.spec, now_ms),
            Action::Abort => controller::abort(&mut p, &t.spec, now_ms),
        }?;

        if let Some(v) = &verified {
            let skew = self.trust.rules().clock_skew_secs;
            let now_secs = now_ms / 1000;
            inner
                .promotions_used
                .retain(|_, exp| exp.saturating_add(skew) > now_secs);
            inner.promotions_used.insert(v.replay_key(), v.exp);
            if let Err(e) = super::persist::save(&self.state, inner) {
                inner.promotions_used.remove(&v.replay_key());
                return Err(ActionRefused::new(
                    503,
                    Reason::StateUnwritable.as_str(),
                    format!(
                        "the promote token could not be recorded as used, so it was not applied: {e}"
                    ),
                ));
            }
        }

        let actor = verified
            .as_ref()
            .map_or_else(|| "admin".to_string(), |v| v.principal.clone());
        let Some(t) = inner.rollouts.get_mut(name) else {
            return Err(ActionRefused::new(
                404,
                "unknown_rollout",
                format!("the active document has no rollout `{name}`"),
            ));
        };
        let before = std::mem::replace(&mut t.progress, p);
        if role == Some(Role::Lead)
            && let Err(e) = self.commit(name, t, document.as_ref(), None, now_ms)
        {
            t.progress = before;
            return Err(ActionRefused::new(
                503,
                crate::rollout::fleet::CLUSTER_UNAVAILABLE,
                format!(
                    "the action could not be written to the fleet, so it was not carried out: {e}"
                ),
            ));
        }
        self.apply(
            name,
            t,
            &events,
            now_sec,
            document.as_ref(),
            &actor,
            None,
            audit,
        );
        if matches!(role, Some(Role::Frozen | Role::CutOff))
            && let (Some(f), Some(doc)) = (self.fleet.get(), document.as_ref())
        {
            f.rolled_back_alone(name, doc, "operator");
        }
        let status = super::report::status_of(name, t, now_ms, now_sec);
        self.persist(inner);
        Ok((actor, verified, status))
    }
}
