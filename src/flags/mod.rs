//! Feature flags: flagd's flag-definition format, evaluated in-process. Pure (no I/O, no
//! async): compiled once per activation, then read-only and shared by every request.
//!
//! # API (what the proxy, OFREP and `sluice eval` call)
//!
//! ```text
//! FlagSet::compile(&flags, &evaluators, Options) -> Result<FlagSet, Vec<FlagError>>  // strict
//! set.warnings() -> &[FlagError]                       // schema departures flagd loads anyway
//! FlagSet::compile_lenient(&flags, &evaluators, Options) -> FlagSet                    // defects resolve to ERROR
//! FlagSet::compile_document(&doc, Layout, Options) / compile_document_lenient(&doc, Options)
//!                                                       // a whole flagd file: flags, $evaluators, metadata
//! validate_targeting(&rule) -> Vec<FlagError>           // one rule against targeting.json
//!
//! set.get("key") -> Option<FlagId>    set.key(id) -> &str    set.len()    set.iter() (document order)
//! set.variants(id) -> (name, &Value)… (sorted; e.g. to map a `to.flag` route's variants to upstreams)
//! set.evaluate(id, &ctx, now_unix_secs) -> Resolution<'_>     // hot path: no allocation on success
//! set.evaluate_key("key", &ctx, now) -> Resolution<'_>        // FLAG_NOT_FOUND when absent
//! resolution.check_type(ValueType::Integer)                   // typed callers: TYPE_MISMATCH
//! resolution_json(&resolution) -> Value                       // {value, variant, reason, errorCode, errorMessage?}
//!
//! Context::from_strings(Some(tk), &[("email", v), ...])       // per request, borrows, no allocation
//! Context::from_json(&map)?                                   // OFREP bodies; INVALID_CONTEXT on a non-string targetingKey
//!
//! set.default_variant(id) -> Option<u32>     set.outcomes(id) -> [(variant, reason)] (metric handles)
//!
//! headers::RouteHeaders::new(&set, &route.flags)?.apply(&set, &ctx, now, &mut header_map, |id, res| ...)
//!   or .evaluate(&set, &ctx, now, &mut selected, observe) then .insert(&selected, &mut header_map)
//!   (the proxy's split: the context borrows the request whose headers are then rewritten)
//! ofrep::evaluate_flag(&set, key, body, now) / ofrep::evaluate_bulk(&set, body, now, if_none_match)
//!   (`*_with` variants take an `observe` callback for metrics)
//! ```
//!
//! Semantics are flagd's (reference: PyPI `openfeature-flagd-core`): reasons `STATIC`,
//! `TARGETING_MATCH`, `DEFAULT`, `DISABLED`, `ERROR`; a flag without a default variant, or
//! whose targeting returns null without one, resolves to the caller's code default
//! (`value: None`). Strict compilation refuses what flagd could not load (a flag that is
//! not an object with a valid `state`, `variants`, `defaultVariant`), unknown operators,
//! `$ref`s to undefined evaluators (and cycles) and a `defaultVariant` that is not a
//! variant; departures from the flagd schema are [`FlagSet::warnings`] and everything they
//! touch (odd versions, a custom operator's bad arguments, targeting that names an unknown
//! variant) resolves at evaluation time, as in flagd.
//!
//! flagd's evaluator never requires a targeting key, so `TARGETING_KEY_MISSING` is never
//! produced (a `fractional` shorthand without one resolves to the default, as in flagd).
//! Rules may nest at most 128 levels, counting through `$ref`s.
//!
//! Flags iterate in the order of the map they were compiled from (serde_json's `Map`, which
//! is sorted by key unless its `preserve_order` feature is on) or of a flagd array.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use eval::{Env, Scope};
use logic::Node;

mod compile;
mod context;
mod custom;
mod eval;
pub mod headers;
mod logic;
pub mod ofrep;
mod resolution;
mod schema;
mod semver;
mod value;

/// flagd `fractional` hashing (the document's `fractional`).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fractional {
    /// `flagKey + targetingKey` as a string.
    V2,
    /// Canonical CBOR (default).
    #[default]
    V3,
}

pub use compile::Layout;
pub use context::{Context, ContextError};
pub use resolution::{ErrorCode, Resolution, ResolutionReason, ValueType, resolution_json};

/// Compiled flags of one activation: immutable, `Send + Sync`, cheap to evaluate.
#[derive(Debug)]
pub struct FlagSet {
    flags: Vec<Flag>,
    index: HashMap<Box<str>, FlagId>,
    metadata: Map<String, Value>,
    empty: Map<String, Value>,
    /// Departures from the flagd schema found by a strict compilation (flagd warns too).
    warnings: Vec<FlagError>,
    opts: Options,
}

