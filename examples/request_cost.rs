//! Runs N full proxied requests in-process (`benches/support/inproc.rs`), for counting
//! instructions per request under callgrind: deterministic whatever else the machine does.
//!
//! ```text
//! cargo build --release --example request_cost
//! valgrind --tool=callgrind --toggle-collect='*request_cost*measured*' \
//!     target/release/examples/request_cost 20000 [--flags]
//! ```
//! Instructions per request = the `summary` of the callgrind output (collected inside
//! `measured` only, after a warm-up of 1,000 requests) divided by N.

#[path = "../benches/support/inproc.rs"]
mod inproc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let traffic = if args.iter().any(|a| a == "--flags") {
        inproc::FLAGS
    } else {
        inproc::PLAIN
    };
    let mut p = inproc::InProc::start(traffic);
    let t = std::time::Instant::now();
    p.run(n);
    let el = t.elapsed();
    eprintln!(
        "{n} requests in {el:?}: {:.2} µs per request",
        el.as_secs_f64() * 1e6 / n.max(1) as f64
    );
}

/// The counted requests; not inlined, so that callgrind can collect inside it only.
#[inline(never)]
fn measured(p: &mut inproc::InProc, n: usize) {
    p.run(n);
}
