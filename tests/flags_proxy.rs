//! SDK-less flags over real sockets (SPEC §4): context from the request, headers injected
//! upstream in route order and percent-encoded, spoofed headers removed, routing by flag,
//! OFREP on the admin listener and on a `builtin: ofrep` route (single, bulk, ETag/304,
//! CORS), metrics, and invalid flag documents refused with their path while the active
//! document keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Client, Reply, Sluice, Upstream, get};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use sluice::config::traffic::{CheckContext, TrafficDoc};
use sluice::flags::{Context, FlagSet, Options};

fn doc(version: u64, v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r##"version: {version}
change: {{ id: CHG-{version}, author: alice }}
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
routes:
  - name: ofrep
    match: {{ path_prefix: /flags }}
    to: {{ builtin: ofrep }}
  - name: routed
    match: {{ path_prefix: /routed }}
    to: {{ flag: backend, upstreams: {{ old: v1, new: v2 }} }}
    flags: [backend]
  - name: routed-off
    match: {{ path_prefix: /off }}
    to: {{ flag: backend-off, upstreams: {{ old: v1, new: v2 }} }}
  - name: all
    match: {{ path_prefix: /all }}
    to: {{ upstream: v1 }}
    flags: ["*"]
  - name: web
    to: {{ rollout: web }}
    flags: [theme, greeting, beta, no-default, broken-target, ctx, keyed, split]
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id, cookie: sluice_uid, set_cookie: true }}
    steps: [{{ weight: 0 }}]
flag_context:
  targeting_key: [{{ header: x-user-id }}, {{ cookie: sluice_uid }}]
  attributes:
    email: {{ header: x-user-email }}
    beta: {{ header: x-beta }}
    plan: {{ cookie: plan }}
    path: {{ request: path }}
    method: {{ request: method }}
    host: {{ request: host }}
    ip: {{ request: client_ip }}
flags:
  theme:
    state: ENABLED
    variants: {{ dark: "#000", "light blue": "#adf" }}
    defaultVariant: "light blue"
  greeting:
    state: ENABLED
    variants: {{ "grüße": "hallo", "50%": "half" }}
    defaultVariant: "50%"
    targeting: {{ "if": [{{ "ends_with": [{{ "var": "email" }}, "@example.com"] }}, "grüße", null] }}
  beta:
    state: ENABLED
    variants: {{ "on": true, "off": false }}
    defaultVariant: "off"
    targeting: {{ "if": [{{ "in": [{{ "var": "plan" }}, ["pro", "team"]] }}, "on", null] }}
  no-default:
    state: ENABLED
    variants: {{ a: 1, b: 2 }}
    defaultVariant: null
  broken-target:
    state: ENABLED
    variants: {{ a: 1 }}
    defaultVariant: a
    targeting: {{ "if": [true, "zzz", "a"] }}
  ctx:
    state: ENABLED
    variants: {{ hit: "h", miss: "m" }}
    defaultVariant: miss
    targeting:
      "if":
        - "and":
            - {{ "==": [{{ "var": "path" }}, "/ctx/x"] }}
            - {{ "==": [{{ "var": "method" }}, "GET"] }}
            - {{ "==": [{{ "var": "host" }}, "shop.example.com"] }}
            - {{ "==": [{{ "var": "ip" }}, "127.0.0.1"] }}
            - {{ "==": [{{ "var": "targetingKey" }}, "u-1"] }}
        - hit
        - miss
  keyed:
    state: ENABLED
    variants: {{ "yes": true, "no": false }}
    defaultVariant: "no"
    targeting: {{ "if": [{{ "var": "targetingKey" }}, "yes", "no"] }}
  split:
    state: ENABLED
    variants: {{ a: 1, b: 2 }}
    defaultVariant: a
    targeting: {{ fractional: [["a", 50], ["b", 50]] }}
  backend:
    state: ENABLED
    variants: {{ old: v1, new: v2, exp: v3 }}
    defaultVariant: old
    targeting: {{ "if": [{{ "==": [{{ "var": "beta" }}, "1"] }}, "new", {{ "==": [{{ "var": "beta" }}, "exp"] }}, "exp", null] }}
  backend-off:
    state: DISABLED
    variants: {{ old: v1, new: v2 }}
    defaultVariant: new
  ratio:
    state: ENABLED
    variants: {{ low: 1.0, high: 2.5 }}
    defaultVariant: low
