//! Unit tests of the flag evaluator, headers and OFREP core.

use serde_json::{Value, json};

use super::*;
use crate::flags::eval::{Env, Scope};
use crate::flags::logic::Compiler;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn set(flags: Value) -> FlagSet {
    set_with(flags, json!({}), Fractional::V3)
}

fn set_with(flags: Value, evaluators: Value, fractional: Fractional) -> FlagSet {
    match FlagSet::compile(&map(flags), &map(evaluators), Options { fractional }) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    }
}

/// Evaluates a bare rule against a JSON context and returns the result as JSON.
fn apply(rule: Value, data: Value) -> Value {
    let evaluators = Map::new();
    let mut compiler = Compiler::new(&evaluators);
    let mut errors = Vec::new();
    let node = match compiler.compile(&rule, &mut String::from("rule"), &mut errors) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    let data = map(data);
    let ctx = Context::from_json(&data).unwrap();
    let env = Env {
        ctx,
        flag_key: "the-flag",
        now: 1_700_000_000,
        fractional: Fractional::V3,
    };
    eval::eval(&node, &env, Scope::Root).to_value()
}

/// The compiled shortcut for `var`-against-literal comparisons answers exactly as the
/// general operator does, whatever the value's type (strings take the shortcut).
#[test]
fn var_literal_tests_match_the_general_operators() {
    use crate::flags::logic::{Node, Op, Var, op_node, static_path};
    let ops = [
        Op::Eq,
        Op::Ne,
        Op::StrictEq,
        Op::StrictNe,
        Op::StartsWith,
        Op::EndsWith,
        Op::In,
    ];
    let lits = [
        json!("user-42"),
        json!(""),
        json!("1"),
        json!("ab"),
        json!("true"),
        json!(["DE", "FR", 1, null, "1", true, 0, false, ["DE"], {"a": 1}]),
        json!([]),
        json!(1),
    ];
    let values = [
        json!("user-42"),
        json!("user-4"),
        json!("user-420"),
        json!(""),
        json!("1"),
        json!("1.0"),
        json!(1),
        json!(1.0),
        json!(true),
        json!(false),
        json!(null),
        json!(["DE"]),
        json!({"a": 1}),
        json!("DE"),
        json!("ab"),
        json!("xab"),
        json!("true"),
    ];
    let args = |lit: &Value, lit_first: bool| {
        let var = Node::Var(Box::new(Var {
            path: static_path("v"),
            default: None,
        }));
        let lit = Node::Lit(lit.clone());
        if lit_first {
            vec![lit, var]
        } else {
            vec![var, lit]
        }
    };
    let mut shortcuts = 0;
    for op in ops {
        for lit in &lits {
            for lit_first in [false, true] {
                let compiled = op_node(op, args(lit, lit_first));
                let general = Node::Op(op, args(lit, lit_first).into_boxed_slice());
                shortcuts += usize::from(matches!(compiled, Node::Test(_)));
                for value in values.iter().map(Some).chain([None]) {
                    let data = match value {
                        Some(v) => map(json!({ "v": v })),
                        None => Map::new(),
                    };
                    let env = Env {
                        ctx: Context::from_json(&data).unwrap(),
                        flag_key: "f",
                        now: 0,
                        fractional: Fractional::V3,
                    };
                    let got = eval::eval(&compiled, &env, Scope::Root).to_value();
                    let want = eval::eval(&general, &env, Scope::Root).to_value();
                    assert_eq!(
                        got, want,
                        "{op:?} lit {lit} first {lit_first} value {value:?}"
                    );
                }
            }
        }
    }
    // 6 string operators × 5 string literals, + `in` × 7 literals; + 4 symmetric × 5 flipped.
    assert_eq!(shortcuts, 6 * 5 + 7 + 4 * 5);
}

