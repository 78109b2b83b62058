//! A fleet for the cluster tests: a real etcd (Debian `etcd-server`) on random loopback
//! ports with a temp data dir, and sluice nodes as real processes (the binary), each with its
//! own state dir, speaking plain HTTP/1.1 to their admin and proxy listeners.
//!
//! Without `etcd` installed the tests skip, saying so — unless `SLUICE_REQUIRE_ETCD=1`
//! (CI), where a missing etcd fails them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::change::token::{Act, Claims, sign};

use crate::common::principals::{key, trust_yaml};

/// The admin bearer token every test node uses.
pub const ADMIN_TOKEN: &str = "fleet-test-admin-token-0123456789";

/// A free loopback port (bound and released; the race with others is harmless in practice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port for a server a test starts as a separate process (etcd, a node), which
/// binds it later — possibly again after a restart.
///
/// Picked *below* the kernel's ephemeral range, so that no outgoing connection (the load
/// generators open hundreds a second, and a client retrying a stopped etcd can even connect
/// to itself on that port) and no `bind(0)` anywhere on the machine takes it between the pick
/// and the bind. Random per process, and checked free; a clash with another test process that
/// picks the same way is still possible, so the starters retry on "address in use".
pub fn server_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32768);
    const FROM: u64 = 10_000;
    if low <= FROM + 1_000 {
        return free_port(); // no room below the ephemeral range here
    }
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FROM + (seed.wrapping_add(n.wrapping_mul(7_919))) % (low - FROM);
        let port = port as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// Whether a server's log says it could not bind its port.
fn bind_clash(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("address in use")
}

/// True when etcd can run here; otherwise says why the test is skipped (or fails, in CI).
pub fn etcd_available() -> bool {
    let ok = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("SLUICE_REQUIRE_ETCD").as_deref() == Ok("1") {
            panic!("SLUICE_REQUIRE_ETCD=1 but `etcd` is not installed (Debian: etcd-server)");
        }
        eprintln!(
            "SKIPPED: `etcd` is not installed (Debian: etcd-server); set SLUICE_REQUIRE_ETCD=1 to fail instead"
        );
    }
    ok
}

/// Runs the fleet tests of one binary one at a time: each starts etcd and three or four
/// sluice processes, and the machine has two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Etcd {
    /// Starts etcd and waits until it answers; on a port clash, again on other ports.
    pub fn start() -> Etcd {
        // On tmpfs when there is one: the tests judge sluice, not the disk, and a WAL fsync
        // stalled behind other builds' writes must not expire the nodes' 2 s leases.
        let dir = match std::path::Path::new("/dev/shm") {
            shm if shm.is_dir() => tempfile::Builder::new()
                .prefix("sluice-etcd-")
                .tempdir_in(shm)
                .or_else(|_| tempfile::tempdir()),
            _ => tempfile::tempdir(),
        }
        .unwrap();
        let mut e = Etcd {
            child: None,
            dir,
            client: 0,
            peer: 0,
            url: String::new(),
        };
        for attempt in 1.. {
            (e.client, e.peer) = (server_port(), server_port());
            if e.client == e.peer {
                continue;
            }
            e.url = format!("http://127.0.0.1:{}", e.client);
            match e.launch() {
                Ok(()) => return e,
                Err(log) if attempt < 5 => {
                    eprintln!(
                        "etcd: port clash on {} or {}, other ports: {log}",
                        e.client, e.peer
                    );
                    let _ = std::fs::remove_dir_all(e.dir.path().join("data"));
                }
                Err(log) => panic!("etcd could not bind a port in 5 attempts: {log}"),
            }
        }
        unreachable!()
    }

    /// (Re)starts etcd on the same ports and data dir (the nodes know this URL); a port
    /// held for a moment by someone else is waited for.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline => {
                    eprintln!(
                        "etcd: port {} or {} busy, retrying: {log}",
                        self.client, self.peer
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(log) => panic!("etcd could not bind its ports again within 60 s: {log}"),
            }
        }
    }

    /// Spawns etcd and waits (generously: the machine is shared) until `/health` says true.
    /// `Err(log)` when it exited because a port was taken; any other failure panics with
    /// etcd's log.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd is running");
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log_path = self.dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("etcd")
            .args(["--name", "t"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            // Fast elections and short minimum leases on loopback.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if bind_clash(&log) {
                    return Err(log);
                }
                panic!("etcd exited with {status}: {log}");
            }
            if let Ok((200, body)) = get_plain(self.client, "/health")
                && body.contains("true")
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "etcd did not become healthy within 90 s: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd (the fleet loses it at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl put KEY VALUE` (the value from a file, as an operator would).
    pub fn put(&self, key: &str, value: &str) {
        let f = self.dir.path().join("value.tmp");
        std::fs::write(&f, value).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ETCDCTL_API=3 etcdctl --endpoints {} put -- '{key}' < '{}'",
                self.url,
                f.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl put failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `etcdctl get KEY --print-value-only`.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "get", "--print-value-only", key])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn get_plain(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = http(addr, "GET", path, &[], b"")?;
    Ok((r.status, r.text()))
}

