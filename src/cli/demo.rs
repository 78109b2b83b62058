//! `sluice demo`: the mission in one command, with nothing else installed.
//!
//! Starts two in-process upstreams (v1 healthy; v2 failing 20% of requests unless
//! `--healthy-canary`), a sluice in front of them with a canary rollout judged every second,
//! and a load generator; prints one line per second (step, weight, per-variant requests,
//! error rate and p99 as clients saw them, and the controller's verdict) until the rollout
//! rolls back (or completes), then the audit trail, where the log and metrics live, and the
//! rollout metrics.
//!
//! Approvals: the demo runs the real change gate with `trust.require_approvals: true`. It
//! makes throwaway Ed25519 keys for alice (developer, the author) and bob and carol
//! (release managers), signs an author token and two approvals for the document, and drops
//! them in the approvals folder, so the canary activates as a `normal` change approved by
//! two release managers — exactly as it would in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{EXIT_OK, EXIT_REFUSED};
use crate::change::audit::{EventKind, Record};
use crate::config::Settings;
use crate::instance::{Instance, StartOptions};

/// `sluice demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Make v2 healthy, so the rollout completes instead of rolling back.
    #[arg(long)]
    pub healthy_canary: bool,
    /// Stop after this many seconds at the latest.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// A fleet of three on a real etcd (needs `etcd` on PATH, Debian `etcd-server`): one
    /// push activating everywhere, one rollback reaching every node.
    #[arg(long)]
    pub cluster: bool,
}

/// Load generator clients; each sends a request about every [`PACE`].
const CLIENTS: u64 = 8;
/// Pause between one client's requests (about 400 requests a second in all).
const PACE: Duration = Duration::from_millis(20);
/// Seconds shown after the rollout finished, so the effect is visible.
const AFTERMATH: u64 = 3;
/// `analysis.min_requests` of the demo's rollout.
const MIN_REQUESTS: u64 = 50;

/// Starts a demo upstream on 127.0.0.1:0 answering `name` after a few milliseconds, failing
/// `fail_per_mille`/1000 of requests with a 500 (read per request, so callers can change it).
/// Failures follow a fixed pattern rather than chance: exactly that many in every 1000.
pub async fn spawn_upstream(
    name: &'static str,
    fail_per_mille: Arc<AtomicU64>,
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
            let (counter, fail_per_mille) = (counter.clone(), fail_per_mille.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let fail = (n * 7919) % 1000 < fail_per_mille.load(Ordering::Relaxed);
                    // 1–4 ms of "work", so latencies and p99 are not all zero.
                    let work = Duration::from_millis(1 + (n * 31) % 4);
                    async move {
                        tokio::time::sleep(work).await;
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
    Ok(addr)
}

/// Runs the demo.
pub fn demo(a: DemoArgs) -> i32 {
    // Logging is set up by `cli::main` (warnings only by default: the table tells the story).
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
    let run = async move {
        if a.cluster {
            super::demo_fleet::run(a).await
        } else {
            run(a).await
        }
    };
    match rt.block_on(run) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("sluice demo: {e}");
            EXIT_REFUSED
        }
    }
}

/// Makes keys for alice, bob and carol, signs alice's author token and bob's and carol's
/// approvals of `doc` into the approvals folder, and returns the `trust` section naming them.
fn sign_approvals(dir: &Path, doc: &[u8]) -> Result<String, String> {
    use crate::change::keys;
    use crate::change::token::{self, Act, Claims};
    let keys_dir = dir.join("keys");
    let now = crate::clock::unix_secs(std::time::SystemTime::now());
    let mut principals = String::new();
    for (who, role, act) in [
        ("alice", "developer", Act::Author),
        ("bob", "release-manager", Act::Approve),
        ("carol", "release-manager", Act::Approve),
    ] {
        let k = keys::keygen(who, &keys_dir).map_err(|e| e.to_string())?;
        let key = keys::load_signing_key(&k.private_key).map_err(|e| e.to_string())?;
        let jwt = token::sign(&Claims::new(who, "demo", doc, 1, act, now, 3600), &key);
        std::fs::write(dir.join(format!("config/approvals/{who}.jwt")), jwt)
            .map_err(|e| e.to_string())?;
        principals.push_str(&format!(
            "    {who}: {{ keys: [\"{}\"], roles: [{role}] }}\n",
            k.public_line
        ));
    }
    Ok(format!(
        "trust:\n  require_approvals: true\n  environment: demo\n  principals:\n{principals}  policy:\n    normal:\n      require: [{{ count: 2, roles: [release-manager] }}]\n"
    ))
}

