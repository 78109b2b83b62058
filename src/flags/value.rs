//! The value type targeting rules compute with, and JsonLogic's coercions.
//!
//! Evaluation borrows wherever it can: context attributes, literals and variant values are
//! `&'a` references into the request or the compiled set; only computed strings, arrays
//! and numbers own anything. Coercions follow JavaScript (json-logic-js), which the flagd
//! evaluators (Go, Java, Python) all emulate; where they disagree, the choice is noted.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A value during targeting evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    /// An integer that fits `i64`; kept apart from floats so big ids hash exactly.
    Int(i64),
    /// A finite float (non-finite results become `Null`: JSON cannot hold them).
    Num(f64),
    Str(Cow<'a, str>),
    /// A borrowed JSON array or object (scalars are always unpacked).
    Json(&'a Value),
    /// A computed array.
    Array(Vec<Val<'a>>),
    /// A computed object (only when a whole context is asked for).
    Object(Box<Map<String, Value>>),
}

/// What kind of value, for the coercion tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Array,
    Object,
}

// === impl Val ===

impl<'a> Val<'a> {
    /// Unpacks a borrowed JSON value.
    #[inline]
    pub(crate) fn from_json(v: &'a Value) -> Self {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::from_number(n),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Val::Json(v),
        }
    }

    /// Unpacks an owned JSON value.
    pub(crate) fn from_owned(v: Value) -> Val<'static> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => Val::from_number(&n),
            Value::String(s) => Val::Str(Cow::Owned(s)),
            Value::Array(items) => Val::Array(items.into_iter().map(Val::from_owned).collect()),
            Value::Object(m) => Val::Object(Box::new(m)),
        }
    }

    fn from_number(n: &Number) -> Val<'static> {
        match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::num(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    /// A computed number: integral values become integers (JavaScript has one number
    /// type, so `4 / 2` and `1 + "2"` are plain integers); NaN and infinities become `Null`.
    #[inline]
    pub(crate) fn num(f: f64) -> Val<'static> {
        if !f.is_finite() {
            Val::Null
        } else if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            Val::Int(f as i64)
        } else {
            Val::Num(f)
        }
    }

    /// The coercion class.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Val::Null => Kind::Null,
            Val::Bool(_) => Kind::Bool,
            Val::Int(_) | Val::Num(_) => Kind::Num,
            Val::Str(_) => Kind::Str,
            Val::Json(Value::Object(_)) | Val::Object(_) => Kind::Object,
            Val::Json(_) | Val::Array(_) => Kind::Array,
        }
    }

    /// The string, when this is one.
    #[inline]
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// True for arrays (borrowed or computed).
    pub(crate) fn is_array(&self) -> bool {
        self.kind() == Kind::Array
    }

    /// The number of items, when this is an array.
    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Val::Json(Value::Array(a)) => Some(a.len()),
            Val::Array(a) => Some(a.len()),
            _ => None,
        }
    }

    /// Item `i` of an array (cloning computed items, borrowing JSON ones).
    pub(crate) fn item(&self, i: usize) -> Option<Val<'a>> {
        match self {
            Val::Json(Value::Array(a)) => a.get(i).map(Val::from_json),
            Val::Array(a) => a.get(i).cloned(),
            _ => None,
        }
    }

    /// Consumes an array into its items; anything else gives `None`.
    pub(crate) fn into_items(self) -> Option<Vec<Val<'a>>> {
        match self {
            Val::Json(Value::Array(a)) => Some(a.iter().map(Val::from_json).collect()),
            Val::Array(a) => Some(a),
            _ => None,
        }
    }

    /// JavaScript truthiness, as JsonLogic defines it (an empty array is falsy).
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Num(f) => *f != 0.0 && !f.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Json(Value::Array(a)) => !a.is_empty(),
            Val::Array(a) => !a.is_empty(),
            Val::Json(_) | Val::Object(_) => true,
        }
    }

    /// JavaScript `Number(x)` (arrays through their string form, as JavaScript does).
    pub(crate) fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Int(i) => *i as f64,
            Val::Num(f) => *f,
            Val::Str(s) => str_to_number(s),
            Val::Json(Value::Object(_)) | Val::Object(_) => f64::NAN,
            Val::Json(_) | Val::Array(_) => str_to_number(&self.to_js_string()),
        }
    }

    /// JavaScript `String(x)`.
    pub(crate) fn to_js_string(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s),
            _ => {
                let mut out = String::new();
                self.write_js_string(&mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Appends JavaScript `String(x)` to `out`.
    pub(crate) fn write_js_string(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Num(f) => write_js_number(*f, out),
            Val::Str(s) => out.push_str(s),
            Val::Json(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // JavaScript's join writes null and undefined as nothing.
                    if !v.is_null() {
                        Val::from_json(v).write_js_string(out);
                    }
                }
            }
            Val::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !matches!(v, Val::Null) {
                        v.write_js_string(out);
                    }
                }
            }
            Val::Json(_) | Val::Object(_) => out.push_str("[object Object]"),
        }
    }

    /// Converts to an owned JSON value.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Num(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Json(v) => (*v).clone(),
            Val::Array(a) => Value::Array(a.iter().map(Val::to_value).collect()),
            Val::Object(m) => Value::Object((**m).clone()),
        }
    }

    /// The number, when this is one.
    pub(crate) fn numeric(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Num(f) => Some(*f),
            _ => None,
        }
    }
}

