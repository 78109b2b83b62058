//! Interoperability with the real OpenFeature Python SDK and its OFREP provider, against a
//! running sluice: on the admin listener and on a `builtin: ofrep` route below a prefix.
//! Needs `python3` with `openfeature` and `openfeature.contrib.provider.ofrep`
//! (`pip install openfeature-sdk openfeature-provider-ofrep`). Without them the test reports
//! a skip — unless `SLUICE_REQUIRE_OPENFEATURE=1` is set (CI), where they must be present.

mod common;

use std::process::Command;

use common::Sluice;
use serde_json::{Value, json};

const DOC: &str = r##"version: 1
change: { id: C1, author: alice }
upstreams:
  v1: { endpoints: ["127.0.0.1:9"] }
routes:
  - name: ofrep
    match: { path_prefix: /features }
    to: { builtin: ofrep }
flags:
  beta:
    state: ENABLED
    variants: { "on": true, "off": false }
    defaultVariant: "off"
    targeting: { "if": [{ "==": [{ "var": "plan" }, "pro"] }, "on", null] }
  color:
    state: ENABLED
    variants: { red: "#f00", blue: "#00f" }
    defaultVariant: red
    targeting: { fractional: [["red", 50], ["blue", 50]] }
  limit:
    state: ENABLED
    variants: { small: 10, big: 1000 }
    defaultVariant: small
  ratio:
    state: ENABLED
    variants: { low: 1.0, high: 2.5 }
    defaultVariant: low
  layout:
    state: ENABLED
    variants: { grid: { columns: 3, dense: true } }
    defaultVariant: grid
  code-default:
    state: ENABLED
    variants: { a: "x" }
    defaultVariant: null
  retired:
    state: DISABLED
    variants: { a: "x" }
    defaultVariant: a
  misrouted:
    state: ENABLED
    variants: { a: "x" }
    defaultVariant: a
    targeting: { "if": [true, "nowhere", "a"] }
"##;

const CLIENT: &str = r#"
import json, sys
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.provider.ofrep import OFREPProvider

api.set_provider(OFREPProvider(sys.argv[1], timeout=5.0))
client = api.get_client()
pro = EvaluationContext("user-1", {"plan": "pro"})
anon = EvaluationContext("user-2", {})

def name(x):
    return None if x is None else getattr(x, "value", x)

def show(d):
    return {"value": d.value, "variant": d.variant, "reason": name(d.reason),
            "error": name(d.error_code)}

out = {
    "beta_pro": show(client.get_boolean_details("beta", False, pro)),
    "beta_anon": show(client.get_boolean_details("beta", True, anon)),
    "color": show(client.get_string_details("color", "none", pro)),
    "limit": show(client.get_integer_details("limit", 0, pro)),
    "ratio": show(client.get_float_details("ratio", 0.5, pro)),
    "layout": show(client.get_object_details("layout", {}, pro)),
    "code_default": show(client.get_string_details("code-default", "fallback", pro)),
    "retired": show(client.get_string_details("retired", "fallback", pro)),
    "missing": show(client.get_boolean_details("missing", True, pro)),
    # Not an integer flag: Python's bool is an int, so ask for a string.
    "mismatch": show(client.get_string_details("beta", "seven", pro)),
    "misrouted": show(client.get_string_details("misrouted", "fallback", pro)),
}
print(json.dumps(out))
"#;

fn python_ready() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import openfeature, openfeature.contrib.provider.ofrep",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_client(base_url: &str) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(base_url)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

fn check(base_url: &str, color: &str) {
    let r = run_client(base_url);
    let ok = |value: Value, variant: &str, reason: &str| json!({"value": value, "variant": variant, "reason": reason, "error": null});
    assert_eq!(
        r["beta_pro"],
        ok(json!(true), "on", "TARGETING_MATCH"),
        "{r}"
    );
    assert_eq!(r["beta_anon"], ok(json!(false), "off", "DEFAULT"), "{r}");
    assert_eq!(
        r["color"],
        ok(
            json!(color),
            r["color"]["variant"].as_str().unwrap(),
            "TARGETING_MATCH"
        ),
        "{r}"
    );
    assert_eq!(r["limit"], ok(json!(10), "small", "STATIC"), "{r}");
    // A float flag must arrive as a float (the client type-checks `isinstance(v, float)`).
    assert_eq!(r["ratio"], ok(json!(1.0), "low", "STATIC"), "{r}");
    assert_eq!(
        r["layout"],
        ok(json!({"columns": 3, "dense": true}), "grid", "STATIC"),
        "{r}"
    );
    // Code defaults: no value on the wire, the caller's default is used.
    assert_eq!(
        r["code_default"],
        json!({"value": "fallback", "variant": null, "reason": "DEFAULT", "error": null}),
        "{r}"
    );
    assert_eq!(
        r["retired"],
        json!({"value": "fallback", "variant": null, "reason": "DISABLED", "error": null}),
        "{r}"
    );
    assert_eq!(r["missing"]["value"], true, "{r}");
    assert_eq!(r["missing"]["error"], "FLAG_NOT_FOUND", "{r}");
    assert_eq!(r["mismatch"]["value"], "seven", "{r}");
    assert_eq!(r["mismatch"]["error"], "TYPE_MISMATCH", "{r}");
    assert_eq!(r["misrouted"]["value"], "fallback", "{r}");
    assert_eq!(r["misrouted"]["error"], "GENERAL", "{r}");
}

#[test]
fn openfeature_python_client_against_sluice() {
    if !python_ready() {
        let required = std::env::var("SLUICE_REQUIRE_OPENFEATURE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "SLUICE_REQUIRE_OPENFEATURE=1 but the OpenFeature Python modules are missing: \
             pip install openfeature-sdk openfeature-provider-ofrep"
        );
        println!(
            "SKIPPED ofrep_python: python3 with openfeature-sdk and openfeature-provider-ofrep \
             not found (pip install openfeature-sdk openfeature-provider-ofrep)"
        );
        return;
    }
    let s = Sluice::builder().traffic(DOC).start();
    assert_eq!(s.version(), 1);
    // The fractional variant for user-1, as sluice itself computes it.
    let doc = sluice::config::TrafficDoc::parse(DOC, &Default::default()).expect("valid");
    let set =
        sluice::flags::FlagSet::compile(&doc.doc.flags, &doc.doc.evaluators, Default::default())
            .expect("flags compile");
    let ctx_json = json!({"targetingKey": "user-1", "plan": "pro"});
    let ctx =
        sluice::flags::Context::from_json(ctx_json.as_object().expect("object")).expect("ctx");
    let color = set
        .evaluate_key("color", &ctx, 0)
        .value
        .cloned()
        .expect("a value");

    check(
        &format!("http://{}", s.admin()),
        color.as_str().expect("a string"),
    );
    check(
        &format!("http://{}/features", s.proxy()),
        color.as_str().expect("a string"),
    );
}
