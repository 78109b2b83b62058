//! Operations as an operator sees them: a real Prometheus scraping a running sluice's
//! metrics listener runs every dashboard and alert expression of `deploy/`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::gate::token_at;
use common::principals::{HOUR, T0};
use common::{Client, Sluice, get, promtool_check};
use sluice::change::token::Act;

/// Kills a child process when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a Debian package's binary is here; without it the test skips, unless `var=1`.
fn have(binary: &str, var: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var(var).as_deref() != Ok("1"),
            "{var}=1 but `{binary}` cannot run"
        );
        eprintln!("SKIPPED: `{binary}` not found (apt-get install prometheus)");
    }
    found
}

/// A real Prometheus scraping `targets` every second (`extra`: more top-level config, such
/// as `rule_files`), ready: the process (killed on drop), its data dir, and its address.
async fn start_prometheus(
    targets: &[SocketAddr],
    extra: &str,
) -> (KillOnDrop, tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    let targets = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &cfg,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n{extra}\
             scrape_configs:\n  - job_name: sluice\n    static_configs: [{{ targets: [{targets}] }}]\n"
        ),
    )
    .unwrap();
    // The port is free when picked but not reserved: if another process takes it first,
    // Prometheus exits, and it is started again on another port.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (child, addr) = 'start: loop {
        let port = free_port();
        let mut child = KillOnDrop(
            Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        loop {
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            if child.0.try_wait().unwrap().is_some() {
                continue 'start;
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, "/-/ready", &[]).await.status == 200
            {
                break 'start (child, addr);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    (child, dir, addr)
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The PromQL expressions of the Grafana dashboard, with their panel titles.
fn dashboard_exprs(path: &Path) -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// A traffic document: a canary that fails (so the rollout rolls back), and an upstream
/// nobody listens on (upstream connect errors).
fn doc(stable: SocketAddr, canary: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: CHG-1, author: alice, class: emergency, summary: "ops dashboards" }}
upstreams:
  stable: {{ endpoints: ["{stable}"] }}
  canary: {{ endpoints: ["{canary}"] }}
  dead: {{ endpoints: ["{dead}"], connect_timeout: 500ms }}
routes:
  - name: dead
    match: {{ path_prefix: /dead }}
    to: {{ upstream: dead }}
  - name: shop
    to: {{ rollout: shop }}
rollouts:
  shop:
    strategy: canary
    stable: stable
    canary: canary
    sticky: {{ header: x-user-id }}
    steps: [{{ weight: 50 }}, {{ gate: manual }}]
    analysis: {{ interval: 1s, window: 10s, min_requests: 5, max_error_rate: 0.2 }}
"#
    )
}

