//! Change approval end to end, over the admin socket and the approvals folder, with
//! `require_approvals: true`: the good paths (standard, normal via folder and via push,
//! emergency and its review, overdue reviews on an injected clock, revert) and refusals
//! asserting status code and reason code. The token-level adversarial table lives in
//! `change_adversarial.rs`; this file checks that the gate, the API, the audit log and the
//! metrics agree on the same codes.

mod common;

use std::time::Duration;

use common::gate::{Doc, refused, token_at};
use common::principals::HOUR;
use common::{Sluice, Upstream, get};
use serde_json::json;
use sluice::change::token::Act;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_change_activates_on_the_author_token_alone() {
    let up = Upstream::start("v1");
    let g = Sluice::builder().approvals().manual_clock().start();
    assert_eq!(get(g.admin(), "/readyz", &[]).await.status, 503);
    let v1 = Doc::new(1).upstream(up.addr);
    g.activate(&v1).await;
    assert_eq!(get(g.inst().listeners[0], "/x", &[]).await.status, 200);

    let v2 = v1.clone().banner("on");
    let mut v2 = v2;
    v2.version = 2;
    let t = v2.text().replace("class: normal", "class: standard");
    let r = g.push(&t, &[&g.token("alice", &t, Act::Author)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["class"], "standard");
    assert_eq!(g.version(), 2);

    let s = g.status().await;
    assert_eq!(s["active"]["version"], 2);
    assert_eq!(s["active"]["class"], "standard");
    assert_eq!(s["active"]["author"], "alice");
    assert_eq!(s["active"]["approvers"], json!([]));
    assert!(s["rollouts"].is_array());
    let acts = g.events("change.activated");
    assert_eq!(acts.len(), 2);
    let first = &acts[0]["change"];
    assert_eq!(first["class"], "normal");
    assert_eq!(first["author"], "alice");
    let approvers: Vec<&str> = first["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["principal"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["bob", "fred"]);
    for a in first["approvers"].as_array().unwrap() {
        assert_eq!(a["role"], "release-manager");
        assert_eq!(a["kid"].as_str().unwrap().len(), 16);
        assert_eq!(a["iat"], g.now());
    }
    assert_eq!(
        g.metric("sluice_config_activations_total{class=\"standard\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_change_in_the_folder_waits_for_two_approvers_then_activates() {
    let g = Sluice::builder().approvals().manual_clock().start();
    let t = Doc::new(1).text();
    g.write_token("alice.jwt", &g.token("alice", &t, Act::Author));
    g.write_traffic(&t);
    let pending = g.wait_events("change.pending", 1);
    assert_eq!(pending[0]["change"]["version"], 1);
    assert_eq!(g.version(), 0);
    let s = g.status().await;
    assert_eq!(s["pending"][0]["version"], 1);
    let missing = s["pending"][0]["missing"].as_str().unwrap();
    assert!(
        missing.contains("needs 2 more approvals from role release-manager"),
        "{missing}"
    );
    assert_eq!(g.metric("sluice_config_pending").await, Some(1.0));
    assert!(g.path("state/pending").read_dir().unwrap().count() == 1);

    // One approver: still pending, and status says exactly who approved and who is missing.
    g.write_token("bob.jwt", &g.token("bob", &t, Act::Approve));
    let mut missing = String::new();
    for _ in 0..100 {
        missing = g.status().await["pending"][0]["missing"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if missing.contains("bob approved") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        missing,
        "needs 1 more approval from role release-manager (bob approved; alice is the author)"
    );
    // A token for another document in the folder changes nothing.
    let other = Doc::new(1).port(11).text();
    g.write_token("stale.jwt", &g.token("carol", &other, Act::Approve));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(g.version(), 0);

    g.write_token("carol.jwt", &g.token("carol", &t, Act::Approve));
    g.wait_version(1);
    let act = &g.events("change.activated")[0];
    assert_eq!(act["actor"], "file");
    let names: Vec<&str> = act["change"]["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["principal"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);
    assert_eq!(g.events("change.pending").len(), 1, "pending audited once");
    // Status takes the gate's lock: the activation has finished when it answers.
    assert_eq!(g.status().await["pending"], json!([]));
    assert_eq!(g.metric("sluice_config_pending").await, Some(0.0));
    assert_eq!(g.path("state/pending").read_dir().unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_change_gets_approvals_later_and_survives_a_restart() {
    let mut g = Sluice::builder().approvals().manual_clock().start();
    let t = Doc::new(1).text();
    let r = g.push(&t, &[&g.token("alice", &t, Act::Author)]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["result"], "pending");
    let r = g.approve(&g.token("erin", &t, Act::Approve)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        r.json()["missing"]
            .as_str()
            .unwrap()
            .contains("erin approved"),
        "{}",
        r.text()
    );
    // erin's second key is still erin: one principal counts once.
    let r = g.approve(&g.token("erin2", &t, Act::Approve)).await;
    assert_eq!(r.status, 202, "{}", r.text());

    g.restart();
    let s = g.status().await;
    assert_eq!(s["pending"][0]["version"], 1, "{s}");
    assert!(
        s["pending"][0]["missing"]
            .as_str()
            .unwrap()
            .contains("needs 1 more approval"),
        "{s}"
    );
    let r = g.approve(&g.token("bob", &t, Act::Approve)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "activated");
    assert_eq!(g.version(), 1);
    // A late approval for the active change is a no-op.
    let r = g.approve(&g.token("fred", &t, Act::Approve)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "no_op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_verified_again_when_the_change_activates() {
    let g = Sluice::builder().approvals().manual_clock().start();
    let t = Doc::new(1).text();
    let author = token_at("alice", &t, Act::Author, g.now(), 48 * HOUR);
    let r = g
        .push(&t, &[&author, &g.token("bob", &t, Act::Approve)])
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // bob's one-hour approval expires while the change waits.
    g.advance(Duration::from_secs(2 * HOUR));
    let r = g.approve(&g.token("carol", &t, Act::Approve)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let missing = r.json()["missing"].as_str().unwrap().to_string();
    assert!(missing.contains("carol approved"), "{missing}");
    assert!(!missing.contains("bob"), "{missing}");
    assert_eq!(g.version(), 0);
    let r = g.approve(&g.token("bob", &t, Act::Approve)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(g.version(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_changes_at_or_below_the_high_water_mark_are_dropped() {
    let g = Sluice::builder().approvals().manual_clock().start();
    let t2 = Doc::new(2).text();
    let r = g.push(&t2, &[&g.token("alice", &t2, Act::Author)]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    g.activate(&Doc::new(3).port(12)).await;
    assert_eq!(g.status().await["pending"], json!([]));
    let dropped = g.events("change.rejected");
    assert!(
        dropped
            .iter()
            .any(|e| e["reason"] == "version_not_increasing"
                && e["change"]["digest"] == sluice::change::digest(t2.as_bytes())
                && e["actor"] == "sluice"),
        "{dropped:?}"
    );
    assert_eq!(g.path("state/pending").read_dir().unwrap().count(), 0);
    // An approval for it now names nothing pending.
    let r = g.approve(&g.token("bob", &t2, Act::Approve)).await;
    refused(&r, 403, "unknown_change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_activates_at_once_and_is_reviewed_later() {
    let g = Sluice::builder().approvals().manual_clock().start();
    g.activate(&Doc::new(1)).await;
    let t = Doc::new(2).class("emergency").port(20).text();
    // Without an incident commander it waits; the author cannot approve it herself.
    let r = g
        .push(
            &t,
            &[
                &g.token("alice", &t, Act::Author),
                &g.token("alice", &t, Act::Approve),
            ],
        )
        .await;
    refused(&r, 403, "self_approval");
    let r = g
        .push(
            &t,
            &[
                &g.token("alice", &t, Act::Author),
                &g.token("ivan", &t, Act::Approve),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["class"], "emergency");
    let act = g.events("change.activated").pop().unwrap();
    assert_eq!(act["review_due"], "2025-06-16T15:06:40.000Z");
    let s = g.status().await;
    assert_eq!(s["emergency_reviews"][0]["version"], 2, "{s}");
    assert_eq!(s["emergency_reviews"][0]["overdue"], false);
    assert_eq!(s["active"]["review_due"], "2025-06-16T15:06:40.000Z");

    // Reviews by the author or by its approver do not count, and are refused as such.
    refused(
        &g.approve(&g.token("alice", &t, Act::Review)).await,
        403,
        "self_approval",
    );
    refused(
        &g.approve(&g.token("ivan", &t, Act::Review)).await,
        403,
        "self_approval",
    );
    // An approve token is not a review of an active change.
    let r = g.approve(&g.token("bob", &t, Act::Approve)).await;
    assert_eq!(r.json()["result"], "no_op", "{}", r.text());
    let r = g.approve(&g.token("bob", &t, Act::Review)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["result"], "review_pending");
    // The second review arrives in the folder.
    g.write_token("fred-review.jwt", &g.token("fred", &t, Act::Review));
    let reviewed = g.wait_events("emergency.reviewed", 1);
    let names: Vec<&str> = reviewed[0]["reviewers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["principal"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "fred"]);
    assert_eq!(reviewed[0]["change"]["version"], 2);
    assert_eq!(g.status().await["emergency_reviews"], json!([]));
    let r = g.approve(&g.token("carol", &t, Act::Review)).await;
    refused(&r, 403, "unknown_change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_review_blocks_the_authors_next_emergency_until_reviewed() {
    let mut g = Sluice::builder().approvals().manual_clock().start();
    g.activate(&Doc::new(1)).await;
    let t2 = Doc::new(2).class("emergency").port(20).text();
    let r = g
        .push(
            &t2,
            &[
                &g.token("alice", &t2, Act::Author),
                &g.token("ivan", &t2, Act::Approve),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        g.metric("sluice_emergency_reviews_overdue").await,
        Some(0.0)
    );

    g.advance(Duration::from_secs(25 * HOUR));
    let s = g.status().await;
    assert_eq!(s["emergency_reviews"][0]["overdue"], true, "{s}");
    assert_eq!(s["emergency_reviews_overdue"], 1);
    assert_eq!(
        g.metric("sluice_emergency_reviews_overdue").await,
        Some(1.0)
    );
    let _ = g.status().await;
    g.restart();
    let _ = g.status().await;
    assert_eq!(g.events("review.overdue").len(), 1, "audited once");

    // alice's next emergency is refused; dave's is not.
    let t3 = Doc::new(3).class("emergency").port(30).text();
    let r = g
        .push(
            &t3,
            &[
                &g.token("alice", &t3, Act::Author),
                &g.token("carol", &t3, Act::Approve),
            ],
        )
        .await;
    refused(&r, 403, "review_overdue");
    let t3 = Doc::new(3)
        .class("emergency")
        .port(31)
        .author("dave")
        .text();
    let r = g
        .push(
            &t3,
            &[
                &g.token("dave", &t3, Act::Author),
                &g.token("carol", &t3, Act::Approve),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Late reviews still close it, and alice may act in an emergency again.
    for who in ["bob", "fred"] {
        let _ = g.approve(&g.token(who, &t2, Act::Review)).await;
    }
    let reviewed = g.events("emergency.reviewed");
    assert_eq!(reviewed.len(), 1);
    assert_eq!(reviewed[0]["late"], true);
    let t4 = Doc::new(4).class("emergency").port(40).text();
    let r = g
        .push(
            &t4,
            &[
                &g.token("alice", &t4, Act::Author),
                &g.token("ivan", &t4, Act::Approve),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // dave's emergency (v3) is still open and not yet overdue.
    assert_eq!(
        g.metric("sluice_emergency_reviews_overdue").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_restores_an_earlier_document_and_keeps_the_high_water_mark() {
    let mut g = Sluice::builder().approvals().manual_clock().start();
    let d1 = Doc::new(1);
    let d2 = Doc::new(2).port(12);
    g.activate(&d1).await;
    g.activate(&d2).await;
    let (t1, t2) = (d1.text(), d2.text());

    let back = g.token("dave", &t1, Act::Revert);
    let r = g.revert(1, &back).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "reverted");
    assert_eq!(g.version(), 1);
    let s = g.status().await;
    assert_eq!(s["active"]["version"], 1);
    assert_eq!(s["high_water"]["version"], 2);
    let rev = g.events("change.reverted");
    assert_eq!(rev[0]["change"]["version"], 1);
    assert_eq!(rev[0]["revert"]["principal"], "dave");
    assert_eq!(rev[0]["revert"]["from"]["version"], 2);

    // A restart keeps the reverted document (the last activation or revert in the log).
    g.restart();
    assert_eq!(g.version(), 1);
    assert_eq!(g.status().await["active"]["version"], 1);

    // Forward again, then the first revert token may not be used twice.
    let r = g.revert(2, &g.token("sam", &t2, Act::Revert)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    refused(&g.revert(1, &back).await, 403, "token_reused");
    // A revert token for a document never activated, or naming another version.
    let never = Doc::new(1).port(99).text();
    refused(
        &g.revert(1, &g.token("dave", &never, Act::Revert)).await,
        403,
        "not_activated",
    );
    refused(
        &g.revert(2, &g.token("dave", &t1, Act::Revert)).await,
        403,
        "wrong_digest",
    );
    refused(
        &g.revert(1, &g.token("dave", &t1, Act::Approve)).await,
        403,
        "wrong_action",
    );
    // The high-water mark did not move: v2 again is a no-op, v2 with other bytes equivocates.
    let r = g.push(&t2, &[]).await;
    assert_eq!(r.json()["result"], "no_op", "{}", r.text());
    let other2 = Doc::new(2).port(13).text();
    refused(
        &g.push(&other2, &[&g.token("alice", &other2, Act::Author)])
            .await,
        409,
        "equivocation",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_status_and_reason_everywhere() {
    let g = Sluice::builder().approvals().manual_clock().start();
    let d1 = Doc::new(1);
    g.activate(&d1).await;
    let t1 = d1.text();
    let t2 = Doc::new(2).port(12).text();
    let author2 = g.token("alice", &t2, Act::Author);

    // 401: the bearer token.
    let r = common::Client::connect(g.admin())
        .await
        .get("/api/v1/status", &[("host", "127.0.0.1")])
        .await;
    refused(&r, 401, "unauthorized");
    let r = common::Client::connect(g.admin())
        .await
        .get(
            "/api/v1/status",
            &[("host", "127.0.0.1"), ("authorization", "Bearer nope")],
        )
        .await;
    refused(&r, 401, "unauthorized");

    // 400: not a document, not a JWS, too large.
    refused(&g.push("version: [", &[]).await, 400, "invalid_document");
    refused(&g.push(&t2, &["not-a-jwt"]).await, 400, "malformed_token");
    refused(&g.approve("a.b").await, 400, "malformed_token");
    refused(
        &g.approve(&"x".repeat(1 << 20)).await,
        400,
        "token_too_large",
    );

    // 403: tokens that are well-formed but invalid.
    let mallory = token_at("mallory", &t2, Act::Approve, g.now(), HOUR);
    refused(
        &g.push(&t2, &[&author2, &mallory]).await,
        403,
        "unknown_key",
    );
    let bad_sig = {
        let t = g.token("bob", &t2, Act::Approve);
        let (rest, sig) = t.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &sig[1..])
    };
    refused(
        &g.push(&t2, &[&author2, &bad_sig]).await,
        403,
        "bad_signature",
    );
    let expired = token_at("bob", &t2, Act::Approve, g.now() - 3 * HOUR, HOUR);
    refused(&g.push(&t2, &[&author2, &expired]).await, 403, "expired");
    let earlier = g.token("bob", &t1, Act::Approve);
    refused(
        &g.push(&t2, &[&author2, &earlier]).await,
        403,
        "wrong_digest",
    );
    let hs256 = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let p = b64.encode(r#"{"iss":"bob"}"#);
        format!("{h}.{p}.c2ln")
    };
    refused(
        &g.push(&t2, &[&author2, &hs256]).await,
        403,
        "bad_algorithm",
    );

    // 403: the policy.
    refused(&g.push(&t2, &[]).await, 403, "missing_author");
    refused(
        &g.push(&t2, &[&g.token("dave", &t2, Act::Author)]).await,
        403,
        "author_mismatch",
    );
    refused(
        &g.push(&t2, &[&author2, &g.token("dave", &t2, Act::Approve)])
            .await,
        403,
        "missing_role",
    );
    let far = Doc::new(1002).port(12).text();
    refused(
        &g.push(&far, &[&g.token("alice", &far, Act::Author)]).await,
        403,
        "version_step_too_large",
    );
    // A document claiming standard while changing an upstream gets the normal rules.
    let claims_standard = Doc::new(2).port(14).class("standard").text();
    let r = g
        .push(
            &claims_standard,
            &[&g.token("alice", &claims_standard, Act::Author)],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["class"], "normal");
    let s = g.status().await;
    assert!(
        s["pending"][0]["classification"]
            .as_str()
            .unwrap()
            .contains("it claims standard, but /upstreams/v2/endpoints/0"),
        "{s}"
    );

    // 409: anti-rollback.
    let old = Doc::new(1).port(15).text();
    refused(
        &g.push(&old, &[&g.token("alice", &old, Act::Author)]).await,
        409,
        "equivocation",
    );
    g.activate(&Doc::new(3).port(16)).await;
    let below = Doc::new(2).port(17).text();
    refused(
        &g.push(&below, &[&g.token("alice", &below, Act::Author)])
            .await,
        409,
        "version_not_increasing",
    );

    // Refusals changed nothing that serves; each was counted and audited with its code.
    assert_eq!(g.version(), 3);
    for reason in [
        "invalid_document",
        "malformed_token",
        "unknown_key",
        "bad_signature",
        "expired",
        "wrong_digest",
        "bad_algorithm",
        "missing_author",
        "author_mismatch",
        "missing_role",
        "version_step_too_large",
        "equivocation",
        "version_not_increasing",
    ] {
        assert!(
            g.metric(&format!(
                "sluice_config_rejections_total{{reason=\"{reason}\"}}"
            ))
            .await
            .is_some_and(|v| v >= 1.0),
            "{reason} not counted"
        );
        assert!(
            g.events("change.rejected")
                .iter()
                .any(|e| e["reason"] == reason),
            "{reason} not audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_token_is_reported_once_and_ignored() {
    let g = Sluice::builder().approvals().manual_clock().start();
    std::fs::write(g.path("approvals/junk.jwt"), "hello, not a token\n").unwrap();
    let t = Doc::new(1).text();
    for (who, act) in [
        ("alice", Act::Author),
        ("bob", Act::Approve),
        ("carol", Act::Approve),
    ] {
        g.write_token(&format!("{who}.jwt"), &g.token(who, &t, act));
    }
    g.write_traffic(&t);
    g.wait_version(1);
    let rej = g.wait_events("change.rejected", 1);
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert_eq!(rej[0]["reason"], "malformed_token");
    assert_eq!(rej[0]["token_file"], "junk.jwt");
    // Later passes of the watcher do not report it again.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(g.events("change.rejected").len(), 1);
}
