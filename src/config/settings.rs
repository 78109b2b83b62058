//! `sluice.yaml`: proxy settings. Read once at start (certificates are reloaded by the TLS layer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ConfigErrors, Dur, field, unknown_keys, yaml};

/// The whole of `sluice.yaml`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// Data-plane listeners.
    pub listeners: Vec<Listener>,
    /// The admin listener.
    pub admin: Admin,
    /// OFREP options.
    pub ofrep: Ofrep,
    /// Flag services for SDKs besides OFREP (flagd gRPC).
    pub flags: FlagService,
    /// Runtime sizing.
    pub runtime: Runtime,
    /// Timeouts and limits.
    pub limits: Limits,
    /// Where files live.
    pub paths: Paths,
    /// Keys, roles and the change policy.
    pub trust: Trust,
    /// JSON access log (off by default).
    pub access_log: AccessLog,
    /// Cluster mode (SPEC §12); absent: a single instance.
    pub cluster: Option<super::cluster::Cluster>,
    /// A listener for `/metrics` and `/healthz` only (off by default).
    pub metrics: Option<MetricsListener>,
    /// W3C trace context and OTLP span export (off when absent).
    pub tracing: Option<Tracing>,
    /// Who the client is behind load balancers (`trusted_proxies`).
    pub network: Network,
}

/// `network`: which peers may name the client.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// CIDRs (or single addresses) of proxies whose `X-Forwarded-For` names the client:
    /// the right-most address that is not one of them is the client.
    pub trusted_proxies: Vec<String>,
}

/// `tracing`: W3C `traceparent` kept or started and propagated upstream; optional OTLP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Fraction (0 to 1) of new traces that are sampled; an incoming `traceparent`'s
    /// sampled flag is kept as it is.
    #[serde(default = "one")]
    pub sample: f64,
    /// OTLP/HTTP span export, when present.
    #[serde(default)]
    pub otlp: Option<Otlp>,
}

/// OTLP/HTTP (protobuf) export of one span per sampled request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's base URL, `http://host:port`; spans go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// Longest wait for one export request.
    #[serde(default = "otlp_timeout")]
    pub timeout: Dur,
}

fn one() -> f64 {
    1.0
}

fn otlp_timeout() -> Dur {
    Dur::secs(5)
}

/// The metrics listener: `/metrics` and `/healthz`, apart from the admin API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsListener {
    /// Address to bind.
    #[serde(deserialize_with = "de_bind")]
    pub bind: SocketAddr,
}

/// A data-plane listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name routes refer to with `match.listener`.
    pub name: String,
    /// Address to bind.
    #[serde(deserialize_with = "de_bind")]
    pub bind: SocketAddr,
    /// TLS termination, when present.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client;
    /// connections without a valid one are closed.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains with their keys; chosen by SNI.
    pub certs: Vec<CertPair>,
    /// Client certificates (mTLS), when present.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// `tls.client_auth`: client certificates verified against a CA.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM file of the CA certificates client certificates must chain to.
    pub ca_file: PathBuf,
    /// Whether a client certificate is required.
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a listener requires client certificates.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// A handshake without a valid client certificate fails.
    #[default]
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// One certificate chain and its private key (PEM files).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address to bind.
    #[serde(deserialize_with = "de_bind")]
    pub bind: SocketAddr,
    /// File holding the bearer token; absent: sluice generates `state/admin.token`.
    pub token_file: Option<PathBuf>,
    /// Host values accepted on `/api/v1` besides loopback names and IP literals.
    pub allowed_hosts: Vec<String>,
}

/// OFREP options.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ofrep {
    /// Origins allowed to call OFREP from browsers.
    pub cors_origins: Vec<String>,
    /// API keys, one a line: OFREP, its event streams and flagd gRPC then need one (SPEC §4).
    pub api_keys_file: Option<PathBuf>,
    /// Most event streams (SSE) open at once; beyond, new ones get 503.
    pub max_streams: usize,
    /// How often an idle event stream gets a comment line (keeps proxies from closing it).
    pub heartbeat: Dur,
}

