//! Evaluates a compiled JsonLogic tree against a context.
//!
//! Semantics follow json-logic-js as flagd's evaluators do: arguments that are not arrays
//! count as a one-item list, missing arguments are `null`, numbers that are not finite
//! become `null`. Nothing here fails: a rule that cannot compute yields `null`, which
//! flagd reads as "use the default variant".

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::Fractional;
use super::context::Context;
use super::custom;
use super::logic::{Node, Op, Root, Test, Var, VarPath};
use super::value::{Kind, Val, js_compare, loose_eq, strict_eq, write_js_number};

/// Everything a rule may read besides the current scope.
pub(crate) struct Env<'a> {
    pub ctx: Context<'a>,
    pub flag_key: &'a str,
    pub now: i64,
    pub fractional: Fractional,
}

/// What `var` reads: the context at the top, the item inside `map`/`filter`/`all`/`some`/
/// `none`, and `{current, accumulator}` inside `reduce`.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'s, 'a> {
    Root,
    Item(&'s Val<'a>),
    Reduce {
        current: &'s Val<'a>,
        acc: &'s Val<'a>,
    },
}

/// Evaluates `node`.
pub(crate) fn eval<'a>(node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match node {
        Node::Lit(v) => Val::from_json(v),
        Node::Array(items) => Val::Array(items.iter().map(|n| eval(n, env, scope)).collect()),
        Node::Var(var) => eval_var(var, env, scope),
        Node::Shared(n) => eval(n, env, scope),
        Node::Op(op, args) => eval_op(*op, args, env, scope),
        Node::Test(t) => eval_test(t, env, scope),
    }
}

/// A [`Test`]: a string value compared with the literal's text, an absent one answered
/// at once, anything else by the operator's general semantics ([`test_general`]).
fn eval_test<'a>(t: &'a Test, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let v = eval_var(&t.var, env, scope);
    let s: &str = match &v {
        Val::Str(s) => s,
        // An absent attribute: never equal to a string, no string to test.
        Val::Null => {
            return match (&t.lit, t.op) {
                (Value::String(_), Op::Eq | Op::StrictEq) => Val::Bool(false),
                (Value::String(_), Op::Ne | Op::StrictNe) => Val::Bool(true),
                (_, Op::StartsWith | Op::EndsWith) => Val::Null,
                (Value::Array(items), Op::In) => Val::Bool(items.iter().any(Value::is_null)),
                _ => test_general(t, &v),
            };
        }
        _ => return test_general(t, &v),
    };
    Val::Bool(match (&t.lit, t.op) {
        (Value::String(p), Op::Eq | Op::StrictEq) => s == p,
        (Value::String(p), Op::Ne | Op::StrictNe) => s != p,
        (Value::String(p), Op::StartsWith) => s.starts_with(p.as_str()),
        (Value::String(p), Op::EndsWith) => s.ends_with(p.as_str()),
        (Value::String(h), Op::In) => h.contains(s),
        (Value::Array(items), Op::In) => items.iter().any(|i| i.as_str() == Some(s)),
        _ => return test_general(t, &v),
    })
}

/// A [`Test`] evaluated as its [`Node::Op`] would be, with `v` the `var`'s value.
fn test_general<'a>(t: &'a Test, v: &Val<'a>) -> Val<'a> {
    let lit = Val::from_json(&t.lit);
    let (a, b) = if t.lit_first { (&lit, v) } else { (v, &lit) };
    match t.op {
        Op::Eq => Val::Bool(loose_eq(a, b)),
        Op::Ne => Val::Bool(!loose_eq(a, b)),
        Op::StrictEq => Val::Bool(strict_eq(a, b)),
        Op::StrictNe => Val::Bool(!strict_eq(a, b)),
        Op::In => eval_in(a, b),
        Op::StartsWith | Op::EndsWith => match (a.as_str(), b.as_str()) {
            (Some(s), Some(p)) if t.op == Op::StartsWith => Val::Bool(s.starts_with(p)),
            (Some(s), Some(p)) => Val::Bool(s.ends_with(p)),
            _ => Val::Null,
        },
        // `op_node` makes tests of the operators above only.
        _ => Val::Null,
    }
}

