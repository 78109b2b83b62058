//! The fleet from the command line (SPEC §12), straight to etcd: `sluice push --etcd`,
//! `sluice status --etcd`, and the etcd half of `sluice audit verify --etcd`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, EXIT_REFUSED};
use crate::cluster::{Conn, Keys, Session, publish, status};
use crate::config::Dur;
use crate::config::cluster::{Cluster, Etcd, EtcdTls};

/// How to reach the fleet's etcd from a tool.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd client URL(s), comma-separated, e.g. http://127.0.0.1:2379.
    #[arg(long = "etcd", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The fleet's key prefix (cluster.etcd.prefix).
    #[arg(long)]
    pub prefix: Option<String>,
    /// CA bundle for https endpoints.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd mTLS.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd mTLS.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

// === impl EtcdArgs ===

impl EtcdArgs {
    /// True when `--etcd` was given.
    pub fn given(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// Connection and keys; the error is for people.
    pub fn connect(&self) -> Result<(Conn, Keys), String> {
        let Some(prefix) = &self.prefix else {
            return Err("--etcd needs --prefix (the fleet's cluster.etcd.prefix)".into());
        };
        let tls = (self.etcd_ca.is_some() || self.etcd_cert.is_some()).then(|| EtcdTls {
            ca_file: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        });
        let c = Cluster {
            etcd: Etcd {
                endpoints: self.etcd.clone(),
                prefix: prefix.clone(),
                tls,
            },
            node_id: Some("sluice-cli".into()),
            lease_ttl: Dur::secs(10),
        };
        let conn = Conn::new(&c).map_err(|e| e.to_string())?;
        Ok((conn, Keys::new(prefix)))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// `sluice push --etcd URL --prefix P TRAFFIC [TOKEN...]`: publishes the document and its
/// tokens, then waits (up to `wait`) until every live node has judged it, and prints each
/// node's judgement. Exit 0 when every node activated it (or had it already), 3 when any
/// keeps it pending, 1 when any refused it or etcd is unreachable.
pub fn push(e: &EtcdArgs, doc: &[u8], tokens: &[String], wait: Dur) -> i32 {
    let (conn, keys) = match e.connect() {
        Ok(c) => c,
        Err(m) => {
            eprintln!("sluice push: {m}");
            return EXIT_INVALID;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(m) => {
            eprintln!("sluice push: {m}");
            return EXIT_REFUSED;
        }
    };
    let digest = crate::change::digest(doc);
    rt.block_on(async move {
        let s = match Session::tool(&conn, &keys).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sluice push: {e}");
                return EXIT_REFUSED;
            }
        };
        if let Err(e) = publish::candidate(&s, doc, tokens).await {
            eprintln!("sluice push: {e}");
            return EXIT_REFUSED;
        }
        println!("published {digest} under {}", keys.prefix());
        let deadline = Instant::now() + wait.0;
        loop {
            let v = match status::read(&conn, &keys).await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("sluice push: {e}");
                    return EXIT_REFUSED;
                }
            };
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            let judged: Vec<&Value> = nodes
                .iter()
                .filter(|n| {
                    n["last"]["digest"] == digest.as_str() || n["digest"] == digest.as_str()
                })
                .collect();
            if (!nodes.is_empty() && judged.len() == nodes.len()) || Instant::now() >= deadline {
                return report(&nodes, &digest);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn report(nodes: &[Value], digest: &str) -> i32 {
    if nodes.is_empty() {
        println!("no live node in the fleet: it will be judged as nodes join");
        return EXIT_PENDING;
    }
    let mut code = EXIT_OK;
    for n in nodes {
        let id = n["id"].as_str().unwrap_or("");
        let (outcome, reason) = if n["digest"] == digest {
            ("active".to_string(), String::new())
        } else if n["last"]["digest"] == digest {
            (
                n["last"]["outcome"].as_str().unwrap_or("").to_string(),
                n["last"]["reason"].as_str().unwrap_or("").to_string(),
            )
        } else {
            ("not judged yet".to_string(), String::new())
        };
        let worst = match outcome.as_str() {
            "active" | "activated" | "no_op" => EXIT_OK,
            "pending" => EXIT_PENDING,
            _ => EXIT_REFUSED,
        };
        if worst == EXIT_REFUSED || (worst == EXIT_PENDING && code == EXIT_OK) {
            code = worst;
        }
        if reason.is_empty() {
            println!("{id:<20} {outcome}");
        } else {
            println!("{id:<20} {outcome}: {reason}");
        }
    }
    code
}

/// `sluice status --etcd URL --prefix P`: the fleet table, read from etcd.
pub fn status(e: &EtcdArgs, json: bool) -> i32 {
    let (conn, keys) = match e.connect() {
        Ok(c) => c,
        Err(m) => {
            eprintln!("sluice status: {m}");
            return EXIT_INVALID;
        }
    };
    let v = match runtime().and_then(|rt| {
        rt.block_on(status::read(&conn, &keys))
            .map_err(|e| e.to_string())
    }) {
        Ok(v) => v,
        Err(m) => {
            eprintln!("sluice status: {m}");
            return EXIT_REFUSED;
        }
    };
    if v["fleet_exists"] != true {
        eprintln!(
            "sluice status: no fleet under prefix {} (no node has joined with this prefix)",
            keys.prefix()
        );
        return EXIT_REFUSED;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", status::table(&v));
    }
    EXIT_OK
}

/// `sluice audit verify --etcd URL --prefix P [--head HEX]`: checks the fleet chain.
pub fn verify(e: &EtcdArgs, head: Option<&str>) -> i32 {
    let (conn, keys) = match e.connect() {
        Ok(c) => c,
        Err(m) => {
            eprintln!("sluice audit verify: {m}");
            return EXIT_INVALID;
        }
    };
    let done = runtime().map(|rt| rt.block_on(crate::cluster::audit::verify(&conn, &keys, head)));
    match done {
        Ok(Ok((h, _))) => {
            println!(
                "ok: fleet chain under {}: {} lines, chain intact, head {}",
                keys.prefix(),
                h.seq,
                h.hash
            );
            EXIT_OK
        }
        Ok(Err(e)) => {
            eprintln!(
                "sluice audit verify: fleet chain under {}: {e}",
                keys.prefix()
            );
            EXIT_REFUSED
        }
        Err(m) => {
            eprintln!("sluice audit verify: {m}");
            EXIT_REFUSED
        }
    }
}
