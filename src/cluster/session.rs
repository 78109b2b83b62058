//! One connected session with etcd: a client, this node's lease (kept alive), its
//! registration under `P/nodes/<id>` with node-id collision detection, and leadership.
//!
//! **Registration.** A node creates `P/nodes/<id>` under its lease only if the key is absent.
//! If another registration holds it, the node waits up to `lease_ttl` + 1 s for that lease to
//! lapse — a restarted node's own previous registration lapses that way — and then refuses,
//! naming the holder: two live nodes with one id would judge, lead and publish as one.
//!
//! **Leadership.** etcd's lease-based election, as its own `concurrency` package does it: the
//! leader is whoever created `P/leader` (under its lease) when it was absent; the key's create
//! revision is the leader's *term*. A leader's writes are transactions guarded by
//! `create_revision(P/leader) == term`, so a deposed leader's write — its lease lapsed and
//! another node created the key — fails inside etcd, whatever the deposed node believes.

use std::time::{Duration, SystemTime};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::etcd::{ClusterError, Conn};
use super::keys::Keys;

/// A node's registration, `P/nodes/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub node_id: String,
    /// Random per process: tells a node's own earlier registration from another's.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Admin listener address.
    pub admin: String,
    /// When this process registered (RFC 3339).
    pub registered_at: String,
    /// Active version (0: none).
    #[serde(default)]
    pub version: u64,
    /// Active digest ("" when none).
    #[serde(default)]
    pub digest: String,
    /// When this record was last written (RFC 3339).
    #[serde(default)]
    pub seen_at: String,
    /// What this node last made of a candidate.
    #[serde(default)]
    pub last: Option<LastOutcome>,
}

/// A node's judgement of the last candidate it saw, for `sluice push --etcd` and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOutcome {
    /// The candidate's digest.
    pub digest: String,
    /// `activated`, `pending`, `rejected`, `noop`.
    pub outcome: String,
    /// Reason code (refusals) or what is missing (pending).
    #[serde(default)]
    pub reason: String,
}

/// A leadership term: the create revision of `P/leader` when this node created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term(pub i64);

/// A session: client and lease.
#[derive(Clone)]
pub struct Session {
    /// The etcd client (cheap to clone).
    pub client: Client,
    /// Connection parameters (timeouts).
    pub conn: Conn,
    /// Key names.
    pub keys: Keys,
    /// This node's id.
    pub node_id: String,
    /// This session's lease.
    pub lease: i64,
    /// The lease TTL.
    pub ttl: Duration,
}

// === impl NodeRecord ===

impl NodeRecord {
    /// A fresh record for this process.
    pub fn new(node_id: &str, instance: &str, admin: &str) -> NodeRecord {
        let now = crate::clock::rfc3339(SystemTime::now());
        NodeRecord {
            node_id: node_id.to_string(),
            instance: instance.to_string(),
            host: crate::config::cluster::hostname(),
            pid: std::process::id(),
            admin: admin.to_string(),
            registered_at: now.clone(),
            version: 0,
            digest: String::new(),
            seen_at: now,
            last: None,
        }
    }

    /// One line naming this registration, for collision errors.
    pub fn describe(&self) -> String {
        format!(
            "host {}, pid {}, admin {}, registered at {}",
            self.host, self.pid, self.admin, self.registered_at
        )
    }
}

// === impl Session ===

impl Session {
    /// Connects and grants a lease of `ttl`.
    pub async fn open(
        conn: &Conn,
        keys: &Keys,
        node_id: &str,
        ttl: Duration,
    ) -> Result<Session, ClusterError> {
        let mut client = conn.client().await?;
        let lease = conn
            .call(client.lease_grant(ttl.as_secs() as i64, None))
            .await?
            .id();
        Ok(Session {
            client,
            conn: conn.clone(),
            keys: keys.clone(),
            node_id: node_id.to_string(),
            lease,
            ttl,
        })
    }

    /// A session without a lease, for tools (`sluice push --etcd`) that only read and write.
    pub async fn tool(conn: &Conn, keys: &Keys) -> Result<Session, ClusterError> {
        let client = conn.client().await?;
        Ok(Session {
            client,
            conn: conn.clone(),
            keys: keys.clone(),
            node_id: "sluice-cli".into(),
            lease: 0,
            ttl: Duration::ZERO,
        })
    }

