//! Cluster mode (SPEC §12) end to end: a real etcd and real sluice processes on loopback.

mod common;
mod fleet;

use std::time::{Duration, Instant};

use fleet::{
    Etcd, Failing, Node, NodeSpec, Upstream, approvals, cli, etcd_available, rollout_doc, serial,
    token, wait_event, wait_for,
};
use sluice::change::digest;
use sluice::change::token::Act;

/// Starts three nodes on `prefix`.
fn three(etcd: &Etcd, prefix: &str) -> Vec<Node> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(NodeSpec::new(etcd, prefix, id)))
        .collect()
}

/// Waits until every node serves `digest`; returns the time that took.
fn wait_all_active(nodes: &[Node], digest: &str, secs: u64) -> Duration {
    let t0 = Instant::now();
    for n in nodes {
        wait_for(
            secs,
            &format!("{} to activate {digest}", n.spec.node_id),
            || (n.active().1 == digest).then_some(()),
        );
    }
    t0.elapsed()
}

/// Waits until `n`'s audit log refused `digest` with `reason`.
fn wait_refused(n: &Node, digest: &str, reason: &str) {
    wait_for(
        30,
        &format!("{} to refuse {digest} ({reason})", n.spec.node_id),
        || {
            n.events("change.rejected")
                .iter()
                .any(|e| e["change"]["digest"] == digest && e["reason"] == reason)
                .then_some(())
        },
    );
}

