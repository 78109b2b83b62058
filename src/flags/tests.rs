//! Unit tests of the flag evaluator.

use serde_json::{Value, json};

use super::*;

fn set(flags: Value) -> FlagSet {
    let Value::Object(f) = flags else { panic!("flags must be an object") };
    match FlagSet::compile(&f, &Map::new(), Options::default()) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    }
}

#[test]
fn static_flag_resolves_default_variant() {
    let s = set(json!({"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}));
    let r = s.evaluate_key("f", &Context::empty(), 0);
    assert_eq!(r.value, Some(&json!(true)));
    assert_eq!(r.variant, Some("on"));
    assert_eq!(r.reason, Reason::Static);
}
