//! The fleet audit chain (SPEC §12): one hash chain in etcd, in the local log's format
//! (`seq`, `ts`, `event`, `prev` = sha256 of the previous line), appended by
//! compare-and-swap on its head so that concurrent writers never fork it.
//!
//! `P/audit/head` holds `{"seq","hash"}`; line `seq` is at `P/audit/log/<seq>`. An append
//! reads the head, renders the next line on it, and writes line and head in one transaction
//! guarded by the head's `mod_revision`; on a lost race it reads again. An append may carry a
//! *once* key (`P/audit/once/<key>`, created in the same transaction): the fleet's record of
//! an activation is written by whichever node activates first, exactly once.

use std::time::SystemTime;

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::etcd::{ClusterError, Conn};
use super::keys::Keys;
use super::session::Session;
use crate::change::audit::{Chain, Event, GENESIS, Head, VerifyError, check_head, render_line};

/// Attempts before an append gives up under contention.
const ATTEMPTS: usize = 50;

/// `P/audit/head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeadRecord {
    seq: u64,
    hash: String,
}

/// Appends `event` (plus `node`) to the fleet chain. With `once`, the append
/// happens only if no append with that key happened before; returns the new head, or `None`
/// when `once` had already been used.
pub async fn append(
    s: &Session,
    event: Event,
    once: Option<&str>,
) -> Result<Option<Head>, ClusterError> {
    let event = event.with("node", &s.node_id);
    let head_key = s.keys.audit_head();
    for _ in 0..ATTEMPTS {
        let mut c = s.client.clone();
        let resp = s.conn.call(c.get(head_key.clone(), None)).await?;
        let (head, mod_rev) = match resp.kvs().first() {
            Some(kv) => {
                let h: HeadRecord =
                    serde_json::from_slice(kv.value()).map_err(|e| ClusterError::Data {
                        key: head_key.clone(),
                        detail: e.to_string(),
                    })?;
                (h, kv.mod_revision())
            }
            None => (
                HeadRecord {
                    seq: 0,
                    hash: GENESIS.to_string(),
                },
                0,
            ),
        };
        let seq = head.seq + 1;
        let (line, hash) =
            render_line(seq, &head.hash, SystemTime::now(), event.clone()).map_err(|e| {
                ClusterError::Data {
                    key: head_key.clone(),
                    detail: e.to_string(),
                }
            })?;
        let new_head = HeadRecord {
            seq,
            hash: hash.clone(),
        };
        let mut when = vec![Compare::mod_revision(
            head_key.clone(),
            CompareOp::Equal,
            mod_rev,
        )];
        let mut ops = vec![
            TxnOp::put(s.keys.audit_line(seq), line, None),
            TxnOp::put(head_key.clone(), super::session::to_json(&new_head), None),
        ];
        if let Some(k) = once {
            let once_key = s.keys.audit_once(k);
            when.push(Compare::create_revision(
                once_key.clone(),
                CompareOp::Equal,
                0,
            ));
            ops.push(TxnOp::put(once_key, seq.to_string(), None));
        }
        let check: Vec<TxnOp> = once
            .map(|k| TxnOp::get(s.keys.audit_once(k), None))
            .into_iter()
            .collect();
        let resp = s
            .conn
            .call(c.txn(Txn::new().when(when).and_then(ops).or_else(check)))
            .await?;
        if resp.succeeded() {
            return Ok(Some(Head { seq, hash }));
        }
        let used = resp.op_responses().into_iter().any(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => !g.kvs().is_empty(),
            _ => false,
        });
        if used {
            return Ok(None);
        }
    }
    Err(ClusterError::Contention(head_key))
}

/// Why the fleet chain failed verification.
#[derive(Debug, thiserror::Error)]
pub enum FleetVerifyError {
    /// etcd could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The chain is broken.
    #[error("{0}")]
    Chain(#[from] VerifyError),
    /// The chain's last line is not the recorded head.
    #[error(
        "the chain ends at seq {seq} hash {hash}, but {key} says seq {head_seq} hash {head_hash}"
    )]
    HeadRecord {
        /// Where the lines end.
        seq: u64,
        /// Their last hash.
        hash: String,
        /// The head key.
        key: String,
        /// Its seq.
        head_seq: u64,
        /// Its hash.
        head_hash: String,
    },
}

/// Reads and checks the whole fleet chain: every line in seq order, linked by `prev`, ending
/// at `P/audit/head` (and at `expected` when given). Returns the head and the entries.
pub async fn verify(
    conn: &Conn,
    keys: &Keys,
    expected: Option<&str>,
) -> Result<(Head, Vec<Value>), FleetVerifyError> {
    let mut c = conn.client().await?;
    // Head first: lines appended after it was read are not checked, never missing.
    let head = conn.call(c.get(keys.audit_head(), None)).await?;
    let rev = head.header().map(|h| h.revision()).unwrap_or(0);
    let recorded: Option<HeadRecord> = match head.kvs().first() {
        Some(kv) => Some(
            serde_json::from_slice(kv.value()).map_err(|e| ClusterError::Data {
                key: keys.audit_head(),
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let lines = conn
        .call(
            c.get(
                keys.audit_log(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_revision(rev)
                        .with_sort(SortTarget::Key, SortOrder::Ascend),
                ),
            ),
        )
        .await?;
    let mut chain = Chain::new();
    let mut entries = Vec::new();
    for kv in lines.kvs() {
        entries.push(chain.push(kv.value())?);
    }
    let got = chain.head();
    let (head_seq, head_hash) = recorded.map_or((0, GENESIS.to_string()), |h| (h.seq, h.hash));
    if got.seq != head_seq || got.hash != head_hash {
        return Err(FleetVerifyError::HeadRecord {
            seq: got.seq,
            hash: got.hash,
            key: keys.audit_head(),
            head_seq,
            head_hash,
        });
    }
    check_head(&got, expected)?;
    Ok((got, entries))
}
