//! Shared fixture for the change-approval tests and bench: a trust section with known keys,
//! a traffic document, and token minting helpers. Keys are derived from fixed seeds so that
//! failures reproduce.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sluice::change::keys::kid;
use sluice::change::token::{Act, Claims, sign, sign_parts};
use sluice::change::{Decision, TrustStore, digest};
use sluice::config::settings::{Principal, Requirement, Trust};
use sluice::config::traffic::{CheckContext, ParsedTraffic};
use sluice::config::{Dur, TrafficDoc};

// The principals, their keys and the clock's start are the integration harness's
// (`tests/common/principals.rs`), so that both fixtures sign with the same keys.
#[path = "../common/principals.rs"]
mod principals;
pub use principals::{HOUR, PRINCIPALS, T0, key};

fn req(count: usize, roles: &[&str], paths: Option<&[&str]>) -> Requirement {
    Requirement {
        count,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        paths: paths.map(|ps| ps.iter().map(|p| p.to_string()).collect()),
    }
}

/// The trust section of SPEC §2.1 for [`PRINCIPALS`], as `principals::trust_yaml` writes it.
pub fn trust() -> Trust {
    let principals: BTreeMap<String, Principal> = PRINCIPALS
        .iter()
        .map(|(name, seeds, roles)| {
            let p = Principal {
                keys: principals::public_keys(seeds),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            };
            (name.to_string(), p)
        })
        .collect();
    let mut t = Trust {
        require_approvals: true,
        environment: "prod".into(),
        principals,
        ..Trust::default()
    };
    let p = &mut t.policy;
    p.max_token_lifetime = Dur::secs(72 * HOUR);
    p.clock_skew = Dur::secs(60);
    p.max_version_step = 1000;
    p.standard.allow = [
        "/flags/*/state",
        "/flags/*/defaultVariant",
        "/rollouts/*/paused",
    ]
    .map(String::from)
    .to_vec();
    p.normal.require = vec![
        req(2, &["release-manager"], None),
        req(
            1,
            &["security"],
            Some(&["/upstreams/*/tls", "/upstreams/*/tls/**"]),
        ),
    ];
    p.emergency.require = vec![req(1, &["incident-commander"], None)];
    p.emergency.allow_self_approval = false;
    p.emergency.review_within = Dur::secs(24 * HOUR);
    p.emergency.review = vec![req(2, &["release-manager"], None)];
    t
}

pub fn store() -> TrustStore {
    TrustStore::new(&trust()).expect("fixture trust compiles")
}

/// A valid traffic document at `version` by `author` claiming `class`.
pub fn doc(version: u64, author: &str, class: &str) -> String {
    format!(
        r#"version: {version}
change: {{ id: CHG-{version}, author: {author}, class: {class}, summary: "test change" }}
upstreams:
  checkout-v1: {{ endpoints: ["10.0.0.5:8080"] }}
  checkout-v2: {{ endpoints: ["10.0.0.7:8080"] }}
routes:
  - name: checkout
    match: {{ path_prefix: /checkout }}
    to: {{ rollout: checkout }}
    flags: [new-checkout]
  - name: backend
    match: {{ path_prefix: /api }}
    to: {{ flag: backend, upstreams: {{ v1: checkout-v1, v2: checkout-v2 }} }}
rollouts:
  checkout:
    strategy: canary
    stable: checkout-v1
    canary: checkout-v2
    paused: false
    steps: [{{ weight: 5 }}, {{ gate: manual }}, {{ weight: 100 }}]
flags:
  new-checkout:
    state: ENABLED
    variants: {{ "on": true, "off": false }}
    defaultVariant: "off"
  backend:
    state: ENABLED
    variants: {{ v1: v1, v2: v2 }}
    defaultVariant: v1
"#
    )
}

pub fn parse(text: &str) -> ParsedTraffic {
    TrafficDoc::parse(text, &CheckContext::default()).expect("fixture document parses")
}

/// Claims for `text` signed later by `k`'s owner `iss`.
pub fn claims(iss: &str, text: &str, version: u64, act: Act) -> Claims {
    Claims::new(iss, "prod", text.as_bytes(), version, act, T0, HOUR)
}

/// A token of `iss` (signed by `k`) for `text` at `version`.
pub fn token(k: &SigningKey, iss: &str, text: &str, version: u64, act: Act) -> String {
    sign(&claims(iss, text, version, act), k)
}

/// A token with hand-written header and claims JSON (no checks).
pub fn raw(k: &SigningKey, header: &str, claims: &str) -> String {
    sign_parts(header.as_bytes(), claims.as_bytes(), k)
}

/// The usual header of `k`.
pub fn header(k: &SigningKey) -> String {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid(&k.verifying_key())}).to_string()
}

/// Claims JSON for `text` as a value, to edit before signing.
pub fn claims_json(iss: &str, text: &str, version: u64, act: &str) -> Value {
    json!({
        "iss": iss, "aud": "prod", "sub": digest(text.as_bytes()), "ver": version,
        "act": act, "iat": T0, "exp": T0 + HOUR, "jti": format!("jti-{iss}-{act}-{version}"),
    })
}

/// Asserts a decision's approvers by principal.
pub fn approver_names(d: &Decision) -> Vec<&str> {
    d.approvers.iter().map(|a| a.principal.as_str()).collect()
}
