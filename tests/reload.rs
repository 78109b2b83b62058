//! Hot reload through the change gate: bad documents are refused with path and line while
//! traffic continues; reloads under load lose nothing; restarts restore; the audit chain holds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Client, Sluice, Upstream, get, traffic};

fn audit_lines(s: &Sluice) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path("state/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_rejection(s: &Sluice, n: usize) -> serde_json::Value {
    for _ in 0..200 {
        let rej: Vec<_> = audit_lines(s)
            .into_iter()
            .filter(|e| e["event"] == "change.rejected")
            .collect();
        if rej.len() >= n {
            return rej[n - 1].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rejection {n} never audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_refused_with_path_and_line_while_traffic_continues() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let good = traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]");
    let s = Sluice::builder().traffic(&good).start();
    assert_eq!(s.version(), 1);

    let line_of =
        |doc: &str, needle: &str| doc.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let bad_yaml = format!(
        "{}\n  bad: [unclosed\n",
        good.replace("version: 1", "version: 2")
    );
    let unknown_key = good
        .replace("version: 1", "version: 3")
        .replace("sticky:", "colour: red\n    sticky:");
    let unknown_upstream = good
        .replace("version: 1", "version: 4")
        .replace("to: { upstream: v1 }", "to: { upstream: v9 }");
    let weight = good
        .replace("version: 1", "version: 5")
        .replace("weight: 10", "weight: 120");
    let cases: Vec<(String, String)> = vec![
        (
            bad_yaml.clone(),
            format!("(line {}:", bad_yaml.lines().count() + 1),
        ),
        (
            unknown_key.clone(),
            format!(
                "rollouts.web.colour (line {}:5): unknown field `colour`",
                line_of(&unknown_key, "colour")
            ),
        ),
        (
            unknown_upstream.clone(),
            format!(
                "routes[0].to.upstream (line {}:",
                line_of(&unknown_upstream, "v9 }")
            ),
        ),
        (
            weight.clone(),
            format!(
                "rollouts.web.steps[0].weight (line {}:",
                line_of(&weight, "weight: 120")
            ),
        ),
    ];
    for (i, (doc, expect)) in cases.iter().enumerate() {
        s.write_traffic(doc);
        let rej = wait_rejection(&s, i + 1);
        assert_eq!(rej["reason"], "invalid_document");
        let detail = rej["detail"].as_str().unwrap();
        assert!(
            detail.contains(expect.as_str()),
            "case {i}: expected {expect:?} in {detail}"
        );
        if i == 3 {
            assert!(detail.contains("exceeds 100"), "{detail}");
        }
        // The active document keeps serving.
        assert_eq!(s.version(), 1);
        assert_eq!(get(s.proxy(), "/api/x", &[]).await.status, 200);
    }
    let m = get(s.admin(), "/metrics", &[]).await.text();
    assert!(
        m.contains("sluice_config_rejections_total{reason=\"invalid_document\"}"),
        "{m}"
    );

    // sluice validate prints the same errors and exits 2.
    let bad = s.path("bad.yaml");
    std::fs::write(&bad, &cases[3].0).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-c", "/nonexistent.yaml"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(cases[3].1.as_str()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"))
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for c in 0..4 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), s.proxy());
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("u{c}-{n}");
                let r = client
                    .get(
                        if n % 2 == 0 { "/api/x" } else { "/" },
                        &[("x-user-id", &id)],
                    )
                    .await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for v in 2..=51u64 {
        let w = if v % 2 == 0 { 20 } else { 10 };
        s.write_traffic(&traffic(
            v,
            v1.addr,
            v2.addr,
            &format!("[{{ weight: {w} }}]"),
        ));
        s.wait_version(v);
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "load ran: {}",
        ok.load(Ordering::Relaxed)
    );
    let activations = audit_lines(&s)
        .iter()
        .filter(|e| e["event"] == "change.activated")
        .count();
    assert_eq!(activations, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_and_the_audit_chain_verifies() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let mut s = Sluice::builder()
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"))
        .start();
    s.write_traffic(&traffic(2, v1.addr, v2.addr, "[{ weight: 20 }]"));
    s.wait_version(2);
    // On disk now: an older version, which must not be activated on restart (anti-rollback).
    std::fs::write(
        s.path("traffic.yaml"),
        traffic(1, v1.addr, v2.addr, "[{ weight: 10 }]"),
    )
    .unwrap();
    s.restart();
    assert_eq!(s.version(), 2, "the persisted document is restored");
    assert_eq!(get(s.proxy(), "/api/x", &[]).await.status, 200);
    let events: Vec<String> = audit_lines(&s)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events.contains(&"change.restored".to_string()),
        "{events:?}"
    );
    let last_rej = audit_lines(&s)
        .into_iter()
        .rfind(|e| e["event"] == "change.rejected")
        .unwrap();
    assert_eq!(last_rej["reason"], "version_not_increasing");

    let bin = env!("CARGO_BIN_EXE_sluice");
    let log = s.path("state/audit.jsonl");
    let out = std::process::Command::new(bin)
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = audit_lines(&s).len();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{head} lines")));

    // Tamper with line 2: verify fails and names the first broken link (line 3).
    s.inst.take().unwrap().shutdown();
    let text = std::fs::read_to_string(&log).unwrap();
    let tampered: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 1 {
                l.replace("\"actor\":\"", "\"actor\":\"x")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&log, tampered.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_and_version_steps_are_refused() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let s = Sluice::builder()
        .traffic(&traffic(5, v1.addr, v2.addr, "[{ weight: 10 }]"))
        .start();
    s.write_traffic(&traffic(5, v1.addr, v2.addr, "[{ weight: 30 }]"));
    assert_eq!(wait_rejection(&s, 1)["reason"], "equivocation");
    s.write_traffic(&traffic(5000, v1.addr, v2.addr, "[{ weight: 30 }]"));
    assert_eq!(wait_rejection(&s, 2)["reason"], "version_step_too_large");
    // Same content, higher version: a no-op, not an activation.
    s.write_traffic(
        &traffic(6, v1.addr, v2.addr, "[{ weight: 10 }]")
            .replace("summary: test", "summary: again"),
    );
    s.write_traffic(&traffic(7, v1.addr, v2.addr, "[{ weight: 15 }]"));
    s.wait_version(7);
    let activated: Vec<u64> = audit_lines(&s)
        .iter()
        .filter(|e| e["event"] == "change.activated")
        .map(|e| e["change"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(activated, vec![5, 7]);
}
