//! `sluice demo --cluster`: a fleet of three on a real etcd (SPEC §12), in one command.
//!
//! Starts etcd (the `etcd` binary on PATH, Debian `etcd-server`) on loopback with a temp
//! data dir, two in-process upstreams, and three sluice instances in cluster mode; pushes
//! one approved document to the first node and shows it activating on all three; then sends
//! traffic through all three nodes, makes the canary fail 30% of its requests (unless
//! `--healthy-canary`), and prints one line a second with each node's weight until the
//! leader's rollback, judged on the fleet's summed windows, reaches every node. Ends with the
//! fleet table and a check of the fleet audit chain.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::demo::{DemoArgs, Stats, load, spawn_upstream};
use crate::change::keys;
use crate::change::token::{self, Act, Claims};
use crate::cluster::{Conn, Keys};
use crate::config::Settings;
use crate::instance::{Instance, StartOptions};

/// Load generator clients per node (each about 50 requests a second).
const CLIENTS_PER_NODE: u64 = 2;
/// The prefix the demo's fleet lives under.
const PREFIX: &str = "/sluice/demo";
/// Seconds of healthy traffic before the canary starts failing.
const HEALTHY_SECS: u64 = 4;

/// An etcd child process, killed on drop; its data dir (64 MiB of preallocated WAL) goes
/// with it, the nodes' state stays for inspection.
struct Etcd(Child, std::path::PathBuf);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Runs the fleet demo.
pub async fn run(a: DemoArgs) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    // A fresh directory each run (kept for the user to inspect): a leftover from an earlier
    // run must not lend this one its state.
    let dir = super::demo::fresh_dir("sluice-demo-fleet-").map_err(e)?;
    let (etcd_url, _etcd) = start_etcd(&dir).await?;
    let fail = Arc::new(AtomicU64::new(0));
    let v1 = spawn_upstream("v1", Arc::new(AtomicU64::new(0)))
        .await
        .map_err(e)?;
    let v2 = spawn_upstream("v2", fail.clone()).await.map_err(e)?;
    let (trust, signers) = principals(&dir)?;

    let mut nodes = Vec::new();
    for id in ["gw-1", "gw-2", "gw-3"] {
        let d = dir.join(id);
        let settings = Settings::parse(&format!(
            r#"listeners: [{{ name: public, bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
runtime: {{ workers: 1 }}
limits: {{ drain_timeout: 1s, drain_delay: 0s }}
paths: {{ traffic: "{d}/traffic.yaml", approvals: "{d}/approvals", state_dir: "{d}/state" }}
cluster:
  etcd: {{ endpoints: ["{etcd_url}"], prefix: {PREFIX} }}
  node_id: {id}
  lease_ttl: 2s
{trust}"#,
            d = d.display()
        ))
        .map_err(|e| e.to_string())?;
        let inst =
            tokio::task::spawn_blocking(move || Instance::start(settings, StartOptions::default()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        nodes.push((id, inst));
    }
    println!("sluice demo --cluster: three gateways on one etcd act as one.");
    println!("  etcd {etcd_url}, prefix {PREFIX}, lease_ttl 2s");
    for (id, n) in &nodes {
        println!(
            "  {id}: proxy http://{}  admin http://{}",
            n.listeners[0], n.admin
        );
    }
    let leader = wait_leader(&nodes).await;
    println!("  leader: {leader} (etcd lease election)\n");

    // One push, on gw-1, approved by two release managers: every node activates it.
    let doc = traffic(v1, v2);
    let tokens: Vec<String> = signers
        .iter()
        .map(|(who, act, key)| {
            let now = crate::clock::unix_secs(std::time::SystemTime::now());
            token::sign(
                &Claims::new(who, "demo", doc.as_bytes(), 1, *act, now, 3600),
                key,
            )
        })
        .collect();
    let t0 = Instant::now();
    let (status, body) = push(&nodes[0].1, &doc, &tokens).await?;
    println!("PUT /api/v1/traffic on gw-1 → {status} {}", body.trim());
    let mut at = vec![None; nodes.len()];
    while at.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(15) {
        for (i, (_, n)) in nodes.iter().enumerate() {
            if at[i].is_none()
                && n.shared
                    .snapshot
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.version == 1)
            {
                at[i] = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let times: Vec<String> = nodes
        .iter()
        .zip(&at)
        .map(|((id, _), t)| match t {
            Some(t) => format!("{id} {:.0} ms", t.as_secs_f64() * 1e3),
            None => format!("{id} not yet"),
        })
        .collect();
    if at.iter().all(Option::is_some) {
        println!(
            "version 1 active on all 3 nodes (from the push: {})\n",
            times.join(", ")
        );
    } else {
        println!("version 1 NOT active everywhere: {}\n", times.join(", "));
    }

    // Traffic through every node; then the canary fails.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let mut clients = Vec::new();
    for (i, (_, n)) in nodes.iter().enumerate() {
        for c in 0..CLIENTS_PER_NODE {
            let client = i as u64 * CLIENTS_PER_NODE + c;
            clients.push(tokio::spawn(load(
                n.listeners[0],
                client,
                stop.clone(),
                stats.clone(),
            )));
        }
    }
    println!(
        "{:>4}  {:>6} {:>6} {:>6}  | {:>7} {:>6} | leader's verdict (fleet windows)",
        "t", "gw-1", "gw-2", "gw-3", "canary", "err"
    );
    let mut failing_since = None;
    let mut done_at = None;
    let mut rolled_back = [false; 3];
    for second in 1..=a.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second == HEALTHY_SECS && !a.healthy_canary {
            fail.store(300, Ordering::Relaxed);
            failing_since = Some(Instant::now());
            println!("      ↳ v2 starts failing 30% of its requests");
        }
        let seen = stats.take();
        let weights: Vec<String> = nodes
            .iter()
            .map(|(_, n)| {
                let ro = n.rollouts.status_json();
                format!("{}%", ro[0]["weight"].as_f64().unwrap_or(0.0))
            })
            .collect();
        let lead = nodes
            .iter()
            .find(|(_, n)| n.cluster.as_ref().is_some_and(|c| c.is_leader()))
            .map(|(_, n)| n.rollouts.status_json()[0].clone())
            .unwrap_or_default();
        let verdict = match lead["phase"].as_str() {
            Some("aborted") => "ROLLED BACK".to_string(),
            Some("completed") => "completed".to_string(),
            _ => lead["last_verdict"].as_str().unwrap_or("-").to_string(),
        };
        println!(
            "{:>3}s  {:>6} {:>6} {:>6}  | {:>7} {:>5.1}% | {verdict}",
            second,
            weights[0],
            weights[1],
            weights[2],
            seen[1].requests,
            seen[1].error_pct()
        );
        for (i, (id, n)) in nodes.iter().enumerate() {
            let phase = n.rollouts.status_json()[0]["phase"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !rolled_back[i] && phase == "aborted" {
                rolled_back[i] = true;
                let after = failing_since.map_or(String::new(), |t| {
                    format!(
                        " ({:.1} s after v2 started failing)",
                        t.elapsed().as_secs_f64()
                    )
                });
                println!("      ↳ {id}: rolled back, weight 0{after}");
            }
            if phase == "completed" && done_at.is_none() {
                done_at = Some(second);
            }
        }
        if rolled_back.iter().all(|r| *r) && done_at.is_none() {
            println!("      ↳ ROLLED BACK on every node: all users are on v1 again");
            done_at = Some(second);
        }
        if done_at.is_some_and(|d| second >= d + 2) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }

    // The fleet as etcd sees it, and its audit chain.
    let conn = Conn::new(&crate::config::cluster::Cluster {
        etcd: crate::config::cluster::Etcd {
            endpoints: vec![etcd_url.clone()],
            prefix: PREFIX.into(),
            tls: None,
        },
        node_id: Some("demo".into()),
        lease_ttl: crate::config::Dur::secs(2),
    })
    .map_err(|e| e.to_string())?;
    let keys = Keys::new(PREFIX);
    match crate::cluster::status::read(&conn, &keys).await {
        Ok(v) => print!(
            "\nsluice status --etcd {etcd_url} --prefix {PREFIX}\n{}",
            crate::cluster::status::table(&v)
        ),
        Err(e) => println!("\nfleet status: {e}"),
    }
    match crate::cluster::audit::verify(&conn, &keys, None).await {
        Ok((h, entries)) => {
            println!(
                "\nsluice audit verify --etcd {etcd_url} --prefix {PREFIX}\nok: fleet chain intact, {} lines, head {}",
                h.seq, h.hash
            );
            for e in entries {
                let l = &e;
                println!(
                    "  {:>3} {:<22} node {:<5} {}",
                    l["seq"],
                    l["event"].as_str().unwrap_or(""),
                    l["node"].as_str().unwrap_or(""),
                    summary(l)
                );
            }
        }
        Err(e) => println!("\nfleet audit chain: {e}"),
    }
    for (_, n) in nodes {
        tokio::task::spawn_blocking(move || n.shutdown())
            .await
            .map_err(|e| e.to_string())?;
    }
    println!(
        "\nEach node's state and local audit log: {}/gw-*/state",
        dir.display()
    );
    Ok(())
}

/// One line about a fleet chain entry.
fn summary(l: &serde_json::Value) -> String {
    match l["event"].as_str().unwrap_or("") {
        "change.activated" => format!(
            "version {} {}",
            l["change"]["version"],
            l["change"]["digest"].as_str().unwrap_or("")
        ),
        "rollout.step" | "rollout.aborted" | "rollout.completed" => format!(
            "{} weight {}%{}",
            l["rollout"].as_str().unwrap_or(""),
            l["weight"],
            l["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        "cluster.leader" => format!("term {}", l["term"]),
        _ => String::new(),
    }
}

/// Starts etcd on two free loopback ports and waits until it is healthy. A port taken by
/// someone else between the pick and etcd's bind makes etcd exit at once: then other ports.
async fn start_etcd(dir: &Path) -> Result<(String, Etcd), String> {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    };
    let log_path = dir.join("etcd.log");
    for attempt in 1..=5 {
        let (client, peer) = (port()?, port()?);
        if client == peer {
            continue;
        }
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new("etcd")
            .args(["--name", "demo"])
            .arg("--data-dir")
            .arg(dir.join("etcd"))
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
            .args(["--initial-cluster", &format!("demo={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "demo --cluster needs `etcd` on PATH (Debian: apt-get install etcd-server): {e}"
                )
            })?;
        let mut etcd = Etcd(child, dir.join("etcd"));
        let addr: SocketAddr = format!("127.0.0.1:{client}")
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        // Generous: etcd's first start fsyncs its WAL, and the machine may be busy.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = etcd.0.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("address already in use") && attempt < 5 {
                    break; // dropping `etcd` removes its data dir
                }
                return Err(format!("etcd exited with {status}: {}", log.trim()));
            }
            if let Ok((200, body)) = get(addr, "/health").await
                && body.contains("true")
            {
                return Ok((url, etcd));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not become healthy at {url} within 60 s (log: {})",
                    log_path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err("etcd could not bind a free port in 5 attempts".into())
}

/// Throwaway keys for alice (developer, the author), bob and carol (release managers): the
/// `trust` section naming them, and who signs what.
type Signers = Vec<(&'static str, Act, ed25519_dalek::SigningKey)>;

fn principals(dir: &Path) -> Result<(String, Signers), String> {
    let keys_dir = dir.join("keys");
    let mut trust = String::new();
    let mut signers = Vec::new();
    for (who, role, act) in [
        ("alice", "developer", Act::Author),
        ("bob", "release-manager", Act::Approve),
        ("carol", "release-manager", Act::Approve),
    ] {
        let k = keys::keygen(who, &keys_dir).map_err(|e| e.to_string())?;
        let key = keys::load_signing_key(&k.private_key).map_err(|e| e.to_string())?;
        trust.push_str(&format!(
            "    {who}: {{ keys: [\"{}\"], roles: [{role}] }}\n",
            k.public_line
        ));
        signers.push((who, act, key));
    }
    Ok((
        format!(
            "trust:\n  require_approvals: true\n  environment: demo\n  principals:\n{trust}  policy:\n    normal:\n      require: [{{ count: 2, roles: [release-manager] }}]\n"
        ),
        signers,
    ))
}

/// The demo's document: a canary of v2 at 10%, judged every second on the fleet's windows.
fn traffic(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: DEMO-1, author: alice, summary: "canary v2 at 10% across the fleet" }}
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
    sticky: {{ header: x-user-id }}
    steps:
      - {{ weight: 10, hold: 10s }}
      - {{ weight: 50, hold: 5s }}
      - {{ weight: 100 }}
    analysis: {{ interval: 1s, window: 10s, min_requests: 20, max_error_rate: 0.05 }}
"#
    )
}

async fn wait_leader(nodes: &[(&str, Instance)]) -> String {
    for _ in 0..200 {
        for (id, n) in nodes {
            if n.cluster.as_ref().is_some_and(|c| c.is_leader()) {
                return id.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    "(none yet)".into()
}

async fn push(inst: &Instance, doc: &str, tokens: &[String]) -> Result<(u16, String), String> {
    let mut b = Request::builder()
        .method("PUT")
        .uri("/api/v1/traffic")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", inst.admin_token));
    for t in tokens {
        b = b.header("sluice-approval", t);
    }
    let req = b
        .body(Full::new(Bytes::from(doc.to_string())))
        .map_err(|e| e.to_string())?;
    send(inst.admin, req).await
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let req = Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(addr, req).await
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<(u16, String), String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
