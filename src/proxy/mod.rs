//! The data plane: listeners and workers, the per-request service, header hygiene,
//! splitting, and upstream connection pools.

pub mod body;
pub mod error;
pub mod flags;
pub mod headers;
pub mod pool;
pub mod server;
pub mod service;
pub mod split;

use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwapOption;
use metrics::Gauge;

use crate::admin::ofrep::Cors;
use crate::config::settings::Limits;
use crate::snapshot::Snapshot;

/// What every worker shares: the active snapshot and per-listener bookkeeping.
#[derive(Debug)]
pub struct Shared {
    /// The active snapshot; `None` until a document is active.
    pub snapshot: ArcSwapOption<Snapshot>,
    /// Listeners, in `sluice.yaml` order.
    pub listeners: Vec<ListenerInfo>,
    /// Timeouts and limits.
    pub limits: Limits,
    /// Open client connections across listeners.
    pub connections: AtomicUsize,
    /// Browser origins allowed to call OFREP (`ofrep.cors_origins`).
    pub ofrep_cors: Cors,
}

/// A listener's name and gauges.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Name from `sluice.yaml`.
    pub name: String,
    /// `sluice_active_connections{listener}`.
    pub active: Gauge,
}