/// The demo's traffic document: a canary of v2 in four steps, judged every second.
fn traffic(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: DEMO-1, author: alice, summary: "canary v2: 10% → 25% → 50% → 100%" }}
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
      - {{ weight: 25, hold: 5s }}
      - {{ weight: 50, hold: 5s }}
      - {{ weight: 100 }}
    analysis:
      interval: 1s
      window: 10s
      min_requests: {MIN_REQUESTS}
      max_error_rate: 0.05
      max_error_rate_increase: 0.02
      max_p99: 250ms
"#
    )
}

/// A new directory under the system temp dir, named by pid and time so that no earlier run
/// (a killed demo whose pid came round again) shares it.
pub(crate) fn fresh_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}{}-{nanos:09}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

async fn run(a: DemoArgs) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let v1 = spawn_upstream("v1", Arc::new(AtomicU64::new(0)))
        .await
        .map_err(e)?;
    let failing = if a.healthy_canary { 0 } else { 200 };
    let v2 = spawn_upstream("v2", Arc::new(AtomicU64::new(failing)))
        .await
        .map_err(e)?;
    // A fresh directory each run (kept for the user to inspect): a leftover from an earlier
    // run must not lend this one its state.
    let dir = fresh_dir("sluice-demo-").map_err(e)?;
    std::fs::create_dir_all(dir.join("config/approvals")).map_err(e)?;
    let traffic_path = dir.join("config/traffic.yaml");
    std::fs::write(&traffic_path, traffic(v1, v2)).map_err(e)?;
    let trust = sign_approvals(&dir, traffic(v1, v2).as_bytes())?;
    let settings = Settings::parse(&format!(
        r#"listeners: [{{ name: public, bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
runtime: {{ workers: 1 }}
limits: {{ drain_timeout: 2s }}
paths: {{ traffic: "{}", approvals: "{}", state_dir: "{}" }}
{trust}"#,
        traffic_path.display(),
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
    println!("sluice demo: a canary of v2 behind sluice, judged against v1 every second.");
    println!("  proxy  http://{proxy}    admin  http://{}", inst.admin);
    println!(
        "  v1 (stable) healthy; v2 (canary) {}",
        if a.healthy_canary {
            "healthy"
        } else {
            "failing 20% of requests"
        }
    );
    println!(
        "  steps 10% → 25% → 50% → 100% (hold 5s each); rollback when the canary's error rate \
         exceeds 5% or beats stable's by 2% (99% confidence), or p99 > 250ms"
    );
    println!(
        "  load: {CLIENTS} clients, about {} requests/s, sticky by x-user-id\n",
        CLIENTS * 1000 / PACE.as_millis() as u64
    );
    println!(
        "{:>4}  {:>4} {:>7}  | {:>6} {:>6} {:>8} | {:>6} {:>6} {:>8} | verdict",
        "t", "step", "weight", "stable", "err", "p99", "canary", "err", "p99"
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(load(proxy, c, stop.clone(), stats.clone())));
    }
    // Half a second after the runner's ticks, so each row shows that second's verdict.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(500),
        Duration::from_secs(1),
    );
    tick.tick().await;
    stats.take();
    let mut finished_at = None;
    let mut final_phase = String::new();
    for second in 1..=a.seconds {
        tick.tick().await;
        let seen = stats.take();
        let status = inst.rollouts.status_json();
        let ro = status.get(0).cloned().unwrap_or(Value::Null);
        println!("{}", line(second, &ro, &seen));
        let phase = ro["phase"].as_str().unwrap_or("");
        if finished_at.is_none() && matches!(phase, "aborted" | "completed") {
            finished_at = Some(second);
            final_phase = phase.to_string();
            match phase {
                "aborted" => println!(
                    "      ↳ rolled back: weight 0, every user is on v1 again\n        verdict {}",
                    ro["last_verdict"].as_str().unwrap_or("?")
                ),
                _ => println!("      ↳ completed: v2 serves everyone"),
            }
        }
        if finished_at.is_some_and(|f| second >= f + AFTERMATH) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    if final_phase.is_empty() {
        println!(
            "\nThe rollout is still going after {}s (--seconds); run longer to see it finish.",
            a.seconds
        );
    }

    let metrics = inst.registry.render();
    let state = dir.join("state");
    tokio::task::spawn_blocking(move || inst.shutdown())
        .await
        .map_err(|e| e.to_string())?;
    print_audit(&state.join("audit.jsonl"));
    println!("\nRollout metrics (GET /metrics on the admin listener):");
    for l in metrics.lines().filter(|l| {
        l.starts_with("sluice_rollout") || (l.starts_with("sluice_rollbacks") && !l.ends_with(" 0"))
    }) {
        println!("  {l}");
    }
    let sluice = std::env::args()
        .next()
        .unwrap_or_else(|| "sluice".to_string());
    println!(
        "\nAudit log: {}\n  verify the hash chain: {sluice} audit verify {}\nState, documents and rollout progress: {}\n",
        state.join("audit.jsonl").display(),
        state.join("audit.jsonl").display(),
        state.display()
    );
    Ok(())
}

