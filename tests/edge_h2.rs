//! HTTP/2 downstream (h2c prior knowledge), one canonical authority, gRPC trailers, Rapid
//! Reset and CONTINUATION floods, the HTTP/2 idle timeout, WebSocket-style upgrades, and
//! the access log — over real sockets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::edge::{H2, MiniUp, get, read_to_close};
use common::{Sluice, Upstream};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn doc(a: std::net::SocketAddr, b: std::net::SocketAddr, grpc: std::net::SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
  grpc: {{ endpoints: ["{grpc}"], protocol: h2c }}
routes:
  - {{ name: grpc, match: {{ path_prefix: /pkg.Svc }}, to: {{ upstream: grpc }} }}
  - {{ name: by-a, match: {{ host: a.example }}, to: {{ upstream: a }} }}
  - {{ name: by-b, match: {{ host: b.example }}, to: {{ upstream: b }} }}
"#
    )
}

async fn h2c(addr: std::net::SocketAddr) -> H2 {
    H2::over(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_one_canonical_authority() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let s = Sluice::builder()
        .traffic(&doc(a.addr, b.addr, g.addr))
        .start();

    // HTTP/2: :authority wins over a disagreeing Host header.
    let mut c = h2c(s.proxy()).await;
    let r = c
        .send(get("http://a.example/x", &[("host", "b.example")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["name"], "a");
    assert_eq!(j["headers"]["x-sluice-route"][0], "by-a");
    assert_eq!(j["headers"]["host"], serde_json::json!(["a.example"]));
    assert_eq!(j["headers"]["x-forwarded-host"][0], "a.example");

    // HTTP/1.1 absolute form: the URI's authority wins over Host, and the upstream sees one Host.
    let mut raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    raw.write_all(
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (got, _) = read_to_close(&mut raw, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(j["name"], "a", "{text}");
    assert_eq!(j["headers"]["host"], serde_json::json!(["a.example"]));
    assert_eq!(j["path"], "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_and_te_pass_through() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let s = Sluice::builder()
        .traffic(&doc(a.addr, b.addr, g.addr))
        .start();
    let mut c = h2c(s.proxy()).await;
    let req = http::Request::post("http://a.example/pkg.Svc/grpc")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    c.tx.ready().await.unwrap();
    let resp = c.tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(
        &collected.to_bytes()[..],
        b"te=trailers",
        "te: trailers reaches the upstream"
    );
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET / for `a.example` in HPACK: static-table method, scheme, path; literal authority.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 9];
    b.extend_from_slice(b"a.example");
    b
}

/// Reads frames until the connection closes; returns the GOAWAY error code if one came.
async fn goaway(s: &mut tokio::net::TcpStream, limit: Duration) -> (Option<u32>, bool) {
    let (got, closed) = read_to_close(s, limit).await;
    let mut i = 0;
    let mut code = None;
    while i + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[i], got[i + 1], got[i + 2]]) as usize;
        if got[i + 3] == 0x7 && i + 9 + 8 <= got.len() {
            let p = &got[i + 9..];
            code = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        i += 9 + len;
    }
    (code, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_loses_the_connection() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let s = Sluice::builder()
        .traffic(&doc(a.addr, b.addr, g.addr))
        .start();
    let mut raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    let mut out = edge_preface();
    let n = 2000u32;
    for i in 0..n {
        let id = 2 * i + 1;
        out.extend(frame(0x1, 0x4 | 0x1, id, &get_block()));
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = raw.write_all(&out).await;
    let (code, closed) = goaway(&mut raw, Duration::from_secs(20)).await;
    assert!(closed, "the connection survived a reset flood");
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    let hits = a.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        hits < u64::from(n / 2),
        "{hits} of {n} reset requests reached the upstream"
    );
}

fn edge_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_bounded_by_max_header_bytes() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let doc = doc(a.addr, b.addr, g.addr);
    let s = Sluice::builder()
        .traffic(&doc)
        .limits("max_header_bytes: 16384")
        .start();
    let raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    let (mut rd, mut wr) = raw.into_split();
    // One header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs
    // of literal headers, up to 8 MiB.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        let _ = wr.write_all(&edge_preface()).await;
        if wr
            .write_all(&frame(0x1, 0x1, 1, &get_block()))
            .await
            .is_err()
        {
            return sent;
        }
        let mut lit = Vec::new();
        while lit.len() < 16_000 {
            lit.extend_from_slice(&[0x00, 3]);
            lit.extend_from_slice(b"x-a");
            lit.push(120);
            lit.extend(std::iter::repeat_n(b'v', 120));
        }
        let f = frame(0x9, 0, 1, &lit);
        while sent < 8 << 20 {
            if wr.write_all(&f).await.is_err() {
                return sent;
            }
            sent += f.len();
        }
        sent
    });
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    assert!(closed, "the server kept reading an endless header block");
    let sent = writer.await.unwrap();
    assert!(
        sent < 8 << 20,
        "all 8 MiB of CONTINUATION frames were accepted"
    );
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_list_limit_and_idle_timeout() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let doc = doc(a.addr, b.addr, g.addr);
    let s = Sluice::builder()
        .traffic(&doc)
        .limits("max_header_bytes: 8192, idle_timeout: 1s")
        .start();
    let mut c = h2c(s.proxy()).await;
    let big = "v".repeat(10_000);
    let r = c.send(get("http://a.example/x", &[("x-big", &big)])).await;
    assert!(
        r.as_ref().map(|r| r.status != 200).unwrap_or(true),
        "a header list over max_header_bytes was served"
    );
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::Relaxed), 0);

    let mut c = h2c(s.proxy()).await;
    assert_eq!(
        c.send(get("http://a.example/x", &[])).await.unwrap().status,
        200
    );
    // Idle for idle_timeout: the server says GOAWAY and the connection ends.
    tokio::time::timeout(Duration::from_secs(20), &mut c.done)
        .await
        .expect("an idle HTTP/2 connection was never closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_through_only_after_101() {
    let (a, b, g) = (
        MiniUp::start("ws", None),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    // Only `limits.upgrades` protocols are tunnelled (default `websocket`): `echo` is allowed here.
    let s = Sluice::builder()
        .traffic(&doc(a.addr, b.addr, g.addr))
        .limits("upgrades: [websocket, echo]")
        .start();

    let mut raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second message"] {
        raw.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), raw.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }

    // An upstream that does not switch: an ordinary response, and the connection stays HTTP.
    let mut raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    raw.write_all(
        b"GET /x HTTP/1.1\r\nHost: b.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    raw.read_exact(&mut body).await.unwrap();
    raw.write_all(b"GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("no response head")
            .unwrap();
        assert!(
            n == 1,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines() {
    let (a, b, g) = (
        Upstream::start("a"),
        Upstream::start("b"),
        MiniUp::start("g", None),
    );
    let doc = doc(a.addr, b.addr, g.addr);
    let sb = Sluice::builder();
    let access_log = format!(
        "access_log: {{ enabled: true, path: \"{}/access.log\" }}\n",
        sb.dir().display()
    );
    let s = sb.traffic(&doc).settings(&access_log).start();
    let mut c = h2c(s.proxy()).await;
    assert_eq!(
        c.send(get("http://a.example/x", &[])).await.unwrap().status,
        200
    );
    assert_eq!(
        c.send(get("http://nowhere.example/y", &[]))
            .await
            .unwrap()
            .status,
        404
    );
    let path = s.path("access.log");
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["route"], "by-a");
    assert_eq!(l["upstream"], "a");
    assert_eq!(l["variant"], "a");
    assert_eq!(l["status"], 200);
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/x");
    assert_eq!(l["flags"], "");
    assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(l["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["error"], "no_route");
}

/// An HTTP/2 stream's upstream attempt past `request_timeout` answers 504 and counts a
/// timeout (the connection's one timer for its streams' deadlines, `deadline::StreamClock`),
/// while a stream on the same connection that answers in time is unaffected, and a later
/// stream's deadline still fires after the timer re-armed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upstream_timeout_per_stream() {
    let live = Upstream::start("live");
    let doc = format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  live: {{ endpoints: ["{live}"], request_timeout: 300ms }}
routes:
  - {{ name: slow, match: {{ path_prefix: / }}, to: {{ upstream: live }} }}
"#,
        live = live.addr
    );
    let s = Sluice::builder().traffic(&doc).start();
    let mut c = h2c(s.proxy()).await;
    let mut c2 = H2 {
        tx: c.tx.clone(),
        done: tokio::spawn(async {}),
    };
    let slow = get("http://a.example/sleep?ms=5000", &[]);
    let fast = get("http://a.example/x", &[]);
    let (r_slow, r_fast) = tokio::join!(c.send(slow), c2.send(fast));
    let (r_slow, r_fast) = (r_slow.unwrap(), r_fast.unwrap());
    assert_eq!(r_fast.status, 200);
    assert_eq!(r_slow.status, 504);
    assert_eq!(r_slow.headers["x-sluice-error"], "upstream_timeout");

    let r = c
        .send(get("http://a.example/sleep?ms=5000", &[]))
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.headers["x-sluice-error"], "upstream_timeout");

    let m = common::get(s.admin(), "/metrics", &[]).await.text();
    assert!(
        m.contains("sluice_upstream_errors_total{upstream=\"live\",kind=\"timeout\"} 2"),
        "{m}"
    );
}
