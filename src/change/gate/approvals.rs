//! Tokens that arrive after their change: `POST /api/v1/approvals`, the approvals folder,
//! and the periodic re-check that activates a pending change as soon as its tokens suffice,
//! closes emergency reviews, and notices overdue ones.

use serde_json::{Value, json};

use super::{Gate, Outcome, Refusal, Source};
use crate::change::audit::{Event, EventKind};
use crate::change::classify::{Classification, classify};
use crate::change::folder::Folder;
use crate::change::policy::evaluate_review;
use crate::change::reason::Reason;
use crate::change::token::{Act, Expected, VerifiedToken, verify, verify_for};
use crate::config::traffic::ChangeClass;
use crate::telemetry;

/// How often pending changes and reviews are judged again while the folder is unchanged.
pub const REJUDGE_EVERY_SECS: u64 = 30;

// === impl Gate ===

impl Gate {
    /// `POST /api/v1/approvals`: attaches one token to the pending change (or open emergency
    /// review) its `sub` names, then judges that change again through the gate.
    pub fn approve(&mut self, token: &str) -> Outcome {
        let token = token.trim();
        let now = self.clock.unix_secs();
        let named = crate::change::folder::peek_sub(token).unwrap_or_default();
        let t = match verify(token, &self.trust, now) {
            Ok(t) => t,
            Err(r) => return self.refuse(&named, Source::Approval, r),
        };
        match t.act {
            Act::Review => self.attach_review(&t, token),
            Act::Author | Act::Approve => {
                if let Some(p) = self.pending.get(&t.sub) {
                    let text = p.text.clone();
                    let folder = self.folder();
                    return self.reconsider(&text, Source::Approval, &[token.to_string()], &folder);
                }
                if self.active.as_ref().is_some_and(|a| a.digest == t.sub) {
                    return Outcome::NoOp {
                        detail: format!(
                            "change {} is already active; the {} token of {} is not needed",
                            t.sub, t.act, t.principal
                        ),
                    };
                }
                let detail = match self.history.iter().find(|(_, h)| h.digest == t.sub) {
                    Some((v, _)) => format!(
                        "change {} was activated earlier as version {v}; nothing is pending for it",
                        t.sub
                    ),
                    None => format!(
                        "no pending change has digest {}; push the document first",
                        t.sub
                    ),
                };
                self.refuse(
                    &t.sub,
                    Source::Approval,
                    Reason::UnknownChange.because(detail),
                )
            }
            Act::Promote | Act::Revert => self.refuse(
                &t.sub,
                Source::Approval,
                Reason::WrongAction.because(format!(
                    "a `{}` token is not an approval; use the rollout or revert endpoint",
                    t.act
                )),
            ),
        }
    }

    /// Re-judges every pending change and open review with the approvals folder as it is
    /// now, and notes overdue reviews. Called by the file watch on every change and poll;
    /// when the folder is unchanged the pending changes are judged again only every
    /// [`REJUDGE_EVERY_SECS`] (tokens expire and come into force with time alone, but a
    /// large document should not be re-parsed every poll).
    pub fn recheck(&mut self, source: Source) -> Vec<Outcome> {
        self.tick();
        let folder = self.folder();
        self.report_folder(&folder);
        let now = self.clock.unix_secs();
        let fresh = self.last_recheck.as_ref().is_some_and(|(fp, at)| {
            *fp == folder.fingerprint && now.saturating_sub(*at) < REJUDGE_EVERY_SECS
        });
        if fresh {
            return Vec::new();
        }
        self.last_recheck = Some((folder.fingerprint.clone(), now));
        let mut out = Vec::new();
        let mut order: Vec<(u64, String)> = self
            .pending
            .values()
            .map(|p| (p.version, p.digest.clone()))
            .collect();
        order.sort();
        for (_, digest) in order {
            // An activation on the way may have dropped it.
            let Some(text) = self.pending.get(&digest).map(|p| p.text.clone()) else {
                continue;
            };
            let o = self.reconsider(&text, source, &[], &folder);
            if !matches!(o, Outcome::Pending { .. }) {
                out.push(o);
            }
        }
        let digests: Vec<String> = self.reviews.iter().map(|r| r.digest.clone()).collect();
        for d in digests {
            let o = self.judge_review(&d, &folder, source);
            if matches!(o, Outcome::Reviewed { .. }) {
                out.push(o);
            }
        }
        out
    }