#[test]
fn a_push_on_one_node_activates_everywhere_and_forgeries_are_refused_by_every_node() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let etcd = Etcd::start();
    let prefix = "/sluice/converge";
    let v1 = Upstream::start("v1", Failing::never());
    let v2 = Upstream::start("v2", Failing::never());
    let nodes = three(&etcd, prefix);

    // Nothing active anywhere yet; one leader.
    for n in &nodes {
        assert_eq!(
            fleet::http(n.admin, "GET", "/readyz", &[], b"")
                .unwrap()
                .status,
            503
        );
    }
    let leader = wait_for(30, "a leader", || {
        let c = nodes[0].cluster();
        c["leader"].as_str().map(str::to_string)
    });
    for n in &nodes {
        wait_for(30, "every node to see the leader", || {
            (n.cluster()["leader"] == leader.as_str()).then_some(())
        });
    }

    // One push on n2 → all three active on the same digest.
    let doc1 = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 50, hold: 1h }]", "");
    let r = nodes[1].push(&doc1, &approvals(&doc1, 1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "activated", "{}", r.text());
    let took = wait_all_active(&nodes, &digest(doc1.as_bytes()), 30);
    eprintln!("push on n2 -> all 3 nodes active: {took:?}");
    for n in &nodes {
        assert_eq!(n.get("/", &[("x-user-id", "u1")]).status, 200);
        assert_eq!(n.metric("sluice_cluster_connected"), Some(1.0));
        assert_eq!(n.metric("sluice_cluster_nodes"), Some(3.0));
        let e = n.events("change.activated");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0]["actor"], "cluster");
    }
    let leaders: f64 = nodes
        .iter()
        .map(|n| n.metric("sluice_cluster_leader").unwrap())
        .sum();
    assert_eq!(leaders, 1.0);

    // v2 legitimately, so that a lower version and an equivocation can be forged.
    let doc2 = rollout_doc(2, v1.addr, v2.addr, "[{ weight: 40, hold: 1h }]", "");
    let r = nodes[0].push(&doc2, &approvals(&doc2, 2));
    assert_eq!(r.json()["result"], "activated", "{}", r.text());
    let d2 = digest(doc2.as_bytes());
    wait_all_active(&nodes, &d2, 30);

    // Forgeries written straight into etcd: every node refuses each, with its reason.
    let put_doc = |text: &str, tokens: &[String]| {
        let d = digest(text.as_bytes());
        let hex = d.strip_prefix("sha256:").unwrap().to_string();
        for (i, t) in tokens.iter().enumerate() {
            etcd.put(&format!("{prefix}/tokens/{hex}/forged{i}"), t);
        }
        etcd.put(&format!("{prefix}/docs/{hex}"), text);
        d
    };
    let no_tokens = rollout_doc(3, v1.addr, v2.addr, "[{ weight: 100 }]", "");
    let self_approved = rollout_doc(3, v1.addr, v2.addr, "[{ weight: 90 }]", "");
    let lower = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 1 }]", "");
    let equivocation = rollout_doc(2, v1.addr, v2.addr, "[{ weight: 2 }]", "");
    let cases = [
        (put_doc(&no_tokens, &[]), "missing_author"),
        (
            put_doc(
                &self_approved,
                &[
                    token("alice", &self_approved, 3, Act::Author),
                    token("alice", &self_approved, 3, Act::Approve),
                ],
            ),
            "self_approval",
        ),
        (
            put_doc(&lower, &approvals(&lower, 1)),
            "version_not_increasing",
        ),
        (
            put_doc(&equivocation, &approvals(&equivocation, 2)),
            "equivocation",
        ),
    ];
    for n in &nodes {
        for (d, reason) in &cases {
            wait_refused(n, d, reason);
            let series = format!("sluice_config_rejections_total{{reason=\"{reason}\"}}");
            assert!(n.metric(&series).unwrap_or(0.0) >= 1.0, "{series}");
        }
        // The approved document still serves.
        assert_eq!(n.active().1, d2);
        assert_eq!(n.get("/", &[("x-user-id", "u1")]).status, 200);
    }

    // A node joining late adopts the active document and the rollout's weight.
    let late = Node::start(NodeSpec::new(&etcd, prefix, "n4"));
    assert_eq!(late.active().1, d2, "{}", late.log());
    // The runner picks the adopted document up at its next poll.
    let (phase, _, weight) = wait_for(30, "n4's runner to track the rollout", || {
        let r = late.rollout("web");
        (!r.0.is_empty()).then_some(r)
    });
    assert_eq!((phase.as_str(), weight), ("progressing", 40.0));
    assert_eq!(
        fleet::http(late.admin, "GET", "/readyz", &[], b"")
            .unwrap()
            .status,
        200
    );

    // A second process with n1's id is refused, naming the holder.
    let dup = Node::try_start(NodeSpec::new(&etcd, prefix, "n1"));
    let err = dup.err().expect("a duplicate node_id must not start");
    assert!(err.contains("node_id `n1` is already registered"), "{err}");
    assert!(
        err.contains(&format!("pid {}", nodes[0].pid().unwrap())),
        "the error names the other node: {err}"
    );

    // `sluice push --etcd` reaches every node; `status --etcd` lists them.
    let doc3 = rollout_doc(3, v1.addr, v2.addr, "[{ weight: 30, hold: 1h }]", "");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("traffic.yaml");
    std::fs::write(&f, &doc3).unwrap();
    let mut args = vec![
        "push".to_string(),
        "--wait".into(),
        "90s".into(),
        "--etcd".into(),
        etcd.url.clone(),
        "--prefix".into(),
        prefix.into(),
        f.display().to_string(),
    ];
    for (i, t) in approvals(&doc3, 3).iter().enumerate() {
        let p = dir.path().join(format!("t{i}.jwt"));
        std::fs::write(&p, t).unwrap();
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let d3 = digest(doc3.as_bytes());
    let mut all = nodes.iter().collect::<Vec<_>>();
    all.push(&late);
    for n in &all {
        assert_eq!(n.active().1, d3);
    }
    let (code, out, err) = cli(&["status", "--etcd", &etcd.url, "--prefix", prefix]);
    assert_eq!(code, 0, "{err}");
    for id in ["n1", "n2", "n3", "n4"] {
        assert!(out.contains(id), "{out}");
    }
    assert!(out.contains(&leader), "{out}");

    // `promote --full` taken on a follower reaches the leader (through etcd), which checks
    // the token's scope: a one-step token is refused there with its reason, a full one
    // completes the rollout on every node.
    let doc4 = rollout_doc(
        4,
        v1.addr,
        v2.addr,
        "[{ weight: 10 }, { gate: manual }, { weight: 100 }]",
        "",
    );
    let r = nodes[1].push(&doc4, &approvals(&doc4, 4));
    assert_eq!(r.json()["result"], "activated", "{}", r.text());
    wait_all_active(&nodes, &digest(doc4.as_bytes()), 30);
    let follower = nodes.iter().find(|n| n.spec.node_id != leader).unwrap();
    wait_for(30, "the gate on the follower", || {
        (follower.rollout("web").0 == "waiting_for_promotion").then_some(())
    });
    let promote_token = |full: bool| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let c = sluice::change::token::Claims::new(
            "bob",
            "prod",
            doc4.as_bytes(),
            4,
            Act::Promote,
            now,
            3600,
        )
        .with_target("web", 1);
        sluice::change::token::sign(
            &if full { c.with_full() } else { c },
            &common::principals::key("bob"),
        )
    };
    let path = "/api/v1/rollouts/web/promote_full";
    let r = follower.api(
        "POST",
        path,
        &[("sluice-approval", &promote_token(false))],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "wrong_target", "{}", r.text());
    let r = follower.api(
        "POST",
        path,
        &[("sluice-approval", &promote_token(true))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["phase"], "completed", "{}", r.text());
    for n in &nodes {
        wait_for(30, "every node to complete at 100%", || {
            (n.rollout("web") == ("completed".to_string(), 3, 100.0)).then_some(())
        });
    }
    let promoted = wait_event(follower, "rollout.promoted", 30);
    assert_eq!(promoted[0]["full"], true, "{promoted:?}");

    // The fleet chain verifies, and records each activation once.
    let (code, out, err) = cli(&["audit", "verify", "--etcd", &etcd.url, "--prefix", prefix]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");
}

/// Waits until `n` serves weight 0 with the rollout aborted; returns unix ms when seen.
fn wait_rolled_back(n: &Node, secs: u64) -> u128 {
    wait_for(secs, &format!("{} to roll back", n.spec.node_id), || {
        (n.metric("sluice_rollout_weight{rollout=\"web\"}") == Some(0.0)
            && n.metric("sluice_rollout_phase{rollout=\"web\",phase=\"aborted\"}") == Some(1.0))
        .then(fleet::unix_ms)
    })
}

#[test]
fn a_failing_canary_is_rolled_back_on_every_node_judged_on_the_fleets_windows() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let etcd = Etcd::start();
    let prefix = "/sluice/canary";
    let v1 = Upstream::start("v1", Failing::never());
    // 30% of canary requests fail; and with `x-zone: bad`, half of them.
    let v2 = Upstream::start(
        "v2",
        Failing(std::sync::Arc::new(|n, h| {
            if h.get("x-zone").is_some_and(|z| z == "bad") {
                n % 2 == 0
            } else {
                h.get("x-zone").is_none() && n % 10 < 3
            }
        })),
    );
    let nodes = three(&etcd, prefix);
    let analysis =
        "    analysis: { interval: 1s, window: 10s, min_requests: 20, max_error_rate: 0.05 }\n";
    let doc1 = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 10, hold: 1h }]", analysis);
    assert_eq!(nodes[0].push(&doc1, &approvals(&doc1, 1)).status, 200);
    wait_all_active(&nodes, &digest(doc1.as_bytes()), 30);

    // ~300 requests a second over the fleet, 30% of the canary's failing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refs: Vec<&Node> = nodes.iter().collect();
    let traffic = fleet::load(&refs, 100, stop.clone(), |_| Vec::new());
    let seen: Vec<u128> = nodes.iter().map(|n| wait_rolled_back(n, 60)).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let first_fail = traffic
        .join()
        .unwrap()
        .expect("the canary failed some requests");
    let last = seen.iter().max().unwrap();
    eprintln!(
        "first failing request -> weight 0 on all 3 nodes: {} ms",
        last.saturating_sub(first_fail)
    );
    for n in &nodes {
        wait_event(n, "rollout.aborted", 30);
        assert!(
            n.metric("sluice_rollbacks_total{rollout=\"web\",reason=\"error_rate\"}")
                .unwrap_or(0.0)
                >= 1.0
        );
    }

    // A canary failing only in one node's share of the traffic: that node is not the leader,
    // and the leader's own traffic sees a healthy canary — the sum decides.
    let leader = nodes[0].cluster()["leader"].as_str().unwrap().to_string();
    let bad = nodes.iter().position(|n| n.spec.node_id != leader).unwrap();
    let analysis2 =
        "    analysis: { interval: 1s, window: 10s, min_requests: 20, max_error_rate: 0.06 }\n";
    let doc2 = rollout_doc(2, v1.addr, v2.addr, "[{ weight: 10, hold: 1h }]", analysis2);
    assert_eq!(nodes[0].push(&doc2, &approvals(&doc2, 2)).status, 200);
    wait_all_active(&nodes, &digest(doc2.as_bytes()), 30);
    for n in &nodes {
        wait_for(30, "the new rollout to start", || {
            (n.rollout("web") == ("progressing".into(), 0, 10.0)).then_some(())
        });
    }
    let canary_5xx = "sluice_requests_total{route=\"web\",upstream=\"v2\",rollout=\"web\",variant=\"canary\",code_class=\"5xx\"}";
    let lead = nodes.iter().find(|n| n.spec.node_id == leader).unwrap();
    let lead_errors_before = lead.metric(canary_5xx).unwrap_or(0.0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healthy: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != bad)
        .map(|(_, n)| n)
        .collect();
    let t1 = fleet::load(&healthy, 100, stop.clone(), |_| vec![("x-zone", "ok")]);
    let t2 = fleet::load(&[&nodes[bad]], 100, stop.clone(), |_| {
        vec![("x-zone", "bad")]
    });
    for n in &nodes {
        wait_rolled_back(n, 60);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t1.join().unwrap();
    t2.join().unwrap();
    // The leader judged and rolled back without a failure in its own traffic.
    assert_eq!(
        lead.metric(canary_5xx).unwrap_or(0.0),
        lead_errors_before,
        "the leader saw canary errors itself"
    );
    assert!(nodes[bad].metric(canary_5xx).unwrap_or(0.0) > 0.0);
}

