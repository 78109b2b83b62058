//! Opening upstream connections: TCP, then TLS when the upstream has `tls`, then the HTTP
//! handshake — HTTP/1.1, HTTP/2 prior knowledge (`h2c`), or whatever ALPN chose (`auto`).
//!
//! A [`Connector`] is built per upstream when a snapshot is built (off the hot path: it
//! reads the CA and client certificate files). Its [`Connector::key`] hashes what it
//! connects with, so the pools of a reloaded but unchanged upstream keep their connections
//! and a changed one never reuses a connection made under the old settings.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio_rustls::TlsConnector;

use super::body::UpBody;
use super::coalesce::Coalesce;
use super::tls;
use crate::config::traffic::{Protocol, Upstream as UpstreamSpec};
use crate::snapshot::Endpoint;

/// How to reach the endpoints of one upstream.
pub struct Connector {
    /// Identifies the settings (pool key part).
    pub key: u64,
    protocol: Protocol,
    tls: Option<TlsSide>,
    connect_timeout: Duration,
}

struct TlsSide {
    /// ALPN by `protocol`.
    main: TlsConnector,
    /// ALPN http/1.1 only: upgrades (WebSocket) need HTTP/1.1.
    h1: TlsConnector,
    /// SNI and verified name; absent: the endpoint's host.
    server_name: Option<ServerName<'static>>,
}

/// A connection ready to send requests on.
pub enum Conn {
    /// HTTP/1.1: one request at a time; the handle closes the connection at once.
    H1(http1::SendRequest<UpBody>, AbortHandle),
    /// HTTP/2: shared by concurrent requests.
    H2(http2::SendRequest<UpBody>),
}

/// Why a connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// TCP failed or timed out, or the HTTP handshake failed.
    Connect,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
}

// === impl Connector ===

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("key", &self.key)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Builds the connector of an upstream; reads its TLS files (blocking).
    pub fn build(u: &UpstreamSpec) -> Result<Connector, String> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (u.protocol as u8).hash(&mut h);
        u.connect_timeout.0.hash(&mut h);
        let tls = match &u.tls {
            None => None,
            Some(t) => {
                let read = |p: &str| -> Result<Vec<u8>, String> {
                    std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"))
                };
                let mut roots = rustls::RootCertStore::empty();
                match &t.ca_file {
                    Some(ca) => {
                        read(ca)?.hash(&mut h);
                        for c in tls::read_certs(Path::new(ca)).map_err(|e| e.to_string())? {
                            roots
                                .add(c)
                                .map_err(|e| format!("{ca}: unusable CA certificate: {e}"))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let builder = ClientConfig::builder_with_provider(tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots);
                let base = match (&t.client_cert, &t.client_key) {
                    (Some(c), Some(k)) => {
                        read(c)?.hash(&mut h);
                        read(k)?.hash(&mut h);
                        let chain = tls::read_certs(Path::new(c)).map_err(|e| e.to_string())?;
                        let key = tls::read_key(Path::new(k)).map_err(|e| e.to_string())?;
                        builder
                            .with_client_auth_cert(chain, key)
                            .map_err(|e| format!("client certificate {c}: {e}"))?
                    }
                    _ => builder.with_no_client_auth(),
                };
                let server_name = match &t.server_name {
                    Some(n) => Some(
                        ServerName::try_from(n.clone())
                            .map_err(|e| format!("tls.server_name `{n}`: {e}"))?,
                    ),
                    None => None,
                };
                t.server_name.hash(&mut h);
                let with_alpn = |alpn: &[&[u8]]| {
                    let mut c = base.clone();
                    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                    TlsConnector::from(Arc::new(c))
                };
                let main = match u.protocol {
                    Protocol::Http1 => with_alpn(&[b"http/1.1"]),
                    Protocol::H2c => with_alpn(&[b"h2"]),
                    Protocol::Auto => with_alpn(&[b"h2", b"http/1.1"]),
                };
                Some(TlsSide {
                    main,
                    h1: with_alpn(&[b"http/1.1"]),
                    server_name,
                })
            }
        };
        Ok(Connector {
            key: h.finish(),
            protocol: u.protocol,
            tls,
            connect_timeout: u.connect_timeout.0,
        })
    }

    /// Whether the connections are TLS (the request's scheme on HTTP/2).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection to `ep`. `upgrade`: HTTP/1.1 whatever the protocol, with upgrades
    /// enabled, for a request that may switch protocols.
    pub async fn connect(&self, ep: &Endpoint, upgrade: bool) -> Result<Conn, ConnectError> {
        let tcp =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(ep.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) | Err(_) => return Err(ConnectError::Connect),
            };
        let _ = tcp.set_nodelay(true);
        let tcp = Coalesce::new(tcp);
        let Some(t) = &self.tls else {
            let h2 = self.protocol == Protocol::H2c && !upgrade;
            return handshake(tcp, h2, upgrade).await;
        };
        let name = match &t.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(ep.host.to_string()).map_err(|_| ConnectError::Tls)?,
        };
        let connector = if upgrade { &t.h1 } else { &t.main };
        let tls =
            match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(addr = %ep.addr, error = %e, "Upstream TLS handshake failed.");
                    return Err(ConnectError::Tls);
                }
                Err(_) => return Err(ConnectError::Connect),
            };
        let h2 = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => true,
            Some(_) => false,
            // No ALPN answer: what the settings say.
            None => self.protocol == Protocol::H2c,
        };
        handshake(Coalesce::new(tls), h2 && !upgrade, upgrade).await
    }
}

async fn handshake<IO>(io: IO, h2: bool, upgrade: bool) -> Result<Conn, ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|_| ConnectError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Upstream HTTP/2 connection ended with an error.");
            }
        });
        return Ok(Conn::H2(tx));
    }
    let (tx, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|_| ConnectError::Connect)?;
    let task = if upgrade {
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "Upstream connection ended with an error.");
            }
        })
    } else {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Upstream connection ended with an error.");
            }
        })
    };
    Ok(Conn::H1(tx, task.abort_handle()))
}
