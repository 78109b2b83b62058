//! Lenient flag compilation and evaluation: `{"flags": ..., "$evaluators": ..., "context": ...}`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sluice::flags::{Context, FlagSet, Options};

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let empty = Map::new();
    let obj = |k: &str| match doc.get(k) {
        Some(Value::Object(m)) => m,
        _ => &empty,
    };
    let (flags, evaluators, ctx_json) = (obj("flags"), obj("$evaluators"), obj("context"));
    for opts in [
        Options::default(),
        Options {
            fractional: sluice::flags::Fractional::V2,
        },
    ] {
        let set = FlagSet::compile_lenient(flags, evaluators, opts);
        let ctx = Context::from_json(ctx_json)
            .unwrap_or_else(|_| Context::from_json(&empty).expect("empty context"));
        for key in flags.keys() {
            let r = set.evaluate_key(key, &ctx, 1_700_000_000);
            let _ = sluice::flags::resolution_json(&r);
        }
        let _ = set.evaluate_key("missing-flag", &ctx, 0);
    }
});