/// Argument `i`, or `null` when absent.
#[inline]
pub(crate) fn arg<'a>(args: &'a [Node], i: usize, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match args.get(i) {
        Some(n) => eval(n, env, scope),
        None => Val::Null,
    }
}

fn eval_op<'a>(op: Op, args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match op {
        Op::If => eval_if(args, env, scope),
        Op::And => {
            let mut cur = Val::Null;
            for a in args {
                cur = eval(a, env, scope);
                if !cur.truthy() {
                    return cur;
                }
            }
            cur
        }
        Op::Or => {
            let mut cur = Val::Null;
            for a in args {
                cur = eval(a, env, scope);
                if cur.truthy() {
                    return cur;
                }
            }
            cur
        }
        Op::Not => Val::Bool(!arg(args, 0, env, scope).truthy()),
        Op::NotNot => Val::Bool(arg(args, 0, env, scope).truthy()),
        Op::Eq => Val::Bool(loose_eq(
            &arg(args, 0, env, scope),
            &arg(args, 1, env, scope),
        )),
        Op::Ne => Val::Bool(!loose_eq(
            &arg(args, 0, env, scope),
            &arg(args, 1, env, scope),
        )),
        Op::StrictEq => Val::Bool(strict_eq(
            &arg(args, 0, env, scope),
            &arg(args, 1, env, scope),
        )),
        Op::StrictNe => Val::Bool(!strict_eq(
            &arg(args, 0, env, scope),
            &arg(args, 1, env, scope),
        )),
        Op::Lt => relation(args, env, scope, |o| o == Ordering::Less),
        Op::Le => relation(args, env, scope, |o| o != Ordering::Greater),
        Op::Gt => relation(args, env, scope, |o| o == Ordering::Greater),
        Op::Ge => relation(args, env, scope, |o| o != Ordering::Less),
        Op::Add => fold_numbers(args, env, scope, 0, i64::checked_add, |a, b| a + b),
        Op::Mul => fold_numbers(args, env, scope, 1, i64::checked_mul, |a, b| a * b),
        Op::Sub => match args.len() {
            0 => Val::Null,
            1 => negate(&arg(args, 0, env, scope)),
            _ => {
                let (a, b) = (arg(args, 0, env, scope), arg(args, 1, env, scope));
                int_or_float(&a, &b, i64::checked_sub, |x, y| x - y)
            }
        },
        Op::Div => {
            Val::num(arg(args, 0, env, scope).to_number() / arg(args, 1, env, scope).to_number())
        }
        Op::Mod => {
            let (a, b) = (arg(args, 0, env, scope), arg(args, 1, env, scope));
            int_or_float(&a, &b, i64::checked_rem, |x, y| x % y)
        }
        Op::Min => extremum(args, env, scope, f64::min),
        Op::Max => extremum(args, env, scope, f64::max),
        Op::In => eval_in(&arg(args, 0, env, scope), &arg(args, 1, env, scope)),
        Op::Cat => {
            let mut out = String::new();
            for a in args {
                eval(a, env, scope).write_js_string(&mut out);
            }
            Val::Str(Cow::Owned(out))
        }
        Op::Substr => substr(
            &arg(args, 0, env, scope),
            &arg(args, 1, env, scope),
            args.get(2).map(|n| eval(n, env, scope)),
        ),
        Op::Merge => {
            let mut out = Vec::new();
            for a in args {
                let v = eval(a, env, scope);
                if v.is_array() {
                    out.extend(v.into_items().unwrap_or_default());
                } else {
                    out.push(v);
                }
            }
            Val::Array(out)
        }
        Op::Missing => {
            let first = arg(args, 0, env, scope);
            let keys: Vec<Val<'a>> = match first.into_items() {
                Some(items) => items,
                None => args.iter().map(|n| eval(n, env, scope)).collect(),
            };
            Val::Array(missing(keys, env, scope))
        }
        Op::MissingSome => {
            let need = arg(args, 0, env, scope).to_number();
            let Some(keys) = arg(args, 1, env, scope).into_items() else {
                return Val::Array(Vec::new());
            };
            let total = keys.len();
            let missing = missing(keys, env, scope);
            if ((total - missing.len()) as f64) >= need {
                Val::Array(Vec::new())
            } else {
                Val::Array(missing)
            }
        }
        Op::Map => {
            let Some(items) = arg(args, 0, env, scope).into_items() else {
                return Val::Array(Vec::new());
            };
            let Some(sub) = args.get(1) else {
                return Val::Array(items.iter().map(|_| Val::Null).collect());
            };
            Val::Array(
                items
                    .iter()
                    .map(|it| eval(sub, env, Scope::Item(it)))
                    .collect(),
            )
        }
        Op::Filter => {
            let (Some(items), Some(sub)) = (arg(args, 0, env, scope).into_items(), args.get(1))
            else {
                return Val::Array(Vec::new());
            };
            Val::Array(
                items
                    .into_iter()
                    .filter(|it| eval(sub, env, Scope::Item(it)).truthy())
                    .collect(),
            )
        }
        Op::Reduce => {
            let init = arg(args, 2, env, scope);
            let (Some(items), Some(sub)) = (arg(args, 0, env, scope).into_items(), args.get(1))
            else {
                return init;
            };
            let mut acc = init;
            for it in &items {
                acc = eval(
                    sub,
                    env,
                    Scope::Reduce {
                        current: it,
                        acc: &acc,
                    },
                );
            }
            acc
        }
        Op::All => {
            let (Some(items), Some(sub)) = (arg(args, 0, env, scope).into_items(), args.get(1))
            else {
                return Val::Bool(false);
            };
            // JsonLogic defines `all` of an empty list as false.
            Val::Bool(
                !items.is_empty()
                    && items
                        .iter()
                        .all(|it| eval(sub, env, Scope::Item(it)).truthy()),
            )
        }
        Op::Some => {
            let (Some(items), Some(sub)) = (arg(args, 0, env, scope).into_items(), args.get(1))
            else {
                return Val::Bool(false);
            };
            Val::Bool(
                items
                    .iter()
                    .any(|it| eval(sub, env, Scope::Item(it)).truthy()),
            )
        }
        Op::None => {
            let (Some(items), Some(sub)) = (arg(args, 0, env, scope).into_items(), args.get(1))
            else {
                return Val::Bool(true);
            };
            Val::Bool(
                !items
                    .iter()
                    .any(|it| eval(sub, env, Scope::Item(it)).truthy()),
            )
        }
        Op::StartsWith => custom::string_compare(args, env, scope, |s, p| s.starts_with(p)),
        Op::EndsWith => custom::string_compare(args, env, scope, |s, p| s.ends_with(p)),
        Op::SemVer => custom::sem_ver(args, env, scope),
        Op::Fractional => custom::fractional(args, env, scope),
    }
}

