//! The floor of sluice's stack: the least a hyper 1 reverse proxy does, measured next to
//! sluice by `bench/compare.py` every time.
//!
//! One current-thread tokio runtime (one core), HTTP/1.1 (and HTTP/2 over TLS by ALPN or
//! h2c by prior knowledge, through hyper-util's auto builder) to the client, a per-backend
//! pool of `SendRequest` handles to the upstreams (a connection goes back when its
//! response body ends), and a 90/10 split by an FNV-1a hash of `x-user-id`. Nothing else:
//! no header rewriting, no timers, no metrics, no flags. What sluice costs above this line
//! is sluice's own work.
//!
//! ```text
//! cargo build --release --example hyper_floor
//! target/release/examples/hyper_floor --listen 127.0.0.1:9500 \
//!     --stable 127.0.0.1:9101 --canary 127.0.0.1:9102 [--tls CERT KEY]
//! ```

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client, SendRequest};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

thread_local! {
    /// Idle upstream connections: index 0 stable, 1 canary.
    static POOL: RefCell<[Vec<SendRequest<Incoming>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// An upstream response body that gives its connection back when it ends.
struct Returning {
    inner: Incoming,
    back: Option<(usize, SendRequest<Incoming>)>,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.give_back();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((i, tx)) = self.back.take() {
            POOL.with(|p| p.borrow_mut()[i].push(tx));
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

/// 90/10: FNV-1a of the key, bucket out of 100.
fn side(req: &Request<Incoming>) -> usize {
    let key = req
        .headers()
        .get("x-user-id")
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    usize::from(h % 100 < 10)
}

async fn proxy(
    backends: [SocketAddr; 2],
    mut req: Request<Incoming>,
) -> Result<Response<Returning>, Error> {
    let i = side(&req);
    if req.version() == http::Version::HTTP_2 {
        // HTTP/1.1 upstream: origin-form target and a Host header from :authority.
        if let Some(a) = req.uri().authority() {
            let host = http::HeaderValue::from_str(a.as_str())?;
            req.headers_mut().insert(http::header::HOST, host);
        }
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = pq.map(http::Uri::from).unwrap_or_default();
    }
    *req.version_mut() = http::Version::HTTP_11;
    if !req.headers().contains_key(http::header::HOST) {
        // HTTP/1.0 without Host (`openssl s_time`): HTTP/1.1 upstream needs one.
        let host = http::HeaderValue::from_str(&backends[i].to_string())?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    let mut tx = match POOL.with(|p| p.borrow_mut()[i].pop()) {
        Some(tx) => tx,
        None => {
            let s = TcpStream::connect(backends[i]).await?;
            s.set_nodelay(true)?;
            let (tx, conn) = client::handshake(TokioIo::new(s)).await?;
            tokio::spawn(conn);
            tx
        }
    };
    tx.ready().await?;
    let resp = tx.send_request(req).await?;
    Ok(resp.map(|inner| Returning {
        inner,
        back: Some((i, tx)),
    }))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let addr = |name: &str, default: &str| -> Result<SocketAddr, Error> {
        Ok(arg(&args, name).unwrap_or_else(|| default.into()).parse()?)
    };
    let listen = addr("--listen", "127.0.0.1:9500")?;
    let backends = [
        addr("--stable", "127.0.0.1:9101")?,
        addr("--canary", "127.0.0.1:9102")?,
    ];
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(i) => {
            let cert = args.get(i + 1).ok_or("--tls CERT KEY")?;
            let key = args.get(i + 2).ok_or("--tls CERT KEY")?;
            Some((
                addr("--tls-listen", "127.0.0.1:9510")?,
                tls_acceptor(cert, key)?,
            ))
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some((at, acceptor)) = tls {
            let l = TcpListener::bind(at).await?;
            tokio::spawn(accept(l, backends, Some(acceptor)));
        }
        // SIGTERM returns from `main` (an exit, not a kill): a profiling build
        // (`bench/pgo.sh`) writes its profile then.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = accept(TcpListener::bind(listen).await?, backends, None) => r,
            _ = term.recv() => Ok(()),
        }
    })
}

async fn accept(
    listener: TcpListener,
    backends: [SocketAddr; 2],
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(), Error> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| proxy(backends, req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
            };
        });
    }
}