    /// Notes emergency reviews that fell overdue (audited once) and sets the gauge.
    pub fn tick(&mut self) {
        let now = self.clock.unix_secs();
        let mut due: Vec<usize> = Vec::new();
        for (i, r) in self.reviews.iter().enumerate() {
            if r.overdue(now) && !r.overdue_audited {
                due.push(i);
            }
        }
        for i in due {
            let r = &self.reviews[i];
            let event = Event::new(EventKind::ReviewOverdue, "sluice")
                .change(r.change.clone())
                .with("review_due", &r.review_due);
            tracing::warn!(
                version = r.version,
                digest = %r.digest,
                author = %r.author,
                review_due = %r.review_due,
                "The review of an emergency change is overdue; its author's next emergency change will be refused."
            );
            match self.record(event) {
                Ok(_) => self.reviews[i].overdue_audited = true,
                Err(e) => tracing::error!(error = %e, "Could not append to the audit log."),
            }
        }
        self.overdue_gauge();
    }

    pub(super) fn overdue_gauge(&self) {
        let now = self.clock.unix_secs();
        let n = self.reviews.iter().filter(|r| r.overdue(now)).count();
        self.registry
            .gauge(telemetry::EMERGENCY_OVERDUE, &[])
            .set(n as f64);
    }

    /// Keeps a pushed review token for the open review it names, then judges the review.
    fn attach_review(&mut self, t: &VerifiedToken, token: &str) -> Outcome {
        let Some(i) = self.reviews.iter().position(|r| r.digest == t.sub) else {
            let detail = match self.history.iter().find(|(_, h)| h.digest == t.sub) {
                Some((v, h)) if h.change["class"] == "emergency" => format!(
                    "the emergency change {} (version {v}) has no open review: it was already reviewed",
                    t.sub
                ),
                Some((v, _)) => format!(
                    "change {} (version {v}) was not an emergency change; there is nothing to review",
                    t.sub
                ),
                None => format!("no emergency change with digest {} awaits review", t.sub),
            };
            return self.refuse(
                &t.sub,
                Source::Approval,
                Reason::UnknownChange.because(detail),
            );
        };
        let r = &self.reviews[i];
        let expected = Expected {
            acts: &[Act::Review],
            digest: &r.digest,
            version: r.version,
            target: None,
        };
        if let Err(refusal) = t.check_use(&expected) {
            return self.refuse(&t.sub, Source::Approval, refusal);
        }
        // A review that cannot count (the author's, an approver's, or one without the role)
        // is refused rather than kept.
        let classification = self.ensure_review_classification(i);
        let r = &self.reviews[i];
        let d = evaluate_review(
            &self.trust,
            &classification,
            &r.author,
            &r.approvers,
            std::slice::from_ref(t),
        );
        if let Some(ig) = d.ignored.iter().find(|x| x.principal == t.principal) {
            let refusal = ig.reason.because(ig.detail.clone());
            return self.refuse(&t.sub, Source::Approval, refusal);
        }
        if !r.tokens.iter().any(|x| x == token) {
            self.reviews[i].tokens.push(token.to_string());
            if let Err(e) = crate::change::reviews::save_tokens(&self.state, &self.reviews) {
                self.reviews[i].tokens.pop();
                return self.refuse(&t.sub, Source::Approval, Refusal::unwritable(e));
            }
        }
        let digest = t.sub.clone();
        let folder = self.folder();
        self.judge_review(&digest, &folder, Source::Approval)
    }

    /// The diff of open review `i` (computed once, from the documents in `state/docs/`).
    fn ensure_review_classification(&mut self, i: usize) -> Classification {
        if let Some(c) = &self.reviews[i].classification {
            return c.clone();
        }
        let load = |g: &Gate, d: &str| -> Option<Value> {
            let bytes = g.state.get_doc(d).ok()?;
            g.parse(&bytes).ok().map(|p| p.json)
        };
        let r = &self.reviews[i];
        let this = load(self, &r.digest);
        let prev = r.prev_digest.as_deref().and_then(|d| load(self, d));
        let c = match this {
            Some(json) => classify(
                self.trust.rules(),
                prev.as_ref(),
                &json,
                ChangeClass::Emergency,
            ),
            None => {
                tracing::error!(digest = %r.digest, "An emergency document under review cannot be read from state; path-scoped review rules cannot apply.");
                Classification {
                    class: ChangeClass::Emergency,
                    claimed: ChangeClass::Emergency,
                    no_op: false,
                    nothing_active: prev.is_none(),
                    paths: Vec::new(),
                    not_standard: Vec::new(),
                }
            }
        };
        self.reviews[i].classification = Some(c.clone());
        c
    }