/// A flag's position in its [`FlagSet`]; valid only for the set that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlagId(u32);

/// Compilation options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `fractional` hashing: v3 (canonical CBOR, default) or v2 (`flagKey + targetingKey`).
    pub fractional: Fractional,
}

/// Errors a strict compile reports before it stops looking: each costs a bounded amount,
/// so the work stays linear in the flags however broken they are. Validation of a whole
/// document uses the same cap (`config::MAX_ERRORS` is this).
pub const MAX_ERRORS: usize = 100;

/// Whether enough errors were found: the strict checks stop looking.
pub(crate) fn errors_full(errors: &[FlagError]) -> bool {
    errors.len() >= MAX_ERRORS
}

/// A refusal with the path of what is wrong (`flags.<key>.defaultVariant`, `$evaluators.x`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FlagError {
    /// Where, dotted with `[i]` indexes: `flags.checkout.targeting.if[0].==[1]`.
    pub path: String,
    /// What is wrong, and what to write instead where that helps.
    pub message: String,
}

/// One compiled flag.
#[derive(Debug)]
struct Flag {
    key: Box<str>,
    enabled: bool,
    /// A structural defect (lenient mode): every evaluation is `PARSE_ERROR`.
    defect: Option<Box<str>>,
    /// Sorted by name, for binary search.
    variants: Box<[(Box<str>, Value)]>,
    default: DefaultVariant,
    targeting: Targeting,
    metadata: Map<String, Value>,
}

/// The default variant of a flag.
#[derive(Debug)]
enum DefaultVariant {
    /// Null or absent: the caller's code default.
    None,
    /// Index into `variants`.
    Index(u32),
    /// Names no variant (lenient mode): `GENERAL` when used.
    Missing(Box<str>),
}

/// A flag's targeting.
#[derive(Debug)]
enum Targeting {
    /// Absent or `{}`: static.
    None,
    Rule(Node),
    /// Did not compile (lenient mode): `PARSE_ERROR` when evaluated.
    Broken(Box<str>),
}

// === impl FlagId ===

impl FlagId {
    /// The position of the flag in its set (`0..set.len()`), for per-flag tables.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

// === impl FlagError ===

impl FlagError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FlagError {
            path: path.into(),
            message: message.into(),
        }
    }
}

// === impl FlagSet ===