fn eval_if<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    // if / then / else-if / then / ... / else; a missing branch is null.
    let mut i = 0;
    while i + 1 < args.len() {
        if eval(&args[i], env, scope).truthy() {
            return eval(&args[i + 1], env, scope);
        }
        i += 2;
    }
    arg(args, i, env, scope)
}

fn relation<'a>(
    args: &'a [Node],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    ok: fn(Ordering) -> bool,
) -> Val<'a> {
    let a = arg(args, 0, env, scope);
    let b = arg(args, 1, env, scope);
    let first = js_compare(&a, &b).is_some_and(ok);
    if args.len() < 3 || !first {
        return Val::Bool(first);
    }
    // The "between" form: a < b < c.
    let c = arg(args, 2, env, scope);
    Val::Bool(js_compare(&b, &c).is_some_and(ok))
}

fn fold_numbers<'a>(
    args: &'a [Node],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    unit: i64,
    int_op: fn(i64, i64) -> Option<i64>,
    float_op: fn(f64, f64) -> f64,
) -> Val<'a> {
    let mut acc = Val::Int(unit);
    for a in args {
        acc = int_or_float(&acc, &eval(a, env, scope), int_op, float_op);
        if matches!(acc, Val::Null) {
            return Val::Null;
        }
    }
    acc
}

/// Integer arithmetic while both sides are integers and it does not overflow, else floats.
fn int_or_float<'a>(
    a: &Val<'_>,
    b: &Val<'_>,
    int_op: fn(i64, i64) -> Option<i64>,
    float_op: fn(f64, f64) -> f64,
) -> Val<'a> {
    if let (Some(x), Some(y)) = (as_int(a), as_int(b))
        && let Some(r) = int_op(x, y)
    {
        return Val::Int(r);
    }
    Val::num(float_op(a.to_number(), b.to_number()))
}

