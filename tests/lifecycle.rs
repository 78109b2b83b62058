//! The `sluice` binary: run as the default command, admin API auth, SIGTERM drain.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Upstream, get, settings_yaml, traffic};

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_admin_needs_the_token() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("traffic.yaml"),
        traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"),
    )
    .unwrap();
    // Port 0: sluice binds and reports its addresses (a port picked before the start could
    // be taken by another test in between).
    let yaml = settings_yaml(dir.path(), "trust: { require_approvals: false }\n");
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(&cfg, yaml).unwrap();

    // No subcommand: `run` is the default.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (proxy, admin) = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("sluice printed nothing");
        if line.contains("sluice is serving") {
            break served_at(&line);
        }
        assert!(Instant::now() < deadline, "sluice did not start");
    };

    // Admin API: the token was generated into state/admin.token with mode 0600.
    let token_path = dir.path().join("state/admin.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        get(admin, "/api/v1/status", &[("host", "127.0.0.1")])
            .await
            .status,
        401
    );
    let bearer = format!("Bearer {token}");
    let r = get(
        admin,
        "/api/v1/status",
        &[("authorization", &bearer), ("host", &admin.to_string())],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["active"]["version"], 1);
    let r = get(
        admin,
        "/api/v1/status",
        &[("authorization", &bearer), ("host", "attacker.example")],
    )
    .await;
    assert_eq!(r.status, 403, "DNS rebinding: a foreign Host is refused");
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);

    // A slow request in flight when SIGTERM arrives still completes.
    let slow = tokio::spawn(async move { get(proxy, "/api/sleep?ms=1500", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "v1");
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sluice did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // New connections are no longer accepted.
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());
}

/// Starts the binary with `yaml` (binds rewritten to free ports); waits until it serves.
fn start_binary(
    dir: &std::path::Path,
    yaml: &str,
    args: &[&str],
) -> (
    KillOnDrop,
    std::net::SocketAddr,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    let cfg = dir.join("sluice.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "-c"])
        .arg(&cfg)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (proxy, admin) = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("sluice printed nothing");
        // Standard error is a pipe here: never colour codes.
        assert!(
            !line.contains('\x1b'),
            "ANSI escape in a piped log: {line:?}"
        );
        if line.contains("sluice is serving") {
            if args.contains(&"json") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["level"], "INFO", "{line}");
                assert_eq!(v["message"], "sluice is serving.", "{line}");
                assert_eq!(v["target"], "sluice::instance", "{line}");
                assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
                assert_eq!(v["workers"], 2, "{line}");
            }
            break served_at(&line);
        }
        assert!(Instant::now() < deadline, "sluice did not start");
    };
    (child, proxy, admin, rx)
}

/// The first listener's and the admin API's addresses from the "sluice is serving." line
/// (JSON, or text: `listeners=[127.0.0.1:41234] admin=127.0.0.1:41235`).
fn served_at(line: &str) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let (listeners, admin) = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => (
            v["listeners"].as_str().unwrap_or_default().to_string(),
            v["admin"].as_str().unwrap_or_default().to_string(),
        ),
        Err(_) => {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_default()
                    .to_string()
            };
            (field("listeners="), field("admin="))
        }
    };
    let first = listeners
        .trim_matches(['[', ']'])
        .split(", ")
        .next()
        .unwrap_or_default();
    match (first.parse(), admin.parse()) {
        (Ok(l), Ok(a)) => (l, a),
        _ => panic!("no addresses in {line:?}"),
    }
}

