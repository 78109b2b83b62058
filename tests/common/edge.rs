//! Harness for the edge tests: certificates (rcgen), TLS clients, HTTP/2 clients,
//! configurable in-process upstreams (TLS, h2c, raw recording), and sluice with custom settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Reply, collect, headers_json, spawn_server};

/// A test certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A leaf certificate and key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate (extended key usage clientAuth) with subject `CN=<cn>,O=<org>`
    /// and one URI SAN.
    pub fn client_leaf(&self, cn: &str, org: &str, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        r
    }
}

/// Writes `text` to `dir/name` atomically; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client config trusting `roots`, offering `alpn`.
pub fn client_config(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// A TLS client config trusting `roots` that presents `leaf` as its client certificate.
pub fn client_config_with_cert(
    roots: rustls::RootCertStore,
    leaf: &Leaf,
) -> Arc<rustls::ClientConfig> {
    let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(c)
}

/// TLS to `addr` with SNI `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// An HTTP/2 client over any stream.
pub struct H2 {
    pub tx: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl H2 {
    pub async fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(s: S) -> H2 {
        let (tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .unwrap();
        let done = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { tx, done }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.tx.ready().await?;
        collect(self.tx.send_request(req).await?).await
    }
}

/// `GET uri` with `headers`.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// What a [`MiniUp`] does.
#[derive(Clone)]
pub struct MiniState {
    pub name: &'static str,
    pub hits: Arc<AtomicU64>,
    /// Status of every answer except `/healthz`.
    pub status: Arc<AtomicU16>,
    /// Status of `/healthz`.
    pub health: Arc<AtomicU16>,
    pub health_hits: Arc<AtomicU64>,
}

/// An upstream speaking HTTP/1.1 and HTTP/2 (plain: h2c by preface; TLS: by ALPN), answering
/// JSON `{name, version, headers, path}` and, on `Upgrade: echo`, switching to an echo of bytes.
pub struct MiniUp {
    pub addr: SocketAddr,
    pub state: MiniState,
}

/// Server-side TLS for a [`MiniUp`].
pub struct UpTls {
    pub cert: String,
    pub key: String,
    /// Require a client certificate from this CA.
    pub client_ca: Option<rustls::RootCertStore>,
}

impl MiniUp {
    pub fn start(name: &'static str, tls: Option<UpTls>) -> MiniUp {
        let state = MiniState {
            name,
            hits: Default::default(),
            status: Arc::new(AtomicU16::new(200)),
            health: Arc::new(AtomicU16::new(200)),
            health_hits: Default::default(),
        };
        let st = state.clone();
        let acceptor = tls.map(|t| {
            let b = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap();
            let b = match t.client_ca {
                Some(roots) => b.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider(),
                    )
                    .build()
                    .unwrap(),
                ),
                None => b.with_no_client_auth(),
            };
            let mut cfg = b
                .with_single_cert(
                    CertificateDer::pem_slice_iter(t.cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(t.key.as_bytes()).unwrap(),
                )
                .unwrap();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let addr = spawn_server(move |s| {
            let st = st.clone();
            let acceptor = acceptor.clone();
            async move {
                let svc = service_fn(move |req| mini_serve(st.clone(), req));
                let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        let Ok(s) = a.accept(s).await else { return };
                        let _ = auto
                            .serve_connection_with_upgrades(TokioIo::new(s), svc)
                            .await;
                    }
                    None => {
                        let _ = auto
                            .serve_connection_with_upgrades(TokioIo::new(s), svc)
                            .await;
                    }
                }
            }
        });
        MiniUp { addr, state }
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn mini_serve(
    st: MiniState,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    if req.uri().path() == "/healthz" {
        st.health_hits.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(full("health"));
        *r.status_mut() = http::StatusCode::from_u16(st.health.load(Ordering::Relaxed)).unwrap();
        return Ok(r);
    }
    st.hits.fetch_add(1, Ordering::Relaxed);
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(full(""));
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        return Ok(r);
    }
    if req.uri().path().ends_with("/grpc") {
        // gRPC-shaped: a body, then trailers.
        let te = req
            .headers()
            .get("te")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let frames = Frames(
            [
                hyper::body::Frame::data(Bytes::from(format!("te={te}"))),
                hyper::body::Frame::trailers({
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", "0".parse().unwrap());
                    t.insert("grpc-message", "ok".parse().unwrap());
                    t
                }),
            ]
            .into(),
        );
        let body = frames.boxed();
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        return Ok(r);
    }
    let headers = headers_json(req.headers());
    let body = serde_json::json!({
        "name": st.name, "version": format!("{:?}", req.version()),
        "headers": headers, "path": req.uri().path(), "method": req.method().as_str(),
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(st.status.load(Ordering::Relaxed)).unwrap();
    Ok(r)
}

/// Frames handed out in order.
pub struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);

impl Frames {
    /// A body of `frames` with no size hint (over HTTP/2: no content-length).
    pub fn new(frames: Vec<hyper::body::Frame<Bytes>>) -> Frames {
        Frames(frames.into())
    }
}

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A raw upstream that records every byte it receives and answers each request head with a
/// fixed 200.
pub struct RawUp {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<u8>>>,
}

impl RawUp {
    pub fn start() -> RawUp {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        let addr = spawn_server(move |mut s| {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let log = l2.clone();
            async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                let mut answered = 0;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    seen.extend_from_slice(&buf[..n]);
                    let heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    while answered < heads {
                        answered += 1;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
        });
        RawUp { addr, log }
    }

    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

/// Reads until the peer closes (or `limit` passes); returns what was read and whether it closed.
pub async fn read_to_close(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}