#[test]
fn jsonlogic_operators() {
    let data = json!({
        "a": {"b": "deep"}, "arr": [10, 20, 30], "s": "hello", "n": 7, "integers": [1, 2, 3, 4, 5],
        "pies": [{"filling": "pumpkin"}, {"filling": "apple"}], "empty": "", "nul": null
    });
    let cases = [
        (json!({"==": [1, "1"]}), json!(true)),
        (json!({"===": [1, "1"]}), json!(false)),
        (json!({"===": [1, 1.0]}), json!(true)),
        (json!({"==": [null, 0]}), json!(false)),
        (json!({"==": [0, false]}), json!(true)),
        (json!({"==": ["", 0]}), json!(true)),
        (json!({"!=": ["a", "b"]}), json!(true)),
        (json!({"!==": [1, 1]}), json!(false)),
        (json!({"<": [1, 2, 3]}), json!(true)),
        (json!({"<": [1, 4, 3]}), json!(false)),
        (json!({"<=": [1, 1, 3]}), json!(true)),
        (json!({">": ["b", "a"]}), json!(true)),
        (json!({">": ["10", 9]}), json!(true)),
        (json!({">=": ["abc", 1]}), json!(false)),
        (json!({"+": [1, "2"]}), json!(3)),
        (json!({"+": ["2.25"]}), json!(2.25)),
        (json!({"+": [1, "x"]}), Value::Null),
        (json!({"-": [2]}), json!(-2)),
        (json!({"-": [4, 2.5]}), json!(1.5)),
        (json!({"*": [0.5, 3]}), json!(1.5)),
        (json!({"*": [2, 2, 2]}), json!(8)),
        (json!({"/": [4, 2]}), json!(2)),
        (json!({"/": [1, 0]}), Value::Null),
        (json!({"%": [101, 2]}), json!(1)),
        (json!({"%": [-7, 3]}), json!(-1)),
        (json!({"max": [1, 3, 2]}), json!(3)),
        (json!({"min": [1, "0.5"]}), json!(0.5)),
        (json!({"min": []}), Value::Null),
        (
            json!({"cat": ["I love", " pie", 1, null, 2.5]}),
            json!("I love pie1null2.5"),
        ),
        (json!({"substr": ["jsonlogic", 4]}), json!("logic")),
        (json!({"substr": ["jsonlogic", -5]}), json!("logic")),
        (json!({"substr": ["jsonlogic", 1, 3]}), json!("son")),
        (json!({"substr": ["jsonlogic", 4, -2]}), json!("log")),
        (json!({"substr": ["héllo", 1, 2]}), json!("él")),
        (json!({"in": ["Ringo", ["John", "Ringo"]]}), json!(true)),
        (json!({"in": ["Spring", "Springfield"]}), json!(true)),
        (json!({"in": [1, "x"]}), json!(false)),
        (json!({"merge": [[1, 2], [3], 4]}), json!([1, 2, 3, 4])),
        (
            json!({"missing": ["a", "zz", "empty", "nul"]}),
            json!(["zz", "empty", "nul"]),
        ),
        (json!({"missing": "a"}), json!([])),
        (json!({"missing_some": [1, ["a", "zz"]]}), json!([])),
        (
            json!({"missing_some": [2, ["a", "zz", "yy"]]}),
            json!(["zz", "yy"]),
        ),
        (
            json!({"map": [{"var": "integers"}, {"*": [{"var": ""}, 2]}]}),
            json!([2, 4, 6, 8, 10]),
        ),
        (
            json!({"filter": [{"var": "integers"}, {"%": [{"var": ""}, 2]}]}),
            json!([1, 3, 5]),
        ),
        (
            json!({"reduce": [{"var": "integers"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            json!(15),
        ),
        (
            json!({"all": [[1, 2, 3], {">": [{"var": ""}, 0]}]}),
            json!(true),
        ),
        (json!({"all": [[], {">": [{"var": ""}, 0]}]}), json!(false)),
        (
            json!({"some": [[-1, 0, 1], {">": [{"var": ""}, 0]}]}),
            json!(true),
        ),
        (
            json!({"none": [[-3, -2], {">": [{"var": ""}, 0]}]}),
            json!(true),
        ),
        (
            json!({"some": [{"var": "pies"}, {"==": [{"var": "filling"}, "apple"]}]}),
            json!(true),
        ),
        (json!({"var": "a.b"}), json!("deep")),
        (json!({"var": "arr.1"}), json!(20)),
        (json!({"var": "arr.length"}), json!(3)),
        (json!({"var": ["zz", "fallback"]}), json!("fallback")),
        (json!({"var": ["nul", "fallback"]}), json!("fallback")),
        (json!({"var": {"cat": ["a", ".b"]}}), json!("deep")),
        (json!({"var": "$flagd.flagKey"}), json!("the-flag")),
        (json!({"var": "$flagd.timestamp"}), json!(1_700_000_000)),
        (json!({"if": [false, "a", false, "b", "c"]}), json!("c")),
        (json!({"if": [false, "a"]}), Value::Null),
        (json!({"if": [true]}), json!(true)),
        (json!({"?:": [true, 1, 2]}), json!(1)),
        (json!({"and": [true, "a", 3]}), json!(3)),
        (json!({"and": [true, "", 3]}), json!("")),
        (json!({"or": [false, 0, "a"]}), json!("a")),
        (json!({"!!": ["0"]}), json!(true)),
        (json!({"!!": [[]]}), json!(false)),
        (json!({"!": [[]]}), json!(true)),
        (json!({"!": true}), json!(false)),
        (json!([1, {"var": "n"}]), json!([1, 7])),
        (json!({"a": 1, "b": 2}), json!({"a": 1, "b": 2})),
        (json!({"starts_with": [{"var": "s"}, "he"]}), json!(true)),
        (json!({"ends_with": [{"var": "s"}, "lo"]}), json!(true)),
        (json!({"ends_with": [{"var": "n"}, "7"]}), Value::Null),
        (
            json!({"sem_ver": ["1.2.3", ">", "1.2.3-rc.1"]}),
            json!(true),
        ),
        (json!({"sem_ver": ["v1.2", "~", "1.2.9"]}), json!(true)),
        (json!({"sem_ver": ["2.0.0", "^", "1.9.0"]}), json!(false)),
        (json!({"sem_ver": ["1.0.0", "===", "1.0.0"]}), Value::Null),
        (json!({"sem_ver": ["x", "=", "1.0.0"]}), Value::Null),
    ];
    for (rule, want) in cases {
        assert_eq!(apply(rule.clone(), data.clone()), want, "{rule}");
    }
}

#[test]
fn string_context_is_read_without_json() {
    let s = set(json!({"f": {
        "state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
        "targeting": {"if": [{"and": [{"==": [{"var": "country"}, "CH"]}, {"==": [{"var": "targetingKey"}, "u1"]}]}, "a", null]}
    }}));
    let id = s.get("f").unwrap();
    let attrs = [("email", "x@y.z"), ("country", "CH")];
    let hit = s.evaluate(id, &Context::from_strings(Some("u1"), &attrs), 0);
    assert_eq!(
        (hit.variant, hit.reason, hit.value),
        (
            Some("a"),
            ResolutionReason::TargetingMatch,
            Some(&json!("A"))
        )
    );
    let miss = s.evaluate(id, &Context::from_strings(Some("u2"), &attrs), 0);
    assert_eq!(
        (miss.variant, miss.reason),
        (Some("b"), ResolutionReason::Default)
    );
}

#[test]
fn resolution_reasons_and_errors() {
    let s = set(json!({
        "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "nodefault": {"state": "ENABLED", "variants": {"on": true, "off": false}},
        "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "boolean-target": {"state": "ENABLED", "variants": {"true": 1, "false": 0}, "defaultVariant": "false",
            "targeting": {"==": [{"var": "x"}, 1]}},
        "numeric-target": {"state": "ENABLED", "variants": {"1": "one", "2": "two"}, "defaultVariant": "2",
            "targeting": {"+": [0, 1]}},
        "unknown-variant": {"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a",
            "targeting": {"cat": ["z", "z"]}},
        "object-target": {"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a",
            "targeting": {"merge": [1]}},
    }));
    let ctx = Context::empty();
    let r = s.evaluate_key("static", &ctx, 0);
    assert_eq!(
        (r.reason, r.variant, r.error_code),
        (ResolutionReason::Static, Some("on"), None)
    );
    let r = s.evaluate_key("nodefault", &ctx, 0);
    assert_eq!(
        (r.reason, r.variant, r.value),
        (ResolutionReason::Default, None, None)
    );
    let r = s.evaluate_key("off", &ctx, 0);
    assert_eq!(
        (r.reason, r.variant, r.value, r.error_code),
        (ResolutionReason::Disabled, None, None, None)
    );
    let x = map(json!({"x": 1}));
    let r = s.evaluate_key("boolean-target", &Context::from_json(&x).unwrap(), 0);
    assert_eq!(
        (r.reason, r.variant, r.value),
        (
            ResolutionReason::TargetingMatch,
            Some("true"),
            Some(&json!(1))
        )
    );
    let r = s.evaluate_key("numeric-target", &ctx, 0);
    assert_eq!(r.variant, Some("1"));
    let r = s.evaluate_key("unknown-variant", &ctx, 0);
    assert_eq!(
        (r.reason, r.error_code),
        (ResolutionReason::Error, Some(ErrorCode::General))
    );
    assert!(r.error_message.as_deref().unwrap_or("").contains("`zz`"));
    let r = s.evaluate_key("object-target", &ctx, 0);
    assert_eq!(r.error_code, Some(ErrorCode::General));
    let r = s.evaluate_key("nope", &ctx, 0);
    assert_eq!(
        (r.reason, r.error_code),
        (ResolutionReason::Error, Some(ErrorCode::FlagNotFound))
    );
    // Typed callers.
    let r = s
        .evaluate_key("static", &ctx, 0)
        .check_type(ValueType::String);
    assert_eq!(
        (r.reason, r.error_code, r.value),
        (ResolutionReason::Error, Some(ErrorCode::TypeMismatch), None)
    );
    let r = s
        .evaluate_key("nodefault", &ctx, 0)
        .check_type(ValueType::String);
    assert_eq!(r.error_code, None, "code defaults are not type-checked");
    assert!(ValueType::Float.admits(&json!(1)) && !ValueType::Integer.admits(&json!(1.5)));
}

#[test]
fn strict_compile_reports_every_error_with_its_path() {
    let flags = map(json!({
        "a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "of"},
        "b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
              "targeting": {"if": [{"nope": [1]}, "on", null]}},
        "c": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
              "targeting": {"if": [{"$ref": "missing"}, "on", null]}},
        "d": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
              "targeting": {"if": [{"$ref": "loop1"}, "on", null]}},
        "e": {"state": "ENABLE", "variants": {"on": true, "off": "no"}},
    }));
    let evaluators =
        map(json!({"loop1": {"!": [{"$ref": "loop2"}]}, "loop2": {"!": [{"$ref": "loop1"}]}}));
    let errors = FlagSet::compile(&flags, &evaluators, Options::default()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "flags.a.defaultVariant",
        "flags.b.targeting.if[0].nope",
        "flags.c.targeting.if[0].$ref",
        "flags.d.targeting.if[0].$ref",
        "flags.e.state",
    ] {
        assert!(paths.contains(&want), "{want} missing from {errors:#?}");
    }
    assert!(
        errors.iter().any(|e| e.message.contains("cycle")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("undefined evaluator `missing`")),
        "{errors:#?}"
    );
}

