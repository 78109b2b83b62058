//! The per-request cost of SDK-less flags on the data plane: `cargo bench --bench flags_request`.
//!
//! Uses `bench/traffic-flags.yaml` (the peers.py document: a static flag, a fractional flag
//! and a 5-rule flag on one route) compiled into a real snapshot, and measures what
//! `proxy::service` adds per request: building the context from the request, evaluating
//! the route's flags (with their metric handles) and setting the upstream headers.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::traffic::{CheckContext, TrafficDoc};
use sluice::proxy::flags::{self, RequestFacts};
use sluice::snapshot::{Addresses, BuildCtx, Snapshot};
use sluice::telemetry::Registry;

fn bench(c: &mut Criterion) {
    let text = match std::fs::read_to_string("bench/traffic-flags.yaml") {
        Ok(t) => t,
        Err(e) => panic!("run from the repository root: {e}"),
    };
    let listeners = vec!["public".to_string()];
    let check = CheckContext {
        listeners: Some(listeners),
    };
    let parsed = match TrafficDoc::parse(&text, &check) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let registry = Registry::new();
    let addresses = Addresses::default();
    let ctx = BuildCtx {
        registry: &registry,
        addresses: &addresses,
    };
    let snap = match Snapshot::build(&parsed, "sha256:bench", &ctx, None) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let Some(route) = snap.routes.iter().next() else {
        panic!("no route")
    };
    // The headers of a proxied request at the point flags are injected.
    let mut request = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        ("user-agent", "wrk"),
        ("x-user-id", "user-4711"),
        ("x-country", "CH"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "shop.example.com"),
        ("via", "1.1 sluice"),
        ("x-request-id", "0000000000000000000000000000002a"),
        ("x-sluice-route", "bench"),
        ("x-sluice-variant", "stable"),
    ] {
        request.insert(k, HeaderValue::from_static(v));
    }
    let facts = RequestFacts {
        headers: &request,
        method: &Method::GET,
        host: "shop.example.com",
        path: "/checkout",
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        client_cert: None,
        drawn: None,
    };
    // Each iteration sets the headers on a fresh copy of the request's headers, as the
    // proxy does (the copy is made outside the timed part).
    c.bench_function("request/3_flags_context_evaluate_inject", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |upstream| {
                let ev = flags::evaluate(&snap.flags, route, black_box(&facts));
                flags::inject(route, ev, upstream);
            },
            BatchSize::SmallInput,
        )
    });
    let mut upstream = request.clone();
    flags::inject(
        route,
        flags::evaluate(&snap.flags, route, &facts),
        &mut upstream,
    );
    assert_eq!(
        upstream.get("x-sluice-flags").map(|v| v.as_bytes()),
        Some(&b"theme=light; new-checkout=off; plan-banner=none"[..])
    );
    // Attribution: the same without setting headers, and the context alone.
    c.bench_function("request/3_flags_context_evaluate", |b| {
        b.iter(|| black_box(flags::evaluate(&snap.flags, route, black_box(&facts))))
    });
    c.bench_function("request/context_only", |b| {
        b.iter(|| {
            snap.flags.context.with_context(black_box(&facts), |ctx| {
                black_box(ctx.targeting_key().map(str::len))
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
