//! `sluice.yaml` parsing and validation: any bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::Settings;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Settings::parse(text);
    }
});
