//! Endpoint health (SPEC §2.2): passive ejection, active probes, and periodic re-resolution
//! of hostnames.
//!
//! The data plane only reads and bumps atomics ([`EndpointHealth`]). The control plane runs
//! [`run`]: it probes endpoints of upstreams with `active_health` and re-resolves hostnames
//! every [`RESOLVE_EVERY`] (DNS lookups on the blocking pool, never on a worker), storing a
//! new endpoint list only when the addresses changed. Endpoints are shared across
//! snapshots, so health survives a config reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, header};
use http_body_util::BodyExt;

use super::Shared;
use super::body::UpBody;
use super::connect::Conn;
use crate::config::traffic::{ActiveHealth, PassiveHealth};
use crate::shutdown::Shutdown;
use crate::snapshot::addresses::resolve;
use crate::snapshot::{Endpoint, Upstream};

/// How often hostnames in `endpoints` are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How often the prober looks for due probes.
const PROBE_TICK: Duration = Duration::from_millis(100);

/// Health state of one endpoint; shared across snapshots with the endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Consecutive connect/reset/timeout failures.
    failures: AtomicU32,
    /// Ejected until this time on the [`now_ms`] clock; 0: not ejected.
    ejected_until: AtomicU64,
    /// Active probes say unhealthy.
    probe_down: AtomicBool,
    /// Consecutive probe results of the current kind (passes while down, fails while up).
    probe_streak: AtomicU32,
    /// When the next probe is due ([`now_ms`]).
    probe_due: AtomicU64,
    /// A probe is running.
    probing: AtomicBool,
}

// === impl EndpointHealth ===

impl EndpointHealth {
    /// Whether the endpoint takes traffic (not ejected, not failing probes).
    #[inline]
    pub fn is_healthy(&self) -> bool {
        if self.probe_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// A response head arrived: the failure streak ends.
    #[inline]
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect, TLS, reset or timeout failure; ejects after `consecutive_failures`.
    pub fn failure(&self, passive: Option<&PassiveHealth>, addr: SocketAddr) {
        let Some(p) = passive else { return };
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= p.consecutive_failures {
            self.failures.store(0, Ordering::Relaxed);
            let until = now_ms() + p.eject_for.0.as_millis() as u64;
            self.ejected_until.store(until, Ordering::Relaxed);
            tracing::warn!(%addr, failures = n, eject_for = ?p.eject_for.0, "Endpoint ejected.");
        }
    }

    /// Whether the endpoint is ejected right now (passive health).
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    fn probe_result(&self, ok: bool, a: &ActiveHealth, addr: SocketAddr) {
        let down = self.probe_down.load(Ordering::Relaxed);
        // Results that agree with the current state reset the streak toward a change.
        if ok != down {
            self.probe_streak.store(0, Ordering::Relaxed);
            return;
        }
        let n = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if down && n >= a.healthy_after.max(1) {
            self.probe_down.store(false, Ordering::Relaxed);
            self.probe_streak.store(0, Ordering::Relaxed);
            tracing::info!(%addr, "Endpoint passes its health checks again.");
        } else if !down && n >= a.unhealthy_after.max(1) {
            self.probe_down.store(true, Ordering::Relaxed);
            self.probe_streak.store(0, Ordering::Relaxed);
            tracing::warn!(%addr, failed = n, "Endpoint fails its health checks.");
        }
    }
}

/// Milliseconds on a process-wide monotonic clock; never 0.
#[inline]
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Probes and re-resolves until `shutdown`. Runs on the control plane.
pub async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(PROBE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_resolve = Instant::now();
    let mut seen: Option<Arc<crate::snapshot::Snapshot>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let Some(snap) = shared.snapshot.load_full() else {
            continue;
        };
        for up in &snap.upstreams {
            if let Some(a) = &up.active_health {
                for ep in up.endpoints().iter() {
                    schedule_probe(up, ep, a);
                }
            }
        }
        // A new snapshot may hold hostnames the gate could not resolve before its lock
        // (a revert, a change restored pending): resolve those at once.
        let fresh = !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snap));
        let due = last_resolve.elapsed() >= RESOLVE_EVERY;
        if due {
            last_resolve = Instant::now();
        }
        for up in snap.upstreams.iter() {
            if (due && up.has_hostnames()) || (fresh && up.has_unresolved()) {
                re_resolve(up.clone());
            }
        }
        seen = Some(snap);
    }
}

