//! Refusal reason codes (SPEC §5): one snake_case word per way a change or token is refused,
//! shared by API errors, logs, audit records and `sluice_config_rejections_total{reason}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a token, a change or an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The signature does not verify under the key named by `kid`.
    BadSignature,
    /// `kid` names no key in `trust.principals`.
    UnknownKey,
    /// The key named by `kid` belongs to a principal other than `iss`.
    IssuerMismatch,
    /// `aud` is not this environment.
    WrongAudience,
    /// `sub` is not the digest of the document it is used for.
    WrongDigest,
    /// `ver` is not the version of the document it is used for.
    WrongVersion,
    /// `act` does not match the use (e.g. a `review` token offered as an approval).
    WrongAction,
    /// A `promote` token names another rollout or step.
    WrongTarget,
    /// `exp` has passed (beyond `clock_skew`).
    Expired,
    /// `exp - iat` exceeds `max_token_lifetime`.
    LifetimeTooLong,
    /// `iat` (or `nbf`) lies in the future beyond `clock_skew`.
    NotYetValid,
    /// The JWS `alg` is not `EdDSA`.
    BadAlgorithm,
    /// Not a JWS compact token, bad base64url, bad or duplicate-key JSON, missing claims.
    MalformedToken,
    /// The header carries `jwk`, `jku`, `x5u`, `x5c` or `crit`.
    ForbiddenHeader,
    /// The token is longer than 8 KiB.
    TokenTooLarge,
    /// No valid `author` token for the change.
    MissingAuthor,
    /// `change.author` is not the principal of the author token.
    AuthorMismatch,
    /// The author approving (or reviewing) their own change, or an approver reviewing it.
    SelfApproval,
    /// An approver holds none of the roles a requirement needs.
    MissingRole,
    /// Fewer distinct qualified approvers than required.
    InsufficientApprovals,
    /// The version does not exceed the high-water mark.
    VersionNotIncreasing,
    /// The version exceeds the high-water mark by more than `max_version_step`.
    VersionStepTooLarge,
    /// Same version as the high-water mark, different digest.
    Equivocation,
    /// The document does not parse or fails validation.
    InvalidDocument,
    /// The author has an emergency change whose review is overdue.
    ReviewOverdue,
    /// A single-use token (`promote`) was presented again.
    TokenReused,
    /// A `revert` names a document that was never activated.
    NotActivated,
    /// An approval names no pending or active change.
    UnknownChange,
    /// sluice could not write its state directory (or audit log); nothing changed.
    StateUnwritable,
}

/// A refusal: the reason code and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{reason}: {detail}")]
pub struct Refusal {
    /// The reason code.
    #[serde(rename = "error")]
    pub reason: Reason,
    /// What exactly is wrong, as a sentence.
    pub detail: String,
}

// === impl Reason ===

impl Reason {
    /// Every reason, for metric pre-registration and tests.
    pub const ALL: [Reason; 29] = [
        Reason::BadSignature,
        Reason::UnknownKey,
        Reason::IssuerMismatch,
        Reason::WrongAudience,
        Reason::WrongDigest,
        Reason::WrongVersion,
        Reason::WrongAction,
        Reason::WrongTarget,
        Reason::Expired,
        Reason::LifetimeTooLong,
        Reason::NotYetValid,
        Reason::BadAlgorithm,
        Reason::MalformedToken,
        Reason::ForbiddenHeader,
        Reason::TokenTooLarge,
        Reason::MissingAuthor,
        Reason::AuthorMismatch,
        Reason::SelfApproval,
        Reason::MissingRole,
        Reason::InsufficientApprovals,
        Reason::VersionNotIncreasing,
        Reason::VersionStepTooLarge,
        Reason::Equivocation,
        Reason::InvalidDocument,
        Reason::ReviewOverdue,
        Reason::TokenReused,
        Reason::NotActivated,
        Reason::UnknownChange,
        Reason::StateUnwritable,
    ];

    /// The snake_case code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongDigest => "wrong_digest",
            Reason::WrongVersion => "wrong_version",
            Reason::WrongAction => "wrong_action",
            Reason::WrongTarget => "wrong_target",
            Reason::Expired => "expired",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadAlgorithm => "bad_algorithm",
            Reason::MalformedToken => "malformed_token",
            Reason::ForbiddenHeader => "forbidden_header",
            Reason::TokenTooLarge => "token_too_large",
            Reason::MissingAuthor => "missing_author",
            Reason::AuthorMismatch => "author_mismatch",
            Reason::SelfApproval => "self_approval",
            Reason::MissingRole => "missing_role",
            Reason::InsufficientApprovals => "insufficient_approvals",
            Reason::VersionNotIncreasing => "version_not_increasing",
            Reason::VersionStepTooLarge => "version_step_too_large",
            Reason::Equivocation => "equivocation",
            Reason::InvalidDocument => "invalid_document",
            Reason::ReviewOverdue => "review_overdue",
            Reason::TokenReused => "token_reused",
            Reason::NotActivated => "not_activated",
            Reason::UnknownChange => "unknown_change",
            Reason::StateUnwritable => "state_unwritable",
        }
    }

    /// The admin API status for this refusal (SPEC §8): 400 when the input is not a document
    /// or not a JWS, 409 for anti-rollback conflicts, else 403 — a well-formed token that
    /// names nothing it may act on (`not_activated`, `unknown_change`) is an invalid token;
    /// 500 when sluice could not write its state.
    pub const fn http_status(self) -> u16 {
        match self {
            Reason::StateUnwritable => 500,
            Reason::MalformedToken | Reason::TokenTooLarge | Reason::InvalidDocument => 400,
            Reason::VersionNotIncreasing | Reason::Equivocation => 409,
            _ => 403,
        }
    }

    /// A refusal with this reason and `detail`.
    pub fn because(self, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason: self,
            detail: detail.into(),
        }
    }
}

// === impl Refusal ===

impl Refusal {
    /// The state directory or audit log could not be written: nothing was changed.
    pub fn unwritable(e: std::io::Error) -> Refusal {
        Reason::StateUnwritable.because(format!("the state directory could not be written: {e}"))
    }

    /// The admin API status for this refusal (SPEC §8).
    pub fn http_status(&self) -> u16 {
        self.reason.http_status()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_display_and_as_str_agree() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(r.to_string(), r.as_str());
            let back: Reason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn refusal_serializes_as_api_error() {
        let r = Reason::Expired.because("the token expired at 10.");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "expired", "detail": "the token expired at 10."})
        );
    }
}
