//! Change gate cost: verifying a normal change with 3 tokens (author + 2 approvals), which
//! is three Ed25519 verifications plus diff, classification and policy. Target: < 1 ms.
//!
//! Run: `cargo bench --bench change`.

#[path = "../tests/change_support/mod.rs"]
mod change_support;

use std::hint::black_box;

use change_support::*;
use criterion::{Criterion, criterion_group, criterion_main};
use sluice::change::token::{Act, verify};
use sluice::change::{ChangeInput, HighWater, Verdict, assess, classify, digest};

fn bench(c: &mut Criterion) {
    let store = store();
    let active_text = doc(7, "alice", "normal");
    let text = doc(8, "alice", "normal")
        .replace("10.0.0.7:8080", "10.0.0.8:8080")
        .replace("defaultVariant: \"off\"", "defaultVariant: \"on\"");
    let (active, cand) = (parse(&active_text), parse(&text));
    let mark = HighWater {
        version: 7,
        digest: digest(active_text.as_bytes()),
    };
    let tokens = vec![
        token(&alice(), "alice", &text, 8, Act::Author),
        token(&bob(), "bob", &text, 8, Act::Approve),
        token(&carol(), "carol", &text, 8, Act::Approve),
    ];
    let input = ChangeInput {
        bytes: text.as_bytes(),
        doc: &cand.doc,
        json: &cand.json,
        active: Some(&active.json),
        high_water: Some(&mark),
        tokens: &tokens,
        author_review_overdue: false,
        now: NOW,
    };
    assert!(matches!(
        assess(&store, &input).verdict,
        Verdict::Activate(_)
    ));

    c.bench_function("change/assess_3_tokens", |b| {
        b.iter(|| assess(&store, black_box(&input)))
    });
    c.bench_function("change/verify_1_token", |b| {
        b.iter(|| verify(black_box(&tokens[1]), &store, NOW))
    });
    c.bench_function("change/classify", |b| {
        b.iter(|| {
            classify(
                store.rules(),
                Some(&active.json),
                black_box(&cand.json),
                cand.doc.change.class,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
