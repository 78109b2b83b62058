//! TLS termination on listeners: certificates chosen by SNI, ALPN `h2` + `http/1.1`, and
//! certificate hot reload.
//!
//! Each TLS listener owns a [`CertStore`]: the loaded certificates behind an `ArcSwap`. The
//! rustls resolver reads it per handshake; the reloader (control plane, [`reload_loop`])
//! stats the PEM files every second and, when one changed, loads the whole set and stores
//! it. Open connections keep the keys they negotiated with, so a reload never drops one;
//! a set that fails to load is logged and the previous one keeps serving.
//!
//! The client CA file of an mTLS listener (`tls.client_auth.ca_file`) is watched the same
//! way ([`ClientCa`]): a change builds a new rustls config (the same certificate store,
//! a verifier over the new CAs) that later handshakes use; connections verified before it
//! stay open; a file that does not load is logged with its reason and the previous CAs
//! keep verifying.

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

/// A listener's client CA file, reloaded into its rustls config when it changes.
#[derive(Debug)]
pub struct ClientCa {
    auth: ClientAuth,
    certs: Arc<CertStore>,
    stamp: std::sync::Mutex<FileStamp>,
    /// The listener's config: handshakes start from what it holds.
    config: Arc<ArcSwap<ServerConfig>>,
}

/// What a reload check did.
#[derive(Debug)]
pub enum Reload {
    /// No file changed.
    Unchanged,
    /// The new files are in use.
    Reloaded,
    /// A changed file did not load; the previous set stays in use.
    Failed(TlsError),
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

// === impl ClientCa ===

impl ClientCa {
    /// Rebuilds the listener's config when the CA file changed since the last load.
    /// Blocking file IO: call off the data plane.
    pub fn reload_if_changed(&self) -> Reload {
        let now = stamp(&self.auth.ca_file);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return Reload::Unchanged;
        }
        // Remembered whatever the outcome: a broken file is reported once, and the next
        // write to it triggers another attempt.
        *last = now;
        match self.certs.server_config(Some(&self.auth)) {
            Ok(cfg) => {
                self.config.store(cfg);
                tracing::info!(ca_file = %self.auth.ca_file.display(), "Listener client CA reloaded.");
                Reload::Reloaded
            }
            Err(e) => {
                tracing::warn!(
                    setting = "tls.client_auth.ca_file",
                    error = %e,
                    "Client CA reload failed; the previous CAs keep verifying."
                );
                Reload::Failed(e)
            }
        }
    }
}

/// Loads a listener's certificates (and client CA) and builds its config.
pub fn listener_tls(tls: &ListenerTls) -> Result<super::ListenerTls, TlsError> {
    let certs = CertStore::load(tls)?;
    let stamp = tls.client_auth.as_ref().map(|a| stamp(&a.ca_file));
    let config = Arc::new(ArcSwap::new(certs.server_config(tls.client_auth.as_ref())?));
    let client_ca = tls.client_auth.clone().zip(stamp).map(|(auth, stamp)| {
        Arc::new(ClientCa {
            auth,
            certs: certs.clone(),
            stamp: std::sync::Mutex::new(stamp),
            config: config.clone(),
        })
    });
    Ok(super::ListenerTls {
        config,
        certs,
        client_ca,
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
        .map(|path| stamp(path))
        .collect()
}

fn stamp(path: &std::path::Path) -> FileStamp {
    match std::fs::metadata(path) {
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
    }
}

/// Checks every listener's certificate and client CA files for changes each
/// [`RELOAD_POLL`] until `shutdown`.
///
/// Polling rather than file notifications: Kubernetes swaps secrets through a symlink and
/// editors replace files, and a `stat` per file per second costs nothing.
pub async fn reload_loop(listeners: Vec<super::ListenerTls>, mut shutdown: Shutdown) {
    if listeners.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let l = listeners.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for t in &l {
                t.certs.reload_if_changed();
                if let Some(ca) = &t.client_ca {
                    ca.reload_if_changed();
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{ClientAuth, ClientAuthMode, ListenerTls as Settings};

    fn ca_pem(cn: &str) -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    /// Replaces `path` as an editor or a secret mount does (new file, renamed in place).
    fn replace(path: &std::path::Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// A log sink for `tracing` on this thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_ca_file_reloads_and_a_broken_one_keeps_the_previous_cas() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert, key_file, ca_file) = (
            dir.path().join("a.pem"),
            dir.path().join("a.key"),
            dir.path().join("clients.pem"),
        );
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&ca_file, ca_pem("first")).unwrap();
        let t = listener_tls(&Settings {
            certs: vec![CertPair {
                cert,
                key: key_file,
            }],
            client_auth: Some(ClientAuth {
                ca_file: ca_file.clone(),
                mode: ClientAuthMode::Required,
            }),
        })
        .unwrap();
        let ca = t.client_ca.clone().unwrap();
        let first = t.config.load_full();
        assert!(matches!(ca.reload_if_changed(), Reload::Unchanged));

        // A file that does not parse: refused with its reason, logged, the old CAs stay.
        replace(&ca_file, "not a certificate\n");
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let r = tracing::subscriber::with_default(subscriber, || ca.reload_if_changed());
        let Reload::Failed(e) = r else {
            panic!("a broken CA file was not refused: {r:?}");
        };
        let e = e.to_string();
        assert!(
            e.contains("tls.client_auth.ca_file") && e.contains("clients.pem"),
            "{e}"
        );
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("Client CA reload failed")
                && logged.contains("tls.client_auth.ca_file")
                && logged.contains("clients.pem")
                && logged.contains("no certificate in the file"),
            "{logged}"
        );
        assert!(Arc::ptr_eq(&first, &t.config.load_full()));
        // Reported once: the same broken file is not retried every second.
        assert!(matches!(ca.reload_if_changed(), Reload::Unchanged));

        // A valid file: a new config for the next handshakes.
        replace(&ca_file, &ca_pem("second"));
        assert!(matches!(ca.reload_if_changed(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&first, &t.config.load_full()));
    }
}
