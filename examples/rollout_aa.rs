//! A/A for real: a running sluice with a canary at 10% of ~330 req/s, where canary and
//! stable are two upstreams that both fail the same share of requests at random. A healthy
//! canary must not be rolled back; this prints what the analysis said.
//!
//! ```text
//! cargo run --release --example rollout_aa [MINUTES] [ERROR_PER_MILLE] [METHOD]
//! ```
//!
//! Defaults: 5 minutes, 10 per mille (1%), `sequential` (or `z_test`); `max_error_rate:
//! 0.05`, `max_error_rate_increase: 0.01`, `confidence: 0.99`, `window: 30s`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice::rollout::simulation::Rng;

mod support;

/// Load: clients × one request per `PACE` each (~330 req/s with the upstreams' latency).
const CLIENTS: u64 = 8;
const PACE: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Counts {
    canary: AtomicU64,
    canary_failed: AtomicU64,
    stable: AtomicU64,
    stable_failed: AtomicU64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let per_mille: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let method = args.next().unwrap_or_else(|| "sequential".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(minutes, per_mille, &method));
}

async fn run(minutes: u64, per_mille: u64, method: &str) {
    let v1 = upstream("v1", per_mille, 1).await;
    let v2 = upstream("v2", per_mille, 2).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = format!(
        r#"version: 1
change: {{ id: AA, author: bench, summary: a/a }}
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
routes: [{{ name: app, to: {{ rollout: app }} }}]
rollouts:
  app:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id }}
    steps: [{{ weight: 10, hold: 24h }}, {{ weight: 100 }}]
    analysis:
      method: {method}
      interval: 1s
      window: 30s
      min_requests: 50
      max_error_rate: 0.05
      max_error_rate_increase: 0.01
"#
    );
    let inst = support::start_in(dir.path(), &text).await;
    let proxy = inst.listeners[0];
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(load(proxy, c, stop.clone(), counts.clone())))
        .collect();
    let weight = || support::weight(&inst);
    let started = Instant::now();
    let mut rolled_back = None;
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        if weight() == 0 {
            rolled_back = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let status = inst.rollouts.status_json();
    let secs = started.elapsed().as_secs_f64();
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "A/A, {method}, {:.1}% errors on both sides, {:.0} s, {:.0} req/s",
        per_mille as f64 / 10.0,
        secs,
        (n(&counts.canary) + n(&counts.stable)) as f64 / secs
    );
    println!(
        "canary {}/{} failed, stable {}/{} failed",
        n(&counts.canary_failed),
        n(&counts.canary),
        n(&counts.stable_failed),
        n(&counts.stable)
    );
    match rolled_back {
        Some(at) => println!("ROLLED BACK after {:.1} s", at.as_secs_f64()),
        None => println!("not rolled back"),
    }
    let app = &status[0];
    println!("phase {}, weight {}", app["phase"], app["weight"]);
    println!("last verdict: {}", app["last_verdict"]);
    support::stop(inst).await;
}

/// An upstream answering its name, failing `per_mille` of requests at random (seeded).
async fn upstream(name: &'static str, per_mille: u64, seed: u64) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let rng = Arc::new(std::sync::Mutex::new(Rng::new(seed)));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let rng = rng.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let draw = rng.lock().map(|mut r| r.next_u64() % 1000).unwrap_or(0);
                    let fail = draw < per_mille;
                    async move {
                        tokio::time::sleep(Duration::from_millis(1 + draw % 4)).await;
                        let mut r = Response::new(Full::new(Bytes::from(name)));
                        if fail {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn load(proxy: SocketAddr, client: u64, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let Ok(s) = tokio::net::TcpStream::connect(proxy).await else {
        return;
    };
    let _ = s.set_nodelay(true);
    let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await else {
        return;
    };
    tokio::spawn(conn);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = Request::builder()
            .uri("/")
            .header("host", "bench")
            .header("x-user-id", format!("u{client}-{n}"))
            .body(Empty::<Bytes>::new())
            .expect("a request");
        let Ok(resp) = tx.send_request(req).await else {
            return;
        };
        let failed = resp.status().is_server_error();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let (all, bad) = if body.starts_with(b"v2") {
            (&counts.canary, &counts.canary_failed)
        } else {
            (&counts.stable, &counts.stable_failed)
        };
        all.fetch_add(1, Ordering::Relaxed);
        if failed {
            bad.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(PACE).await;
    }
}
