//! Allocations per proxied request, counted by the global allocator on the thread that
//! runs one full request in-process (`benches/support/inproc.rs`): client → sluice's
//! HTTP/1 connection and service → upstream pool → upstream. The client and the upstream
//! allocate nothing per request, so every allocation counted is sluice's (and hyper's on
//! its behalf). A ceiling keeps the hot path from growing allocations unnoticed; the
//! README's Performance section has the current figures.

#[path = "../benches/support/inproc.rs"]
mod inproc;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations (including reallocations) per plain proxied request: at most this many.
const CEILING_PLAIN: f64 = 10.0;
/// The same with three flags injected.
const CEILING_FLAGS: f64 = 10.0;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only the measuring thread counts (sluice's own background threads do not).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(p, l, size) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per request over `n` requests after a warm-up.
fn per_request(traffic: &str, n: usize) -> f64 {
    let mut p = inproc::InProc::start(traffic);
    p.run(500);
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    p.run(n);
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::Relaxed) as f64 / n as f64
}

#[test]
fn allocations_per_proxied_request() {
    let plain = per_request(inproc::PLAIN, 2_000);
    let flags = per_request(inproc::FLAGS, 2_000);
    println!("allocations per request: split {plain:.2}, split + 3 flags {flags:.2}");
    assert!(
        plain <= CEILING_PLAIN,
        "{plain:.2} allocations per plain proxied request (ceiling {CEILING_PLAIN})"
    );
    assert!(
        flags <= CEILING_FLAGS,
        "{flags:.2} allocations per proxied request with 3 flags (ceiling {CEILING_FLAGS})"
    );
}
