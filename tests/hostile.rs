//! Hostile inputs and faults (issue 16): documents built to make validation superlinear,
//! clients that abort or garble their uploads, upstreams that answer early or close at once,
//! encoded dot segments, spoofed headers, FIFOs in the approvals folder, and metric series
//! that must go with the names that made them. Each test names the defect it pins down.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;

use sluice::config::traffic::{CheckContext, TrafficDoc};

// --- a counting allocator: what validation allocates on this thread ----------------------

/// Counts the bytes the current thread holds, its peak, and everything it ever allocated.
struct Counting;

#[derive(Clone, Copy)]
struct Counts {
    now: isize,
    peak: isize,
    total: u64,
}

thread_local! {
    static COUNTS: Cell<Counts> = const { Cell::new(Counts { now: 0, peak: 0, total: 0 }) };
}

fn count(delta: isize, alloc: usize) {
    let _ = COUNTS.try_with(|c| {
        let mut v = c.get();
        v.now += delta;
        v.peak = v.peak.max(v.now);
        v.total += alloc as u64;
        c.set(v);
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize, l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize), 0);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as isize, l.size());
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(
                new as isize - l.size() as isize,
                new.saturating_sub(l.size()),
            );
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns the peak bytes it held above what the thread held before, and the
/// bytes it allocated in all (a proxy for its time: quadratic work shows as quadratic volume).
fn measure<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let before = COUNTS.with(|c| {
        let mut v = c.get();
        v.peak = v.now;
        c.set(v);
        v
    });
    let r = f();
    let after = COUNTS.with(Cell::get);
    (
        r,
        (after.peak - before.now).max(0) as u64,
        after.total - before.total,
    )
}

// --- item 1: validation is linear in the input -------------------------------------------

const HEAD: &str = "version: 1\nchange: { id: C1, author: alice }\n";

/// Documents shaped to make validation superlinear, each about `n` bytes.
fn hostile_documents(n: usize) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // The issue's reproduction: nested long keys under an unknown key, then a long flow list.
    let nested = |under: &str, key_len: usize, depth: usize, items: usize| {
        let mut s = format!("{HEAD}{under}:\n");
        for i in 0..depth {
            s.push_str(&" ".repeat(i + 1));
            s.push_str(&format!("k{i}").repeat(key_len)[..key_len]);
            s.push_str(":\n");
        }
        s.push_str(&" ".repeat(depth + 1));
        s.push_str("z: [");
        s.push_str(&vec!["1"; items].join(","));
        s.push_str("]\n");
        s
    };
    // (Implicit YAML keys stop at 1,024 characters; longer ones below are explicit, `? key`.)
    out.push((
        "nested long keys, long list",
        nested("bogus", 1000, n / 2000, n / 4),
    ));
    // The same under `flags`, where the flag compiler looks inside.
    out.push((
        "flags: nested long keys, long list",
        nested("flags", 1000, n / 2000, n / 4),
    ));
    // One invalid upstream name shared by the paths of many invalid endpoints.
    out.push(("long upstream name, many bad endpoints", {
        let name = "u".repeat(n / 2);
        let eps = vec!["\"x\""; n / 8].join(",");
        format!("{HEAD}upstreams:\n  ? {name}\n  : {{ endpoints: [{eps}] }}\n")
    }));
    // One invalid rollout name shared by many invalid steps.
    out.push(("long rollout name, many bad steps", {
        let name = "r".repeat(n / 2);
        let steps = vec!["{}"; n / 6].join(",");
        format!(
            "{HEAD}upstreams: {{ a: {{ endpoints: [\"127.0.0.1:1\"] }}, b: {{ endpoints: [\"127.0.0.1:2\"] }} }}\n\
             rollouts:\n  ? {name}\n  : {{ strategy: canary, stable: a, canary: b, steps: [{steps}] }}\n"
        )
    }));
    // Many `["*"]` routes and flags whose (long) keys are not header tokens.
    out.push(("star routes x long bad flag keys", {
        let mut s =
            format!("{HEAD}upstreams: {{ a: {{ endpoints: [\"127.0.0.1:1\"] }} }}\nflags:\n");
        let key_len = n / 400;
        for i in 0..60 {
            let key = format!("K{i}").repeat(key_len / 2);
            s.push_str(&format!(
                "  \"{key}\": {{ state: ENABLED, variants: {{ a: 1 }}, defaultVariant: a }}\n"
            ));
        }
        s.push_str("routes:\n");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "  - {{ name: r{i}, to: {{ upstream: a }}, flags: [\"*\"] }}\n"
            ));
            i += 1;
        }
        s
    }));
    // A flag with many variants and a route mapping many variants it does not have.
    out.push(("flag route: many variants x many unknown mappings", {
        let variants: Vec<String> = (0..n / 40).map(|i| format!("variant{i}: {i}")).collect();
        let maps: Vec<String> = (0..n / 40).map(|i| format!("nope{i}: a")).collect();
        format!(
            "{HEAD}upstreams: {{ a: {{ endpoints: [\"127.0.0.1:1\"] }} }}\n\
             flags:\n  f: {{ state: ENABLED, variants: {{ {} }}, defaultVariant: variant0 }}\n\
             routes:\n  - {{ name: r, to: {{ flag: f, upstreams: {{ {} }} }} }}\n",
            variants.join(", "),
            maps.join(", ")
        )
    }));
    // Deep JsonLogic, then a wide list of unknown operators at the bottom.
    out.push(("deep targeting, many unknown operators", {
        let depth = 30;
        let mut t = String::new();
        for _ in 0..depth {
            t.push_str("{\"and\": [");
        }
        let ops = vec!["{\"nosuchoperator\": 1}"; n / 22].join(",");
        t.push_str(&ops);
        for _ in 0..depth {
            t.push_str("]}");
        }
        format!(
            "{HEAD}flags:\n  f: {{ state: ENABLED, variants: {{ a: 1 }}, defaultVariant: a, targeting: {t} }}\n"
        )
    }));
    // Many routes, each with its own error: linear, the baseline.
    out.push(("many routes with an error each", {
        let mut s = format!("{HEAD}routes:\n");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "  - {{ name: r{i}, to: {{ upstream: missing{i} }} }}\n"
            ));
            i += 1;
        }
        s
    }));
    out
}

