//! flagd's custom operators: `fractional`, `sem_ver`, `starts_with`, `ends_with`.
//!
//! Each returns `null` on bad input (wrong arity, wrong types, no bucketing value), so the
//! flag falls back to its default variant, as flagd's reference evaluators do.

use std::cmp::Ordering;

use serde_json::Value;

use super::Fractional;
use super::eval::{Env, Scope, arg, eval};
use super::logic::Node;
use super::semver::Version;
use super::value::Val;
use crate::bucket;

/// The largest total weight flagd accepts (`i32::MAX`).
const MAX_WEIGHT_SUM: u64 = i32::MAX as u64;

/// `starts_with` / `ends_with`: exactly two strings.
pub(crate) fn string_compare<'a>(
    args: &'a [Node],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    f: fn(&str, &str) -> bool,
) -> Val<'a> {
    if args.len() != 2 {
        return Val::Null;
    }
    let (a, b) = (arg(args, 0, env, scope), arg(args, 1, env, scope));
    match (a.as_str(), b.as_str()) {
        (Some(s), Some(p)) => Val::Bool(f(s, p)),
        _ => Val::Null,
    }
}

/// `sem_ver`: `[version, op, version]` with op one of `= != < <= > >= ^ ~`.
pub(crate) fn sem_ver<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    if args.len() != 3 {
        return Val::Null;
    }
    let (a, op, b) = (
        arg(args, 0, env, scope),
        arg(args, 1, env, scope),
        arg(args, 2, env, scope),
    );
    let (Some(sa), Some(op), Some(sb)) = (version_text(&a), op.as_str(), version_text(&b)) else {
        return Val::Null;
    };
    let (Some(x), Some(y)) = (Version::parse_flagd(&sa), Version::parse_flagd(&sb)) else {
        return Val::Null;
    };
    let ord = x.precedence(&y);
    Val::Bool(match op {
        "=" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        "^" => x.major == y.major,
        "~" => x.major == y.major && x.minor == y.minor,
        _ => return Val::Null,
    })
}

/// Strings as they are; numbers (`1`, `1.2`) in their JavaScript form, as flagd reads them.
fn version_text<'v>(v: &'v Val<'_>) -> Option<std::borrow::Cow<'v, str>> {
    match v {
        Val::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
        Val::Int(_) | Val::Num(_) => Some(v.to_js_string()),
        _ => None,
    }
}

/// `fractional`: `[bucketBy?, [variant, weight?], ...]`. Without a bucketing value (the
/// first argument is itself a bucket) it hashes `[flagKey, targetingKey]` (v3) or
/// `flagKey + targetingKey` (v2). The chosen bucket's variant may be any value or rule.
pub(crate) fn fractional<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let Some(first) = args.first() else {
        return Val::Null;
    };
    let first = eval(first, env, scope);
    let (hash, buckets) = if first.is_array() {
        (shorthand_hash(env), args)
    } else {
        let h = match (env.fractional, &first) {
            (Fractional::V3, v) => value_hash(v),
            (Fractional::V2, Val::Str(s)) => Some(bucket::hash_bytes(s.as_bytes())),
            // flagd v2 drops a null bucketing value and falls back to the shorthand.
            (Fractional::V2, Val::Null) => shorthand_hash(env),
            (Fractional::V2, _) => None,
        };
        (h, &args[1..])
    };
    let Some(hash) = hash else {
        return Val::Null;
    };
    let mut total = 0u64;
    for b in buckets {
        match bucket_parts(b, env, scope).and_then(|(_, w)| weight(w)) {
            Some(w) => total = total.saturating_add(w),
            None => return Val::Null,
        }
        if total > MAX_WEIGHT_SUM {
            return Val::Null;
        }
    }
    if total == 0 {
        return Val::Null;
    }
    let target = bucket::scale(hash, total);
    let mut end = 0u64;
    for b in buckets {
        let Some((variant, w)) = bucket_parts(b, env, scope) else {
            return Val::Null;
        };
        end = end.saturating_add(weight(w).unwrap_or(0));
        if target < end {
            return match variant {
                Variant::Node(n) => eval(n, env, scope),
                Variant::Val(v) => v,
            };
        }
    }
    Val::Null
}

/// A bucket's variant, not yet evaluated when it is a rule.
enum Variant<'a> {
    Node(&'a Node),
    Val(Val<'a>),
}

/// Splits a bucket `[variant, weight?]` without evaluating its variant.
fn bucket_parts<'a>(
    b: &'a Node,
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
) -> Option<(Variant<'a>, Option<Val<'a>>)> {
    match b {
        Node::Lit(Value::Array(items)) if (1..=2).contains(&items.len()) => Some((
            Variant::Val(Val::from_json(&items[0])),
            items.get(1).map(Val::from_json),
        )),
        Node::Array(items) if (1..=2).contains(&items.len()) => Some((
            Variant::Node(&items[0]),
            items.get(1).map(|w| eval(w, env, scope)),
        )),
        Node::Lit(_) | Node::Array(_) => None,
        other => {
            let v = eval(other, env, scope);
            let n = v.array_len()?;
            if !(1..=2).contains(&n) {
                return None;
            }
            Some((Variant::Val(v.item(0)?), v.item(1)))
        }
    }
}

/// A bucket's weight: 1 when absent, an integer clamped at 0, `None` when not an integer.
fn weight(w: Option<Val<'_>>) -> Option<u64> {
    match w {
        None => Some(1),
        Some(Val::Int(i)) => Some(i.max(0) as u64),
        Some(Val::Num(f)) if f.fract() == 0.0 => Some(f.max(0.0).min(u64::MAX as f64) as u64),
        Some(_) => None,
    }
}

/// The shorthand's hash; `None` without a non-empty targeting key.
fn shorthand_hash(env: &Env<'_>) -> Option<u32> {
    let tk = env.ctx.targeting_key().filter(|t| !t.is_empty())?;
    Some(match env.fractional {
        Fractional::V3 => bucket::hash_text_pair(env.flag_key.as_bytes(), tk.as_bytes()),
        Fractional::V2 => {
            let mut h = bucket::Murmur3::new();
            h.write(env.flag_key.as_bytes());
            h.write(tk.as_bytes());
            h.finish()
        }
    })
}

/// v3: murmur3 of the canonical CBOR of the bucketing value; `None` for null.
fn value_hash(v: &Val<'_>) -> Option<u32> {
    Some(match v {
        Val::Null => return None,
        Val::Str(s) => bucket::hash_text(s.as_bytes()),
        Val::Json(j) => bucket::hash_value(j),
        other => bucket::hash_value(&other.to_value()),
    })
}