impl Default for Ofrep {
    fn default() -> Self {
        Ofrep {
            cors_origins: Vec::new(),
            api_keys_file: None,
            max_streams: 10_000,
            heartbeat: Dur::secs(15),
        }
    }
}

/// `flags`: flag services for SDKs besides OFREP.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagService {
    /// flagd's gRPC services (evaluation v1 and sync v1); off when absent.
    pub grpc: Option<FlagGrpc>,
}

/// `flags.grpc`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlagGrpc {
    /// Address to bind.
    pub bind: SocketAddr,
    /// TLS, as on a listener (HTTP/2 by ALPN).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// Runtime sizing.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Data-plane worker threads; 0 = one per core.
    pub workers: usize,
}

/// Timeouts and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time allowed to read a request head; also bounds idle HTTP/1 keep-alive.
    pub header_read_timeout: Dur,
    /// TLS handshake and protocol detection.
    pub handshake_timeout: Dur,
    /// Idle HTTP/2 connections.
    pub idle_timeout: Dur,
    /// SIGTERM: time `/readyz` fails while listeners keep accepting.
    pub drain_delay: Dur,
    /// SIGTERM: time to finish in-flight work.
    pub drain_timeout: Dur,
    /// Largest request head (and HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Connections accepted at once across listeners (upgraded tunnels included).
    pub max_connections: usize,
    /// `Upgrade` protocols tunnelled to upstreams (lowercase tokens); any other `Upgrade`
    /// is dropped and the request forwarded as plain HTTP. Never `h2c`: after the switch a
    /// client would speak HTTP/2 straight to the upstream, past routing and header hygiene.
    pub upgrades: Vec<String>,
}

/// Where files live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// The change-managed traffic document.
    pub traffic: PathBuf,
    /// Folder of approval tokens.
    pub approvals: PathBuf,
    /// Persistent state: audit log, active document, high-water mark.
    pub state_dir: PathBuf,
}

/// JSON access log.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write one JSON line per request.
    pub enabled: bool,
    /// File to append to; absent: standard output.
    pub path: Option<PathBuf>,
}

/// Keys, roles and the change policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// When false, every valid document activates (class `unapproved`).
    pub require_approvals: bool,
    /// Tokens must carry `aud` equal to this.
    pub environment: String,
    /// Principals by name.
    pub principals: BTreeMap<String, Principal>,
    /// The change policy.
    pub policy: Policy,
}

/// A person or system that signs tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Public keys, `ed25519:<base64url>`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Roles held.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The change policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Longest `exp - iat` accepted.
    pub max_token_lifetime: Dur,
    /// Tolerance on `iat` and `exp`.
    pub clock_skew: Dur,
    /// How far a new version may exceed the high-water mark.
    pub max_version_step: u64,
    /// Pre-approved changes.
    pub standard: Standard,
    /// Reviewed changes.
    pub normal: Normal,
    /// Emergency changes.
    pub emergency: Emergency,
}

/// Pre-approved change paths.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Standard {
    /// JSON Pointer globs (`*` one segment, `**` many).
    pub allow: Vec<String>,
}

/// Requirements of a normal change.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Normal {
    /// Approvals needed.
    pub require: Vec<Requirement>,
}

/// Requirements of an emergency change.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Emergency {
    /// Approvals needed to activate at once.
    pub require: Vec<Requirement>,
    /// Whether the author may approve their own emergency.
    pub allow_self_approval: bool,
    /// Time allowed for the post-facto review.
    pub review_within: Dur,
    /// Reviews needed to close it.
    pub review: Vec<Requirement>,
}

/// `count` distinct principals holding one of `roles` (when the diff touches `paths`, if given).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Distinct principals needed.
    pub count: usize,
    /// Roles that count.
    pub roles: Vec<String>,
    /// Only when the diff touches one of these JSON Pointer globs.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
}

