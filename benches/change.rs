//! Change gate cost.
//!
//! - `change/assess_3_tokens`: a normal change with 3 tokens (author + 2 approvals): three
//!   Ed25519 verifications plus diff, classification and policy. Target: < 1 ms.
//! - `change/gate_activate_1000_routes_10000_flags`: one activation of a large document end
//!   to end through the change gate — parse and validate, anti-rollback, diff and classify,
//!   verify 3 tokens, policy, build the snapshot, persist (fsync), audit (fsync), swap.
//!   Target: < 500 ms. Prints the process RSS before and after (from /proc/self/status).
//!
//! Run: `cargo bench --bench change`.
//!
//! The bench allocates through mimalloc, as the `sluice` binary does.

#[path = "../src/allocator.rs"]
mod allocator;
#[path = "../tests/change_support/mod.rs"]
mod change_support;

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use change_support::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sluice::change::gate::{Candidate, Gate, Outcome, Source};
use sluice::change::token::{Act, verify};
use sluice::change::{ChangeInput, HighWater, Ruling, TrustStore, assess, classify, digest};
use sluice::clock::Clock;
use sluice::config::Settings;
use sluice::snapshot::Published;
use sluice::telemetry::Registry;

#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

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
        token(&key("alice"), "alice", &text, 8, Act::Author),
        token(&key("bob"), "bob", &text, 8, Act::Approve),
        token(&key("carol"), "carol", &text, 8, Act::Approve),
    ];
    let input = ChangeInput {
        bytes: text.as_bytes(),
        doc: &cand.doc,
        json: &cand.json,
        active: Some(&active.json),
        high_water: Some(&mark),
        tokens: &tokens,
        author_review_overdue: false,
        now: T0,
    };
    assert!(matches!(assess(&store, &input).ruling, Ruling::Activate(_)));

    c.bench_function("change/assess_3_tokens", |b| {
        b.iter(|| assess(&store, black_box(&input)))
    });
    c.bench_function("change/verify_1_token", |b| {
        b.iter(|| verify(black_box(&tokens[1]), &store, T0))
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

/// A document with `routes` routes over 50 upstreams and `flags` flags; `bump` moves one
/// route to another upstream (a normal change).
fn big_doc(version: u64, routes: usize, flags: usize, bump: usize) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "version: {version}\nchange: {{ id: CHG-{version}, author: alice, class: normal, summary: big }}\nupstreams:\n"
    );
    for u in 0..50 {
        let _ = writeln!(s, "  u{u}: {{ endpoints: [\"127.0.0.1:{}\"] }}", 20000 + u);
    }
    s.push_str("routes:\n");
    for r in 0..routes {
        let u = if r == bump % routes {
            (r + 1) % 50
        } else {
            r % 50
        };
        let _ = writeln!(
            s,
            "  - {{ name: r{r}, match: {{ path_prefix: /r{r} }}, to: {{ upstream: u{u} }} }}"
        );
    }
    s.push_str("flags:\n");
    for f in 0..flags {
        let _ = writeln!(
            s,
            "  f{f}: {{ state: ENABLED, variants: {{ \"on\": true, \"off\": false }}, defaultVariant: \"off\", targeting: {{ \"if\": [{{ \"==\": [{{ \"var\": \"country\" }}, \"de\"] }}, \"on\", \"off\"] }} }}"
        );
    }
    s
}

/// Resident and peak memory of this process, in MiB (Linux).
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or_else(|| "?".to_string(), |kb| format!("{:.1} MiB", kb / 1024.0))
    };
    format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
}

fn bench_gate(c: &mut Criterion) {
    const ROUTES: usize = 1000;
    const FLAGS: usize = 10_000;
    let before = rss();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::default();
    settings.paths.state_dir = dir.path().join("state");
    settings.paths.approvals = dir.path().join("approvals");
    settings.paths.traffic = dir.path().join("traffic.yaml");
    settings.trust = trust();
    let trust_store = Arc::new(TrustStore::new(&settings.trust).expect("trust compiles"));
    let clock = Clock::manual(T0 * 1000);
    let mut gate = Gate::open(
        Arc::new(settings),
        trust_store,
        Arc::new(Published::default()),
        Registry::new(),
        clock,
    )
    .expect("gate opens");
    let version = Cell::new(0u64);
    let next = || {
        let v = version.get() + 1;
        version.set(v);
        let text = big_doc(v, ROUTES, FLAGS, v as usize);
        let tokens = vec![
            token(&key("alice"), "alice", &text, v, Act::Author),
            token(&key("bob"), "bob", &text, v, Act::Approve),
            token(&key("carol"), "carol", &text, v, Act::Approve),
        ];
        (text, tokens)
    };
    let (text, tokens) = next();
    println!(
        "document: {} routes, {} flags, {:.1} MiB of YAML",
        ROUTES,
        FLAGS,
        text.len() as f64 / (1 << 20) as f64
    );
    let t = std::time::Instant::now();
    let submit = |gate: &mut Gate, text: String, tokens: &[String]| {
        let candidate = Candidate::prepare(text.into_bytes(), gate.listeners());
        gate.submit(candidate, Source::Push, tokens)
    };
    let first = submit(&mut gate, text, &tokens);
    assert!(matches!(first, Outcome::Activated { .. }), "{first:?}");
    println!(
        "first activation (nothing active before): {:.0} ms; {}",
        t.elapsed().as_secs_f64() * 1e3,
        rss()
    );
    let mut g = c.benchmark_group("change");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("gate_activate_1000_routes_10000_flags", |b| {
        b.iter_batched(
            &next,
            |(text, tokens)| {
                let o = submit(&mut gate, text, &tokens);
                assert!(matches!(o, Outcome::Activated { .. }), "{o:?}");
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    println!(
        "memory before: {before}; after {} activations: {}",
        version.get(),
        rss()
    );
}

criterion_group!(benches, bench, bench_gate);
criterion_main!(benches);
