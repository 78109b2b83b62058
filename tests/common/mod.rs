//! Shared test harness: in-process upstreams, a sluice in a temp dir ([`Sluice::builder`]),
//! a small HTTP client.
#![allow(dead_code)]

pub mod edge;
pub mod gate;
pub mod principals;
pub mod rollouts;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use principals::T0;
use sluice::clock::Clock;
use sluice::config::Settings;
use sluice::instance::{Instance, StartOptions};

/// A loopback address where connections are refused for as long as the returned socket
/// lives: bound (so no other process can take the port mid-test, as it could one bound and
/// released) but never listening.
pub fn refusing_addr() -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (s, addr)
}

/// Serves 127.0.0.1:0 on a thread and runtime of its own (so tests on any runtime can start
/// and drop it), handing each accepted connection to `on_conn`; returns the address.
pub fn spawn_server<F, Fut>(on_conn: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(on_conn(s));
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// Serves HTTP/1.1 on `io` until the client closes, answering each request with `handle`.
pub async fn serve_http1<I, H, Fut>(io: I, handle: H)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// An HTTP/1.1 server on 127.0.0.1:0 (as [`spawn_server`]) answering each request with
/// `handle`; returns the address.
pub fn http_server<H, Fut>(handle: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    spawn_server(move |s| serve_http1(s, handle.clone()))
}

/// Every header as name → values, for upstreams that echo what they received.
pub fn headers_json(h: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    h.keys()
        .map(|k| {
            let values = h.get_all(k).iter();
            let values = values.map(|v| v.to_str().unwrap_or("").to_string());
            (k.to_string(), values.collect())
        })
        .collect()
}

/// Writes `path` atomically (a temp file beside it, then rename), as editors do.
pub fn write_atomic(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The version of `inst`'s active document (0: none).
pub fn active_version(inst: &Instance) -> u64 {
    inst.shared
        .snapshot
        .load()
        .as_ref()
        .map(|s| s.version)
        .unwrap_or(0)
}

/// Waits until `inst`'s active version is `v` (up to 10 s).
pub fn wait_version(inst: &Instance, v: u64) {
    for _ in 0..200 {
        if active_version(inst) == v {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "version {v} never became active (active: {})",
        active_version(inst)
    );
}

/// An in-process upstream.
///
/// - `GET /big?n=N` streams N bytes of `x`.
/// - `POST /echo` streams the request body back.
/// - `GET /sleep?ms=N` answers after N ms.
/// - `GET /status?code=N` answers with that status.
/// - anything else: 200 with a JSON body `{"name": ..., "headers": {...}, "path": ..., "method": ...}`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let addr = spawn_server(move |s| {
            let h = h.clone();
            async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::Relaxed);
                    serve(name, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            }
        });
        Upstream { addr, hits }
    }
}

type UpResp = Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>;

fn full(b: impl Into<Bytes>) -> http_body_util::combinators::BoxBody<Bytes, hyper::Error> {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}="))?.parse().ok())
}

async fn serve(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<UpResp, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    // Dispatch on the last segment, so routes with prefixes reach the same handlers.
    let last = format!("/{}", path.rsplit('/').next().unwrap_or(""));
    let r = match last.as_str() {
        "/big" => {
            let n = query(&req, "n").unwrap_or(1 << 20) as usize;
            Response::new(
                Big {
                    left: n,
                    chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                }
                .boxed(),
            )
        }
        "/echo" => Response::new(req.into_body().boxed()),
        "/sleep" => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(0))).await;
            Response::new(full(name))
        }
        "/status" => {
            let mut r = Response::new(full(name));
            *r.status_mut() =
                StatusCode::from_u16(query(&req, "code").unwrap_or(200) as u16).unwrap();
            r
        }
        _ => {
            let headers = headers_json(req.headers());
            let body = serde_json::json!({
                "name": name, "headers": headers, "path": path,
                "uri": req.uri().to_string(), "method": req.method().as_str(),
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut()
                .insert("connection", "x-upstream-hop".parse().unwrap());
            r.headers_mut()
                .insert("x-upstream-hop", "1".parse().unwrap());
            r
        }
    };
    Ok(r)
}

/// A body of `left` bytes of `x`, in 64 KiB frames.
struct Big {
    left: usize,
    chunk: Bytes,
}