"##
    )
}

fn start() -> (Upstream, Upstream, Sluice) {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder().traffic(&doc(1, v1.addr, v2.addr)).start();
    assert_eq!(s.version(), 1, "the test document must activate");
    (v1, v2, s)
}

/// The upstream's view of a request header (`None` when absent).
fn seen(r: &Reply, name: &str) -> Option<String> {
    let j = r.json();
    j["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .map(|v: Vec<String>| v.join(", "))
}

async fn post(addr: SocketAddr, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::post(path).header("host", "test.local");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Client::connect(addr)
        .await
        .send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap()
}

async fn options(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::options(path).header("host", "test.local");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Client::connect(addr)
        .await
        .send(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

async fn metrics(s: &Sluice) -> String {
    get(s.admin(), "/metrics", &[]).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_follow_route_order_encoding_and_context() {
    let (_v1, _v2, s) = start();
    let before = metrics(&s).await;
    // Handles are resolved when the snapshot is built: the series exist before traffic.
    for series in [
        r#"sluice_flag_evaluations_total{flag="beta",variant="on",reason="TARGETING_MATCH"} 0"#,
        r#"sluice_flag_evaluations_total{flag="theme",variant="light blue",reason="STATIC"} 0"#,
        r#"sluice_flag_evaluations_total{flag="broken-target",variant="",reason="ERROR"} 0"#,
        r#"sluice_flag_evaluations_total{flag="backend",variant="exp",reason="TARGETING_MATCH"} 0"#,
    ] {
        assert!(before.contains(series), "missing {series}:\n{before}");
    }

    let r = get(
        s.proxy(),
        "/ctx/x",
        &[
            ("host", "Shop.Example.com:8080"),
            ("x-user-id", "u-1"),
            ("x-user-email", "ada@example.com"),
            ("cookie", "a=b; plan=pro"),
            // Spoofed: removed before routing, replaced by sluice's own.
            ("x-sluice-flag-theme", "dark"),
            ("x-sluice-flag-no-default", "b"),
            ("x-sluice-flags", "theme=dark"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r, "x-sluice-route").as_deref(), Some("web"));
    assert_eq!(
        seen(&r, "x-sluice-flag-theme").as_deref(),
        Some("light%20blue")
    );
    assert_eq!(
        seen(&r, "x-sluice-flag-greeting").as_deref(),
        Some("gr%C3%BC%C3%9Fe")
    );
    assert_eq!(seen(&r, "x-sluice-flag-beta").as_deref(), Some("on"));
    assert_eq!(seen(&r, "x-sluice-flag-ctx").as_deref(), Some("hit"));
    assert_eq!(seen(&r, "x-sluice-flag-keyed").as_deref(), Some("yes"));
    // No variant: no header (a code default, and an evaluation error).
    assert_eq!(seen(&r, "x-sluice-flag-no-default"), None);
    assert_eq!(seen(&r, "x-sluice-flag-broken-target"), None);
    assert_eq!(
        seen(&r, "x-sluice-flags").as_deref(),
        Some("theme=light%20blue; greeting=gr%C3%BC%C3%9Fe; beta=on; ctx=hit; keyed=yes; split=a")
    );

    // Another context: other variants, still in route order.
    let r = get(s.proxy(), "/ctx/y", &[("x-user-id", "u-2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        seen(&r, "x-sluice-flags").as_deref(),
        Some("theme=light%20blue; greeting=50%25; beta=off; ctx=miss; keyed=yes; split=a")
    );

    let m = metrics(&s).await;
    for series in [
        r#"sluice_flag_evaluations_total{flag="beta",variant="on",reason="TARGETING_MATCH"} 1"#,
        r#"sluice_flag_evaluations_total{flag="beta",variant="off",reason="DEFAULT"} 1"#,
        r#"sluice_flag_evaluations_total{flag="theme",variant="light blue",reason="STATIC"} 2"#,
        r#"sluice_flag_evaluations_total{flag="no-default",variant="",reason="DEFAULT"} 2"#,
        r#"sluice_flag_evaluations_total{flag="broken-target",variant="",reason="ERROR"} 2"#,
    ] {
        assert!(m.contains(series), "missing {series}:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_injects_every_flag_by_key() {
    let (_v1, _v2, s) = start();
    let r = get(s.proxy(), "/all", &[("x-user-id", "u-1"), ("x-beta", "1")]).await;
    assert_eq!(r.status, 200);
    // Sorted by key; flags without a variant (disabled, code default, error) are left out.
    assert_eq!(
        seen(&r, "x-sluice-flags").as_deref(),
        Some(
            "backend=new; beta=off; ctx=miss; greeting=50%25; keyed=yes; ratio=low; \
             split=a; theme=light%20blue"
        )
    );
    assert_eq!(seen(&r, "x-sluice-flag-backend-off"), None);
    assert_eq!(seen(&r, "x-sluice-flag-ratio").as_deref(), Some("low"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drawn_sticky_key_serves_the_same_request_flags() {
    let (_v1, _v2, s) = start();
    let r = get(s.proxy(), "/", &[]).await;
    assert_eq!(r.status, 200);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    let id = cookie
        .strip_prefix("sluice_uid=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{cookie}");
    // The first request of a new user already has a targeting key ...
    assert_eq!(seen(&r, "x-sluice-flag-keyed").as_deref(), Some("yes"));
    // ... the drawn id itself: evaluating with it as targeting key agrees ...
    let parsed = TrafficDoc::parse(&doc(1, _v1.addr, _v2.addr), &CheckContext::default()).unwrap();
    let set = FlagSet::compile(
        &parsed.doc.flags,
        &parsed.doc.evaluators,
        Options::default(),
    )
    .unwrap();
    let ctx_map = json!({ "targetingKey": id });
    let ctx = Context::from_json(ctx_map.as_object().unwrap()).unwrap();
    let res = set.evaluate_key("split", &ctx, 0);
    assert_eq!(seen(&r, "x-sluice-flag-split").as_deref(), res.variant);
    // ... and the next one, carrying the cookie, sees the same flags.
    let again = get(s.proxy(), "/", &[("cookie", &format!("sluice_uid={id}"))]).await;
    assert!(again.headers.get("set-cookie").is_none());
    assert_eq!(seen(&again, "x-sluice-flags"), seen(&r, "x-sluice-flags"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_flag_variant() {
    let (_v1, _v2, s) = start();
    let r = get(s.proxy(), "/routed/x", &[("x-user-id", "u")]).await;
    assert_eq!(r.json()["name"], "v1");
    assert_eq!(seen(&r, "x-sluice-variant").as_deref(), Some("v1"));
    assert_eq!(seen(&r, "x-sluice-flag-backend").as_deref(), Some("old"));

    let r = get(s.proxy(), "/routed/x", &[("x-beta", "1")]).await;
    assert_eq!(r.json()["name"], "v2");
    assert_eq!(seen(&r, "x-sluice-variant").as_deref(), Some("v2"));
    assert_eq!(seen(&r, "x-sluice-flag-backend").as_deref(), Some("new"));

    // A variant without an upstream goes where the default variant goes.
    let r = get(s.proxy(), "/routed/x", &[("x-beta", "exp")]).await;
    assert_eq!(r.json()["name"], "v1");
    assert_eq!(seen(&r, "x-sluice-variant").as_deref(), Some("v1"));
    assert_eq!(seen(&r, "x-sluice-flag-backend").as_deref(), Some("exp"));

    // A disabled flag serves no variant: its default variant's upstream.
    let r = get(s.proxy(), "/off", &[("x-beta", "1")]).await;
    assert_eq!(r.json()["name"], "v2");
    assert_eq!(seen(&r, "x-sluice-variant").as_deref(), Some("v2"));
    assert_eq!(seen(&r, "x-sluice-flag-backend-off"), None);

    let m = metrics(&s).await;
    for series in [
        r#"sluice_requests_total{route="routed",upstream="v1",rollout="",variant="v1",code_class="2xx"} 2"#,
        r#"sluice_requests_total{route="routed",upstream="v2",rollout="",variant="v2",code_class="2xx"} 1"#,
        r#"sluice_requests_total{route="routed-off",upstream="v2",rollout="",variant="v2",code_class="2xx"} 1"#,
        r#"sluice_flag_evaluations_total{flag="backend-off",variant="",reason="DISABLED"} 1"#,
        r#"sluice_flag_evaluations_total{flag="backend",variant="exp",reason="TARGETING_MATCH"} 1"#,
    ] {
        assert!(m.contains(series), "missing {series}:\n{m}");
    }
}

/// The OFREP checks shared by the admin listener and the builtin route.
async fn check_ofrep(addr: SocketAddr, base: &str) {
    let url = |p: &str| format!("{base}/ofrep/v1/evaluate/flags{p}");
    let ctx = r#"{"context": {"targetingKey": "u-1", "plan": "pro"}}"#;

    let r = post(
        addr,
        &url("/beta"),
        ctx,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.json(),
        json!({"key": "beta", "value": true, "variant": "on", "reason": "TARGETING_MATCH"})
    );
    // Floats stay floats (typed clients check `isinstance(value, float)`).
    let r = post(addr, &url("/ratio"), "{}", &[]).await;
    assert!(r.text().contains(r#""value":1.0"#), "{}", r.text());
    // Code defaults: no `value`, `variant` null, an OpenFeature reason.
    let r = post(addr, &url("/no-default"), "", &[]).await;
    assert_eq!(
        r.json(),
        json!({"key": "no-default", "variant": null, "reason": "DEFAULT"})
    );
    let r = post(addr, &url("/backend-off"), "{}", &[]).await;
    assert_eq!(
        r.json(),
        json!({"key": "backend-off", "variant": null, "reason": "DISABLED"})
    );
    // Failures: status and errorDetails.
    let r = post(addr, &url("/nope"), ctx, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errorCode"], "FLAG_NOT_FOUND");
    assert_eq!(r.json()["key"], "nope");
    assert!(r.json()["errorDetails"].is_string());
    let r = post(addr, &url("/beta"), r#"{"context": 5}"#, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT");
    let r = post(addr, &url("/broken-target"), ctx, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "GENERAL");
    assert!(r.json()["errorDetails"].as_str().unwrap().contains("zzz"));
    let r = get(addr, &url("/beta"), &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST, OPTIONS");

    // Bulk: every flag, an ETag of the body, 304 when it matches.
    let r = post(addr, &url(""), ctx, &[]).await;
    assert_eq!(r.status, 200);
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let flags = r.json()["flags"].as_array().unwrap().clone();
    assert_eq!(flags.len(), 11);
    let beta = flags.iter().find(|f| f["key"] == "beta").unwrap();
    assert_eq!(beta["variant"], "on");
    let broken = flags.iter().find(|f| f["key"] == "broken-target").unwrap();
    assert_eq!(broken["errorCode"], "GENERAL");
    let r = post(addr, &url(""), ctx, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["etag"].to_str().unwrap(), etag);
    let other = r#"{"context": {"targetingKey": "u-2"}}"#;
    let r = post(addr, &url(""), other, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 200, "another context, another body");
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
    let r = post(addr, &url(""), "[1]", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT");

    // CORS: only listed origins.
    let app = [("origin", "https://app.example.com")];
    let r = post(addr, &url("/beta"), ctx, &app).await;
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "ETag");
    let r = post(
        addr,
        &url("/beta"),
        ctx,
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(r.status, 200, "CORS is the browser's to enforce");
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = options(
        addr,
        &url(""),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, if-none-match",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "content-type, if-none-match"
    );
    let r = options(
        addr,
        &url(""),
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

fn with_cors(s: &mut Sluice) {
    s.settings_yaml
        .push_str("ofrep: { cors_origins: [\"https://app.example.com\"] }\n");
    s.restart();
    assert_eq!(s.version(), 1, "restored after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_on_the_admin_listener() {
    let (_v1, _v2, mut s) = start();
    with_cors(&mut s);
    check_ofrep(s.admin(), "").await;
    // Unauthenticated, unlike /api/v1; other paths under /ofrep are 404s in OFREP's shape.
    let r = post(s.admin(), "/ofrep/v2/evaluate/flags", "{}", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["errorDetails"].is_string());
    let m = metrics(&s).await;
    assert!(
        m.contains(r#"sluice_flag_evaluations_total{flag="ratio",variant="low",reason="STATIC"}"#),
        "{m}"
    );
    assert!(
        !m.contains(r#"flag="nope""#),
        "unknown keys are not labels: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_on_a_builtin_route() {
    let (v1, v2, mut s) = start();
    with_cors(&mut s);
    check_ofrep(s.proxy(), "/flags").await;
    assert_eq!(v1.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(v2.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    let m = metrics(&s).await;
    assert!(
        m.contains(r#"sluice_requests_total{route="ofrep",upstream="",rollout="",variant="ofrep",code_class="2xx"}"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_without_an_active_document() {
    let s = Sluice::builder().traffic("").start();
    let r = post(s.admin(), "/ofrep/v1/evaluate/flags/beta", "{}", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["errorDetails"].is_string());
}

fn audit_rejections(s: &Sluice) -> Vec<Value> {
    std::fs::read_to_string(s.path("state/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "change.rejected")
        .collect()
}

fn wait_rejection(s: &Sluice, n: usize) -> Value {
    for _ in 0..200 {
        if let Some(r) = audit_rejections(s).get(n - 1) {
            return r.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rejection {n} never audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_flag_documents_are_refused_with_their_path_while_traffic_continues() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let good = doc(1, v1.addr, v2.addr);
    let s = Sluice::builder().traffic(&good).start();
    assert_eq!(s.version(), 1);
    let line_of = |d: &str, needle: &str| d.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let v = |n: u64| good.replace("version: 1", &format!("version: {n}"));
    let cases: Vec<(String, String)> = vec![
        {
            let d = v(2).replace("defaultVariant: \"light blue\"", "defaultVariant: navy");
            let line = line_of(&d, "defaultVariant: navy");
            (d, format!("flags.theme.defaultVariant (line {line}:"))
        },
        {
            let d = v(3).replace(
                "\"in\": [{ \"var\": \"plan\" }",
                "\"within\": [{ \"var\": \"plan\" }",
            );
            (d, "flags.beta.targeting".into())
        },
        {
            let d = v(4).replace("if\": [true, \"zzz\", \"a\"]", "$ref\": \"missing\"");
            (d, "flags.broken-target.targeting".into())
        },
        {
            let d = v(5).replace("state: DISABLED", "state: MAYBE");
            let line = line_of(&d, "state: MAYBE");
            (d, format!("flags.backend-off.state (line {line}:"))
        },
        {
            let d = v(6).replace(
                "{ old: v1, new: v2 } }\n    flags: [backend]",
                "{ old: v1, newer: v2 } }\n    flags: [backend]",
            );
            (d, "routes[1].to.upstreams.newer".into())
        },
        {
            let d = v(7).replace(
                "to: { flag: backend-off, upstreams: { old: v1, new: v2 } }",
                "to: { flag: backend-off, upstreams: { old: v1 } }",
            );
            (d, "routes[2].to.upstreams".into())
        },
    ];
    for (i, (d, expect)) in cases.iter().enumerate() {
        assert_ne!(d, &v(i as u64 + 2), "case {i} changed nothing");
        s.write_traffic(d);
        let rej = wait_rejection(&s, i + 1);
        assert_eq!(rej["reason"], "invalid_document");
        let detail = rej["detail"].as_str().unwrap();
        assert!(
            detail.contains(expect.as_str()),
            "case {i}: expected {expect:?} in {detail}"
        );
        // The active document keeps serving, flags included.
        assert_eq!(s.version(), 1);
        let r = get(s.proxy(), "/", &[("x-user-id", "u")]).await;
        assert_eq!(
            seen(&r, "x-sluice-flag-theme").as_deref(),
            Some("light%20blue")
        );
    }

    // The admin API refuses it the same way.
    let bearer = format!("Bearer {}", s.inst().admin_token);
    let req = Request::put("/api/v1/traffic")
        .header("host", "127.0.0.1")
        .header("authorization", &bearer)
        .body(Full::new(Bytes::from(
            cases[0].0.replace("version: 2", "version: 9"),
        )))
        .unwrap();
    let r = Client::connect(s.admin()).await.send(req).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_document");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("flags.theme.defaultVariant"),
        "{}",
        r.text()
    );
    assert_eq!(s.version(), 1);
}
