//! `sluice demo`: the mission in one command, with nothing else installed.
//!
//! Starts two in-process upstreams (v1 healthy; v2 failing about 20% of requests unless
//! `--healthy-canary`), a sluice in front of them with a canary rollout, and a load
//! generator; prints one line per second per variant.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{EXIT_OK, EXIT_REFUSED};
use crate::config::Settings;
use crate::instance::{Instance, StartOptions};

/// `sluice demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Make v2 healthy, so the rollout completes instead of rolling back.
    #[arg(long)]
    pub healthy_canary: bool,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

/// Starts a demo upstream on 127.0.0.1:0 that answers `name`, failing `fail_per_mille`/1000 requests.
pub async fn spawn_upstream(
    name: &'static str,
    fail_per_mille: u64,
) -> std::io::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    // A fixed pattern rather than randomness: exactly fail_per_mille in every 1000.
                    let fail = (n * 7919) % 1000 < fail_per_mille;
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from(format!("{name}\n"))));
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
    Ok(addr)
}

/// Runs the demo.
pub fn demo(a: DemoArgs) -> i32 {
    crate::telemetry::init_tracing(false);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice demo: {e}");
            return EXIT_REFUSED;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("sluice demo: {e}");
            EXIT_REFUSED
        }
    }
}

async fn run(a: DemoArgs) -> Result<(), String> {
    let v1 = spawn_upstream("v1", 0).await.map_err(|e| e.to_string())?;
    let v2 = spawn_upstream("v2", if a.healthy_canary { 0 } else { 200 })
        .await
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).map_err(|e| e.to_string())?;
    let traffic = dir.join("config/traffic.yaml");
    std::fs::write(
        &traffic,
        format!(
            r#"version: 1
change: {{ id: DEMO-1, author: demo, summary: "canary v2 at 10%" }}
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
routes:
  - name: app
    to: {{ rollout: app }}
rollouts:
  app:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id, cookie: sluice_uid, set_cookie: true }}
    steps:
      - {{ weight: 10, hold: 5s }}
      - {{ weight: 50, hold: 5s }}
      - {{ weight: 100 }}
"#
        ),
    )
    .map_err(|e| e.to_string())?;
    let settings = Settings::parse(&format!(
        r#"listeners: [{{ name: public, bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
runtime: {{ workers: 1 }}
paths: {{ traffic: "{}", approvals: "{}", state_dir: "{}" }}
trust: {{ require_approvals: false }}
"#,
        traffic.display(),
        dir.join("config/approvals").display(),
        dir.join("state").display()
    ))
    .map_err(|e| e.to_string())?;
    let inst =
        tokio::task::spawn_blocking(move || Instance::start(settings, StartOptions::default()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let proxy = inst.listeners[0];
    println!(
        "sluice demo: proxy on http://{proxy}, admin on http://{}",
        inst.admin
    );
    println!(
        "  v1 (stable) healthy on {v1}; v2 (canary) {} on {v2}",
        if a.healthy_canary {
            "healthy"
        } else {
            "failing ~20%"
        }
    );

    let stats = Arc::new(Stats::default());
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut clients = Vec::new();
    for c in 0..16u64 {
        let stats = stats.clone();
        clients.push(tokio::spawn(load(proxy, c, deadline, stats)));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut second = 0;
    while Instant::now() < deadline {
        tick.tick().await;
        second += 1;
        let s = stats.take();
        println!(
            "t={second:>3}s  stable {:>5} req {:>5.1}% err   canary {:>5} req {:>5.1}% err",
            s[0].0,
            pct(s[0].1, s[0].0),
            s[1].0,
            pct(s[1].1, s[1].0),
        );
    }
    for c in clients {
        let _ = c.await;
    }
    let state: PathBuf = dir.join("state");
    println!(
        "audit log: {}/audit.jsonl  (verify: sluice audit verify {}/audit.jsonl)",
        state.display(),
        state.display()
    );
    println!("metrics:   http://{}/metrics (while running)", inst.admin);
    tokio::task::spawn_blocking(move || inst.shutdown())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn pct(e: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        e as f64 * 100.0 / n as f64
    }
}

#[derive(Default)]
struct Stats {
    // [stable, canary] × [requests, errors]
    counts: [[AtomicU64; 2]; 2],
}

impl Stats {
    fn add(&self, canary: bool, error: bool) {
        let v = &self.counts[canary as usize];
        v[0].fetch_add(1, Ordering::Relaxed);
        if error {
            v[1].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn take(&self) -> [(u64, u64); 2] {
        let t = |i: usize| {
            (
                self.counts[i][0].swap(0, Ordering::Relaxed),
                self.counts[i][1].swap(0, Ordering::Relaxed),
            )
        };
        [t(0), t(1)]
    }
}

async fn load(proxy: SocketAddr, client: u64, deadline: Instant, stats: Arc<Stats>) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        let Ok(s) = tokio::net::TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            n += 1;
            let user = format!("user-{}", (client * 1_000_003 + n * 7) % 5000);
            let req = Request::builder()
                .uri("/")
                .header("host", "demo")
                .header("x-user-id", user)
                .body(Empty::<Bytes>::new());
            let Ok(req) = req else { break };
            let Ok(resp) = tx.send_request(req).await else {
                break;
            };
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let is_canary = body.starts_with(b"v2");
            stats.add(is_canary, status.is_server_error());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
