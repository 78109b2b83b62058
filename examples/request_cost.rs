//! Runs N full proxied requests in-process (`benches/support/inproc.rs`), for counting
//! instructions per request under callgrind: deterministic whatever else the machine does.
//!
//! ```text
//! cargo build --release --example request_cost
//! bench/request_cost.sh 5000 [--flags]
//! bench/tracing_cost.sh               # tracing off / on (sampled 100%, exporter running)
//! ```
//! The script runs this under callgrind twice, with N requests and with none (each after a
//! warm-up of 1,000), and divides the difference in instructions by N.
//!
//! `--trace-sample F` turns `tracing` on with that sample rate; `--otlp` also exports every
//! sampled span over OTLP/HTTP to a sink on a thread of its own (it answers 200 to each
//! batch and is not counted). Without callgrind, the run prints the CPU time per request of
//! the thread that serves the requests (client and upstream included, as with callgrind) and
//! of the exporter thread (`sluice-otlp`), read from `/proc/thread-self/schedstat`.

#[path = "../src/allocator.rs"]
mod allocator;
#[path = "../benches/support/inproc.rs"]
mod inproc;

use std::io::{Read, Write};

/// The binary's allocator, so that the count is the binary's.
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let traffic = if args.iter().any(|a| a == "--flags") {
        inproc::FLAGS
    } else {
        inproc::PLAIN
    };
    let sample = args
        .iter()
        .position(|a| a == "--trace-sample")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<f64>().expect("--trace-sample takes a number"));
    let otlp = args.iter().any(|a| a == "--otlp");
    let extra = match (sample, otlp) {
        (None, false) => String::new(),
        (s, false) => format!("tracing: {{ sample: {} }}\n", s.unwrap_or(1.0)),
        (s, true) => format!(
            "tracing: {{ sample: {}, otlp: {{ endpoint: \"http://{}\" }} }}\n",
            s.unwrap_or(1.0),
            sink()
        ),
    };
    let mut p = if extra.is_empty() {
        inproc::InProc::start(traffic)
    } else {
        inproc::InProc::start_with(traffic, &extra)
    };
    p.run(1_000);
    let exporter_before = thread_cpu_ns("sluice-otlp");
    let cpu = cpu_ns("/proc/thread-self/schedstat");
    let t = std::time::Instant::now();
    p.run(n);
    let el = t.elapsed();
    let cpu = cpu_ns("/proc/thread-self/schedstat").saturating_sub(cpu);
    // The exporter flushes at least every second: wait for the last batch to be sent.
    if otlp {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let exporter = thread_cpu_ns("sluice-otlp").saturating_sub(exporter_before);
    let per = |ns: u64| ns as f64 / 1e3 / n.max(1) as f64;
    eprintln!(
        "{n} requests in {el:?}: {:.2} µs per request; CPU per request: serving thread {:.3} µs, exporter thread {:.3} µs",
        el.as_secs_f64() * 1e6 / n.max(1) as f64,
        per(cpu),
        per(exporter),
    );
}

/// CPU time in ns (first field of a `schedstat` file; 0 when unreadable).
fn cpu_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time in ns of this process's thread named `name` (0 when there is none).
fn thread_cpu_ns(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return cpu_ns(&t.path().join("schedstat").to_string_lossy());
        }
    }
    0
}

/// An OTLP/HTTP sink on a thread of its own: reads each POST whole and answers 200.
fn sink() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let addr = l.local_addr().expect("sink address");
    std::thread::Builder::new()
        .name("otlp-sink".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                let _ = answer(conn);
            }
        })
        .expect("sink thread");
    addr
}

fn answer(mut c: std::net::TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, len) = loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    c.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}
