//! `traffic.yaml` parsing and validation: any bytes, never a panic, and memory and work
//! bounded by the input's length (issue 16, item 1: a 145 KB document once took 2.6 GB).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use sluice::config::traffic::{CheckContext, TrafficDoc};

/// Live bytes, their peak, and every byte ever allocated (work: each allocation is paid for).
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static TOTAL: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size() as u64, Ordering::Relaxed) + l.size() as u64;
        PEAK.fetch_max(live, Ordering::Relaxed);
        TOTAL.fetch_add(l.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The bounds of `tests/hostile.rs` (`validation_memory_and_work_are_linear_in_the_input`).
const PEAK_PER_BYTE: u64 = 160;
const TOTAL_PER_BYTE: u64 = 400;
const SLACK: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = CheckContext {
        listeners: Some(vec!["public".into()]),
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let total0 = TOTAL.load(Ordering::Relaxed);
    let parsed = TrafficDoc::parse(text, &ctx);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let total = TOTAL.load(Ordering::Relaxed) - total0;
    let len = data.len() as u64;
    assert!(
        peak <= PEAK_PER_BYTE * len + SLACK,
        "peak {peak} bytes for a {len}-byte document"
    );
    assert!(
        total <= TOTAL_PER_BYTE * len + SLACK,
        "{total} bytes allocated for a {len}-byte document"
    );
    if let Ok(parsed) = parsed {
        // A document that parsed serializes back to JSON.
        let _ = serde_json::to_vec(&parsed.doc);
    }
});
