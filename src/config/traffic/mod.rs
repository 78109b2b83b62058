//! `traffic.yaml`: the change-managed document (version, change header, upstreams, routes,
//! rollouts, flags). Parsed here, checked here; compiled into a snapshot elsewhere.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ConfigError, ConfigErrors, Dur, MAX_ERRORS, Weight, field, from_node, unknown_keys, yaml,
};

/// Most flags a single route may inject upstream.
pub const MAX_ROUTE_FLAGS: usize = 64;

/// Longest key of an injected flag: `x-sluice-flag-<key>` must fit a header name (64 KiB).
pub const MAX_INJECTED_KEY_BYTES: usize = u16::MAX as usize - "x-sluice-flag-".len();

/// The whole traffic document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficDoc {
    /// Strictly increasing across activations.
    pub version: u64,
    /// Who changes what, and why.
    pub change: ChangeHeader,
    /// Upstream pools by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Rollouts by name.
    pub rollouts: BTreeMap<String, Rollout>,
    /// How a request becomes an evaluation context.
    pub flag_context: FlagContext,
    /// flagd fractional hashing version.
    pub fractional: Fractional,
    /// flagd flag definitions, kept as JSON.
    pub flags: Map<String, Value>,
    /// Shared targeting fragments (`$evaluators`).
    #[serde(rename = "$evaluators")]
    pub evaluators: Map<String, Value>,
}

/// The `change` header of a document.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChangeHeader {
    /// Change identifier, e.g. `CHG-1042`.
    pub id: String,
    /// The principal of the author token.
    pub author: String,
    /// The class the author claims.
    #[serde(default)]
    pub class: ChangeClass,
    /// One line on what and why.
    #[serde(default)]
    pub summary: String,
    /// Optional ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
}

/// The class a change is handled as.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ChangeClass {
    /// Pre-approved: the author token alone.
    Standard,
    /// Reviewed.
    #[default]
    Normal,
    /// Immediate, reviewed afterwards.
    Emergency,
    /// Activated without approvals (`require_approvals: false`); never claimed by a document.
    Unapproved,
}

/// An upstream pool.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` endpoints; hostnames are re-resolved periodically.
    pub endpoints: Vec<String>,
    /// Load-balancing policy.
    #[serde(default)]
    pub balance: Balance,
    /// Upstream protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Request start to response headers.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Passive health checking.
    #[serde(default)]
    pub passive_health: Option<PassiveHealth>,
    /// Active health checking.
    #[serde(default)]
    pub active_health: Option<ActiveHealth>,
}

fn default_connect_timeout() -> Dur {
    Dur::secs(2)
}
fn default_request_timeout() -> Dur {
    Dur::secs(30)
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over cleartext (prior knowledge).
    H2c,
    /// ALPN over TLS.
    Auto,
}

/// Upstream TLS.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI and verified name.
    #[serde(default)]
    pub server_name: Option<String>,
    /// CA bundle (PEM); absent: the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate for mTLS (PEM).
    #[serde(default)]
    pub client_cert: Option<String>,
    /// Client key for mTLS (PEM).
    #[serde(default)]
    pub client_key: Option<String>,
}

/// Passive health: eject an endpoint after consecutive failures.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive connect/reset/timeout failures before ejection.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out.
    pub eject_for: Dur,
}

/// Active health probes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealth {
    /// Path probed with GET.
    pub path: String,
    /// Time between probes.
    #[serde(default = "default_probe_interval")]
    pub interval: Dur,
    /// Failed probes before unhealthy.
    #[serde(default = "default_three")]
    pub unhealthy_after: u32,
    /// Passed probes before healthy again.
    #[serde(default = "default_two")]
    pub healthy_after: u32,
}

fn default_probe_interval() -> Dur {
    Dur::secs(5)
}
fn default_three() -> u32 {
    3
}
fn default_two() -> u32 {
    2
}

/// A route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name used in headers and metrics.
    pub name: String,
    /// What requests it takes.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Where they go.
    pub to: RouteTarget,
    /// Flags evaluated and injected upstream, in order; `["*"]` = all.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Retry policy.
    #[serde(default)]
    pub retries: Option<Retries>,
}

