//! One full proxied request in-process (`benches/support/inproc.rs`): client → sluice's
//! HTTP/1 connection and service → upstream pool → upstream, on one thread.
//!
//! ```text
//! cargo bench --bench proxy
//! ```

#[path = "support/inproc.rs"]
mod inproc;

use criterion::{Criterion, criterion_group, criterion_main};

fn request(c: &mut Criterion) {
    let mut plain = inproc::InProc::start(inproc::PLAIN);
    plain.run(1_000);
    c.bench_function("proxy/request (split)", |b| b.iter(|| plain.run(1)));
    drop(plain);
    let mut flags = inproc::InProc::start(inproc::FLAGS);
    flags.run(1_000);
    c.bench_function("proxy/request (split + 3 flags)", |b| {
        b.iter(|| flags.run(1))
    });
}

criterion_group!(benches, request);
criterion_main!(benches);
