//! The raw types of `traffic.yaml`: what serde reads, field for field, with defaults and
//! `deny_unknown_fields`. Nothing here is checked; [`super::validation`] does that, and
//! [`super::model`] holds what it resolved.
//!
//! To add a field: declare it here (with its serde default and a `///` line), check it in
//! the `check_*` function of its section in `validation.rs`, and, if the data plane needs
//! it in another form, resolve it into `model.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Dur, Size, Weight};

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
    /// Copies of a share of the route's requests, sent fire-and-forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
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
    /// Header values (exact, or `{prefix}`, `{regex}`, `{present: true}`).
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Cookie values, as `headers`.
    #[serde(default)]
    pub cookies: BTreeMap<String, ValueMatch>,
    /// Query-parameter values (percent-decoded), as `headers`.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
    /// Methods accepted.
    #[serde(default)]
    pub methods: Vec<String>,
    /// A verified client certificate (mTLS listeners), optionally with this subject or SAN.
    #[serde(default)]
    pub client_cert: Option<ClientCertMatch>,
}

/// `match.client_cert`: the request's connection presented a verified client certificate;
/// `{}` matches any.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientCertMatch {
    /// The subject exactly, `CN=...,O=...` (RFC 4514 order as in the certificate).
    #[serde(default)]
    pub subject: Option<String>,
    /// One of the subject alternative names exactly (DNS name, URI, e-mail or IP).
    #[serde(default)]
    pub san: Option<String>,
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
    pub canary_match: Option<RequestMatch>,
    /// Testers sent to preview before promotion.
    #[serde(default)]
    pub preview_match: Option<RequestMatch>,
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
    /// Webhooks called at the rollout's stages (Flagger's webhook types).
    #[serde(default)]
    pub hooks: Hooks,
    /// Copies of a share of the rollout's requests, sent fire-and-forget.
    #[serde(default)]
    pub mirror: Option<Mirror>,
}

/// `mirror`: a share of a route's, a rollout's or a canary step's requests copied to another
/// upstream; the copies' answers are discarded and never reach the client.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The upstream the copies go to.
    pub upstream: String,
    /// The share of requests copied (evenly spread, not drawn at random).
    pub percent: Weight,
    /// Requests with a longer body are not copied.
    #[serde(default = "default_mirror_max_body")]
    pub max_body: Size,
    /// Copies in flight at once; more are skipped.
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: u32,
}

fn default_mirror_max_body() -> Size {
    Size(64 * 1024)
}

fn default_mirror_in_flight() -> u32 {
    64
}

/// `hooks`: webhooks POSTed a Flagger-compatible JSON payload at a rollout's stages; a 2xx
/// answer is a pass.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Gate before the canary gets traffic: polled until every one answers 2xx.
    #[serde(default)]
    pub confirm_rollout: Vec<Hook>,
    /// Checks before the canary gets traffic: a failure is a failed verdict.
    #[serde(default)]
    pub pre_rollout: Vec<Hook>,
    /// Called as each weight step begins: a failure is a failed verdict; the step advances
    /// only once they passed.
    #[serde(default)]
    pub rollout: Vec<Hook>,
    /// Gate before promotion (the canary's move to 100%, or completion; blue-green: the
    /// swap): polled until every one answers 2xx.
    #[serde(default)]
    pub confirm_promotion: Vec<Hook>,
    /// Called once the rollout completed or aborted; the result is only recorded.
    #[serde(default)]
    pub post_rollout: Vec<Hook>,
    /// Polled while the rollout is live: a 2xx answer rolls it back (reason `hook`).
    #[serde(default)]
    pub rollback: Vec<Hook>,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Where to POST (`http(s)://host[:port]/path`).
    pub url: String,
    /// `https`: a PEM bundle of the CAs to trust instead of the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Deadline of one try.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Dur,
    /// Extra tries after a failed one (checks only; gates are polled instead).
    #[serde(default = "default_hook_retries")]
    pub retries: u32,
    /// Strings added to the payload's `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn default_hook_timeout() -> Dur {
    Dur::secs(10)
}

fn default_hook_retries() -> u32 {
    2
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

/// Conditions that select a request (`canary_match`, `preview_match`): every one must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// Header → value condition.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Cookie → value condition.
    #[serde(default)]
    pub cookies: BTreeMap<String, ValueMatch>,
    /// Query parameter → value condition (names and values percent-decoded).
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
}

/// What a header, cookie or query value must be: an exact string, or exactly one of
/// `{ prefix: "..." }`, `{ regex: "..." }` (anchored, linear-time) or `{ present: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ValueMatch {
    /// This value exactly.
    Exact(String),
    /// A value starting with `prefix`.
    Prefix {
        /// The prefix.
        prefix: String,
    },
    /// A value wholly matching `regex`.
    Regex {
        /// The pattern (`regex` crate syntax).
        regex: String,
    },
    /// Any value, as long as there is one.
    Present {
        /// Must be `true`.
        present: bool,
    },
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueMatchVisitor)
    }
}

