//! Sticky canary splitting over real sockets (SPEC §3).

mod common;

use std::collections::HashMap;

use common::{Client, Sluice, Upstream, traffic};

async fn variants(s: &Sluice, users: std::ops::Range<u32>) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let mut tasks = Vec::new();
    let chunk = (users.end - users.start).div_ceil(8);
    for part in 0..8 {
        let lo = users.start + part * chunk;
        let hi = (lo + chunk).min(users.end);
        let addr = s.proxy();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut v = Vec::new();
            for u in lo..hi {
                let id = format!("user-{u}");
                let r = c.get("/", &[("x-user-id", &id)]).await;
                assert_eq!(r.status, 200);
                assert!(
                    r.headers.get("set-cookie").is_none(),
                    "keyed clients get no cookie"
                );
                v.push((
                    u,
                    r.json()["headers"]["x-sluice-variant"][0]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ));
            }
            v
        }));
    }
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_split_ten_percent_and_stay_put() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"))
        .start();
    let first = variants(&s, 0..10_000).await;
    let canary = first.values().filter(|v| *v == "canary").count();
    assert!(
        (900..=1100).contains(&canary),
        "canary share {canary}/10000 is not 10% ± 1%"
    );
    for _ in 0..4 {
        assert_eq!(
            variants(&s, 0..10_000).await,
            first,
            "a user changed variant between requests"
        );
    }

    // Raise 10 → 20 by a reload: canary users stay canary; about 10% more join.
    s.write_traffic(&traffic(2, v1.addr, v2.addr, "[{ weight: 20 }]"));
    s.wait_version(2);
    let after = variants(&s, 0..10_000).await;
    for (u, v) in &first {
        if v == "canary" {
            assert_eq!(after[u], "canary", "user {u} moved from canary to stable");
        }
    }
    let canary2 = after.values().filter(|v| *v == "canary").count();
    assert!(
        (1900..=2100).contains(&canary2),
        "canary share {canary2}/10000 is not 20% ± 1%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_clients_get_a_cookie_and_keep_their_variant() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 50 }]"))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    let mut seen = HashMap::new();
    for _ in 0..40 {
        let r = c.get("/", &[]).await;
        let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("sluice_uid="), "{cookie}");
        assert!(
            cookie.contains("; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "no Secure on plain HTTP");
        let id = cookie["sluice_uid=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let first = r.json()["headers"]["x-sluice-variant"][0]
            .as_str()
            .unwrap()
            .to_string();
        for _ in 0..3 {
            let r = c
                .get("/", &[("cookie", &format!("other=1; sluice_uid={id}"))])
                .await;
            assert!(r.headers.get("set-cookie").is_none());
            assert_eq!(
                r.json()["headers"]["x-sluice-variant"][0],
                first.as_str(),
                "cookie {id} changed variant"
            );
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "at 50% both variants appear among 40 new clients: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_sends_nobody_but_testers() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(
            1,
            v1.addr,
            v2.addr,
            "[{ gate: manual }, { weight: 100 }]",
        ))
        .start();
    let mut c = Client::connect(s.proxy()).await;
    for u in 0..300 {
        let r = c.get("/", &[("x-user-id", &format!("u{u}"))]).await;
        assert_eq!(r.json()["headers"]["x-sluice-variant"][0], "stable");
    }
    let r = c
        .get("/", &[("x-user-id", "u1"), ("x-canary", "always")])
        .await;
    assert_eq!(r.json()["headers"]["x-sluice-variant"][0], "canary");
    assert_eq!(r.json()["name"], "v2");
}

/// Testers opt in by cookie and query parameter (regex, present), and a route matches on a
/// query parameter (compared percent-decoded) and a header prefix (SPEC §2.2 matchers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testers_opt_in_by_cookie_and_query_and_routes_match_on_them() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let doc = format!(
        r#"version: 1
change: {{ id: CHG-1, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{}"] }}
  v2: {{ endpoints: ["{}"] }}
routes:
  - name: pinned
    match: {{ path_prefix: /q, query: {{ backend: "v2" }}, headers: {{ x-team: {{ prefix: qa- }} }} }}
    to: {{ upstream: v2 }}
  - name: web
    to: {{ rollout: web }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id }}
    canary_match:
      cookies: {{ beta: {{ regex: "tester-[0-9]+" }} }}
      query: {{ canary: {{ present: true }} }}
    steps: [{{ gate: manual }}, {{ weight: 100 }}]
"#,
        v1.addr, v2.addr
    );
    let s = Sluice::builder().traffic(&doc).start();
    let mut c = Client::connect(s.proxy()).await;
    let mut side = async |path: &str, headers: &[(&str, &str)]| {
        let r = c.get(path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}");
        r.json()["name"].as_str().unwrap().to_string()
    };
    let u = ("x-user-id", "u1");
    assert_eq!(side("/", &[u]).await, "v1");
    // Every condition must hold: the cookie alone, or the query alone, is not enough.
    assert_eq!(side("/", &[u, ("cookie", "beta=tester-7")]).await, "v1");
    assert_eq!(side("/?canary", &[u]).await, "v1");
    assert_eq!(
        side("/?canary", &[u, ("cookie", "a=1; beta=tester-7")]).await,
        "v2"
    );
    assert_eq!(
        side("/x?y=1&canary=yes", &[u, ("cookie", "beta=tester-42")]).await,
        "v2"
    );
    // The regex is anchored: `tester-7x` is not a tester.
    assert_eq!(
        side("/?canary", &[u, ("cookie", "beta=tester-7x")]).await,
        "v1"
    );
    // A cookie whose name merely ends in `beta` is another cookie.
    assert_eq!(
        side("/?canary", &[u, ("cookie", "xbeta=tester-7")]).await,
        "v1"
    );

    // Route match: query compared decoded (`v%32` is `v2`), header by prefix.
    let qa = ("x-team", "qa-berlin");
    assert_eq!(side("/q?backend=v2", &[u, qa]).await, "v2");
    assert_eq!(side("/q/x?a=b&backend=v%32", &[u, qa]).await, "v2");
    assert_eq!(
        side("/q?backend=v2", &[u, ("x-team", "dev-qa-")]).await,
        "v1"
    );
    assert_eq!(side("/q?backend=v3", &[u, qa]).await, "v1");
    assert_eq!(side("/q", &[u, qa]).await, "v1");
}
