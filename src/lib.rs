//! sluice: a feature-flag and progressive-delivery edge proxy.
//!
//! Map of the crate:
//! - [`config`]: `sluice.yaml` and `traffic.yaml` — YAML with positions, raw types, validation.
//! - [`bucket`]: the one bucketing primitive (canonical CBOR → murmur3 → bucket), shared by
//!   rollout splitting and flagd `fractional`.
//! - [`change`]: change approval — EdDSA tokens, trust store, diff and classification, the
//!   approval policy, anti-rollback (pure; the change gate wires them).
//! - [`rollout`]: per-variant lock-free windows, the canary verdict, and the rollout state
//!   machine (pure; the proxy, admin API and tick loop drive it).

pub mod admin;
pub mod bucket;
pub mod change;
pub mod cli;
pub mod clock;
pub mod config;
pub mod instance;
pub mod proxy;
pub mod snapshot;
pub mod telemetry;
pub mod rollout;
