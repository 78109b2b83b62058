//! Cluster mode (SPEC §12) measured on loopback: a real etcd and three real sluice processes.
//!
//! ```text
//! cargo build --release --bin sluice --example fleet_bench
//! target/release/examples/fleet_bench [push|canary|leader|cost|all] [TRIALS]
//! ```
//!
//! - `push`: a 1,000-route document pushed on one node → active on every node (p50/p99/max
//!   of the time until the last node serves it; measured by polling each node's status).
//! - `canary`: a canary at 10% whose upstream starts failing 30% of requests, ~300 req/s over
//!   the fleet → weight 0 on every node, from the first failing response the clients see.
//! - `leader`: kill -9 the leader mid-rollout → time until a survivor leads (runs the
//!   controller) and until the rollout's next step is written by it; `lease_ttl` is 2 s.
//! - `cost`: CPU per proxied request of one node (wrk, 32 connections) in cluster mode against
//!   the same node alone: cluster traffic is control plane and must not show.
//!
//! Needs `etcd` (Debian `etcd-server`) and, for `cost`, `wrk`. The sluice binary is the one
//! next to this example's directory (`target/release/sluice`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use sluice::change::keys::public_key_line;
use sluice::change::token::{Act, Claims, sign};

const ADMIN_TOKEN: &str = "fleet-bench-admin-token-0123456789";

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let trials: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let fail = Arc::new(AtomicU64::new(0));
    let (v1, v2) = rt.block_on(async {
        (
            sluice::cli::demo::spawn_upstream("v1", Arc::new(AtomicU64::new(0)))
                .await
                .expect("upstream"),
            sluice::cli::demo::spawn_upstream("v2", fail.clone())
                .await
                .expect("upstream"),
        )
    });
    let ups = Ups { v1, v2, fail };
    if what == "push" || what == "all" {
        push(&ups, if trials == 0 { 30 } else { trials });
    }
    if what == "canary" || what == "all" {
        canary(&ups, if trials == 0 { 8 } else { trials });
    }
    if what == "leader" || what == "all" {
        leader(&ups, if trials == 0 { 5 } else { trials });
    }
    if what == "cost" || what == "all" {
        cost(&ups, if trials == 0 { 3 } else { trials });
    }
}

struct Ups {
    v1: SocketAddr,
    v2: SocketAddr,
    fail: Arc<AtomicU64>,
}

// ---------------------------------------------------------------------------- scenarios

