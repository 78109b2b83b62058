//! Extra verdict inputs (`analysis.metrics`, SPEC §2.2 and §6): a Prometheus instant query or
//! a JSON value fetched by GET, compared with a condition. Pure: compiling a check,
//! reading a provider's answer, judging it, and folding the results into a verdict. The
//! fetching lives in the rollout runner (`rollout/runner/probes.rs`); validation compiles
//! the same checks, which is why this is a leaf beside `config` rather than inside `rollout`.
//!
//! How a result counts, as Argo Rollouts' analysis does:
//! - the condition holds → the input passes;
//! - it does not hold → a failure; `failure_limit` consecutive failures fail the verdict;
//! - the provider cannot answer (down, timeout, non-2xx, no data, NaN, wrong type) → an
//!   error: the verdict is at most inconclusive, so the rollout holds at its step (and pauses
//!   after `inconclusive_limit`), and is never rolled back because a provider is down.

use serde::Serialize;
use serde_json::Value;

use crate::config::traffic::{Analysis, MetricCheck, MetricProvider};
use crate::rollout::analysis::{Criterion, Verdict, VerdictOutcome};

/// Largest provider answer read, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// A check ready to run: its URL template, how to read the answer, and the condition.
#[derive(Debug, Clone)]
pub struct CompiledCheck {
    /// `name`.
    pub name: String,
    /// Where and how the value is read.
    pub reader: Reader,
    /// The URL, templated (Prometheus: the query URL with the query encoded).
    pub url: Template,
    /// `condition`.
    pub condition: Condition,
    /// How often it is fetched.
    pub interval: std::time::Duration,
    /// Consecutive failures that fail the verdict.
    pub failure_limit: u32,
    /// Deadline of one fetch.
    pub timeout: std::time::Duration,
    /// `https`: the CAs trusted instead of the web roots.
    pub ca_file: Option<String>,
}

/// How a provider's answer becomes values.
#[derive(Debug, Clone)]
pub enum Reader {
    /// A Prometheus `/api/v1/query` answer: every sample of a vector, or a scalar.
    Prometheus,
    /// A JSON body, at this path.
    Web(JsonPath),
}

/// Text with `{{rollout}}`, `{{stable}}`, `{{canary}}` and `{{variant}}` (the canary's
/// upstream, as Flagger's target) to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
    /// A variable percent-encoded (inside a Prometheus query in the URL).
    Encoded(Var),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Rollout,
    Stable,
    Canary,
}

/// The names a template is filled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    /// The rollout's name.
    pub rollout: String,
    /// The stable (blue-green: active) upstream.
    pub stable: String,
    /// The canary (blue-green: preview) upstream.
    pub canary: String,
}

/// `result <op> <literal>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    op: Op,
    rhs: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Num(f64),
    Bool(bool),
}

/// `$`, then `.key`, `['key']` or `[index]` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What one fetch concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricState {
    /// Not fetched yet.
    Pending,
    /// The condition holds.
    Passed,
    /// The condition does not hold.
    Failed,
    /// The provider gave no usable answer.
    Error,
}

/// A check's latest result, as status and audit show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricResult {
    /// The check's name.
    pub name: String,
    /// What the latest fetch concluded.
    pub state: MetricState,
    /// The value(s) read (a number, a boolean, or an array of a vector's samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why the provider gave no usable answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Failures in a row that fail the verdict.
    pub failure_limit: u32,
}

// === impl MetricState ===

impl MetricState {
    /// The snake_case name used in status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricState::Pending => "pending",
            MetricState::Passed => "passed",
            MetricState::Failed => "failed",
            MetricState::Error => "error",
        }
    }
}

// === impl CompiledCheck ===

