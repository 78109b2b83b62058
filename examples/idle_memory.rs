//! Measures the memory an idle client connection costs sluice.
//!
//! Starts the `sluice` binary (a child process) in front of an in-process upstream, opens
//! `--conns` keep-alive connections that each complete one request and then stay idle, and
//! reports the growth of the child's resident set (VmRSS) divided by the connection count.
//! `--tls` does the same over TLS (ALPN http/1.1).
//!
//! ```text
//! cargo build --release
//! ulimit -n 20000      # 10,000 connections on each side
//! cargo run --release --example idle_memory -- --conns 10000
//! cargo run --release --example idle_memory -- --conns 10000 --tls
//! ```
//! `SLUICE_BIN` (or `--sluice PATH`) picks the binary; default: the release build next to
//! this example.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod support;

use support::{Error, default_binary, free_port, rss_kib};

struct Args {
    conns: usize,
    tls: bool,
    sluice: PathBuf,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        conns: 10_000,
        tls: false,
        sluice: std::env::var_os("SLUICE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_binary),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--conns" => a.conns = it.next().ok_or("--conns N")?.parse()?,
            "--tls" => a.tls = true,
            "--sluice" => a.sluice = it.next().ok_or("--sluice PATH")?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// An upstream answering `ok` to everything, on its own thread.
fn upstream() -> Result<SocketAddr, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                return;
            };
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

/// One request on `s`, read to the end of its body; the connection stays open.
async fn one_request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<(), Error> {
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("unexpected answer: {head}").into());
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let up = upstream()?;
    let (port, admin) = (free_port()?, free_port()?);
    let mut tls_yaml = String::new();
    let mut client_tls = None;
    if a.tls {
        let ck = rcgen::generate_simple_self_signed(vec!["idle.test".to_string()])?;
        std::fs::write(dir.path().join("c.pem"), ck.cert.pem())?;
        std::fs::write(dir.path().join("c.key"), ck.signing_key.serialize_pem())?;
        tls_yaml = format!(
            ", tls: {{ certs: [{{ cert: \"{d}/c.pem\", key: \"{d}/c.key\" }}] }}",
            d = dir.path().display()
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone())?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        client_tls = Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)));
    }
    std::fs::write(
        dir.path().join("traffic.yaml"),
        format!(
            "version: 1\nchange: {{ id: M1, author: bench }}\nupstreams:\n  up: {{ endpoints: [\"{up}\"] }}\nroutes:\n  - {{ name: all, to: {{ upstream: up }} }}\n"
        ),
    )?;
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: [{{ name: public, bind: \"127.0.0.1:{port}\"{tls_yaml} }}]\n\
             admin: {{ bind: \"127.0.0.1:{admin}\" }}\n\
             runtime: {{ workers: 2 }}\n\
             # Keep-alive idleness is bounded by header_read_timeout: long enough to measure.\n\
             limits: {{ header_read_timeout: 600s, max_connections: {max} }}\n\
             paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
             trust: {{ require_approvals: false }}\n",
            d = dir.path().display(),
            max = a.conns + 100,
        ),
    )?;
    let child = KillOnDrop(
        Command::new(&a.sluice)
            .arg("run")
            .arg("-c")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", a.sluice.display()))?,
    );
    let pid = child.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;

    // Warm up: the document activates, workers run, pools and allocator arenas exist.
    let connect = move |tls: Option<tokio_rustls::TlsConnector>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        match tls {
            None => Ok::<_, Error>(Conn::Plain(tcp)),
            Some(t) => Ok(Conn::Tls(Box::new(
                t.connect(rustls::pki_types::ServerName::try_from("idle.test")?, tcp)
                    .await?,
            ))),
        }
    };
    let mut last: Result<(), Error> = Err("not tried".into());
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = match connect(client_tls.clone()).await {
            Ok(mut c) => c.request().await,
            Err(e) => Err(e),
        };
        if last.is_ok() {
            break;
        }
    }
    if let Err(e) = last {
        return Err(format!("sluice never answered: {e}").into());
    }
    let mut warm = Vec::new();
    for _ in 0..200 {
        let mut c = connect(client_tls.clone()).await?;
        c.request().await?;
        warm.push(c);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;

    let mut conns = Vec::with_capacity(a.conns);
    let mut batch = tokio::task::JoinSet::new();
    let mut opened = 0;
    while opened < a.conns {
        let n = (a.conns - opened).min(250);
        for _ in 0..n {
            let tls = client_tls.clone();
            batch.spawn(async move {
                let mut c = connect(tls).await?;
                c.request().await?;
                Ok::<_, Error>(c)
            });
        }
        while let Some(r) = batch.join_next().await {
            conns.push(r??);
        }
        opened += n;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before) as f64) * 1024.0 / a.conns as f64;
    println!(
        "{} idle {} keep-alive connections: RSS {} KiB -> {} KiB, delta {} KiB, {:.0} bytes ({:.2} KiB) per connection",
        a.conns,
        if a.tls {
            "TLS HTTP/1.1"
        } else {
            "plaintext HTTP/1.1"
        },
        before,
        after,
        after.saturating_sub(before),
        per,
        per / 1024.0
    );
    drop(conns);
    Ok(())
}

enum Conn {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Conn {
    async fn request(&mut self) -> Result<(), Error> {
        match self {
            Conn::Plain(s) => one_request(s).await,
            Conn::Tls(s) => one_request(s.as_mut()).await,
        }
    }
}
