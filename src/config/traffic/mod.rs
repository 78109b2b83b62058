//! `traffic.yaml`: the change-managed document (version, change header, upstreams, routes,
//! rollouts, flags), read in three stages as vector reads its config:
//!
//! - [`raw`]: serde types, section by section (`deny_unknown_fields`), so that one bad
//!   entry does not hide the next;
//! - [`validation`]: named checks (`check_upstreams`, `check_routes`, `check_rollouts`, …)
//!   that collect every error with its path and line;
//! - [`model`]: what the checks resolved (route targets, rollout sides, parsed header
//!   names), which the snapshot build compiles without checking anything again.
//!
//! Adding a field: declare it in `raw.rs`, check it in its section's `check_*` function in
//! `validation.rs`, and resolve it into `model.rs` only if the data plane needs another form.

pub mod model;
pub mod raw;
mod validation;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

pub use model::Model;
pub use raw::*;
pub use validation::parse_status_class;

use super::{ConfigError, ConfigErrors, MAX_ERRORS, field, from_node, unknown_keys, yaml};

pub use crate::flags::headers::MAX_ROUTE_FLAGS;

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
    /// flagd's `$schema` (kept, not fetched: flagd files paste in verbatim).
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// flagd flag-set `metadata`, merged under each flag's own (OFREP and gRPC return it).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Where audit events are POSTed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
}

/// What validation needs to know from `sluice.yaml`.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    /// Listener names, to check `match.listener`.
    pub listeners: Option<Vec<String>>,
}

/// A parsed and checked traffic document, with its JSON form and source positions.
#[derive(Debug, Clone)]
pub struct ParsedTraffic {
    /// The typed document, as written.
    pub doc: TrafficDoc,
    /// What validation resolved in it.
    pub model: Model,
    /// The document as JSON (diffed by the change policy).
    pub json: Value,
    /// Source positions.
    pub spans: yaml::Spans,
    /// What is accepted but worth fixing: departures from the flagd schema that flagd
    /// loads anyway (SPEC §4), with their paths and lines.
    pub warnings: Vec<ConfigError>,
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
        let doc = read_sections(map, &spans, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors::capped(errors));
        }
        let mut warnings = Vec::new();
        let model = validation::check(
            &doc,
            ctx,
            &mut validation::Report::new(&spans, &mut errors, &mut warnings),
        );
        match model {
            Some(model) if errors.is_empty() => Ok(ParsedTraffic {
                doc,
                model,
                json: parsed.value,
                spans,
                warnings,
            }),
            _ if errors.is_empty() => Err(ConfigError::plain(
                "",
                "the document passed its checks but a reference did not resolve",
            )
            .into()),
            _ => Err(ConfigErrors::capped(errors)),
        }
    }
}

/// Deserializes each top-level section into its raw type, collecting every error.
fn read_sections(
    map: &Map<String, Value>,
    spans: &yaml::Spans,
    errors: &mut Vec<ConfigError>,
) -> TrafficDoc {
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
            "$schema",
            "metadata",
            "notifications",
        ],
        spans,
        errors,
    );
    for key in ["version", "change"] {
        if !map.contains_key(key) {
            errors.push(ConfigError::at(spans, "", format!("missing field `{key}`")));
        }
    }
    TrafficDoc {
        version: field(map, "version", "", spans, errors),
        change: field(map, "change", "", spans, errors),
        upstreams: entries(map, "upstreams", spans, errors),
        routes: items(map, "routes", spans, errors),
        rollouts: entries(map, "rollouts", spans, errors),
        flag_context: field(map, "flag_context", "", spans, errors),
        fractional: field(map, "fractional", "", spans, errors),
        flags: field(map, "flags", "", spans, errors),
        evaluators: field(map, "$evaluators", "", spans, errors),
        schema: field(map, "$schema", "", spans, errors),
        metadata: field(map, "metadata", "", spans, errors),
        notifications: items(map, "notifications", spans, errors),
    }
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