/// Every expression of `deploy/grafana/sluice.json` and `deploy/prometheus/rules.yaml`,
/// run by a real Prometheus against a real sluice under load, returns data: the rollout
/// rolls back (its canary fails), a change is refused, an emergency change's review comes
/// due, an upstream refuses connections, and a second node (cluster mode) has no etcd, so
/// every panel and alert has something to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_runs_every_dashboard_and_alert_expression() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("deploy/prometheus/rules.yaml");
    let dashboard = root.join("deploy/grafana/sluice.json");
    if !have("prometheus", "SLUICE_REQUIRE_PROMETHEUS") {
        return;
    }
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    // sluice: emergency-approved document (alice authors, ivan approves), manual clock.
    let stable = common::Upstream::start("stable");
    let canary = common::edge::MiniUp::start("canary", None);
    canary.state.status.store(500, Ordering::Relaxed);
    let (_dead_guard, dead) = common::refusing_addr();
    let text = doc(stable.addr, canary.addr, dead);
    let b = Sluice::builder()
        .traffic(&text)
        .approvals()
        .manual_clock()
        .settings("metrics: { bind: \"127.0.0.1:0\" }\n");
    for (name, who, act) in [
        ("author", "alice", Act::Author),
        ("ivan", "ivan", Act::Approve),
    ] {
        let t = token_at(who, &text, act, T0, HOUR);
        std::fs::write(b.dir().join(format!("approvals/{name}.jwt")), t).unwrap();
    }
    let mut s = b.start();
    s.wait_version(1);
    let inst = s.inst();
    let (proxy, admin, metrics) = (inst.listeners[0], inst.admin, inst.metrics.unwrap());
    if let Some(r) = promtool_check(&get(metrics, "/metrics", &[]).await.text()) {
        r.unwrap();
    }

    // A second node, in cluster mode, whose etcd is not there (an address nothing listens
    // on): it serves no document and reports itself disconnected from the fleet.
    let (_no_etcd_guard, no_etcd) = common::refusing_addr();
    let no_etcd = format!("http://{no_etcd}");
    let mut lost = Sluice::builder()
        .trust("")
        .settings(&format!(
            "metrics: {{ bind: \"127.0.0.1:0\" }}\n\
             cluster: {{ etcd: {{ endpoints: [\"{no_etcd}\"], prefix: /ops }}, node_id: lost }}\n"
        ))
        .start();
    let lost_metrics = lost.inst().metrics.unwrap();

    // Prometheus scraping both metrics listeners every second, evaluating the rules.
    let (_prom, _prom_dir, prom) = start_prometheus(
        &[metrics, lost_metrics],
        &format!("rule_files: [\"{}\"]\n", rules.display()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);

    // Prometheus has scraped sluice before anything happens: `increase()` sees each event.
    loop {
        let r = get(
            prom,
            &format!("/api/v1/query?query={}", encode("up{job=\"sluice\"} == 1")),
            &[],
        )
        .await
        .json();
        if !r["data"]["result"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped sluice");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Load: users spread over both variants, and requests to the dead upstream.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = Client::connect(proxy).await;
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 1;
                let user = format!("user-{i}");
                let path = if i.is_multiple_of(10) { "/dead" } else { "/" };
                c.get(path, &[("x-user-id", &user)]).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // A refused change: version 2 without an author token.
    let mut a = Client::connect(admin).await;
    let put = http::Request::put("/api/v1/traffic")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", inst.admin_token))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            text.replace("version: 1", "version: 2")
                .replace("weight: 50", "weight: 60"),
        )))
        .unwrap();
    let refused = a.send(put).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    // The emergency review comes due (review_within 24h).
    s.advance(Duration::from_secs(25 * HOUR));
    let bearer = format!("Bearer {}", inst.admin_token);
    let status = a
        .get(
            "/api/v1/status",
            &[("host", "127.0.0.1"), ("authorization", &bearer)],
        )
        .await
        .json();
    assert_eq!(
        status["emergency_reviews"][0]["overdue"], true,
        "{status:#}"
    );

    // The rules as Prometheus loaded them: all healthy once evaluated.
    let loaded = loop {
        let l = get(prom, "/api/v1/rules", &[]).await.json();
        let evaluated = l["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .all(|r| r["health"] != "unknown");
        if evaluated {
            break l;
        }
        assert!(Instant::now() < deadline, "rules never evaluated: {l:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut exprs: Vec<(String, String)> = Vec::new();
    for g in loaded["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "{r:#}");
            exprs.push((
                format!("alert {}", r["name"].as_str().unwrap()),
                r["query"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(exprs.len(), 4, "{loaded:#}");
    exprs.extend(dashboard_exprs(&dashboard));

    // Each expression returns data (polled: rates need two scrapes, the rollback a verdict;
    // the fleet alert's data comes from the node without etcd).
    let mut missing = exprs.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (what, q) in missing {
            let r = get(prom, &format!("/api/v1/query?query={}", encode(&q)), &[])
                .await
                .json();
            assert_eq!(r["status"], "success", "{what}: {q}: {r}");
            if r["data"]["result"].as_array().unwrap().is_empty() {
                still.push((what, q));
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    assert!(missing.is_empty(), "no data for: {missing:#?}");
    eprintln!("{} expressions returned data", exprs.len());
    lost.stop();
    s.stop();
}

/// Starts `tests/data/otlp_receiver.py` (official `opentelemetry-proto` package); `None`
/// (skipped) without the package unless `SLUICE_REQUIRE_OTLP=1`.
fn otlp_receiver() -> Option<(
    KillOnDrop,
    u16,
    std::sync::mpsc::Receiver<serde_json::Value>,
)> {
    use std::io::{BufRead, BufReader};
    let ok = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("SLUICE_REQUIRE_OTLP").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_OTLP=1 but the opentelemetry-proto Python package is missing"
        );
        eprintln!("SKIPPED: pip install opentelemetry-proto for the OTLP receiver");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/otlp_receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = KillOnDrop(child);
    let first = lines.next().unwrap().unwrap();
    let port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&l).unwrap());
        }
    });
    Some((child, port, rx))
}

/// A sluice proxying to `upstream` with flag `theme`, metrics, an access log in its dir
/// (`access.log`) and `tracing`, its document active.
fn traced_sluice(upstream: SocketAddr, tracing: &str) -> Sluice {
    let b = Sluice::builder();
    let access_log = b.dir().join("access.log");
    let s = b
        .traffic(&format!(
            r#"version: 1
change: {{ id: CHG-1, author: alice, summary: tracing }}
upstreams:
  app: {{ endpoints: ["{upstream}"] }}
routes:
  - name: shop
    to: {{ upstream: app }}
    flags: [theme]
flags:
  theme:
    state: ENABLED
    variants: {{ light: "light", dark: "dark" }}
    defaultVariant: dark
"#
        ))
        .settings(&format!(
            "metrics: {{ bind: \"127.0.0.1:0\" }}\n\
             access_log: {{ enabled: true, path: \"{}\" }}\n\
             tracing: {tracing}\n",
            access_log.display()
        ))
        .start();
    s.wait_version(1);
    s
}

/// W3C trace context is kept (or started) and propagated upstream with sluice's span as
/// the parent; one span per request reaches a real OTLP receiver with the route, variant,
/// upstream, status and OpenFeature `feature_flag.*` attributes; the access log carries the
/// trace id. With the collector down, requests are unaffected and the spans are counted as
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_propagate_and_spans_reach_a_real_otlp_receiver() {
    let Some((_receiver, port, spans)) = otlp_receiver() else {
        return;
    };
    let up = common::Upstream::start("app");
    let mut node = traced_sluice(
        up.addr,
        &format!("{{ sample: 1.0, otlp: {{ endpoint: \"http://127.0.0.1:{port}\" }} }}"),
    );
    let proxy = node.proxy();
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let kept = get(
        proxy,
        "/cart",
        &[
            ("traceparent", TP),
            ("tracestate", "vendor=1"),
            ("x-request-id", "req-kept"),
        ],
    )
    .await;
    assert_eq!(kept.status, 200);
    let h = &kept.json()["headers"];
    let sent = h["traceparent"][0].as_str().unwrap().to_string();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(
        sent.ends_with("-01") && !sent.contains("00f067aa0ba902b7"),
        "{sent}"
    );
    assert_eq!(h["tracestate"][0], "vendor=1");
    let sluice_span = &sent[36..52];

    let fresh = get(proxy, "/new", &[]).await;
    let started = fresh.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(started.len(), 55);
    assert!(
        started.starts_with("00-") && started.ends_with("-01"),
        "{started}"
    );
    let new_trace = &started[3..35];

    // Both spans arrive at the receiver (batched: within about a second).
    let mut got: Vec<serde_json::Value> = Vec::new();
    while got.len() < 2 {
        got.push(
            spans
                .recv_timeout(Duration::from_secs(20))
                .expect("spans reach the OTLP receiver"),
        );
    }
    let span = got
        .iter()
        .find(|s| s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .expect("the kept trace's span");
    assert_eq!(span["span_id"], sluice_span);
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["name"], "GET shop");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(span["resource"]["service.name"], "sluice");
    let a = &span["attributes"];
    assert_eq!(a["sluice.route"], "shop");
    assert_eq!(a["sluice.variant"], "app");
    assert_eq!(a["sluice.upstream"], "app");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["http.request.method"], "GET");
    let e = &span["events"][0];
    assert_eq!(e["name"], "feature_flag.evaluation");
    assert_eq!(e["attributes"]["feature_flag.key"], "theme");
    assert_eq!(e["attributes"]["feature_flag.result.variant"], "dark");
    assert!(span["end"].as_u64() >= span["start"].as_u64());
    let other = got.iter().find(|s| s["trace_id"] == new_trace).unwrap();
    assert_eq!(other["parent_span_id"], "");

    // The access log names the trace and the request id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(node.path("access.log")).unwrap_or_default();
        if log.lines().count() >= 2 {
            break log;
        }
        assert!(Instant::now() < deadline, "access log: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[0]["request_id"], "req-kept");
    assert_eq!(lines[0]["host"], "test.local");
    assert_eq!(lines[0]["tls"], false);
    assert_eq!(lines[1]["trace_id"], new_trace);
    node.stop();

    // A collector that is down: every request still succeeds; spans are dropped, counted.
    let (_dead_guard, dead) = common::refusing_addr();
    let mut node = traced_sluice(
        up.addr,
        &format!("{{ otlp: {{ endpoint: \"http://{dead}\" }} }}"),
    );
    let mut c = Client::connect(node.proxy()).await;
    for _ in 0..50 {
        assert_eq!(c.get("/x", &[]).await.status, 200);
    }
    let metrics = node.inst().metrics.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(metrics, "/metrics", &[]).await.text();
        let dropped = text
            .lines()
            .find(|l| l.starts_with("sluice_tracing_spans_dropped_total{reason=\"export_failed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if dropped == 50 {
            assert!(
                text.contains("sluice_tracing_spans_exported_total 0"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans not counted as dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop();
}

/// `analysis.metrics` with `provider: prometheus`: a real Prometheus scrapes sluice, and the
/// rollout is judged on a PromQL query over sluice's own request counter (templated with the
/// rollout's name). The built-in analysis has no criterion, so only the Prometheus result can
/// roll the failing canary back — and the rollback names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_metric_check_rolls_back_a_canary_on_a_query_result() {
    if !have("prometheus", "SLUICE_REQUIRE_PROMETHEUS") {
        return;
    }
    let stable = common::Upstream::start("stable");
    let canary = common::edge::MiniUp::start("canary", None);
    canary.state.status.store(500, Ordering::Relaxed);
    let head = "change: { id: CHG-1, author: alice, summary: prometheus analysis }\n\
                upstreams:\n";
    let s = Sluice::builder()
        .traffic(&format!(
            "version: 1\n{head}  stable: {{ endpoints: [\"{}\"] }}\n\
             routes: [{{ name: shop, to: {{ upstream: stable }} }}]\n",
            stable.addr
        ))
        .settings("metrics: { bind: \"127.0.0.1:0\" }\n")
        .start();
    s.wait_version(1);
    let metrics = s.inst().metrics.unwrap();
    let (_prom, _prom_dir, prom) = start_prometheus(&[metrics], "").await;

    let query = "sum(sluice_requests_total{rollout=\"{{rollout}}\",variant=\"canary\",code_class=\"5xx\"}) or vector(0)";
    s.write_traffic(&format!(
        "version: 2\n{head}  stable: {{ endpoints: [\"{}\"] }}\n  canary: {{ endpoints: [\"{}\"] }}\n\
         routes: [{{ name: shop, to: {{ rollout: shop }} }}]\n\
         rollouts:\n  shop:\n    strategy: canary\n    stable: stable\n    canary: canary\n\
         \x20   sticky: {{ header: x-user-id }}\n\
         \x20   steps: [{{ weight: 50, hold: 1h }}, {{ weight: 100 }}]\n\
         \x20   analysis:\n      interval: 500ms\n      min_requests: 0\n      metrics:\n\
         \x20       - {{ name: canary-5xx, provider: prometheus, address: \"http://{prom}\", \
         query: '{query}', condition: \"result < 5\", interval: 500ms }}\n",
        stable.addr, canary.addr
    ));
    s.wait_version(2);
    // Empty until the runner has synced with version 2.
    let status = || s.inst().rollouts.status_json()[0].clone();
    // Before any failure the check passes (0 errors), and the canary gets traffic.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status()["verdicts"][0]["metrics"][0]["state"] != "passed" {
        assert!(Instant::now() < deadline, "{:#}", status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = Client::connect(s.proxy()).await;
    let mut canary_errors = 0;
    for i in 0..40 {
        let r = c.get("/", &[("x-user-id", &format!("user-{i}"))]).await;
        canary_errors += u32::from(r.status == 500);
    }
    assert!(canary_errors >= 5, "{canary_errors} canary errors");
    // Prometheus scrapes the errors; the next query fails the condition: rollback.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status()["phase"] != "aborted" {
        assert!(Instant::now() < deadline, "{:#}", status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = status();
    assert_eq!(st["abort_reason"], "metric", "{st:#}");
    let m = &st["verdicts"][0]["metrics"][0];
    assert_eq!(m["name"], "canary-5xx", "{st:#}");
    assert_eq!(m["state"], "failed", "{st:#}");
    assert!(m["value"].as_f64().unwrap() >= 5.0, "{st:#}");
    assert_eq!(
        s.inst().shared.snapshot.load_full().unwrap().rollouts[0].weight(),
        0
    );
}

/// The access log's entry is written when the response body ends: it counts the request
/// and response body bytes and names the endpoint that answered; a response the client cut
/// short is logged with what was sent, marked incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_entries_count_body_bytes_at_the_end_of_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = common::Upstream::start("app");
    let mut node = traced_sluice(up.addr, "{ sample: 0.0 }");
    let proxy = node.proxy();

    // A body streamed both ways (the upstream echoes it).
    let mut c = Client::connect(proxy).await;
    let sent = vec![b'y'; 10_000];
    let echoed = c
        .send(
            http::Request::post("/echo")
                .header("host", "test.local")
                .header("x-request-id", "echo")
                .body(http_body_util::Full::new(bytes::Bytes::from(sent)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((echoed.status.as_u16(), echoed.body.len()), (200, 10_000));
    let bodiless = c.get("/cart", &[("x-request-id", "plain")]).await;
    assert_eq!(bodiless.status, 200);

    // 64 MiB asked for, the head read, then the client goes away: far more than the
    // sockets' buffers hold, so the body cannot have been handed over in full.
    const BIG: u64 = 64 << 20;
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("GET /big?n={BIG} HTTP/1.1\r\nhost: test.local\r\nx-request-id: cut\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b))
            .await
            .expect("a response head")
            .unwrap();
        assert!(n > 0, "closed before a head");
        head.extend_from_slice(&b[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    drop(s);

    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let log = std::fs::read_to_string(node.path("access.log")).unwrap_or_default();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "access log: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no entry for {id}: {lines:?}"))
    };
    let up_addr = up.addr.to_string();

    let e = by_id("echo");
    assert_eq!(e["status"], 200);
    assert_eq!(e["bytes_in"], 10_000);
    assert_eq!(e["bytes_out"], 10_000);
    assert_eq!(e["complete"], true);
    assert_eq!(e["upstream"], "app");
    assert_eq!(e["upstream_addr"], up_addr.as_str());

    let e = by_id("plain");
    assert_eq!(e["bytes_in"], 0);
    assert_eq!(e["bytes_out"], bodiless.body.len() as u64);
    assert_eq!(e["complete"], true);
    assert_eq!(e["upstream_addr"], up_addr.as_str());

    let e = by_id("cut");
    assert_eq!(e["status"], 200);
    assert_eq!(e["complete"], false, "{e}");
    assert!(e["bytes_out"].as_u64().unwrap() < BIG, "{e}");
    assert_eq!(e["upstream_addr"], up_addr.as_str());
    node.stop();
}