/// An HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
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
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    let mut len: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().ok();
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A token of `who` for `text` (version `version`), issued now, valid one hour.
pub fn token(who: &str, text: &str, version: u64, act: Act) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sign(
        &Claims::new(who, "prod", text.as_bytes(), version, act, now, 3600),
        &key(who),
    )
}

/// The tokens a normal change needs: alice's author token and two release managers'.
pub fn approvals(text: &str, version: u64) -> Vec<String> {
    vec![
        token("alice", text, version, Act::Author),
        token("bob", text, version, Act::Approve),
        token("fred", text, version, Act::Approve),
    ]
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub node_id: String,
    pub etcd: String,
    pub prefix: String,
    pub lease_ttl: &'static str,
    /// `traffic.yaml` on disk at start, if any.
    pub traffic: Option<String>,
    /// `cluster.etcd.tls` as a YAML flow map, if any.
    pub etcd_tls: Option<&'static str>,
}

/// A sluice process in a temp dir.
pub struct Node {
    pub spec: NodeSpec,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl NodeSpec {
    pub fn new(etcd: &Etcd, prefix: &str, node_id: &str) -> NodeSpec {
        NodeSpec {
            node_id: node_id.into(),
            etcd: etcd.url.clone(),
            prefix: prefix.into(),
            lease_ttl: "2s",
            traffic: None,
            etcd_tls: None,
        }
    }
}

impl Node {
    /// Starts a node and waits until its admin listener answers.
    pub fn start(spec: NodeSpec) -> Node {
        match Node::try_start(spec) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a node; `Err` carries its exit status and stderr when it does not come up.
    /// A port taken between the pick and the bind is not the node's fault: other ports then.
    pub fn try_start(spec: NodeSpec) -> Result<Node, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("approvals")).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
        if let Some(t) = &spec.traffic {
            std::fs::write(dir.path().join("traffic.yaml"), t).unwrap();
        }
        let mut n = Node {
            spec,
            dir,
            child: None,
            proxy: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        for attempt in 1.. {
            let (proxy, admin) = (server_port(), server_port());
            if proxy == admin {
                continue;
            }
            n.proxy = format!("127.0.0.1:{proxy}").parse().unwrap();
            n.admin = format!("127.0.0.1:{admin}").parse().unwrap();
            n.write_settings();
            match n.restart() {
                Err(e) if attempt < 5 && bind_clash(&e) => {
                    eprintln!("node {}: port clash, other ports: {e}", n.spec.node_id);
                    let _ = std::fs::remove_file(n.path("sluice.log"));
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(n),
            }
        }
        unreachable!()
    }

    /// Writes `sluice.yaml` for this node's ports and spec.
    fn write_settings(&self) {
        let (proxy, admin) = (self.proxy.port(), self.admin.port());
        let d = self.dir.path().display();
        let spec = &self.spec;
        let yaml = format!(
            "listeners: [{{ name: public, bind: \"127.0.0.1:{proxy}\" }}]\n\
             admin: {{ bind: \"127.0.0.1:{admin}\", token_file: \"{d}/admin.token\" }}\n\
             runtime: {{ workers: 1 }}\n\
             limits: {{ drain_timeout: 1s }}\n\
             paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
             cluster:\n  etcd: {{ endpoints: [\"{}\"], prefix: \"{}\"{} }}\n  node_id: {}\n  lease_ttl: {}\n{}",
            spec.etcd,
            spec.prefix,
            spec.etcd_tls
                .map(|t| format!(", tls: {t}"))
                .unwrap_or_default(),
            spec.node_id,
            spec.lease_ttl,
            trust_yaml()
        );
        std::fs::write(self.path("sluice.yaml"), yaml).unwrap();
    }

    /// (Re)starts the process with the same dir and ports.
    pub fn restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "node is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sluice.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("-c")
            .arg(self.path("sluice.yaml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "node {} exited with {status}:\n{}",
                    self.spec.node_id,
                    self.log()
                ));
            }
            if let Ok(r) = http(self.admin, "GET", "/healthz", &[], b"")
                && r.status == 200
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "node {} did not come up:\n{}",
                    self.spec.node_id,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sluice.log")).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// An admin API call with the bearer token.
    pub fn api(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(headers);
        http(self.admin, method, path, &h, body).unwrap()
    }

    /// `PUT /api/v1/traffic` with tokens.
    pub fn push(&self, text: &str, tokens: &[String]) -> Resp {
        let h: Vec<(&str, &str)> = tokens
            .iter()
            .map(|t| ("sluice-approval", t.as_str()))
            .collect();
        self.api("PUT", "/api/v1/traffic", &h, text.as_bytes())
    }

    pub fn status(&self) -> Value {
        let r = self.api("GET", "/api/v1/status", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn cluster(&self) -> Value {
        let r = self.api("GET", "/api/v1/cluster", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// (version, digest) of the active document.
    pub fn active(&self) -> (u64, String) {
        let s = self.status();
        (
            s["active"]["version"].as_u64().unwrap_or(0),
            s["active"]["digest"].as_str().unwrap_or("").to_string(),
        )
    }

    /// The value of one metric series (`name{labels}` exactly as rendered).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let r = http(self.admin, "GET", "/metrics", &[], b"").ok()?;
        r.text().lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok())?
        })
    }

    /// The rollout `name` in status: (phase, step, weight percent).
    pub fn rollout(&self, name: &str) -> (String, u64, f64) {
        let s = self.status();
        let r = s["rollouts"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or(Value::Null);
        (
            r["phase"].as_str().unwrap_or("").to_string(),
            r["step"].as_u64().unwrap_or(0),
            r["weight"].as_f64().unwrap_or(-1.0),
        )
    }

    /// A request through the proxy.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        http(self.proxy, "GET", path, headers, b"").unwrap()
    }

    /// The local audit log, parsed.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, up to `secs`; panics with `what` otherwise.
#[track_caller]
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until `n`'s local audit log holds at least one `event`; returns them all. An audit
/// line is appended after the state it records is visible (a weight is stored first, then
/// the line is written), so a test that saw the state through metrics or status waits here.
#[track_caller]
pub fn wait_event(n: &Node, event: &str, secs: u64) -> Vec<Value> {
    wait_for(
        secs,
        &format!("{} to audit {event}", n.spec.node_id),
        || {
            let e = n.events(event);
            (!e.is_empty()).then_some(e)
        },
    )
}

/// Runs `sluice ARGS...` and returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An upstream that answers 200 with its name (JSON: name, headers) — or, for requests
/// matching `fail`, 500.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Whether request number `n` (with these headers) fails.
pub type FailFn = dyn Fn(u64, &http::HeaderMap) -> bool + Send + Sync;

/// When an upstream fails a request.
#[derive(Clone)]
pub struct Failing(pub std::sync::Arc<FailFn>);

impl Upstream {
    pub fn start(name: &'static str, fail: Failing) -> Upstream {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use std::sync::atomic::Ordering;
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let h = hits.clone();
        let addr = crate::common::spawn_server(move |s| {
            let (h, fail) = (h.clone(), fail.clone());
            async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let n = h.fetch_add(1, Ordering::Relaxed);
                    let bad = (fail.0)(n, req.headers());
                    let body = serde_json::json!({ "name": name }).to_string();
                    let mut r = http::Response::new(Full::new(bytes::Bytes::from(body)));
                    if bad {
                        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            }
        });
        Upstream { addr, hits }
    }
}

impl Failing {
    pub fn never() -> Failing {
        Failing(std::sync::Arc::new(|_, _| false))
    }
}

/// A traffic document with a `web` rollout between `stable` and `canary`.
pub fn rollout_doc(
    version: u64,
    stable: SocketAddr,
    canary: SocketAddr,
    steps: &str,
    analysis: &str,
) -> String {
    format!(
        r#"version: {version}
change: {{ id: CHG-{version}, author: alice, class: normal, summary: "fleet test {version}" }}
upstreams:
  v1: {{ endpoints: ["{stable}"] }}
  v2: {{ endpoints: ["{canary}"] }}
routes:
  - name: web
    to: {{ rollout: web }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id }}
    steps: {steps}
{analysis}"#
    )
}

/// Reads a file if it exists.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Traffic through every node until `stop` is set: each node gets a thread sending
/// `per_node_rps` requests a second with fresh user ids, plus `extra(node index)` headers.
/// Returns the unix ms of the first response from a failing canary (500 from v2), if any.
pub fn load(
    nodes: &[&Node],
    per_node_rps: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    extra: fn(usize) -> Vec<(&'static str, &'static str)>,
) -> std::thread::JoinHandle<Option<u128>> {
    use std::sync::atomic::Ordering;
    let targets: Vec<SocketAddr> = nodes.iter().map(|n| n.proxy).collect();
    std::thread::spawn(move || {
        let first_fail = std::sync::Arc::new(std::sync::Mutex::new(None::<u128>));
        let mut handles = Vec::new();
        for (i, addr) in targets.into_iter().enumerate() {
            let (stop, first_fail) = (stop.clone(), first_fail.clone());
            handles.push(std::thread::spawn(move || {
                let every = Duration::from_micros(1_000_000 / per_node_rps.max(1));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    n += 1;
                    let user = format!("user-{i}-{n}");
                    let mut h: Vec<(&str, &str)> = vec![("x-user-id", user.as_str())];
                    let more = extra(i);
                    h.extend(more.iter().copied());
                    if let Ok(r) = http(addr, "GET", "/", &h, b"")
                        && r.status == 500
                    {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis();
                        let mut f = first_fail.lock().unwrap();
                        if f.is_none() {
                            *f = Some(now);
                        }
                    }
                    if let Some(rest) = every.checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        *first_fail.lock().unwrap()
    })
}

/// Unix milliseconds now.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