fn as_int(v: &Val<'_>) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        _ => None,
    }
}

fn negate<'a>(v: &Val<'_>) -> Val<'a> {
    match v {
        Val::Int(i) if *i != 0 => i
            .checked_neg()
            .map_or_else(|| Val::num(-(*i as f64)), Val::Int),
        _ => Val::num(-v.to_number()),
    }
}

fn extremum<'a>(
    args: &'a [Node],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    pick: fn(f64, f64) -> f64,
) -> Val<'a> {
    let mut best: Option<Val<'a>> = None;
    let mut best_n = f64::NAN;
    for a in args {
        let v = eval(a, env, scope);
        let n = v.to_number();
        if n.is_nan() {
            return Val::Null;
        }
        if best.is_none() || pick(best_n, n) != best_n {
            best_n = n;
            best = Some(match v {
                Val::Int(i) => Val::Int(i),
                _ => Val::num(n),
            });
        }
    }
    best.unwrap_or(Val::Null)
}

fn eval_in(needle: &Val<'_>, haystack: &Val<'_>) -> Val<'static> {
    match haystack {
        Val::Str(h) => Val::Bool(h.contains(&*needle.to_js_string())),
        Val::Json(Value::Array(items)) => Val::Bool(
            items
                .iter()
                .any(|it| strict_eq(needle, &Val::from_json(it))),
        ),
        Val::Array(items) => Val::Bool(items.iter().any(|it| strict_eq(needle, it))),
        _ => Val::Bool(false),
    }
}

/// `substr` in characters: a negative start counts from the end, a negative length stops
/// that many characters before the end.
fn substr<'a>(s: &Val<'_>, start: &Val<'_>, len: Option<Val<'_>>) -> Val<'a> {
    let text = s.to_js_string();
    let n = text.chars().count() as i64;
    let start_f = start.to_number();
    let from = if start_f.is_nan() {
        0
    } else {
        let i = start_f.trunc() as i64;
        if i < 0 {
            n.saturating_add(i).max(0)
        } else {
            i.min(n)
        }
    };
    let to = match len.map(|l| l.to_number()) {
        None => n,
        Some(l) if l.is_nan() => from,
        Some(l) => {
            let l = l.trunc() as i64;
            if l < 0 {
                n.saturating_add(l).max(from)
            } else {
                from.saturating_add(l).min(n)
            }
        }
    };
    let out: String = text
        .chars()
        .skip(from as usize)
        .take((to - from).max(0) as usize)
        .collect();
    Val::Str(Cow::Owned(out))
}

fn missing<'a>(keys: Vec<Val<'a>>, env: &Env<'a>, scope: Scope<'_, 'a>) -> Vec<Val<'a>> {
    keys.into_iter()
        .filter(|k| {
            let found = lookup_dynamic(k, env, scope);
            matches!(found, Val::Null) || found.as_str() == Some("")
        })
        .collect()
}

fn eval_var<'a>(var: &'a Var, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let found = match &var.path {
        VarPath::Data => scope_data(env, scope),
        VarPath::Segments { segs, root } => match scope {
            Scope::Root => root_lookup(env, segs, *root),
            _ => navigate(scope_data(env, scope), segs.iter().map(|s| &**s)),
        },
        VarPath::Dynamic(node) => {
            let key = eval(node, env, scope);
            lookup_dynamic(&key, env, scope)
        }
    };
    match (found, &var.default) {
        (Val::Null, Some(d)) => eval(d, env, scope),
        (v, _) => v,
    }
}

/// `var` with a computed path (also `missing`'s keys).
fn lookup_dynamic<'a>(key: &Val<'_>, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let path = match key {
        Val::Null => return scope_data(env, scope),
        other => other.to_js_string(),
    };
    if path.is_empty() {
        return scope_data(env, scope);
    }
    match scope {
        Scope::Root => {
            let segs: Vec<Box<str>> = path.split('.').map(Box::from).collect();
            let root = match super::logic::static_path(&path) {
                VarPath::Segments { root, .. } => root,
                _ => Root::Attr,
            };
            root_lookup(env, &segs, root)
        }
        _ => navigate(scope_data(env, scope), path.split('.')),
    }
}