#[test]
fn schema_departures_are_warnings_and_resolve_at_evaluation() {
    // flagd loads all of these and only logs that they do not conform to its schema.
    let flags = map(json!({
        "mixed": {"state": "ENABLED", "variants": {"on": true, "off": "no"}, "defaultVariant": "on"},
        "vprefix": {"state": "ENABLED", "variants": {"yes": "y", "no": "n"}, "defaultVariant": "no",
                    "targeting": {"if": [{"sem_ver": [{"var": "v"}, ">=", "v1.0"]}, "yes", "no"]}},
        "arity": {"state": "ENABLED", "variants": {"yes": "y", "no": "n"}, "defaultVariant": "no",
                  "targeting": {"if": [{"starts_with": [{"var": "id"}]}, "yes", null]}},
        "negative": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                     "targeting": {"fractional": [{"var": "id"}, ["a", -5], ["b", 10]]}},
        "literal": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                    "targeting": "b"},
        "whole-ref": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                      "targeting": {"$ref": "pick-b"}},
        "md": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
               "metadata": {"team": "x", "nested": {"no": 1}}},
    }));
    let evaluators = map(json!({"pick-b": {"if": [true, "b", "a"]}}));
    let s = FlagSet::compile(&flags, &evaluators, Options::default()).unwrap();
    let paths: Vec<&str> = s.warnings().iter().map(|w| w.path.as_str()).collect();
    for want in [
        "flags.mixed.variants.on",
        "flags.vprefix.targeting.if[0].sem_ver[2]",
        "flags.arity.targeting.if[0].starts_with",
        "flags.negative.targeting.fractional[1][1]",
        "flags.literal.targeting",
        "flags.whole-ref.targeting",
        "flags.md.metadata.nested",
    ] {
        assert!(
            paths.contains(&want),
            "{want} missing from {:#?}",
            s.warnings()
        );
    }
    let ctx_map = map(json!({"v": "1.2", "id": "abc"}));
    let ctx = Context::from_json(&ctx_map).unwrap();
    let variant = |k: &str| s.evaluate_key(k, &ctx, 0).variant.map(str::to_string);
    assert_eq!(variant("vprefix").as_deref(), Some("yes"));
    assert_eq!(variant("arity").as_deref(), Some("no"));
    assert_eq!(variant("literal").as_deref(), Some("b"));
    assert_eq!(variant("whole-ref").as_deref(), Some("b"));
    let md = s.evaluate_key("md", &ctx, 0);
    assert_eq!(Value::Object(md.metadata.clone()), json!({"team": "x"}));
}

