//! Cluster mode (SPEC §12) end to end: a real etcd and real sluice processes on loopback.

mod common;
mod fleet;
mod gated;

use std::time::{Duration, Instant};

use fleet::{
    Etcd, Failing, Node, NodeSpec, Upstream, approvals, cli, etcd_available, rollout_doc, serial,
    token, wait_for,
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
        wait_for(secs, &format!("{} to activate {digest}", n.spec.node_id), || {
            (n.active().1 == digest).then_some(())
        });
    }
    t0.elapsed()
}

/// Waits until `n`'s audit log refused `digest` with `reason`.
fn wait_refused(n: &Node, digest: &str, reason: &str) {
    wait_for(10, &format!("{} to refuse {digest} ({reason})", n.spec.node_id), || {
        n.events("change.rejected")
            .iter()
            .any(|e| e["change"]["digest"] == digest && e["reason"] == reason)
            .then_some(())
    });
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
        assert_eq!(fleet::http(n.admin, "GET", "/readyz", &[], b"").unwrap().status, 503);
    }
    let leader = wait_for(10, "a leader", || {
        let c = nodes[0].cluster();
        c["leader"].as_str().map(str::to_string)
    });
    for n in &nodes {
        wait_for(10, "every node to see the leader", || {
            (n.cluster()["leader"] == leader.as_str()).then_some(())
        });
    }

    // One push on n2 → all three active on the same digest.
    let doc1 = rollout_doc(1, v1.addr, v2.addr, "[{ weight: 50, hold: 1h }]", "");
    let r = nodes[1].push(&doc1, &approvals(&doc1, 1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "activated", "{}", r.text());
    let took = wait_all_active(&nodes, &digest(doc1.as_bytes()), 10);
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
    wait_all_active(&nodes, &d2, 10);

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
        (put_doc(&lower, &approvals(&lower, 1)), "version_not_increasing"),
        (put_doc(&equivocation, &approvals(&equivocation, 2)), "equivocation"),
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
    let (phase, _, weight) = late.rollout("web");
    assert_eq!((phase.as_str(), weight), ("progressing", 40.0));
    assert_eq!(fleet::http(late.admin, "GET", "/readyz", &[], b"").unwrap().status, 200);

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

    // The fleet chain verifies, and records each activation once.
    let (code, out, err) = cli(&["audit", "verify", "--etcd", &etcd.url, "--prefix", prefix]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");
}