    /// Registers `record` under this session's lease, waiting out a lapsing registration of
    /// the same id (see the module doc); refuses with [`ClusterError::NodeIdTaken`] when a
    /// live node holds it.
    pub async fn register(&self, record: &NodeRecord) -> Result<(), ClusterError> {
        let key = self.keys.node(&self.node_id);
        let value = to_json(record);
        let deadline = tokio::time::Instant::now() + self.ttl + Duration::from_secs(1);
        loop {
            let mut c = self.client.clone();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(self.lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = self.conn.call(c.txn(txn)).await?;
            if resp.succeeded() {
                return Ok(());
            }
            let Some(held) = first_kv(&resp) else {
                continue; // deleted in between: try again at once
            };
            let other: Option<NodeRecord> = serde_json::from_slice(held.value()).ok();
            if other
                .as_ref()
                .is_some_and(|o| o.instance == record.instance)
            {
                // Our own registration from before a reconnect: move it to this lease.
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        held.mod_revision(),
                    )])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(self.lease)),
                    )]);
                if self.conn.call(c.txn(txn)).await?.succeeded() {
                    return Ok(());
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                let other = other.map_or_else(
                    || String::from_utf8_lossy(held.value()).into_owned(),
                    |o| o.describe(),
                );
                return Err(ClusterError::NodeIdTaken {
                    node_id: self.node_id.clone(),
                    other,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rewrites this node's record (version, digest, last outcome) under the lease.
    pub async fn update_record(&self, record: &NodeRecord) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        self.conn
            .call(c.put(
                self.keys.node(&self.node_id),
                to_json(record),
                Some(PutOptions::new().with_lease(self.lease)),
            ))
            .await
            .map(|_| ())
    }

    /// Keeps the lease alive until it lapses or etcd stops answering; returns why it ended.
    /// Sends a keep-alive every third of the TTL, so two can be lost before the lease lapses.
    pub async fn keep_alive(&self) -> ClusterError {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = match self.conn.call(c.lease_keep_alive(self.lease)).await {
            Ok(k) => k,
            Err(e) => return e,
        };
        let every = (self.ttl / 3).max(Duration::from_millis(300));
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return self.conn.error(e);
            }
            match self.conn.call(stream.message()).await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => {
                    return ClusterError::Unreachable {
                        endpoints: self.conn.endpoints.join(", "),
                        detail: "this node's lease expired".into(),
                    };
                }
                Ok(None) => {
                    return ClusterError::Unreachable {
                        endpoints: self.conn.endpoints.join(", "),
                        detail: "the keep-alive stream closed".into(),
                    };
                }
                Err(e) => return e,
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Revokes the lease: this node's registration, windows and leadership go at once (a
    /// clean shutdown hands leadership over without waiting for the TTL).
    pub async fn revoke(&self) {
        let mut c = self.client.clone();
        let _ = self.conn.call(c.lease_revoke(self.lease)).await;
    }

    /// Tries to become leader; `Some(term)` when this node now leads, `None` when another
    /// node does (its id is in `P/leader`).
    pub async fn campaign(&self) -> Result<Option<Term>, ClusterError> {
        let key = self.keys.leader();
        let mut c = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.node_id.clone(),
                Some(PutOptions::new().with_lease(self.lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.conn.call(c.txn(txn)).await?;
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            return Ok(Some(Term(rev)));
        }
        // Our own leadership from this very lease (a campaign repeated after a watch hiccup).
        if let Some(kv) = first_kv(&resp)
            && kv.lease() == self.lease
        {
            return Ok(Some(Term(kv.create_revision())));
        }
        Ok(None)
    }

    /// The current leader's id and term, if any.
    pub async fn leader(&self) -> Result<Option<(String, Term)>, ClusterError> {
        let mut c = self.client.clone();
        let resp = self.conn.call(c.get(self.keys.leader(), None)).await?;
        Ok(resp.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                Term(kv.create_revision()),
            )
        }))
    }

    /// Runs `ops` only while `term` still leads; [`ClusterError::Deposed`] otherwise.
    /// Returns the revision the write landed at.
    pub async fn fenced(&self, term: Term, ops: Vec<TxnOp>) -> Result<i64, ClusterError> {
        let mut c = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.keys.leader(),
                CompareOp::Equal,
                term.0,
            )])
            .and_then(ops);
        let resp = self.conn.call(c.txn(txn)).await?;
        if resp.succeeded() {
            Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
        } else {
            Err(ClusterError::Deposed)
        }
    }

    /// Gets one key's value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut c = self.client.clone();
        let resp = self.conn.call(c.get(key, None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Every key and value under `prefix`, in key order, and the revision read at.
    pub async fn get_prefix(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Vec<u8>)>, i64), ClusterError> {
        let mut c = self.client.clone();
        let resp = self
            .conn
            .call(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((kvs, rev))
    }

    /// Puts `value` at `key` unless the key exists; true when this call created it.
    pub async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        leased: bool,
    ) -> Result<bool, ClusterError> {
        let mut c = self.client.clone();
        let opts = leased.then(|| PutOptions::new().with_lease(self.lease));
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, opts)]);
        Ok(self.conn.call(c.txn(txn)).await?.succeeded())
    }

    /// Puts under this node's lease.
    pub async fn put_leased(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        self.conn
            .call(c.put(key, value, Some(PutOptions::new().with_lease(self.lease))))
            .await
            .map(|_| ())
    }

    /// Puts a plain (unleased) value.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        self.conn.call(c.put(key, value, None)).await.map(|_| ())
    }

    /// Deletes one key.
    pub async fn delete(&self, key: &str) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        self.conn.call(c.delete(key, None)).await.map(|_| ())
    }

    /// Runs a transaction; true when its comparisons held.
    pub async fn txn(&self, txn: Txn) -> Result<bool, ClusterError> {
        let mut c = self.client.clone();
        Ok(self.conn.call(c.txn(txn)).await?.succeeded())
    }
}

fn first_kv(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

/// Serializes a record (these types always serialize).
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
