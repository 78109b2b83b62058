//! Measures sluice as a flag service (issue 11's targets), against the `sluice` binary
//! started as a child process with one data-plane worker:
//!
//! - **SSE fan-out**: `--streams` OFREP event streams open on a `builtin: ofrep` route; the
//!   child's resident set (VmRSS) growth per stream; then `--changes` flag changes pushed
//!   through the admin API (the change gate), each timed from just before the push to the
//!   event's arrival on every stream (p50 / p99 / max over all deliveries);
//! - **OFREP**: single-flag evaluations per second (`--secs`, keep-alive connections);
//! - **gRPC**: `flagd.evaluation.v2.Service/ResolveBoolean` calls per second over HTTP/2
//!   (the gRPC listener runs on one thread);
//! - **in-process SDK**: with python3 and `openfeature-provider-flagd`, the official flagd
//!   provider in in-process mode (sync v1); each change timed from just before the push to
//!   the provider's configuration-changed event (wall clocks of one machine).
//!
//! ```text
//! cargo build --release
//! ulimit -n 20000
//! cargo run --release --example flag_service_bench -- --streams 1000 --changes 20 --secs 5
//! ```
//! `SLUICE_BIN` (or `--sluice PATH`) picks the binary; default: the release build next to
//! this example. The load generator runs in this process, on the same 2 cores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use sluice::flagsvc::grpc::pb::evaluation_v2 as v2;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod support;

use support::{Error, default_binary, free_port, rss_kib};

