//! Load balancing: which endpoint of a pool serves a request. One file per algorithm, as
//! pingora's `selection/`; this file holds what every algorithm shares — healthy endpoints
//! only unless fewer than half are healthy (then all of them: panic mode, as Envoy), and a
//! retry's previous endpoint skipped when another qualifies — and dispatches on the pool's
//! `balance`.
//!
//! To add an algorithm: a variant of `config::traffic::Balance`, a file here with a
//! `select` function of the same shape, and its arm in [`select`].

mod least_request;
mod round_robin;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Endpoint, Upstream};
use crate::config::traffic::Balance;

/// Picks an endpoint of `up` (see the module doc). `None` only when it has no endpoint.
pub(super) fn pick(up: &Upstream, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
    let eps = up.endpoints.load();
    let n = eps.len();
    match n {
        0 => return None,
        1 => return eps.first().cloned(),
        _ => {}
    }
    // One counter per pool drives every algorithm: round robin's position, the power of
    // two choices' sequence.
    let i = up.rr.fetch_add(1, Ordering::Relaxed);
    let checked = up.passive_health.is_some() || up.active_health.is_some();
    if !checked && avoid.is_none() {
        return chosen(up.balance, &eps, i, |_| true);
    }
    let healthy = if checked {
        eps.iter().filter(|e| e.health.is_healthy()).count()
    } else {
        n
    };
    let panic = healthy * 2 < n;
    let usable = |e: &Endpoint| panic || !checked || e.health.is_healthy();
    let avoided = |e: &Endpoint| avoid.is_some_and(|a| std::ptr::eq(&**a, e));
    let others = eps.iter().filter(|e| usable(e) && !avoided(e)).count();
    if others > 0 {
        chosen(up.balance, &eps, i, |e| usable(e) && !avoided(e))
    } else {
        chosen(up.balance, &eps, i, usable)
    }
}

/// The algorithm's choice among qualifying endpoints; the first endpoint when none
/// qualifies.
fn chosen(
    balance: Balance,
    eps: &[Arc<Endpoint>],
    i: usize,
    ok: impl Fn(&Endpoint) -> bool,
) -> Option<Arc<Endpoint>> {
    select(balance, eps, i, ok).or_else(|| eps.first()).cloned()
}

/// Dispatches to the pool's algorithm; `i` is the pool's request counter.
fn select(
    balance: Balance,
    eps: &[Arc<Endpoint>],
    i: usize,
    ok: impl Fn(&Endpoint) -> bool,
) -> Option<&Arc<Endpoint>> {
    match balance {
        Balance::RoundRobin => round_robin::select(eps, i, ok),
        Balance::LeastRequest => least_request::select(eps, i, ok),
    }
}

/// The first qualifying endpoint at or after `start`, wrapping around.
fn first_from<'e>(
    eps: &'e [Arc<Endpoint>],
    start: usize,
    ok: &impl Fn(&Endpoint) -> bool,
) -> Option<&'e Arc<Endpoint>> {
    let n = eps.len();
    (0..n).map(|k| &eps[(start + k) % n]).find(|e| ok(e))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::TrafficDoc;
    use crate::config::traffic::CheckContext;
    use crate::snapshot::{Addresses, BuildCtx, Snapshot};
    use crate::telemetry::Registry;

    fn pool(balance: &str, health: &str) -> Arc<Upstream> {
        let text = format!(
            r#"
version: 1
change: {{ id: C-1, author: alice }}
upstreams:
  u: {{ endpoints: ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], balance: {balance} {health} }}
routes:
  - {{ name: all, to: {{ upstream: u }} }}
"#
        );
        let parsed = TrafficDoc::parse(&text, &CheckContext::default()).unwrap();
        let (registry, addresses) = (Registry::new(), Addresses::default());
        let ctx = BuildCtx {
            registry: &registry,
            addresses: &addresses,
        };
        let snap = Snapshot::build(&parsed, "sha256:x", &ctx, None).unwrap();
        snap.upstreams[0].clone()
    }

    fn counts(up: &Upstream, n: usize) -> HashMap<SocketAddr, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            *seen.entry(up.pick(None).unwrap().addr).or_default() += 1;
        }
        seen
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let up = pool("round_robin", "");
        let seen = counts(&up, 30);
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|n| *n == 10), "{seen:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let up = pool("least_request", "");
        let busy = up.endpoints()[0].clone();
        busy.in_flight.store(100, Ordering::Relaxed);
        let seen = counts(&up, 300);
        // Two distinct candidates per pick: the busy one only wins when both are it, never.
        assert_eq!(seen.get(&busy.addr), None, "{seen:?}");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_retry_avoids_its_previous_endpoint() {
        for balance in ["round_robin", "least_request"] {
            let up = pool(balance, "");
            for _ in 0..20 {
                let first = up.pick(None).unwrap();
                let again = up.pick(Some(&first)).unwrap();
                assert!(!Arc::ptr_eq(&first, &again), "{balance}");
            }
        }
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_until_panic_mode() {
        let health = ", passive_health: { consecutive_failures: 1, eject_for: 1h }";
        let up = pool("round_robin", health);
        let eps = up.endpoints();
        let passive = up.passive_health.clone();
        eps[0].health.failure(passive.as_ref(), eps[0].addr);
        let seen = counts(&up, 30);
        assert_eq!(seen.get(&eps[0].addr), None, "{seen:?}");
        // Two of three ejected: fewer than half healthy, so all of them serve again.
        eps[1].health.failure(passive.as_ref(), eps[1].addr);
        assert_eq!(counts(&up, 30).len(), 3);
    }
}