// === impl Settings ===

impl Settings {
    /// Reads and validates `sluice.yaml`.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::plain("", format!("cannot read {}: {e}", path.display())))?;
        Settings::parse(&text)
    }

    /// Parses and validates the text of `sluice.yaml`.
    pub fn parse(text: &str) -> Result<Settings, ConfigErrors> {
        let parsed = yaml::parse(text)?;
        let spans = &parsed.spans;
        let Some(map) = parsed.value.as_object() else {
            return Err(ConfigError::plain("", "sluice.yaml must be a mapping").into());
        };
        let mut errors = Vec::new();
        unknown_keys(
            map,
            &[
                "listeners",
                "admin",
                "ofrep",
                "flags",
                "runtime",
                "limits",
                "paths",
                "trust",
                "access_log",
                "cluster",
                "metrics",
                "tracing",
                "network",
            ],
            spans,
            &mut errors,
        );
        let s = Settings {
            listeners: field(map, "listeners", "", spans, &mut errors),
            admin: field(map, "admin", "", spans, &mut errors),
            ofrep: field(map, "ofrep", "", spans, &mut errors),
            flags: field(map, "flags", "", spans, &mut errors),
            runtime: field(map, "runtime", "", spans, &mut errors),
            limits: field(map, "limits", "", spans, &mut errors),
            paths: field(map, "paths", "", spans, &mut errors),
            trust: field(map, "trust", "", spans, &mut errors),
            access_log: field(map, "access_log", "", spans, &mut errors),
            cluster: field(map, "cluster", "", spans, &mut errors),
            metrics: field(map, "metrics", "", spans, &mut errors),
            tracing: field(map, "tracing", "", spans, &mut errors),
            network: field(map, "network", "", spans, &mut errors),
        };
        s.check(spans, &mut errors);
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn check(&self, spans: &yaml::Spans, errors: &mut Vec<ConfigError>) {
        if let Some(c) = &self.cluster {
            c.check(spans, errors);
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                errors.push(ConfigError::at(
                    spans,
                    &format!("listeners[{i}].name"),
                    format!("duplicate listener name `{}`", l.name),
                ));
            }
            if let Some(tls) = &l.tls
                && tls.certs.is_empty()
            {
                errors.push(ConfigError::at(
                    spans,
                    &format!("listeners[{i}].tls.certs"),
                    "at least one certificate is needed",
                ));
            }
        }
        for (i, p) in self.network.trusted_proxies.iter().enumerate() {
            if let Err(m) = super::cidr::Cidr::parse(p) {
                errors.push(ConfigError::at(
                    spans,
                    &format!("network.trusted_proxies[{i}]"),
                    m,
                ));
            }
        }
        for (i, o) in self.ofrep.cors_origins.iter().enumerate() {
            if let Err(m) = check_origin(o) {
                errors.push(ConfigError::at(
                    spans,
                    &format!("ofrep.cors_origins[{i}]"),
                    m,
                ));
            }
        }
        if self.ofrep.max_streams == 0 {
            errors.push(ConfigError::at(
                spans,
                "ofrep.max_streams",
                "must be at least 1",
            ));
        }
        if self.ofrep.heartbeat.0 < std::time::Duration::from_millis(10) {
            errors.push(ConfigError::at(
                spans,
                "ofrep.heartbeat",
                "must be at least 10ms",
            ));
        }
        if let Some(t) = &self.tracing {
            if !(0.0..=1.0).contains(&t.sample) {
                errors.push(ConfigError::at(
                    spans,
                    "tracing.sample",
                    format!("{} is not a fraction from 0 to 1", t.sample),
                ));
            }
            if let Some(o) = &t.otlp
                && let Err(m) = crate::telemetry::otlp::Target::parse(&o.endpoint)
            {
                errors.push(ConfigError::at(spans, "tracing.otlp.endpoint", m));
            }
        }
        if self.limits.max_header_bytes < 1024 {
            errors.push(ConfigError::at(
                spans,
                "limits.max_header_bytes",
                "must be at least 1024",
            ));
        }
        for (i, u) in self.limits.upgrades.iter().enumerate() {
            let bad = if u.eq_ignore_ascii_case("h2c") {
                Some(
                    "`h2c` is never tunnelled: the client would speak HTTP/2 past sluice's routing and header rules",
                )
            } else if u.is_empty()
                || !u
                    .bytes()
                    .all(|b| crate::flags::headers::is_tchar(b) && !b.is_ascii_uppercase())
            {
                Some("an upgrade protocol is a lowercase token, e.g. `websocket`")
            } else {
                None
            };
            if let Some(m) = bad {
                errors.push(ConfigError::at(spans, &format!("limits.upgrades[{i}]"), m));
            }
        }
        if self.limits.max_connections == 0 {
            errors.push(ConfigError::at(
                spans,
                "limits.max_connections",
                "must be at least 1",
            ));
        }
        let mut key_owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, p) in &self.trust.principals {
            for (i, k) in p.keys.iter().enumerate() {
                let path = format!("trust.principals.{name}.keys[{i}]");
                if !k.starts_with("ed25519:") {
                    errors.push(ConfigError::at(
                        spans,
                        &path,
                        "keys must be written `ed25519:<base64url public key>`",
                    ));
                }
                if let Some(other) = key_owner.insert(k.as_str(), name.as_str())
                    && other != name
                {
                    errors.push(ConfigError::at(
                        spans,
                        &path,
                        format!("this key is already listed under principal `{other}`: a key may belong to one principal only"),
                    ));
                }
            }
        }
        for (section, reqs) in [
            ("normal.require", &self.trust.policy.normal.require),
            ("emergency.require", &self.trust.policy.emergency.require),
            ("emergency.review", &self.trust.policy.emergency.review),
        ] {
            for (i, r) in reqs.iter().enumerate() {
                if r.roles.is_empty() {
                    errors.push(ConfigError::at(
                        spans,
                        &format!("trust.policy.{section}[{i}].roles"),
                        "at least one role is needed",
                    ));
                }
            }
        }
    }
}

