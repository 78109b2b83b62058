//! Flag evaluation micro-benchmarks: `cargo bench --bench flags`.
//!
//! Targets: static < 100 ns, fractional < 1 µs, 5-rule targeting < 2 µs, compiling a
//! 10,000-flag document < 200 ms. The context is what the proxy builds per request: a
//! targeting key and a few string attributes borrowed from headers.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use sluice::flags::{Context, FlagSet, Options};

const NOW: i64 = 1_750_000_000;

fn five_rules() -> Value {
    // The request below matches none of the first four rules, so all five are evaluated.
    json!({"if": [
        {"in": [{"var": "email"}, ["ceo@shop.example", "cto@shop.example", "qa@shop.example"]]}, "a",
        {"ends_with": [{"var": "email"}, "@partner.example"]}, "b",
        {"sem_ver": [{"var": "app_version"}, ">=", "3.0.0"]}, "c",
        {"and": [{"==": [{"var": "country"}, "CH"]}, {"starts_with": [{"var": "path"}, "/beta"]}]}, "d",
        {"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "e",
        "f"
    ]})
}

fn flag(i: usize) -> Value {
    let variants = json!({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E", "f": "F"});
    match i % 3 {
        0 => {
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"})
        }
        1 => {
            json!({"state": "ENABLED", "variants": variants, "defaultVariant": "f", "targeting": five_rules()})
        }
        _ => {
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"fractional": [["on", 10], ["off", 90]]}})
        }
    }
}

fn document(n: usize) -> Map<String, Value> {
    (0..n).map(|i| (format!("flag-{i:05}"), flag(i))).collect()
}

fn bench(c: &mut Criterion) {
    let flags = document(1_000);
    let set = match FlagSet::compile(&flags, &Map::new(), Options::default()) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    };
    let attrs = [
        ("email", "someone@shop.example"),
        ("country", "DE"),
        ("path", "/checkout"),
        ("app_version", "2.9.1"),
        ("plan", "pro"),
    ];
    let ctx = Context::from_strings(Some("user-4711"), &attrs);
    let (static_id, rules_id, fractional_id) = match (
        set.get("flag-00000"),
        set.get("flag-00001"),
        set.get("flag-00002"),
    ) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => panic!("flags missing"),
    };
    assert_eq!(set.evaluate(rules_id, &ctx, NOW).variant, Some("e"));

    c.bench_function("evaluate/static", |b| {
        b.iter(|| black_box(set.evaluate(black_box(static_id), &ctx, NOW)))
    });
    c.bench_function("evaluate/targeting_5_rules", |b| {
        b.iter(|| black_box(set.evaluate(black_box(rules_id), &ctx, NOW)))
    });
    c.bench_function("evaluate/fractional", |b| {
        b.iter(|| black_box(set.evaluate(black_box(fractional_id), &ctx, NOW)))
    });
    c.bench_function("evaluate/all_1000_flags", |b| {
        b.iter(|| {
            let mut served = 0usize;
            for (id, _) in set.iter() {
                served += usize::from(set.evaluate(id, &ctx, NOW).variant.is_some());
            }
            black_box(served)
        })
    });

    let big = document(10_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("10000_flags_strict", |b| {
        b.iter(|| {
            black_box(
                FlagSet::compile(black_box(&big), &Map::new(), Options::default()).map(|s| s.len()),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