#[test]
fn lenient_compile_resolves_defects_like_flagd() {
    let flags = map(json!({
        "bad-op": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"nope": [1]}},
        "bad-op-off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"nope": [1]}},
        "bad-state": {"state": "MAYBE", "variants": {"on": true}},
        "bad-default": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "off"},
        "good": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
    }));
    let s = FlagSet::compile_lenient(&flags, &Map::new(), Options::default());
    let ctx = Context::empty();
    let code = |k: &str| s.evaluate_key(k, &ctx, 0).error_code;
    assert_eq!(code("bad-op"), Some(ErrorCode::ParseError));
    assert_eq!(
        s.evaluate_key("bad-op-off", &ctx, 0).reason,
        ResolutionReason::Disabled
    );
    assert_eq!(code("bad-state"), Some(ErrorCode::ParseError));
    assert_eq!(code("bad-default"), Some(ErrorCode::General));
    assert_eq!(code("good"), None);
    assert_eq!(s.len(), 5);
}

#[test]
fn fractional_shorthand_and_versions() {
    let flags = json!({"f": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": null,
        "targeting": {"fractional": [["a", 50], ["b", 50]]}}});
    let v3 = set_with(flags.clone(), json!({}), Fractional::V3);
    let v2 = set_with(flags, json!({}), Fractional::V2);
    // Without a targeting key the shorthand has nothing to hash: code default.
    assert_eq!(
        v3.evaluate_key("f", &Context::empty(), 0).reason,
        ResolutionReason::Default
    );
    let mut differ = 0;
    for i in 0..200 {
        let tk = format!("user-{i}");
        let ctx = Context::from_strings(Some(&tk), &[]);
        let a = v3.evaluate_key("f", &ctx, 0);
        let b = v2.evaluate_key("f", &ctx, 0);
        let want3 = if crate::bucket::scale(crate::bucket::hash_value(&json!(["f", tk])), 100) < 50
        {
            "a"
        } else {
            "b"
        };
        let want2 =
            if crate::bucket::scale(crate::bucket::hash_bytes(format!("f{tk}").as_bytes()), 100)
                < 50
            {
                "a"
            } else {
                "b"
            };
        assert_eq!((a.variant, b.variant), (Some(want3), Some(want2)), "{tk}");
        differ += usize::from(a.variant != b.variant);
    }
    assert!(differ > 0, "v2 and v3 hash differently");
}

