//! The change gate through the admin API: documents, tokens, pushes and approvals on a
//! [`Sluice`] (built with [`Builder::approvals`](super::Builder::approvals) for SPEC §5).
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use sluice::change::token::{Act, Claims, sign};
use sluice::config::traffic::{CheckContext, TrafficDoc};

use super::principals::{HOUR, key};
use super::{Client, Reply, Sluice, write_atomic};

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

impl Sluice {
    /// A one-hour token of `who` for `text`, issued now.
    pub fn token(&self, who: &str, text: &str, act: Act) -> String {
        token_at(who, text, act, self.now(), HOUR)
    }

    /// Drops a token file into the approvals folder (atomically).
    pub fn write_token(&self, name: &str, token: &str) {
        write_atomic(
            &self.path(&format!("approvals/{name}")),
            &format!("{token}\n"),
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