/// The match part of a route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Only requests arriving on this listener.
    #[serde(default)]
    pub listener: Option<String>,
    /// Host, case-insensitive, port ignored; `*.example.com` excludes the apex.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix on whole segments.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact header values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Methods accepted.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Where a route sends.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// A rollout.
    #[serde(default)]
    pub rollout: Option<String>,
    /// A single upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// A flag whose variant picks the upstream.
    #[serde(default)]
    pub flag: Option<String>,
    /// Variant → upstream (with `flag`).
    #[serde(default)]
    pub upstreams: BTreeMap<String, String>,
    /// A built-in service (`ofrep`).
    #[serde(default)]
    pub builtin: Option<Builtin>,
}

/// Built-in services a route can serve.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// The OpenFeature Remote Evaluation Protocol.
    Ofrep,
}

/// Retry policy of a route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Extra tries.
    pub attempts: u32,
    /// Conditions that allow a retry.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}

/// A retry condition.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection could not be made (any method).
    ConnectFailure,
    /// The connection broke (idempotent methods only).
    Reset,
    /// No response headers in time (idempotent methods only).
    Timeout,
    /// The upstream answered 503 (idempotent methods only).
    #[serde(rename = "status_503")]
    Status503,
}

/// A rollout (canary or blue-green).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// canary or blue_green.
    pub strategy: Strategy,
    /// Canary: the current version.
    #[serde(default)]
    pub stable: Option<String>,
    /// Canary: the new version.
    #[serde(default)]
    pub canary: Option<String>,
    /// Blue-green: the serving pool (plays stable).
    #[serde(default)]
    pub active: Option<String>,
    /// Blue-green: the pool being previewed (plays canary).
    #[serde(default)]
    pub preview: Option<String>,
    /// How users are kept on one side.
    #[serde(default)]
    pub sticky: Sticky,
    /// Testers sent to canary at any weight.
    #[serde(default)]
    pub canary_match: Option<HeaderMatch>,
    /// Testers sent to preview before promotion.
    #[serde(default)]
    pub preview_match: Option<HeaderMatch>,
    /// Freeze progress.
    #[serde(default)]
    pub paused: bool,
    /// Canary steps.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Verdict settings; absent: steps advance on `hold` alone.
    #[serde(default)]
    pub analysis: Option<Analysis>,
    /// What a failed analysis does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Blue-green promotion.
    #[serde(default)]
    pub promote: Option<Promote>,
    /// Blue-green: analysis after promotion; a failure swaps back.
    #[serde(default)]
    pub post_promotion_window: Option<Dur>,
}

/// Rollout strategy.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Weighted steps.
    Canary,
    /// Preview, then a full swap.
    BlueGreen,
}

/// Sticky-key sources.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// Header carrying the user key.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie carrying the user key.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Set the cookie when the key had to be drawn.
    #[serde(default)]
    pub set_cookie: bool,
    /// Max-Age of that cookie.
    #[serde(default = "default_cookie_max_age")]
    pub cookie_max_age: Dur,
}

fn default_cookie_max_age() -> Dur {
    Dur::secs(365 * 86400)
}

/// Exact header values that select a request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header → exact value.
    pub headers: BTreeMap<String, String>,
}

/// One canary step: a weight with an optional hold, or a manual gate.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Canary share.
    #[serde(default)]
    pub weight: Option<Weight>,
    /// Minimum time at this step.
    #[serde(default)]
    pub hold: Option<Dur>,
    /// `manual`: wait for promote.
    #[serde(default)]
    pub gate: Option<Gate>,
}

/// A step gate.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Wait for a promote action.
    Manual,
}

/// Analysis settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// How often the verdict is computed.
    pub interval: Dur,
    /// Trailing window the verdict looks at.
    pub window: Dur,
    /// Canary requests in the window below which the verdict is inconclusive.
    pub min_requests: u64,
    /// Highest canary error rate.
    pub max_error_rate: Option<f64>,
    /// Highest significant excess of canary over stable error rate.
    pub max_error_rate_increase: Option<f64>,
    /// Confidence of the one-sided test.
    pub confidence: f64,
    /// Highest canary p99.
    pub max_p99: Option<Dur>,
    /// Statuses counted as errors (`5xx`, `429`, ...).
    pub error_statuses: Vec<String>,
    /// Consecutive failing verdicts before `on_failure`.
    pub failure_limit: u32,
    /// Consecutive inconclusive verdicts before pausing.
    pub inconclusive_limit: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: Dur::secs(1),
            window: Dur::secs(30),
            min_requests: 50,
            max_error_rate: None,
            max_error_rate_increase: None,
            confidence: 0.99,
            max_p99: None,
            error_statuses: vec!["5xx".into()],
            failure_limit: 1,
            inconclusive_limit: 600,
        }
    }
}