fn push(ups: &Ups, trials: usize) {
    let etcd = Etcd::start();
    let nodes = fleet(&etcd, "/bench/push", "2s", true);
    let mut last = Vec::new();
    let mut bytes = 0;
    for v in 1..=trials as u64 {
        let doc = big_doc(v, 1000, ups, "[{ weight: 10, hold: 1h }]", "");
        bytes = doc.len();
        let t0 = Instant::now();
        let r = nodes[v as usize % 3].push(&doc, &approvals(&doc, v));
        assert_eq!(r.0, 200, "{}", r.1);
        let mut done = [None; 3];
        while done.iter().any(Option::is_none) {
            for (i, n) in nodes.iter().enumerate() {
                if done[i].is_none() && n.version() == v {
                    done[i] = Some(t0.elapsed());
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "push {v} never converged"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        last.push(done.iter().flatten().max().copied().unwrap_or_default());
    }
    println!(
        "push -> every node active (3 nodes, 1,000 routes, {:.0} KiB; {trials} pushes): {}",
        bytes as f64 / 1024.0,
        summary(&mut last)
    );
}

fn canary(ups: &Ups, trials: usize) {
    let etcd = Etcd::start();
    let nodes = fleet(&etcd, "/bench/canary", "2s", false);
    let mut times = Vec::new();
    for trial in 0..trials as u64 {
        ups.fail.store(0, Ordering::Relaxed);
        // Windows are per second: let the last trial's failing second pass before the next
        // rollout starts, or its first verdict sees it.
        std::thread::sleep(Duration::from_secs(2));
        // A new version with a changed rollout restarts it at weight 10.
        let analysis = format!(
            "    analysis: {{ interval: 1s, window: 10s, min_requests: 20, max_error_rate: 0.0{} }}\n",
            5 + trial % 2
        );
        let doc = big_doc(trial + 1, 1, ups, "[{ weight: 10, hold: 1h }]", &analysis);
        let r = nodes[0].push(&doc, &approvals(&doc, trial + 1));
        assert_eq!(r.0, 200, "{}", r.1);
        for n in &nodes {
            wait(20, || n.weight() == Some(10.0));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let first_fail = Arc::new(AtomicU64::new(0));
        let load = load(&nodes, 100, stop.clone(), first_fail.clone());
        // Healthy history first: the failure has to climb out of it, as in life.
        std::thread::sleep(Duration::from_millis(6000 + rand::random::<u64>() % 1000));
        ups.fail.store(300, Ordering::Relaxed);
        let mut zero = [0u64; 3];
        let deadline = Instant::now() + Duration::from_secs(30);
        while zero.contains(&0) && Instant::now() < deadline {
            for (i, n) in nodes.iter().enumerate() {
                if zero[i] == 0 && n.weight() == Some(0.0) {
                    zero[i] = unix_ms();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        for h in load {
            let _ = h.join();
        }
        let onset = first_fail.load(Ordering::Relaxed);
        if zero.contains(&0) || onset == 0 {
            for n in &nodes {
                eprintln!(
                    "{}: {}\n{}",
                    n.id,
                    n.json("/api/v1/status")["rollouts"],
                    n.json("/api/v1/cluster")
                );
            }
            panic!("trial {trial}: no rollback (onset {onset}, zero at {zero:?})");
        }
        let took = zero.iter().max().unwrap().saturating_sub(onset);
        times.push(Duration::from_millis(took));
    }
    println!(
        "failing canary (30% errors, 10% weight, ~300 req/s) -> weight 0 on all 3 nodes ({trials} trials): {}",
        summary(&mut times)
    );
}

fn leader(ups: &Ups, trials: usize) {
    let etcd = Etcd::start();
    let mut nodes = fleet(&etcd, "/bench/leader", "2s", false);
    let steps: Vec<String> = (1..=50)
        .map(|i| format!("{{ weight: {}, hold: 1s }}", i * 2))
        .collect();
    let doc = big_doc(1, 1, ups, &format!("[{}]", steps.join(", ")), "");
    assert_eq!(nodes[0].push(&doc, &approvals(&doc, 1)).0, 200);
    let mut elected = Vec::new();
    let mut resumed = Vec::new();
    for _ in 0..trials {
        std::thread::sleep(Duration::from_millis(1500));
        let leader = nodes[0].json("/api/v1/cluster")["leader"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let li = nodes.iter().position(|n| n.id == leader).expect("a leader");
        let step_before = nodes[(li + 1) % 3].step();
        let t0 = Instant::now();
        nodes[li].kill();
        let survivor = &nodes[(li + 1) % 3];
        let other = &nodes[(li + 2) % 3];
        wait(30, || {
            survivor.json("/api/v1/cluster")["leading"] == true
                || other.json("/api/v1/cluster")["leading"] == true
        });
        elected.push(t0.elapsed());
        wait(30, || survivor.step() > step_before);
        resumed.push(t0.elapsed());
        nodes[li].restart();
    }
    println!(
        "leader killed (lease_ttl 2s): a survivor leads after {}",
        summary(&mut elected)
    );
    println!(
        "leader killed (lease_ttl 2s, steps of 1s holds): next step on the survivors after {}",
        summary(&mut resumed)
    );
}

fn cost(ups: &Ups, rounds: usize) {
    let etcd = Etcd::start();
    let analysis =
        "    analysis: { interval: 1s, window: 10s, min_requests: 20, max_error_rate: 0.5 }\n";
    let doc = big_doc(1, 1, ups, "[{ weight: 10, hold: 1h }]", analysis);
    // Alone: the document from disk, approvals off.
    let alone = Node::start("alone", None, Some(&doc));
    // In a fleet of three, on etcd; measured on n1.
    let nodes = fleet(&etcd, "/bench/cost", "2s", false);
    assert_eq!(nodes[0].push(&doc, &approvals(&doc, 1)).0, 200);
    for n in &nodes {
        wait(10, || n.version() == 1);
    }
    // What the fleet costs with no traffic at all: lease, watch, records (ms of CPU a second).
    let idle = |n: &Node| {
        let t0 = n.cpu_ticks();
        std::thread::sleep(Duration::from_secs(10));
        (n.cpu_ticks() - t0) as f64 * 10.0 / 10.0
    };
    println!(
        "idle CPU over 10 s: alone {:.1} ms/s, fleet node {:.1} ms/s",
        idle(&alone),
        idle(&nodes[0])
    );
    let mut a = Vec::new();
    let mut c = Vec::new();
    for _ in 0..rounds {
        a.push(wrk_cpu(&alone));
        c.push(wrk_cpu(&nodes[0]));
    }
    println!("rounds (µs/request): alone {a:.1?}, fleet {c:.1?}");
    let (ma, mc) = (median_f(&mut a), median_f(&mut c));
    println!(
        "CPU per proxied request (wrk -t1 -c32 -d5s, {rounds} rounds, medians): alone {ma:.1} µs, in a fleet of 3 on etcd {mc:.1} µs, ratio {:.3}",
        mc / ma
    );
}

// ---------------------------------------------------------------------------- helpers

/// Runs wrk against `n` and returns the node's CPU µs per request.
fn wrk_cpu(n: &Node) -> f64 {
    let before = n.cpu_ticks();
    let out = Command::new("wrk")
        .args(["-t1", "-c32", "-d5s", "-H", "x-user-id: bench"])
        .arg(format!("http://{}/", n.proxy))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("wrk prints requests");
    let ticks = n.cpu_ticks() - before;
    // Clock ticks are 1/100 s on Linux.
    ticks as f64 * 10_000.0 / requests
}

fn load(
    nodes: &[Node],
    per_node_rps: u64,
    stop: Arc<AtomicBool>,
    first_fail: Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (addr, stop, first_fail) = (n.proxy, stop.clone(), first_fail.clone());
            std::thread::spawn(move || {
                let every = Duration::from_micros(1_000_000 / per_node_rps);
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    k += 1;
                    let user = format!("u{i}-{k}");
                    if let Ok((500, _)) = http(addr, "GET", "/", &[("x-user-id", &user)], b"") {
                        let _ = first_fail.compare_exchange(
                            0,
                            unix_ms(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    if let Some(rest) = every.checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        })
        .collect()
}

fn summary(v: &mut [Duration]) -> String {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        v[0].as_secs_f64() * 1e3,
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wait(secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trust_yaml() -> String {
    let line = |s: u8| public_key_line(&key(s).verifying_key());
    format!(
        "trust:\n  environment: prod\n  principals:\n    alice: {{ keys: [\"{}\"], roles: [developer] }}\n    bob: {{ keys: [\"{}\"], roles: [release-manager] }}\n    carol: {{ keys: [\"{}\"], roles: [release-manager] }}\n  policy:\n    normal: {{ require: [{{ count: 2, roles: [release-manager] }}] }}\n",
        line(1),
        line(2),
        line(3)
    )
}

fn approvals(text: &str, version: u64) -> Vec<String> {
    let now = unix_ms() / 1000;
    [
        ("alice", 1, Act::Author),
        ("bob", 2, Act::Approve),
        ("carol", 3, Act::Approve),
    ]
    .into_iter()
    .map(|(who, seed, act)| {
        sign(
            &Claims::new(who, "prod", text.as_bytes(), version, act, now, 3600),
            &key(seed),
        )
    })
    .collect()
}

/// A document with `routes` path routes to v1 and a `web` rollout behind them.
fn big_doc(version: u64, routes: usize, ups: &Ups, steps: &str, analysis: &str) -> String {
    let mut s = format!(
        "version: {version}\nchange: {{ id: CHG-{version}, author: alice, class: normal, summary: \"bench {version}\" }}\nupstreams:\n  v1: {{ endpoints: [\"{}\"] }}\n  v2: {{ endpoints: [\"{}\"] }}\nroutes:\n",
        ups.v1, ups.v2
    );
    for i in 0..routes {
        // One route changes with every version, so each push is a real change.
        let to = if i == 0 && version.is_multiple_of(2) {
            "v2"
        } else {
            "v1"
        };
        s.push_str(&format!(
            "  - {{ name: r{i}, match: {{ path_prefix: /api/r{i} }}, to: {{ upstream: {to} }} }}\n"
        ));
    }
    s.push_str(&format!(
        "  - {{ name: web, to: {{ rollout: web }} }}\nrollouts:\n  web:\n    strategy: canary\n    stable: v1\n    canary: v2\n    sticky: {{ header: x-user-id }}\n    steps: {steps}\n{analysis}"
    ));
    s
}

fn fleet(etcd: &Etcd, prefix: &str, ttl: &str, _quiet: bool) -> Vec<Node> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(id, Some((etcd, prefix, ttl)), None))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = String::new();
    r.read_to_string(&mut rest)?;
    let body = rest.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "b"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("b={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian etcd-server) runs");
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse().expect("addr");
        wait(30, || {
            http(addr, "GET", "/health", &[], b"")
                .is_ok_and(|(s, b)| s == 200 && b.contains("true"))
        });
        Etcd {
            child,
            _dir: dir,
            url,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    id: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    fn start(id: &str, cluster: Option<(&Etcd, &str, &str)>, traffic: Option<&str>) -> Node {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (proxy, admin) = (free_port(), free_port());
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).expect("write");
        if let Some(t) = traffic {
            std::fs::write(dir.path().join("traffic.yaml"), t).expect("write");
        }
        let d = dir.path().display();
        let cluster = cluster.map_or(String::new(), |(e, prefix, ttl)| {
            format!(
                "cluster:\n  etcd: {{ endpoints: [\"{}\"], prefix: \"{prefix}\" }}\n  node_id: {id}\n  lease_ttl: {ttl}\n",
                e.url
            )
        });
        let trust = if traffic.is_some() {
            "trust: { require_approvals: false }\n".to_string()
        } else {
            trust_yaml()
        };
        let yaml = format!(
            "listeners: [{{ name: public, bind: \"127.0.0.1:{proxy}\" }}]\n\
             admin: {{ bind: \"127.0.0.1:{admin}\", token_file: \"{d}/admin.token\" }}\n\
             runtime: {{ workers: 1 }}\n\
             limits: {{ drain_timeout: 1s }}\n\
             paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
             {cluster}{trust}"
        );
        std::fs::write(dir.path().join("sluice.yaml"), yaml).expect("write");
        let mut n = Node {
            id: id.to_string(),
            dir,
            child: None,
            proxy: format!("127.0.0.1:{proxy}").parse().expect("addr"),
            admin: format!("127.0.0.1:{admin}").parse().expect("addr"),
        };
        n.restart();
        n
    }

    fn restart(&mut self) {
        let bin = sluice_bin();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join("sluice.yaml"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        self.child = Some(child);
        let admin = self.admin;
        wait(30, || {
            http(admin, "GET", "/healthz", &[], b"").is_ok_and(|(s, _)| s == 200)
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http(self.admin, "GET", path, &[("authorization", &auth)], b"")
            .ok()
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn push(&self, doc: &str, tokens: &[String]) -> (u16, String) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut h: Vec<(&str, &str)> = vec![("authorization", &auth)];
        for t in tokens {
            h.push(("sluice-approval", t));
        }
        http(self.admin, "PUT", "/api/v1/traffic", &h, doc.as_bytes()).expect("push")
    }

    fn version(&self) -> u64 {
        self.json("/api/v1/status")["active"]["version"]
            .as_u64()
            .unwrap_or(0)
    }

    fn step(&self) -> u64 {
        self.json("/api/v1/status")["rollouts"][0]["step"]
            .as_u64()
            .unwrap_or(0)
    }

    fn weight(&self) -> Option<f64> {
        let (_, text) = http(self.admin, "GET", "/metrics", &[], b"").ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix("sluice_rollout_weight{rollout=\"web\"} ")
                .and_then(|v| v.parse().ok())
        })
    }

    fn cpu_ticks(&self) -> u64 {
        let pid = self.child.as_ref().map_or(0, |c| c.id());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
        // utime and stime are fields 14 and 15; after the `)` they are the 12th and 13th.
        let f = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        f(11) + f(12)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples");
    dir.join("sluice")
}
