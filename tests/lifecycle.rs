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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let (port, admin) = (free_port(), free_port());
    let yaml = settings_yaml(dir.path(), "trust: { require_approvals: false }\n")
        .replace(
            "bind: \"127.0.0.1:0\" }]",
            &format!("bind: \"127.0.0.1:{port}\" }}]"),
        )
        .replace(
            "admin: { bind: \"127.0.0.1:0\" }",
            &format!("admin: {{ bind: \"127.0.0.1:{admin}\" }}"),
        );
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
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("sluice printed nothing");
        if line.contains("sluice is serving") {
            break;
        }
        assert!(Instant::now() < deadline, "sluice did not start");
    }
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();

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
