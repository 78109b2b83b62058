//! Route matching (10 and 1,000 routes) and rollout bucketing.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use sluice::bucket;
use sluice::snapshot::{HostMatch, RouteMatcher, RouteTable};

fn table(n: usize) -> RouteTable<usize> {
    let routes = (0..n)
        .map(|i| {
            let host = match i % 3 {
                0 => HostMatch::Exact(format!("svc{i}.example.com").into()),
                1 => HostMatch::Suffix(format!(".zone{i}.example.com").into()),
                _ => HostMatch::Any,
            };
            let m = RouteMatcher {
                listener: None,
                host,
                path_prefix: Some(format!("/api/v{i}").into()),
                request: Default::default(),
                methods: vec![],
                client_cert: None,
            };
            (m, i)
        })
        .collect();
    RouteTable::new(routes)
}

fn routing(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("user-42"));
    for n in [10usize, 1000] {
        let t = table(n);
        let last = n - 1;
        let (host, path) = match last % 3 {
            0 => (
                format!("svc{last}.example.com"),
                format!("/api/v{last}/items"),
            ),
            1 => (
                format!("a.zone{last}.example.com"),
                format!("/api/v{last}/items"),
            ),
            _ => (
                "other.example.com".to_string(),
                format!("/api/v{last}/items"),
            ),
        };
        c.bench_function(&format!("route_match_last_of_{n}"), |b| {
            b.iter(|| {
                black_box(t.find(
                    0,
                    black_box(&host),
                    black_box(&path),
                    &Method::GET,
                    &headers,
                    None,
                ))
            })
        });
        let h0 = "svc0.example.com";
        c.bench_function(&format!("route_match_first_of_{n}"), |b| {
            b.iter(|| {
                black_box(t.find(
                    0,
                    black_box(h0),
                    black_box("/api/v0/x"),
                    &Method::GET,
                    &headers,
                    None,
                ))
            })
        });
    }
}

fn bucketing(c: &mut Criterion) {
    c.bench_function("rollout_bucket", |b| {
        b.iter(|| {
            black_box(bucket::rollout_bucket(
                black_box("checkout"),
                black_box(b"user-1234567"),
            ))
        })
    });
}

criterion_group!(benches, routing, bucketing);
criterion_main!(benches);
