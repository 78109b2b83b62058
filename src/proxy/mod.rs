//! The data plane: listeners and workers, the per-request service, header hygiene,
//! splitting, and upstream connection pools.

pub mod access_log;
pub mod body;
pub mod client;
pub mod coalesce;
pub mod connect;
pub mod deadline;
pub mod detect;
pub mod error;
pub mod flags;
pub mod headers;
pub mod health;
pub mod mirror;
pub mod pool;
pub mod proxy_protocol;
pub mod record;
pub mod retry;
pub mod server;
pub mod service;
pub mod split;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod wake_gate;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use metrics::{Counter, Gauge};

use crate::config::settings::Limits;
use crate::shutdown::Drain;
use crate::snapshot::Published;

/// What every worker shares: the active snapshot and per-listener bookkeeping.
#[derive(Debug)]
pub struct Shared {
    /// The active snapshot (`None` until a document is active), as the gate publishes it.
    pub snapshot: Arc<Published>,
    /// Listeners, in `sluice.yaml` order.
    pub listeners: Vec<ListenerInfo>,
    /// Timeouts and limits.
    pub limits: Limits,
    /// Open client connections across listeners.
    pub connections: AtomicUsize,
    /// The JSON access log, when enabled.
    pub access_log: Option<access_log::AccessLog>,
    /// OFREP, its event streams and API keys (`builtin: ofrep` routes and the admin listener).
    pub flag_services: Arc<crate::flagsvc::FlagServices>,
    /// `sluice_client_errors_total{kind}`.
    pub client_errors: ClientErrors,
    /// Set on SIGTERM: readiness fails, connections are asked to leave.
    pub drain: Drain,
    /// W3C trace context and span export (`tracing`), when configured.
    pub tracer: Option<trace::Tracer>,
    /// Proxies whose `X-Forwarded-For` names the client (`network.trusted_proxies`).
    pub trusted_proxies: client::TrustedProxies,
}

/// `sluice_client_errors_total{kind}` handles: faults of the client, kept apart from the
/// upstream's errors, health and rollout analysis.
#[derive(Debug, Clone)]
pub struct ClientErrors {
    /// kind="aborted": the client went away before its body ended.
    pub aborted: Counter,
    /// kind="malformed": invalid body framing.
    pub malformed: Counter,
    /// kind="timeout": the upstream waited on the client's body past `request_timeout`.
    pub timeout: Counter,
}

// === impl ClientErrors ===

impl ClientErrors {
    /// Registers the handles in `registry`.
    pub fn new(registry: &crate::telemetry::Registry) -> Self {
        let c = |kind| registry.counter(crate::telemetry::CLIENT_ERRORS, &[("kind", kind)]);
        ClientErrors {
            aborted: c("aborted"),
            malformed: c("malformed"),
            timeout: c("timeout"),
        }
    }

    /// The counter of `fault`.
    pub fn of(&self, fault: body::ClientFault) -> &Counter {
        match fault {
            body::ClientFault::Aborted => &self.aborted,
            body::ClientFault::Malformed => &self.malformed,
            body::ClientFault::Timeout => &self.timeout,
        }
    }
}

/// A listener's name and gauges.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Name from `sluice.yaml`.
    pub name: String,
    /// `sluice_active_connections{listener}`.
    pub active: Gauge,
    /// TLS termination, when the listener has `tls`.
    pub tls: Option<ListenerTls>,
    /// Connections open with a PROXY protocol header (`proxy_protocol: true`).
    pub proxy_protocol: bool,
    /// `sluice_connections_refused_total{listener,reason}` by reason.
    pub refused: Refused,
}

/// `sluice_connections_refused_total{listener,reason}` handles of one listener: connections
/// closed before any request, by why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// reason="proxy_protocol": no valid PROXY header on a listener that requires one.
    pub proxy_protocol: Counter,
    /// reason="client_cert": the TLS handshake failed on the client's certificate.
    pub client_cert: Counter,
    /// reason="tls_handshake": any other TLS handshake failure or timeout.
    pub tls_handshake: Counter,
}

// === impl Refused ===

impl Refused {
    /// Registers the handles of `listener` in `registry`.
    pub fn new(registry: &crate::telemetry::Registry, listener: &str) -> Self {
        let c = |reason| {
            registry.counter(
                crate::telemetry::CONNECTIONS_REFUSED,
                &[("listener", listener), ("reason", reason)],
            )
        };
        Refused {
            proxy_protocol: c("proxy_protocol"),
            client_cert: c("client_cert"),
            tls_handshake: c("tls_handshake"),
        }
    }
}

/// A TLS listener's rustls config and the files it reloads.
#[derive(Clone)]
pub struct ListenerTls {
    /// The listener's rustls config; replaced when the client CA file changes.
    pub config: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    /// The certificates, reloaded when their files change.
    pub certs: Arc<tls::CertStore>,
    /// The client CA (`tls.client_auth`), reloaded when its file changes.
    pub client_ca: Option<Arc<tls::ClientCa>>,
}

// === impl ListenerTls ===

impl ListenerTls {
    /// An acceptor for the next handshake (the config as it is now).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Client certificates are verified (`tls.client_auth`).
    pub fn client_auth(&self) -> bool {
        self.client_ca.is_some()
    }
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}
