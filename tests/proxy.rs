//! Proxying over real loopback sockets: bodies, header hygiene, sluice's own errors.

mod common;

use bytes::Bytes;
use common::{Client, Sluice, Upstream, get, promtool_check, traffic};
use http::Request;
use http_body_util::Full;

fn start() -> (Upstream, Upstream, Sluice) {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"))
        .start();
    (v1, v2, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_stream_ten_megabytes_each_way() {
    let (_v1, _v2, s) = start();
    let mut c = Client::connect(s.proxy()).await;
    let r = c.get("/api/big?n=10485760", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10 * 1024 * 1024);
    assert!(r.body.iter().all(|b| *b == b'x'));

    let payload: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/api/echo")
        .header("host", "test.local")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), payload.len());
    assert!(r.body == payload, "echoed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_hygiene() {
    let (_v1, _v2, s) = start();
    let r = get(
        s.proxy(),
        "/api/headers",
        &[
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-sluice-variant", "canary"),
            ("x-sluice-flag-beta", "on"),
            ("x-sluice-route", "admin"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-42"),
            ("x-keep", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    let h = &j["headers"];
    for gone in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "x-sluice-flag-beta",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x-sluice-route"], serde_json::json!(["api"]));
    assert_eq!(h["x-sluice-variant"], serde_json::json!(["v1"]));
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.9, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["test.local"]));
    assert_eq!(h["via"], serde_json::json!(["1.1 sluice"]));
    assert_eq!(h["x-request-id"], serde_json::json!(["req-42"]));
    assert_eq!(h["x-keep"], serde_json::json!(["yes"]));
    // Hop-by-hop headers of the response are removed too.
    assert!(r.headers.get("x-upstream-hop").is_none());

    let r = get(s.proxy(), "/api/headers", &[]).await;
    let id = r.json()["headers"]["x-request-id"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "a request id is generated when absent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_removed_before_matching_and_forwarding() {
    let (_v1, _v2, s) = start();
    let r = get(s.proxy(), "/web/../api/x/./y", &[]).await;
    let j = r.json();
    assert_eq!(j["headers"]["x-sluice-route"][0], "api");
    assert_eq!(j["path"], "/api/x/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_errors_carry_their_code() {
    let v1 = Upstream::start("v1");
    let (_dead_guard, dead) = common::refusing_addr();
    let doc = format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  live: {{ endpoints: ["{v1}"], request_timeout: 300ms }}
  dead: {{ endpoints: ["{dead}"], connect_timeout: 500ms }}
routes:
  - name: slow
    match: {{ path_prefix: /sleep }}
    to: {{ upstream: live }}
  - name: dead
    match: {{ host: dead.example.com }}
    to: {{ upstream: dead }}
  - name: only-shop
    match: {{ host: "*.shop.example.com" }}
    to: {{ upstream: live }}
"#,
        v1 = v1.addr
    );
    let s = Sluice::builder().traffic(&doc).start();
    let r = get(s.proxy(), "/nothing", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["x-sluice-error"], "no_route");

    let r = get(s.proxy(), "/", &[("host", "dead.example.com")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.headers["x-sluice-error"], "upstream_connect");

    let r = get(s.proxy(), "/sleep?ms=2000", &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.headers["x-sluice-error"], "upstream_timeout");

    // The wildcard excludes the apex.
    let r = get(s.proxy(), "/", &[("host", "shop.example.com")]).await;
    assert_eq!(r.status, 404);
    let r = get(s.proxy(), "/", &[("host", "eu.shop.example.com:8080")]).await;
    assert_eq!(r.status, 200);

    let m = common::get(s.admin(), "/metrics", &[]).await.text();
    assert!(
        m.contains("sluice_upstream_errors_total{upstream=\"dead\",kind=\"connect\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sluice_upstream_errors_total{upstream=\"live\",kind=\"timeout\"} 1"),
        "{m}"
    );
    assert!(m.contains("code_class=\"5xx\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_until_something_is_active() {
    let s = Sluice::builder().traffic("").start();
    let r = get(s.proxy(), "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-sluice-error"], "no_config");
    assert_eq!(get(s.admin(), "/readyz", &[]).await.status, 503);
    assert_eq!(get(s.admin(), "/healthz", &[]).await.status, 200);
    assert!(
        get(s.admin(), "/metrics", &[])
            .await
            .text()
            .contains("sluice_config_version 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_by_hyper() {
    let (_v1, _v2, s) = start();
    let big = "a".repeat(70_000);
    let mut c = Client::connect(s.proxy()).await;
    let req = Request::get("/api/x")
        .header("host", "t")
        .header("x-big", big)
        .body(Full::new(Bytes::new()))
        .unwrap();
    match c.send(req).await {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => panic!("expected a 431, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_help_and_type_and_pass_promtool() {
    let (_v1, _v2, s) = start();
    for path in ["/api/x", "/web", "/api/status?code=503"] {
        let _ = get(s.proxy(), path, &[("x-user-id", "u1")]).await;
    }
    let text = get(s.admin(), "/metrics", &[]).await.text();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or("");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no # HELP:\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE sluice_requests_total counter"),
        "{text}"
    );
    if let Some(checked) = promtool_check(&text) {
        checked.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    }
}
