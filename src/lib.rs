//! sluice: a feature-flag and progressive-delivery edge proxy.
//!
//! Map of the crate:
//! - [`config`]: `sluice.yaml` and `traffic.yaml` — YAML with positions, raw types, validation.
//! - [`bucket`]: the one bucketing primitive (canonical CBOR → murmur3 → bucket), shared by
//!   rollout splitting and flagd `fractional`.
//! - [`rollout`]: per-variant lock-free windows, the canary verdict, and the rollout state
//!   machine (pure; the proxy, admin API and tick loop drive it).

pub mod bucket;
pub mod config;
pub mod rollout;