#[test]
fn the_leader_killed_mid_rollout_is_replaced_and_users_keep_their_variant_on_every_node() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let etcd = Etcd::start();
    let prefix = "/sluice/leader";
    let v1 = Upstream::start("v1", Failing::never());
    let v2 = Upstream::start("v2", Failing::never());
    let mut nodes = three(&etcd, prefix);
    let steps = "[{ weight: 20, hold: 2s }, { weight: 40, hold: 2s }, { weight: 60, hold: 2s }, { weight: 80, hold: 2s }, { weight: 100 }]";
    let doc = rollout_doc(1, v1.addr, v2.addr, steps, "");
    assert_eq!(nodes[0].push(&doc, &approvals(&doc, 1)).status, 200);
    wait_all_active(&nodes, &digest(doc.as_bytes()), 30);

    // Sticky: at every sampled moment when the fleet's weight is settled, a user gets the
    // same variant from every node.
    let users: Vec<String> = (0..20).map(|i| format!("sticky-{i}")).collect();
    let sample = |nodes: &[&Node]| -> bool {
        let before: Vec<f64> = nodes.iter().map(|n| n.rollout("web").2).collect();
        let mut answers = Vec::new();
        for u in &users {
            let names: Vec<String> = nodes
                .iter()
                .map(|n| {
                    n.get("/", &[("x-user-id", u)]).json()["name"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            answers.push(names);
        }
        let after: Vec<f64> = nodes.iter().map(|n| n.rollout("web").2).collect();
        if before.iter().chain(&after).any(|w| *w != before[0]) {
            return false; // a step moved during the round: not a settled moment
        }
        for (u, names) in users.iter().zip(&answers) {
            assert!(
                names.iter().all(|n| *n == names[0]),
                "user {u} got {names:?} from the nodes at weight {}",
                before[0]
            );
        }
        true
    };
    let leader = nodes[0].cluster()["leader"].as_str().unwrap().to_string();
    let mut checked = 0;
    // Until the fleet is at step 1 (weight 40): sample.
    wait_for(60, "the rollout to reach step 1", || {
        let refs: Vec<&Node> = nodes.iter().collect();
        checked += usize::from(sample(&refs));
        (nodes[0].rollout("web").1 >= 1).then_some(())
    });
    let li = nodes.iter().position(|n| n.spec.node_id == leader).unwrap();
    let (_, step_at_kill, _) = nodes[li].rollout("web");
    let killed = Instant::now();
    nodes[li].kill9();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n)
        .collect();
    let new_leader = wait_for(30, "a new leader", || {
        let c = survivors[0].cluster();
        c["leader"]
            .as_str()
            .filter(|l| *l != leader)
            .map(str::to_string)
    });
    let took = killed.elapsed();
    eprintln!(
        "leader {leader} killed at step {step_at_kill} -> {new_leader} leads after {took:?} (lease_ttl 2s)"
    );
    // The rollout goes on from where it stood, never back to step 0, to completion.
    let mut last_step = step_at_kill;
    wait_for(90, "the rollout to complete on the survivors", || {
        checked += usize::from(sample(&survivors));
        let mut done = true;
        for n in &survivors {
            let (phase, step, weight) = n.rollout("web");
            assert!(
                step >= step_at_kill,
                "{}: back at step {step}",
                n.spec.node_id
            );
            last_step = last_step.max(step);
            done &= phase == "completed" && weight == 100.0;
        }
        done.then_some(())
    });
    assert!(checked >= 3, "too few settled samples: {checked}");
    let events = wait_event(
        survivors
            .iter()
            .find(|n| n.spec.node_id == new_leader)
            .unwrap(),
        "cluster.leader",
        30,
    );
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn a_deposed_leaders_write_is_refused_by_etcd() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let etcd = Etcd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sluice::cluster::{ClusterError, Conn, Keys, Session};
        let settings = sluice::config::Settings::parse(&format!(
            "cluster: {{ etcd: {{ endpoints: [\"{}\"], prefix: /fence }}, node_id: a, lease_ttl: 1s }}\n",
            etcd.url
        ))
        .unwrap();
        let c = settings.cluster.unwrap();
        let conn = Conn::new(&c).unwrap();
        let keys = Keys::new("/fence");
        let a = Session::open(&conn, &keys, "a", Duration::from_secs(1)).await.unwrap();
        let term_a = a.campaign().await.unwrap().expect("a leads");
        let put = |v: &str| vec![etcd_client::TxnOp::put(keys.rollout("web"), v, None)];
        a.fenced(term_a, put("from a")).await.unwrap();
        // `a` stops keeping its lease alive (a stalled process); `b` takes over.
        let b = Session::open(&conn, &keys, "b", Duration::from_secs(5)).await.unwrap();
        let term_b = loop {
            if let Some(t) = b.campaign().await.unwrap() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_ne!(term_a, term_b);
        let e = a.fenced(term_a, put("late write from a")).await.unwrap_err();
        assert!(matches!(e, ClusterError::Deposed), "{e:?}");
        b.fenced(term_b, put("from b")).await.unwrap();
        assert_eq!(
            b.get(&keys.rollout("web")).await.unwrap().as_deref(),
            Some(&b"from b"[..])
        );
    });
}