impl CompiledCheck {
    /// Compiles `m` (of an analysis with `analysis_interval`); an error names the field.
    pub fn compile(m: &MetricCheck, analysis: &Analysis) -> Result<CompiledCheck, CheckError> {
        let condition = Condition::parse(&m.condition).map_err(|e| CheckError("condition", e))?;
        let (reader, url) = match m.provider {
            MetricProvider::Prometheus => {
                if m.url.is_some() || m.json_path.is_some() {
                    return Err(CheckError(
                        "provider",
                        "`url` and `json_path` belong to provider `web`".into(),
                    ));
                }
                let address = m.address.as_deref().ok_or_else(|| {
                    CheckError("address", "provider prometheus needs an `address`".into())
                })?;
                let https = check_http_url(address).map_err(|e| CheckError("address", e))?;
                check_ca_file(https, m.ca_file.as_deref())?;
                let query = m.query.as_deref().ok_or_else(|| {
                    CheckError("query", "provider prometheus needs a `query`".into())
                })?;
                let query = Template::parse(query, true).map_err(|e| CheckError("query", e))?;
                let mut url = vec![Piece::Text(format!(
                    "{}/api/v1/query?query=",
                    address.trim_end_matches('/')
                ))];
                url.extend(query.0);
                (Reader::Prometheus, Template(url))
            }
            MetricProvider::Web => {
                if m.address.is_some() || m.query.is_some() {
                    return Err(CheckError(
                        "provider",
                        "`address` and `query` belong to provider `prometheus`".into(),
                    ));
                }
                let url = m
                    .url
                    .as_deref()
                    .ok_or_else(|| CheckError("url", "provider web needs a `url`".into()))?;
                let url = Template::parse(url, false).map_err(|e| CheckError("url", e))?;
                let https = check_http_url(&url.render(&Vars::example()))
                    .map_err(|e| CheckError("url", e))?;
                check_ca_file(https, m.ca_file.as_deref())?;
                let path = match &m.json_path {
                    Some(p) => JsonPath::parse(p).map_err(|e| CheckError("json_path", e))?,
                    None => JsonPath(Vec::new()),
                };
                (Reader::Web(path), url)
            }
        };
        let interval = m.interval.map_or(analysis.interval.0, |d| d.0);
        if interval.is_zero() {
            return Err(CheckError("interval", "must be greater than zero".into()));
        }
        if m.failure_limit == 0 {
            return Err(CheckError("failure_limit", "must be at least 1".into()));
        }
        if m.timeout.0.is_zero() {
            return Err(CheckError("timeout", "must be greater than zero".into()));
        }
        if m.name.is_empty() {
            return Err(CheckError("name", "must not be empty".into()));
        }
        Ok(CompiledCheck {
            name: m.name.clone(),
            reader,
            url,
            condition,
            interval,
            failure_limit: m.failure_limit,
            timeout: m.timeout.0,
            ca_file: m.ca_file.clone(),
        })
    }

    /// Judges a provider's answer (a 2xx body): the values read, and whether the condition
    /// holds for every one of them; `Err` when the answer is unusable.
    pub fn judge(&self, body: &[u8]) -> Result<(Value, bool), String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        match &self.reader {
            Reader::Prometheus => {
                let values = prometheus_values(&doc)?;
                let holds = values.iter().all(|v| self.condition.holds_num(*v));
                let shown = if values.len() == 1 {
                    Value::from(values[0])
                } else {
                    Value::from(values)
                };
                Ok((shown, holds))
            }
            Reader::Web(path) => {
                let v = path
                    .get(&doc)
                    .ok_or_else(|| "the JSON path finds nothing".to_string())?;
                let holds = self.condition.holds(v)?;
                Ok((v.clone(), holds))
            }
        }
    }
}

/// Why a metric check was refused: the field, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError(pub &'static str, pub String);

/// `http://` or `https://host[:port][/path]` URLs (HTTP/1.1; https verified against the
/// web roots or `ca_file`); whether it is https.
fn check_http_url(s: &str) -> Result<bool, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.authority().is_some() => Ok(false),
        Some("https") if uri.authority().is_some() => Ok(true),
        _ => Err(format!(
            "`{s}` is not an http:// or https:// URL with a host"
        )),
    }
}

/// `ca_file`: never empty, and only beside an https URL (it would do nothing). The file is
/// read at each fetch: a broken one is that fetch's error, never a refused document.
fn check_ca_file(https: bool, ca_file: Option<&str>) -> Result<(), CheckError> {
    match ca_file {
        Some("") => Err(CheckError("ca_file", "must not be empty".into())),
        Some(_) if !https => Err(CheckError(
            "ca_file",
            "applies to https:// URLs only (the URL is http://)".into(),
        )),
        _ => Ok(()),
    }
}

/// The samples of a Prometheus instant-query answer; NaN and an empty vector are errors
/// (no data is not evidence either way).
fn prometheus_values(doc: &Value) -> Result<Vec<f64>, String> {
    if doc["status"] != "success" {
        return Err(format!(
            "prometheus: {}",
            doc["error"].as_str().unwrap_or("status is not success")
        ));
    }
    let sample = |v: &Value| -> Result<f64, String> {
        let x = v[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| "prometheus: a sample without a numeric value".to_string())?;
        if x.is_nan() {
            Err("prometheus: the value is NaN (no data)".into())
        } else {
            Ok(x)
        }
    };
    let data = &doc["data"];
    match data["resultType"].as_str() {
        Some("vector") => {
            let rows = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if rows.is_empty() {
                return Err("prometheus: the query returned no series".into());
            }
            rows.iter().map(|r| sample(&r["value"])).collect()
        }
        Some("scalar") => Ok(vec![sample(&data["result"])?]),
        other => Err(format!(
            "prometheus: result type {} is not a vector or scalar",
            other.unwrap_or("missing")
        )),
    }
}

// === impl Template ===

impl Template {
    /// Parses `{{ name }}` variables; `encoded`: they are percent-encoded, and so is the
    /// text around them (a query in a URL).
    fn parse(s: &str, encoded: bool) -> Result<Template, String> {
        let mut out = Vec::new();
        let mut rest = s;
        let text = |t: &str| {
            Piece::Text(if encoded {
                percent_encode(t)
            } else {
                t.to_string()
            })
        };
        while let Some(i) = rest.find("{{") {
            let Some(j) = rest[i..].find("}}") else {
                return Err("`{{` without `}}`".into());
            };
            if i > 0 {
                out.push(text(&rest[..i]));
            }
            let var = match rest[i + 2..i + j].trim() {
                "rollout" => Var::Rollout,
                "stable" => Var::Stable,
                "canary" | "variant" => Var::Canary,
                other => {
                    return Err(format!(
                        "unknown variable `{{{{{other}}}}}`: use rollout, stable, canary or variant"
                    ));
                }
            };
            out.push(if encoded {
                Piece::Encoded(var)
            } else {
                Piece::Var(var)
            });
            rest = &rest[i + j + 2..];
        }
        if !rest.is_empty() {
            out.push(text(rest));
        }
        Ok(Template(out))
    }

