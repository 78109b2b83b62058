//! `balance: least_request`: power of two choices on requests in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::first_from;
use crate::snapshot::Endpoint;

/// Two endpoints from a cheap sequence driven by `i` (never the same one twice); the one
/// with fewer requests in flight wins. At least two endpoints.
pub(super) fn select(
    eps: &[Arc<Endpoint>],
    i: usize,
    ok: impl Fn(&Endpoint) -> bool,
) -> Option<&Arc<Endpoint>> {
    let n = eps.len();
    let a = i.wrapping_mul(0x9E37_79B9) % n;
    let b = (a + 1 + (i.wrapping_mul(0x85EB_CA6B) >> 7) % (n - 1)) % n;
    match (first_from(eps, a, &ok), first_from(eps, b, &ok)) {
        (Some(ea), Some(eb)) => {
            if eb.in_flight.load(Ordering::Relaxed) < ea.in_flight.load(Ordering::Relaxed) {
                Some(eb)
            } else {
                Some(ea)
            }
        }
        (a, b) => a.or(b),
    }
}