/// Peak memory and total allocation of validation stay within a fixed multiple of the
/// input, whatever its shape (issue 16, item 1). Before the fix the first document (145 KB
/// in the issue) took 2.6 GB; others were quadratic in the error paths they rendered.
#[test]
fn validation_memory_and_work_are_linear_in_the_input() {
    // Generous, and still far below what any quadratic shape reaches at these sizes.
    const PEAK_PER_BYTE: u64 = 160;
    const TOTAL_PER_BYTE: u64 = 400;
    const SLACK: u64 = 4 << 20;
    let ctx = CheckContext {
        listeners: Some(vec!["public".into()]),
    };
    let mut report = Vec::new();
    let mut over = Vec::new();
    for (name, doc) in hostile_documents(200_000) {
        let len = doc.len() as u64;
        let (r, peak, total) = measure(|| TrafficDoc::parse(&doc, &ctx).map(|_| ()));
        let errors = r.err().map(|e| e.0.len()).unwrap_or(0);
        report.push(format!(
            "{name}: {len} bytes, {errors} errors, peak {peak} ({:.1}/byte), total {total} ({:.1}/byte)",
            peak as f64 / len as f64,
            total as f64 / len as f64
        ));
        if peak > PEAK_PER_BYTE * len + SLACK || total > TOTAL_PER_BYTE * len + SLACK {
            over.push(name);
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        over.is_empty(),
        "over the bound: {over:?}\n{}",
        report.join("\n")
    );
}

// --- the real binary, under a memory cap ------------------------------------------------

mod bin {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// `sluice run` as a child process, optionally under `ulimit -v` (KiB of address space).
    pub struct Bin {
        pub child: Child,
        pub admin: SocketAddr,
        pub proxy: SocketAddr,
        pub log: PathBuf,
    }

    impl Drop for Bin {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs `sluice <args>` under `sh -c 'ulimit -v KiB; exec ...'`.
    pub fn command(mem_kib: u64, args: &[&str]) -> Command {
        let mut script = format!("ulimit -v {mem_kib}; exec \"$0\"");
        for i in 1..=args.len() {
            script.push_str(&format!(" \"${i}\""));
        }
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        c
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut esc = false;
        for c in s.chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }

    /// Starts `sluice run -c dir/sluice.yaml` and waits until it serves.
    pub fn start(dir: &Path, mem_kib: u64) -> Bin {
        let log = dir.join(format!(
            "sluice-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let cfg = dir.join("sluice.yaml");
        let child = command(mem_kib, &["run", "-c", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut b = Bin {
            child,
            admin: "127.0.0.1:1".parse().unwrap(),
            proxy: "127.0.0.1:1".parse().unwrap(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = strip_ansi(&std::fs::read_to_string(&b.log).unwrap_or_default());
            if let Some(line) = text.lines().find(|l| l.contains("sluice is serving.")) {
                let field = |name: &str| -> String {
                    let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
                    line[at..]
                        .trim_start_matches('[')
                        .split([']', ' ', ','])
                        .next()
                        .unwrap()
                        .to_string()
                };
                b.admin = field("admin").parse().unwrap();
                b.proxy = field("listeners").parse().unwrap();
                return b;
            }
            if let Ok(Some(exit)) = b.child.try_wait() {
                panic!("sluice exited before serving ({exit}):\n{text}");
            }
            assert!(Instant::now() < deadline, "sluice never served:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    impl Bin {
        /// Whether the process still runs.
        pub fn alive(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }

        pub fn log_text(&self) -> String {
            strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
        }
    }

    /// One blocking HTTP/1.1 exchange (`connection: close`); `None` if the peer is gone.
    pub fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).ok()?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp.get(9..12)?.parse().ok()?;
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }
}

/// The issue's document: 100 nested 1,000-character keys, then a flow list of 20,000 items.
fn issue_bomb(version: u64) -> String {
    let mut s =
        format!("version: {version}\nchange: {{ id: C{version}, author: alice }}\nbogus:\n");
    for i in 0..100 {
        s.push_str(&" ".repeat(i + 1));
        s.push_str(&format!("k{i:03}").repeat(250));
        s.push_str(":\n");
    }
    s.push_str(&" ".repeat(101));
    s.push_str("z: [");
    s.push_str(&vec!["1"; 20_000].join(","));
    s.push_str("]\n");
    s
}

fn plain_doc(version: u64, up: std::net::SocketAddr) -> String {
    format!(
        "version: {version}\nchange: {{ id: C{version}, author: alice }}\n\
         upstreams: {{ app: {{ endpoints: [\"{up}\"] }} }}\n\
         routes: [{{ name: r{version}, to: {{ upstream: app }} }}]\n"
    )
}

/// Item 1 through the binary: under a 1 GiB address-space cap, `sluice validate` refuses
/// the issue's 145 KB document with its error, a push of it is refused while the active
/// document keeps serving, and a restart with it in `traffic.yaml` restores the active
/// document and serves. Before the fix validation took 2.6 GB: `validate` aborted, the
/// push killed the instance, and every restart died again (a crash loop).
#[test]
fn a_hostile_document_never_stops_the_active_one_from_serving() {
    const CAP_KIB: u64 = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("approvals")).unwrap();
    let bomb = issue_bomb(2);
    std::fs::write(dir.join("bomb.yaml"), &bomb).unwrap();
    let out = bin::command(
        CAP_KIB,
        &["validate", dir.join("bomb.yaml").to_str().unwrap()],
    )
    .current_dir(dir)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `bogus`"), "{stderr}");

    let up = common::Upstream::start("app");
    std::fs::write(dir.join("traffic.yaml"), plain_doc(1, up.addr)).unwrap();
    std::fs::write(
        dir.join("sluice.yaml"),
        common::settings_yaml(dir, "trust: { require_approvals: false }\n"),
    )
    .unwrap();
    let mut b = bin::start(dir, CAP_KIB);
    let token = std::fs::read_to_string(dir.join("state/admin.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    assert_eq!(bin::http(b.proxy, "GET", "/", &[], b"").unwrap().0, 200);
    let pushed = bin::http(
        b.admin,
        "PUT",
        "/api/v1/traffic",
        &[("authorization", &auth)],
        bomb.as_bytes(),
    );
    assert!(
        matches!(&pushed, Some((400, body)) if body.contains("invalid_document")),
        "{pushed:?}\n{}",
        b.log_text()
    );
    assert!(b.alive(), "the push killed sluice:\n{}", b.log_text());
    assert_eq!(bin::http(b.proxy, "GET", "/", &[], b"").unwrap().0, 200);
    drop(b);

    std::fs::write(dir.join("traffic.yaml"), &bomb).unwrap();
    let mut b = bin::start(dir, CAP_KIB);
    assert_eq!(bin::http(b.proxy, "GET", "/", &[], b"").unwrap().0, 200);
    let (code, status) = bin::http(
        b.admin,
        "GET",
        "/api/v1/status",
        &[("authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["active"]["version"], 1, "{status}");
    assert!(b.alive());
}

// --- item 8: the approvals folder never blocks the gate ----------------------------------

/// A symlink to a FIFO in the approvals folder: the gate reads the folder on every push and
/// every poll. Before the fix the open blocked until something wrote to the FIFO, freezing
/// the gate (pushes, status, audit, reverts). Now the push is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_approvals_folder_does_not_freeze_the_gate() {
    let up = common::Upstream::start("app");
    let s = common::Sluice::builder()
        .traffic(&plain_doc(1, up.addr))
        .start();
    s.wait_version(1);
    let fifo = s.path("a.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(&fifo, s.path("approvals/stuck.jwt")).unwrap();
    let admin = s.admin();
    let auth = format!("Bearer {}", s.inst().admin_token);
    let doc = plain_doc(2, up.addr);
    let pushed = tokio::task::spawn_blocking(move || {
        bin::http(
            admin,
            "PUT",
            "/api/v1/traffic",
            &[("authorization", &auth)],
            doc.as_bytes(),
        )
    });
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(30), pushed).await;
    // Unblock a frozen gate (before the fix) so the test can end either way.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    let pushed = pushed.expect("the push was not answered: the gate is frozen on the FIFO");
    let (code, body) = pushed.unwrap().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("activated"), "{body}");
    s.wait_version(2);
}

// --- raw sockets and in-process upstreams -------------------------------------------------

mod raw {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An application upstream: reads the whole request body, then answers `read <n>`
    /// (as most applications do); counts the connections it accepted.
    pub struct App {
        pub addr: SocketAddr,
        pub conns: Arc<AtomicU64>,
    }

    impl App {
        pub fn start() -> App {
            let conns = Arc::new(AtomicU64::new(0));
            let c = conns.clone();
            let addr = crate::common::spawn_server(move |s| {
                c.fetch_add(1, Ordering::Relaxed);
                async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let n = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes().len(),
                            Err(_) => return Err("body failed"),
                        };
                        Ok(Response::new(Full::new(Bytes::from(format!("read {n}")))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                }
            });
            App { addr, conns }
        }

        pub fn conns(&self) -> u64 {
            self.conns.load(Ordering::Relaxed)
        }
    }

    /// Writes `bytes`, then reads one response head (and a short body); returns the text.
    pub async fn exchange(s: &mut tokio::net::TcpStream, bytes: &[u8]) -> String {
        s.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
                .await
                .expect("no answer within 60 s")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// A sluice on one worker thread, serving `traffic`; rollouts tick by hand (on a manual
/// clock) when `manual_ticks`.
fn start_one_worker(traffic: &str, manual_ticks: bool) -> common::Sluice {
    let b = common::Sluice::builder().traffic(traffic).workers(1);
    if manual_ticks {
        b.manual_ticks().start()
    } else {
        b.start()
    }
}

fn metric(inst: &sluice::instance::Instance, series: &str) -> Option<f64> {
    inst.registry
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// --- item 3: a connection is reused only when both directions are complete ---------------

/// An upstream answers before reading the body (as nginx does for some errors) while the
/// client keeps its upload open. Before the fix the connection went back to the pool when
/// the response ended, and the next request — another user's — waited behind the upload
/// until `request_timeout` (504). Now that connection is closed and the next request gets a
/// fresh one at once; a POST whose body did complete still reuses its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_upload_never_stalls_the_next_request() {
    use tokio::io::AsyncWriteExt;
    let early = common::edge::RawUp::start();
    let app = raw::App::start();
    let doc = format!(
        "version: 1\nchange: {{ id: C1, author: alice }}\n\
         upstreams:\n  early: {{ endpoints: [\"{}\"], request_timeout: 10s }}\n  app: {{ endpoints: [\"{}\"] }}\n\
         routes:\n  - {{ name: app, match: {{ path_prefix: /app }}, to: {{ upstream: app }} }}\n  - {{ name: early, to: {{ upstream: early }} }}\n",
        early.addr, app.addr
    );
    let s = start_one_worker(&doc, false);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    // A: an upload the upstream answers at once; the rest of the body never comes.
    let mut a = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let got = raw::exchange(
        &mut a,
        b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n0123456789",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // B: another user, another connection, the same upstream.
    let started = std::time::Instant::now();
    let mut b = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let got = raw::exchange(&mut b, b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let waited = started.elapsed();
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "the next request waited {waited:?} behind the upload and got:\n{got}"
    );
    assert!(
        waited < std::time::Duration::from_secs(8),
        "waited {waited:?}"
    );
    let _ = a.write_all(b"more").await;
    // Complete bodies: both POSTs go out on one upstream connection.
    let mut c = tokio::net::TcpStream::connect(proxy).await.unwrap();
    for _ in 0..2 {
        let got = raw::exchange(
            &mut c,
            b"POST /app/x HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await;
        assert!(got.contains("read 5"), "{got}");
    }
    let got = raw::exchange(
        &mut c,
        b"POST /app/x HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.contains("read 5"), "{got}");
    assert_eq!(
        app.conns(),
        1,
        "complete requests must keep reusing their connection"
    );
}

// --- item 4: client faults are the client's ---------------------------------------------

/// Sixty uploads with the tester header that the client aborts or garbles, then healthy
/// canary traffic. Before the fix each was a 502 `upstream_reset`: an upstream error, a
/// passive-health failure and a canary error, and the verdict aborted a healthy rollout.
/// Now they are 499/400 client errors, counted in `sluice_client_errors_total{kind}` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_never_fail_a_canary_or_eject_an_endpoint() {
    use tokio::io::AsyncWriteExt;
    let stable = raw::App::start();
    let canary = raw::App::start();
    let doc = format!(
        "version: 1\nchange: {{ id: C1, author: alice }}\n\
         upstreams:\n  stable: {{ endpoints: [\"{}\"] }}\n  canary:\n    endpoints: [\"{}\"]\n    passive_health: {{ consecutive_failures: 3, eject_for: 1h }}\n\
         routes: [{{ name: web, to: {{ rollout: web }} }}]\n\
         rollouts:\n  web:\n    strategy: canary\n    stable: stable\n    canary: canary\n\
         \x20   canary_match: {{ headers: {{ x-canary: always }} }}\n\
         \x20   steps: [{{ weight: 10, hold: 1h }}, {{ weight: 50 }}]\n\
         \x20   analysis: {{ interval: 1s, window: 5m, min_requests: 20, max_error_rate: 0.05 }}\n",
        stable.addr, canary.addr
    );
    let s = start_one_worker(&doc, true);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    for i in 0..60 {
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        if i % 2 == 0 {
            // Aborted: half the announced body, then the client is gone.
            s.write_all(b"POST /up HTTP/1.1\r\nhost: t\r\nx-canary: always\r\ncontent-length: 100\r\n\r\n0123456789")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(s);
        } else {
            // Malformed: a chunk size that is not hex.
            let got = raw::exchange(
                &mut s,
                b"POST /up HTTP/1.1\r\nhost: t\r\nx-canary: always\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            )
            .await;
            assert!(got.starts_with("HTTP/1.1 400"), "{got}");
            assert!(got.contains("client_body_invalid"), "{got}");
        }
    }
    let aborted = "sluice_client_errors_total{kind=\"aborted\"}";
    for _ in 0..200 {
        if metric(inst, aborted) == Some(30.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Healthy canary traffic.
    let mut c = common::Client::connect(proxy).await;
    for _ in 0..30 {
        let r = c.get("/ok", &[("x-canary", "always")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "read 0");
    }
    for _ in 0..3 {
        inst.rollouts.tick_now();
    }
    let status = inst.rollouts.status_json();
    let web = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .unwrap();
    assert_ne!(
        web["phase"], "aborted",
        "a healthy canary was aborted: {web}"
    );
    assert!(
        web["last_verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("passed: canary 0/30"),
        "{web}"
    );
    assert_eq!(metric(inst, aborted), Some(30.0));
    assert_eq!(
        metric(inst, "sluice_client_errors_total{kind=\"malformed\"}"),
        Some(30.0)
    );
    for kind in ["reset", "connect", "timeout"] {
        assert_eq!(
            metric(
                inst,
                &format!("sluice_upstream_errors_total{{upstream=\"canary\",kind=\"{kind}\"}}")
            ),
            Some(0.0),
            "{kind}"
        );
    }
    let snap = inst.shared.snapshot.load_full().unwrap();
    let up = snap
        .upstreams
        .iter()
        .find(|u| &*u.name == "canary")
        .unwrap();
    assert!(
        up.endpoints().iter().all(|e| !e.health.is_ejected()),
        "client faults ejected a healthy endpoint"
    );
}

/// A client that stops sending its body: the upstream waits for it until `request_timeout`.
/// That is 408 `client_timeout`, not a 504 against the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_a_client_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = raw::App::start();
    let doc = format!(
        "version: 1\nchange: {{ id: C1, author: alice }}\n\
         upstreams:\n  app:\n    endpoints: [\"{}\"]\n    request_timeout: 1s\n    passive_health: {{ consecutive_failures: 1, eject_for: 1h }}\n\
         routes: [{{ name: app, to: {{ upstream: app }} }}]\n",
        app.addr
    );
    let s = start_one_worker(&doc, false);
    let inst = s.inst();
    let mut s = tokio::net::TcpStream::connect(inst.listeners[0])
        .await
        .unwrap();
    let got = raw::exchange(
        &mut s,
        b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("client_timeout"), "{got}");
    let _ = s.write_all(b"late").await;
    assert_eq!(
        metric(inst, "sluice_client_errors_total{kind=\"timeout\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            inst,
            "sluice_upstream_errors_total{upstream=\"app\",kind=\"timeout\"}"
        ),
        Some(0.0)
    );
    let r = common::get(inst.listeners[0], "/", &[]).await;
    assert_eq!(r.status, 200, "the endpoint was ejected: {}", r.text());
}

// --- items 5, 6, 7, 12: request hygiene over raw sockets ----------------------------------

/// The JSON an echoing upstream answered (`common::Upstream`), from a raw response.
fn echoed(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"))
}

async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw::exchange(&mut s, req.as_bytes()).await
}

fn two_routes(admin: std::net::SocketAddr, public: std::net::SocketAddr) -> String {
    format!(
        "version: 1\nchange: {{ id: C1, author: alice }}\n\
         upstreams:\n  admin: {{ endpoints: [\"{admin}\"] }}\n  public: {{ endpoints: [\"{public}\"] }}\n\
         routes:\n  - {{ name: admin, match: {{ path_prefix: /admin }}, to: {{ upstream: admin }} }}\n  - {{ name: public, to: {{ upstream: public }} }}\n"
    )
}

/// Item 5: `%2e` is `.` (RFC 3986 §6.2.2.2). Before the fix `/public/%2e%2e/admin` matched
/// the `public` route and reached its upstream as `/public/%2e%2e/admin`, which the upstream
/// resolves to `/admin` — a route sluice never applied. Now it is routed as `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_dot_segments_are_routed_as_dots() {
    let admin = common::Upstream::start("admin");
    let public = common::Upstream::start("public");
    let s = start_one_worker(&two_routes(admin.addr, public.addr), false);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    for path in [
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e%2E/admin/x",
        "/%2e%2e/admin",
    ] {
        let resp = raw_request(proxy, &format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n")).await;
        let v = echoed(&resp);
        assert_eq!(v["name"], "admin", "{path} went to {}", v["name"]);
        assert!(
            v["path"].as_str().unwrap().starts_with("/admin"),
            "{path} forwarded as {}",
            v["path"]
        );
    }
    // `%2F` stays encoded: not a separator.
    let v = echoed(&raw_request(proxy, "GET /public/a%2Fb HTTP/1.1\r\nhost: t\r\n\r\n").await);
    assert_eq!(v["name"], "public");
    assert_eq!(v["path"], "/public/a%2Fb");
    // A dot segment glued to an encoded slash or a backslash is `/admin` to an upstream that
    // decodes `%2F` (or reads `\` as `/`) and not to sluice: it cannot be normalised safely.
    for path in [
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5Cadmin",
    ] {
        let resp = raw_request(proxy, &format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n")).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(resp.contains("invalid_path"), "{path}: {resp}");
    }
    let resp = raw_request(proxy, "GET /public/..\\admin HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "backslash: {resp}");
    assert_eq!(
        metric(inst, "sluice_client_errors_total{kind=\"malformed\"}"),
        Some(4.0)
    );
}

/// Item 6: `x_sluice_flag_beta` reaches CGI/WSGI as `HTTP_X_SLUICE_FLAG_BETA`, sluice's own
/// flag header; `x_forwarded_for` likewise. Before the fix they were forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_sluice_headers_are_removed() {
    let up = common::Upstream::start("app");
    let s = start_one_worker(&plain_doc(1, up.addr), false);
    let inst = s.inst();
    let resp = raw_request(
        inst.listeners[0],
        "GET / HTTP/1.1\r\nhost: t\r\nx_sluice_flag_beta: on\r\nx-sluice_variant: canary\r\nx_forwarded_for: 6.6.6.6\r\nx_forwarded_host: evil\r\nx_user_id: kept\r\n\r\n",
    )
    .await;
    let h = &echoed(&resp)["headers"];
    for gone in [
        "x_sluice_flag_beta",
        "x-sluice_variant",
        "x_forwarded_for",
        "x_forwarded_host",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x_user_id"][0], "kept");
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
}

/// Item 7: an HTTP/1.1 request without Host, or with two, is a 400 (RFC 9112 §3.2); the
/// client's `X-Forwarded-Host` never travels. Before the fix a Host-less request was
/// proxied with the client's `X-Forwarded-Host` intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_once_and_x_forwarded_host_is_ours() {
    let up = common::Upstream::start("app");
    let s = start_one_worker(&plain_doc(1, up.addr), false);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    for req in [
        "GET / HTTP/1.1\r\nx-forwarded-host: evil.example\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
    ] {
        let resp = raw_request(proxy, req).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{req:?}: {resp}");
        assert!(resp.contains("invalid_host"), "{resp}");
    }
    assert_eq!(
        metric(inst, "sluice_client_errors_total{kind=\"malformed\"}"),
        Some(4.0)
    );
    // HTTP/1.0 has no Host requirement; its X-Forwarded-Host is dropped all the same, and
    // the HTTP/1.1 it goes upstream as carries the upstream's own host:port (NGINX's default).
    let v = echoed(
        &raw_request(
            proxy,
            "GET / HTTP/1.0\r\nx-forwarded-host: evil.example\r\n\r\n",
        )
        .await,
    );
    assert!(v["headers"].get("x-forwarded-host").is_none(), "{v}");
    assert_eq!(
        v["headers"]["host"],
        serde_json::json!([up.addr.to_string()]),
        "{v}"
    );
    let v = echoed(
        &raw_request(
            proxy,
            "GET / HTTP/1.1\r\nhost: shop.example\r\nx-forwarded-host: evil.example\r\n\r\n",
        )
        .await,
    );
    assert_eq!(
        v["headers"]["x-forwarded-host"],
        serde_json::json!(["shop.example"])
    );
}

/// Item 12: a GET with a chunked body keeps it (hyper sends no body for a GET of unknown
/// length unless told); CONNECT is refused with 405. Before the fix the upstream read 0
/// bytes, and CONNECT was proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_length_arrive_and_connect_is_refused() {
    let app = raw::App::start();
    let s = start_one_worker(&plain_doc(1, app.addr), false);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    for method in ["GET", "DELETE", "POST"] {
        let resp = raw_request(
            proxy,
            &format!("{method} / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        )
        .await;
        assert!(resp.ends_with("read 5"), "{method}: {resp}");
    }
    let resp = raw_request(
        proxy,
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    assert!(resp.contains("connect_refused"), "{resp}");
}

/// Item 12 over HTTP/2: a request body without content-length arrives, and the `cookie`
/// fields an HTTP/2 client splits are joined with `; ` for the HTTP/1.1 upstream (RFC 9113
/// §8.2.3). Before the fix the body was lost (a GET) and the cookies arrived as two fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_bodies_and_split_cookies_reach_an_http1_upstream() {
    use bytes::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let app = raw::App::start();
    let echo = common::Upstream::start("echo");
    let doc = format!(
        "version: 1\nchange: {{ id: C1, author: alice }}\n\
         upstreams:\n  app: {{ endpoints: [\"{}\"] }}\n  echo: {{ endpoints: [\"{}\"] }}\n\
         routes:\n  - {{ name: echo, match: {{ path_prefix: /e }}, to: {{ upstream: echo }} }}\n  - {{ name: app, to: {{ upstream: app }} }}\n",
        app.addr, echo.addr
    );
    let s = start_one_worker(&doc, false);
    let inst = s.inst();
    let tcp = tokio::net::TcpStream::connect(inst.listeners[0])
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake::<_, _, common::edge::Frames>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // No size hint: HTTP/2 DATA frames without content-length.
    let body = common::edge::Frames::new(vec![hyper::body::Frame::data(Bytes::from("hello"))]);
    let req = http::Request::get("http://t/x").body(body).unwrap();
    let resp = common::collect(tx.send_request(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!(resp.text(), "read 5");
    let req = http::Request::get("http://t/e/x")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(common::edge::Frames::new(Vec::new()))
        .unwrap();
    let resp = common::collect(tx.send_request(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.json()["headers"]["cookie"],
        serde_json::json!(["a=1; b=2"])
    );
}

// --- item 10: tunnels -----------------------------------------------------------------------

/// An upstream that switches to `websocket` (then echoes raw bytes) and answers anything
/// else with 200 `plain`.
fn ws_upstream() -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    common::spawn_server(|s| async move {
        let svc = service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
            let mut r = http::Response::new(Full::new(Bytes::from("plain")));
            if let Some(p) = req.headers().get("upgrade").cloned() {
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(up) = on.await {
                        let mut io = TokioIo::new(up);
                        let (mut r, mut w) = tokio::io::split(&mut io);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
                *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                *r.body_mut() = Full::new(Bytes::new());
                r.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
                r.headers_mut().insert("upgrade", p);
            }
            Ok::<_, std::convert::Infallible>(r)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .with_upgrades()
            .await;
    })
}

/// Item 10: a WebSocket tunnel counts as a connection (`max_connections`,
/// `sluice_active_connections`) for as long as it lives; an `Upgrade` to any protocol not in
/// `limits.upgrades` (default: websocket) — `h2c` above all — is not tunnelled. Before the
/// fix tunnels escaped both counts, and any protocol was switched to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_counted_and_only_websocket_is_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = ws_upstream();
    let s = common::Sluice::builder()
        .traffic(&plain_doc(1, up))
        .workers(1)
        .limits("max_connections: 1")
        .start();
    let inst = s.inst();
    let proxy = inst.listeners[0];
    for proto in ["h2c", "echo"] {
        let resp = raw_request(
            proxy,
            &format!(
                "GET / HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: {proto}\r\n\r\n"
            ),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with("plain"),
            "{proto}: {resp}"
        );
    }
    let mut ws = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let resp = raw::exchange(
        &mut ws,
        b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    ws.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(std::time::Duration::from_secs(10), ws.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    let gauge = "sluice_active_connections{listener=\"public\"}";
    assert_eq!(
        metric(inst, gauge),
        Some(1.0),
        "the tunnel is one connection"
    );
    // max_connections is 1 and the tunnel holds it: another client is turned away.
    let mut other = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let _ = other.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (got, closed) =
        common::edge::read_to_close(&mut other, std::time::Duration::from_secs(10)).await;
    assert!(
        closed && got.is_empty(),
        "served past max_connections: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(ws);
    for _ in 0..200 {
        if metric(inst, gauge) == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(inst, gauge),
        Some(0.0),
        "a closed tunnel is no connection"
    );
    // h2c can never be allowed.
    let bad = common::Sluice::builder()
        .workers(1)
        .limits("upgrades: [websocket, h2c]")
        .settings_yaml();
    let e = sluice::config::Settings::parse(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("limits.upgrades[1]") && e.contains("h2c"), "{e}");
}

// --- item 13: validate runs the gate's checks ---------------------------------------------

/// Item 13: a document the gate refuses is refused by `sluice validate` too — a flag key
/// longer than a header name may be on a `["*"]` route, and an upstream CA file that does
/// not exist. Before the fix `validate` said "valid" (exit 0) to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_what_the_gate_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let long_key = "k".repeat(66_000);
    let docs = [
        (
            "long flag key",
            format!(
                "version: 2\nchange: {{ id: C2, author: alice }}\n\
                 upstreams: {{ app: {{ endpoints: [\"127.0.0.1:9\"] }} }}\n\
                 routes: [{{ name: all, to: {{ upstream: app }}, flags: [\"*\"] }}]\n\
                 flags:\n  ? {long_key}\n  : {{ state: ENABLED, variants: {{ a: true }}, defaultVariant: a }}\n"
            ),
            "routes[0].flags[0]",
        ),
        (
            "missing CA file",
            "version: 2\nchange: { id: C2, author: alice }\n\
             upstreams: { app: { endpoints: [\"127.0.0.1:9\"], tls: { ca_file: /nonexistent/ca.pem } } }\n\
             routes: [{ name: all, to: { upstream: app } }]\n"
                .to_string(),
            "upstreams.app.tls",
        ),
    ];
    let up = common::Upstream::start("app");
    let s = common::Sluice::builder()
        .traffic(&plain_doc(1, up.addr))
        .start();
    s.wait_version(1);
    let auth = format!("Bearer {}", s.inst().admin_token);
    for (what, doc, path) in docs {
        let file = dir.join("doc.yaml");
        std::fs::write(&file, &doc).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["validate", "-c", "/nonexistent/sluice.yaml"])
            .arg(&file)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{what}: validate said:\n{text}");
        assert!(text.contains(path), "{what}: {text}");
        let admin = s.admin();
        let auth = auth.clone();
        let pushed = tokio::task::spawn_blocking(move || {
            bin::http(
                admin,
                "PUT",
                "/api/v1/traffic",
                &[("authorization", &auth)],
                doc.as_bytes(),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(pushed.0, 400, "{what}: the gate said {}", pushed.1);
        assert!(pushed.1.contains("invalid_document"), "{}", pushed.1);
    }
}

// --- item 11: a kept-alive upstream connection closed under a request ----------------------

/// An upstream that answers the first request of each connection (keep-alive, no
/// `Connection: close`) and closes the connection unanswered when the next one arrives: the
/// keep-alive race, every time. Logs each request line it read, and whether it dropped it.
type DropLog = std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>;

fn closes_after_one() -> (std::net::SocketAddr, DropLog) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log: DropLog = Default::default();
    let l = log.clone();
    let addr = common::spawn_server(move |mut s| {
        let log = l.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            for first in [true, false] {
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push((line, !first));
                if !first {
                    return; // closed under the request, unanswered
                }
                let len: usize = head
                    .to_ascii_lowercase()
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + len);
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    (addr, log)
}

/// Item 11: an upstream closes each kept-alive connection as sluice reuses it. Once the
/// endpoint has shown it (the first such request fails: nothing was kept to send again),
/// every GET caught that way is sent again on a fresh connection — without `retries` on the
/// route — and answered 200; a POST, or a PUT with a body, is never sent twice (502), as
/// RFC 9112 §9.3.1 requires. Before the fix every GET caught by the race got 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_kept_alive_connection_resends_only_what_is_safe() {
    let (up, log) = closes_after_one();
    let s = start_one_worker(&plain_doc(1, up), false);
    let inst = s.inst();
    let proxy = inst.listeners[0];
    let count = |line: &str, dropped_only: bool| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(l, d)| l.starts_with(line) && (*d || !dropped_only))
            .count()
    };
    // Each request either opens a connection (answered) or reuses the one a previous request
    // left in the pool (closed under it). Each kind is sent until the race caught it; the
    // GET until it was caught after the endpoint's first stale close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut stale_seen, mut get_resent, mut post, mut put) = (false, false, false, false);
    for i in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "the race never caught every kind: {:?}",
            log.lock().unwrap()
        );
        let (req, line) = if !get_resent {
            (
                format!("GET /get-{i} HTTP/1.1\r\nhost: t\r\n\r\n"),
                format!("GET /get-{i} "),
            )
        } else if !post {
            (
                format!("POST /post-{i} HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\nx"),
                format!("POST /post-{i} "),
            )
        } else if !put {
            (
                format!("PUT /put-{i} HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\nx"),
                format!("PUT /put-{i} "),
            )
        } else {
            break;
        };
        let resp = raw_request(proxy, &req).await;
        if count(&line, true) == 0 {
            assert!(resp.starts_with("HTTP/1.1 200"), "{line}: {resp}");
            continue;
        }
        if !stale_seen {
            // The endpoint's first stale close: nothing was kept to send again.
            stale_seen = true;
            assert!(resp.starts_with("HTTP/1.1 502"), "{line}: {resp}");
            assert_eq!(count(&line, false), 1, "{line}");
        } else if line.starts_with("GET") {
            assert!(
                resp.starts_with("HTTP/1.1 200"),
                "{line} was not sent again: {resp}"
            );
            assert_eq!(count(&line, false), 2, "{line}");
            get_resent = true;
        } else {
            assert!(resp.starts_with("HTTP/1.1 502"), "{line}: {resp}");
            assert_eq!(count(&line, false), 1, "{line} was sent twice");
            if line.starts_with("POST") {
                post = true;
            } else {
                put = true;
            }
        }
    }
}

// --- item 9: series go with the names they label -----------------------------------------

/// The distinct non-empty values of `label` in the exposition.
fn label_values(
    inst: &sluice::instance::Instance,
    label: &str,
) -> std::collections::BTreeSet<String> {
    let pat = format!("{label}=\"");
    inst.registry
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let at = l.find(&pat)? + pat.len();
            Some(l[at..at + l[at..].find('"')?].to_string())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// Item 9: when a document replaces another, the series of routes, upstreams and rollouts
/// it no longer names are removed — a removed rollout's phase series included — so that
/// `/metrics` stays bounded by the active document however many documents came before.
/// Before the fix every name ever activated kept its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_series_go_with_the_names_they_label() {
    let v1 = common::Upstream::start("v1");
    let v2 = common::Upstream::start("v2");
    let s = common::Sluice::builder()
        .traffic(&common::traffic(1, v1.addr, v2.addr, "[{ weight: 50 }]"))
        .start();
    s.wait_version(1);
    for path in ["/api/x", "/"] {
        assert_eq!(common::get(s.proxy(), path, &[]).await.status, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.inst().registry.render().contains("sluice_rollout_phase{") {
        assert!(std::time::Instant::now() < deadline, "no phase series");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        label_values(s.inst(), "rollout"),
        ["web".to_string()].into()
    );
    // Generations of differently named routes and upstreams, each replacing the last.
    for g in 2..=4u64 {
        let doc = format!(
            "version: {g}\nchange: {{ id: C{g}, author: alice }}\n\
             upstreams: {{ up{g}: {{ endpoints: [\"{}\"] }} }}\n\
             routes:\n  - {{ name: a{g}, match: {{ path_prefix: /a }}, to: {{ upstream: up{g} }} }}\n  - {{ name: b{g}, to: {{ upstream: up{g} }} }}\n",
            v1.addr
        );
        s.write_traffic(&doc);
        s.wait_version(g);
        for path in ["/a", "/b"] {
            assert_eq!(common::get(s.proxy(), path, &[]).await.status, 200);
        }
        let routes = label_values(s.inst(), "route");
        assert_eq!(
            routes,
            [format!("a{g}"), format!("b{g}")].into(),
            "generation {g}"
        );
        assert_eq!(
            label_values(s.inst(), "upstream"),
            [format!("up{g}")].into()
        );
        // The rollout is gone, and so are its weight, phase and verdict series.
        let left = label_values(s.inst(), "rollout");
        assert!(left.is_empty(), "generation {g}: {left:?}");
    }
}
