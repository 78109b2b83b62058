//! One full proxied request in-process, on one current-thread runtime: a client on an
//! in-memory pipe → sluice's HTTP/1 connection and per-request service (the code a
//! listener runs for each accepted connection) → its upstream pool → an upstream task on
//! loopback that answers every request with the same 7 bytes.
//!
//! Shared by `benches/proxy.rs` (criterion: time per request) and `tests/alloc_count.rs`
//! (allocations per request, with a ceiling). The client and the upstream are raw byte
//! loops over fixed buffers: they allocate nothing per request, so what is counted or
//! timed above the kernel's loopback is sluice's.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sluice::config::Settings;
use sluice::instance::{Instance, StartOptions};
use sluice::proxy::server;
use sluice::proxy::service::ConnInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

/// A 90/10 canary rollout sticky on `x-user-id` (the load comparison's `bench/traffic.yaml`).
pub const PLAIN: &str = "version: 1
change: { id: BENCH-1, author: bench, summary: in-process }
upstreams:
  stable: { endpoints: [\"UP\"] }
  canary: { endpoints: [\"UP\"] }
routes:
  - name: bench
    to: { rollout: bench }
rollouts:
  bench:
    strategy: canary
    stable: stable
    canary: canary
    sticky: { header: x-user-id }
    steps: [{ weight: 10 }]
";

/// The same with three SDK-less flags on the route (`bench/traffic-flags.yaml`).
pub const FLAGS: &str = "version: 1
change: { id: BENCH-2, author: bench, summary: in-process with flags }
upstreams:
  stable: { endpoints: [\"UP\"] }
  canary: { endpoints: [\"UP\"] }
routes:
  - name: bench
    to: { rollout: bench }
    flags: [theme, new-checkout, plan-banner]
rollouts:
  bench:
    strategy: canary
    stable: stable
    canary: canary
    sticky: { header: x-user-id }
    steps: [{ weight: 10 }]
flag_context:
  targeting_key: [{ header: x-user-id }]
  attributes:
    email: { header: x-user-email }
    country: { header: x-country }
    path: { request: path }
flags:
  theme:
    state: ENABLED
    variants: { light: \"light\", dark: \"dark\" }
    defaultVariant: light
  new-checkout:
    state: ENABLED
    variants: { \"on\": true, \"off\": false }
    defaultVariant: \"off\"
    targeting: { fractional: [[\"on\", 10], [\"off\", 90]] }
  plan-banner:
    state: ENABLED
    variants: { staff: \"staff\", beta: \"beta\", eu: \"eu\", deep: \"deep\", vip: \"vip\", none: \"none\" }
    defaultVariant: none
    targeting:
      \"if\":
        - { ends_with: [{ var: email }, \"@example.com\"] }
        - staff
        - { starts_with: [{ var: targetingKey }, \"user-99\"] }
        - beta
        - { in: [{ var: country }, [\"DE\", \"FR\", \"NL\"]] }
        - eu
        - { starts_with: [{ var: path }, \"/deep\"] }
        - deep
        - { \"==\": [{ var: targetingKey }, \"user-42\"] }
        - vip
        - null
";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nstable\n";
/// Distinct sticky keys the client cycles through (both sides of the split get traffic).
const USERS: usize = 100;

/// A sluice instance, an upstream and one keep-alive client connection on one runtime.
pub struct InProc {
    /// The runtime everything runs on (the calling thread).
    pub rt: tokio::runtime::Runtime,
    client: Client,
    _shutdown: sluice::shutdown::Stop,
    instance: Option<Instance>,
    _dir: tempfile::TempDir,
}

/// The client side of the pipe, with its requests rendered once.
struct Client {
    io: DuplexStream,
    requests: Vec<Vec<u8>>,
    next: usize,
    buf: Box<[u8; 16 * 1024]>,
}

// === impl InProc ===

impl InProc {
    /// Starts sluice with `traffic` (`UP` stands for the upstream's address).
    pub fn start(traffic: &str) -> InProc {
        InProc::start_with(traffic, "")
    }

    /// [`start`](Self::start) with `extra` lines of `sluice.yaml` (`tracing: ...`).
    pub fn start_with(traffic: &str, extra: &str) -> InProc {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the upstream");
        let up: SocketAddr = listener.local_addr().expect("upstream address");
        rt.spawn(upstream(listener));

        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("approvals")).expect("approvals dir");
        std::fs::write(
            d.join("traffic.yaml"),
            traffic.replace("UP", &up.to_string()),
        )
        .expect("traffic.yaml");
        let settings = format!(
            "listeners: [{{ name: public, bind: \"127.0.0.1:0\" }}]\n\
             admin: {{ bind: \"127.0.0.1:0\" }}\n\
             runtime: {{ workers: 1 }}\n\
             paths: {{ traffic: \"{d}/traffic.yaml\", approvals: \"{d}/approvals\", state_dir: \"{d}/state\" }}\n\
             trust: {{ require_approvals: false }}\n{extra}",
            d = d.display()
        );
        let settings = Settings::parse(&settings).expect("settings");
        let opts = StartOptions {
            manual_rollout_ticks: true,
            ..StartOptions::default()
        };
        let instance = Instance::start(settings, opts).expect("sluice starts");
        for _ in 0..400 {
            if instance.shared.snapshot.load().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(
            instance.shared.snapshot.load().is_some(),
            "traffic.yaml did not activate"
        );

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = sluice::shutdown::channel();
        let info = ConnInfo {
            listener: 0,
            peer: "127.0.0.1:40000".parse().expect("address"),
            tls: false,
            client_cert: None,
        };
        rt.spawn(server::serve_h1(
            server_io,
            info,
            instance.shared.clone(),
            rx,
        ));
        let requests = (0..USERS)
            .map(|i| {
                format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:9400\r\nx-user-id: user-{i}\r\n\r\n")
                    .into_bytes()
            })
            .collect();
        InProc {
            rt,
            client: Client {
                io: client_io,
                requests,
                next: 0,
                buf: Box::new([0; 16 * 1024]),
            },
            _shutdown: tx,
            instance: Some(instance),
            _dir: dir,
        }
    }

    /// Sends `n` requests one after the other, each read to its end; panics on a non-200.
    pub fn run(&mut self, n: usize) {
        let InProc { rt, client, .. } = self;
        rt.block_on(async {
            for _ in 0..n {
                let status = client.round_trip().await.expect("round trip");
                assert_eq!(status, 200, "proxied request failed");
            }
        });
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(i) = self.instance.take() {
            i.shutdown();
        }
    }
}

// === impl Client ===

impl Client {
    /// Writes one request and reads its response (head and `content-length` body).
    async fn round_trip(&mut self) -> std::io::Result<u16> {
        let req = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        self.io.write_all(req).await?;
        let mut have = 0;
        loop {
            let n = self.io.read(&mut self.buf[have..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
            let got = &self.buf[..have];
            if let Some(end) = find(got, b"\r\n\r\n") {
                let head = &got[..end];
                if have >= end + 4 + content_length(head) {
                    let status = std::str::from_utf8(&head[9..12])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    return Ok(status);
                }
            }
        }
    }
}

/// Where `\r\n\r\n` starts in `hay` (a scan by line feed: cheap next to what is measured).
fn find(hay: &[u8], _needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == b'\n') {
        let at = from + i;
        if at >= 3 && &hay[at - 3..=at] == b"\r\n\r\n" {
            return Some(at - 3);
        }
        from = at + 1;
    }
    None
}

fn content_length(head: &[u8]) -> usize {
    head.split(|b| *b == b'\n')
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (name, value) = line.split_at(line.iter().position(|b| *b == b':')?);
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// Answers every request head with [`RESPONSE`]; requests carry no body.
async fn upstream(l: TcpListener) {
    while let Ok((s, _)) = l.accept().await {
        let _ = s.set_nodelay(true);
        tokio::spawn(serve_raw(s));
    }
}

async fn serve_raw(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    loop {
        let n = match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        while let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            if s.write_all(RESPONSE).await.is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
    }
}