    /// Judges the review of the emergency `digest` with its pushed and folder tokens; closes
    /// it (`emergency.reviewed`) when the review requirements are met.
    fn judge_review(&mut self, digest: &str, folder: &Folder, source: Source) -> Outcome {
        let Some(i) = self.reviews.iter().position(|r| r.digest == digest) else {
            return Outcome::NoOp {
                detail: format!("no open review for {digest}"),
            };
        };
        let classification = self.ensure_review_classification(i);
        let now = self.clock.unix_secs();
        let r = &self.reviews[i];
        let expected = Expected {
            acts: &[Act::Review],
            digest: &r.digest,
            version: r.version,
            target: None,
        };
        let verified: Vec<VerifiedToken> = r
            .tokens
            .iter()
            .map(String::as_str)
            .chain(folder.naming(digest).map(|t| t.token.as_str()))
            .filter_map(|t| verify_for(t, &self.trust, &expected, now).ok())
            .collect();
        let d = evaluate_review(
            &self.trust,
            &classification,
            &r.author,
            &r.approvers,
            &verified,
        );
        let version = r.version;
        if !d.satisfied() {
            let missing = d.detail();
            self.reviews[i].last = Some((d.approvers, missing.clone()));
            return Outcome::ReviewPending {
                version,
                digest: digest.to_string(),
                missing,
            };
        }
        let reviewers: Vec<Value> = d
            .approvers
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        let event = Event::new(EventKind::EmergencyReviewed, super::source_actor(source))
            .change(r.change.clone())
            .with("reviewers", reviewers)
            .with("review_due", &r.review_due)
            .with("late", r.overdue(now));
        if let Err(e) = self.record(event) {
            return self.refuse(digest, source, Refusal::unwritable(e));
        }
        let names: Vec<&str> = d.approvers.iter().map(|a| a.principal.as_str()).collect();
        tracing::info!(version, digest, reviewers = ?names, "Emergency change reviewed.");
        self.reviews.remove(i);
        if let Err(e) = crate::change::reviews::save_tokens(&self.state, &self.reviews) {
            tracing::error!(error = %e, "Could not rewrite state/reviews.json; the review is closed in the audit log.");
        }
        self.overdue_gauge();
        Outcome::Reviewed {
            version,
            digest: digest.to_string(),
        }
    }

    /// Reports (once per file content) approval files that are no token sluice accepts at
    /// all — not a JWS, a forbidden header, an unknown key — with their reason code.
    /// Tokens for other documents are normal in the folder and are not reported.
    fn report_folder(&mut self, folder: &Folder) {
        let now = self.clock.unix_secs();
        let mut seen = std::collections::HashSet::new();
        for t in &folder.tokens {
            let key = format!("{}\n{}", t.file, crate::change::digest(t.token.as_bytes()));
            seen.insert(key.clone());
            if self.reported_files.contains(&key) {
                continue;
            }
            self.reported_files.insert(key);
            let Err(r) = verify(&t.token, &self.trust, now) else {
                continue;
            };
            tracing::warn!(
                file = %t.file,
                reason = r.reason.as_str(),
                detail = %r.detail,
                "An approval file is refused; it counts for nothing."
            );
            self.registry
                .counter(
                    telemetry::CONFIG_REJECTIONS,
                    &[("reason", r.reason.as_str())],
                )
                .increment(1);
            let mut event = Event::new(EventKind::ChangeRejected, "file")
                .refusal(r.reason.as_str(), &r.detail)
                .with("token_file", &t.file);
            if let Some(sub) = &t.sub {
                event = event.change(json!({ "digest": sub }));
            }
            if let Err(e) = self.record(event) {
                tracing::error!(error = %e, "Could not append to the audit log.");
            }
        }
        self.reported_files.retain(|k| seen.contains(k));
    }

    /// Reports a refusal of something other than a whole document and returns it.
    pub(super) fn refuse(&mut self, digest: &str, source: Source, r: Refusal) -> Outcome {
        self.reject(digest, source, &r);
        Outcome::Rejected(r)
    }
}
