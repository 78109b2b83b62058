//! The rollout runtime over real sockets (issue 5): recording, verdicts, steps, gates,
//! pauses, restarts, blue-green, operator actions and the audit trail.
//!
//! Most tests inject a manual wall clock (holds) and tick the runner by hand
//! (`StartOptions::manual_rollout_ticks`), so one tick is one `analysis.interval`; one test
//! runs on the real timer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Client, Reply, Sluice, get, http_server, refusing_addr, serve_http1, settings_yaml,
    spawn_server,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use sluice::change::token::{self, Act, Claims};

// === upstreams ===

/// An upstream that answers its name, failing `fail_per_mille` of requests with a 500 in a
/// fixed pattern (exactly that many in every 1000), or every request while `down` is set.
struct Flaky {
    addr: SocketAddr,
    fail_per_mille: Arc<AtomicU64>,
}

impl Flaky {
    fn start(name: &'static str, fail_per_mille: u64) -> Flaky {
        let rate = Arc::new(AtomicU64::new(fail_per_mille));
        let r = rate.clone();
        let n = Arc::new(AtomicU64::new(0));
        let addr = http_server(move |req: Request<Incoming>| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let fail = (i * 7919) % 1000 < r.load(Ordering::Relaxed) || req.uri().path() == "/fail";
            async move {
                let mut resp = Response::new(Full::new(Bytes::from(name)));
                if fail {
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                resp
            }
        });
        Flaky {
            addr,
            fail_per_mille: rate,
        }
    }

    fn set_fail_per_mille(&self, v: u64) {
        self.fail_per_mille.store(v, Ordering::Relaxed);
    }
}

/// A document with upstreams v1 and v2, one route to rollout `web`, and `rollout` as the
/// rollout's body (YAML, indented by the caller's text).
fn doc(version: u64, v1: SocketAddr, v2: SocketAddr, rollout: &str) -> String {
    let body: String = rollout
        .trim()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        "version: {version}\n\
         change: {{ id: CHG-{version}, author: alice, summary: test }}\n\
         upstreams:\n  v1: {{ endpoints: [\"{v1}\"] }}\n  v2: {{ endpoints: [\"{v2}\"] }}\n\
         routes:\n  - name: web\n    to: {{ rollout: web }}\n\
         rollouts:\n  web:\n{body}"
    )
}

/// A canary rollout body from `v1` to `v2`, sticky on `x-user-id`, with `rest` after that
/// head (YAML lines: steps, analysis…).
fn canary(rest: &str) -> String {
    format!(
        "strategy: canary\nstable: v1\ncanary: v2\nsticky: {{ header: x-user-id }}\n{}",
        rest.trim_start()
    )
}

/// Runs `sluice rollout ACTION web --admin … --token-file …` and then `extra` against `rig`,
/// off the runtime's threads (the admin API it calls is served by them).
async fn rollout_cli(rig: &Sluice, action: &str, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "rollout".into(),
        action.into(),
        "web".into(),
        "--admin".into(),
        format!("http://{}", rig.inst().admin),
        "--token-file".into(),
        rig.dir
            .path()
            .join("state/admin.token")
            .display()
            .to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// [`rollout_cli`] that must exit 0 (its stderr shown otherwise); its stdout.
async fn rollout_cli_ok(rig: &Sluice, action: &str, extra: &[&str]) -> String {
    let out = rollout_cli(rig, action, extra).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Upstreams `v1` and `v2` failing `v1_fail` and `v2_fail` per mille, and a sluice on a
/// manual clock with manual ticks serving `doc(1, v1, v2, rollout)`.
fn start_rig(v1_fail: u64, v2_fail: u64, rollout: &str) -> (Flaky, Flaky, Sluice) {
    let v1 = Flaky::start("v1", v1_fail);
    let v2 = Flaky::start("v2", v2_fail);
    let rig = Sluice::builder()
        .traffic(&doc(1, v1.addr, v2.addr, rollout))
        .manual_ticks()
        .start();
    (v1, v2, rig)
}

/// Counts of what clients saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    stable: u64,
    stable_failed: u64,
    canary: u64,
    canary_failed: u64,
}

impl Seen {
    fn add(&mut self, r: &Reply) {
        let failed = r.status != StatusCode::OK;
        match r.body.as_ref() {
            b"v1" => {
                self.stable += 1;
                self.stable_failed += failed as u64;
            }
            b"v2" => {
                self.canary += 1;
                self.canary_failed += failed as u64;
            }
            other => panic!(
                "unexpected answer {} {:?}",
                r.status,
                String::from_utf8_lossy(other)
            ),
        }
    }
}

/// `n` requests from distinct users (`{tag}-{i}`) on one connection.
async fn users(addr: SocketAddr, tag: &str, n: u64, path: &str, seen: &mut Seen) {
    let mut c = Client::connect(addr).await;
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let r = c.get(path, &[("x-user-id", &id)]).await;
        seen.add(&r);
    }
}

