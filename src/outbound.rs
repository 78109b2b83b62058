//! The http(s) requests the control plane makes: notifications, rollout hooks and `web` /
//! `prometheus` metric providers. One connection per request (HTTP/1.1), answers read with
//! a bound.
//!
//! `https://` URLs are verified with rustls against the bundled web roots (Mozilla's, as
//! upstreams without `tls.ca_file`), or against the PEM bundle of the caller's `ca_file`
//! (read at each call, so a rotated CA needs no new document); the server's name is always
//! verified. Every failure — a refused connection, a handshake, an unknown issuer, a name
//! mismatch, an unreadable `ca_file` — comes back as a sentence naming the URL's host and
//! the reason, for the caller's status, audit and logs.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::uri::Authority;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection to `url`'s host (port 80, or 443 for https, when none), its authority and
/// request target; `ca_file` replaces the web roots for an https URL.
async fn connect<B>(
    url: &str,
    ca_file: Option<&str>,
) -> Result<(SendRequest<B>, Authority, String), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("{url}: not an http:// or https:// URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("no host in {url}"))?
        .clone();
    let addr = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None if tls => format!("{}:443", authority.host()),
        None => format!("{}:80", authority.host()),
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    // The roots first: a broken ca_file is named as such, not as a connection failure.
    let config = if tls {
        Some(client_config(ca_file)?)
    } else {
        None
    };
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let tx = match config {
        None => handshake(stream).await?,
        Some(config) => {
            // `host()` keeps an IPv6 literal's brackets; a server name has none.
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("{url}: `{host}` is not a TLS server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| {
                    let trusted = match ca_file {
                        Some(p) => format!("CAs of ca_file {p}"),
                        None => "the bundled web roots".to_string(),
                    };
                    format!("TLS handshake with {addr} failed: {e} (trusting {trusted})")
                })?;
            handshake(stream).await?
        }
    };
    Ok((tx, authority, target))
}

/// HTTP/1.1 over `io`; the connection is driven by a task of its own.
async fn handshake<B, S>(io: S) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(tx)
}

/// The client config trusting `ca_file`'s certificates, or the web roots (built once).
fn client_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    static WEB_ROOTS: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let Some(path) = ca_file else {
        return WEB_ROOTS
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                build(roots)
            })
            .clone();
    };
    let certs = crate::proxy::tls::read_certs(std::path::Path::new(path))
        .map_err(|e| format!("ca_file {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("ca_file {path}: unusable CA certificate: {e}"))?;
    }
    build(roots)
}

/// A client config over `roots`, no client certificate, HTTP/1.1 by ALPN.
fn build(roots: rustls::RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let mut c = ClientConfig::builder_with_provider(crate::proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// One JSON POST with extra `headers`; the answer's status (its body is read, at most
/// 64 KiB, and dropped).
pub(crate) async fn post(
    url: &str,
    ca_file: Option<&str>,
    body: &Bytes,
    headers: &[(&str, &str)],
    agent: &str,
) -> Result<http::StatusCode, String> {
    let (mut tx, authority, target) = connect(url, ca_file).await?;
    let mut req = Request::post(target)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, agent);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
    Ok(status)
}

/// GETs `url` as `agent`, reading at most `max_body` bytes; non-2xx is an error.
pub(crate) async fn get(
    url: &str,
    ca_file: Option<&str>,
    agent: &str,
    max_body: usize,
) -> Result<Bytes, String> {
    let (mut tx, authority, target) = connect(url, ca_file).await?;
    let req = Request::get(target)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, agent)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

    /// A CA's PEM, and an https server on loopback whose certificate it signed for `names`;
    /// the server answers every request `200 hello`.
    async fn server(names: &[&str]) -> (String, std::net::SocketAddr) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(crate::proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(s) = acceptor.accept(s).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"hello"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (ca_pem, addr)
    }

    #[tokio::test]
    async fn https_verifies_the_issuer_and_the_name_and_says_why_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, addr) = server(&["127.0.0.1"]).await;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let ca_file = ca_file.to_str().unwrap();
        let url = format!("https://{addr}/x");
        let body = get(&url, Some(ca_file), "test", 1024).await.unwrap();
        assert_eq!(&body[..], b"hello");
        let status = post(&url, Some(ca_file), &Bytes::new(), &[], "test").await;
        assert_eq!(status.unwrap(), http::StatusCode::OK);

        // The bundled web roots do not know the test CA.
        let e = get(&url, None, "test", 1024).await.unwrap_err();
        assert!(
            e.contains("TLS handshake") && e.contains("UnknownIssuer") && e.contains("web roots"),
            "{e}"
        );
        // A certificate for another name, from the trusted CA: refused by name.
        let (ca2, other) = server(&["sluice.test"]).await;
        let ca2_file = dir.path().join("ca2.pem");
        std::fs::write(&ca2_file, ca2).unwrap();
        let e = get(
            &format!("https://{other}/x"),
            ca2_file.to_str(),
            "test",
            1024,
        )
        .await
        .unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // An unreadable or empty ca_file is named, before any connection.
        let e = get(&url, Some("/nonexistent/ca.pem"), "test", 1024)
            .await
            .unwrap_err();
        assert!(e.starts_with("ca_file /nonexistent/ca.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = get(&url, empty.to_str(), "test", 1024).await.unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
