//! The change gate as the control plane shares it. Whatever needs I/O for a candidate —
//! parsing it and resolving its hostnames — happens here before the lock is taken, so
//! that a slow resolver never stalls the admin API, the file watch or the rollout runner
//! waiting on that lock.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Candidate, Gate, Outcome, Source};

/// A shared change gate.
#[derive(Clone)]
pub struct GateHandle {
    gate: Arc<Mutex<Gate>>,
    /// `sluice.yaml`'s listener names (fixed for the gate's life), read without the lock.
    listeners: Arc<[String]>,
}

// === impl GateHandle ===

impl GateHandle {
    /// Shares `gate`.
    pub fn new(gate: Gate) -> GateHandle {
        let listeners = gate.listeners().into();
        GateHandle {
            gate: Arc::new(Mutex::new(gate)),
            listeners,
        }
    }

    /// Locks the gate. A poisoned lock is taken over rather than failing every later
    /// call: what was committed is in the audit log, and a restart re-derives from it.
    pub fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Prepares `bytes` (parse, resolve) without the lock, then submits it with `pushed`
    /// tokens. Blocking.
    pub fn submit(&self, bytes: Vec<u8>, source: Source, pushed: &[String]) -> Outcome {
        let candidate = Candidate::prepare(bytes, &self.listeners);
        self.lock().submit(candidate, source, pushed)
    }
}