const CANARY_FAILING: &str = r#"
strategy: canary
stable: v1
canary: v2
sticky: { header: x-user-id }
steps: [{ weight: 50, hold: 1h }, { weight: 100 }]
analysis: { interval: 1s, window: 60s, min_requests: 50, max_error_rate: 0.05, method: z_test }
"#;

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_rolls_back_within_two_intervals_of_min_requests() {
    let (_v1, _v2, rig) = start_rig(0, 300, CANARY_FAILING);
    rig.tick();
    assert_eq!(rig.weight_bp(), 5000);

    let mut seen = Seen::default();
    let mut batch = 0;
    let mut ticks_since_min = 0;
    while rig.weight_bp() != 0 {
        batch += 1;
        assert!(batch < 50, "no rollback after {seen:?}");
        users(rig.proxy(), &format!("b{batch}"), 20, "/", &mut seen).await;
        if seen.canary >= 50 {
            ticks_since_min += 1;
        }
        rig.tick();
        if seen.canary < 50 {
            assert_eq!(rig.weight_bp(), 5000, "rolled back before min_requests");
            assert_eq!(rig.rollout("web")["verdicts"][0]["outcome"], "inconclusive");
        }
    }
    assert!(
        ticks_since_min <= 2,
        "rollback took {ticks_since_min} intervals after min_requests"
    );
    assert!(seen.canary_failed > 0, "the canary did fail: {seen:?}");

    // After the rollback everyone is on stable, and stable never failed anyone.
    users(rig.proxy(), "after", 200, "/", &mut seen).await;
    let after = seen;
    assert_eq!(after.stable_failed, 0, "{after:?}");
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "aborted");
    assert_eq!(st["abort_reason"], "error_rate");
    assert_eq!(st["weight"], 0.0);

    // Audited with the verdict's numbers; counted in metrics.
    let ev = rig.rollout_events();
    let aborted = ev.iter().find(|e| e["event"] == "rollout.aborted").unwrap();
    assert_eq!(aborted["reason"], "error_rate");
    assert_eq!(aborted["actor"], "sluice");
    assert_eq!(aborted["weight"], 0.0);
    assert_eq!(aborted["change"]["version"], 1);
    let v = &aborted["verdict"];
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["rule"], "error_rate");
    assert!(v["canary_requests"].as_u64().unwrap() >= 50, "{v}");
    assert!(v["canary_errors"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["stable_errors"], 0);
    let m = rig.metrics().await;
    for line in [
        "sluice_rollbacks_total{rollout=\"web\",reason=\"error_rate\"} 1",
        "sluice_rollout_weight{rollout=\"web\"} 0",
        "sluice_rollout_phase{rollout=\"web\",phase=\"aborted\"} 1",
        "sluice_rollout_phase{rollout=\"web\",phase=\"progressing\"} 0",
        "sluice_rollout_verdicts_total{rollout=\"web\",verdict=\"failed\"} 1",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    // Final: more ticks change nothing.
    rig.advance(Duration::from_secs(7200));
    rig.tick();
    assert_eq!(rig.weight_bp(), 0);
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_a_failing_canary_is_rolled_back_at_the_first_verdict_with_enough_traffic() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 300);
    let rig = Sluice::builder()
        .traffic(&doc(
            1,
            v1.addr,
            v2.addr,
            &CANARY_FAILING.replace("window: 60s", "window: 10s"),
        ))
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let stable_failed = Arc::new(AtomicU64::new(0));
    let canary_seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let min_reached_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut load = Vec::new();
    for c in 0..4 {
        let (stop, sf, cs, addr, at) = (
            stop.clone(),
            stable_failed.clone(),
            canary_seen.clone(),
            rig.proxy(),
            min_reached_at.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = client
                    .get("/", &[("x-user-id", &format!("c{c}-{i}"))])
                    .await;
                let mut s = Seen::default();
                s.add(&r);
                sf.fetch_add(s.stable_failed, Ordering::Relaxed);
                if s.canary > 0 && cs.fetch_add(1, Ordering::Relaxed) + 1 == 50 {
                    *at.lock().unwrap() = Some(Instant::now());
                }
                // About 400 requests a second in all: min_requests takes a few intervals.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let mut rolled_back_at = None;
    while started.elapsed() < Duration::from_secs(30) {
        if rig.weight_bp() == 0 {
            rolled_back_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Keep serving a moment after the rollback: it must all be stable and healthy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let rolled_back_at = rolled_back_at.expect("the failing canary was rolled back");
    assert_eq!(stable_failed.load(Ordering::Relaxed), 0);

    // The decision came at the first verdict that had min_requests: every earlier verdict
    // (status keeps the last five) was inconclusive.
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "aborted", "{st}");
    let verdicts = st["verdicts"].as_array().unwrap();
    assert_eq!(verdicts[0]["outcome"], "failed", "{st}");
    assert!(verdicts[0]["canary_requests"].as_u64().unwrap() >= 50);
    for v in &verdicts[1..] {
        assert_eq!(v["outcome"], "inconclusive", "{st}");
        assert!(v["canary_requests"].as_u64().unwrap() < 50, "{st}");
    }
    if let Some(min_at) = *min_reached_at.lock().unwrap() {
        // Informational: the interval is 1 s, so this is at most about one interval.
        eprintln!(
            "rollback {:?} after the 50th canary response ({:?} after start)",
            rolled_back_at.saturating_duration_since(min_at),
            rolled_back_at - started
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_to_completed() {
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(
            r#"
steps: [{ weight: 10, hold: 1m }, { weight: 50, hold: 1m }, { weight: 100, hold: 1m }]
analysis: { min_requests: 20, max_error_rate: 0.01, max_error_rate_increase: 0.01, max_p99: 2s }
"#,
        ),
    );
    rig.tick();
    let mut seen = Seen::default();
    for (step, weight) in [(0, 1000), (1, 5000), (2, 10_000)] {
        assert_eq!(rig.weight_bp(), weight, "step {step}");
        let before = seen;
        users(rig.proxy(), &format!("s{step}"), 300, "/", &mut seen).await;
        let canary = seen.canary - before.canary;
        let expected = 300 * u64::from(weight) / 10_000;
        assert!(
            canary.abs_diff(expected) <= 45,
            "step {step}: {canary} of 300 on canary, expected about {expected}"
        );
        // A passed verdict alone does not advance: the hold has not passed.
        rig.tick();
        assert_eq!(rig.rollout("web")["verdicts"][0]["outcome"], "passed");
        assert_eq!(rig.rollout("web")["step"], step);
        assert!(rig.rollout("web")["hold_left_s"].as_f64().unwrap() > 0.0);
        rig.advance(Duration::from_secs(61));
        rig.tick();
    }
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "completed", "{st}");
    assert_eq!(rig.weight_bp(), 10_000);
    assert_eq!(seen.stable_failed + seen.canary_failed, 0);
    assert_eq!(
        rig.event_names(),
        ["rollout.step", "rollout.step", "rollout.completed"]
    );
    let ev = rig.rollout_events();
    assert_eq!(ev[0]["step"], 1);
    assert_eq!(ev[0]["weight"], 50.0);
    assert_eq!(ev[0]["verdict"]["outcome"], "passed");
    assert_eq!(ev[1]["step"], 2);
    assert_eq!(ev[1]["weight"], 100.0);
    let m = rig.metrics().await;
    assert!(
        m.contains("sluice_rollout_phase{rollout=\"web\",phase=\"completed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sluice_rollout_weight{rollout=\"web\"} 100"),
        "{m}"
    );
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_gate_waits_for_promote_and_operators_pause_resume_and_abort() {
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(
            r#"
steps: [{ weight: 10 }, { gate: manual }, { weight: 60, hold: 10m }, { weight: 100 }]
"#,
        ),
    );
    rig.tick();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");
    assert_eq!(rig.rollout("web")["step"], 1);
    assert_eq!(rig.weight_bp(), 1000, "a gate holds the weight before it");
    // Time alone never passes a gate.
    rig.advance(Duration::from_secs(30 * 86_400));
    rig.tick();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");

    // The admin API needs the bearer token; names are checked; states are checked.
    let anon = get(
        rig.inst().admin,
        "/api/v1/rollouts/web/promote",
        &[("host", "127.0.0.1")],
    )
    .await;
    assert_eq!(anon.status, 401);
    let r = rig.act("nope", "promote", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_rollout");
    let r = rig.act("web", "dance", &[]).await;
    assert_eq!(r.status, 404);
    let r = rig.act("web", "resume", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"], "not_paused");
    assert!(r.json()["detail"].as_str().unwrap().contains("not paused"));

    // Promote with the CLI.
    let text = rollout_cli_ok(&rig, "promote", &[]).await;
    assert!(
        text.contains("phase progressing, step 2, weight 60%"),
        "{text}"
    );
    assert_eq!(rig.weight_bp(), 6000);

    // Pause freezes the hold; resume restarts it.
    let r = rig.act("web", "pause", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["phase"], "paused");
    let r = rig.act("web", "pause", &[]).await;
    assert_eq!(r.json()["error"], "already_paused");
    rig.advance(Duration::from_secs(3600));
    rig.tick();
    assert_eq!(rig.phase("web"), "paused");
    assert_eq!(rig.rollout("web")["step"], 2);
    rollout_cli_ok(&rig, "resume", &[]).await;
    rig.advance(Duration::from_secs(5 * 60));
    rig.tick();
    assert_eq!(
        rig.rollout("web")["step"],
        2,
        "the hold restarted at resume"
    );
    assert_eq!(rig.phase("web"), "progressing");

    // Abort: weight 0 at once, final.
    rollout_cli_ok(&rig, "abort", &[]).await;
    assert_eq!(rig.weight_bp(), 0);
    assert_eq!(rig.rollout("web")["abort_reason"], "operator");
    let out = rollout_cli(&rig, "promote", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rollout_finished"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        rig.event_names(),
        [
            "rollout.step",
            "rollout.promoted",
            "rollout.step",
            "rollout.paused",
            "rollout.resumed",
            "rollout.aborted",
        ]
    );
    let ev = rig.rollout_events();
    assert_eq!(ev[1]["actor"], "admin");
    assert_eq!(ev[3]["reason"], "operator");
    assert_eq!(ev[5]["reason"], "operator");
    let actions: Vec<(String, String)> = rig
        .audit()
        .iter()
        .filter(|e| e["event"] == "admin.action")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = actions
        .iter()
        .map(|(a, o)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("promote", "refused"),
            ("resume", "refused"),
            ("promote", "ok"),
            ("pause", "ok"),
            ("pause", "refused"),
            ("resume", "ok"),
            ("abort", "ok"),
            ("promote", "refused"),
        ]
    );
    let m = rig.metrics().await;
    assert!(
        m.contains("sluice_rollbacks_total{rollout=\"web\",reason=\"operator\"} 1"),
        "{m}"
    );
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_in_the_document_freezes_until_a_version_lifts_it() {
    let body = &canary(
        r#"
paused: true
steps: [{ weight: 10, hold: 1m }, { weight: 100 }]
"#,
    );
    let (v1, v2, rig) = start_rig(0, 0, body);
    rig.tick();
    assert_eq!(rig.phase("web"), "paused");
    assert_eq!(rig.rollout("web")["paused_by"], "document");
    assert_eq!(rig.weight_bp(), 1000);
    rig.advance(Duration::from_secs(3600));
    rig.tick();
    assert_eq!(rig.phase("web"), "paused");
    assert_eq!(rig.rollout("web")["step"], 0);
    let r = rig.act("web", "resume", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"], "paused_by_document");

    // A new version without `paused` keeps the progress (same stable, canary, steps) and
    // resumes it; the hold restarts then.
    rig.activate_file(
        &doc(2, v1.addr, v2.addr, &body.replace("paused: true\n", "")),
        2,
    );
    rig.tick();
    assert_eq!(rig.phase("web"), "progressing");
    assert_eq!(rig.rollout("web")["step"], 0);
    rig.advance(Duration::from_secs(61));
    rig.tick();
    assert_eq!(rig.phase("web"), "completed");
    assert_eq!(rig.weight_bp(), 10_000);
    assert_eq!(
        rig.event_names(),
        [
            "rollout.paused",
            "rollout.resumed",
            "rollout.step",
            "rollout.completed"
        ]
    );
    let ev = rig.rollout_events();
    assert_eq!(ev[0]["reason"], "document");
    assert_eq!(ev[1]["paused_by"], "document");
    assert_eq!(ev[1]["change"]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_traffic_stays_inconclusive_never_rolls_back_and_pauses_at_the_limit() {
    // v2 is failing badly, but with too little traffic to judge.
    let (_v1, _v2, rig) = start_rig(
        0,
        500,
        &canary(
            r#"
steps: [{ weight: 50 }, { weight: 100 }]
analysis: { min_requests: 50, max_error_rate: 0.05, inconclusive_limit: 5, method: z_test }
"#,
        ),
    );
    let mut seen = Seen::default();
    for i in 0..4 {
        users(rig.proxy(), &format!("t{i}"), 8, "/", &mut seen).await;
        rig.tick();
        let st = rig.rollout("web");
        assert_eq!(st["phase"], "progressing", "{st}");
        assert_eq!(st["verdicts"][0]["outcome"], "inconclusive");
        assert_eq!(st["consecutive_inconclusive"], i + 1);
        assert_eq!(rig.weight_bp(), 5000);
    }
    assert!(seen.canary_failed > 0, "{seen:?}");
    assert!(seen.canary < 50, "{seen:?}");
    rig.tick();
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "paused", "{st}");
    assert_eq!(st["paused_by"], "inconclusive");
    assert_eq!(rig.weight_bp(), 5000, "pausing keeps the weight");
    rig.tick();
    assert_eq!(rig.phase("web"), "paused");
    assert_eq!(rig.event_names(), ["rollout.paused"]);
    let ev = rig.rollout_events();
    assert_eq!(ev[0]["reason"], "inconclusive");
    assert_eq!(ev[0]["verdict"]["outcome"], "inconclusive");
    let m = rig.metrics().await;
    assert!(
        m.contains("sluice_rollout_verdicts_total{rollout=\"web\",verdict=\"inconclusive\"} 6"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_error_in_sixty_against_a_clean_stable_does_not_roll_back() {
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(
            r#"
canary_match: { headers: { x-canary: always } }
steps: [{ gate: manual }, { weight: 100 }]
analysis: { min_requests: 60, max_error_rate_increase: 0.01, confidence: 0.99, method: z_test }
"#,
        ),
    );
    rig.tick();
    assert_eq!(rig.weight_bp(), 0);
    // SPEC §6's worked example: 0 errors in 1140 stable, 1 in 60 canary.
    let mut seen = Seen::default();
    users(rig.proxy(), "s", 1140, "/", &mut seen).await;
    let mut c = Client::connect(rig.proxy()).await;
    for i in 0..60 {
        let path = if i == 30 { "/fail" } else { "/" };
        seen.add(&c.get(path, &[("x-canary", "always")]).await);
    }
    assert_eq!(
        (seen.stable, seen.canary, seen.canary_failed),
        (1140, 60, 1)
    );
    rig.tick();
    let st = rig.rollout("web");
    let v = &st["verdicts"][0];
    assert_eq!(v["outcome"], "passed", "{st}");
    assert_eq!(
        (
            &v["canary_requests"],
            &v["canary_errors"],
            &v["stable_requests"],
            &v["stable_errors"]
        ),
        (&60.into(), &1.into(), &1140.into(), &0.into())
    );
    let z = v["z"].as_f64().unwrap();
    assert!((z - 0.40).abs() < 0.01, "z = {z}");
    assert!((v["z_critical"].as_f64().unwrap() - 2.326).abs() < 0.001);
    assert_eq!(st["phase"], "waiting_for_promotion");
    assert!(
        st["last_verdict"].as_str().unwrap().starts_with(
            "passed: canary 1/60 errors (1.67%), stable 0/1140 (0.00%), z 0.40 ≤ 2.33"
        ),
        "{st}"
    );

    // The same rule does react to a real increase: 18 in 78.
    for _ in 0..17 {
        seen.add(&c.get("/fail", &[("x-canary", "always")]).await);
    }
    rig.tick();
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "aborted", "{st}");
    assert_eq!(st["abort_reason"], "error_rate_increase");
    assert_eq!(seen.stable_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_resumes_at_the_same_step_with_the_hold_running() {
    let (_v1, _v2, mut rig) = start_rig(
        0,
        0,
        &canary(
            r#"
steps: [{ weight: 10, hold: 1m }, { weight: 30, hold: 10m }, { weight: 100 }]
"#,
        ),
    );
    rig.tick();
    rig.advance(Duration::from_secs(61));
    rig.tick();
    assert_eq!(rig.rollout("web")["step"], 1);
    assert_eq!(rig.weight_bp(), 3000);
    rig.advance(Duration::from_secs(3 * 60));

    rig.restart();
    // Serving at step 1 from the first request, before any tick.
    assert_eq!(rig.weight_bp(), 3000);
    assert_eq!(rig.rollout("web")["step"], 1);
    assert_eq!(rig.phase("web"), "progressing");
    let mut seen = Seen::default();
    users(rig.proxy(), "r", 200, "/", &mut seen).await;
    assert!(seen.canary > 20 && seen.stable > 100, "{seen:?}");

    // 9 minutes into the 10-minute hold (3 before the restart): not yet.
    rig.advance(Duration::from_secs(6 * 60));
    rig.tick();
    assert_eq!(rig.rollout("web")["step"], 1);
    // 11 minutes: the hold counted the time across the restart.
    rig.advance(Duration::from_secs(2 * 60));
    rig.tick();
    assert_eq!(rig.phase("web"), "completed");
    assert_eq!(rig.weight_bp(), 10_000);
    assert_eq!(
        rig.event_names(),
        ["rollout.step", "rollout.step", "rollout.completed"]
    );
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_rollout_stays_aborted_until_a_version_changes_it() {
    let body = &canary(
        r#"
steps: [{ weight: 20 }, { gate: manual }, { weight: 100 }]
"#,
    );
    let (v1, v2, mut rig) = start_rig(0, 0, body);
    rig.tick();
    assert_eq!(rig.act("web", "abort", &[]).await.status, 200);
    assert_eq!(rig.weight_bp(), 0);

    // A restart keeps it aborted.
    rig.restart();
    assert_eq!(rig.weight_bp(), 0);
    assert_eq!(rig.phase("web"), "aborted");

    // A version that leaves the rollout alone (here: a new route) keeps it aborted.
    let other = doc(2, v1.addr, v2.addr, body).replace(
        "routes:\n",
        "routes:\n  - name: api\n    match: { path_prefix: /api }\n    to: { upstream: v1 }\n",
    );
    rig.activate_file(&other, 2);
    rig.tick();
    assert_eq!(rig.phase("web"), "aborted");
    assert_eq!(rig.weight_bp(), 0);

    // A version that changes the rollout starts it again at step 0.
    let changed = doc(
        3,
        v1.addr,
        v2.addr,
        &body.replace("weight: 20", "weight: 5"),
    );
    rig.activate_file(&changed, 3);
    rig.tick();
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "waiting_for_promotion", "{st}");
    assert_eq!(st["step"], 1);
    assert_eq!(rig.weight_bp(), 500);
}

const BLUE_GREEN: &str = r#"
strategy: blue_green
active: v1
preview: v2
sticky: { header: x-user-id }
preview_match: { headers: { x-preview: s3cret } }
promote: { after: 1m }
post_promotion_window: 2m
analysis: { min_requests: 20, max_error_rate: 0.02 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_promotes_after_analysis_and_swaps_back_on_failure() {
    let (_v1, v2, rig) = start_rig(0, 0, BLUE_GREEN);
    rig.tick();
    assert_eq!(rig.weight_bp(), 0);

    // Before promotion only preview_match reaches preview.
    let mut seen = Seen::default();
    users(rig.proxy(), "u", 200, "/", &mut seen).await;
    assert_eq!((seen.stable, seen.canary), (200, 0));
    let mut c = Client::connect(rig.proxy()).await;
    for _ in 0..30 {
        seen.add(&c.get("/", &[("x-preview", "s3cret")]).await);
    }
    assert_eq!(seen.canary, 30);
    // Passed, but `after` has not passed: still waiting.
    rig.tick();
    assert_eq!(rig.rollout("web")["verdicts"][0]["outcome"], "passed");
    assert_eq!(rig.weight_bp(), 0);
    rig.advance(Duration::from_secs(61));
    rig.tick();
    // Promoted: the whole swap in one store.
    assert_eq!(rig.weight_bp(), 10_000);
    assert_eq!(rig.rollout("web")["step"], 1);
    let before = seen;
    users(rig.proxy(), "p", 100, "/", &mut seen).await;
    assert_eq!(seen.canary - before.canary, 100);

    // The preview breaks inside the post-promotion window: swapped back at the next verdict.
    v2.set_fail_per_mille(1000);
    users(rig.proxy(), "f", 20, "/", &mut seen).await;
    rig.tick();
    assert_eq!(rig.weight_bp(), 0);
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "aborted");
    assert_eq!(st["abort_reason"], "error_rate");
    let before = seen;
    users(rig.proxy(), "back", 100, "/", &mut seen).await;
    assert_eq!(seen.stable - before.stable, 100);
    assert_eq!(seen.stable_failed, 0);

    assert_eq!(rig.event_names(), ["rollout.promoted", "rollout.aborted"]);
    let ev = rig.rollout_events();
    assert_eq!(ev[0]["weight"], 100.0);
    assert_eq!(ev[0]["verdict"]["outcome"], "passed");
    assert_eq!(ev[1]["swapped_back"], true);
    assert_eq!(ev[1]["weight"], 0.0);
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_manual_promotion_needs_a_passed_preview_and_completes_after_the_window() {
    let (_v1, _v2, rig) = start_rig(0, 0, &BLUE_GREEN.replace("after: 1m", "manual: true"));
    rig.tick();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"], "analysis_not_passed");
    let mut c = Client::connect(rig.proxy()).await;
    let mut seen = Seen::default();
    for _ in 0..25 {
        seen.add(&c.get("/", &[("x-preview", "s3cret")]).await);
    }
    rig.tick();
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["weight"], 100.0);
    assert_eq!(rig.weight_bp(), 10_000);
    rig.advance(Duration::from_secs(60));
    rig.tick();
    assert_eq!(rig.phase("web"), "progressing", "inside the window");
    rig.advance(Duration::from_secs(61));
    rig.tick();
    assert_eq!(rig.phase("web"), "completed");
    assert_eq!(rig.weight_bp(), 10_000);
    assert_eq!(
        rig.event_names(),
        ["rollout.step", "rollout.promoted", "rollout.completed"]
    );
    let ev = rig.rollout_events();
    assert_eq!(ev[0]["phase"], "waiting_for_promotion");
    assert_eq!(ev[0]["step"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_approvals_required_promote_needs_a_single_use_promote_token() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let text = doc(
        1,
        v1.addr,
        v2.addr,
        &canary(
            r#"
steps: [{ weight: 10 }, { gate: manual }, { weight: 100 }]
"#,
        ),
    );
    let mut rig = Sluice::builder().traffic(&text).manual_ticks().start();
    rig.tick();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");

    // Restart with approvals required: the persisted document is restored (it was
    // activated before), the rollout waits at its gate, and promote now needs a token.
    let bob = sluice::change::keys::generate().unwrap();
    rig.settings_yaml = settings_yaml(
        rig.dir.path(),
        &format!(
            "trust:\n  require_approvals: true\n  environment: test\n  principals:\n    \
             bob: {{ keys: [\"{}\"], roles: [release-manager] }}\n",
            sluice::change::keys::public_key_line(&bob.verifying_key())
        ),
    );
    rig.restart();
    assert_eq!(rig.version(), 1);
    assert_eq!(rig.phase("web"), "waiting_for_promotion");

    let now = rig.clock.unix_secs();
    let mint = |key: &ed25519_dalek::SigningKey, who: &str, act: Act, step: u64, ver: u64| {
        let c = Claims::new(who, "test", text.as_bytes(), ver, act, now, 3600);
        let c = if act == Act::Promote {
            c.with_target("web", step)
        } else {
            c
        };
        token::sign(&c, key)
    };
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "insufficient_approvals");
    let r = rig
        .act("web", "promote", &[("sluice-approval", "not-a-jws")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "malformed_token");
    let wrong_step = mint(&bob, "bob", Act::Promote, 2, 1);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &wrong_step)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "wrong_target");
    let approve = mint(&bob, "bob", Act::Approve, 1, 1);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &approve)])
        .await;
    assert_eq!(r.json()["error"], "wrong_action");
    let other_version = mint(&bob, "bob", Act::Promote, 1, 2);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &other_version)])
        .await;
    assert_eq!(r.json()["error"], "wrong_version");
    assert_eq!(rig.phase("web"), "waiting_for_promotion");

    let good = mint(&bob, "bob", Act::Promote, 1, 1);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &good)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rig.weight_bp(), 10_000);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &good)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "token_reused");

    let audit = rig.audit();
    let ok = audit
        .iter()
        .find(|e| e["event"] == "admin.action" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(ok["actor"], "bob");
    assert_eq!(ok["approval"]["principal"], "bob");
    assert_eq!(ok["approval"]["step"], 1);
    let promoted = audit
        .iter()
        .find(|e| e["event"] == "rollout.promoted")
        .unwrap();
    assert_eq!(promoted["actor"], "bob");
    // The used token is remembered in state/ across restarts.
    rig.restart();
    let saved = std::fs::read_to_string(rig.dir.path().join("state/rollouts.json")).unwrap();
    assert!(saved.contains("promotions_used"), "{saved}");
    assert_eq!(rig.phase("web"), "completed");
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_api_shows_rollouts_with_their_verdict_numbers() {
    let (v1, v2, rig) = start_rig(0, 0, CANARY_FAILING);
    let mut seen = Seen::default();
    users(rig.proxy(), "u", 200, "/", &mut seen).await;
    rig.tick();
    let mut c = Client::connect(rig.inst().admin).await;
    let r = c
        .get(
            "/api/v1/status",
            &[
                ("host", "127.0.0.1"),
                (
                    "authorization",
                    &format!("Bearer {}", rig.inst().admin_token),
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let ro = &v["rollouts"][0];
    assert_eq!(ro["name"], "web");
    assert_eq!(ro["phase"], "progressing");
    assert_eq!(ro["weight"], 50.0);
    assert_eq!(ro["step"], 0);
    assert_eq!(ro["window"]["canary"]["requests"], seen.canary);
    assert_eq!(ro["window"]["stable"]["requests"], seen.stable);
    assert_eq!(ro["verdicts"][0]["canary_requests"], seen.canary);
    assert!(
        ro["last_verdict"]
            .as_str()
            .unwrap()
            .starts_with("passed: canary 0/"),
        "{ro}"
    );
    let table = sluice::cli::client::render_status(&v);
    assert!(table.contains("web"), "{table}");
    assert!(table.contains("progressing"), "{table}");
    assert!(table.contains("passed: canary"), "{table}");

    // A reload that keeps the rollout keeps its windows and verdicts.
    let other = doc(2, v1.addr, v2.addr, CANARY_FAILING).replace(
        "routes:\n",
        "routes:\n  - name: api\n    match: { path_prefix: /api }\n    to: { upstream: v1 }\n",
    );
    rig.activate_file(&other, 2);
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(ro["window"]["canary"]["requests"], seen.canary, "{ro}");
    assert_eq!(ro["verdicts"].as_array().unwrap().len(), 2, "{ro}");
    assert_eq!(ro["verdicts"][0]["canary_requests"], seen.canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_pause_keeps_the_weight_and_waits_for_an_operator() {
    let (_v1, _v2, rig) = start_rig(
        0,
        300,
        &format!("{}on_failure: pause\n", CANARY_FAILING.trim_start()),
    );
    let mut seen = Seen::default();
    users(rig.proxy(), "u", 200, "/", &mut seen).await;
    assert!(seen.canary >= 50, "{seen:?}");
    rig.tick();
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "paused", "{st}");
    assert_eq!(st["paused_by"], "analysis_failed");
    assert_eq!(rig.weight_bp(), 5000);
    let ev = rig.rollout_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["event"], "rollout.paused");
    assert_eq!(ev[0]["reason"], "analysis_failed");
    assert_eq!(ev[0]["rule"], "error_rate");
    // The operator decides: abort sends everyone back to stable.
    assert_eq!(rig.act("web", "abort", &[]).await.status, 200);
    assert_eq!(rig.weight_bp(), 0);
}

// === sequential analysis (the default method) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_rolls_back_an_all_failing_canary_at_low_traffic_before_min_requests() {
    let (_v1, _v2, rig) = start_rig(
        0,
        1000,
        &canary(
            r#"
steps: [{ weight: 50, hold: 1h }, { weight: 100 }]
analysis: { min_requests: 50, max_error_rate: 0.05, max_error_rate_increase: 0.01 }
"#,
        ),
    );
    rig.tick();
    // A trickle: four users a tick, about two of them on the canary.
    let mut seen = Seen::default();
    let mut batch = 0;
    while rig.weight_bp() != 0 {
        batch += 1;
        assert!(batch < 20, "no rollback after {seen:?}");
        users(rig.proxy(), &format!("b{batch}"), 4, "/", &mut seen).await;
        rig.tick();
    }
    assert!(seen.canary < 20, "{seen:?}");
    assert_eq!(seen.canary_failed, seen.canary);
    let st = rig.rollout("web");
    assert_eq!(st["phase"], "aborted", "{st}");
    let v = &st["verdicts"][0];
    assert_eq!(v["outcome"], "failed", "{st}");
    assert!(v["canary_requests"].as_u64().unwrap() < 50, "{st}");
    let e = &v["sequential"];
    assert!(
        e["log10_e"].as_f64().unwrap() >= e["log10_threshold"].as_f64().unwrap(),
        "{st}"
    );
    assert!(
        (e["log10_threshold"].as_f64().unwrap() - 2.0).abs() < 0.1,
        "{st}"
    );
    assert!(
        st["last_verdict"].as_str().unwrap().contains("e-value"),
        "{st}"
    );
    let ev = rig.rollout_events();
    let aborted = ev.iter().find(|e| e["event"] == "rollout.aborted").unwrap();
    assert!(aborted["verdict"]["sequential"]["log10_e"].is_number());
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_passes_a_healthy_canary_with_a_little_noise_and_advances() {
    // Both sides fail 1% in the same pattern: A/A. With enough traffic the step passes.
    let (_v1, _v2, rig) = start_rig(
        10,
        10,
        &canary(
            r#"
steps: [{ weight: 50, hold: 10s }, { weight: 100 }]
analysis: { min_requests: 50, max_error_rate: 0.05, max_error_rate_increase: 0.01 }
"#,
        ),
    );
    rig.tick();
    let mut seen = Seen::default();
    users(rig.proxy(), "a", 300, "/", &mut seen).await;
    rig.tick();
    let st = rig.rollout("web");
    assert_eq!(st["verdicts"][0]["outcome"], "passed", "{st}");
    assert!(st["verdicts"][0]["sequential"]["log10_e"].as_f64().unwrap() < 0.0);
    rig.advance(Duration::from_secs(11));
    users(rig.proxy(), "b", 20, "/", &mut seen).await;
    rig.tick();
    rig.tick();
    assert_eq!(rig.weight_bp(), 10_000, "{}", rig.rollout("web"));
    assert!(seen.canary_failed > 0 && seen.stable_failed > 0, "{seen:?}");
}

/// A check endpoint for `provider: web`: answers `{"ok": true}`, `{"ok": false}`, or 503
/// (the provider is down), as the test sets it.
fn check_server(mode: Arc<AtomicU64>) -> SocketAddr {
    http_server(move |req: Request<Incoming>| {
        let m = mode.load(Ordering::Relaxed);
        // The template filled in the rollout's name.
        let named = req.uri().query() == Some("rollout=web");
        async move {
            let (status, body) = match m {
                _ if !named => (StatusCode::NOT_FOUND, "{}"),
                0 => (StatusCode::OK, r#"{"checks": {"ok": true}}"#),
                1 => (StatusCode::OK, r#"{"checks": {"ok": false}}"#),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "down"),
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp
        }
    })
}

/// Polls the rollout's status until `pred` holds (deadline 30 s).
async fn wait_status(rig: &Sluice, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rig.rollout("web");
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `analysis.metrics` with `provider: web` on the real timer: a provider that is down holds
/// the rollout (inconclusive, weight unchanged, never a rollback); a passing check lets it
/// advance; a failing one rolls it back with reason `metric`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_metric_check_holds_when_down_advances_when_passing_and_rolls_back_when_failing() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let mode = Arc::new(AtomicU64::new(2));
    let check = check_server(mode.clone());
    let rollout = format!(
        r#"
strategy: canary
stable: v1
canary: v2
sticky: {{ header: x-user-id }}
steps: [{{ weight: 20 }}, {{ weight: 50, hold: 1h }}, {{ weight: 100 }}]
analysis:
  interval: 200ms
  window: 5s
  min_requests: 0
  metrics:
    - name: smoke
      provider: web
      url: "http://{check}/check?rollout={{{{rollout}}}}"
      json_path: $.checks.ok
      condition: result == true
      interval: 100ms
      timeout: 2s
"#
    );
    let rig = Sluice::builder()
        .traffic(&doc(1, v1.addr, v2.addr, &rollout))
        .start();
    // Down: inconclusive verdicts naming the error, and nothing moves.
    let s = wait_status(
        &rig,
        "an inconclusive verdict with the provider error",
        |s| {
            s["last_verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with("inconclusive") && v.contains("answered 503"))
        },
    )
    .await;
    assert_eq!(s["verdicts"][0]["metrics"][0]["state"], "error", "{s:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = rig.rollout("web");
    assert_eq!(
        (s["phase"].as_str(), s["step"].as_u64()),
        (Some("progressing"), Some(0)),
        "{s:#}"
    );
    assert_eq!(rig.weight_bp(), 2000);

    // Passing: the step advances.
    mode.store(0, Ordering::Relaxed);
    let s = wait_status(&rig, "step 1 once the check passes", |s| s["step"] == 1).await;
    assert_eq!(s["phase"], "progressing", "{s:#}");
    assert_eq!(rig.weight_bp(), 5000);

    // Failing: rolled back, the metric named as the reason.
    mode.store(1, Ordering::Relaxed);
    let s = wait_status(&rig, "a rollback on the failing check", |s| {
        s["phase"] == "aborted"
    })
    .await;
    assert_eq!(s["abort_reason"], "metric", "{s:#}");
    assert_eq!(rig.weight_bp(), 0);
    let rollback = rig
        .rollout_events()
        .into_iter()
        .find(|e| e["event"] == "rollout.aborted")
        .expect("a rollback in the audit log");
    assert!(
        rollback.to_string().contains("smoke"),
        "the audit names the check: {rollback:#}"
    );
    rig.verify_audit_chain();
}

/// A notification receiver: records each POST's signature header and body.
type Received = Arc<std::sync::Mutex<Vec<(Option<String>, Bytes)>>>;

fn receiver(got: Received) -> SocketAddr {
    http_server(move |req: Request<Incoming>| {
        let got = got.clone();
        async move {
            let sig = req
                .headers()
                .get("x-sluice-signature")
                .map(|v| v.to_str().unwrap().to_string());
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            got.lock().unwrap().push((sig, body));
            Response::new(Full::new(Bytes::new()))
        }
    })
}

/// Notifications: matching audit events reach a real receiver, signed with HMAC-SHA256 of
/// the exact body; a dead receiver (nothing listening) delays neither an activation nor an
/// operator's abort, and its failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_signed_and_a_dead_receiver_blocks_nothing() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let got: Received = Default::default();
    let recv = receiver(got.clone());
    // Refused for the whole test: a port bound and released could be taken by another process.
    let (_dead_guard, dead) = refusing_addr();
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("hook.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let text = format!(
        "{}notifications:\n  - {{ url: \"http://{recv}/hook\", events: [\"change.activated\", \"rollout.*\"], secret_file: \"{}\" }}\n  - {{ url: \"http://{dead}/\", events: [\"*\"], timeout: 1s }}\n",
        doc(
            1,
            v1.addr,
            v2.addr,
            "strategy: canary\nstable: v1\ncanary: v2\nsteps: [{ gate: manual }, { weight: 100 }]"
        ),
        key.display()
    );
    let started = Instant::now();
    let rig = Sluice::builder().traffic(&text).manual_ticks().start();
    rig.tick();
    let r = rig.act("web", "abort", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "activation and abort took {:?}",
        started.elapsed()
    );
    assert_eq!(rig.phase("web"), "aborted");
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events: Vec<(Option<String>, Bytes)> = got.lock().unwrap().clone();
        let names: Vec<String> = events
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if names.iter().any(|n| n == "rollout.aborted") {
            assert!(names.contains(&"change.activated".to_string()), "{names:?}");
            assert!(
                names
                    .iter()
                    .all(|n| n == "change.activated" || n.starts_with("rollout.")),
                "only the events asked for: {names:?}"
            );
            break events;
        }
        assert!(Instant::now() < deadline, "received only {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Each body is the audit line as written, signed over its exact bytes.
    let audit = std::fs::read_to_string(rig.dir.path().join("state/audit.jsonl")).unwrap();
    for (sig, body) in &events {
        let want = format!(
            "sha256={}",
            hex::encode(sluice::notify::hmac_sha256(b"s3cret-key", body))
        );
        assert_eq!(sig.as_deref(), Some(want.as_str()));
        assert!(
            audit.lines().any(|l| l.as_bytes() == &body[..]),
            "not an audit line: {}",
            String::from_utf8_lossy(body)
        );
    }
    // The dead receiver: given up after its retries, counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rig.metrics().await.lines().any(|l| {
        l.starts_with("sluice_notifications_total{result=\"failed\"}") && !l.ends_with(" 0")
    }) {
        assert!(Instant::now() < deadline, "{}", rig.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === hooks ===

/// A webhook endpoint: answers each path with the status the test sets (404 for a path it
/// was not told about) and records every call's path and JSON body.
#[derive(Clone, Default)]
struct HookServer {
    statuses: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u16>>>,
    calls: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl HookServer {
    fn start(&self) -> SocketAddr {
        let me = self.clone();
        http_server(move |req: Request<Incoming>| {
            let me = me.clone();
            async move {
                let path = req.uri().path().to_string();
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                me.calls.lock().unwrap().push((path.clone(), body));
                let status = me.statuses.lock().unwrap().get(&path).copied();
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::from_u16(status.unwrap_or(404)).unwrap();
                resp
            }
        })
    }

    fn set(&self, path: &str, status: u16) {
        self.statuses
            .lock()
            .unwrap()
            .insert(path.to_string(), status);
    }

    /// The bodies POSTed to `path` so far.
    fn calls(&self, path: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits (deadline 30 s) until `path` was called at least `n` times.
    async fn wait_calls(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.calls(path);
            if c.len() >= n {
                return c;
            }
            assert!(Instant::now() < deadline, "{path} called {} times", c.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `rollout.hook` audit events, as (hook, result).
fn hook_events(rig: &Sluice, rollout: &str) -> Vec<(String, String)> {
    rig.rollout_events()
        .iter()
        .filter(|e| e["event"] == "rollout.hook" && e["rollout"] == rollout)
        .map(|e| {
            (
                e["hook"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Flagger-style hooks on the real timer, through an instance and its listener: the canary
/// gets no traffic until `confirm_rollout` answers 2xx and `pre_rollout` passed; every
/// weight step waits for its `rollout` hook; the move to 100% waits for
/// `confirm_promotion`; `post_rollout` hears the success. Payloads are Flagger's; every
/// result is audited and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_gate_the_start_each_step_and_the_promotion_and_report_the_end() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let hooks = HookServer::default();
    let h = hooks.start();
    hooks.set("/confirm", 403);
    hooks.set("/pre", 200);
    hooks.set("/load", 200);
    hooks.set("/promote", 409);
    hooks.set("/post", 200);
    let rollout = format!(
        r#"
strategy: canary
stable: v1
canary: v2
sticky: {{ header: x-user-id }}
steps: [{{ weight: 20 }}, {{ weight: 50 }}, {{ weight: 100 }}]
analysis: {{ interval: 200ms, window: 5s, min_requests: 0, max_error_rate: 0.5 }}
hooks:
  confirm_rollout: [{{ url: "http://{h}/confirm", timeout: 2s }}]
  pre_rollout: [{{ url: "http://{h}/pre", metadata: {{ suite: smoke }} }}]
  rollout: [{{ url: "http://{h}/load" }}]
  confirm_promotion: [{{ url: "http://{h}/promote" }}]
  post_rollout: [{{ url: "http://{h}/post" }}]
"#
    );
    let rig = Sluice::builder()
        .traffic(&doc(1, v1.addr, v2.addr, &rollout))
        .start();
    // Not confirmed: polled, weight 0, every request served by stable.
    hooks.wait_calls("/confirm", 2).await;
    let s = rig.rollout("web");
    assert_eq!(
        (s["phase"].as_str(), s["waiting_for"].as_str()),
        (Some("progressing"), Some("start_hooks")),
        "{s:#}"
    );
    assert_eq!(rig.weight_bp(), 0);
    let mut seen = Seen::default();
    users(rig.proxy(), "before", 20, "/", &mut seen).await;
    assert_eq!((seen.stable, seen.canary), (20, 0), "{seen:?}");
    assert!(
        hooks.calls("/pre").is_empty(),
        "pre_rollout before confirmation"
    );
    let c = &hooks.calls("/confirm")[0];
    assert_eq!(c["type"], "confirm-rollout", "{c:#}");
    assert_eq!(c["name"], "web");
    assert_eq!(c["metadata"]["version"], "1");
    let digest = rig
        .inst()
        .shared
        .snapshot
        .load_full()
        .unwrap()
        .digest
        .clone();
    assert_eq!(c["checksum"].as_str(), Some(digest.as_str()), "{c:#}");

    // Confirmed: pre_rollout, then each step's rollout hook, up to the promotion gate.
    hooks.set("/confirm", 200);
    let s = wait_status(&rig, "waiting for confirm_promotion at step 1", |s| {
        s["waiting_for"] == "confirm_promotion"
    })
    .await;
    assert_eq!(
        (s["phase"].as_str(), s["step"].as_u64()),
        (Some("progressing"), Some(1)),
        "{s:#}"
    );
    assert_eq!(rig.weight_bp(), 5000);
    let pre = hooks.calls("/pre");
    assert_eq!(pre.len(), 1, "{pre:#?}");
    assert_eq!(pre[0]["type"], "pre-rollout");
    assert_eq!(pre[0]["metadata"]["suite"], "smoke");
    let load = hooks.calls("/load");
    let steps: Vec<&str> = load
        .iter()
        .map(|b| b["metadata"]["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["0", "1"], "one rollout hook per step");
    hooks.wait_calls("/promote", 2).await;
    assert_eq!(rig.weight_bp(), 5000, "not promoted before confirmation");

    // Promotion confirmed: 100%, its step's hook, completed; post_rollout hears it.
    hooks.set("/promote", 200);
    wait_status(&rig, "completed", |s| s["phase"] == "completed").await;
    assert_eq!(rig.weight_bp(), 10000);
    let post = hooks.wait_calls("/post", 1).await;
    assert_eq!(post[0]["type"], "post-rollout");
    assert_eq!(post[0]["phase"], "Succeeded");
    // Audited: the refusals once each, every pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = hook_events(&rig, "web");
        let has = |h: &str, r: &str| ev.iter().filter(|(a, b)| a == h && b == r).count();
        if has("post_rollout", "passed") == 1 {
            assert_eq!(has("confirm_rollout", "waiting"), 1, "{ev:?}");
            assert_eq!(has("confirm_rollout", "passed"), 1, "{ev:?}");
            assert_eq!(has("pre_rollout", "passed"), 1, "{ev:?}");
            assert_eq!(has("rollout", "passed"), 3, "{ev:?}");
            assert_eq!(has("confirm_promotion", "waiting"), 1, "{ev:?}");
            assert_eq!(has("confirm_promotion", "passed"), 1, "{ev:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{ev:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.verify_audit_chain();
}

/// A dead hook endpoint degrades only the rollout whose hook it is: `web` (dead
/// `confirm_rollout`) waits at weight 0 and serves stable, `api` (dead `pre_rollout`) is
/// rolled back with reason `hook` after its retries, while `plain` (no hooks) completes;
/// `pay`'s `rollback` hook rolls it back the moment it answers 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hook_degrades_only_its_rollout_and_a_rollback_hook_rolls_back() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let hooks = HookServer::default();
    let h = hooks.start();
    // Refused for the whole test: a port bound and released could be taken by another process.
    let (_dead_guard, dead) = refusing_addr();
    let (a, b) = (v1.addr, v2.addr);
    let text = format!(
        r#"version: 1
change: {{ id: CHG-1, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{a}"] }}
  v2: {{ endpoints: ["{b}"] }}
routes:
  - {{ name: web, match: {{ path_prefix: /web }}, to: {{ rollout: web }} }}
  - {{ name: api, match: {{ path_prefix: /api }}, to: {{ rollout: api }} }}
  - {{ name: pay, match: {{ path_prefix: /pay }}, to: {{ rollout: pay }} }}
  - {{ name: plain, to: {{ rollout: plain }} }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 50 }}, {{ weight: 100 }}]
    hooks: {{ confirm_rollout: [{{ url: "http://{dead}/confirm", timeout: 500ms }}] }}
  api:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 50, hold: 1h }}]
    hooks: {{ pre_rollout: [{{ url: "http://{dead}/pre", timeout: 500ms, retries: 1 }}] }}
  pay:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 30, hold: 1h }}]
    hooks: {{ rollback: [{{ url: "http://{h}/rollback" }}] }}
  plain:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 10 }}, {{ weight: 100 }}]
"#
    );
    let rig = Sluice::builder().traffic(&text).start();
    let status = |name: &str| rig.rollout(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("plain")["phase"] != "completed" || status("api")["phase"] != "aborted" {
        assert!(
            Instant::now() < deadline,
            "{:#} {:#}",
            status("plain"),
            status("api")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status("api")["abort_reason"], "hook");
    let api_hooks = hook_events(&rig, "api");
    assert_eq!(
        api_hooks,
        [("pre_rollout".to_string(), "failed".to_string())]
    );
    let failed = rig
        .rollout_events()
        .into_iter()
        .find(|e| e["event"] == "rollout.hook" && e["rollout"] == "api")
        .unwrap();
    assert_eq!(
        failed["run"]["tries"], 2,
        "retries: 1 is two tries: {failed:#}"
    );
    // web: still waiting, weight 0, stable serves.
    let w = status("web");
    assert_eq!(
        (w["phase"].as_str(), w["waiting_for"].as_str()),
        (Some("progressing"), Some("start_hooks")),
        "{w:#}"
    );
    let snap = rig.inst().shared.snapshot.load_full().unwrap();
    let web_weight = snap
        .rollouts
        .iter()
        .find(|r| &*r.name == "web")
        .unwrap()
        .weight();
    let mut c = Client::connect(rig.proxy()).await;
    for i in 0..10 {
        let r = c.get("/web/x", &[("x-user-id", &format!("u{i}"))]).await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"v1"[..]));
    }
    assert_eq!(web_weight, 0);

    // pay: serving its step until the rollback hook says 2xx.
    hooks.wait_calls("/rollback", 2).await;
    assert_eq!(status("pay")["phase"], "progressing");
    hooks.set("/rollback", 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("pay")["phase"] != "aborted" {
        assert!(Instant::now() < deadline, "{:#}", status("pay"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status("pay")["abort_reason"], "hook");
    let r = hook_events(&rig, "pay");
    assert!(
        r.contains(&("rollback".to_string(), "rollback".to_string())),
        "{r:?}"
    );
    assert!(
        rig.metrics()
            .await
            .contains("sluice_rollbacks_total{rollout=\"pay\",reason=\"hook\"} 1"),
        "{}",
        rig.metrics().await
    );
    rig.verify_audit_chain();
}

/// Manual ticks (the tests' deterministic mode) make the outbound calls too: each tick first
/// runs the hooks that are due and fetches every metric check, to their end, then judges —
/// so one tick is one interval and every result is known at the tick. A canary walks
/// pre_rollout → step 0's rollout hook → confirm_promotion (refused, then confirmed) →
/// step 1's rollout hook → completed → post_rollout, tick by tick; each call is counted in
/// `sluice_hook_calls_total` / `sluice_hook_duration_seconds`, with # HELP, and the
/// exposition passes promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_ticks_run_hooks_and_metric_checks_each_tick_and_count_every_call() {
    let hooks = HookServer::default();
    let h = hooks.start();
    for (path, status) in [
        ("/pre", 200),
        ("/load", 200),
        ("/promote", 409),
        ("/post", 200),
    ] {
        hooks.set(path, status);
    }
    let mode = Arc::new(AtomicU64::new(0));
    let check = check_server(mode.clone());
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(&format!(
            r#"
steps: [{{ weight: 20 }}, {{ weight: 100 }}]
analysis:
  min_requests: 0
  metrics:
    - {{ name: smoke, provider: web, url: "http://{check}/check?rollout={{{{rollout}}}}",
        json_path: $.checks.ok, condition: "result == true", interval: 1h }}
hooks:
  pre_rollout: [{{ url: "http://{h}/pre" }}]
  rollout: [{{ url: "http://{h}/load" }}]
  confirm_promotion: [{{ url: "http://{h}/promote" }}]
  post_rollout: [{{ url: "http://{h}/post" }}]
"#
        )),
    );
    let calls = |p: &str| hooks.calls(p).len();
    // Tick 1: pre_rollout ran and passed, so step 0 began (its verdict comes next tick).
    rig.tick();
    assert_eq!(calls("/pre"), 1);
    let s = rig.rollout("web");
    assert_eq!(
        (s["step"].as_u64(), rig.weight_bp()),
        (Some(0), 2000),
        "{s:#}"
    );
    assert_eq!(s["verdicts"][0]["metrics"][0]["state"], "passed", "{s:#}");
    // Tick 2: step 0's rollout hook passed, the check passed (fetched again: `interval: 1h`
    // is real time, a manual tick is one interval); the promotion gate is next.
    rig.tick();
    assert_eq!(calls("/load"), 1);
    assert_eq!(rig.rollout("web")["waiting_for"], "confirm_promotion");
    // Ticks 3 and 4: confirm_promotion polled once per tick, refused.
    rig.tick();
    rig.tick();
    assert_eq!(calls("/promote"), 2);
    assert_eq!(rig.weight_bp(), 2000);
    // Confirmed: 100% at the next tick, its rollout hook and completion at the one after.
    hooks.set("/promote", 200);
    rig.tick();
    assert_eq!(rig.weight_bp(), 10_000);
    rig.tick();
    assert_eq!(calls("/load"), 2);
    assert_eq!(rig.phase("web"), "completed");
    rig.tick();
    assert_eq!(calls("/post"), 1);
    assert_eq!(hooks.calls("/post")[0]["phase"], "Succeeded");
    let ev = hook_events(&rig, "web");
    let has = |h: &str, r: &str| ev.iter().filter(|(a, b)| a == h && b == r).count();
    assert_eq!(
        (
            has("pre_rollout", "passed"),
            has("rollout", "passed"),
            has("confirm_promotion", "waiting"),
            has("confirm_promotion", "passed"),
            has("post_rollout", "passed"),
        ),
        (1, 2, 1, 1, 1),
        "{ev:?}"
    );
    // Every call counted and timed, by rollout, hook and outcome.
    let text = rig.metrics().await;
    let count = |hook: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "sluice_hook_calls_total{{rollout=\"web\",hook=\"{hook}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("confirm_promotion", "failed"), 2.0, "{text}");
    assert_eq!(count("confirm_promotion", "passed"), 1.0, "{text}");
    assert_eq!(count("rollout", "passed"), 2.0, "{text}");
    assert_eq!(count("post_rollout", "passed"), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "sluice_hook_duration_seconds_count{rollout=\"web\",hook=\"rollout\",outcome=\"passed\"}"
        ),
        2.0,
        "{text}"
    );
    for family in ["sluice_hook_calls_total", "sluice_hook_duration_seconds"] {
        assert!(text.contains(&format!("# HELP {family} ")), "{text}");
    }
    if let Some(checked) = common::promtool_check(&text) {
        checked.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    }

    // Under manual ticks a failing check is judged at the tick that fetched it.
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(&format!(
            r#"
steps: [{{ weight: 20, hold: 1h }}]
analysis:
  min_requests: 0
  metrics:
    - {{ name: smoke, provider: web, url: "http://{check}/check?rollout={{{{rollout}}}}",
        json_path: $.checks.ok, condition: "result == true" }}
"#
        )),
    );
    rig.tick();
    assert_eq!(rig.phase("web"), "progressing");
    mode.store(1, Ordering::Relaxed);
    rig.tick();
    let s = rig.rollout("web");
    assert_eq!(
        (s["phase"].as_str(), s["abort_reason"].as_str()),
        (Some("aborted"), Some("metric")),
        "{s:#}"
    );
}

/// A blue-green with `promote: { manual: true }` runs its hooks as Flagger does before the
/// operator can promote: the preview's `rollout` hooks (a load test), then
/// `confirm_promotion`; until both passed a promote is refused; after the swap the
/// `rollout` hooks run again for the promoted stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_manual_promotion_waits_for_its_rollout_and_confirm_hooks() {
    let hooks = HookServer::default();
    let h = hooks.start();
    hooks.set("/load", 500);
    hooks.set("/promote", 200);
    let spec = BLUE_GREEN.replace("after: 1m", "manual: true").replace(
        "max_error_rate: 0.02 }",
        "max_error_rate: 0.02, failure_limit: 5 }",
    ) + &format!(
        "hooks:\n  rollout: [{{ url: \"http://{h}/load\", retries: 0 }}]\n  confirm_promotion: [{{ url: \"http://{h}/promote\" }}]\n"
    );
    let (_v1, _v2, rig) = start_rig(0, 0, &spec);
    let mut c = Client::connect(rig.proxy()).await;
    let mut seen = Seen::default();
    for _ in 0..25 {
        seen.add(&c.get("/", &[("x-preview", "s3cret")]).await);
    }
    // The load test fails: a failed verdict (1 of failure_limit 5), no promotion possible.
    rig.tick();
    let s = rig.rollout("web");
    assert_eq!(
        (s["phase"].as_str(), s["waiting_for"].as_str()),
        (Some("progressing"), Some("rollout_hooks")),
        "{s:#}"
    );
    assert_eq!(hooks.calls("/load").len(), 1);
    assert!(
        hooks.calls("/promote").is_empty(),
        "confirm before the load test passed"
    );
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "not_waiting_for_promotion");
    // The load test passes on its re-run, then confirm_promotion: now the operator decides.
    hooks.set("/load", 200);
    for _ in 0..3 {
        rig.tick();
    }
    let s = rig.rollout("web");
    assert_eq!(s["phase"], "waiting_for_promotion", "{s:#}");
    let load = hooks.calls("/load");
    assert_eq!(load.len(), 2, "{load:#?}");
    assert_eq!(load[1]["metadata"]["step"], "0");
    assert_eq!(hooks.calls("/promote").len(), 1);
    assert_eq!(hooks.calls("/promote")[0]["type"], "confirm-promotion");
    assert_eq!(rig.weight_bp(), 0);
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rig.weight_bp(), 10_000);
    // The promoted stage's rollout hook.
    rig.tick();
    let load = hooks.calls("/load");
    assert_eq!(load.len(), 3, "{load:#?}");
    assert_eq!(load[2]["metadata"]["step"], "1");
    assert_eq!(
        rig.phase("web"),
        "progressing",
        "inside the post-promotion window"
    );
}

// === https ===

/// What an https endpoint received: (path, body).
type TlsCalls = Arc<std::sync::Mutex<Vec<(String, Bytes)>>>;

/// An https endpoint on loopback serving `leaf`: records every request and answers 200 with
/// `{"ok": true}` (a hook passes, a web check reads true, a notification is delivered).
fn https_server(leaf: &common::edge::Leaf, got: TlsCalls) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut cfg = rustls::ServerConfig::builder_with_provider(common::edge::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    spawn_server(move |s| {
        let (acceptor, got) = (acceptor.clone(), got.clone());
        async move {
            // A client that refuses the certificate ends the handshake here.
            let Ok(s) = acceptor.accept(s).await else {
                return;
            };
            serve_http1(s, move |req: Request<Incoming>| {
                let got = got.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    got.lock().unwrap().push((path, body));
                    Response::new(Full::new(Bytes::from(r#"{"ok": true}"#)))
                }
            })
            .await;
        }
    })
}

/// https for the three outbound users, against a real TLS server on loopback whose
/// certificate a test CA signed: with that CA as `ca_file`, a `pre_rollout` hook passes, a
/// `web` metric check reads its value and a notification is delivered; with another CA's
/// file each is refused with the reason named — the hook fails its rollout (rule `hook`,
/// the audit names the unknown issuer), the metric check is an *error* (the rollout holds,
/// never rolled back), the notification is counted as failed — and nothing else stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hooks_metric_checks_and_notifications_verify_the_server_and_name_a_wrong_ca() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let ca = common::edge::Ca::new("sluice test hooks CA");
    let other = common::edge::Ca::new("another CA");
    let got: TlsCalls = Default::default();
    let h = https_server(&ca.leaf(&["127.0.0.1"]), got.clone());
    let builder = Sluice::builder();
    let good = common::edge::write(builder.dir(), "ca.pem", &ca.pem);
    let wrong = common::edge::write(builder.dir(), "other.pem", &other.pem);
    let (good, wrong) = (good.display(), wrong.display());
    let (a, b) = (v1.addr, v2.addr);
    let rollout = |name: &str, ca: &dyn std::fmt::Display| {
        format!(
            r#"  {name}:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 50, hold: 1h }}]
    analysis:
      interval: 200ms
      min_requests: 0
      metrics:
        - {{ name: smoke, provider: web, url: "https://{h}/check", ca_file: "{ca}",
            json_path: $.ok, condition: "result == true", interval: 100ms, timeout: 5s }}
"#
        )
    };
    let text = format!(
        r#"version: 1
change: {{ id: CHG-1, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{a}"] }}
  v2: {{ endpoints: ["{b}"] }}
routes:
  - {{ name: good, match: {{ path_prefix: /good }}, to: {{ rollout: good }} }}
  - {{ name: badmetric, match: {{ path_prefix: /badmetric }}, to: {{ rollout: badmetric }} }}
  - {{ name: badhook, to: {{ rollout: badhook }} }}
rollouts:
{}    hooks: {{ pre_rollout: [{{ url: "https://{h}/pre", ca_file: "{good}", timeout: 5s }}] }}
{}  badhook:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ weight: 50, hold: 1h }}]
    hooks: {{ pre_rollout: [{{ url: "https://{h}/pre-wrong", ca_file: "{wrong}", timeout: 5s, retries: 0 }}] }}
notifications:
  - {{ url: "https://{h}/notify", ca_file: "{good}", events: ["rollout.*"] }}
  - {{ url: "https://{h}/notify-wrong", ca_file: "{wrong}", events: ["rollout.*"] }}
"#,
        rollout("good", &good),
        rollout("badmetric", &wrong),
    );
    let rig = builder.traffic(&text).start();
    let status = |name: &str| rig.rollout(name);
    let metric = |s: &Value| s["verdicts"][0]["metrics"][0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (g, m, k) = (status("good"), status("badmetric"), status("badhook"));
        let done = metric(&g)["state"] == "passed"
            && metric(&m)["state"] == "error"
            && k["phase"] == "aborted";
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "{g:#} {m:#} {k:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The right CA: the hook passed, the check read the value over https.
    let g = status("good");
    assert_eq!(g["phase"], "progressing", "{g:#}");
    assert_eq!(metric(&g)["value"], true, "{g:#}");
    assert!(
        hook_events(&rig, "good").contains(&("pre_rollout".into(), "passed".into())),
        "{:?}",
        hook_events(&rig, "good")
    );
    // A wrong CA on a metric check: an error naming the refused certificate, never a failure.
    let m = status("badmetric");
    let err = metric(&m)["error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer") && err.contains("other.pem"),
        "{m:#}"
    );
    assert_eq!(m["phase"], "progressing", "{m:#}");
    assert!(
        m["last_verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("inconclusive"),
        "{m:#}"
    );
    // A wrong CA on a hook: the rollout's own failure (rule hook), the reason audited.
    let k = status("badhook");
    assert_eq!(k["abort_reason"], "hook", "{k:#}");
    let failed = rig
        .rollout_events()
        .into_iter()
        .find(|e| e["event"] == "rollout.hook" && e["rollout"] == "badhook")
        .unwrap();
    assert_eq!(failed["result"], "failed", "{failed:#}");
    let why = failed["run"]["error"].as_str().unwrap_or("");
    assert!(
        why.contains("TLS handshake") && why.contains("UnknownIssuer"),
        "the audit names the refused certificate: {failed:#}"
    );
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .all(|(p, _)| !p.ends_with("-wrong")),
        "nothing reached the server through a refused handshake"
    );
    // Notifications: the trusted target hears the rollout events; the other one's failures
    // are counted (three tries each), and neither held anything up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let heard: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/notify")
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect();
        let failed = sample(
            &rig.metrics().await,
            "sluice_notifications_total{result=\"failed\"}",
        );
        let aborted = heard
            .iter()
            .any(|e| e["event"] == "rollout.aborted" && e["rollout"] == "badhook");
        if aborted && failed >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heard {heard:?}, failed {failed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.verify_audit_chain();
}

// === mirroring ===

/// What a mirror upstream received: method, path, `x-sluice-variant`, body.
type Copies = Arc<std::sync::Mutex<Vec<(String, String, String, Bytes)>>>;

/// A mirror upstream: records each request, then answers 200 — or, while `hang` is set,
/// holds the answer until it is cleared.
fn mirror_server(hang: Arc<AtomicBool>, got: Copies) -> SocketAddr {
    http_server(move |req: Request<Incoming>| {
        let (hang, got) = (hang.clone(), got.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let variant = req
                .headers()
                .get("x-sluice-variant")
                .map_or(String::new(), |v| v.to_str().unwrap().to_string());
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            got.lock().unwrap().push((method, path, variant, body));
            while hang.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Response::new(Full::new(Bytes::from("shadow answer")))
        }
    })
}

/// The value of the sample line starting with `series` (`name{labels}`), 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (deadline 30 s) until `series` reads `want`.
async fn wait_sample(rig: &Sluice, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = rig.metrics().await;
        if sample(&m, series) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {} (want {want})",
            sample(&m, series)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request through the proxy, bounded: a client that waited on its mirror copy (which
/// hangs below) would fail here instead of hanging the test.
async fn through(c: &mut Client, method: &str, path: &str, body: &'static [u8]) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test.local")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), c.send(req))
        .await
        .expect("the client's answer never waits for its mirror copy")
        .unwrap()
}

/// Mirroring through the listener (SPEC §2.2 `mirror`): exactly `percent` of requests are
/// copied (evenly spread, so the copies are known), bodies up to `max_body` go along (teed,
/// not buffered first), longer ones are skipped and counted; the client's answers are the
/// stable side's whether the mirror answers, hangs or is down; at most `max_in_flight` copies
/// are out while it hangs (the rest skipped and counted); mirror errors are counted; the
/// copies carry `x-sluice-variant: mirror` and count as that variant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_never_change_or_delay_the_client_and_stay_bounded() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let hang = Arc::new(AtomicBool::new(false));
    let got: Copies = Default::default();
    let shadow = mirror_server(hang.clone(), got.clone());
    // Bound and never listening: connections are refused, and the port stays reserved for
    // the whole test (a port merely freed could be taken by another process meanwhile).
    let (_dead_guard, dead) = refusing_addr();
    let text = |version: u64, mirror: SocketAddr| {
        format!(
            r#"version: {version}
change: {{ id: CHG-{version}, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{}"] }}
  v2: {{ endpoints: ["{}"] }}
  shadow: {{ endpoints: ["{mirror}"], request_timeout: 60s }}
routes:
  - name: web
    to: {{ rollout: web }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    steps: [{{ gate: manual }}, {{ weight: 100 }}]
    mirror: {{ upstream: shadow, percent: 50, max_body: 1KiB, max_in_flight: 4 }}
"#,
            v1.addr, v2.addr
        )
    };
    let rig = Sluice::builder().traffic(&text(1, shadow)).start();
    let mut c = Client::connect(rig.proxy()).await;
    let v1_ok = |r: &Reply| r.status == StatusCode::OK && &r.body[..] == b"v1";

    let mirror_2xx = "sluice_requests_total{route=\"web\",upstream=\"shadow\",rollout=\"web\",variant=\"mirror\",code_class=\"2xx\"}";
    // Mirror up. Requests 0..=20 are GETs; every odd one is copied (50%, evenly). Each copy
    // is answered before the next request, so that a slow (loaded) machine never has more
    // than max_in_flight copies out here: this phase counts copies, not the bound.
    for i in 0..=20 {
        let r = through(&mut c, "GET", &format!("/p{i}"), b"").await;
        assert!(v1_ok(&r), "{i}: {} {:?}", r.status, r.body);
        if i % 2 == 1 {
            wait_sample(&rig, mirror_2xx, f64::from((i + 1) / 2)).await;
        }
    }
    // 21: a small body (copied with it), 22: not picked, 23: over max_body (skipped).
    assert!(v1_ok(&through(&mut c, "POST", "/small", b"hello").await));
    wait_sample(&rig, mirror_2xx, 11.0).await;
    assert!(v1_ok(&through(&mut c, "POST", "/even", b"x").await));
    assert!(v1_ok(
        &through(&mut c, "POST", "/large", &[b'a'; 4096]).await
    ));
    wait_sample(&rig, mirror_2xx, 11.0).await;
    let copies = got.lock().unwrap().clone();
    let mut want: Vec<String> = (1..=19).step_by(2).map(|i| format!("GET /p{i}")).collect();
    want.push("POST /small".into());
    let mut seen: Vec<String> = copies
        .iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    assert!(
        copies.iter().all(|(_, _, v, _)| v == "mirror"),
        "{copies:?}"
    );
    let small = copies.iter().find(|(_, p, _, _)| p == "/small").unwrap();
    assert_eq!(&small.3[..], b"hello");
    let m = rig.metrics().await;
    let skipped = "sluice_mirror_skipped_total{rollout=\"web\",reason=";
    assert_eq!(sample(&m, &format!("{skipped}\"body\"}}")), 1.0, "{m}");
    assert_eq!(sample(&m, &format!("{skipped}\"in_flight\"}}")), 0.0);

    // Mirror hangs: 20 more requests (24..=43, 10 picked) all answered by stable at once;
    // 4 copies out (the bound), 6 skipped.
    hang.store(true, Ordering::Relaxed);
    for i in 24..=43 {
        let r = through(&mut c, "GET", &format!("/h{i}"), b"").await;
        assert!(v1_ok(&r), "{i}: {} {:?}", r.status, r.body);
    }
    wait_sample(&rig, &format!("{skipped}\"in_flight\"}}"), 6.0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 15 {
        assert!(Instant::now() < deadline, "{:?}", got.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        got.lock().unwrap().len(),
        15,
        "at most max_in_flight copies out"
    );
    hang.store(false, Ordering::Relaxed);
    wait_sample(&rig, mirror_2xx, 15.0).await;

    // Mirror down (nothing listens): answers unchanged; 5 of 10 picked, 5 connect errors.
    // As in the first phase, each failed copy is counted (its slot free) before the next
    // request, so a loaded machine never has max_in_flight failing copies out here.
    rig.activate_file(&text(2, dead), 2);
    let mut c = Client::connect(rig.proxy()).await;
    let mirror_5xx = mirror_2xx.replace("2xx", "5xx");
    for i in 0..10 {
        let r = through(&mut c, "GET", &format!("/d{i}"), b"").await;
        assert!(v1_ok(&r), "{i}: {} {:?}", r.status, r.body);
        if i % 2 == 1 {
            wait_sample(&rig, &mirror_5xx, f64::from((i + 1) / 2)).await;
        }
    }
    wait_sample(
        &rig,
        "sluice_mirror_errors_total{rollout=\"web\",kind=\"connect\"}",
        5.0,
    )
    .await;
    assert_eq!(sample(&rig.metrics().await, &mirror_5xx), 5.0);
    assert_eq!(got.lock().unwrap().len(), 15);
}

/// Notifications are delivered per target: a target that accepts connections and never
/// answers (listed first, 60 s per try) delays no other target's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_notification_target_delays_no_other_target() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let got: Received = Default::default();
    let recv = receiver(got.clone());
    let hung = spawn_server(|s| async move {
        let _held = s;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let text = format!(
        "{}notifications:\n  - {{ url: \"http://{hung}/\", events: [\"*\"], timeout: 60s }}\n  - {{ url: \"http://{recv}/hook\", events: [\"rollout.*\"] }}\n",
        doc(
            1,
            v1.addr,
            v2.addr,
            "strategy: canary\nstable: v1\ncanary: v2\nsteps: [{ gate: manual }, { weight: 100 }]"
        ),
    );
    let rig = Sluice::builder().traffic(&text).manual_ticks().start();
    rig.tick();
    let r = rig.act("web", "pause", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = rig.act("web", "abort", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One target in front of the other would hold every line for 3 × 60 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["event"].to_string())
            .collect();
        if names.iter().any(|n| n == "\"rollout.aborted\"") {
            assert!(names.iter().any(|n| n == "\"rollout.paused\""), "{names:?}");
            break;
        }
        assert!(Instant::now() < deadline, "received only {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_completes_at_once_and_needs_a_full_token_bound_to_its_step() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let text = doc(
        1,
        v1.addr,
        v2.addr,
        &canary(
            r#"
steps: [{ weight: 10 }, { gate: manual }, { weight: 50, hold: 10m }, { weight: 100 }]
"#,
        ),
    );
    let mut rig = Sluice::builder().traffic(&text).manual_ticks().start();
    rig.tick();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");
    assert_eq!(rig.rollout("web")["step"], 1);

    // With approvals required (restart: the document is restored), a full promotion needs a
    // `promote` token that says `full`, for this rollout and its current step.
    let bob = sluice::change::keys::generate().unwrap();
    rig.settings_yaml = settings_yaml(
        rig.dir.path(),
        &format!(
            "trust:\n  require_approvals: true\n  environment: test\n  principals:\n    \
             bob: {{ keys: [\"{}\"], roles: [release-manager] }}\n",
            sluice::change::keys::public_key_line(&bob.verifying_key())
        ),
    );
    rig.restart();
    assert_eq!(rig.phase("web"), "waiting_for_promotion");
    let now = rig.clock.unix_secs();
    let mint = |step: u64, full: bool| {
        let c = Claims::new("bob", "test", text.as_bytes(), 1, Act::Promote, now, 3600)
            .with_target("web", step);
        token::sign(&if full { c.with_full() } else { c }, &bob)
    };
    let refused = |r: &Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.json()["error"], code, "{}", r.text());
    };
    let r = rig.act("web", "promote_full", &[]).await;
    refused(&r, 403, "insufficient_approvals");
    assert!(r.json()["detail"].as_str().unwrap().contains("--full"));
    // A one-step token cannot be replayed as a full promotion, nor a full one pass one gate.
    let one_step = mint(1, false);
    let r = rig
        .act("web", "promote_full", &[("sluice-approval", &one_step)])
        .await;
    refused(&r, 403, "wrong_target");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("authorizes a one-step promote, this is a full promotion"),
        "{}",
        r.text()
    );
    let full = mint(1, true);
    let r = rig
        .act("web", "promote", &[("sluice-approval", &full)])
        .await;
    refused(&r, 403, "wrong_target");
    let r = rig
        .act(
            "web",
            "promote_full",
            &[("sluice-approval", &mint(0, true))],
        )
        .await;
    refused(&r, 403, "wrong_target");
    assert_eq!(rig.phase("web"), "waiting_for_promotion");
    assert_eq!(rig.weight_bp(), 1000, "refusals change nothing");

    // The CLI: `sluice rollout promote --full --approval FILE`.
    let token_path = rig.dir.path().join("full.jwt");
    std::fs::write(&token_path, &full).unwrap();
    let approval = token_path.display().to_string();
    let stdout = rollout_cli_ok(&rig, "promote", &["--full", "--approval", &approval]).await;
    assert!(
        stdout.contains("web promote_full: phase completed, step 4, weight 100%"),
        "{stdout}"
    );
    assert_eq!(rig.weight_bp(), 10_000);
    let ro = rig.rollout("web");
    assert_eq!(ro["full_promotion_from_step"], 1);
    // Single use, like every promote token.
    let r = rig
        .act("web", "promote_full", &[("sluice-approval", &full)])
        .await;
    refused(&r, 403, "token_reused");

    let audit = rig.audit();
    let promoted = audit
        .iter()
        .find(|e| e["event"] == "rollout.promoted")
        .unwrap();
    assert_eq!(promoted["actor"], "bob");
    assert_eq!(promoted["full"], true);
    assert_eq!(promoted["promoted_step"], 1);
    assert!(audit.iter().any(|e| e["event"] == "rollout.completed"));
    let ok = audit
        .iter()
        .find(|e| e["event"] == "admin.action" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(ok["action"], "promote_full");
    assert_eq!(ok["approval"]["full"], true);
    let refusals: Vec<&str> = audit
        .iter()
        .filter(|e| e["event"] == "admin.action" && e["outcome"] == "refused")
        .map(|e| e["reason"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        refusals,
        [
            "insufficient_approvals",
            "wrong_target",
            "wrong_target",
            "wrong_target",
            "token_reused"
        ]
    );
    // Completed survives a restart, with the full promotion in its record.
    rig.restart();
    assert_eq!(rig.phase("web"), "completed");
    assert_eq!(rig.rollout("web")["full_promotion_from_step"], 1);
    rig.verify_audit_chain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_without_approvals_skips_holds_and_an_operator_pause() {
    let (_v1, _v2, rig) = start_rig(
        0,
        0,
        &canary(
            r#"
steps: [{ weight: 10, hold: 1h }, { weight: 50, hold: 1h }, { weight: 100 }]
"#,
        ),
    );
    rig.tick();
    assert_eq!(rig.weight_bp(), 1000);
    let r = rig.act("web", "promote", &[]).await;
    assert_eq!(r.json()["error"], "not_waiting_for_promotion");
    let r = rig.act("web", "pause", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = rig.act("web", "promote_full", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["phase"], "completed");
    assert_eq!(r.json()["full_promotion_from_step"], 0);
    assert_eq!(rig.weight_bp(), 10_000);
    let r = rig.act("web", "promote_full", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"], "rollout_finished");
    assert_eq!(
        rig.event_names(),
        ["rollout.paused", "rollout.promoted", "rollout.completed"]
    );
    rig.verify_audit_chain();
}

/// `mirror` on a route and on one canary step (SPEC §2.2): the route's copies go out for its
/// own requests (evenly, bodies over `max_body` skipped and counted under `route`); a step's
/// copies only while that step is live — once the rollout moved on, no request of the
/// rollout is copied, while the route mirror keeps copying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_mirror_copies_its_requests_and_a_step_mirror_only_while_its_step_is_live() {
    let v1 = Flaky::start("v1", 0);
    let v2 = Flaky::start("v2", 0);
    let got: Copies = Default::default();
    let shadow = mirror_server(Arc::new(AtomicBool::new(false)), got.clone());
    let text = format!(
        r#"version: 1
change: {{ id: CHG-1, author: alice, summary: test }}
upstreams:
  v1: {{ endpoints: ["{}"] }}
  v2: {{ endpoints: ["{}"] }}
  shadow: {{ endpoints: ["{shadow}"] }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    to: {{ upstream: v1 }}
    mirror: {{ upstream: shadow, percent: 50, max_body: 16 }}
  - name: both
    match: {{ path_prefix: /both }}
    to: {{ rollout: web }}
    mirror: {{ upstream: v2, percent: 100 }}
  - name: web
    to: {{ rollout: web }}
rollouts:
  web:
    strategy: canary
    stable: v1
    canary: v2
    sticky: {{ header: x-user-id }}
    steps:
      - {{ weight: 10, hold: 1h, mirror: {{ upstream: shadow, percent: 100 }} }}
      - {{ weight: 20, hold: 1h }}
"#,
        v1.addr, v2.addr
    );
    let rig = Sluice::builder().traffic(&text).manual_ticks().start();
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(ro["mirror"]["upstream"], "shadow", "{ro}");
    assert_eq!(ro["mirror"]["from"], "step");
    assert_eq!(ro["mirror"]["judged"], false);
    let api_2xx = "sluice_requests_total{route=\"api\",upstream=\"shadow\",rollout=\"\",variant=\"mirror\",code_class=\"2xx\"}";
    let web_2xx = "sluice_requests_total{route=\"web\",upstream=\"shadow\",rollout=\"web\",variant=\"mirror\",code_class=\"2xx\"}";

    // The route: requests 0..=9 are GETs, the odd ones copied; 10 (not picked) and 11
    // (picked, body over 16 bytes) are POSTs: no copy, one skip counted under the route.
    let mut c = Client::connect(rig.proxy()).await;
    for i in 0..10 {
        let r = through(&mut c, "GET", &format!("/api/{i}"), b"").await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"v1"[..]));
        if i % 2 == 1 {
            wait_sample(&rig, api_2xx, f64::from(i + 1) / 2.0).await;
        }
    }
    for i in 10..12 {
        let r = through(&mut c, "POST", &format!("/api/{i}"), &[b'b'; 100]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    wait_sample(
        &rig,
        "sluice_mirror_skipped_total{route=\"api\",reason=\"body\"}",
        1.0,
    )
    .await;

    // The step: every request of the rollout is copied while step 0 is live.
    for i in 0..20 {
        let r = c
            .get(&format!("/web/{i}"), &[("x-user-id", &format!("u{i}"))])
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    wait_sample(&rig, web_2xx, 20.0).await;

    // Step 1 has no mirror: the rollout's requests are no longer copied.
    rig.advance(Duration::from_secs(3601));
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(
        (ro["step"].as_u64(), ro["weight"].as_f64()),
        (Some(1), Some(20.0))
    );
    assert!(ro.get("mirror").is_none(), "{ro}");
    for i in 0..20 {
        let r = c
            .get(&format!("/web/late{i}"), &[("x-user-id", &format!("u{i}"))])
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Without a live step mirror the route's own applies; it copies to the canary (v2) only
    // the requests stable serves: the canary gets each request once.
    let mut both = Seen::default();
    for i in 0..60 {
        let r = c
            .get(&format!("/both/{i}"), &[("x-user-id", &format!("b{i}"))])
            .await;
        both.add(&r);
    }
    assert!(both.stable > 0 && both.canary > 0, "{both:?}");
    let both_2xx = "sluice_requests_total{route=\"both\",upstream=\"v2\",rollout=\"\",variant=\"mirror\",code_class=\"2xx\"}";
    wait_sample(&rig, both_2xx, both.stable as f64).await;
    // A later route copy (13 is picked) marks the point by which any copy of the requests
    // above would have been sent too.
    for i in 12..14 {
        through(&mut c, "GET", &format!("/api/{i}"), b"").await;
    }
    wait_sample(&rig, api_2xx, 6.0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 26 {
        assert!(Instant::now() < deadline, "{:?}", got.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copies = got.lock().unwrap().clone();
    let mut seen: Vec<String> = copies
        .iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    let mut want: Vec<String> = [1, 3, 5, 7, 9, 13]
        .iter()
        .map(|i| format!("GET /api/{i}"))
        .chain((0..20).map(|i| format!("GET /web/{i}")))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    assert!(
        copies.iter().all(|(_, _, v, _)| v == "mirror"),
        "{copies:?}"
    );
    let m = rig.metrics().await;
    assert_eq!(sample(&m, web_2xx), 20.0);
    assert_eq!(sample(&m, both_2xx), both.stable as f64);
}

/// A dark launch (a step at weight 0 that mirrors every request to the canary) is judged on
/// the copies' outcomes against stable's real traffic: a failing mirror target rolls the
/// rollout back with its reason (clients never see an error: they are served by stable),
/// a healthy one lets it advance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_launch_is_judged_on_its_mirror_copies_and_rolls_back_or_advances() {
    const DARK: &str = r#"
strategy: canary
stable: v1
canary: v2
sticky: { header: x-user-id }
steps:
  - { weight: 0, hold: 1m, mirror: { upstream: v2, percent: 100 } }
  - { weight: 50, hold: 1h }
analysis: { interval: 1s, window: 60s, min_requests: 20, max_error_rate: 0.05, method: z_test }
"#;
    // v2 fails every request.
    let (_v1, _v2, rig) = start_rig(0, 1000, DARK);
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(
        (ro["weight"].as_f64(), ro["phase"].as_str()),
        (Some(0.0), Some("progressing"))
    );
    assert_eq!(ro["mirror"]["judged"], true, "{ro}");
    let mut seen = Seen::default();
    users(rig.proxy(), "dark", 40, "/", &mut seen).await;
    assert_eq!((seen.stable, seen.stable_failed, seen.canary), (40, 0, 0));
    // The copies' outcomes land in the canary window as they come back.
    wait_status(&rig, "40 copies judged", |ro| {
        ro["window"]["canary"]["requests"] == 40
    })
    .await;
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(ro["phase"], "aborted", "{ro}");
    assert_eq!(ro["abort_reason"], "error_rate", "{ro}");
    assert_eq!(ro["verdicts"][0]["canary_requests"], 40, "{ro}");
    assert_eq!(ro["verdicts"][0]["canary_errors"], 40, "{ro}");
    assert!(
        ro.get("mirror").is_none(),
        "an aborted rollout's step mirrors no more: {ro}"
    );
    let aborted = rig.events("rollout.aborted");
    assert_eq!(aborted[0]["reason"], "error_rate", "{aborted:?}");
    let m = rig.metrics().await;
    assert_eq!(
        sample(
            &m,
            "sluice_rollbacks_total{rollout=\"web\",reason=\"error_rate\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "sluice_requests_total{route=\"web\",upstream=\"v2\",rollout=\"web\",variant=\"mirror\",code_class=\"5xx\"}"
        ),
        40.0
    );

    // The same with a healthy v2: the step passes on its copies and the rollout advances.
    let (_v1, _v2, rig) = start_rig(0, 0, DARK);
    rig.tick();
    let mut seen = Seen::default();
    users(rig.proxy(), "dark", 40, "/", &mut seen).await;
    assert_eq!((seen.stable, seen.canary), (40, 0));
    wait_status(&rig, "40 copies judged", |ro| {
        ro["window"]["canary"]["requests"] == 40
    })
    .await;
    rig.advance(Duration::from_secs(61));
    rig.tick();
    let ro = rig.rollout("web");
    assert_eq!(
        (
            ro["phase"].as_str(),
            ro["step"].as_u64(),
            ro["weight"].as_f64()
        ),
        (Some("progressing"), Some(1), Some(50.0)),
        "{ro}"
    );
    assert_eq!(ro["verdicts"][0]["outcome"], "passed", "{ro}");
}
