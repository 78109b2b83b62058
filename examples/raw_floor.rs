//! How cheap a reverse proxy on tokio alone can be: the bound under any HTTP/1 code path of
//! our own, measured by `bench/compare.py` as the `raw` line (plaintext only).
//!
//! Bench-only, not a product path. One current-thread tokio runtime, one task per client
//! connection, `httparse` on both sides and no `http` types: the request's bytes are written
//! to the upstream as they came (no header is added, removed or re-encoded), the response's
//! bytes back to the client as they came. Each client connection keeps its own upstream
//! connection per backend (HAProxy's `http-reuse never`; no pool, no channel, no second
//! task), and picks the backend by the floor's 90/10 FNV-1a split of `x-user-id`. Bodies
//! are framed by `Content-Length` only; `Transfer-Encoding`, a response without a length, or
//! a head over 16 KiB closes the connection. Everything sluice does on top of this (routing,
//! forwarding headers, framing checks, timeouts, metrics, flags) is left out on purpose: the
//! line answers "what would the cheapest possible codec of our own cost on this runtime".
//! With `--tls CERT KEY` it also terminates TLS (rustls, ALPN `http/1.1` only) on
//! `--tls-listen`, for the HTTPS/1.1 line.
//!
//! ```text
//! cargo build --release --example raw_floor
//! target/release/examples/raw_floor --listen 127.0.0.1:9540 \
//!     --stable 127.0.0.1:9101 --canary 127.0.0.1:9102 [--tls CERT KEY --tls-listen ADDR]
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Each connection's request and response buffers.
const BUF: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed head: its length, its body's length, and (requests) the backend.
struct Head {
    len: usize,
    body: usize,
    side: usize,
}

fn refuse(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn content_length(v: &[u8]) -> io::Result<usize> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| refuse("bad content-length"))
}

/// 90/10: FNV-1a of the key, bucket out of 100 (as `hyper_floor`).
fn side(key: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    usize::from(h % 100 < 10)
}

fn parse_request(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(refuse("bad request head")),
    };
    let (mut body, mut key) = (0, &b""[..]);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = content_length(h.value)?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse("transfer-encoding"));
        } else if h.name.eq_ignore_ascii_case("x-user-id") {
            key = h.value;
        }
    }
    Ok(Some(Head {
        len,
        body,
        side: side(key),
    }))
}

fn parse_response(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(refuse("bad response head")),
    };
    let mut body = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = Some(content_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse("transfer-encoding"));
        }
    }
    let bodiless = matches!(resp.code, Some(100..=199 | 204 | 304));
    let body = if bodiless {
        0
    } else {
        body.ok_or_else(|| refuse("response without content-length"))?
    };
    Ok(Some(Head { len, body, side: 0 }))
}

async fn serve<C>(mut client: C, backends: [SocketAddr; 2]) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut up: [Option<TcpStream>; 2] = [None, None];
    let mut req = vec![0u8; BUF];
    let mut resp = vec![0u8; BUF];
    let mut have = 0;
    loop {
        let head = loop {
            if have > 0
                && let Some(h) = parse_request(&req[..have])?
            {
                break h;
            }
            if have == req.len() {
                return Err(refuse("request head too large"));
            }
            let n = client.read(&mut req[have..]).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        };
        let total = head.len + head.body;
        if total > req.len() {
            return Err(refuse("request body too large"));
        }
        while have < total {
            let n = client.read(&mut req[have..]).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        }
        if up[head.side].is_none() {
            let s = TcpStream::connect(backends[head.side]).await?;
            s.set_nodelay(true)?;
            up[head.side] = Some(s);
        }
        let Some(u) = up[head.side].as_mut() else {
            return Err(refuse("no upstream"));
        };
        u.write_all(&req[..total]).await?;
        req.copy_within(total..have, 0);
        have -= total;

        let mut got = 0;
        let head = loop {
            let n = u.read(&mut resp[got..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
            if let Some(h) = parse_response(&resp[..got])? {
                break h;
            }
            if got == resp.len() {
                return Err(refuse("response head too large"));
            }
        };
        let mut left = head.len + head.body;
        if got > left {
            return Err(refuse("upstream sent more than one response"));
        }
        client.write_all(&resp[..got]).await?;
        left -= got;
        while left > 0 {
            let n = u.read(&mut resp[..left.min(BUF)]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            client.write_all(&resp[..n]).await?;
            left -= n;
        }
        // A TLS stream may hold the last record back until flushed (a TCP stream: no-op).
        client.flush().await?;
    }
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
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => serve(s, backends).await,
                    Err(_) => return,
                },
                None => serve(stream, backends).await,
            };
        });
    }
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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let addr = |name: &str, default: &str| -> Result<SocketAddr, Error> {
        let v = args
            .iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned());
        Ok(v.unwrap_or_else(|| default.into()).parse()?)
    };
    let listen = addr("--listen", "127.0.0.1:9540")?;
    let backends = [
        addr("--stable", "127.0.0.1:9101")?,
        addr("--canary", "127.0.0.1:9102")?,
    ];
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(i) => {
            let cert = args.get(i + 1).ok_or("--tls CERT KEY")?;
            let key = args.get(i + 2).ok_or("--tls CERT KEY")?;
            Some((
                addr("--tls-listen", "127.0.0.1:9550")?,
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
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = accept(TcpListener::bind(listen).await?, backends, None) => r,
            _ = term.recv() => Ok(()),
        }
    })
}