    /// The text with the variables filled in.
    pub fn render(&self, vars: &Vars) -> String {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Var(v) => s.push_str(vars.get(*v)),
                Piece::Encoded(v) => s.push_str(&percent_encode(vars.get(*v))),
            }
        }
        s
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === impl Vars ===

impl Vars {
    fn get(&self, v: Var) -> &str {
        match v {
            Var::Rollout => &self.rollout,
            Var::Stable => &self.stable,
            Var::Canary => &self.canary,
        }
    }

    /// Names that validate a template's URL shape.
    fn example() -> Vars {
        Vars {
            rollout: "r".into(),
            stable: "s".into(),
            canary: "c".into(),
        }
    }
}

// === impl Condition ===

impl Condition {
    /// Parses `result <op> <number|true|false>`.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let bad = || {
            format!("`{s}`: expected `result <op> <number|true|false>`, op one of < <= > >= == !=")
        };
        let rest = s
            .trim()
            .strip_prefix("result")
            .ok_or_else(bad)?
            .trim_start();
        let (op, rhs) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(t, op)| rest.strip_prefix(t).map(|r| (op, r.trim())))
        .ok_or_else(bad)?;
        let rhs = match rhs {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            n => Literal::Num(
                n.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(bad)?,
            ),
        };
        if matches!(rhs, Literal::Bool(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!("`{s}`: a boolean compares with == or != only"));
        }
        Ok(Condition { op, rhs })
    }

    fn holds_num(&self, x: f64) -> bool {
        match self.rhs {
            Literal::Num(y) => match self.op {
                Op::Lt => x < y,
                Op::Le => x <= y,
                Op::Gt => x > y,
                Op::Ge => x >= y,
                Op::Eq => x == y,
                Op::Ne => x != y,
            },
            // A Prometheus sample against a boolean: 1 is true, as PromQL's comparisons.
            Literal::Bool(b) => ((x != 0.0) == b) != (self.op == Op::Ne),
        }
    }

    /// Whether a JSON value meets the condition; `Err` for a value of another type.
    fn holds(&self, v: &Value) -> Result<bool, String> {
        match (v, &self.rhs) {
            (Value::Number(n), Literal::Num(_)) => n
                .as_f64()
                .map(|x| self.holds_num(x))
                .ok_or_else(|| "the value is not a finite number".into()),
            (Value::Bool(b), Literal::Bool(want)) => Ok((b == want) != (self.op == Op::Ne)),
            (Value::String(s), Literal::Num(_)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(|x| self.holds_num(x))
                .ok_or_else(|| format!("the value {v} is not a number")),
            _ => Err(format!(
                "the value {v} has the wrong type for the condition"
            )),
        }
    }
}

// === impl JsonPath ===

impl JsonPath {
    /// Parses `$`, `$.a.b`, `$.items[0]`, `$['a key']`.
    pub fn parse(s: &str) -> Result<JsonPath, String> {
        let bad = |why: &str| format!("`{s}`: {why} (expected `$.key`, `$[0]`, `$['key']`)");
        let mut rest = s
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(bad("an empty key"));
                }
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r.find("']").ok_or_else(|| bad("`['` without `']`"))?;
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("`[` without `]`"))?;
                let i = r[..end].parse().map_err(|_| bad("an index is a number"))?;
                steps.push(Step::Index(i));
                rest = &r[end + 1..];
            } else {
                return Err(bad("unexpected text"));
            }
        }
        Ok(JsonPath(steps))
    }

    fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for s in &self.0 {
            v = match s {
                Step::Key(k) => v.get(k)?,
                Step::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }
}

/// Folds the metric results into a verdict: a check failing `failure_limit` times in a row
/// fails it (rule `metric`); a pending, erroring or not-yet-limit failing check makes a
/// passed verdict inconclusive. The results are kept in the verdict for status and audit.
pub fn combine(v: &mut Verdict, results: Vec<MetricResult>) {
    if results.is_empty() {
        return;
    }
    let failing = results
        .iter()
        .any(|r| r.state == MetricState::Failed && r.consecutive_failures >= r.failure_limit);
    if failing && v.outcome != VerdictOutcome::Failed {
        v.outcome = VerdictOutcome::Failed;
        v.rule = Some(Criterion::Metric);
    } else if v.outcome == VerdictOutcome::Passed
        && results.iter().any(|r| r.state != MetricState::Passed)
    {
        v.outcome = VerdictOutcome::Inconclusive;
    }
    v.metrics = results;
}

#[cfg(test)]
mod tests;
