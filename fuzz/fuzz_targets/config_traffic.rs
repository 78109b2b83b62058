//! `traffic.yaml` parsing and validation: any bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::traffic::{CheckContext, TrafficDoc};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = CheckContext {
        listeners: Some(vec!["public".into()]),
    };
    if let Ok(parsed) = TrafficDoc::parse(text, &ctx) {
        // A document that parsed serializes back to JSON.
        let _ = serde_json::to_vec(&parsed.doc);
    }
});
