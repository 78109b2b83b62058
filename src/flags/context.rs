//! The OpenFeature evaluation context a flag is evaluated against.
//!
//! Two shapes, one type: the proxy's hot path borrows a handful of `(name, value)` string
//! pairs it read from headers and cookies (no map, no allocation: the caller may keep the
//! pairs in a stack array), while OFREP borrows the JSON object from a request body.

use serde_json::{Map, Value};

use super::value::Val;

/// An evaluation context: an optional targeting key plus attributes. `Copy`, borrows only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'c> {
    targeting_key: Option<&'c str>,
    attrs: Attrs<'c>,
}

/// Where attributes live.
#[derive(Debug, Clone, Copy, Default)]
enum Attrs<'c> {
    #[default]
    None,
    /// String attributes (header and cookie values), looked up linearly: there are few.
    Strings(&'c [(&'c str, &'c str)]),
    /// A JSON object (an OFREP request's `context`).
    Json(&'c Map<String, Value>),
}

/// Why a JSON context was refused (OpenFeature `INVALID_CONTEXT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// `targetingKey` is present but not a string.
    #[error("`targetingKey` must be a string")]
    TargetingKeyNotString,
}

// === impl Context ===

impl<'c> Context<'c> {
    /// A context with no targeting key and no attributes.
    pub const fn empty() -> Self {
        Context {
            targeting_key: None,
            attrs: Attrs::None,
        }
    }

    /// A context of string attributes, as the proxy builds per request. Attribute names
    /// should be unique; the first pair with a name wins.
    pub const fn from_strings(
        targeting_key: Option<&'c str>,
        attrs: &'c [(&'c str, &'c str)],
    ) -> Self {
        Context {
            targeting_key,
            attrs: Attrs::Strings(attrs),
        }
    }

    /// A context from a JSON object (OFREP `context`): `targetingKey`, when present, must be
    /// a string; every member, `targetingKey` included, is an attribute.
    pub fn from_json(map: &'c Map<String, Value>) -> Result<Self, ContextError> {
        let targeting_key = match map.get("targetingKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(ContextError::TargetingKeyNotString),
        };
        Ok(Context {
            targeting_key,
            attrs: Attrs::Json(map),
        })
    }

    /// The targeting key, if any.
    pub fn targeting_key(&self) -> Option<&'c str> {
        self.targeting_key
    }

    /// The attribute `name` as an evaluation value (`None` when absent).
    pub(crate) fn attr(&self, name: &str) -> Option<Val<'c>> {
        match self.attrs {
            Attrs::None => None,
            Attrs::Strings(pairs) => pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| Val::Str((*v).into())),
            Attrs::Json(map) => map.get(name).map(Val::from_json),
        }
    }

    /// The whole attribute set as a JSON object (rare: `{"var": ""}` at the top level).
    pub(crate) fn to_object(self) -> Map<String, Value> {
        match self.attrs {
            Attrs::None => Map::new(),
            Attrs::Strings(pairs) => {
                let mut m = Map::new();
                for (k, v) in pairs {
                    m.entry(k.to_string())
                        .or_insert_with(|| Value::String(v.to_string()));
                }
                if let Some(tk) = self.targeting_key {
                    m.insert("targetingKey".into(), Value::String(tk.into()));
                }
                m
            }
            Attrs::Json(map) => map.clone(),
        }
    }
}