impl hyper::body::Body for Big {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// A sluice running in a temp dir: the one instance harness of every integration suite.
/// Start it with [`Sluice::builder`]; `gate.rs` adds the admin API and approvals helpers,
/// `rollouts.rs` the rollout runner's.
pub struct Sluice {
    pub dir: tempfile::TempDir,
    pub inst: Option<Instance>,
    /// The settings it (re)starts with; a test may edit them before [`Sluice::restart`].
    pub settings_yaml: String,
    /// The control plane's wall clock (manual at [`T0`] with [`Builder::manual_clock`]).
    pub clock: Clock,
    manual_ticks: bool,
}

/// Builds a [`Sluice`]: the temp dir exists from the start ([`Builder::dir`]) so a test can
/// write certificates or keys into it before naming them in the settings.
pub struct Builder {
    dir: tempfile::TempDir,
    traffic: String,
    listeners: Vec<String>,
    workers: usize,
    limits: String,
    trust: String,
    extra: String,
    clock: Clock,
    manual_ticks: bool,
}

impl Builder {
    /// The instance's directory (traffic.yaml, approvals/, state/ live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The traffic document written to traffic.yaml before the start (none by default).
    pub fn traffic(mut self, text: &str) -> Builder {
        self.traffic = text.to_string();
        self
    }

    /// The `public` listener's YAML after `name: public, ` (default `bind: "127.0.0.1:0"`).
    pub fn listener(mut self, body: &str) -> Builder {
        self.listeners[0] = format!("name: public, {body}");
        self
    }

    /// One more listener, `name` with `body` after `name: …, `.
    pub fn add_listener(mut self, name: &str, body: &str) -> Builder {
        self.listeners.push(format!("name: {name}, {body}"));
        self
    }

    /// Runtime worker threads (default 2).
    pub fn workers(mut self, n: usize) -> Builder {
        self.workers = n;
        self
    }

    /// Entries added to `limits:` (after `drain_timeout: 5s`).
    pub fn limits(mut self, entries: &str) -> Builder {
        self.limits = format!(", {entries}");
        self
    }

    /// Settings lines appended as they are (end each with a newline).
    pub fn settings(mut self, lines: &str) -> Builder {
        self.extra.push_str(lines);
        self
    }

    /// The `trust` section (default `require_approvals: false`).
    pub fn trust(mut self, yaml: &str) -> Builder {
        self.trust = yaml.to_string();
        self
    }

    /// Approvals required, with the principals and policy of [`principals::trust_yaml`].
    pub fn approvals(self) -> Builder {
        self.trust(&principals::trust_yaml())
    }

    /// A manual control-plane clock starting at [`T0`].
    pub fn manual_clock(mut self) -> Builder {
        self.clock = Clock::manual(T0 * 1000);
        self
    }

    /// Rollouts tick only on [`Sluice::tick`] (one tick is one `analysis.interval`); implies
    /// a manual clock.
    pub fn manual_ticks(mut self) -> Builder {
        self.manual_ticks = true;
        self.manual_clock()
    }

    /// The settings this builder starts with.
    pub fn settings_yaml(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| format!("{{ {l} }}"))
            .collect();
        settings_text(
            self.dir.path(),
            &listeners.join(", "),
            self.workers,
            &self.limits,
            &format!("{}{}", self.trust, self.extra),
        )
    }

    /// Writes traffic.yaml and starts the instance.
    pub fn start(self) -> Sluice {
        if !self.traffic.is_empty() {
            std::fs::write(self.dir.path().join("traffic.yaml"), &self.traffic).unwrap();
        }
        let settings_yaml = self.settings_yaml();
        let mut s = Sluice {
            dir: self.dir,
            inst: None,
            settings_yaml,
            clock: self.clock,
            manual_ticks: self.manual_ticks,
        };
        s.restart();
        s
    }
}

/// Settings for a sluice in `dir` with the builder's defaults and `rest` after the paths, for
/// tests that run the binary (which reads a settings file) rather than an [`Instance`].
pub fn settings_yaml(dir: &Path, rest: &str) -> String {
    settings_text(dir, "{ name: public, bind: \"127.0.0.1:0\" }", 2, "", rest)
}

