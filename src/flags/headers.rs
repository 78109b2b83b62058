//! SDK-less flag delivery: a route's flags become upstream request headers.
//!
//! ```text
//! x-sluice-flag-<key>: <variant>                       (absent when the flag has no variant)
//! x-sluice-flags: <key>=<variant>; <key>=<variant>     (flags with a variant, route order)
//! ```
//!
//! Variants are percent-encoded outside RFC 9110 token characters; `%` itself is encoded
//! too so decoding is unambiguous. Everything that depends only on the configuration (the
//! header names, each variant's encoded value) is built once per route and activation in
//! [`RouteHeaders::new`]; per request, [`RouteHeaders::apply`] clones pre-built values
//! (a reference-count bump). The combined header is pre-built too, for every combination
//! of variants, when a route's flags have at most [`COMBINED_TABLE_MAX`] combinations (the
//! usual few flags of a few variants); a route with more builds it per request (one
//! allocation).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Context, FlagId, FlagSet, Resolution};

/// Most flags a single route may inject upstream (SPEC §4).
pub const MAX_ROUTE_FLAGS: usize = 64;

/// Prefix of the per-flag header.
pub const FLAG_HEADER_PREFIX: &str = "x-sluice-flag-";

/// The combined header.
pub const COMBINED_HEADER: &str = "x-sluice-flags";

static COMBINED_NAME: HeaderName = HeaderName::from_static(COMBINED_HEADER);

/// Most combinations of variants (each flag's variants and "none") whose combined header
/// values a route keeps pre-built: ≤ 64 values of a few dozen bytes per route.
pub const COMBINED_TABLE_MAX: usize = 64;

/// A route's flag headers, pre-built.
#[derive(Debug, Clone)]
pub struct RouteHeaders {
    entries: Box<[Entry]>,
    /// The combined header per combination of variants (empty: more than
    /// [`COMBINED_TABLE_MAX`]); indexed in mixed radix, the first flag's digit lowest, a
    /// flag's digit its variant index or its variant count for none.
    combined: Box<[Option<HeaderValue>]>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: FlagId,
    name: HeaderName,
    /// Per variant, in the set's variant order: the encoded header value.
    values: Box<[HeaderValue]>,
    /// Per variant: `key=<encoded variant>` for the combined header.
    pieces: Box<[Box<str>]>,
}

/// No variant (the flag's header is not sent).
const NONE: u32 = u32::MAX;

/// The variant each flag of a route resolved to, in route order: a fixed array on the
/// stack (a route injects at most [`MAX_ROUTE_FLAGS`]), so evaluating allocates nothing.
#[derive(Debug, Clone)]
pub struct Selected {
    variants: [u32; MAX_ROUTE_FLAGS],
    len: usize,
}

/// Why a route's flag list cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The route names a flag the set does not have.
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    /// The key is not a lowercase header token.
    #[error("flag key `{0}` is not a lowercase header token")]
    NotAToken(String),
    /// More than [`MAX_ROUTE_FLAGS`] flags.
    #[error("a route injects at most {MAX_ROUTE_FLAGS} flags, found {0}")]
    TooMany(usize),
}

// === impl RouteHeaders ===