/// The whole data of a scope.
fn scope_data<'a>(env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match scope {
        Scope::Root => {
            let mut m: Map<String, Value> = env.ctx.to_object();
            m.insert("$flagd".into(), flagd_object(env));
            if let Some(tk) = env.ctx.targeting_key() {
                m.insert("targetingKey".into(), Value::String(tk.into()));
            }
            Val::Object(Box::new(m))
        }
        Scope::Item(v) => v.clone(),
        Scope::Reduce { current, acc } => {
            let mut m = Map::new();
            m.insert("current".into(), current.to_value());
            m.insert("accumulator".into(), acc.to_value());
            Val::Object(Box::new(m))
        }
    }
}

fn flagd_object(env: &Env<'_>) -> Value {
    let mut m = Map::new();
    m.insert("flagKey".into(), Value::String(env.flag_key.into()));
    m.insert("timestamp".into(), Value::from(env.now));
    Value::Object(m)
}

/// A static path at the top level, where flagd injects `$flagd` and `targetingKey`.
fn root_lookup<'a>(env: &Env<'a>, segs: &[Box<str>], root: Root) -> Val<'a> {
    match root {
        Root::FlagKey => Val::Str(Cow::Borrowed(env.flag_key)),
        Root::Timestamp => Val::Int(env.now),
        Root::Flagd => navigate(
            Val::from_owned(flagd_object(env)),
            segs[1..].iter().map(|s| &**s),
        ),
        Root::TargetingKey => match env.ctx.targeting_key() {
            Some(tk) => navigate(Val::Str(Cow::Borrowed(tk)), segs[1..].iter().map(|s| &**s)),
            None => Val::Null,
        },
        Root::Attr => match env.ctx.attr(&segs[0]) {
            Some(v) => navigate(v, segs[1..].iter().map(|s| &**s)),
            None => Val::Null,
        },
    }
}

/// Walks `segs` into `cur`: object members, array and string indexes, and `length`.
fn navigate<'a, 'p>(mut cur: Val<'a>, segs: impl Iterator<Item = &'p str>) -> Val<'a> {
    for seg in segs {
        cur = match cur {
            Val::Json(Value::Object(m)) => m.get(seg).map_or(Val::Null, Val::from_json),
            Val::Json(Value::Array(a)) => match seg {
                "length" => Val::Int(a.len() as i64),
                _ => index(seg)
                    .and_then(|i| a.get(i))
                    .map_or(Val::Null, Val::from_json),
            },
            Val::Array(a) => match seg {
                "length" => Val::Int(a.len() as i64),
                _ => index(seg)
                    .and_then(|i| a.into_iter().nth(i))
                    .unwrap_or(Val::Null),
            },
            Val::Object(mut m) => m.remove(seg).map_or(Val::Null, Val::from_owned),
            Val::Str(s) => match seg {
                "length" => Val::Int(s.chars().count() as i64),
                _ => index(seg)
                    .and_then(|i| s.chars().nth(i))
                    .map_or(Val::Null, |c| Val::Str(Cow::Owned(c.to_string()))),
            },
            _ => Val::Null,
        };
        if matches!(cur, Val::Null) {
            break;
        }
    }
    cur
}

/// A canonical decimal index ("01" and "-1" are member names, not indexes).
fn index(seg: &str) -> Option<usize> {
    let i: usize = seg.parse().ok()?;
    (i.to_string() == seg).then_some(i)
}

/// The variant name a targeting result designates: strings as they are, booleans as
/// `"true"`/`"false"`, numbers in JavaScript form; `None` for null (use the default) and
/// `Err` for arrays and objects, which name no variant.
pub(crate) fn variant_name<'v>(v: &'v Val<'_>) -> Result<Option<Cow<'v, str>>, ()> {
    match v.kind() {
        Kind::Null => Ok(None),
        Kind::Str => Ok(v.as_str().map(Cow::Borrowed)),
        Kind::Bool => Ok(Some(Cow::Borrowed(if v.truthy() {
            "true"
        } else {
            "false"
        }))),
        Kind::Num => {
            let mut s = String::new();
            match v {
                Val::Int(i) => s.push_str(&i.to_string()),
                other => write_js_number(other.to_number(), &mut s),
            }
            Ok(Some(Cow::Owned(s)))
        }
        Kind::Array | Kind::Object => Err(()),
    }
}