struct Args {
    streams: usize,
    changes: u64,
    secs: u64,
    sluice: PathBuf,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running child and how to reach it.
struct Target {
    child: KillOnDrop,
    /// Holds the config and state; removed when the bench ends.
    _dir: tempfile::TempDir,
    public: SocketAddr,
    admin: SocketAddr,
    grpc: SocketAddr,
    token: String,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        streams: 1000,
        changes: 20,
        secs: 5,
        sluice: std::env::var_os("SLUICE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_binary),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--streams" => a.streams = it.next().ok_or("--streams N")?.parse()?,
            "--changes" => a.changes = it.next().ok_or("--changes N")?.parse()?,
            "--secs" => a.secs = it.next().ok_or("--secs N")?.parse()?,
            "--sluice" => a.sluice = it.next().ok_or("--sluice PATH")?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// Version `v` of the document: `banner` serves "on" on odd versions.
fn doc(v: u64) -> String {
    let banner = if v % 2 == 1 { "on" } else { "off" };
    format!(
        r#"version: {v}
change: {{ id: CHG-{v}, author: bench }}
routes:
  - name: features
    match: {{ path_prefix: /features }}
    to: {{ builtin: ofrep }}
flags:
  banner:
    state: ENABLED
    variants: {{ "on": true, "off": false }}
    defaultVariant: "{banner}"
  targeted:
    state: ENABLED
    variants: {{ a: "alpha", b: "beta", c: "gamma" }}
    defaultVariant: a
    targeting:
      if:
        - {{ ends_with: [{{ var: email }}, "@example.com"] }}
        - b
        - {{ fractional: [[a, 50], [c, 50]] }}
"#
    )
}

fn start(a: &Args) -> Result<Target, Error> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::create_dir_all(d.join("approvals"))?;
    std::fs::write(d.join("traffic.yaml"), doc(1))?;
    let token = "bench-admin-token".to_string();
    std::fs::write(d.join("admin.token"), &token)?;
    let (public, admin, grpc) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(
        d.join("sluice.yaml"),
        format!(
            "listeners: [{{ name: public, bind: \"127.0.0.1:{public}\" }}]\n\
             admin: {{ bind: \"127.0.0.1:{admin}\", token_file: \"{d}/admin.token\" }}\n\
             runtime: {{ workers: 1 }}\n\
             limits: {{ max_connections: 50000 }}\n\
             ofrep: {{ max_streams: 50000 }}\n\
             flags: {{ grpc: {{ bind: \"127.0.0.1:{grpc}\" }} }}\n\
             paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
             trust: {{ require_approvals: false }}\n",
            d = d.display()
        ),
    )?;
    let child = Command::new(&a.sluice)
        .args(["run", "-c"])
        .arg(d.join("sluice.yaml"))
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", a.sluice.display()))?;
    let t = Target {
        child: KillOnDrop(child),
        _dir: dir,
        public: ([127, 0, 0, 1], public).into(),
        admin: ([127, 0, 0, 1], admin).into(),
        grpc: ([127, 0, 0, 1], grpc).into(),
        token,
    };
    Ok(t)
}

/// A keep-alive HTTP/1.1 connection.
async fn h1(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    Ok(tx)
}

async fn wait_ready(t: &Target) -> Result<(), Error> {
    for _ in 0..200 {
        if let Ok(mut c) = h1(t.admin).await {
            let req = Request::get("/readyz")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))?;
            if let Ok(r) = c.send_request(req).await
                && r.status() == 200
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("sluice did not become ready".into())
}

/// `PUT /api/v1/traffic` (the change gate); returns when it answered.
async fn push(t: &Target, v: u64) -> Result<(), Error> {
    let mut c = h1(t.admin).await?;
    let req = Request::put("/api/v1/traffic")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", t.token))
        .body(Full::new(Bytes::from(doc(v))))?;
    let r = c.send_request(req).await?;
    let status = r.status();
    let body = r.into_body().collect().await?.to_bytes();
    if status != 200 {
        return Err(format!("push {v}: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn sse(t: &Target, a: &Args, version: &mut u64) -> Result<(), Error> {
    let pid = t.child.0.id();
    let before = rss_kib(pid)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..a.streams {
        let (tx, opened) = (tx.clone(), opened_tx.clone());
        let addr = t.public;
        tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let req = "GET /features/ofrep/v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_err() {
                return;
            }
            let mut lines = BufReader::with_capacity(1024, s).lines();
            let mut announced = false;
            while let Ok(Some(l)) = lines.next_line().await {
                if !announced && l.starts_with(": sluice") {
                    announced = true;
                    let _ = opened.send(());
                }
                if let Some(id) = l.strip_prefix("id: ") {
                    let _ = tx.send((id.parse().unwrap_or(0), Instant::now()));
                }
            }
        });
    }
    for _ in 0..a.streams {
        tokio::time::timeout(Duration::from_secs(30), opened_rx.recv())
            .await?
            .ok_or("a stream failed")?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    let per_stream = (after.saturating_sub(before)) as f64 * 1024.0 / a.streams as f64;
    println!(
        "SSE: {} streams open: VmRSS {} KiB -> {} KiB, {:.1} KiB per stream",
        a.streams,
        before,
        after,
        per_stream / 1024.0
    );
    let mut lat = Vec::new();
    let mut pushes = Vec::new();
    for _ in 0..a.changes {
        *version += 1;
        let t0 = Instant::now();
        push(t, *version).await?;
        pushes.push(t0.elapsed());
        let mut got = 0;
        while got < a.streams {
            let (id, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await?
                .ok_or("streams ended")?;
            if id == *version {
                lat.push(at - t0);
                got += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lat.sort();
    pushes.sort();
    println!(
        "SSE: {} changes x {} streams: push -> event delivered p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the push itself, gate included: p50 {:.1} ms)",
        a.changes,
        a.streams,
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&pushes, 0.50)),
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn ofrep(t: &Target, a: &Args) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut c = h1(t.public).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!(
                "{{\"context\": {{\"targetingKey\": \"user-{i}\", \"email\": \"u{i}@example.org\"}}}}"
            ));
            while !stop.load(Ordering::Relaxed) {
                let req = Request::post("/features/ofrep/v1/evaluate/flags/targeted")
                    .header("host", "127.0.0.1")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let Ok(r) = c.send_request(req).await else {
                    return;
                };
                let ok = r.status() == 200;
                if r.into_body().collect().await.is_ok() && ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "OFREP: {n} single evaluations in {secs:.1} s over 32 connections: {:.0}/s (1 data-plane worker)",
        n as f64 / secs
    );
    Ok(())
}

/// A gRPC call's request body: the 5-byte prefix and the message.
fn grpc_frame(m: &impl prost::Message) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + m.encoded_len());
    b.put_u8(0);
    b.put_u32(m.encoded_len() as u32);
    m.encode(&mut b).expect("encodes into a sized buffer");
    b.freeze()
}

async fn grpc(t: &Target, a: &Args) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let body = grpc_frame(&v2::ResolveBooleanRequest {
        flag_key: "banner".into(),
        context: None,
    });
    // Check one answer first.
    let s = TcpStream::connect(t.grpc).await?;
    let (mut probe, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let r = probe
        .send_request(grpc_request(t.grpc, body.clone()))
        .await?;
    let bytes = r.into_body().collect().await?.to_bytes();
    let resp = v2::ResolveBooleanResponse::decode(bytes.slice(5..))?;
    if resp.reason.is_empty() || resp.value.is_none() {
        return Err(format!("unexpected answer {resp:?}").into());
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = TcpStream::connect(t.grpc).await?;
        s.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
        tokio::spawn(conn);
        for _ in 0..16 {
            let (stop, done, body, mut send) =
                (stop.clone(), done.clone(), body.clone(), send.clone());
            let addr = t.grpc;
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = send.send_request(grpc_request(addr, body.clone())).await else {
                        return;
                    };
                    let ok = r.status() == 200;
                    if let Ok(c) = r.into_body().collect().await
                        && ok
                        && c.trailers()
                            .and_then(|t| t.get("grpc-status"))
                            .map(|v| v.as_bytes())
                            == Some(b"0")
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "gRPC: {n} ResolveBoolean calls in {secs:.1} s (4 HTTP/2 connections x 16 in flight): {:.0}/s (gRPC on one thread)",
        n as f64 / secs
    );
    Ok(())
}

fn grpc_request(addr: SocketAddr, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(format!(
        "http://{addr}/flagd.evaluation.v2.Service/ResolveBoolean"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(body))
    .expect("request")
}

/// The official Python flagd provider, in-process mode: prints the wall-clock time of each
/// configuration change it sees.
const IN_PROCESS: &str = r#"
import sys, time, json
from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
api.set_provider_and_wait(FlagdProvider(host="127.0.0.1", port=int(sys.argv[1]), deadline_ms=5000,
    resolver_type=ResolverType.IN_PROCESS))
client = api.get_client()
def changed(d):
    print(json.dumps({"at": time.time(), "banner": client.get_boolean_value("banner", None)}), flush=True)
api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed)
print(json.dumps({"ready": True}), flush=True)
sys.stdin.read()
"#;

async fn in_process_sdk(t: &Target, a: &Args, version: &mut u64) -> Result<(), Error> {
    let ready = Command::new("python3")
        .args(["-c", "import openfeature.contrib.provider.flagd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        println!("in-process SDK: skipped (python3 with openfeature-provider-flagd not found)");
        return Ok(());
    }
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", IN_PROCESS, &t.grpc.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let _ready = out.next_line().await?;
    let mut lat = Vec::new();
    for _ in 0..a.changes.min(20) {
        *version += 1;
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        push(t, *version).await?;
        let l = tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await??
            .ok_or("provider ended")?;
        let j: serde_json::Value = serde_json::from_str(&l)?;
        let at = j["at"].as_f64().ok_or("no time")?;
        if j["banner"] != serde_json::json!(*version % 2 == 1) {
            return Err(format!("provider saw {j} after version {version}").into());
        }
        lat.push(Duration::from_secs_f64((at - t0).max(0.0)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lat.sort();
    println!(
        "in-process SDK (Python flagd provider, sync v1): push -> change event with the new value: p50 {:.1} ms, max {:.1} ms over {} changes",
        ms(percentile(&lat, 0.5)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        lat.len()
    );
    drop(child.stdin.take());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let a = args()?;
    let t = start(&a)?;
    wait_ready(&t).await?;
    let mut version = 1;
    ofrep(&t, &a).await?;
    grpc(&t, &a).await?;
    in_process_sdk(&t, &a, &mut version).await?;
    sse(&t, &a, &mut version).await?;
    Ok(())
}
