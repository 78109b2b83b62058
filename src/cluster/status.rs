//! The fleet as a table: `GET /api/v1/cluster` (this node's view) and
//! `sluice status --etcd URL --prefix P` (read straight from etcd). Both have the same shape:
//! nodes (id, connected, leader, version, digest, last seen, last judgement), the rollouts as
//! the leader wrote them, the fleet's active document and high-water mark.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Cluster;
use super::etcd::{ClusterError, Conn};
use super::keys::{Key, Keys};
use super::publish::DocPointer;
use super::session::NodeRecord;
use crate::rollout::fleet::FleetProgress;

/// What the fleet looks like.
struct Fleet<'a> {
    prefix: &'a str,
    leader: Option<&'a str>,
    nodes: &'a BTreeMap<String, NodeRecord>,
    rollouts: &'a BTreeMap<String, FleetProgress>,
    active: Option<&'a DocPointer>,
    high_water: Option<&'a DocPointer>,
}

// === impl Cluster ===

impl Cluster {
    /// `GET /api/v1/cluster`: this node's view of the fleet.
    pub fn status_json(&self) -> Value {
        let v = self.view();
        let mut nodes = v.nodes.clone();
        // A node cut off from etcd still lists itself, as disconnected.
        if !self.connected()
            && let Some(r) = &v.record
        {
            nodes.insert(self.node_id.clone(), r.clone());
        }
        let mut out = Fleet {
            prefix: self.keys.prefix(),
            leader: v.leader.as_deref(),
            nodes: &nodes,
            rollouts: &v.rollouts,
            active: v.active.as_ref(),
            high_water: v.high_water.as_ref(),
        }
        .json();
        if !self.connected()
            && let Some(list) = out["nodes"].as_array_mut()
        {
            for n in list {
                if n["id"] == self.node_id.as_str() {
                    n["connected"] = json!(false);
                    n["leader"] = json!(false);
                }
            }
        }
        out["node_id"] = json!(self.node_id);
        out["connected"] = json!(self.connected());
        out["leading"] = json!(self.is_leader());
        out["role"] = json!(format!("{:?}", self.role()).to_lowercase());
        out["last_error"] = json!(v.last_error);
        out
    }
}

/// Reads the fleet straight from etcd (`sluice status --etcd`).
pub async fn read(conn: &Conn, keys: &Keys) -> Result<Value, ClusterError> {
    let mut c = conn.client().await?;
    let resp = conn
        .call(c.get(
            keys.all(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        ))
        .await?;
    let mut nodes = BTreeMap::new();
    let mut rollouts = BTreeMap::new();
    let (mut leader, mut active, mut high_water, mut fleet) = (None, None, None, false);
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match keys.parse(&key) {
            Key::Fleet => fleet = true,
            Key::Node(id) => {
                if let Ok(r) = serde_json::from_slice::<NodeRecord>(kv.value()) {
                    nodes.insert(id.to_string(), r);
                }
            }
            Key::Leader => leader = Some(String::from_utf8_lossy(kv.value()).into_owned()),
            Key::Rollout(name) => {
                if let Ok(p) = serde_json::from_slice::<FleetProgress>(kv.value()) {
                    rollouts.insert(name.to_string(), p);
                }
            }
            Key::Active => active = serde_json::from_slice::<DocPointer>(kv.value()).ok(),
            Key::HighWater => high_water = serde_json::from_slice::<DocPointer>(kv.value()).ok(),
            _ => {}
        }
    }
    let mut v = Fleet {
        prefix: keys.prefix(),
        leader: leader.as_deref(),
        nodes: &nodes,
        rollouts: &rollouts,
        active: active.as_ref(),
        high_water: high_water.as_ref(),
    }
    .json();
    v["fleet_exists"] = json!(fleet);
    Ok(v)
}

/// The status JSON as a table for people.
pub fn table(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet {}  leader {}  active v{} {}  high-water v{}",
        v["prefix"].as_str().unwrap_or(""),
        v["leader"].as_str().unwrap_or("(none)"),
        v["active"]["version"].as_u64().unwrap_or(0),
        v["active"]["digest"].as_str().unwrap_or("-"),
        v["high_water"]["version"].as_u64().unwrap_or(0),
    );
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:<6} {:>7}  {:<20} {:<24} LAST",
        "NODE", "CONNECTED", "LEADER", "VERSION", "DIGEST", "LAST SEEN"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let digest = n["digest"].as_str().unwrap_or("");
        let short = digest.get(..19).unwrap_or(digest);
        let last = match (n["last"]["outcome"].as_str(), n["last"]["reason"].as_str()) {
            (Some(o), Some(r)) if !r.is_empty() => format!("{o} ({r})"),
            (Some(o), _) => o.to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<6} {:>7}  {:<20} {:<24} {last}",
            n["id"].as_str().unwrap_or(""),
            if n["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            if n["leader"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            n["version"].as_u64().unwrap_or(0),
            short,
            n["last_seen"].as_str().unwrap_or(""),
        );
    }
    let rollouts = v["rollouts"].as_object();
    if rollouts.is_some_and(|r| !r.is_empty()) {
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:>4} {:>8}  DOCUMENT",
            "ROLLOUT", "PHASE", "STEP", "WEIGHT"
        );
        for (name, r) in rollouts.into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:<20} {:<22} {:>4} {:>7}%  v{}",
                name,
                r["phase"].as_str().unwrap_or(""),
                r["step"].as_u64().unwrap_or(0),
                r["weight"].as_f64().unwrap_or(0.0),
                r["document"]["version"].as_u64().unwrap_or(0),
            );
        }
    }
    out
}

// === impl Fleet ===

impl Fleet<'_> {
    fn json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .values()
            .map(|n| {
                json!({
                    "id": n.node_id,
                    "connected": true,
                    "leader": self.leader == Some(n.node_id.as_str()),
                    "version": n.version,
                    "digest": n.digest,
                    "last_seen": n.seen_at,
                    "registered_at": n.registered_at,
                    "host": n.host,
                    "admin": n.admin,
                    "last": n.last,
                })
            })
            .collect();
        let rollouts: serde_json::Map<String, Value> = self
            .rollouts
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    json!({
                        "phase": p.progress.phase.as_str(),
                        "step": p.progress.step,
                        "weight": f64::from(p.weight_bp) / 100.0,
                        "document": p.document,
                        "leader": p.leader,
                        "verdict": p.verdict,
                        "updated_at": crate::clock::rfc3339(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.at_ms)
                        ),
                    }),
                )
            })
            .collect();
        json!({
            "prefix": self.prefix,
            "leader": self.leader,
            "nodes": nodes,
            "rollouts": rollouts,
            "active": self.active,
            "high_water": self.high_water,
        })
    }
}
