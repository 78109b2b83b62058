//! Configuration: the serde types of `sluice.yaml` and `traffic.yaml`, and their validation.
//!
//! Documents are read by [`yaml::parse`] into JSON with positions, deserialized section by
//! section into raw types (`deny_unknown_fields`) so that one bad entry does not hide the
//! next, then checked semantically. Every error names its path and, when known, line and
//! column.

pub mod cidr;
pub mod cluster;
pub mod settings;
pub mod traffic;
pub mod types;
pub mod yaml;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use settings::Settings;
pub use traffic::TrafficDoc;
pub use types::{Dur, Size, Weight};

/// Errors reported for one document. Validation stops looking after this many: every error
/// costs at most a bounded amount, so the list — and the work to build it — stays linear in
/// the document however broken it is. The flag compiler (a leaf module) owns the number.
pub const MAX_ERRORS: usize = crate::flags::MAX_ERRORS;

/// One configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending node, e.g. `rollouts.checkout.steps[2].weight` ("" for the whole document).
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub col: Option<usize>,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

/// Every error found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl ConfigError ===

impl ConfigError {
    /// An error without a position.
    pub fn plain(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_string(),
            line: None,
            col: None,
            message: message.into(),
        }
    }

    /// An error at `path`, positioned through `spans`.
    pub fn at(spans: &yaml::Spans, path: &str, message: impl Into<String>) -> Self {
        let pos = spans.find(path);
        ConfigError {
            path: path.to_string(),
            line: pos.map(|p| p.line),
            col: pos.map(|p| p.col),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, "{path} (line {l}:{c}): {}", self.message),
            (Some(l), None) => write!(f, "{path} (line {l}): {}", self.message),
            _ => write!(f, "{path}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

// === impl ConfigErrors ===

impl ConfigErrors {
    /// The first [`MAX_ERRORS`] of `errors`, with a last line saying when there were more.
    pub fn capped(mut errors: Vec<ConfigError>) -> Self {
        if errors.len() >= MAX_ERRORS {
            errors.truncate(MAX_ERRORS);
            errors.push(ConfigError::plain(
                "",
                format!("validation stopped after {MAX_ERRORS} errors; fix these first"),
            ));
        }
        ConfigErrors(errors)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Deserializes the node at `path` into `T`, reporting serde's error with its full path and position.
pub(crate) fn from_node<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    spans: &yaml::Spans,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let full = match (path.is_empty(), inner == ".") {
            (_, true) => path.to_string(),
            (true, false) => inner,
            (false, false) if inner.starts_with('[') => format!("{path}{inner}"),
            (false, false) => format!("{path}.{inner}"),
        };
        ConfigError::at(spans, &full, e.into_inner().to_string())
    })
}

/// Deserializes `T` from a field of a mapping, collecting the error instead of stopping.
pub(crate) fn field<T: DeserializeOwned + Default>(
    map: &serde_json::Map<String, Value>,
    key: &str,
    base: &str,
    spans: &yaml::Spans,
    errors: &mut Vec<ConfigError>,
) -> T {
    let path = if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    };
    match map.get(key) {
        None | Some(Value::Null) => T::default(),
        Some(v) => from_node(v, &path, spans).unwrap_or_else(|e| {
            errors.push(e);
            T::default()
        }),
    }
}

/// Reports keys of a top-level mapping that are not among `known`.
pub(crate) fn unknown_keys(
    map: &serde_json::Map<String, Value>,
    known: &[&str],
    spans: &yaml::Spans,
    errors: &mut Vec<ConfigError>,
) {
    for k in map.keys() {
        if !known.contains(&k.as_str()) {
            errors.push(ConfigError::at(
                spans,
                k,
                format!("unknown field `{k}`, expected one of {}", known.join(", ")),
            ));
        }
    }
}
