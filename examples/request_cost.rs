//! Runs N full proxied requests in-process (`benches/support/inproc.rs`), for counting
//! instructions per request under callgrind: deterministic whatever else the machine does.
//!
//! ```text
//! cargo build --release --example request_cost
//! bench/request_cost.sh 5000 [--flags]
//! ```
//! The script runs this under callgrind twice, with N requests and with none (each after a
//! warm-up of 1,000), and divides the difference in instructions by N.

#[path = "../benches/support/inproc.rs"]
mod inproc;

/// The binary's allocator, so that the count is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let traffic = if args.iter().any(|a| a == "--flags") {
        inproc::FLAGS
    } else {
        inproc::PLAIN
    };
    let mut p = inproc::InProc::start(traffic);
    p.run(1_000);
    let t = std::time::Instant::now();
    p.run(n);
    let el = t.elapsed();
    eprintln!(
        "{n} requests in {el:?}: {:.2} µs per request",
        el.as_secs_f64() * 1e6 / n.max(1) as f64
    );
}