/// Looks the pool's hostnames up again on the blocking pool and stores what changed.
fn re_resolve(up: Arc<Upstream>) {
    tokio::spawn(async move {
        let specs = up.endpoint_specs.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            specs.iter().map(|s| resolve(s)).collect::<Vec<_>>()
        })
        .await;
        if let Ok(r) = resolved {
            up.apply_resolved(&r);
        }
    });
}

fn schedule_probe(up: &Arc<Upstream>, ep: &Arc<Endpoint>, a: &ActiveHealth) {
    let h = &ep.health;
    let now = now_ms();
    if now < h.probe_due.load(Ordering::Relaxed) || h.probing.swap(true, Ordering::Relaxed) {
        return;
    }
    h.probe_due
        .store(now + a.interval.0.as_millis() as u64, Ordering::Relaxed);
    let (up, ep, a) = (up.clone(), ep.clone(), a.clone());
    tokio::spawn(async move {
        // A probe may take up to one interval (and at most the upstream's request timeout).
        let limit = a
            .interval
            .0
            .min(up.request_timeout)
            .max(Duration::from_millis(100));
        let ok = tokio::time::timeout(limit, probe(&up, &ep, &a.path))
            .await
            .unwrap_or(false);
        ep.health.probe_result(ok, &a, ep.addr);
        ep.health.probing.store(false, Ordering::Relaxed);
    });
}

/// One probe: `GET path` on a fresh connection; healthy iff the answer is 2xx.
async fn probe(up: &Upstream, ep: &Endpoint, path: &str) -> bool {
    let Ok(conn) = up.connector.connect(ep, false).await else {
        return false;
    };
    let host = if ep.host.parse::<std::net::IpAddr>().is_ok() {
        ep.addr.to_string()
    } else {
        format!("{}:{}", ep.host, ep.addr.port())
    };
    let Ok(mut req) = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "sluice-health-check")
        .body(UpBody::Empty)
    else {
        return false;
    };
    let resp = match conn {
        Conn::H1(mut tx, _) => tx.send_request(req).await,
        Conn::H2(mut tx) => {
            super::pool::to_h2_form(&mut req, up.connector.is_tls(), ep.addr);
            tx.send_request(req).await
        }
    };
    match resp {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    #[test]
    fn passive_ejection_and_return() {
        let h = EndpointHealth::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let p = PassiveHealth {
            consecutive_failures: 3,
            eject_for: Dur(Duration::from_millis(50)),
        };
        h.failure(Some(&p), addr);
        h.failure(Some(&p), addr);
        h.success();
        h.failure(Some(&p), addr);
        h.failure(Some(&p), addr);
        assert!(h.is_healthy(), "a success resets the streak");
        h.failure(Some(&p), addr);
        assert!(!h.is_healthy());
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.is_healthy());
        // No passive config: failures never eject.
        for _ in 0..10 {
            h.failure(None, addr);
        }
        assert!(h.is_healthy());
    }

    #[test]
    fn probes_flip_after_streaks() {
        let h = EndpointHealth::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = ActiveHealth {
            path: "/healthz".into(),
            interval: Dur(Duration::from_secs(1)),
            unhealthy_after: 2,
            healthy_after: 2,
        };
        h.probe_result(false, &a, addr);
        assert!(h.is_healthy());
        h.probe_result(true, &a, addr);
        h.probe_result(false, &a, addr);
        assert!(h.is_healthy(), "streaks must be consecutive");
        h.probe_result(false, &a, addr);
        assert!(!h.is_healthy());
        h.probe_result(true, &a, addr);
        assert!(!h.is_healthy());
        h.probe_result(true, &a, addr);
        assert!(h.is_healthy());
    }
}