#[test]
fn fractional_weights_and_bad_buckets() {
    let cases = [
        (
            json!({"fractional": [{"var": "k"}, ["a", 0], ["b", 1]]}),
            json!("b"),
        ),
        (
            json!({"fractional": [{"var": "k"}, ["a", 0], ["b", 0]]}),
            Value::Null,
        ),
        (
            json!({"fractional": [{"var": "k"}, ["a", -5], ["b", 1]]}),
            json!("b"),
        ),
        (
            json!({"fractional": [{"var": "k"}, ["a", 1.5]]}),
            Value::Null,
        ),
        (
            json!({"fractional": [{"var": "k"}, ["a", "1"]]}),
            Value::Null,
        ),
        (
            json!({"fractional": [{"var": "k"}, ["a", 2_147_483_647], ["b", 1]]}),
            Value::Null,
        ),
        (json!({"fractional": [{"var": "k"}, "a"]}), Value::Null),
        (
            json!({"fractional": [{"var": "missing"}, ["a", 1]]}),
            Value::Null,
        ),
        (
            json!({"fractional": [{"var": "k"}, [{"cat": ["x", "y"]}, 1]]}),
            json!("xy"),
        ),
        (
            json!({"fractional": [{"var": "k"}, [true, 1]]}),
            json!(true),
        ),
        (json!({"fractional": []}), Value::Null),
    ];
    for (rule, want) in cases {
        assert_eq!(apply(rule.clone(), json!({"k": "user"})), want, "{rule}");
    }
}

#[test]
fn evaluators_are_shared_and_nested() {
    let s = set_with(
        json!({"f": {"state": "ENABLED", "variants": {"y": "Y", "n": "N"}, "defaultVariant": "n",
            "targeting": {"if": [{"$ref": "outer"}, "y", "n"]}}}),
        json!({"outer": {"and": [{"$ref": "inner"}, true]}, "inner": {"ends_with": [{"var": "email"}, "@corp.com"]}}),
        Fractional::V3,
    );
    let ctx = |e: &'static str| [("email", e)];
    let a = ctx("a@corp.com");
    let b = ctx("a@else.com");
    assert_eq!(
        s.evaluate_key("f", &Context::from_strings(None, &a), 0)
            .variant,
        Some("y")
    );
    assert_eq!(
        s.evaluate_key("f", &Context::from_strings(None, &b), 0)
            .variant,
        Some("n")
    );
}

