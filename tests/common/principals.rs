//! The test principals, their keys, the trust section built from them, and the one start time
//! every suite's injected clock uses. Standalone (no `crate::` imports) so that
//! `tests/change_support` and the change bench can include it by path.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use sluice::change::keys::public_key_line;

/// The injected clock starts here (Unix seconds); `Clock::manual(T0 * 1000)`.
pub const T0: u64 = 1_750_000_000;
/// One hour, in seconds.
pub const HOUR: u64 = 3600;

/// Principals: name, key seeds, roles.
pub const PRINCIPALS: &[(&str, &[u8], &[&str])] = &[
    ("alice", &[1], &["developer"]),
    ("bob", &[2], &["release-manager"]),
    ("carol", &[3], &["release-manager", "incident-commander"]),
    ("dave", &[4], &["developer"]),
    ("erin", &[5, 6], &["release-manager"]),
    ("sam", &[7], &["security"]),
    ("ivan", &[8], &["incident-commander"]),
    ("fred", &[9], &["release-manager"]),
];

/// The signing key of `who`: a principal's (first) key, "erin2" for erin's second key, or
/// "mallory", who is in no trust store.
pub fn key(who: &str) -> SigningKey {
    let seed = match who {
        "erin2" => 6,
        "mallory" => 66,
        _ => {
            PRINCIPALS
                .iter()
                .find(|(n, _, _)| *n == who)
                .unwrap_or_else(|| panic!("no principal {who}"))
                .1[0]
        }
    };
    SigningKey::from_bytes(&[seed; 32])
}

/// The public key lines of a principal's keys.
pub fn public_keys(seeds: &[u8]) -> Vec<String> {
    seeds
        .iter()
        .map(|b| public_key_line(&SigningKey::from_bytes(&[*b; 32]).verifying_key()))
        .collect()
}

/// The `trust` section of SPEC §2.1 for [`PRINCIPALS`] (YAML).
pub fn trust_yaml() -> String {
    let mut s =
        String::from("trust:\n  require_approvals: true\n  environment: prod\n  principals:\n");
    for (name, seeds, roles) in PRINCIPALS {
        let keys: Vec<String> = public_keys(seeds)
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect();
        s.push_str(&format!(
            "    {name}: {{ keys: [{}], roles: [{}] }}\n",
            keys.join(", "),
            roles.join(", ")
        ));
    }
    s.push_str(
        r#"  policy:
    max_token_lifetime: 72h
    clock_skew: 60s
    max_version_step: 1000
    standard:
      allow: ["/flags/*/state", "/flags/*/defaultVariant", "/rollouts/*/paused"]
    normal:
      require:
        - { count: 2, roles: [release-manager] }
        - { count: 1, roles: [security], paths: ["/upstreams/*/tls", "/upstreams/*/tls/**"] }
    emergency:
      require: [{ count: 1, roles: [incident-commander] }]
      allow_self_approval: false
      review_within: 24h
      review: [{ count: 2, roles: [release-manager] }]
"#,
    );
    s
}
