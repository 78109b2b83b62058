//! Checks against the flagd schemas (`flags.json`, `targeting.json` of
//! open-feature/flagd-schemas), written out by hand so every finding names its path and
//! says what to write instead. Like flagd ("flag definition does not conform to the
//! schema"), sluice reports these as warnings and loads the flags anyway; what flagd could
//! not load at all is refused by the compiler (`compile.rs`), not here.
//!
//! Deliberate differences from a generic JSON-schema validator, all stricter and all about
//! rules that JsonLogic would silently read as data: a rule object must have exactly one
//! operator, and `{"var": ["$flagd.x"]}` is checked like `{"var": "$flagd.x"}`.

use serde_json::{Map, Value};

use super::FlagError;
use super::semver::Version;

/// Checks one flag definition at `path` (`flags.<key>`).
pub(crate) fn check_flag(flag: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Value::Object(f) = flag else {
        errors.push(FlagError::new(
            path.clone(),
            "a flag must be an object with `state` and `variants`",
        ));
        return;
    };
    match f.get("state") {
        Some(Value::String(s)) if s == "ENABLED" || s == "DISABLED" => {}
        Some(other) => errors.push(at(
            path,
            ".state",
            format!("must be \"ENABLED\" or \"DISABLED\", not {other}"),
        )),
        None => errors.push(at(
            path,
            ".state",
            "is required (\"ENABLED\" or \"DISABLED\")".into(),
        )),
    }
    match f.get("variants") {
        Some(Value::Object(v)) => check_variants(v, path, errors),
        Some(_) => errors.push(at(
            path,
            ".variants",
            "must be an object of variant name to value".into(),
        )),
        None => errors.push(at(path, ".variants", "is required".into())),
    }
    match f.get("defaultVariant") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => errors.push(at(
            path,
            ".defaultVariant",
            format!("must be a variant name or null, not {other}"),
        )),
    }
    if let Some(m) = f.get("metadata") {
        let len = path.len();
        path.push_str(".metadata");
        check_metadata(m, path, errors);
        path.truncate(len);
    }
    if let Some(t) = f.get("targeting") {
        let len = path.len();
        path.push_str(".targeting");
        check_targeting(t, path, errors);
        path.truncate(len);
    }
}

fn check_variants(v: &Map<String, Value>, path: &str, errors: &mut Vec<FlagError>) {
    if v.is_empty() {
        errors.push(at(path, ".variants", "needs at least one variant".into()));
        return;
    }
    let mut first: Option<(&str, &'static str)> = None;
    for (name, value) in v {
        if super::errors_full(errors) {
            return;
        }
        if name.is_empty() {
            errors.push(at(
                path,
                ".variants",
                "a variant name must not be empty".into(),
            ));
        }
        let Some(kind) = variant_kind(value) else {
            errors.push(at(
                path,
                &format!(".variants.{name}"),
                format!("must be a boolean, string, number or object, not {value}"),
            ));
            continue;
        };
        match first {
            None => first = Some((name, kind)),
            Some((n0, k0)) if k0 != kind => {
                errors.push(at(
                    path,
                    &format!(".variants.{name}"),
                    format!("is {kind} but `{n0}` is {k0}: all variants of a flag have one type"),
                ));
            }
            Some(_) => {}
        }
    }
}

fn variant_kind(v: &Value) -> Option<&'static str> {
    Some(match v {
        Value::Bool(_) => "a boolean",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Object(_) => "an object",
        Value::Null | Value::Array(_) => return None,
    })
}

/// Flag or flag-set metadata: an object of strings, numbers and booleans.
pub(crate) fn check_metadata(m: &Value, path: &str, errors: &mut Vec<FlagError>) {
    let Value::Object(m) = m else {
        errors.push(FlagError::new(
            path.to_string(),
            "metadata must be an object",
        ));
        return;
    };
    for (k, v) in m {
        if super::errors_full(errors) {
            return;
        }
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            errors.push(at(
                path,
                &format!(".{k}"),
                "metadata values are strings, numbers or booleans".into(),
            ));
        } else if (k == "flagSetId" || k == "version") && path == "metadata" && !v.is_string() {
            errors.push(at(path, &format!(".{k}"), "must be a string".into()));
        }
    }
}

/// Checks a whole targeting rule (or an `$evaluators` entry): an object, empty for none.
pub(crate) fn check_targeting(t: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    match t {
        Value::Object(m) if m.is_empty() => {}
        Value::Object(m) if m.len() == 1 && m.contains_key("$ref") => errors.push(FlagError::new(
            path.clone(),
            "a `$ref` cannot be the whole rule (flagd schema); use it as an argument, e.g. {\"if\": [{\"$ref\": \"name\"}, \"on\", \"off\"]}",
        )),
        Value::Object(_) => check_rule(t, path, errors),
        other => errors.push(FlagError::new(path.clone(), format!("targeting must be a JsonLogic rule object, not {other}"))),
    }
}