/// The one settings template: loopback listeners and admin, `drain_timeout: 5s` plus `limits`
/// (`, key: value…`), paths inside `dir`, then `rest`.
fn settings_text(dir: &Path, listeners: &str, workers: usize, limits: &str, rest: &str) -> String {
    format!(
        "listeners: [{listeners}]\n\
         admin: {{ bind: \"127.0.0.1:0\" }}\n\
         runtime: {{ workers: {workers} }}\n\
         limits: {{ drain_timeout: 5s{limits} }}\n\
         paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
         {rest}",
        d = dir.display()
    )
}

impl Sluice {
    /// A builder: no traffic, one plaintext listener, approvals off, the system clock.
    pub fn builder() -> Builder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("approvals")).unwrap();
        Builder {
            dir,
            traffic: String::new(),
            listeners: vec!["name: public, bind: \"127.0.0.1:0\"".into()],
            workers: 2,
            limits: String::new(),
            trust: "trust: { require_approvals: false }\n".into(),
            extra: String::new(),
            clock: Clock::System,
            manual_ticks: false,
        }
    }

    /// Stops the instance (if running) and starts it again from [`Sluice::settings_yaml`].
    pub fn restart(&mut self) {
        self.stop();
        let settings = Settings::parse(&self.settings_yaml).unwrap();
        let opts = StartOptions {
            clock: self.clock.clone(),
            manual_rollout_ticks: self.manual_ticks,
        };
        self.inst = Some(Instance::start(settings, opts).unwrap());
    }

    /// Shuts the instance down (in-flight requests drain within `drain_timeout`).
    pub fn stop(&mut self) {
        if let Some(i) = self.inst.take() {
            i.shutdown();
        }
    }

    pub fn inst(&self) -> &Instance {
        self.inst.as_ref().unwrap()
    }

    pub fn proxy(&self) -> SocketAddr {
        self.inst().listeners[0]
    }

    pub fn admin(&self) -> SocketAddr {
        self.inst().admin
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes traffic.yaml atomically (as editors do: temp file + rename).
    pub fn write_traffic(&self, text: &str) {
        write_atomic(&self.path("traffic.yaml"), text);
    }

    pub fn version(&self) -> u64 {
        active_version(self.inst())
    }

    /// Waits until the active version is `v` (up to 10 s).
    pub fn wait_version(&self, v: u64) {
        wait_version(self.inst(), v);
    }

    /// Writes traffic.yaml (temp file + rename) and waits until `version` is active.
    pub fn activate_file(&self, text: &str, version: u64) {
        self.write_traffic(text);
        self.wait_version(version);
    }

    /// Now on the control plane's clock, Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.unix_secs()
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The audit log, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("state/audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit entries with this event.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Waits until the log holds `n` entries with `event` (up to 10 s).
    pub fn wait_events(&self, event: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let e = self.events(event);
            if e.len() >= n {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{event} never reached {n} entries: {:?}",
            self.events(event)
        );
    }

    /// The audit chain verifies end to end.
    pub fn verify_audit_chain(&self) {
        sluice::change::audit::verify(&self.path("state/audit.jsonl"), None)
            .expect("the audit chain verifies");
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response with its whole body.
pub async fn collect(resp: Response<Incoming>) -> Result<Reply, hyper::Error> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::over(tokio::net::TcpStream::connect(addr).await.unwrap()).await
    }

    /// An HTTP/1.1 client over any stream (TLS, say).
    pub async fn over<S>(s: S) -> Client
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { tx }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.tx.ready().await?;
        collect(self.tx.send_request(req).await?).await
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::builder().uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", "test.local");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::connect(addr).await.get(path, headers).await
}

/// A traffic document with two upstreams and one route to `to`.
pub fn traffic(version: u64, v1: SocketAddr, v2: SocketAddr, rollout_steps: &str) -> String {
    format!(
        r#"version: {version}
change: {{ id: CHG-{version}, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    to: {{ upstream: v1 }}
  - name: web
    to: {{ rollout: web }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id, cookie: sluice_uid, set_cookie: true }}
    canary_match: {{ headers: {{ x-canary: always }} }}
    steps: {rollout_steps}
"#
    )
}

/// `promtool check metrics` on an exposition: `None` (after saying why) when promtool is not
/// installed, unless `SLUICE_REQUIRE_PROMTOOL=1` (CI), which makes its absence a failure.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("SLUICE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "SLUICE_REQUIRE_PROMTOOL=1 but promtool cannot run: {e}"
            );
            eprintln!("SKIPPED: promtool not found (apt-get install prometheus): {e}");
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool runs");
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}
