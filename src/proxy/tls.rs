//! TLS termination on listeners: certificates chosen by SNI, ALPN `h2` + `http/1.1`, and
//! certificate hot reload.
//!
//! Each TLS listener owns a [`CertStore`]: the loaded certificates behind an `ArcSwap`. The
//! rustls resolver reads it per handshake; the reloader (control plane, [`reload_loop`])
//! stats the PEM files every second and, when one changed, loads the whole set and stores
//! it. Open connections keep the keys they negotiated with, so a reload never drops one;
//! a set that fails to load is logged and the previous one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::settings::{CertPair, ClientAuth, ClientAuthMode, ListenerTls};
use crate::shutdown::Shutdown;

/// How often certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The ALPN protocols a listener offers, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate set did not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A listener's `tls.certs` is empty.
    #[error("tls.certs is empty")]
    NoCerts,
    /// `tls.client_auth.ca_file` does not give a usable set of CA certificates.
    #[error("tls.client_auth.ca_file {path}: {detail}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// A listener's certificates, swappable while it serves.
#[derive(Debug)]
pub struct CertStore {
    pairs: Vec<CertPair>,
    current: ArcSwap<CertSet>,
    stamp: std::sync::Mutex<Vec<FileStamp>>,
}

/// One loaded set: the certificates in `sluice.yaml` order; the first is the default.
#[derive(Debug)]
struct CertSet {
    keys: Vec<Arc<CertifiedKey>>,
}

/// What a file looked like when last loaded: changes to any of these trigger a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

/// Picks a certificate by SNI from a [`CertStore`].
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

// === impl CertStore ===

impl CertStore {
    /// Loads every pair of `tls`; fails if any does not load.
    pub fn load(tls: &ListenerTls) -> Result<Arc<CertStore>, TlsError> {
        if tls.certs.is_empty() {
            return Err(TlsError::NoCerts);
        }
        let stamps = stamps(&tls.certs);
        let set = load_set(&tls.certs)?;
        Ok(Arc::new(CertStore {
            pairs: tls.certs.clone(),
            current: ArcSwap::from_pointee(set),
            stamp: std::sync::Mutex::new(stamps),
        }))
    }

    /// A rustls server config over this store: ALPN h2 and http/1.1, TLS 1.2 and 1.3,
    /// and client certificates verified when `client_auth` says so.
    pub fn server_config(
        self: &Arc<Self>,
        client_auth: Option<&ClientAuth>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let versions = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::File {
                path: PathBuf::new(),
                detail: e.to_string(),
            })?;
        let builder = match client_auth {
            None => versions.with_no_client_auth(),
            Some(a) => versions.with_client_cert_verifier(client_verifier(a)?),
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Reloads when a file changed since the last load. Blocking file IO: call off the
    /// data plane. Returns whether a new set was stored.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.pairs);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return false;
        }
        match load_set(&self.pairs) {
            Ok(set) => {
                *last = now;
                self.current.store(Arc::new(set));
                tracing::info!(certs = self.pairs.len(), "Listener certificates reloaded.");
                true
            }
            Err(e) => {
                // Remember the stamps anyway so that a broken file is reported once, not
                // every second; the next write to it triggers another attempt.
                *last = now;
                tracing::warn!(error = %e, "Certificate reload failed; the previous certificates keep serving.");
                false
            }
        }
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let first = set.keys.first().cloned();
        let Some(name) = sni.and_then(|s| ServerName::try_from(s).ok()) else {
            return first;
        };
        if set.keys.len() == 1 {
            return first;
        }
        // A handful of certificates per listener: checking each against the name (webpki
        // rules, wildcards included) costs microseconds next to the handshake itself.
        set.keys
            .iter()
            .find(|k| {
                k.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .cloned()
            .or(first)
    }
}

// === impl Resolver ===

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

/// Loads a listener's certificates (and client CA) and builds its acceptor.
pub fn listener_tls(tls: &ListenerTls) -> Result<super::ListenerTls, TlsError> {
    let certs = CertStore::load(tls)?;
    let cfg = certs.server_config(tls.client_auth.as_ref())?;
    Ok(super::ListenerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(cfg),
        certs,
        client_auth: tls.client_auth.is_some(),
    })
}

/// Verifies client certificates against `ca_file` (webpki rules: chain, validity dates,
/// the client-auth key usage); `optional` also lets clients present none.
fn client_verifier(
    a: &ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let err = |detail: String| TlsError::ClientCa {
        path: a.ca_file.clone(),
        detail,
    };
    let cas = read_certs(&a.ca_file).map_err(|e| match e {
        TlsError::File { detail, .. } => err(detail),
        other => err(other.to_string()),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in cas.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| err(format!("certificate {} is not a usable CA: {e}", i + 1)))?;
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = match a.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map_err(|e| err(e.to_string()))
}

/// The crypto provider sluice uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::File {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn load_set(pairs: &[CertPair]) -> Result<CertSet, TlsError> {
    let provider = provider();
    let mut keys = Vec::with_capacity(pairs.len());
    for p in pairs {
        let chain = read_certs(&p.cert)?;
        let key = read_key(&p.key)?;
        let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::File {
            path: p.key.clone(),
            detail: format!("does not go with {}: {e}", p.cert.display()),
        })?;
        keys.push(Arc::new(ck));
    }
    Ok(CertSet { keys })
}

fn stamps(pairs: &[CertPair]) -> Vec<FileStamp> {
    pairs
        .iter()
        .flat_map(|p| [&p.cert, &p.key])
        .map(|path| match std::fs::metadata(path) {
            Ok(m) => FileStamp {
                modified: m.modified().ok(),
                len: m.len(),
                #[cfg(unix)]
                inode: std::os::unix::fs::MetadataExt::ino(&m),
            },
            Err(_) => FileStamp {
                modified: None,
                len: 0,
                #[cfg(unix)]
                inode: 0,
            },
        })
        .collect()
}

/// Checks every store for changed files each [`RELOAD_POLL`] until `shutdown`.
///
/// Polling rather than file notifications: Kubernetes swaps secrets through a symlink and
/// editors replace files, and a `stat` per file per second costs nothing.
pub async fn reload_loop(stores: Vec<Arc<CertStore>>, mut shutdown: Shutdown) {
    if stores.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let s = stores.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for store in &s {
                store.reload_if_changed();
            }
        })
        .await;
    }
}
