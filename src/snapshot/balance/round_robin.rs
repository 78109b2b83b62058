//! `balance: round_robin`: each endpoint in turn.

use std::sync::Arc;

use super::first_from;
use crate::snapshot::Endpoint;

/// The `i`-th endpoint in turn, or the next one that qualifies.
pub(super) fn select(
    eps: &[Arc<Endpoint>],
    i: usize,
    ok: impl Fn(&Endpoint) -> bool,
) -> Option<&Arc<Endpoint>> {
    first_from(eps, i % eps.len(), &ok)
}
