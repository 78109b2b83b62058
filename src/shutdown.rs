//! Stopping an instance: the stop signal every task holds ([`Shutdown`], as mini-redis's),
//! and the drain before it.
//!
//! Shutdown as a load balancer needs it: drain first, then stop.
//!
//! On SIGTERM a Kubernetes Service (or any balancer) still sends new connections for a
//! while: the endpoint is removed only once readiness fails and the change propagates.
//! So draining starts by failing `/readyz` while every listener keeps accepting for
//! `limits.drain_delay`; HTTP/1 keep-alive connections get `Connection: close` on their
//! next response and HTTP/2 connections get GOAWAY, so clients move elsewhere without a
//! failed request. Then the listeners stop and in-flight work finishes within
//! `limits.drain_timeout` (the worker's stop, see `proxy::server`).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Stops every task of an instance; the instance holds it.
#[derive(Debug)]
pub struct Stop(watch::Sender<bool>);

/// The stop signal each task holds: [`Shutdown::wait`] resolves once the instance stops.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A stop signal and its first holder.
pub fn channel() -> (Stop, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Stop(tx), Shutdown(rx))
}

/// Whether the instance is draining; readable on the hot path, awaitable by connections.
#[derive(Debug)]
pub struct Drain {
    /// Read per HTTP/1 response: one relaxed load.
    draining: AtomicBool,
    /// Wakes HTTP/2 connections so that they send GOAWAY.
    tx: watch::Sender<bool>,
}

// === impl Stop ===

impl Stop {
    /// Tells every holder of a [`Shutdown`] to stop.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

// === impl Shutdown ===

impl Shutdown {
    /// Resolves once the instance stops (or its [`Stop`] is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

// === impl Drain ===

impl Default for Drain {
    fn default() -> Self {
        Drain {
            draining: AtomicBool::new(false),
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Starts draining; returns false when it had already started.
    pub fn start(&self) -> bool {
        if self.draining.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.tx.send_replace(true);
        true
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_once_and_wake_waiters() {
        let d = std::sync::Arc::new(Drain::default());
        assert!(!d.is_draining());
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.started().await });
        assert!(d.start());
        assert!(!d.start(), "a second SIGTERM does not restart the drain");
        assert!(d.is_draining());
        waiter.await.unwrap();
        // Already draining: resolves at once.
        d.started().await;
    }
}
