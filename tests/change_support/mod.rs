//! Shared fixture for the change-approval tests and bench: a trust section with known keys,
//! a traffic document, and token minting helpers. Keys are derived from fixed seeds so that
//! failures reproduce.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sluice::change::keys::{kid, public_key_line};
use sluice::change::token::{Act, Claims, sign, sign_parts};
use sluice::change::{Decision, TrustStore, digest};
use sluice::config::settings::{Principal, Requirement, Trust};
use sluice::config::traffic::{CheckContext, ParsedTraffic};
use sluice::config::{Dur, TrafficDoc};

/// A fixed "now", Unix seconds.
pub const NOW: u64 = 1_750_000_000;
/// One hour.
pub const HOUR: u64 = 3600;

/// A signing key from a one-byte seed.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn alice() -> SigningKey {
    key(1)
}
pub fn bob() -> SigningKey {
    key(2)
}
pub fn carol() -> SigningKey {
    key(3)
}
pub fn dave() -> SigningKey {
    key(4)
}
pub fn erin1() -> SigningKey {
    key(5)
}
pub fn erin2() -> SigningKey {
    key(6)
}
pub fn sam() -> SigningKey {
    key(7)
}
pub fn ivan() -> SigningKey {
    key(8)
}
pub fn fred() -> SigningKey {
    key(9)
}
/// Not in the trust store.
pub fn mallory() -> SigningKey {
    key(66)
}

fn principal(keys: &[SigningKey], roles: &[&str]) -> Principal {
    Principal {
        keys: keys
            .iter()
            .map(|k| public_key_line(&k.verifying_key()))
            .collect(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn req(count: usize, roles: &[&str], paths: Option<&[&str]>) -> Requirement {
    Requirement {
        count,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        paths: paths.map(|ps| ps.iter().map(|p| p.to_string()).collect()),
    }
}

/// The trust section of SPEC §2.1, with a few more principals.
pub fn trust() -> Trust {
    let mut principals = BTreeMap::new();
    principals.insert("alice".into(), principal(&[alice()], &["developer"]));
    principals.insert("bob".into(), principal(&[bob()], &["release-manager"]));
    principals.insert(
        "carol".into(),
        principal(&[carol()], &["release-manager", "incident-commander"]),
    );
    principals.insert("dave".into(), principal(&[dave()], &["developer"]));
    principals.insert(
        "erin".into(),
        principal(&[erin1(), erin2()], &["release-manager"]),
    );
    principals.insert("sam".into(), principal(&[sam()], &["security"]));
    principals.insert("ivan".into(), principal(&[ivan()], &["incident-commander"]));
    principals.insert("fred".into(), principal(&[fred()], &["release-manager"]));
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
    Claims::new(iss, "prod", text.as_bytes(), version, act, NOW, HOUR)
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
        "act": act, "iat": NOW, "exp": NOW + HOUR, "jti": format!("jti-{iss}-{act}-{version}"),
    })
}

/// Asserts a decision's approvers by principal.
pub fn approver_names(d: &Decision) -> Vec<&str> {
    d.approvers.iter().map(|a| a.principal.as_str()).collect()
}
