//! Writing into etcd what the fleet should see: candidates with their tokens, later tokens,
//! revert requests and operator actions; and the fleet's active pointer and high-water mark,
//! which only ever rise. Publication is idempotent by content: a document is stored once
//! under its digest, a token once under its hash, so every node publishing the same
//! ConfigMap reaches the fleet once.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::etcd::ClusterError;
use super::session::{Session, to_json};

/// A document named by version and digest (`P/active`, `P/highwater`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPointer {
    /// Version.
    pub version: u64,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// An operator action on its way to the leader, and its result: `P/actions/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Request id.
    pub id: String,
    /// Rollout name.
    pub rollout: String,
    /// `promote`, `pause`, `resume`, `abort`.
    pub action: String,
    /// The `Sluice-Approval` token, if any.
    #[serde(default)]
    pub approval: Option<String>,
    /// The node that took the request.
    pub from: String,
    /// Set when a node cut off from etcd rolled back alone: why, and under which document.
    #[serde(default)]
    pub alone: Option<Alone>,
    /// Set by the leader: `{"status": u16, "body": ...}`.
    #[serde(default)]
    pub result: Option<Value>,
}

/// A rollback a cut-off node made on its own traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alone {
    /// The document's digest the rollout ran under.
    pub digest: String,
    /// The rollback reason.
    pub reason: String,
}

/// A revert request: `P/reverts/<id>`. Every node verifies the token and reverts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRequest {
    /// Request id.
    pub id: String,
    /// The version to serve again.
    pub version: u64,
    /// The `revert` token.
    pub token: String,
    /// The node that took the request.
    pub from: String,
}

/// Publishes a candidate and its tokens in one transaction (a node that sees the document
/// sees its tokens with it); tokens already there are not written again. Returns true when
/// anything new was written.
pub async fn candidate(s: &Session, bytes: &[u8], tokens: &[String]) -> Result<bool, ClusterError> {
    let digest = crate::change::digest(bytes);
    let doc = s.keys.doc(&digest);
    let token_ops: Vec<TxnOp> = tokens
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            let key = s.keys.token(&digest, t);
            TxnOp::txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, t, None)]),
            )
        })
        .collect();
    let mut then = token_ops.clone();
    then.push(TxnOp::put(doc.clone(), bytes, None));
    let txn = Txn::new()
        .when([Compare::create_revision(doc, CompareOp::Equal, 0)])
        .and_then(then)
        .or_else(token_ops);
    let mut c = s.client.clone();
    let resp = s.conn.call(c.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(true);
    }
    Ok(resp.op_responses().into_iter().any(|r| match r {
        etcd_client::TxnOpResponse::Txn(t) => t.succeeded(),
        _ => false,
    }))
}

/// Publishes one token for the document `digest` (unless already there); true when new.
pub async fn token(s: &Session, digest: &str, token: &str) -> Result<bool, ClusterError> {
    s.put_if_absent(
        &s.keys.token(digest, token),
        token.trim().as_bytes().to_vec(),
        false,
    )
    .await
}

/// Publishes a revert request.
pub async fn revert(s: &Session, r: &RevertRequest) -> Result<(), ClusterError> {
    s.put(&s.keys.revert(&r.id), to_json(r)).await
}

/// Publishes an operator action for the leader.
pub async fn action(s: &Session, a: &ActionRequest) -> Result<(), ClusterError> {
    s.put(&s.keys.action(&a.id), to_json(a)).await
}

/// Raises the pointer at `key` to `p` unless it already names a version at or above it:
/// the fleet's active document and high-water mark never go down through sluice.
pub async fn raise(s: &Session, key: &str, p: &DocPointer) -> Result<(), ClusterError> {
    for _ in 0..20 {
        let mut c = s.client.clone();
        let resp = s.conn.call(c.get(key, None)).await?;
        let (cur, rev) = match resp.kvs().first() {
            Some(kv) => (
                serde_json::from_slice::<DocPointer>(kv.value()).ok(),
                kv.mod_revision(),
            ),
            None => (None, 0),
        };
        if cur.as_ref().is_some_and(|c| c.version >= p.version) {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key, to_json(p), None)]);
        if s.conn.call(c.txn(txn)).await?.succeeded() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(ClusterError::Contention(key.to_string()))
}

/// A fresh request id (time-ordered, random).
pub fn request_id() -> String {
    let ms = crate::clock::Clock::System.unix_millis();
    format!("{ms:013}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// The `version` of a traffic document, read without validating anything else (publication
/// only uses it to skip documents that can no longer activate); `None` when not found.
pub fn peek_version(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let parsed = crate::config::yaml::parse(text).ok()?;
    parsed.value.get("version")?.as_u64()
}