impl FlagSet {
    /// The flag with key `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<FlagId> {
        self.index.get(key).copied()
    }

    /// The key of flag `id`.
    pub fn key(&self, id: FlagId) -> &str {
        &self.flag(id).key
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// True when there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Flags in document order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (FlagId, &str)> + '_ {
        self.flags
            .iter()
            .enumerate()
            .map(|(i, f)| (FlagId(i as u32), &*f.key))
    }

    /// Flag keys in document order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.flags.iter().map(|f| &*f.key)
    }

    /// The variants of flag `id`, sorted by name (the order of `Resolution::variant_index`).
    pub fn variants(&self, id: FlagId) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.flag(id).variants.iter().map(|(k, v)| (&**k, v))
    }

    /// Flag-set metadata (a flagd document's top-level `metadata`).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Departures from the flagd schema that a strict compilation loaded anyway (flagd logs
    /// them as "flag definition does not conform to the schema"), each with its path.
    pub fn warnings(&self) -> &[FlagError] {
        &self.warnings
    }

    /// The options this set was compiled with.
    pub fn options(&self) -> Options {
        self.opts
    }

    /// Evaluates flag `id` against `ctx` at `now_unix_secs` (`$flagd.timestamp`).
    pub fn evaluate<'s>(
        &'s self,
        id: FlagId,
        ctx: &Context<'_>,
        now_unix_secs: i64,
    ) -> Resolution<'s> {
        let flag = self.flag(id);
        let md = &flag.metadata;
        if let Some(d) = &flag.defect {
            return Resolution::error(ErrorCode::ParseError, Cow::Borrowed(d), md);
        }
        if !flag.enabled {
            return Resolution {
                value: None,
                variant: None,
                reason: ResolutionReason::Disabled,
                error_code: None,
                error_message: None,
                metadata: md,
                variant_index: None,
            };
        }
        let node = match &flag.targeting {
            Targeting::None => return flag.default_resolution(ResolutionReason::Static),
            Targeting::Broken(m) => {
                return Resolution::error(ErrorCode::ParseError, Cow::Borrowed(m), md);
            }
            Targeting::Rule(n) => n,
        };
        let env = Env {
            ctx: *ctx,
            flag_key: &flag.key,
            now: now_unix_secs,
            fractional: self.opts.fractional,
        };
        let out = eval::eval(node, &env, Scope::Root);
        match eval::variant_name(&out) {
            Ok(None) => flag.default_resolution(ResolutionReason::Default),
            Ok(Some(name)) => match flag.variant(&name) {
                Some(i) => flag.resolution(i, ResolutionReason::TargetingMatch),
                None => Resolution::error(
                    ErrorCode::General,
                    Cow::Owned(format!(
                        "targeting chose variant `{name}`, which flag `{}` does not have",
                        flag.key
                    )),
                    md,
                ),
            },
            Err(()) => Resolution::error(
                ErrorCode::General,
                Cow::Borrowed("targeting returned an array or object, not a variant name"),
                md,
            ),
        }
    }

    /// Evaluates the flag `key`; `FLAG_NOT_FOUND` when there is none.
    pub fn evaluate_key<'s>(
        &'s self,
        key: &str,
        ctx: &Context<'_>,
        now_unix_secs: i64,
    ) -> Resolution<'s> {
        match self.get(key) {
            Some(id) => self.evaluate(id, ctx, now_unix_secs),
            None => Resolution::error(
                ErrorCode::FlagNotFound,
                Cow::Owned(format!("flag `{key}` not found")),
                &self.empty,
            ),
        }
    }

    /// The index of flag `id`'s default variant, if it has one that is a variant.
    pub fn default_variant(&self, id: FlagId) -> Option<u32> {
        match self.flag(id).default {
            DefaultVariant::Index(i) => Some(i),
            DefaultVariant::None | DefaultVariant::Missing(_) => None,
        }
    }

    /// Every `(variant index, reason)` an evaluation of flag `id` can produce, so that
    /// callers can resolve per-outcome handles (metrics) before the first evaluation.
    /// Errors other than a defect (a custom operator's bad arguments, a targeting result
    /// that is not a variant) are covered by `(None, Error)` for every targeted flag.
    pub fn outcomes(&self, id: FlagId) -> Vec<(Option<u32>, ResolutionReason)> {
        let flag = self.flag(id);
        if flag.defect.is_some() || matches!(flag.targeting, Targeting::Broken(_)) {
            return vec![(None, ResolutionReason::Error)];
        }
        if !flag.enabled {
            return vec![(None, ResolutionReason::Disabled)];
        }
        let default = |reason| match &flag.default {
            DefaultVariant::Index(i) => (Some(*i), reason),
            DefaultVariant::None => (None, ResolutionReason::Default),
            DefaultVariant::Missing(_) => (None, ResolutionReason::Error),
        };
        match &flag.targeting {
            Targeting::Rule(_) => {
                let mut out: Vec<(Option<u32>, ResolutionReason)> = (0..flag.variants.len() as u32)
                    .filter(|&i| flag.variant(&flag.variants[i as usize].0) == Some(i))
                    .map(|i| (Some(i), ResolutionReason::TargetingMatch))
                    .collect();
                out.push(default(ResolutionReason::Default));
                out.push((None, ResolutionReason::Error));
                out.dedup();
                out
            }
            _ => vec![default(ResolutionReason::Static)],
        }
    }

    #[inline]
    fn flag(&self, id: FlagId) -> &Flag {
        &self.flags[id.0 as usize]
    }
}

// === impl Flag ===

impl Flag {
    /// The index of variant `name` (an empty name or a null value names none, as in flagd).
    fn variant(&self, name: &str) -> Option<u32> {
        let i = self
            .variants
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()?;
        (!name.is_empty() && !self.variants[i].1.is_null()).then_some(i as u32)
    }

    fn resolution(&self, i: u32, reason: ResolutionReason) -> Resolution<'_> {
        let (name, value) = &self.variants[i as usize];
        Resolution {
            value: Some(value),
            variant: Some(name),
            reason,
            error_code: None,
            error_message: None,
            metadata: &self.metadata,
            variant_index: Some(i),
        }
    }

    /// The default variant with `reason`, or the code default (reason `DEFAULT`).
    fn default_resolution(&self, reason: ResolutionReason) -> Resolution<'_> {
        match &self.default {
            DefaultVariant::Index(i) => self.resolution(*i, reason),
            DefaultVariant::None => Resolution {
                value: None,
                variant: None,
                reason: ResolutionReason::Default,
                error_code: None,
                error_message: None,
                metadata: &self.metadata,
                variant_index: None,
            },
            DefaultVariant::Missing(name) => Resolution::error(
                ErrorCode::General,
                Cow::Owned(format!(
                    "default variant `{name}` is not a variant of flag `{}`",
                    self.key
                )),
                &self.metadata,
            ),
        }
    }
}

/// Checks one targeting rule against the flagd `targeting.json` schema (no `$ref` lookup).
pub fn validate_targeting(rule: &Value) -> Vec<FlagError> {
    let mut errors = Vec::new();
    schema::check_targeting(rule, &mut String::from("targeting"), &mut errors);
    errors
}

#[cfg(test)]
mod tests;
