//! Retries (conditions, idempotence, budget) and endpoint health (passive ejection, active
//! probes, panic mode) over real sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::MiniUp;
use common::{Client, Sluice, refusing_addr};
use http::Request;
use http_body_util::Full;

fn doc(upstreams: &str, retries: &str) -> String {
    format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
{upstreams}
routes:
  - {{ name: r, to: {{ upstream: pool }}, retries: {retries} }}
"#
    )
}

async fn post(c: &mut Client, body: &'static str) -> common::Reply {
    c.send(
        Request::post("/x")
            .header("host", "t")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_for_any_method_with_its_body() {
    let live = MiniUp::start("live", None);
    let (_dead_guard, dead) = refusing_addr();
    let s = Sluice::builder()
        .traffic(&doc(
            &format!(
                "  pool: {{ endpoints: [\"{}\", \"{}\"], connect_timeout: 500ms }}",
                dead, live.addr
            ),
            "{ attempts: 1, on: [connect_failure] }",
        ))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    for _ in 0..10 {
        let r = post(&mut c, "payload").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["method"], "POST");
    }
    assert_eq!(live.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_503_is_retried_for_idempotent_bodiless_requests_only() {
    let bad = MiniUp::start("bad", None);
    bad.state.status.store(503, Ordering::Relaxed);
    let good = MiniUp::start("good", None);
    let s = Sluice::builder()
        .traffic(&doc(
            &format!(
                "  pool: {{ endpoints: [\"{}\", \"{}\"] }}",
                bad.addr, good.addr
            ),
            "{ attempts: 1, on: [status_503] }",
        ))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    for _ in 0..10 {
        let r = c.get("/x", &[]).await;
        assert_eq!(r.status, 200, "{:?} {}", r.headers, r.text());
        assert_eq!(r.json()["name"], "good");
    }
    // POST is not idempotent: a 503 goes back to the client as it is.
    let mut seen_503 = 0;
    for _ in 0..10 {
        if post(&mut c, "x").await.status == 503 {
            seen_503 += 1;
        }
    }
    assert!(seen_503 > 0, "POSTs were retried");
    // Round robin sends about half of them to the 503 endpoint; a retried POST would
    // have reached the good one and answered 200.
    assert!(seen_503 < 10, "round robin never reached the good endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_amplification() {
    let bad = MiniUp::start("bad", None);
    bad.state.status.store(503, Ordering::Relaxed);
    let s = Sluice::builder()
        .traffic(&doc(
            &format!("  pool: {{ endpoints: [\"{}\"] }}", bad.addr),
            "{ attempts: 5, on: [status_503] }",
        ))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    let started = Instant::now();
    let n = 200u64;
    for _ in 0..n {
        assert_eq!(c.get("/x", &[]).await.status, 503);
    }
    let secs = started.elapsed().as_secs() + 1;
    let hits = bad.hits();
    let retries = hits - n;
    // Without a budget: 5 retries each (1000). With it: the initial capacity, 20% of
    // requests, and 10 a second.
    let bound = sluice::proxy::retry::CAPACITY as u64
        + n / 5
        + secs * sluice::proxy::retry::REFILL_PER_SEC as u64;
    assert!(retries > 0, "nothing was retried");
    assert!(
        retries <= bound,
        "{retries} retries for {n} requests (bound {bound})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_and_panic_mode_keeps_routing() {
    let live = MiniUp::start("live", None);
    let (_d_guard, d) = refusing_addr();
    let (_d2_guard, d2) = refusing_addr();
    let s = Sluice::builder().traffic(&doc(
        &format!(
            "  pool: {{ endpoints: [\"{d}\", \"{}\"], connect_timeout: 500ms, passive_health: {{ consecutive_failures: 2, eject_for: 60s }} }}\n  \
             dead-pool: {{ endpoints: [\"{d}\", \"{}\"], passive_health: {{ consecutive_failures: 1, eject_for: 60s }} }}",
            live.addr,
            d2
        ),
        "{ attempts: 0 }",
    )
    .replace(
        "routes:\n",
        "routes:\n  - { name: all-dead, match: { path_prefix: /dead }, to: { upstream: dead-pool } }\n",
    )).start();
    let mut c = Client::connect(s.proxy()).await;
    let mut failures = 0;
    for _ in 0..30 {
        match c.get("/x", &[]).await.status.as_u16() {
            200 => {}
            502 => failures += 1,
            other => panic!("status {other}"),
        }
    }
    // Two failures eject the dead endpoint; everything after goes to the live one.
    assert_eq!(failures, 2);
    assert_eq!(live.hits(), 28);

    // A pool whose endpoints are all ejected routes across all of them (panic mode): the
    // answer is the real failure, never 503 no_healthy_endpoint.
    for _ in 0..6 {
        let r = c.get("/dead", &[]).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.headers["x-sluice-error"], "upstream_connect");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_takes_endpoints_out_and_back() {
    let a = MiniUp::start("a", None);
    let b = MiniUp::start("b", None);
    let s = Sluice::builder().traffic(&doc(
        &format!(
            "  pool: {{ endpoints: [\"{}\", \"{}\"], active_health: {{ path: /healthz, interval: 100ms, unhealthy_after: 2, healthy_after: 2 }} }}",
            a.addr, b.addr
        ),
        "{ attempts: 0 }",
    )).start();
    let mut c = Client::connect(s.proxy()).await;
    // Wait for probes to run at all.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.state.health_hits.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no probe reached the endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.state.health.store(503, Ordering::Relaxed);
    // Until the probes fail twice, some requests still reach a; afterwards, none does.
    let mut streak = 0;
    while streak < 20 {
        assert!(Instant::now() < deadline, "a was never taken out");
        let r = c.get("/x", &[]).await;
        streak = if r.json()["name"] == "b" {
            streak + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(c.get("/x", &[]).await.json()["name"], "b");
    }
    assert_eq!(a.hits(), before);
    // Healthy again: a takes traffic again.
    a.state.health.store(200, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.hits() == before {
        assert!(Instant::now() < deadline, "a never came back");
        c.get("/x", &[]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An upstream that reads a request head and closes without answering.
fn resetter() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            drop(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_retried_for_bodiless_idempotent_requests_only() {
    let good = MiniUp::start("good", None);
    let s = Sluice::builder()
        .traffic(&doc(
            &format!(
                "  pool: {{ endpoints: [\"{}\", \"{}\"] }}",
                resetter(),
                good.addr
            ),
            "{ attempts: 1, on: [reset] }",
        ))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    for _ in 0..10 {
        let r = c.get("/x", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A POST with a body was sent when the connection broke: it is never replayed.
    let mut resets = 0;
    for _ in 0..10 {
        let mut c = Client::connect(s.proxy()).await;
        let r = post(&mut c, "once").await;
        if r.status == 502 {
            assert_eq!(r.headers["x-sluice-error"], "upstream_reset");
            resets += 1;
        }
    }
    assert!(resets > 0, "a POST was replayed after a reset");
}