// === defaults ===

impl Default for Admin {
    fn default() -> Self {
        Admin {
            bind: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Dur::secs(10),
            handshake_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            drain_delay: Dur::secs(5),
            drain_timeout: Dur::secs(30),
            max_header_bytes: 65536,
            max_connections: 10_000,
            upgrades: vec!["websocket".into()],
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            traffic: PathBuf::from("config/traffic.yaml"),
            approvals: PathBuf::from("config/approvals"),
            state_dir: PathBuf::from("state"),
        }
    }
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            require_approvals: true,
            environment: "prod".into(),
            principals: BTreeMap::new(),
            policy: Policy::default(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_token_lifetime: Dur::secs(72 * 3600),
            clock_skew: Dur::secs(60),
            max_version_step: 1000,
            standard: Standard::default(),
            normal: Normal::default(),
            emergency: Emergency::default(),
        }
    }
}

impl Default for Emergency {
    fn default() -> Self {
        Emergency {
            require: Vec::new(),
            allow_self_approval: false,
            review_within: Dur::secs(24 * 3600),
            review: Vec::new(),
        }
    }
}

/// Parses a bind address: `IP:port`, `[IPv6]:port`, or `:port` (every IPv4 interface).
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}` is not an address: the port must be 0 to 65535"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not an address: write `IP:port`, `[IPv6]:port` or `:port`"))
}

fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_bind(&s).map_err(serde::de::Error::custom)
}

/// An allowed CORS origin: `*`, or `http(s)://host[:port]` exactly as browsers send it.
fn check_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("`{o}` is not an origin: write `https://host[:port]` or `*`"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty()
        || host.contains(['/', '?', '#', '@'])
        || !host.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "`{o}` is not an origin: scheme, host and port only, no path"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins() {
        let ok = Settings::parse(
            "ofrep: { cors_origins: [\"*\", \"https://app.example.com\", \"http://localhost:3000/\"] }\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = Settings::parse(
            "ofrep:\n  cors_origins: [\"https://app.example.com/path\", \"app.example.com\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ofrep.cors_origins[0] (line 2:"), "{e}");
        assert!(e.contains("ofrep.cors_origins[1]"), "{e}");
    }

    #[test]
    fn defaults_and_errors() {
        let s = Settings::parse("listeners: [{name: public, bind: \"127.0.0.1:8080\"}]\n").unwrap();
        assert!(s.trust.require_approvals);
        assert_eq!(s.limits.max_header_bytes, 65536);
        assert_eq!(s.limits.drain_delay, Dur::secs(5));
        let s = Settings::parse("limits: { drain_delay: 0s }\n").unwrap();
        assert_eq!(s.limits.drain_delay, Dur::secs(0));
        let e = Settings::parse(
            "listeners: [{name: a, bind: nope}]\nlimits: {drain_timeout: 5}\nbogus: 1\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.len(), 3, "{text}");
        assert!(text.contains("listeners[0].bind (line 1:"), "{text}");
        assert!(text.contains("limits.drain_timeout (line 2:"), "{text}");
        assert!(text.contains("bogus (line 3:1): unknown field"), "{text}");
    }

    #[test]
    fn bind_forms() {
        let s = Settings::parse(
            "listeners:\n  - { name: a, bind: \":8080\" }\n  - { name: b, bind: \"[::]:8081\" }\nmetrics: { bind: \"127.0.0.1:9090\" }\n",
        )
        .unwrap();
        assert_eq!(s.listeners[0].bind, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.listeners[1].bind, "[::]:8081".parse().unwrap());
        assert_eq!(
            s.metrics.map(|m| m.bind),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let e =
            Settings::parse("admin: { bind: \"localhost:99999\" }\nmetrics: { bind: \":x\" }\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("admin.bind (line 1:"), "{e}");
        assert!(e.contains("metrics.bind (line 2:"), "{e}");
        assert!(e.contains("`:port`"), "{e}");
    }

    #[test]
    fn client_identity_settings() {
        let s = Settings::parse(
            "listeners:\n  - name: lb\n    bind: \":8443\"\n    proxy_protocol: true\n    tls:\n      certs: [{ cert: a.pem, key: a.key }]\n      client_auth: { ca_file: clients.pem, mode: optional }\nnetwork: { trusted_proxies: [\"10.0.0.0/8\", \"2001:db8::1\"] }\n",
        )
        .unwrap();
        let l = &s.listeners[0];
        assert!(l.proxy_protocol);
        let auth = l.tls.as_ref().unwrap().client_auth.as_ref().unwrap();
        assert_eq!(auth.mode, ClientAuthMode::Optional);
        assert_eq!(s.network.trusted_proxies.len(), 2);
        let e = Settings::parse(
            "network:\n  trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy.internal\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network.trusted_proxies[1] (line 2:"), "{e}");
        assert!(e.contains("network.trusted_proxies[2]"), "{e}");
        assert!(e.contains("`proxy.internal` is not a CIDR"), "{e}");
        let e = Settings::parse(
            "listeners:\n  - name: a\n    bind: \":1\"\n    tls: { certs: [{ cert: a, key: b }], client_auth: { ca_file: c, mode: sometimes } }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listeners[0]"), "{e}");
    }

    #[test]
    fn key_under_two_principals() {
        let e = Settings::parse(
            "trust:\n  principals:\n    a: {keys: [\"ed25519:AAAA\"]}\n    b: {keys: [\"ed25519:AAAA\"]}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("trust.principals.b.keys[0] (line 4:"),
            "{e}"
        );
    }
}