#[test]
fn validate_targeting_names_paths() {
    let errors =
        validate_targeting(&json!({"if": [{"sem_ver": [{"var": "v"}, "*", "1.0"]}, "a", "b"]}));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["targeting.if[0].sem_ver[2]", "targeting.if[0].sem_ver[1]"],
        "{errors:?}"
    );
    assert!(validate_targeting(&json!({})).is_empty());
    assert_eq!(validate_targeting(&json!({"$ref": "x"})).len(), 1);
    assert_eq!(
        validate_targeting(&json!({"==": [1, 1], "!=": [1, 2]})).len(),
        1
    );
    assert_eq!(validate_targeting(&json!({"cat": "x"})).len(), 1);
    assert!(validate_targeting(&json!({"!": true})).is_empty());
}

#[test]
fn document_metadata_is_merged_into_flags() {
    let doc = json!({
        "metadata": {"flagSetId": "shop", "version": "3", "team": "a"},
        "flags": {"f": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "metadata": {"team": "b", "n": 1}}}
    });
    let s = FlagSet::compile_document(&doc, Layout::Map, Options::default()).unwrap();
    let r = s.evaluate_key("f", &Context::empty(), 0);
    assert_eq!(
        Value::Object(r.metadata.clone()),
        json!({"flagSetId": "shop", "version": "3", "team": "b", "n": 1})
    );
    assert_eq!(s.metadata().get("team"), Some(&json!("a")));
    // A departure from the schema warns (flagd loads it); metadata that is no object refuses.
    let odd = json!({"metadata": {"version": 3}, "flags": {}});
    let s = FlagSet::compile_document(&odd, Layout::Map, Options::default()).unwrap();
    assert_eq!(s.warnings()[0].path, "metadata.version");
    let bad = json!({"metadata": "v3", "flags": {}});
    assert_eq!(
        FlagSet::compile_document(&bad, Layout::Map, Options::default()).unwrap_err()[0].path,
        "metadata"
    );
}

#[test]
fn route_headers_encode_variants() {
    let s = set(json!({
        "theme": {"state": "ENABLED", "variants": {"dark mode": "d", "light": "l"}, "defaultVariant": "dark mode"},
        "beta": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "quiet": {"state": "ENABLED", "variants": {"on": true}},
        "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
    }));
    let rh = headers::RouteHeaders::new(&s, &["theme", "quiet", "beta", "off"]).unwrap();
    let mut h = http::HeaderMap::new();
    let mut seen = Vec::new();
    rh.apply(&s, &Context::empty(), 0, &mut h, |id, r| {
        seen.push((s.key(id).to_string(), r.reason))
    });
    assert_eq!(h.get("x-sluice-flag-theme").unwrap(), "dark%20mode");
    assert_eq!(h.get("x-sluice-flag-beta").unwrap(), "on");
    assert!(h.get("x-sluice-flag-quiet").is_none() && h.get("x-sluice-flag-off").is_none());
    assert_eq!(
        h.get("x-sluice-flags").unwrap(),
        "theme=dark%20mode; beta=on"
    );
    assert_eq!(seen.len(), 4);
    let all = headers::RouteHeaders::new(&s, &["*"]).unwrap();
    let keys: Vec<&str> = all.flags().map(|id| s.key(id)).collect();
    assert_eq!(keys, ["beta", "off", "quiet", "theme"]);
    assert!(matches!(
        headers::RouteHeaders::new(&s, &["nope"]),
        Err(headers::HeaderError::UnknownFlag(_))
    ));
    let mut out = String::new();
    headers::encode_value("a%b;c=é\"", &mut out);
    assert_eq!(out, "a%25b%3Bc%3D%C3%A9%22");
    assert_eq!(
        headers::combined_value([("k", "v 1"), ("j", "x")]),
        "k=v%201; j=x"
    );
}