/// What a failed analysis does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Weight 0 at once, phase aborted.
    #[default]
    Rollback,
    /// Phase paused.
    Pause,
}

/// Blue-green promotion.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// Promote automatically after preview has passed analysis this long.
    #[serde(default)]
    pub after: Option<Dur>,
    /// Wait for a promote action.
    #[serde(default)]
    pub manual: bool,
}

/// How a request becomes an OpenFeature evaluation context.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlagContext {
    /// Sources of `targetingKey`, first present wins.
    #[serde(default)]
    pub targeting_key: Vec<ContextSource>,
    /// Context attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, ContextSource>,
}

/// Where a context value comes from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContextSource {
    /// A request header.
    #[serde(default)]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default)]
    pub cookie: Option<String>,
    /// A request attribute.
    #[serde(default)]
    pub request: Option<RequestAttr>,
}

/// Request attributes available to `flag_context`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestAttr {
    /// The normalized path.
    Path,
    /// The method.
    Method,
    /// The host, without port.
    Host,
    /// The client's IP address.
    ClientIp,
}

/// flagd fractional hashing version.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fractional {
    /// `flagKey + targetingKey` as a string.
    V2,
    /// Canonical CBOR (default).
    #[default]
    V3,
}

/// What validation needs to know from `sluice.yaml`.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    /// Listener names, to check `match.listener`.
    pub listeners: Option<Vec<String>>,
}

/// A parsed traffic document with its JSON form and source positions.
#[derive(Debug, Clone)]
pub struct ParsedTraffic {
    /// The typed document.
    pub doc: TrafficDoc,
    /// The document as JSON (diffed by the change policy).
    pub json: Value,
    /// Source positions.
    pub spans: yaml::Spans,
}

// === impl TrafficDoc ===

impl TrafficDoc {
    /// Parses and checks a traffic document; every error is collected.
    pub fn parse(text: &str, ctx: &CheckContext) -> Result<ParsedTraffic, ConfigErrors> {
        let parsed = yaml::parse(text)?;
        let spans = parsed.spans;
        let Some(map) = parsed.value.as_object() else {
            return Err(ConfigError::plain("", "traffic.yaml must be a mapping").into());
        };
        let mut errors = Vec::new();
        unknown_keys(
            map,
            &[
                "version",
                "change",
                "upstreams",
                "routes",
                "rollouts",
                "flag_context",
                "fractional",
                "flags",
                "$evaluators",
            ],
            &spans,
            &mut errors,
        );
        for key in ["version", "change"] {
            if !map.contains_key(key) {
                errors.push(ConfigError::at(
                    &spans,
                    "",
                    format!("missing field `{key}`"),
                ));
            }
        }
        let doc = TrafficDoc {
            version: field(map, "version", "", &spans, &mut errors),
            change: field(map, "change", "", &spans, &mut errors),
            upstreams: entries(map, "upstreams", &spans, &mut errors),
            routes: items(map, "routes", &spans, &mut errors),
            rollouts: entries(map, "rollouts", &spans, &mut errors),
            flag_context: field(map, "flag_context", "", &spans, &mut errors),
            fractional: field(map, "fractional", "", &spans, &mut errors),
            flags: field(map, "flags", "", &spans, &mut errors),
            evaluators: field(map, "$evaluators", "", &spans, &mut errors),
        };
        if errors.is_empty() {
            doc.check(ctx, &spans, &mut errors);
        }
        if errors.is_empty() {
            Ok(ParsedTraffic {
                doc,
                json: parsed.value,
                spans,
            })
        } else {
            Err(ConfigErrors::capped(errors))
        }
    }