/// Reads a string, or a one-key mapping, with errors that name what is expected.
struct ValueMatchVisitor;

impl<'de> serde::de::Visitor<'de> for ValueMatchVisitor {
    type Value = ValueMatch;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, or one of { prefix: ... }, { regex: ... }, { present: true }")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ValueMatch, E> {
        Ok(ValueMatch::Exact(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ValueMatch, A::Error> {
        use serde::de::Error;
        const KEYS: &[&str] = &["prefix", "regex", "present"];
        let Some(key) = map.next_key::<String>()? else {
            return Err(A::Error::custom(
                "an empty matcher: use one of prefix, regex or present",
            ));
        };
        let m = match key.as_str() {
            "prefix" => ValueMatch::Prefix {
                prefix: map.next_value()?,
            },
            "regex" => ValueMatch::Regex {
                regex: map.next_value()?,
            },
            "present" => ValueMatch::Present {
                present: map.next_value()?,
            },
            other => return Err(A::Error::unknown_field(other, KEYS)),
        };
        if map.next_key::<String>()?.is_some() {
            return Err(A::Error::custom(
                "exactly one of prefix, regex or present per matcher",
            ));
        }
        Ok(m)
    }
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
    pub gate: Option<StepGate>,
    /// Copies sent while this step is the current one (replaces the rollout's `mirror`
    /// then); copies to the canary are judged by the analysis as canary traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// A step gate.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepGate {
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
    /// How the verdict is computed.
    pub method: AnalysisMethod,
    /// Extra verdict inputs: queries to Prometheus or a web endpoint.
    pub metrics: Vec<MetricCheck>,
}

/// One extra verdict input (`analysis.metrics[]`): a query whose result must meet
/// `condition`; a failing result fails the verdict, an unreachable provider makes it
/// inconclusive (the rollout holds, never rolls back on a provider outage).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// Names the input in status, audit and logs.
    pub name: String,
    /// Where the value comes from.
    pub provider: MetricProvider,
    /// `prometheus`: the server's base URL (`http://host:9090`).
    #[serde(default)]
    pub address: Option<String>,
    /// `https`: a PEM bundle of the CAs to trust instead of the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `prometheus`: the PromQL instant query (templated).
    #[serde(default)]
    pub query: Option<String>,
    /// `web`: the URL to GET (templated).
    #[serde(default)]
    pub url: Option<String>,
    /// `web`: where the value is in the JSON body (`$.a.b[0]`; the whole body without it).
    #[serde(default)]
    pub json_path: Option<String>,
    /// `result <op> <number|true|false>`, op one of `< <= > >= == !=`.
    pub condition: String,
    /// How often the value is fetched (default: the analysis `interval`).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Consecutive failing results before this input fails the verdict.
    #[serde(default = "one")]
    pub failure_limit: u32,
    /// How long one fetch may take.
    #[serde(default = "default_metric_timeout")]
    pub timeout: Dur,
}

/// A notification target (`notifications[]`): audit events POSTed as they happen.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Where to POST (`http(s)://host[:port]/path`).
    pub url: String,
    /// `https`: a PEM bundle of the CAs to trust instead of the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Event names or patterns (`change.*`, `rollout.*`, `*`, `rollout.aborted`).
    pub events: Vec<String>,
    /// A file holding the HMAC-SHA256 key; the body is then signed in `x-sluice-signature`.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// The body: the audit line, or a Slack message.
    #[serde(default)]
    pub format: NotifyFormat,
    /// Deadline of one try.
    #[serde(default = "default_metric_timeout")]
    pub timeout: Dur,
}

/// The body of a notification.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// The audit line as written.
    #[default]
    Json,
    /// `{"text": "sluice: <event> rollout=... phase=..."}` (a Slack incoming webhook).
    Slack,
}

/// Where a metric check's value comes from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricProvider {
    /// A Prometheus instant query (`GET /api/v1/query`).
    Prometheus,
    /// A JSON document fetched by GET.
    Web,
}

fn one() -> u32 {
    1
}

fn default_metric_timeout() -> Dur {
    Dur::secs(5)
}

/// How a rollout's verdict is computed (SPEC §6).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMethod {
    /// An always-valid sequential test on everything since the rollout started, evaluated
    /// every 100 ms: its false-rollback probability over the whole rollout is at most
    /// `1 − confidence`.
    #[default]
    Sequential,
    /// The z test of each `interval` over the trailing `window` (one look's confidence).
    ZTest,
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
            method: AnalysisMethod::default(),
            metrics: Vec::new(),
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
    /// The subject of the verified client certificate (mTLS listeners), `CN=...,O=...`.
    ClientSubject,
    /// The first subject alternative name of the verified client certificate.
    ClientSan,
}

/// flagd fractional hashing version (defined by the flag evaluator).
pub use crate::flags::Fractional;