#[test]
fn ofrep_single_shapes() {
    let s = set(json!({
        "f": {"state": "ENABLED", "variants": {"half": 0.5, "one": 1.0}, "defaultVariant": "one", "metadata": {"team": "x"}},
        "code-default": {"state": "ENABLED", "variants": {"on": true}},
        "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "broken": {"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a", "targeting": {"cat": ["b"]}},
    }));
    let body = br#"{"context": {"targetingKey": "u1"}}"#;
    let r = ofrep::evaluate_flag(&s, "f", body, 0);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"key":"f","metadata":{"team":"x"},"reason":"STATIC","value":1.0,"variant":"one"}"#
    );
    let r = ofrep::evaluate_flag(&s, "code-default", b"", 0);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"key":"code-default","reason":"DEFAULT","variant":null}"#
    );
    let r = ofrep::evaluate_flag(&s, "off", b"{}", 0);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"key":"off","reason":"DISABLED","variant":null}"#
    );
    let r = ofrep::evaluate_flag(&s, "nope", body, 0);
    assert_eq!(r.status, 404);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["key"].as_str(), v["errorCode"].as_str()),
        (Some("nope"), Some("FLAG_NOT_FOUND"))
    );
    let r = ofrep::evaluate_flag(&s, "broken", body, 0);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["errorCode"].as_str()), (400, Some("GENERAL")));
    for bad in [
        &b"not json"[..],
        b"[1]",
        br#"{"context": 3}"#,
        br#"{"context": {"targetingKey": 5}}"#,
    ] {
        let r = ofrep::evaluate_flag(&s, "f", bad, 0);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["errorCode"].as_str(), v["key"].as_str()),
            (400, Some("INVALID_CONTEXT"), Some("f"))
        );
        assert!(v["errorDetails"].is_string());
    }
}

#[test]
fn ofrep_bulk_etag() {
    let s = set(json!({
        "a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "b": {"state": "ENABLED", "variants": {"x": "X", "y": "Y"}, "defaultVariant": "x",
              "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "y", null]}},
    }));
    let r = ofrep::evaluate_bulk(&s, br#"{"context": {"targetingKey": "vip"}}"#, 0, None);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["flags"][1],
        json!({"key": "b", "reason": "TARGETING_MATCH", "value": "Y", "variant": "y"})
    );
    let etag = r.etag.clone().unwrap();
    assert_eq!(etag, ofrep::etag_of(&r.body));
    let again = ofrep::evaluate_bulk(
        &s,
        br#"{"context": {"targetingKey": "vip"}}"#,
        0,
        Some(&format!("W/{etag}, \"x\"")),
    );
    assert_eq!(
        (again.status, again.body.is_empty(), again.etag.as_deref()),
        (304, true, Some(etag.as_str()))
    );
    let other = ofrep::evaluate_bulk(
        &s,
        br#"{"context": {"targetingKey": "joe"}}"#,
        0,
        Some(&etag),
    );
    assert_eq!(other.status, 200);
    assert_ne!(other.etag.unwrap(), etag);
    let bad = ofrep::evaluate_bulk(&s, b"{", 0, None);
    let v: Value = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(
        (bad.status, v.get("key"), v["errorCode"].as_str()),
        (400, None, Some("INVALID_CONTEXT"))
    );
    assert!(ofrep::if_none_match_matches("*", &etag));
}

#[test]
fn resolution_json_shape() {
    let s =
        set(json!({"f": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}));
    let ctx = Context::empty();
    assert_eq!(
        resolution_json(&s.evaluate_key("f", &ctx, 0)),
        json!({"value": true, "variant": "on", "reason": "STATIC", "errorCode": null})
    );
    let missing = resolution_json(&s.evaluate_key("g", &ctx, 0));
    assert_eq!(missing["errorCode"], json!("FLAG_NOT_FOUND"));
    assert_eq!(missing["value"], Value::Null);
    assert!(missing["errorMessage"].is_string());
}

#[test]
fn nesting_is_bounded_through_refs() {
    // 200 evaluators, each negating the next: deeper than the limit in total.
    let mut evaluators = Map::new();
    for i in 0..200 {
        let next = if i == 199 {
            json!({"var": "x"})
        } else {
            json!({"$ref": format!("e{}", i + 1)})
        };
        evaluators.insert(format!("e{i}"), json!({"!": [next]}));
    }
    let flags = map(
        json!({"f": {"state": "ENABLED", "variants": {"true": 1, "false": 0}, "defaultVariant": "false",
        "targeting": {"!!": [{"$ref": "e0"}]}}}),
    );
    let errors = FlagSet::compile(&flags, &evaluators, Options::default()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.message.contains("deeper than")),
        "{errors:?}"
    );
    let lenient = FlagSet::compile_lenient(&flags, &evaluators, Options::default());
    assert_eq!(
        lenient.evaluate_key("f", &Context::empty(), 0).error_code,
        Some(ErrorCode::ParseError)
    );
    // A shallow user of a deep-but-legal evaluator still compiles.
    let ok = map(
        json!({"g": {"state": "ENABLED", "variants": {"true": 1, "false": 0}, "defaultVariant": "false",
        "targeting": {"!!": [{"$ref": "e150"}]}}}),
    );
    let s = FlagSet::compile_lenient(&ok, &evaluators, Options::default());
    assert_eq!(s.evaluate_key("g", &Context::empty(), 0).error_code, None);
}

