//! Approval token verification against a fixed trust store.
//!
//! Input byte 0 picks the mode: raw token text, or a header and payload (split at the first
//! 0xff) signed with the trusted key, so that the fuzzer gets past the signature check and
//! exercises header and claim validation.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use sluice::change::TrustStore;
use sluice::change::token;
use sluice::config::Settings;

fn fixture() -> &'static (TrustStore, SigningKey) {
    static F: OnceLock<(TrustStore, SigningKey)> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key.verifying_key().as_bytes());
        let yaml = format!(
            "trust:\n  environment: prod\n  principals:\n    alice: {{ keys: [\"ed25519:{public}\"], roles: [developer] }}\n"
        );
        let settings = Settings::parse(&yaml).expect("fixture settings");
        (TrustStore::new(&settings.trust).expect("fixture trust"), key)
    })
}

fuzz_target!(|data: &[u8]| {
    let (store, key) = fixture();
    let now = 1_800_000_000;
    match data.split_first() {
        Some((0, rest)) => {
            let (header, payload) = match rest.iter().position(|b| *b == 0xff) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}"[..], rest),
            };
            let t = token::sign_parts(header, payload, key);
            let _ = token::verify(&t, store, now);
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = token::verify(text, store, now);
            }
        }
    }
});