/// The arity classes of `targeting.json`.
enum Arity {
    /// An array of exactly `n` arguments.
    Exactly(usize),
    /// An array of `min..=max` arguments.
    Between(usize, usize),
    /// An array of at least `n` arguments.
    AtLeast(usize),
    /// One argument, bare or in a one-item array.
    Unary,
}

/// A rule object: exactly one known operator with well-formed arguments.
fn check_rule(rule: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Value::Object(m) = rule else {
        return;
    };
    if m.len() != 1 {
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        errors.push(FlagError::new(
            path.clone(),
            format!(
                "a rule has exactly one operator, found {}: {}",
                m.len(),
                keys.join(", ")
            ),
        ));
        return;
    }
    let Some((op, args)) = m.iter().next() else {
        return;
    };
    // Every rule level adds a `.op` to the path: bounding their number bounds the recursion
    // for documents nested deeper than JSON parsers allow.
    if path.len() > super::logic::MAX_DEPTH as usize
        && path.matches('.').count() > super::logic::MAX_DEPTH as usize
    {
        errors.push(FlagError::new(
            path.clone(),
            format!("rules nest deeper than {} levels", super::logic::MAX_DEPTH),
        ));
        return;
    }
    let len = path.len();
    path.push('.');
    path.push_str(op);
    match op.as_str() {
        "var" => check_var(args, path, errors),
        "missing" => {
            if !args.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                errors.push(FlagError::new(path.clone(), "takes an array of variable names"));
            }
        }
        "missing_some" => {
            let ok = args.as_array().is_some_and(|a| {
                a.len() == 2 && a[0].is_number() && a[1].as_array().is_some_and(|k| k.iter().all(Value::is_string))
            });
            if !ok {
                errors.push(FlagError::new(path.clone(), "takes [minimum, [variable names]]"));
            }
        }
        "substr" | "<" | "<=" => check_args(args, Arity::Between(2, 3), path, errors),
        "==" | "===" | "!=" | "!==" | ">" | ">=" | "%" | "/" | "map" | "filter" | "all" | "none" | "some" | "in" => {
            check_args(args, Arity::Exactly(2), path, errors)
        }
        "if" | "or" | "and" | "+" | "-" | "max" | "min" | "merge" | "cat" => check_args(args, Arity::AtLeast(1), path, errors),
        "*" => check_args(args, Arity::AtLeast(2), path, errors),
        "!" | "!!" => check_args(args, Arity::Unary, path, errors),
        "reduce" => check_args(args, Arity::Exactly(3), path, errors),
        "starts_with" | "ends_with" => check_string_compare(args, path, errors),
        "sem_ver" => check_sem_ver(args, path, errors),
        "fractional" => check_fractional(args, path, errors),
        "$ref" => errors.push(FlagError::new(path.clone(), "`$ref` must be alone in its object: {\"$ref\": \"name\"}")),
        other => errors.push(FlagError::new(
            path.clone(),
            format!("unknown JsonLogic operator `{other}` (flagd supports the standard operators plus fractional, sem_ver, starts_with, ends_with)"),
        )),
    }
    path.truncate(len);
}

fn check_args(args: &Value, arity: Arity, path: &mut String, errors: &mut Vec<FlagError>) {
    let list = match (args, &arity) {
        (Value::Array(a), Arity::Unary) if a.len() == 1 => a.as_slice(),
        (other, Arity::Unary) => std::slice::from_ref(other),
        (Value::Array(a), _) => a.as_slice(),
        (_, _) => {
            errors.push(FlagError::new(path.clone(), "takes an array of arguments"));
            return;
        }
    };
    let n = list.len();
    let bad = match arity {
        Arity::Exactly(k) => (n != k).then(|| format!("takes exactly {k} arguments, found {n}")),
        Arity::Between(lo, hi) => {
            (!(lo..=hi).contains(&n)).then(|| format!("takes {lo} to {hi} arguments, found {n}"))
        }
        Arity::AtLeast(k) => (n < k).then(|| {
            format!(
                "takes at least {k} argument{}, found {n}",
                if k == 1 { "" } else { "s" }
            )
        }),
        Arity::Unary => None,
    };
    if let Some(m) = bad {
        errors.push(FlagError::new(path.clone(), m));
    }
    for (i, a) in list.iter().enumerate() {
        if super::errors_full(errors) {
            return;
        }
        let len = path.len();
        push_index(path, i);
        check_arg(a, path, errors);
        path.truncate(len);
    }
}

/// An argument: a `$ref`, a rule, or a primitive (null, boolean, number, string, array).
fn check_arg(a: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Value::Object(m) = a else {
        return;
    };
    if m.is_empty() {
        errors.push(FlagError::new(
            path.clone(),
            "an empty object is not a rule",
        ));
    } else if m.len() == 1 && m.contains_key("$ref") {
        if !m["$ref"].is_string() {
            errors.push(FlagError::new(
                path.clone(),
                "`$ref` must name an evaluator (a string)",
            ));
        }
    } else {
        check_rule(a, path, errors);
    }
}