/// As an endpoint controller would, the clients stop sending once `/readyz` fails; between
/// SIGTERM and that moment the listener keeps accepting, HTTP/1 keep-alive connections are
/// told `Connection: close`, HTTP/2 gets GOAWAY, and a request longer than `drain_delay`
/// still finishes: not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_request_when_clients_follow_readiness() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("traffic.yaml"),
        traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"),
    )
    .unwrap();
    let yaml = settings_yaml(dir.path(), "trust: { require_approvals: false }\n");
    assert!(yaml.contains("limits: { drain_timeout: 5s }"));
    let yaml = yaml.replace(
        "limits: { drain_timeout: 5s }",
        "limits: { drain_delay: 4s, drain_timeout: 10s }",
    );
    let (mut child, proxy, admin, logs) =
        start_binary(dir.path(), &yaml, &["--log-format", "json"]);
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, closes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // The endpoint controller: readiness polled every 20 ms.
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                if get(admin, "/readyz", &[]).await.status != 200 {
                    stop.store(true, Ordering::SeqCst);
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("/readyz never failed");
        })
    };
    let mut load = Vec::new();
    for _ in 0..6 {
        let (stop, ok, failed, closes) = (stop.clone(), ok.clone(), failed.clone(), closes.clone());
        load.push(tokio::spawn(async move {
            let mut c = common::Client::connect(proxy).await;
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let req = http::Request::builder()
                    .uri("/sleep?ms=2")
                    .header("host", "test.local")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match c.send(req).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.headers.get("connection").is_some_and(|v| v == "close") {
                            closes.fetch_add(1, Ordering::Relaxed);
                            c = common::Client::connect(proxy).await;
                        }
                    }
                    Ok(r) => {
                        eprintln!("failed: status {}", r.status);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        c = common::Client::connect(proxy).await;
                    }
                }
            }
        }));
    }
    // An HTTP/2 connection open before SIGTERM, and a request longer than drain_delay.
    let mut h2 = common::edge::H2::over(tokio::net::TcpStream::connect(proxy).await.unwrap()).await;
    assert_eq!(
        h2.send(common::edge::get("http://test.local/", &[]))
            .await
            .unwrap()
            .status,
        200
    );
    // Through the `api` route (always v1): the 10% split must not pick its answer.
    let long = tokio::spawn(async move { get(proxy, "/api/sleep?ms=5500", &[]).await });
    // Load for a while, then SIGTERM.
    // Waited for, not timed: a loaded machine serves the 200 requests more slowly.
    let warm = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < warm, "the load never reached 200 requests");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = ok.load(Ordering::Relaxed);
    let term_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let not_ready_at = watcher.await.unwrap();
    // Within drain_delay: a new connection is accepted, served, and told to close, and the
    // HTTP/2 connection got GOAWAY (it ends without the client closing it).
    let late = get(proxy, "/", &[]).await;
    assert_eq!(late.status, 200);
    assert_eq!(late.headers["connection"], "close");
    tokio::time::timeout(Duration::from_secs(3), h2.done)
        .await
        .expect("the HTTP/2 connection got GOAWAY and closed")
        .unwrap();
    for l in load {
        l.await.unwrap();
    }
    let r = long.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "v1"));
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            term_at.elapsed() < Duration::from_secs(20),
            "sluice did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        term_at.elapsed() >= Duration::from_secs(4),
        "listeners kept accepting for drain_delay"
    );
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());
    let (ok, failed, closes) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        closes.load(Ordering::Relaxed),
    );
    eprintln!(
        "requests: {ok} ok ({before} before SIGTERM), {failed} failed, {closes} told to close; \
         readiness failed {:?} after SIGTERM",
        not_ready_at - term_at
    );
    assert_eq!(failed, 0);
    assert!(before >= 200, "the load ran before SIGTERM");
    let messages: Vec<String> = logs
        .try_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect();
    for m in [
        "Draining: /readyz answers 503",
        "Listeners stopped",
        "Stopped.",
    ] {
        assert!(
            messages.iter().any(|x| x.starts_with(m)),
            "{m}: {messages:?}"
        );
    }
}

/// `metrics.bind`: a listener apart from the admin API that serves `/metrics` (with
/// `sluice_build_info` and the `process_*` families) and `/healthz`, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_serves_only_metrics_and_healthz() {
    let mut s = common::Sluice::builder()
        .settings("metrics: { bind: \"127.0.0.1:0\" }\n")
        .start();
    let m = s.inst().metrics.expect("metrics listener bound");
    let r = get(m, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let info = format!(
        "sluice_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        sluice::telemetry::COMMIT
    );
    assert!(text.contains(&info), "{text}");
    assert_ne!(sluice::telemetry::COMMIT, "");
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(&format!("\n{family} ")), "{family}:\n{text}");
    }
    assert_eq!(get(m, "/healthz", &[]).await.status, 200);
    for path in ["/readyz", "/api/v1/status", "/ofrep/v1/evaluate/flags"] {
        let r = get(m, path, &[("host", "127.0.0.1")]).await;
        assert_eq!(r.status, 404, "{path} is not on the metrics listener");
    }
    // The admin listener serves the same exposition.
    assert!(get(s.admin(), "/metrics", &[]).await.text().contains(&info));
    s.stop();
}