/// One table row: the controller's view (step, weight, verdict) and the clients' view of
/// the last second.
fn line(second: u64, ro: &Value, seen: &[Second; 2]) -> String {
    let steps = ro["steps"].as_u64().unwrap_or(0);
    let step = ro["step"].as_u64().map_or(0, |s| (s + 1).min(steps));
    let verdict = match ro["phase"].as_str() {
        Some("aborted") => "ROLLED BACK".to_string(),
        Some("completed") => "completed".to_string(),
        _ => ro["verdicts"][0]
            .as_object()
            .map(|v| compact_verdict(&Value::Object(v.clone())))
            .unwrap_or_else(|| "(first verdict after 1s)".into()),
    };
    format!(
        "{:>3}s  {:>2}/{} {:>6}%  | {:>6} {:>5.1}% {:>6.1}ms | {:>6} {:>5.1}% {:>6.1}ms | {verdict}",
        second,
        step,
        steps,
        ro["weight"].as_f64().unwrap_or(0.0),
        seen[0].requests,
        seen[0].error_pct(),
        seen[0].p99_ms(),
        seen[1].requests,
        seen[1].error_pct(),
        seen[1].p99_ms(),
    )
}

/// `passed`, `inconclusive (31 < 50 canary requests)`, `FAILED error_rate: 19.6% > 5%`, with
/// the window's numbers.
fn compact_verdict(v: &Value) -> String {
    let n = v["canary_requests"].as_u64().unwrap_or(0);
    let e = v["canary_errors"].as_u64().unwrap_or(0);
    let rate = v["canary_error_rate"].as_f64().unwrap_or(0.0) * 100.0;
    let stable = v["stable_error_rate"]
        .as_f64()
        .map_or_else(|| "-".to_string(), |p| format!("{:.1}%", p * 100.0));
    let numbers = format!("canary {e}/{n} = {rate:.1}% vs stable {stable} (last 10s)");
    match v["outcome"].as_str() {
        Some("failed") => format!("FAILED {}: {numbers}", v["rule"].as_str().unwrap_or("?")),
        Some("inconclusive") => {
            format!("inconclusive: {n} of {MIN_REQUESTS} canary requests needed")
        }
        Some(o) => format!("{o}: {numbers}"),
        None => String::new(),
    }
}

