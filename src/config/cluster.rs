//! The `cluster:` section of `sluice.yaml` (SPEC §12): etcd endpoints, key prefix, TLS to
//! etcd, this node's id and the lease TTL. Absent: a single instance.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Dur, yaml};

/// Cluster mode settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// How to reach etcd.
    pub etcd: Etcd,
    /// This node's id, unique in the fleet; absent: `SLUICE_NODE_ID`, else the hostname.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Membership and leadership lease (whole seconds; etcd leases are in seconds).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Dur,
}

/// The etcd cluster the fleet lives on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    /// Client URLs, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Every key sluice writes is under this prefix, e.g. `/sluice/prod`.
    pub prefix: String,
    /// TLS (and client certificates) to etcd; needs `https://` endpoints.
    #[serde(default)]
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: a CA to verify etcd by, and optionally a client certificate (mTLS).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM CA bundle that signed etcd's certificate; absent: the system's web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM client private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_lease_ttl() -> Dur {
    Dur::secs(5)
}

// === impl Cluster ===

impl Cluster {
    /// This node's id: `node_id`, else the environment's `SLUICE_NODE_ID` (Kubernetes: the
    /// pod's name through the downward API), else the hostname.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| {
                std::env::var("SLUICE_NODE_ID")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(hostname)
    }

    /// The prefix without a trailing slash.
    pub fn prefix(&self) -> &str {
        self.etcd.prefix.trim_end_matches('/')
    }

    /// Semantic checks, each error with its path.
    pub(crate) fn check(&self, spans: &yaml::Spans, errors: &mut Vec<ConfigError>) {
        let mut err = |path: &str, m: String| errors.push(ConfigError::at(spans, path, m));
        if self.etcd.endpoints.is_empty() {
            err(
                "cluster.etcd.endpoints",
                "at least one etcd endpoint is needed".into(),
            );
        }
        let tls = self.etcd.tls.is_some();
        for (i, e) in self.etcd.endpoints.iter().enumerate() {
            let path = format!("cluster.etcd.endpoints[{i}]");
            match e.split_once("://") {
                Some(("http", rest)) if !rest.is_empty() => {
                    if tls {
                        err(
                            &path,
                            format!(
                                "`{e}` is plain http, but `cluster.etcd.tls` is set: use https:// endpoints with TLS"
                            ),
                        );
                    }
                }
                Some(("https", rest)) if !rest.is_empty() => {}
                _ => err(
                    &path,
                    format!(
                        "`{e}` is not an etcd client URL: write `http://host:port` or `https://host:port`"
                    ),
                ),
            }
        }
        let p = &self.etcd.prefix;
        if !p.starts_with('/') || p.trim_end_matches('/').len() < 2 {
            err(
                "cluster.etcd.prefix",
                format!(
                    "`{p}` is not a key prefix: write it like `/sluice/prod` (a leading slash and at least one name)"
                ),
            );
        } else if p.contains("//")
            || p.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            err(
                "cluster.etcd.prefix",
                format!("`{p}` has an empty segment or whitespace"),
            );
        }
        if let Some(t) = &self.etcd.tls
            && t.cert.is_some() != t.key.is_some()
        {
            err(
                "cluster.etcd.tls",
                "`cert` and `key` go together: give both for a client certificate, or neither"
                    .into(),
            );
        }
        let id = self.node_id();
        if id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            err(
                "cluster.node_id",
                format!("`{id}` is not a node id: 1 to 128 of letters, digits, `-`, `_` and `.`"),
            );
        }
        let ttl = self.lease_ttl.0;
        if ttl.subsec_nanos() != 0 || ttl.as_secs() < 1 || ttl.as_secs() > 300 {
            err(
                "cluster.lease_ttl",
                "must be whole seconds from 1s to 300s (etcd leases count in seconds)".into(),
            );
        }
    }
}

/// The machine's hostname (a pod's name in Kubernetes); `sluice` when it cannot be read.
pub fn hostname() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "sluice".to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    #[test]
    fn parses_with_defaults() {
        let s = Settings::parse(
            "cluster:\n  etcd: { endpoints: [\"http://127.0.0.1:2379\"], prefix: /sluice/prod/ }\n  node_id: gw-1\n",
        )
        .unwrap();
        let c = s.cluster.unwrap();
        assert_eq!(c.node_id(), "gw-1");
        assert_eq!(c.prefix(), "/sluice/prod");
        assert_eq!(c.lease_ttl.0.as_secs(), 5);
        assert!(
            Settings::parse("listeners: []\n")
                .unwrap()
                .cluster
                .is_none()
        );
    }

    #[test]
    fn every_error_has_its_path() {
        let e = Settings::parse(
            "cluster:\n  etcd:\n    endpoints: [\"127.0.0.1:2379\", \"http://a:1\"]\n    prefix: sluice\n    tls: { cert: c.pem }\n  node_id: \"gw 1\"\n  lease_ttl: 1500ms\n",
        )
        .unwrap_err()
        .to_string();
        for p in [
            "cluster.etcd.endpoints[0] (line 3",
            "cluster.etcd.endpoints[1] (line 3",
            "cluster.etcd.prefix (line 4",
            "cluster.etcd.tls (line 5",
            "cluster.node_id (line 6",
            "cluster.lease_ttl (line 7",
        ] {
            assert!(e.contains(p), "{p} missing in:\n{e}");
        }
        let unknown =
            Settings::parse("cluster: { etcd: { endpoints: [], prefix: /a }, bogus: 1 }\n")
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("bogus"), "{unknown}");
    }
}
