//! Change management (SPEC §5, §11): the change gate and what it runs on a candidate.
//!
//! - [`gate`]: the one change gate (parse → verify → classify → approve → persist → swap).
//! - [`store`]: the state directory (atomic writes, documents by digest).
//! - [`audit`]: the hash-chained audit log.
//! - [`pending`]: changes short of approvals, kept in `state/pending/`.
//! - [`reviews`]: post-facto reviews of emergency changes, read from the audit log.
//! - [`folder`]: the approvals folder (`*.jwt`, one token per file).
//! - [`inputs`]: reading operator files (`traffic.yaml`, tokens) without blocking, bounded.
//! - [`watch`]: watching `traffic.yaml` and the approvals folder.
//! - [`reason`]: the snake_case refusal codes.
//! - [`keys`]: `ed25519:` public keys, `kid` fingerprints, `sluice keygen`.
//! - [`trust`]: the trust store (kid → principal, roles, compiled policy).
//! - [`token`]: EdDSA-only JWS verification and minting (`sluice approve`).
//! - [`diff`] and [`glob`]: leaf JSON Pointer diff and segment globs.
//! - [`classify`]: standard, normal or emergency, and why.
//! - [`rules`]: `trust.policy` compiled (requirements, standard paths, deadlines).
//! - [`policy`]: requirements, segregation of duties, reviews; what is missing, in words.
//! - [`version`]: anti-rollback against the high-water mark.
//! - [`assess`]: all of the above in gate order, for one candidate.
//!
//! The approval checks do no I/O (except keygen's key files) and read no clock: time is an argument.

pub mod assess;
pub mod audit;
pub mod classify;
pub mod diff;
pub mod folder;
pub mod gate;
pub mod glob;
pub mod inputs;
mod json;
pub mod keys;
pub mod pending;
pub mod policy;
pub mod reason;
pub mod reviews;
pub mod rules;
pub mod store;
pub mod token;
pub mod trust;
pub mod version;
pub mod watch;

pub use assess::{Assessment, ChangeInput, RejectedToken, Ruling, assess};
pub use classify::{Classification, classify};
pub use policy::{Approver, Decision, evaluate, evaluate_review};
pub use reason::{Reason, Refusal};
pub use token::{Act, Claims, Expected, VerifiedToken, sign, verify, verify_for};
pub use trust::TrustStore;
pub use version::{HighWater, VersionCheck, check_version};

use sha2::{Digest, Sha256};

/// The identity of a change: `sha256:<hex>` of the document's exact bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