fn check_var(args: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let name = match args {
        Value::String(s) => Some(s),
        Value::Array(a) => match a.first() {
            Some(Value::String(s)) => Some(s),
            None => {
                errors.push(FlagError::new(path.clone(), "takes a variable name"));
                None
            }
            Some(_) => None,
        },
        Value::Object(_) => {
            check_arg(args, path, errors);
            None
        }
        _ => None,
    };
    if let Some(n) = name
        && n.starts_with("$flagd.")
        && n != "$flagd.timestamp"
        && n != "$flagd.flagKey"
    {
        errors.push(FlagError::new(
            path.clone(),
            format!("`{n}` is not injected by flagd (only $flagd.flagKey and $flagd.timestamp)"),
        ));
    }
}

fn check_string_compare(args: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Some(a) = args.as_array().filter(|a| a.len() == 2) else {
        errors.push(FlagError::new(
            path.clone(),
            "takes exactly 2 arguments: [value, string]",
        ));
        return;
    };
    for (i, x) in a.iter().enumerate() {
        let len = path.len();
        push_index(path, i);
        match x {
            Value::String(_) => {}
            Value::Object(_) => check_rule(x, path, errors),
            other => errors.push(FlagError::new(
                path.clone(),
                format!("must be a string or a rule, not {other}"),
            )),
        }
        path.truncate(len);
    }
}

fn check_sem_ver(args: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Some(a) = args.as_array().filter(|a| a.len() == 3) else {
        errors.push(FlagError::new(
            path.clone(),
            "takes exactly 3 arguments: [version, operator, version]",
        ));
        return;
    };
    for i in [0, 2] {
        let len = path.len();
        push_index(path, i);
        match &a[i] {
            Value::String(s) if Version::parse_strict(s).is_some() => {}
            Value::String(s) => errors.push(FlagError::new(
                path.clone(),
                format!("`{s}` is not a semantic version (MAJOR.MINOR.PATCH)"),
            )),
            Value::Object(m) if m.len() == 1 && m.contains_key("var") => {
                check_rule(&a[i], path, errors)
            }
            other => errors.push(FlagError::new(
                path.clone(),
                format!("must be a semantic version string or a var rule, not {other}"),
            )),
        }
        path.truncate(len);
    }
    if !matches!(
        a[1].as_str(),
        Some("=" | "!=" | ">" | "<" | ">=" | "<=" | "~" | "^")
    ) {
        let len = path.len();
        push_index(path, 1);
        errors.push(FlagError::new(
            path.clone(),
            format!("operator must be one of = != > < >= <= ~ ^, not {}", a[1]),
        ));
        path.truncate(len);
    }
}

fn check_fractional(args: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Some(a) = args.as_array().filter(|a| !a.is_empty()) else {
        errors.push(FlagError::new(
            path.clone(),
            "takes [bucketing rule?, [variant, weight], ...]",
        ));
        return;
    };
    let buckets_from = match &a[0] {
        Value::Array(_) => 0,
        Value::Object(m) if !m.contains_key("$ref") => {
            let len = path.len();
            push_index(path, 0);
            check_rule(&a[0], path, errors);
            path.truncate(len);
            1
        }
        other => {
            let len = path.len();
            push_index(path, 0);
            errors.push(FlagError::new(
                path.clone(),
                format!(
                    "the bucketing value must be a rule such as {{\"var\": \"email\"}}, not {other}"
                ),
            ));
            path.truncate(len);
            1
        }
    };
    for (i, b) in a.iter().enumerate().skip(buckets_from) {
        let len = path.len();
        push_index(path, i);
        check_bucket(b, path, errors);
        path.truncate(len);
    }
}

fn check_bucket(b: &Value, path: &mut String, errors: &mut Vec<FlagError>) {
    let Some(items) = b.as_array().filter(|x| (1..=2).contains(&x.len())) else {
        errors.push(FlagError::new(
            path.clone(),
            "a bucket is [variant] or [variant, weight]",
        ));
        return;
    };
    let len = path.len();
    push_index(path, 0);
    check_arg(&items[0], path, errors);
    path.truncate(len);
    if let Some(w) = items.get(1) {
        push_index(path, 1);
        match w {
            Value::Number(n)
                if n.as_u64().is_some()
                    || n.as_f64().is_some_and(|f| f >= 0.0 && f.fract() == 0.0) => {}
            Value::Object(_) => check_rule(w, path, errors),
            other => errors.push(FlagError::new(
                path.clone(),
                format!("a weight is a non-negative integer or a rule, not {other}"),
            )),
        }
        path.truncate(len);
    }
}

fn at(path: &str, suffix: &str, message: String) -> FlagError {
    FlagError {
        path: format!("{path}{suffix}"),
        message,
    }
}

fn push_index(path: &mut String, i: usize) {
    use std::fmt::Write as _;
    let _ = write!(path, "[{i}]");
}
