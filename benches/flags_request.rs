//! The per-request cost of SDK-less flags on the data plane: `cargo bench --bench flags_request`.
//!
//! Uses `bench/traffic-flags.yaml` (the peers.py document: a static flag, a fractional flag
//! and a 5-rule flag on one route) compiled into a real snapshot, and measures what
//! `proxy::service` adds per request: building the context from the request, evaluating
//! the route's flags (with their metric handles) and setting the upstream headers.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::traffic::{CheckContext, TrafficDoc};
use sluice::proxy::flags::{self, RequestFacts};
use sluice::snapshot::{BuildCtx, Snapshot};
use sluice::telemetry::Registry;

fn bench(c: &mut Criterion) {
    let text = match std::fs::read_to_string("bench/traffic-flags.yaml") {
        Ok(t) => t,
        Err(e) => panic!("run from the repository root: {e}"),
    };
    let doc = match TrafficDoc::parse(&text, &CheckContext::default()) {
        Ok(p) => p.doc,
        Err(e) => panic!("{e}"),
    };
    let registry = Registry::new();
    let listeners = ["public".to_string()];
    let ctx = BuildCtx {
        listeners: &listeners,
        registry: &registry,
    };
    let snap = match Snapshot::build(&doc, "sha256:bench", &ctx, None) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let Some(route) = snap.routes.iter().next() else {
        panic!("no route")
    };
    let mut request = HeaderMap::new();
    request.insert("x-user-id", HeaderValue::from_static("user-4711"));
    request.insert("x-country", HeaderValue::from_static("CH"));
    let facts = RequestFacts {
        headers: &request,
        method: &Method::GET,
        host: "shop.example.com",
        path: "/checkout",
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        drawn: None,
    };
    let mut upstream = request.clone();
    c.bench_function("request/3_flags_context_evaluate_inject", |b| {
        b.iter(|| {
            let ev = flags::evaluate(&snap.flags, route, black_box(&facts));
            flags::inject(route, ev, &mut upstream);
        })
    });
    assert!(upstream.contains_key("x-sluice-flags"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