    fn check(&self, ctx: &CheckContext, spans: &yaml::Spans, errors: &mut Vec<ConfigError>) {
        let mut err = Sink { errors, spans };
        if self.version == 0 {
            err.push("version".into(), "must be at least 1".into());
        }
        if self.change.id.trim().is_empty() {
            err.push("change.id".into(), "must not be empty".into());
        }
        if self.change.author.trim().is_empty() {
            err.push("change.author".into(), "must not be empty".into());
        }
        if self.change.class == ChangeClass::Unapproved {
            err.push(
                "change.class".into(),
                "must be standard, normal or emergency".into(),
            );
        }
        for (name, u) in &self.upstreams {
            if err.full() {
                return;
            }
            if !is_name(name) {
                // Not looked into further: every error inside would repeat the bad name in
                // its path, and a long one would make the error list quadratic in size.
                err.push(
                    format!("upstreams.{}", shorten(name)),
                    format!("upstream name `{}` {NAME_RULE}", shorten(name)),
                );
                continue;
            }
            let base = format!("upstreams.{name}");
            if u.endpoints.is_empty() {
                err.push(
                    format!("{base}.endpoints"),
                    "at least one endpoint is needed".into(),
                );
            }
            for (i, e) in u.endpoints.iter().enumerate() {
                if let Err(m) = check_endpoint(e) {
                    err.push(format!("{base}.endpoints[{i}]"), m);
                }
            }
            if u.connect_timeout.0.is_zero() {
                err.push(
                    format!("{base}.connect_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if u.request_timeout.0.is_zero() {
                err.push(
                    format!("{base}.request_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if u.protocol == Protocol::Auto && u.tls.is_none() {
                err.push(
                    format!("{base}.protocol"),
                    "`auto` negotiates by ALPN and needs `tls`".into(),
                );
            }
            if let Some(tls) = &u.tls
                && tls.client_cert.is_some() != tls.client_key.is_some()
            {
                err.push(
                    format!("{base}.tls"),
                    "client_cert and client_key go together".into(),
                );
            }
            if let Some(p) = &u.passive_health
                && p.consecutive_failures == 0
            {
                err.push(
                    format!("{base}.passive_health.consecutive_failures"),
                    "must be at least 1".into(),
                );
            }
            if let Some(a) = &u.active_health {
                if !a.path.starts_with('/') {
                    err.push(
                        format!("{base}.active_health.path"),
                        "must start with `/`".into(),
                    );
                }
                if a.interval.0.is_zero() {
                    err.push(
                        format!("{base}.active_health.interval"),
                        "must be greater than zero".into(),
                    );
                }
            }
        }
        let upstream = |n: &str| self.upstreams.contains_key(n);
        let mut route_names = HashSet::new();
        // Flag keys injected by `["*"]` routes are checked once, not once per route.
        let mut star_checked = false;
        for (i, r) in self.routes.iter().enumerate() {
            if err.full() {
                return;
            }
            let base = format!("routes[{i}]");
            if !is_name(&r.name) {
                err.push(
                    format!("{base}.name"),
                    format!("route name `{}` {NAME_RULE}", shorten(&r.name)),
                );
            } else if !route_names.insert(r.name.as_str()) {
                err.push(
                    format!("{base}.name"),
                    format!("duplicate route name `{}`", r.name),
                );
            }
            let m = &r.matches;
            if let (Some(l), Some(known)) = (&m.listener, &ctx.listeners)
                && !known.iter().any(|k| k == l)
            {
                err.push(
                    format!("{base}.match.listener"),
                    format!("unknown listener `{l}`"),
                );
            }
            if let Some(h) = &m.host
                && let Err(msg) = check_host_pattern(h)
            {
                err.push(format!("{base}.match.host"), msg);
            }
            if let Some(p) = &m.path_prefix
                && !p.starts_with('/')
            {
                err.push(
                    format!("{base}.match.path_prefix"),
                    "must start with `/`".into(),
                );
            }
            for h in m.headers.keys() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    err.push(
                        format!("{base}.match.headers.{h}"),
                        format!("`{h}` is not a valid header name"),
                    );
                }
            }
            for (j, meth) in m.methods.iter().enumerate() {
                if http::Method::from_bytes(meth.as_bytes()).is_err()
                    || meth.to_ascii_uppercase() != *meth
                {
                    err.push(
                        format!("{base}.match.methods[{j}]"),
                        format!("`{meth}` is not an upper-case method"),
                    );
                }
            }
            let t = &r.to;
            let targets = [
                t.rollout.is_some(),
                t.upstream.is_some(),
                t.flag.is_some(),
                t.builtin.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if targets != 1 {
                err.push(
                    format!("{base}.to"),
                    "exactly one of rollout, upstream, flag or builtin is needed".into(),
                );
            }
            if let Some(u) = &t.upstream
                && !upstream(u)
            {
                err.push(
                    format!("{base}.to.upstream"),
                    format!("unknown upstream `{u}`"),
                );
            }
            if let Some(ro) = &t.rollout
                && !self.rollouts.contains_key(ro)
            {
                err.push(
                    format!("{base}.to.rollout"),
                    format!("unknown rollout `{ro}`"),
                );
            }
            if t.builtin.is_some() && !r.flags.is_empty() {
                err.push(
                    format!("{base}.flags"),
                    "a builtin route sends nothing upstream, so it injects no flags".into(),
                );
            }
            if t.flag.is_none() && !t.upstreams.is_empty() {
                err.push(
                    format!("{base}.to.upstreams"),
                    "only allowed with `flag`".into(),
                );
            }
            if let Some(f) = &t.flag {
                if !self.flags.contains_key(f) {
                    err.push(format!("{base}.to.flag"), format!("unknown flag `{f}`"));
                }
                if t.upstreams.is_empty() {
                    err.push(
                        format!("{base}.to.upstreams"),
                        "map each variant to an upstream".into(),
                    );
                }
                for (variant, u) in &t.upstreams {
                    if !upstream(u) {
                        err.push(
                            format!("{base}.to.upstreams.{variant}"),
                            format!("unknown upstream `{u}`"),
                        );
                    }
                }
                if let Some(def) = self.flags.get(f) {
                    for (path, msg) in check_flag_route(f, def, &t.upstreams) {
                        err.push(format!("{base}.{path}"), msg);
                    }
                }
            }
            if r.flags.len() > MAX_ROUTE_FLAGS {
                err.push(
                    format!("{base}.flags"),
                    format!("a route injects at most {MAX_ROUTE_FLAGS} flags"),
                );
            }
            let star = r.flags.iter().any(|f| f == "*");
            if star && r.flags.len() > 1 {
                err.push(format!("{base}.flags"), "`*` stands alone".into());
            }
            if star && self.flags.len() > MAX_ROUTE_FLAGS {
                err.push(
                    format!("{base}.flags"),
                    format!(
                        "`*` would inject {} flags; a route injects at most {MAX_ROUTE_FLAGS}",
                        self.flags.len()
                    ),
                );
            }
            let injected: Vec<&String> = if !star {
                r.flags.iter().collect()
            } else if star_checked || self.flags.len() > MAX_ROUTE_FLAGS {
                Vec::new()
            } else {
                star_checked = true;
                self.flags.keys().collect()
            };
            for (j, f) in injected.iter().enumerate() {
                let path = if star {
                    format!("{base}.flags[0]")
                } else {
                    format!("{base}.flags[{j}]")
                };
                if !star && !self.flags.contains_key(f.as_str()) {
                    err.push(path.clone(), format!("unknown flag `{f}`"));
                }
                if !is_header_token(f) {
                    err.push(
                        path,
                        format!(
                            "flag key `{}` is injected as a header and must be a lowercase header token",
                            shorten(f)
                        ),
                    );
                } else if f.len() > MAX_INJECTED_KEY_BYTES {
                    err.push(
                        path,
                        format!(
                            "flag key `{}` is injected as a header name and must be at most {MAX_INJECTED_KEY_BYTES} bytes",
                            shorten(f)
                        ),
                    );
                }
            }
            if let Some(rt) = &r.retries
                && rt.attempts > 5
            {
                err.push(
                    format!("{base}.retries.attempts"),
                    "at most 5 extra tries".into(),
                );
            }
        }
        for (name, ro) in &self.rollouts {
            if err.full() {
                return;
            }
            if !is_name(name) {
                // As for upstreams: a bad name is reported once, its contents not at all.
                err.push(
                    format!("rollouts.{}", shorten(name)),
                    format!("rollout name `{}` {NAME_RULE}", shorten(name)),
                );
                continue;
            }
            let base = format!("rollouts.{name}");
            let pools: [(&str, &Option<String>, bool); 4] = match ro.strategy {
                Strategy::Canary => [
                    ("stable", &ro.stable, true),
                    ("canary", &ro.canary, true),
                    ("active", &ro.active, false),
                    ("preview", &ro.preview, false),
                ],
                Strategy::BlueGreen => [
                    ("active", &ro.active, true),
                    ("preview", &ro.preview, true),
                    ("stable", &ro.stable, false),
                    ("canary", &ro.canary, false),
                ],
            };
            for (key, val, wanted) in pools {
                match (val, wanted) {
                    (None, true) => err.push(base.clone(), format!("missing field `{key}`")),
                    (Some(_), false) => err.push(
                        format!("{base}.{key}"),
                        format!("`{key}` does not apply to strategy {:?}", ro.strategy)
                            .to_lowercase(),
                    ),
                    (Some(u), true) if !upstream(u) => {
                        err.push(format!("{base}.{key}"), format!("unknown upstream `{u}`"))
                    }
                    _ => {}
                }
            }
            if let (Some(a), Some(b)) = (
                ro.stable.as_ref().or(ro.active.as_ref()),
                ro.canary.as_ref().or(ro.preview.as_ref()),
            ) && a == b
            {
                err.push(
                    base.clone(),
                    "the two sides of a rollout must be different upstreams".into(),
                );
            }
            match ro.strategy {
                Strategy::Canary => {
                    if ro.steps.is_empty() {
                        err.push(
                            format!("{base}.steps"),
                            "a canary needs at least one step".into(),
                        );
                    }
                    if ro.promote.is_some() {
                        err.push(
                            format!("{base}.promote"),
                            "only for blue_green (canaries use `gate: manual` steps)".into(),
                        );
                    }
                    if ro.post_promotion_window.is_some() {
                        err.push(
                            format!("{base}.post_promotion_window"),
                            "only for blue_green".into(),
                        );
                    }
                    if ro.preview_match.is_some() {
                        err.push(
                            format!("{base}.preview_match"),
                            "only for blue_green (canaries use canary_match)".into(),
                        );
                    }
                }
                Strategy::BlueGreen => {
                    if !ro.steps.is_empty() {
                        err.push(
                            format!("{base}.steps"),
                            "blue_green has no steps (it promotes from 0 to 100)".into(),
                        );
                    }
                    if ro.canary_match.is_some() {
                        err.push(
                            format!("{base}.canary_match"),
                            "only for canary (blue_green uses preview_match)".into(),
                        );
                    }
                    if let Some(p) = &ro.promote
                        && p.after.is_some() == p.manual
                    {
                        err.push(
                            format!("{base}.promote"),
                            "exactly one of `after` or `manual: true`".into(),
                        );
                    }
                }
            }
            for (j, s) in ro.steps.iter().enumerate() {
                let sp = format!("{base}.steps[{j}]");
                match (&s.weight, &s.gate) {
                    (Some(_), Some(_)) | (None, None) => err.push(
                        sp.clone(),
                        "a step is either `weight` (with optional `hold`) or `gate: manual`".into(),
                    ),
                    (None, Some(_)) if s.hold.is_some() => {
                        err.push(format!("{sp}.hold"), "a gate has no hold".into())
                    }
                    _ => {}
                }
            }
            if let Some(sticky) = &ro.sticky.header
                && http::HeaderName::from_bytes(sticky.as_bytes()).is_err()
            {
                err.push(
                    format!("{base}.sticky.header"),
                    format!("`{sticky}` is not a valid header name"),
                );
            }
            if let Some(c) = &ro.sticky.cookie
                && (c.is_empty() || !c.bytes().all(is_tchar))
            {
                err.push(
                    format!("{base}.sticky.cookie"),
                    format!("`{c}` is not a valid cookie name"),
                );
            }
            if ro.sticky.set_cookie && ro.sticky.cookie.is_none() {
                err.push(
                    format!("{base}.sticky.set_cookie"),
                    "needs `sticky.cookie` to name the cookie".into(),
                );
            }
            for (key, hm) in [
                ("canary_match", &ro.canary_match),
                ("preview_match", &ro.preview_match),
            ] {
                if let Some(hm) = hm {
                    if hm.headers.is_empty() {
                        err.push(
                            format!("{base}.{key}.headers"),
                            "at least one header is needed".into(),
                        );
                    }
                    for h in hm.headers.keys() {
                        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                            err.push(
                                format!("{base}.{key}.headers.{h}"),
                                format!("`{h}` is not a valid header name"),
                            );
                        }
                    }
                }
            }
            if let Some(a) = &ro.analysis {
                let ap = format!("{base}.analysis");
                if a.interval.0.is_zero() {
                    err.push(format!("{ap}.interval"), "must be greater than zero".into());
                }
                if a.window < a.interval {
                    err.push(
                        format!("{ap}.window"),
                        "must be at least one interval".into(),
                    );
                }
                if a.window.0.as_secs() > 3600 {
                    err.push(format!("{ap}.window"), "at most 1h".into());
                }
                for (k, v) in [
                    ("max_error_rate", a.max_error_rate),
                    ("max_error_rate_increase", a.max_error_rate_increase),
                ] {
                    if let Some(v) = v
                        && !(0.0..=1.0).contains(&v)
                    {
                        err.push(format!("{ap}.{k}"), "must be between 0 and 1".into());
                    }
                }
                if !(a.confidence > 0.5 && a.confidence < 1.0) {
                    err.push(
                        format!("{ap}.confidence"),
                        "must be between 0.5 and 1 (exclusive)".into(),
                    );
                }
                for (j, s) in a.error_statuses.iter().enumerate() {
                    if parse_status_class(s).is_none() {
                        err.push(
                            format!("{ap}.error_statuses[{j}]"),
                            format!("`{s}` is neither a status (503) nor a class (5xx)"),
                        );
                    }
                }
                if a.failure_limit == 0 {
                    err.push(format!("{ap}.failure_limit"), "must be at least 1".into());
                }
                if a.inconclusive_limit == 0 {
                    err.push(
                        format!("{ap}.inconclusive_limit"),
                        "must be at least 1".into(),
                    );
                }
            }
        }
        for (i, s) in self.flag_context.targeting_key.iter().enumerate() {
            if let Err(m) = check_source(s) {
                err.push(format!("flag_context.targeting_key[{i}]"), m);
            }
        }
        for (k, s) in &self.flag_context.attributes {
            if let Err(m) = check_source(s) {
                err.push(format!("flag_context.attributes.{k}"), m);
            }
        }
        // The flags themselves, strictly (SPEC §4): schema, operators, `$ref`s and default
        // variants, each error at its flag's own path so that its line can be shown.
        let opts = crate::flags::Options {
            fractional: self.fractional,
        };
        if let Err(flag_errors) =
            crate::flags::FlagSet::compile(&self.flags, &self.evaluators, opts)
        {
            for e in flag_errors {
                err.push(e.path, e.message);
            }
        }
    }
}

/// Checks a `to: { flag, upstreams }` route against its flag's definition: every mapped
/// key must be a variant (a typo would otherwise never match), and the flag must have a
/// default variant with an upstream, which is where requests go whenever the flag serves
/// no mapped variant (disabled, an evaluation error, or a variant left unmapped). Returns
/// `(path below the route, message)` pairs.
fn check_flag_route(
    key: &str,
    def: &Value,
    upstreams: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // A malformed definition is reported at `flags.<key>` by the flag compiler.
    let Some(variants) = def.get("variants").and_then(Value::as_object) else {
        return out;
    };
    // The variants, named once and at most a few of them: the message repeats for every
    // unknown mapping.
    let mut names = String::new();
    for v in upstreams.keys() {
        if out.len() >= MAX_ERRORS {
            break;
        }
        if !variants.contains_key(v) {
            if names.is_empty() {
                let shown: Vec<_> = variants.keys().take(8).map(|n| shorten(n)).collect();
                names = shown.join(", ");
                if variants.len() > shown.len() {
                    names.push_str(&format!(", … ({} in all)", variants.len()));
                }
            }
            out.push((
                format!("to.upstreams.{v}"),
                format!(
                    "flag `{}` has no variant `{}` (variants: {names})",
                    shorten(key),
                    shorten(v)
                ),
            ));
        }
    }
    let default = match def.get("defaultVariant") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    match default {
        None => out.push((
            "to.flag".into(),
            format!(
                "flag `{key}` routes requests, so it needs a defaultVariant: requests go to its upstream when the flag serves no mapped variant"
            ),
        )),
        Some(d) if variants.contains_key(&d) && !upstreams.contains_key(&d) => out.push((
            "to.upstreams".into(),
            format!(
                "the default variant `{d}` of flag `{key}` needs an upstream: requests go there when the flag serves no mapped variant"
            ),
        )),
        // Not a variant at all: the flag compiler reports it.
        Some(_) => {}
    }
    out
}

/// Parses `5xx` into (500, 599) or `503` into (503, 503).
pub fn parse_status_class(s: &str) -> Option<(u16, u16)> {
    let b = s.as_bytes();
    if b.len() != 3 || !(b'1'..=b'5').contains(&b[0]) {
        return None;
    }
    if &s[1..] == "xx" {
        let base = (b[0] - b'0') as u16 * 100;
        return Some((base, base + 99));
    }
    let n: u16 = s.parse().ok()?;
    Some((n, n))
}

fn check_source(s: &ContextSource) -> Result<(), String> {
    let n = [s.header.is_some(), s.cookie.is_some(), s.request.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n != 1 {
        return Err("exactly one of header, cookie or request is needed".into());
    }
    if let Some(h) = &s.header
        && http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return Err(format!("`{h}` is not a valid header name"));
    }
    Ok(())
}

/// What a name (upstream, route, rollout) must be.
const NAME_RULE: &str = "must be 1 to 128 letters, digits, `-`, `_` or `.`";

/// A value quoted in an error, cut to a readable length: a message never repeats a long
/// input (which could make the error list much larger than the document).
fn shorten(s: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 64;
    if s.len() <= KEEP {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut cut = KEEP;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len()))
}

/// Collects the errors of [`TrafficDoc::check`], positioned, up to [`MAX_ERRORS`].
struct Sink<'e> {
    errors: &'e mut Vec<ConfigError>,
    spans: &'e yaml::Spans,
}

