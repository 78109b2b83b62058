//! One call that takes a candidate document and its tokens through every pure check, in the
//! order the change gate needs: anti-rollback, classification, token verification, policy.
//! Persistence, audit and activation stay with the caller.

use serde::Serialize;
use serde_json::Value;

use super::classify::{Classification, classify};
use super::policy::{Decision, evaluate};
use super::reason::Refusal;
use super::token::{Act, Expected, VerifiedToken, verify_for};
use super::trust::TrustStore;
use super::version::{HighWater, VersionCheck, check_version};
use crate::config::traffic::{ChangeClass, TrafficDoc};

/// A candidate change and what it is judged against.
#[derive(Debug, Clone, Copy)]
pub struct ChangeInput<'a> {
    /// The exact bytes of the document (its digest is the change's identity).
    pub bytes: &'a [u8],
    /// The parsed document.
    pub doc: &'a TrafficDoc,
    /// The document as JSON (`ParsedTraffic::json`).
    pub json: &'a Value,
    /// The active document as JSON, if any.
    pub active: Option<&'a Value>,
    /// The persisted high-water mark, if any.
    pub high_water: Option<&'a HighWater>,
    /// Raw tokens offered with the change (author and approvals).
    pub tokens: &'a [String],
    /// The author has an emergency change whose review is overdue.
    pub author_review_overdue: bool,
    /// Unix seconds.
    pub now: u64,
}

/// Everything the change gate needs to act and to explain itself.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    /// `sha256:<hex>` of the document bytes.
    pub digest: String,
    /// The class and diff (absent when refused before classification).
    pub classification: Option<Classification>,
    /// Tokens that verified for this document.
    pub accepted: Vec<VerifiedToken>,
    /// Tokens that did not, by their position in the input.
    pub rejected: Vec<RejectedToken>,
    /// What to do.
    #[serde(rename = "verdict")]
    pub ruling: Ruling,
}

/// A token refused during assessment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedToken {
    /// Position in [`ChangeInput::tokens`].
    pub index: usize,
    /// Why.
    pub refusal: Refusal,
}

/// What the change gate should do with the candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Ruling {
    /// Nothing to do: same document, or an empty diff (HTTP 200, no activation).
    NoOp,
    /// Every requirement is met: activate (HTTP 200).
    Activate(Decision),
    /// Valid, short of approvals: keep as pending (HTTP 202); `Decision::detail` says what is missing.
    Pending(Decision),
    /// Refused; the active config keeps serving.
    Refused(Refusal),
}

/// Judges a candidate. Tokens that fail verification are listed in `rejected` and ignored;
/// the ruling comes from the rest (the admin API may refuse a push that carries a bad one).
pub fn assess(store: &TrustStore, input: &ChangeInput<'_>) -> Assessment {
    let digest = super::digest(input.bytes);
    let mut out = Assessment {
        digest,
        classification: None,
        accepted: Vec::new(),
        rejected: Vec::new(),
        ruling: Ruling::NoOp,
    };
    let version = input.doc.version;
    match check_version(
        version,
        &out.digest,
        input.high_water,
        store.rules().max_version_step,
    ) {
        Ok(VersionCheck::Same) => return out,
        Ok(VersionCheck::Newer) => {}
        Err(r) => {
            out.ruling = Ruling::Refused(r);
            return out;
        }
    }
    let c = classify(
        store.rules(),
        input.active,
        input.json,
        input.doc.change.class,
    );
    if c.no_op {
        out.classification = Some(c);
        return out;
    }
    if !store.require_approvals() {
        out.ruling = Ruling::Activate(Decision {
            class: ChangeClass::Unapproved,
            author: input.doc.change.author.clone(),
            author_kid: String::new(),
            approvers: Vec::new(),
            shortfalls: Vec::new(),
            ignored: Vec::new(),
        });
        out.classification = Some(c);
        return out;
    }
    let expected = Expected {
        acts: &[Act::Author, Act::Approve],
        digest: &out.digest,
        version,
        target: None,
    };
    for (index, raw) in input.tokens.iter().enumerate() {
        match verify_for(raw, store, &expected, input.now) {
            Ok(t) => out.accepted.push(t),
            Err(refusal) => out.rejected.push(RejectedToken { index, refusal }),
        }
    }
    out.ruling = match evaluate(
        store,
        &c,
        &input.doc.change,
        &out.accepted,
        input.author_review_overdue,
    ) {
        Ok(d) if d.satisfied() => Ruling::Activate(d),
        Ok(d) => Ruling::Pending(d),
        Err(r) => Ruling::Refused(with_rejections(r, &out.rejected)),
    };
    out.classification = Some(c);
    out
}

/// A missing author is often a refused author token: say so.
fn with_rejections(mut r: Refusal, rejected: &[RejectedToken]) -> Refusal {
    if !rejected.is_empty() {
        let why: Vec<String> = rejected
            .iter()
            .map(|t| format!("token {}: {}", t.index + 1, t.refusal))
            .collect();
        r.detail = format!("{} (refused tokens: {})", r.detail, why.join("; "));
    }
    r
}
