//! Revert (SPEC §5): re-activate a document that was activated before, with a `revert`
//! token from any principal, leaving the high-water mark where it is; and the single-use
//! bookkeeping that `revert` and `promote` tokens share.

use serde_json::json;

use super::{Gate, Outcome, Refusal, Source, USED_TOKENS};
use crate::change::audit::{Event, EventKind};
use crate::change::reason::Reason;
use crate::change::token::{Act, Expected, VerifiedToken, check_fresh, verify};
use crate::config::traffic::ChangeClass;
use crate::snapshot::{Addresses, Snapshot};

// === impl Gate ===

impl Gate {
    /// `POST /api/v1/revert`: serves again the document activated as `version`, on a
    /// `revert` token naming it. Audited `change.reverted`; the high-water mark stays, so
    /// the next new document must still exceed the highest version ever activated.
    pub fn revert(&mut self, version: u64, token: &str) -> Outcome {
        let now = self.clock.unix_secs();
        let named = crate::change::folder::peek_sub(token.trim()).unwrap_or_default();
        let t = match verify(token, &self.trust, now) {
            Ok(t) => t,
            Err(r) => return self.refuse(&named, Source::Revert, r),
        };
        match self.check_revert(version, &t) {
            Ok(o) => o,
            Err(r) => self.refuse(&t.sub, Source::Revert, r),
        }
    }

    fn check_revert(&mut self, version: u64, t: &VerifiedToken) -> Result<Outcome, Refusal> {
        if t.act != Act::Revert {
            return Err(Reason::WrongAction.because(format!(
                "the token of {} is a `{}` token; a revert needs a `revert` token",
                t.principal, t.act
            )));
        }
        if !self.history.values().any(|h| h.digest == t.sub) {
            return Err(Reason::NotActivated.because(format!(
                "the revert token names document {} (version {}), which was never activated here",
                t.sub, t.ver
            )));
        }
        let Some(target) = self.history.get(&version).cloned() else {
            return Err(
                Reason::NotActivated.because(format!("version {version} was never activated here"))
            );
        };
        t.check_use(&Expected {
            acts: &[Act::Revert],
            digest: &target.digest,
            version,
            target: None,
        })?;
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.digest == target.digest)
        {
            return Ok(Outcome::NoOp {
                detail: format!("version {version} is already active"),
            });
        }
        check_fresh(t, |k| self.used.contains(k))?;
        let bytes = self.state.get_doc(&target.digest).map_err(|e| {
            Reason::NotActivated.because(format!(
                "version {version} was activated, but its document cannot be read from state: {e}"
            ))
        })?;
        let parsed = self.parse(&bytes)?;
        let prev = self.published.load_full();
        // No lookup under the lock: hostnames the previous snapshot does not know start
        // unresolved, and the control plane resolves them right after the swap.
        let snap = Snapshot::build(
            &parsed,
            &target.digest,
            &self.build_ctx(&Addresses::default()),
            prev.as_deref(),
        )
        .map_err(|e| Reason::InvalidDocument.because(e))?;
        self.spend_token(t)?;
        let from = self
            .active
            .as_ref()
            .map(|a| json!({ "version": a.doc.version, "digest": a.digest }));
        let event = Event::new(EventKind::ChangeReverted, super::source_actor(Source::Revert))
            .change(target.change.clone())
            .with(
                "revert",
                json!({ "principal": t.principal, "kid": t.kid, "iat": t.iat, "jti": t.jti, "from": from }),
            );
        let now = self.clock.now();
        self.audit.append(now, event).map_err(Refusal::unwritable)?;
        let class =
            serde_json::from_value(target.change["class"].clone()).unwrap_or(ChangeClass::Normal);
        let approvers = target.change["approvers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tracing::warn!(
            version,
            digest = %target.digest,
            by = %t.principal,
            high_water = self.hw.version,
            "Reverted to an earlier document."
        );
        self.install(
            parsed,
            target.digest.clone(),
            class,
            approvers,
            crate::clock::rfc3339(now),
            snap,
        );
        self.last_rejected = None;
        Ok(Outcome::Reverted {
            version,
            digest: target.digest,
        })
    }

    /// Spends a single-use token (`revert`, `promote`): refused `token_reused` if its
    /// `(iss, jti)` was spent before; otherwise remembered in `state/used_tokens.json`
    /// before this returns, so a crash can waste a token but never let it be used twice.
    pub fn spend_token(&mut self, t: &VerifiedToken) -> Result<(), Refusal> {
        check_fresh(t, |k| self.used.contains(k))?;
        self.used.insert(t.replay_key());
        if let Err(e) = self.state.write_json(USED_TOKENS, &self.used) {
            self.used.remove(&t.replay_key());
            return Err(Refusal::unwritable(e));
        }
        Ok(())
    }
}
