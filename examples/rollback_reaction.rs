//! Rollback reaction time: from the first second a canary fails to the moment the data
//! plane's weight is 0, with `analysis.interval: 1s`.
//!
//! Each trial starts a sluice with a healthy canary at 10%, runs steady load until the
//! analysis window is full of healthy history (the hard case: the canary's error rate has
//! to climb out of it), then makes the canary fail and polls the weight atomic every
//! millisecond. The failure starts at a random point between two ticks, as in life.
//!
//! ```text
//! cargo run --release --example rollback_reaction [TRIALS] [METHOD]
//! ```
//!
//! METHOD is `sequential` (the default, evaluated every 50 ms) or `z_test`.
//!
//! Prints min / median / max per configuration (window length × failure rate), and how many
//! canary requests failed between the onset and the rollback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluice::cli::demo::spawn_upstream;

mod support;

/// Load: clients × one request per `PACE` each.
const CLIENTS: u64 = 8;
const PACE: Duration = Duration::from_millis(20);

/// Counts of canary answers after the onset.
#[derive(Default)]
struct Counts {
    canary_failed: AtomicU64,
    stable_failed: AtomicU64,
    requests: AtomicU64,
}

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let method = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "sequential".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("rollback reaction time, {method}, interval 1s, canary at 10%, {trials} trials each");
    println!(
        "{:<8} {:<8} {:>9} {:>9} {:>9} {:>16} {:>8}",
        "window", "failing", "min", "median", "max", "canary failures", "req/s"
    );
    for window in [10u64, 30] {
        for fail_per_mille in [1000u64, 300] {
            let mut times = Vec::new();
            let mut failures = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..trials {
                let (t, f, rps) = rt.block_on(trial(window, fail_per_mille, &method));
                times.push(t);
                failures.push(f);
                rates.push(rps);
            }
            times.sort();
            failures.sort();
            println!(
                "{:<8} {:<8} {:>8.2}s {:>8.2}s {:>8.2}s {:>16} {:>8.0}",
                format!("{window}s"),
                format!("{}%", fail_per_mille / 10),
                times[0].as_secs_f64(),
                times[times.len() / 2].as_secs_f64(),
                times[times.len() - 1].as_secs_f64(),
                format!("{}..{}", failures[0], failures[failures.len() - 1]),
                rates.iter().sum::<f64>() / rates.len() as f64,
            );
        }
    }
}

/// One trial: (reaction time, canary requests failed after the onset, requests/s).
async fn trial(window_secs: u64, fail_per_mille: u64, method: &str) -> (Duration, u64, f64) {
    let healthy = Arc::new(AtomicU64::new(0));
    let canary_fail = Arc::new(AtomicU64::new(0));
    let v1 = spawn_upstream("v1", healthy).await.expect("upstream v1");
    let v2 = spawn_upstream("v2", canary_fail.clone())
        .await
        .expect("upstream v2");
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = format!(
        r#"version: 1
change: {{ id: BENCH, author: bench, summary: reaction }}
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
    steps: [{{ weight: 10, hold: 1h }}, {{ weight: 100 }}]
    analysis:
      method: {method}
      interval: 1s
      window: {window_secs}s
      min_requests: 50
      max_error_rate: 0.05
      max_error_rate_increase: 0.01
"#
    );
    let inst = support::start_in(dir.path(), &text).await;
    let proxy = inst.listeners[0];
    let stop = Arc::new(AtomicBool::new(false));
    let onset = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(load(
            proxy,
            c,
            stop.clone(),
            onset.clone(),
            counts.clone(),
        )));
    }
    // Fill the window with healthy history, then fail at a random offset between ticks.
    let jitter = Duration::from_millis(rand_millis(1000));
    tokio::time::sleep(Duration::from_secs(window_secs + 1) + jitter).await;
    let weight = || support::weight(&inst);
    assert_eq!(weight(), 1000, "still at 10% before the failure");
    let warm = counts.requests.swap(0, Ordering::Relaxed);
    canary_fail.store(fail_per_mille, Ordering::Relaxed);
    onset.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    while weight() != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no rollback in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reaction = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    assert_eq!(counts.stable_failed.load(Ordering::Relaxed), 0);
    let rps = warm as f64 / (window_secs + 1) as f64;
    support::stop(inst).await;
    (reaction, counts.canary_failed.load(Ordering::Relaxed), rps)
}

fn rand_millis(below: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos % below
}

async fn load(
    proxy: SocketAddr,
    client: u64,
    stop: Arc<AtomicBool>,
    onset: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
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
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if failed && onset.load(Ordering::Relaxed) {
            if body.starts_with(b"v2") {
                counts.canary_failed.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.stable_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(PACE).await;
    }
}
