//! `sluice demo`, the README's first command, run as a user would run it.

use std::process::Command;

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_failing_canary_is_rolled_back_after_approved_activation() {
    let out = demo(&["--seconds", "10"]);
    assert!(out.contains("change.activated version 1 class normal, author alice, approved by bob (release-manager), carol (release-manager)"), "{out}");
    assert!(out.contains("ROLLED BACK"), "{out}");
    assert!(out.contains("rollout.aborted weight 0%"), "{out}");
    assert!(
        out.contains("sluice_rollbacks_total{rollout=\"app\",reason="),
        "{out}"
    );
    // The printed verify command works on the log the demo left behind.
    let log = out
        .lines()
        .find_map(|l| l.strip_prefix("Audit log: "))
        .expect("audit log path printed")
        .trim();
    let v = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["audit", "verify", log])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn a_healthy_canary_completes() {
    let out = demo(&["--healthy-canary", "--seconds", "40"]);
    assert!(out.contains("rollout.completed"), "{out}");
    assert!(!out.contains("ROLLED BACK"), "{out}");
}

#[test]
fn the_fleet_demo_activates_everywhere_and_rolls_back_on_every_node() {
    let etcd = Command::new("etcd").arg("--version").output();
    if !etcd.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("SLUICE_REQUIRE_ETCD").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_ETCD=1 but `etcd` is not installed"
        );
        eprintln!("SKIPPED: `etcd` is not installed (Debian: etcd-server)");
        return;
    }
    let out = demo(&["--cluster", "--seconds", "30"]);
    assert!(out.contains("version 1 active on all 3 nodes"), "{out}");
    assert!(out.contains("ROLLED BACK on every node"), "{out}");
    assert!(out.contains("ok: fleet chain intact"), "{out}");
    assert!(out.contains("rollout.aborted"), "{out}");
}