impl RouteHeaders {
    /// Builds the headers for `keys` (a route's `flags`, in order; `["*"]` means every flag of
    /// the set, by key).
    pub fn new<S: AsRef<str>>(set: &FlagSet, keys: &[S]) -> Result<Self, HeaderError> {
        let ids: Vec<FlagId> = if keys.len() == 1 && keys[0].as_ref() == "*" {
            let mut all: Vec<(FlagId, &str)> = set.iter().collect();
            all.sort_by(|a, b| a.1.cmp(b.1));
            all.into_iter().map(|(id, _)| id).collect()
        } else {
            keys.iter()
                .map(|k| {
                    set.get(k.as_ref())
                        .ok_or_else(|| HeaderError::UnknownFlag(k.as_ref().to_string()))
                })
                .collect::<Result<_, _>>()?
        };
        if ids.len() > MAX_ROUTE_FLAGS {
            return Err(HeaderError::TooMany(ids.len()));
        }
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            let key = set.key(id);
            let name = HeaderName::from_bytes(format!("{FLAG_HEADER_PREFIX}{key}").as_bytes())
                .ok()
                .filter(|_| is_lowercase_token(key))
                .ok_or_else(|| HeaderError::NotAToken(key.to_string()))?;
            let mut values = Vec::new();
            let mut pieces = Vec::new();
            for (variant, _) in set.variants(id) {
                let mut enc = String::with_capacity(variant.len());
                encode_value(variant, &mut enc);
                // Only token characters and `%XX` remain, which are always valid.
                values.push(
                    HeaderValue::from_str(&enc).unwrap_or_else(|_| HeaderValue::from_static("")),
                );
                pieces.push(format!("{key}={enc}").into_boxed_str());
            }
            entries.push(Entry {
                id,
                name,
                values: values.into(),
                pieces: pieces.into(),
            });
        }
        let combined = entries
            .iter()
            .try_fold(1usize, |t, e| t.checked_mul(e.pieces.len() + 1))
            .filter(|t| *t <= COMBINED_TABLE_MAX)
            .map(|total| {
                (0..total)
                    .map(|mut idx| {
                        let variants: Vec<u32> = entries
                            .iter()
                            .map(|e| {
                                let n = e.pieces.len() + 1;
                                let d = idx % n;
                                idx /= n;
                                if d + 1 == n { NONE } else { d as u32 }
                            })
                            .collect();
                        build_combined(&entries, &variants)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(RouteHeaders {
            entries: entries.into(),
            combined,
        })
    }

    /// Number of flags injected.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the route injects no flags.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The flags, in injection order.
    pub fn flags(&self) -> impl ExactSizeIterator<Item = FlagId> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// Evaluates the route's flags and sets their headers on `headers` (replacing any of
    /// the same name); `observe` sees every resolution (for metrics). `set` must be the set
    /// these headers were built from.
    pub fn apply<F>(
        &self,
        set: &FlagSet,
        ctx: &Context<'_>,
        now_unix_secs: i64,
        headers: &mut HeaderMap,
        observe: F,
    ) where
        F: FnMut(FlagId, &Resolution<'_>),
    {
        let mut selected = Selected::default();
        self.evaluate(set, ctx, now_unix_secs, &mut selected, observe);
        self.insert(&selected, headers);
    }

    /// Evaluates the route's flags into `selected` without touching any header map, so the
    /// context may borrow from the very request the headers are later [`insert`](Self::insert)ed
    /// into.
    pub fn evaluate<F>(
        &self,
        set: &FlagSet,
        ctx: &Context<'_>,
        now_unix_secs: i64,
        selected: &mut Selected,
        mut observe: F,
    ) where
        F: FnMut(FlagId, &Resolution<'_>),
    {
        selected.len = self.entries.len().min(MAX_ROUTE_FLAGS);
        for (slot, e) in selected.variants.iter_mut().zip(self.entries.iter()) {
            let res = set.evaluate(e.id, ctx, now_unix_secs);
            observe(e.id, &res);
            *slot = res.variant_index().unwrap_or(NONE);
        }
    }

    /// Sets the headers for the variants in `selected` (from [`evaluate`](Self::evaluate)
    /// on this route), replacing any of the same name.
    pub fn insert(&self, selected: &Selected, headers: &mut HeaderMap) {
        let variants = &selected.variants[..selected.len.min(self.entries.len())];
        let (mut idx, mut stride) = (0usize, 1usize);
        for (e, &v) in self.entries.iter().zip(variants) {
            let i = v as usize;
            if let Some(value) = e.values.get(i) {
                headers.insert(e.name.clone(), value.clone());
            }
            let n = e.pieces.len();
            idx = idx.saturating_add(i.min(n).saturating_mul(stride));
            stride = stride.saturating_mul(n + 1);
        }
        let combined = match self.combined.get(idx) {
            Some(v) if variants.len() == self.entries.len() => v.clone(),
            _ => build_combined(&self.entries, variants),
        };
        if let Some(v) = combined {
            headers.insert(COMBINED_NAME.clone(), v);
        }
    }
}

/// The combined header for `variants` (in route order; [`NONE`] or out of range: the
/// flag is left out); `None` when no flag has a variant.
fn build_combined(entries: &[Entry], variants: &[u32]) -> Option<HeaderValue> {
    let mut combined = String::new();
    for (e, &v) in entries.iter().zip(variants) {
        let Some(piece) = e.pieces.get(v as usize) else {
            continue;
        };
        if combined.is_empty() {
            combined.reserve(entries.len() * (piece.len() + 2));
        } else {
            combined.push_str("; ");
        }
        combined.push_str(piece);
    }
    if combined.is_empty() {
        return None;
    }
    HeaderValue::from_maybe_shared(Bytes::from(combined)).ok()
}

// === impl Selected ===

impl Default for Selected {
    fn default() -> Self {
        Selected {
            variants: [NONE; MAX_ROUTE_FLAGS],
            len: 0,
        }
    }
}

impl Selected {
    /// The variant index (see [`FlagSet::variants`]) the flag at route position `pos`
    /// resolved to; `None` when it has none or `pos` is out of range.
    pub fn variant(&self, pos: usize) -> Option<u32> {
        self.variants[..self.len]
            .get(pos)
            .copied()
            .filter(|v| *v != NONE)
    }
}

/// An RFC 9110 `tchar`.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// True for a non-empty header token without uppercase letters.
pub fn is_lowercase_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase())
}

/// Appends `v` percent-encoded: token characters except `%` as they are, other bytes
/// (UTF-8) as `%XX`.
pub fn encode_value(v: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v.as_bytes() {
        if is_tchar(b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The combined header value for `(key, variant)` pairs: `k=v; k=v`.
pub fn combined_value<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        encode_value(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::flags::{Layout, Options};

    /// Every combination of variants gets the same headers from the pre-built table as
    /// from building them per request.
    #[test]
    fn combined_table_matches_building() {
        let doc = serde_json::json!({"flags": {
            "a": {"state": "ENABLED", "variants": {"x y": 1, "z": 2}, "defaultVariant": "z"},
            "b": {"state": "ENABLED", "variants": {"on": true, "off": false, "maybe": true}, "defaultVariant": "on"},
            "c": {"state": "ENABLED", "variants": {"only": "o"}},
        }});
        let set = FlagSet::compile_document(&doc, Layout::Map, Options::default()).unwrap();
        let rh = RouteHeaders::new(&set, &["a", "b", "c"]).unwrap();
        assert_eq!(rh.combined.len(), 3 * 4 * 2);
        let choices = |n: u32| (0..n).chain([NONE, n + 5]).collect::<Vec<_>>();
        for a in choices(2) {
            for b in choices(3) {
                for c in choices(1) {
                    let mut sel = Selected {
                        len: 3,
                        ..Selected::default()
                    };
                    sel.variants[..3].copy_from_slice(&[a, b, c]);
                    let mut h = HeaderMap::new();
                    rh.insert(&sel, &mut h);
                    let built = build_combined(&rh.entries, &[a, b, c]);
                    assert_eq!(h.get(COMBINED_HEADER), built.as_ref(), "{a} {b} {c}");
                    let with_variant = [a < 2, b < 3, c < 1].iter().filter(|x| **x).count();
                    let flag_headers = h.len() - usize::from(built.is_some());
                    assert_eq!(flag_headers, with_variant, "{a} {b} {c}");
                }
            }
        }
        // Too many combinations: no table, built per request, the same value.
        let many: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        let flags: serde_json::Map<String, serde_json::Value> = many
            .iter()
            .map(|k| (k.clone(), serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"})))
            .collect();
        let set = FlagSet::compile_document(
            &serde_json::json!({"flags": flags}),
            Layout::Map,
            Options::default(),
        )
        .unwrap();
        let rh = RouteHeaders::new(&set, &many).unwrap();
        assert!(rh.combined.is_empty());
        let mut sel = Selected {
            len: 8,
            ..Selected::default()
        };
        sel.variants[..8].fill(0);
        let mut h = HeaderMap::new();
        rh.insert(&sel, &mut h);
        let v = h.get(COMBINED_HEADER).unwrap().to_str().unwrap();
        assert!(v.starts_with("f0=") && v.matches("; ").count() == 7, "{v}");
    }
}