fn print_audit(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    println!("\nAudit trail (rollout events):");
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let record = Record::new(v);
        let Some(event) = record
            .kind
            .filter(|k| k.is_rollout() || *k == EventKind::ChangeActivated)
        else {
            continue;
        };
        let v = &record.line;
        let mut s = format!("  #{} {} {event}", v["seq"], v["ts"].as_str().unwrap_or(""));
        if let Some(w) = v["weight"].as_f64() {
            s.push_str(&format!(" weight {w}%"));
        }
        if let Some(r) = v["reason"].as_str() {
            s.push_str(&format!(" reason {r}"));
        }
        if let Some(sum) = v["verdict"]["summary"].as_str() {
            s.push_str(&format!(" — {sum}"));
        }
        if let Some(c) = v["change"]["class"].as_str() {
            s.push_str(&format!(" version {} class {c}", v["change"]["version"]));
            if let Some(author) = v["change"]["author"].as_str() {
                s.push_str(&format!(", author {author}"));
            }
            let approvers: Vec<String> = v["change"]["approvers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{} ({})",
                        a["principal"].as_str().unwrap_or("?"),
                        a["role"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if !approvers.is_empty() {
                s.push_str(&format!(", approved by {}", approvers.join(", ")));
            }
        }
        println!("{s}");
    }
}

/// What clients saw in one second for one variant.
#[derive(Debug, Default, Clone)]
pub(super) struct Second {
    pub(super) requests: u64,
    pub(super) errors: u64,
    latencies_us: Vec<u64>,
}

impl Second {
    pub(super) fn error_pct(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    fn p99_ms(&self) -> f64 {
        let mut l = self.latencies_us.clone();
        if l.is_empty() {
            return 0.0;
        }
        l.sort_unstable();
        let i = ((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1;
        l[i] as f64 / 1000.0
    }
}

/// Per-variant counts of the current second ([stable, canary]); the demo's load generator
/// is not a hot path, so a mutex is fine here.
#[derive(Default)]
pub(super) struct Stats {
    seconds: Mutex<[Second; 2]>,
}

impl Stats {
    fn add(&self, canary: bool, error: bool, latency: Duration) {
        let mut s = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        let v = &mut s[canary as usize];
        v.requests += 1;
        v.errors += error as u64;
        v.latencies_us.push(latency.as_micros() as u64);
    }

    pub(super) fn take(&self) -> [Second; 2] {
        std::mem::take(&mut *self.seconds.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub(super) async fn load(proxy: SocketAddr, client: u64, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = tokio::net::TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let user = format!("user-{}", (client * 1_000_003 + n * 7919) % 5000);
            let req = Request::builder()
                .uri("/")
                .header("host", "demo")
                .header("x-user-id", user)
                .body(Empty::<Bytes>::new());
            let Ok(req) = req else { break };
            let t0 = Instant::now();
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
            stats.add(
                body.starts_with(b"v2"),
                status.is_server_error(),
                t0.elapsed(),
            );
            tokio::time::sleep(PACE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_document_validates() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let doc = traffic(a, a);
        let parsed = crate::config::traffic::TrafficDoc::parse(
            &doc,
            &crate::config::traffic::CheckContext { listeners: None },
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }

    #[test]
    fn p99_of_a_second() {
        let s = Second {
            requests: 100,
            errors: 5,
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
        };
        assert_eq!(s.p99_ms(), 99.0);
        assert_eq!(s.error_pct(), 5.0);
        assert_eq!(Second::default().p99_ms(), 0.0);
    }
}