/// JavaScript `Number(string)`: trimmed, empty is 0, otherwise a decimal literal or NaN.
pub(crate) fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    // Rust also parses "inf" and "nan", which JavaScript does not.
    if t.bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's number-to-string for finite values: integers without a fraction, others in
/// the shortest round-trip form.
pub(crate) fn write_js_number(f: f64, out: &mut String) {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let _ = write!(out, "{}", f as i128);
    } else {
        let _ = write!(out, "{f}");
    }
}

/// JavaScript `==`. Arrays and objects of the same kind compare structurally (JavaScript
/// compares identity, which a data-only rule cannot observe usefully).
pub(crate) fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    use Kind as K;
    match (a.kind(), b.kind()) {
        (K::Null, K::Null) => true,
        (K::Null, _) | (_, K::Null) => false,
        (K::Num, K::Num) => a.to_number() == b.to_number(),
        (K::Str, K::Str) => a.as_str() == b.as_str(),
        (K::Bool, K::Bool) => a.truthy() == b.truthy(),
        (K::Array | K::Object, K::Array | K::Object) => strict_eq(a, b),
        (K::Num, K::Str) | (K::Str, K::Num) => a.to_number() == b.to_number(),
        (K::Bool, _) => loose_eq(&Val::Int(i64::from(a.truthy())), b),
        (_, K::Bool) => loose_eq(a, &Val::Int(i64::from(b.truthy()))),
        (K::Array | K::Object, _) => {
            loose_eq(&Val::Str(Cow::Owned(a.to_js_string().into_owned())), b)
        }
        (_, K::Array | K::Object) => {
            loose_eq(a, &Val::Str(Cow::Owned(b.to_js_string().into_owned())))
        }
    }
}

/// JavaScript `===` (structural for arrays and objects, see [`loose_eq`]).
pub(crate) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        _ => match (a.numeric(), b.numeric()) {
            (Some(x), Some(y)) => x == y,
            (Some(_), None) | (None, Some(_)) => false,
            (None, None) => {
                let (ka, kb) = (a.kind(), b.kind());
                ka == kb && matches!(ka, Kind::Array | Kind::Object) && a.to_value() == b.to_value()
            }
        },
    }
}

/// JavaScript's abstract relational comparison: two strings compare as strings, anything
/// else as numbers. `None` when either side is NaN (every comparison is then false).
pub(crate) fn js_compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let pa = primitive(a);
    let pb = primitive(b);
    if let (Some(x), Some(y)) = (pa.as_str(), pb.as_str()) {
        return Some(x.cmp(y));
    }
    pa.to_number().partial_cmp(&pb.to_number())
}

/// JavaScript `ToPrimitive`: arrays and objects become their string form.
fn primitive<'v>(v: &'v Val<'_>) -> Val<'v> {
    match v.kind() {
        Kind::Array | Kind::Object => Val::Str(v.to_js_string()),
        _ => match v {
            Val::Str(s) => Val::Str(Cow::Borrowed(s)),
            Val::Bool(b) => Val::Bool(*b),
            Val::Int(i) => Val::Int(*i),
            Val::Num(f) => Val::Num(*f),
            _ => Val::Null,
        },
    }
}