#[test]
fn deep_nesting_is_refused() {
    // Deep plain nesting (built directly, as a YAML reader might) is refused, not overflowed.
    // (Built by hand: `json!` would serialize the value recursively.)
    let mut deep = json!({"var": "x"});
    for _ in 0..1_000 {
        let mut m = Map::new();
        m.insert("!".into(), Value::Array(vec![deep]));
        deep = Value::Object(m);
    }
    let mut flag = map(json!({"state": "ENABLED", "variants": {"true": 1}}));
    flag.insert("targeting".into(), deep);
    let mut flags = Map::new();
    flags.insert("h".into(), Value::Object(flag));
    let errors = FlagSet::compile(&flags, &Map::new(), Options::default()).unwrap_err();
    assert!(errors[0].message.contains("deeper than"), "{errors:?}");
    let lenient = FlagSet::compile_lenient(&flags, &Map::new(), Options::default());
    assert_eq!(
        lenient.evaluate_key("h", &Context::empty(), 0).error_code,
        Some(ErrorCode::ParseError)
    );
}

#[test]
fn flag_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlagSet>();
    assert_send_sync::<headers::RouteHeaders>();
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::*;

    const OPS: &[&str] = &[
        "if",
        "==",
        "===",
        "!=",
        "!==",
        "<",
        "<=",
        ">",
        ">=",
        "and",
        "or",
        "!",
        "!!",
        "in",
        "cat",
        "substr",
        "+",
        "-",
        "*",
        "/",
        "%",
        "min",
        "max",
        "merge",
        "map",
        "filter",
        "reduce",
        "all",
        "none",
        "some",
        "missing",
        "missing_some",
        "var",
        "fractional",
        "sem_ver",
        "starts_with",
        "ends_with",
    ];

    fn arb_rule() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e300f64..1e300).prop_map(|f| json!(f)),
            "[a-z0-9.v-]{0,6}".prop_map(Value::String),
            "[a-z.]{0,6}".prop_map(|p| json!({"var": p})),
        ];
        leaf.prop_recursive(5, 96, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                (
                    prop::sample::select(OPS),
                    prop::collection::vec(inner, 0..5)
                )
                    .prop_map(|(op, args)| {
                        let mut m = Map::new();
                        m.insert(op.to_string(), Value::Array(args));
                        Value::Object(m)
                    }),
            ]
        })
    }

    proptest! {
        /// Any rule built from the known operators compiles and evaluates without panicking,
        /// and the result is one of the documented reasons.
        #[test]
        fn random_rules_never_panic(rule in arb_rule(), fractional in prop::bool::ANY) {
            let mut flag = Map::new();
            flag.insert("state".into(), json!("ENABLED"));
            flag.insert("variants".into(), json!({"a": 1, "b": 2, "true": 3, "false": 4, "1": 5}));
            flag.insert("defaultVariant".into(), json!("a"));
            flag.insert("targeting".into(), json!({"if": [rule, "b", null]}));
            let mut flags = Map::new();
            flags.insert("f".into(), Value::Object(flag));
            let opts = Options { fractional: if fractional { Fractional::V2 } else { Fractional::V3 } };
            let set = FlagSet::compile_lenient(&flags, &Map::new(), opts);
            let ctx: Map<String, Value> = serde_json::from_value(json!({
                "targetingKey": "u", "a": {"b": [1, "x", null]}, "s": "text", "n": -3.5, "v": "1.2.3"
            })).unwrap();
            let r = set.evaluate_key("f", &Context::from_json(&ctx).unwrap(), 0);
            prop_assert!(matches!(r.reason, ResolutionReason::TargetingMatch | ResolutionReason::Default | ResolutionReason::Error));
            prop_assert_eq!(r.error_code.is_some(), r.reason == ResolutionReason::Error);
        }

        /// Encoded variants are valid header values made of token characters and `%XX`, and
        /// decode back to the variant.
        #[test]
        fn header_encoding_round_trips(v in "\\PC{0,24}") {
            let mut enc = String::new();
            headers::encode_value(&v, &mut enc);
            prop_assert!(enc.bytes().all(headers::is_tchar));
            prop_assert!(http::HeaderValue::from_str(&enc).is_ok());
            let bytes = enc.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            prop_assert_eq!(String::from_utf8(out).unwrap(), v);
        }
    }
}
