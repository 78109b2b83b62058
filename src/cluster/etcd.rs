//! The connection to etcd: client options (TLS, keep-alive), one timeout for every unary
//! call, and the errors an operator sees.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::cluster::Cluster;

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// A TLS file could not be read or parsed.
    #[error("etcd TLS: {path}: {detail}")]
    TlsFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The client could not be built from the settings (a malformed URL, TLS with http).
    #[error("etcd client settings: {0}")]
    Settings(String),
    /// etcd did not answer in time, or refused the connection.
    #[error("etcd is unreachable ({endpoints}): {detail}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What failed (connection refused, TLS handshake, timeout).
        detail: String,
    },
    /// Another live node registered the same `node_id`.
    #[error(
        "node_id `{node_id}` is already registered by another live node ({other}); give every node its own cluster.node_id"
    )]
    NodeIdTaken {
        /// The id.
        node_id: String,
        /// The other node's registration, as recorded in etcd.
        other: String,
    },
    /// The prefix belongs to a fleet of another trust environment.
    #[error(
        "prefix {prefix} belongs to a fleet of environment `{theirs}`, but this node's trust.environment is `{ours}`: check cluster.etcd.prefix"
    )]
    WrongPrefix {
        /// The prefix.
        prefix: String,
        /// The environment recorded there.
        theirs: String,
        /// This node's.
        ours: String,
    },
    /// A fenced write found that this node no longer leads.
    #[error("this node is no longer the leader; the write was refused by etcd")]
    Deposed,
    /// A compare-and-swap kept losing to other writers.
    #[error("too much contention on {0}")]
    Contention(String),
    /// Something in etcd does not parse.
    #[error("unexpected data at {key}: {detail}")]
    Data {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

/// Connection parameters derived from the settings.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Endpoint URLs.
    pub endpoints: Vec<String>,
    /// Time allowed for one unary call.
    pub timeout: Duration,
    options: ConnectOptions,
}

// === impl Conn ===

impl Conn {
    /// Reads the TLS files and builds the client options. File errors surface here, at start.
    pub fn new(c: &Cluster) -> Result<Conn, ClusterError> {
        let ttl = c.lease_ttl.0;
        // A call may take a good part of the lease, never all of it: a node must notice that
        // it is cut off before its lease runs out.
        let timeout = (ttl / 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(1), timeout)
            .with_keep_alive_while_idle(true);
        if let Some(t) = &c.etcd.tls {
            let mut tls = TlsOptions::new();
            match &t.ca_file {
                Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?)),
                None => tls = tls.with_webpki_roots(),
            }
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            options = options.with_tls(tls);
        }
        Ok(Conn {
            endpoints: c.etcd.endpoints.clone(),
            timeout,
            options,
        })
    }

    /// A client. The channel connects lazily: an unreachable etcd shows on the first call.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        match tokio::time::timeout(
            self.timeout,
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.unreachable("timed out connecting")),
        }
    }

    /// Runs one etcd call with the call timeout, mapping failures to [`ClusterError`].
    pub async fn call<T, F>(&self, f: F) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => {
                Err(self.unreachable(&format!("no answer within {} ms", self.timeout.as_millis())))
            }
        }
    }

    /// An etcd client error as a [`ClusterError`], naming the cause as precisely as it can
    /// (a TLS handshake failure says so).
    pub fn error(&self, e: etcd_client::Error) -> ClusterError {
        match e {
            etcd_client::Error::InvalidArgs(m) => ClusterError::Settings(m),
            etcd_client::Error::InvalidUri(u) => ClusterError::Settings(u.to_string()),
            other => self.unreachable(&error_chain(&other)),
        }
    }

    fn unreachable(&self, detail: &str) -> ClusterError {
        ClusterError::Unreachable {
            endpoints: self.endpoints.join(", "),
            detail: detail.to_string(),
        }
    }
}

/// An error with its sources, so "transport error" also says "invalid peer certificate".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    let bytes = std::fs::read(path).map_err(|e| ClusterError::TlsFile {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ClusterError::TlsFile {
            path: path.display().to_string(),
            detail: "not a PEM file (no -----BEGIN line)".into(),
        });
    }
    Ok(bytes)
}