#[test]
fn without_etcd_nodes_serve_refuse_changes_and_still_roll_back_then_reconcile() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let mut etcd = Etcd::start();
    let prefix = "/sluice/static";
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let v1 = Upstream::start("v1", Failing::never());
    let f = failing.clone();
    let v2 = Upstream::start(
        "v2",
        Failing(std::sync::Arc::new(move |n, _| {
            f.load(std::sync::atomic::Ordering::Relaxed) && n % 10 < 3
        })),
    );
    let nodes = three(&etcd, prefix);
    let analysis =
        "    analysis: { interval: 1s, window: 5s, min_requests: 10, max_error_rate: 0.05 }\n";
    let doc1 = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 20, hold: 1h }]", analysis);
    assert_eq!(nodes[0].push(&doc1, &approvals(&doc1, 1)).status, 200);
    let d1 = digest(doc1.as_bytes());
    wait_all_active(&nodes, &d1, 30);

    etcd.stop();
    for n in &nodes {
        wait_for(30, "the node to notice etcd is gone", || {
            (n.metric("sluice_cluster_connected") == Some(0.0)).then_some(())
        });
        assert_eq!(n.get("/", &[("x-user-id", "u")]).status, 200);
        assert_eq!(
            fleet::http(n.admin, "GET", "/readyz", &[], b"")
                .unwrap()
                .status,
            200
        );
        assert_eq!(n.cluster()["connected"], false);
    }
    // Nothing activates without the fleet.
    let doc2 = rollout_doc(2, v1.addr, v2.addr, "[{ weight: 30, hold: 1h }]", analysis);
    let r = nodes[1].push(&doc2, &approvals(&doc2, 2));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "cluster_unavailable");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("etcd is unreachable")
    );

    // A failing canary is still rolled back, on each node's own traffic.
    failing.store(true, std::sync::atomic::Ordering::Relaxed);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refs: Vec<&Node> = nodes.iter().collect();
    let traffic = fleet::load(&refs, 60, stop.clone(), |_| Vec::new());
    for n in &nodes {
        wait_rolled_back(n, 60);
        // The weight is stored first, the audit line appended right after: wait for it.
        wait_event(n, "cluster.rolled_back_alone", 30);
        assert_eq!(n.active().1, d1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();

    // etcd is back: nodes reconnect, the fleet learns the rollback, the chain verifies.
    etcd.restart();
    for n in &nodes {
        wait_for(60, "the node to reconnect", || {
            (!n.events("cluster.reconnected").is_empty()).then_some(())
        });
        assert_eq!(n.metric("sluice_cluster_connected"), Some(1.0));
        assert!(!n.events("cluster.disconnected").is_empty());
    }
    wait_for(60, "the fleet's record to say aborted", || {
        let v: serde_json::Value =
            serde_json::from_str(&etcd.get(&format!("{prefix}/rollouts/web"))?).ok()?;
        (v["progress"]["phase"] == "aborted" && v["weight_bp"] == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    for n in &nodes {
        assert_eq!(
            n.metric("sluice_rollout_weight{rollout=\"web\"}"),
            Some(0.0)
        );
    }
    // The push refused while cut off goes through now.
    let r = nodes[1].push(&doc2, &approvals(&doc2, 2));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_all_active(&nodes, &digest(doc2.as_bytes()), 30);
    let (code, out, err) = cli(&["audit", "verify", "--etcd", &etcd.url, "--prefix", prefix]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn bad_cluster_settings_are_refused_at_start_and_without_etcd_a_node_serves_its_persisted_document()
{
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let mut etcd = Etcd::start();

    // A prefix that belongs to another trust environment's fleet: refused, saying whose.
    etcd.put("/sluice/theirs/fleet", r#"{"environment":"staging"}"#);
    let err = Node::try_start(NodeSpec::new(&etcd, "/sluice/theirs", "x"))
        .err()
        .expect("a node must not join another environment's fleet");
    assert!(
        err.contains("belongs to a fleet of environment `staging`"),
        "{err}"
    );

    // etcd TLS files that do not read: refused at start, naming the file.
    let mut spec = NodeSpec::new(&etcd, "/sluice/tls", "t");
    spec.etcd = etcd.url.replace("http://", "https://");
    spec.etcd_tls = Some("{ ca_file: /nonexistent/etcd-ca.pem }");
    let err = Node::try_start(spec)
        .err()
        .expect("an unreadable CA file must stop the start");
    assert!(err.contains("/nonexistent/etcd-ca.pem"), "{err}");

    // A node restarted while etcd is away serves the document it persisted, and says why
    // nothing else happens.
    let prefix = "/sluice/alone";
    let v1 = Upstream::start("v1", Failing::never());
    let v2 = Upstream::start("v2", Failing::never());
    let mut n = Node::start(NodeSpec::new(&etcd, prefix, "solo"));
    let doc = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 10, hold: 1h }]", "");
    assert_eq!(n.push(&doc, &approvals(&doc, 1)).status, 200);
    let d = digest(doc.as_bytes());
    wait_all_active(std::slice::from_ref(&n), &d, 30);
    etcd.stop();
    n.stop();
    n.restart().unwrap();
    assert_eq!(n.active().1, d, "{}", n.log());
    assert_eq!(n.get("/", &[("x-user-id", "u")]).status, 200);
    assert_eq!(
        fleet::http(n.admin, "GET", "/readyz", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(n.cluster()["connected"], false);
    assert_eq!(n.metric("sluice_cluster_connected"), Some(0.0));
    assert!(
        n.log().contains("etcd is unreachable at start"),
        "{}",
        n.log()
    );
}

/// The Kubernetes example's ConfigMaps carry settings and documents sluice accepts, and its
/// workloads run sluice as those settings say: ports, probes, node id, volumes (CI also
/// validates every manifest against the Kubernetes schemas).
#[test]
fn the_kubernetes_examples_config_is_valid() {
    use sluice::config::traffic::{CheckContext, TrafficDoc};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let kind = |file: &str, kind: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc = text
            .split("\n---\n")
            .find(|d| d.contains(&format!("kind: {kind}\n")))
            .unwrap_or_else(|| panic!("{file}: no {kind}"))
            .to_string();
        sluice::config::yaml::parse(&doc).unwrap().value
    };
    for (file, name, workload) in [
        (
            "configmap.yaml",
            "sluice-config",
            ("gateway.yaml", "StatefulSet"),
        ),
        (
            "sidecar.yaml",
            "checkout-sluice",
            ("sidecar.yaml", "Deployment"),
        ),
    ] {
        let cm = kind(file, "ConfigMap");
        assert_eq!(cm["metadata"]["name"], name);
        let settings = sluice::config::Settings::parse(cm["data"]["sluice.yaml"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{file}: sluice.yaml: {e}"));
        let c = settings.cluster.expect("cluster mode");
        assert!(
            c.node_id.is_none(),
            "{file}: node_id comes from SLUICE_NODE_ID"
        );
        let ctx = CheckContext {
            listeners: Some(settings.listeners.iter().map(|l| l.name.clone()).collect()),
        };
        TrafficDoc::parse(cm["data"]["traffic.yaml"].as_str().unwrap(), &ctx)
            .unwrap_or_else(|e| panic!("{file}: traffic.yaml: {e}"));

        let (wfile, wkind) = workload;
        let w = kind(wfile, wkind);
        let pod = &w["spec"]["template"]["spec"];
        let c = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sluice")
            .unwrap_or_else(|| panic!("{wfile}: no sluice container"));
        let port = |name: &str| {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{wfile}: no port {name}"))
        };
        assert_eq!(port("http"), u64::from(settings.listeners[0].bind.port()));
        assert_eq!(port("admin"), u64::from(settings.admin.bind.port()));
        let metrics = settings.metrics.as_ref().expect("a metrics listener");
        assert_eq!(port("metrics"), u64::from(metrics.bind.port()));
        // Readiness on the admin listener's /readyz, liveness on /healthz.
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        // The image's entrypoint is `sluice run`; the config is the mounted ConfigMap.
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..2],
            ["-c", "/etc/sluice/config/sluice.yaml"],
            "{wfile}"
        );
        let mounts = c["volumeMounts"].as_array().unwrap();
        let mounted = |path: &std::path::Path| {
            mounts
                .iter()
                .any(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        };
        for p in [
            std::path::Path::new(args[1]),
            settings.paths.traffic.as_path(),
            settings.paths.approvals.as_path(),
            settings.paths.state_dir.as_path(),
            settings.admin.token_file.as_deref().unwrap(),
        ] {
            assert!(mounted(p), "{wfile}: {} is on no volume", p.display());
        }
        let node_id = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SLUICE_NODE_ID")
            .unwrap_or_else(|| panic!("{wfile}: no SLUICE_NODE_ID"));
        assert_eq!(
            node_id["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
    }
}

/// In a fleet only the leader calls hooks and fetches `analysis.metrics`: a follower's
/// results would never be read, and N nodes must not load a gate or Prometheus N times.
/// Three nodes, a `pre_rollout` hook and a web check whose endpoint answers 500 (so a node
/// that fetches logs "A metric provider gave no usable answer"): the hook is called once,
/// the leader's verdicts carry the check's error, and no node that never led fetched it.
#[test]
fn only_the_leader_calls_hooks_and_fetches_metric_checks() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let etcd = Etcd::start();
    let v1 = Upstream::start("v1", Failing::never());
    let v2 = Upstream::start("v2", Failing::never());
    let hook = Upstream::start("hook", Failing::never());
    let check = Upstream::start("check", Failing(std::sync::Arc::new(|_, _| true)));
    let nodes = three(&etcd, "/sluice/outbound");
    let (h, c) = (hook.addr, check.addr);
    let analysis = format!(
        "    analysis:\n      interval: 200ms\n      min_requests: 0\n      metrics:\n        - {{ name: down, provider: web, url: \"http://{c}/check\", condition: \"result == true\", interval: 100ms }}\n    hooks: {{ pre_rollout: [{{ url: \"http://{h}/pre\" }}] }}\n"
    );
    let doc = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 10, hold: 1h }]", &analysis);
    assert_eq!(nodes[0].push(&doc, &approvals(&doc, 1)).status, 200);
    wait_all_active(&nodes, &digest(doc.as_bytes()), 30);
    for n in &nodes {
        wait_for(30, "step 0 once pre_rollout passed", || {
            (n.rollout("web") == ("progressing".into(), 0, 10.0)).then_some(())
        });
    }
    let led = |n: &Node| !n.events("cluster.leader").is_empty();
    let leader = wait_for(30, "a leader", || nodes.iter().find(|n| led(n)));
    let fetched = "A metric provider gave no usable answer";
    wait_for(30, "the leader's check error", || {
        let s = leader.status();
        let web = s["rollouts"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == "web")?
            .clone();
        (web["verdicts"][0]["metrics"][0]["state"] == "error" && leader.log().contains(fetched))
            .then_some(())
    });
    // Give a wrongly fetching follower time to show itself (several of its intervals).
    std::thread::sleep(Duration::from_secs(1));
    let leaders = nodes.iter().filter(|n| led(n)).count();
    let hook_calls = hook.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        hook_calls >= 1 && hook_calls <= leaders as u64,
        "pre_rollout called {hook_calls} times by {leaders} leader(s)"
    );
    for n in nodes.iter().filter(|n| !led(n)) {
        assert!(
            !n.log().contains(fetched),
            "follower {} fetched the metric check:\n{}",
            n.spec.node_id,
            n.log()
        );
    }
    assert!(check.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
