//! Limits and abuse over raw sockets: slowloris, `max_connections`, and ambiguous framing
//! (SPEC §9) against an upstream that records every byte it receives.

mod common;

use std::time::{Duration, Instant};

use common::edge::{RawUp, read_to_close};
use tokio::io::AsyncWriteExt;

fn doc(up: std::net::SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  raw: {{ endpoints: ["{up}"] }}
routes:
  - {{ name: all, to: {{ upstream: raw }} }}
"#
    )
}

fn start(up: &RawUp, limits: &str) -> common::Sluice {
    common::Sluice::builder()
        .traffic(&doc(up.addr))
        .limits(limits)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_by_header_read_timeout() {
    let up = RawUp::start();
    let s = start(&up, "header_read_timeout: 1s");
    let mut c = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    // One header line every 200 ms, for up to 30 s: the head never completes.
    let started = Instant::now();
    let mut cut = false;
    for i in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.write_all(format!("x-drip-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut b = [0u8; 256];
        // Anything readable (a 408, end of stream, a reset) means the server gave up on us.
        if tokio::time::timeout(Duration::from_millis(1), c.peek(&mut b))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a dripping client kept its connection for {:?}",
        started.elapsed()
    );
    let (_, closed) = read_to_close(&mut c, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(
        !up.received().contains("x-drip"),
        "a partial head reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_ends_after_header_read_timeout() {
    let up = RawUp::start();
    let s = start(&up, "header_read_timeout: 1s");
    let mut c = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    c.write_all(b"GET /once HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The response arrives, then the idle connection is closed by the server.
    let (got, closed) = read_to_close(&mut c, Duration::from_secs(20)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed, "an idle keep-alive connection was never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_ones() {
    let up = RawUp::start();
    let s = start(&up, "max_connections: 2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
        c.write_all(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut c, &mut b),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(b[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut extra = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    let _ = extra
        .write_all(b"GET /extra HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let (got, closed) = read_to_close(&mut extra, Duration::from_secs(10)).await;
    assert!(
        closed && got.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Closing one frees a slot.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
        let _ = c
            .write_all(b"GET /again HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await;
        let (got, _) = read_to_close(&mut c, Duration::from_secs(10)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            ok = true;
            break;
        }
    }
    assert!(ok);
    assert!(!up.received().contains("/extra"));
}

/// Sends `raw` on a fresh connection, reads until close; returns the responses' status lines.
async fn exchange(s: &common::Sluice, raw: &[u8]) -> (Vec<String>, bool) {
    let mut c = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    let _ = c.write_all(raw).await;
    let (got, closed) = read_to_close(&mut c, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    // Status lines, wherever they start (a body without a trailing CRLF may precede one).
    let statuses = text
        .match_indices("HTTP/1.")
        .map(|(i, _)| text[i..].lines().next().unwrap_or("").to_string())
        .collect();
    (statuses, closed)
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_never_desyncs() {
    let up = RawUp::start();
    let s = start(&up, "header_read_timeout: 5s");
    let cases: [(&str, String); 5] = [
        (
            "content-length with transfer-encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "transfer-encoding before content-length",
            format!(
                "POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "conflicting content-lengths",
            format!(
                "POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\nhello{SMUGGLED}"
            ),
        ),
        (
            "invalid chunk size",
            format!(
                "POST /d HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "chunked not last",
            format!(
                "POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ];
    for (what, raw) in cases {
        let (statuses, closed) = exchange(&s, raw.as_bytes()).await;
        assert!(statuses.len() <= 1, "{what}: {statuses:?}");
        assert!(closed, "{what}: the connection stayed open");
        let got = up.received();
        assert!(
            !got.contains("/smuggled"),
            "{what}: smuggled request reached the upstream:\n{got}"
        );
    }
    // The sane request on the same listener still works, and pipelining is honoured.
    let (statuses, _) = exchange(
        &s,
        b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nGET /ok2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses.len(), 2, "{statuses:?}");
}
