//! A sluice with `require_approvals: true`, the trust section of SPEC §2.1 (keys from fixed
//! seeds), an injected manual clock, and helpers to sign tokens and call the admin API over
//! its socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use sluice::change::keys::public_key_line;
use sluice::change::token::{Act, Claims, sign};
use sluice::clock::Clock;
use sluice::config::Settings;
use sluice::config::traffic::{CheckContext, TrafficDoc};
use sluice::instance::{Instance, StartOptions};

use crate::common::{Client, Reply, active_version, settings_yaml, wait_version, write_atomic};

/// The injected clock starts here (Unix seconds).
pub const T0: u64 = 1_750_000_000;
/// One hour.
pub const HOUR: u64 = 3600;

/// Principals: name, key seeds, roles (as in tests/change_support).
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

/// The signing key of `who` (erin's first key for "erin", her second for "erin2").
pub fn key(who: &str) -> SigningKey {
    if who == "erin2" {
        return SigningKey::from_bytes(&[6; 32]);
    }
    if who == "mallory" {
        return SigningKey::from_bytes(&[66; 32]);
    }
    let seed = PRINCIPALS
        .iter()
        .find(|(n, _, _)| *n == who)
        .unwrap_or_else(|| panic!("no principal {who}"))
        .1[0];
    SigningKey::from_bytes(&[seed; 32])
}