// === impl Sink ===

impl Sink<'_> {
    fn push(&mut self, path: String, msg: String) {
        if !self.full() {
            self.errors.push(ConfigError::at(self.spans, &path, msg));
        }
    }

    /// Enough errors to act on: the checks stop looking.
    fn full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }
}

fn check_endpoint(e: &str) -> Result<(), String> {
    let Some((host, port)) = e.rsplit_once(':') else {
        return Err(format!("endpoint `{e}` must be host:port"));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("endpoint `{e}` has an invalid port"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || !(host.parse::<std::net::IpAddr>().is_ok() || is_hostname(host)) {
        return Err(format!("endpoint `{e}` has an invalid host"));
    }
    Ok(())
}

fn is_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_host_pattern(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if bare.contains(':') {
        return Err(format!(
            "host `{h}` must not carry a port (ports are ignored when matching)"
        ));
    }
    if !is_hostname(bare) {
        return Err(format!("host `{h}` is not a hostname (or `*.suffix`)"));
    }
    Ok(())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A lowercase RFC 9110 token: what a flag key must be to name a header.
pub fn is_header_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase())
}

/// Deserializes each entry of a mapping section separately so one bad entry does not hide others.
fn entries<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    spans: &yaml::Spans,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if errors.len() >= MAX_ERRORS {
                    break;
                }
                match from_node(v, &format!("{key}.{k}"), spans) {
                    Ok(t) => {
                        out.insert(k.clone(), t);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        Some(_) => errors.push(ConfigError::at(spans, key, "must be a mapping of names")),
    }
    out
}

/// Deserializes each item of a sequence section separately.
fn items<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    spans: &yaml::Spans,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    let mut out = Vec::new();
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                if errors.len() >= MAX_ERRORS {
                    break;
                }
                match from_node(v, &format!("{key}[{i}]"), spans) {
                    Ok(t) => out.push(t),
                    Err(e) => errors.push(e),
                }
            }
        }
        Some(_) => errors.push(ConfigError::at(spans, key, "must be a list")),
    }
    out
}

#[cfg(test)]
mod tests;
