//! Retries (SPEC §2.2 `retries`): which failures a route retries, and the per-upstream
//! budget that keeps retries from amplifying an outage.
//!
//! Bodies are streamed, never buffered, so a request can only go out again when none of it
//! was written (connect and TLS failures, on any method) or when it has no body at all
//! (resets, timeouts and 503s, on idempotent methods only).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::{Method, Request};

use super::body::UpBody;
use super::health::now_ms;
use crate::config::traffic::{Retries, RetryOn};

/// A route's retry policy, compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra tries (0: none).
    pub attempts: u32,
    /// Retry connect (and upstream TLS) failures.
    pub connect_failure: bool,
    /// Retry a connection that broke before the response head.
    pub reset: bool,
    /// Retry when no response head came within `request_timeout`.
    pub timeout: bool,
    /// Retry a 503 answer.
    pub status_503: bool,
}

/// A token bucket per upstream: each request deposits [`DEPOSIT`], time adds [`REFILL_PER_SEC`]
/// tokens a second, each retry takes one. Retries thus stay under 20% of requests plus
/// 10 a second, however many fail.
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens, in thousandths.
    milli: AtomicI64,
    /// When time last added tokens (ms on the [`now_ms`] clock).
    refilled_ms: AtomicU64,
}

/// Thousandths of a token each request adds: 20% of requests.
pub const DEPOSIT: i64 = 200;
/// Tokens added per second.
pub const REFILL_PER_SEC: i64 = 10;
/// Most tokens the bucket holds (and holds at start): two seconds of refill.
pub const CAPACITY: i64 = 2 * REFILL_PER_SEC;
const COST: i64 = 1000;

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Compiles a route's `retries`.
    pub fn new(r: Option<&Retries>) -> RetryPolicy {
        let Some(r) = r else {
            return RetryPolicy::default();
        };
        let has = |c| r.on.contains(&c);
        RetryPolicy {
            attempts: r.attempts,
            connect_failure: has(RetryOn::ConnectFailure),
            reset: has(RetryOn::Reset),
            timeout: has(RetryOn::Timeout),
            status_503: has(RetryOn::Status503),
        }
    }

    /// Whether a request with this method and body may be replayed after it was sent.
    pub fn replays(&self, method: &Method, bodiless: bool) -> bool {
        self.attempts > 0
            && (self.reset || self.timeout || self.status_503)
            && bodiless
            && is_idempotent(method)
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A bodiless request's head, kept to send it again: sending consumes the request.
pub fn head_of<B>(req: &Request<B>) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

/// A fresh copy of a bodiless request from its head.
pub fn rebuild(head: &Request<()>) -> Request<UpBody> {
    let mut r = Request::new(UpBody::Empty);
    *r.method_mut() = head.method().clone();
    *r.uri_mut() = head.uri().clone();
    *r.version_mut() = head.version();
    *r.headers_mut() = head.headers().clone();
    r
}

// === impl RetryBudget ===

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            milli: AtomicI64::new(CAPACITY * COST),
            refilled_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl RetryBudget {
    /// A request that may be retried passed by.
    #[inline]
    pub fn deposit(&self) {
        if self.milli.load(Ordering::Relaxed) < CAPACITY * COST {
            self.milli.fetch_add(DEPOSIT, Ordering::Relaxed);
        }
    }

    /// Takes a token for one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.refill(now_ms());
        let mut cur = self.milli.load(Ordering::Relaxed);
        loop {
            if cur < COST {
                return false;
            }
            match self.milli.compare_exchange_weak(
                cur,
                cur - COST,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn refill(&self, now: u64) {
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now <= last {
            return;
        }
        // One thread wins the interval; the others see it already credited.
        if self
            .refilled_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let add = (now - last).min(u64::MAX >> 2) as i64 * REFILL_PER_SEC;
        let cap = CAPACITY * COST;
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(add).min(cap.max(m)))
            });
    }

    /// Whole tokens left (for tests and status).
    pub fn tokens(&self) -> i64 {
        self.milli.load(Ordering::Relaxed) / COST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_idempotence() {
        let p = RetryPolicy::new(Some(&Retries {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure, RetryOn::Status503],
        }));
        assert!(p.connect_failure && p.status_503 && !p.reset && !p.timeout);
        assert!(p.replays(&Method::GET, true));
        assert!(!p.replays(&Method::GET, false));
        assert!(!p.replays(&Method::POST, true));
        let c = RetryPolicy::new(Some(&Retries {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure],
        }));
        assert!(!c.replays(&Method::GET, true));
        assert_eq!(RetryPolicy::new(None).attempts, 0);
    }

    #[test]
    fn budget_is_bounded_by_deposits_and_time() {
        let b = RetryBudget::default();
        // Start: the capacity.
        let mut n = 0;
        while b.withdraw() {
            n += 1;
            assert!(n <= CAPACITY + REFILL_PER_SEC, "budget never runs out");
        }
        assert!(n >= CAPACITY);
        // Five requests buy one retry (ignoring the refill, which only adds).
        let start = now_ms();
        for _ in 0..50 {
            b.deposit();
        }
        let mut m = 0;
        while b.withdraw() {
            m += 1;
        }
        let elapsed_s = (now_ms() - start) / 1000 + 1;
        assert!(m >= 10, "{m}");
        assert!(m as u64 <= 10 + elapsed_s * REFILL_PER_SEC as u64, "{m}");
    }
}