/// The `trust` section of SPEC §2.1 for [`PRINCIPALS`].
pub fn trust_yaml() -> String {
    let mut s =
        String::from("trust:\n  require_approvals: true\n  environment: prod\n  principals:\n");
    for (name, seeds, roles) in PRINCIPALS {
        let keys: Vec<String> = seeds
            .iter()
            .map(|b| {
                format!(
                    "\"{}\"",
                    public_key_line(&SigningKey::from_bytes(&[*b; 32]).verifying_key())
                )
            })
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

/// A traffic document. `port` changes an upstream endpoint (a normal change); `banner`
/// changes a flag's default (a standard change).
#[derive(Debug, Clone)]
pub struct Doc {
    pub version: u64,
    pub author: &'static str,
    pub class: &'static str,
    pub upstream: String,
    pub port: u16,
    pub banner: &'static str,
}

impl Doc {
    pub fn new(version: u64) -> Doc {
        Doc {
            version,
            author: "alice",
            class: "normal",
            upstream: "127.0.0.1:9".into(),
            port: 10,
            banner: "off",
        }
    }
    pub fn author(mut self, a: &'static str) -> Doc {
        self.author = a;
        self
    }
    pub fn class(mut self, c: &'static str) -> Doc {
        self.class = c;
        self
    }
    pub fn port(mut self, p: u16) -> Doc {
        self.port = p;
        self
    }
    pub fn banner(mut self, b: &'static str) -> Doc {
        self.banner = b;
        self
    }
    pub fn upstream(mut self, a: SocketAddr) -> Doc {
        self.upstream = a.to_string();
        self
    }
    pub fn text(&self) -> String {
        format!(
            r#"version: {v}
change: {{ id: CHG-{v}, author: {a}, class: {c}, summary: "e2e change {v}" }}
upstreams:
  v1: {{ endpoints: ["{u}"] }}
  v2: {{ endpoints: ["127.0.0.1:{p}"] }}
routes:
  - name: api
    to: {{ upstream: v1 }}
    flags: [banner]
flags:
  banner:
    state: ENABLED
    variants: {{ "on": true, "off": false }}
    defaultVariant: "{b}"
"#,
            v = self.version,
            a = self.author,
            c = self.class,
            u = self.upstream,
            p = self.port,
            b = self.banner
        )
    }
}

/// A token of `who` for `text` at `now`, valid for `ttl` seconds.
pub fn token_at(who: &str, text: &str, act: Act, now: u64, ttl: u64) -> String {
    let iss = if who == "erin2" { "erin" } else { who };
    let version = TrafficDoc::parse(text, &CheckContext::default())
        .expect("test document parses")
        .doc
        .version;
    sign(
        &Claims::new(iss, "prod", text.as_bytes(), version, act, now, ttl),
        &key(who),
    )
}

/// A sluice with approvals required, in a temp dir, on a manual clock.
pub struct Gated {
    pub dir: tempfile::TempDir,
    pub inst: Option<Instance>,
    pub yaml: String,
    pub clock: Clock,
}

impl Gated {
    pub fn start() -> Gated {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("approvals")).unwrap();
        let yaml = settings_yaml(dir.path(), &trust_yaml());
        let mut g = Gated {
            dir,
            inst: None,
            yaml,
            clock: Clock::manual(T0 * 1000),
        };
        g.restart();
        g
    }

    pub fn restart(&mut self) {
        if let Some(i) = self.inst.take() {
            i.shutdown();
        }
        let settings = Settings::parse(&self.yaml).unwrap();
        let opts = StartOptions {
            clock: self.clock.clone(),
            ..Default::default()
        };
        self.inst = Some(Instance::start(settings, opts).unwrap());
    }

    pub fn inst(&self) -> &Instance {
        self.inst.as_ref().unwrap()
    }

    pub fn admin(&self) -> SocketAddr {
        self.inst().admin
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Now on the injected clock, Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.unix_secs()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// A one-hour token of `who` for `text`, issued now.
    pub fn token(&self, who: &str, text: &str, act: Act) -> String {
        token_at(who, text, act, self.now(), HOUR)
    }

    /// Writes traffic.yaml atomically (temp file + rename).
    pub fn write_traffic(&self, text: &str) {
        write_atomic(&self.path("traffic.yaml"), text);
    }

    /// Drops a token file into the approvals folder (atomically).
    pub fn write_token(&self, name: &str, token: &str) {
        write_atomic(
            &self.path(&format!("approvals/{name}")),
            &format!("{token}\n"),
        );
    }

    pub fn version(&self) -> u64 {
        active_version(self.inst())
    }

    /// Waits until the active version is `v` (up to 10 s).
    pub fn wait_version(&self, v: u64) {
        wait_version(self.inst(), v);
    }

    /// The audit log, parsed.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("state/audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit entries with this event.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Waits until the log holds `n` entries with `event` (up to 10 s).
    pub fn wait_events(&self, event: &str, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let e = self.events(event);
            if e.len() >= n {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{event} never reached {n} entries: {:?}",
            self.events(event)
        );
    }

    /// One admin API call with the bearer token.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let auth = format!("Bearer {}", self.inst().admin_token);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("authorization", auth);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Client::connect(self.admin())
            .await
            .send(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap()
    }

    /// `PUT /api/v1/traffic` with one `Sluice-Approval` header per token.
    pub async fn push(&self, text: &str, tokens: &[&str]) -> Reply {
        let headers: Vec<(&str, &str)> = tokens.iter().map(|t| ("sluice-approval", *t)).collect();
        self.api("PUT", "/api/v1/traffic", &headers, text.to_string())
            .await
    }

    /// `POST /api/v1/approvals`.
    pub async fn approve(&self, token: &str) -> Reply {
        self.api("POST", "/api/v1/approvals", &[], token.to_string())
            .await
    }

    /// `POST /api/v1/revert`.
    pub async fn revert(&self, version: u64, token: &str) -> Reply {
        self.api(
            "POST",
            "/api/v1/revert",
            &[("sluice-approval", token)],
            format!("{{\"version\": {version}}}"),
        )
        .await
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Value {
        let r = self.api("GET", "/api/v1/status", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The value of one metric line (`name{labels}`) from `GET /metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let r = self.api("GET", "/metrics", &[], "").await;
        r.text().lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok())?
        })
    }

    /// Activates `doc` through a push with the author's token and two release managers'.
    pub async fn activate(&self, doc: &Doc) {
        let t = doc.text();
        let r = self
            .push(
                &t,
                &[
                    &self.token(doc.author, &t, Act::Author),
                    &self.token("bob", &t, Act::Approve),
                    &self.token("fred", &t, Act::Approve),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"], "activated", "{}", r.text());
    }
}

/// Asserts a refusal: status code and reason code, and a detail sentence.
#[track_caller]
pub fn refused(r: &Reply, status: u16, reason: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], reason, "{j}");
    assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
}
