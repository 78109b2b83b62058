//! sluice: a feature-flag and progressive-delivery edge proxy.
//!
//! Map of the crate:
//! - [`config`]: `sluice.yaml` and `traffic.yaml` — YAML with positions, raw types, validation.
//! - [`bucket`]: the one bucketing primitive (canonical CBOR → murmur3 → bucket), shared by
//!   rollout splitting and flagd `fractional`.
//! - [`flags`]: flagd flag definitions compiled for in-process evaluation (JsonLogic and
//!   flagd's custom operators), SDK-less flag headers, and the OFREP core. Pure.

pub mod bucket;
pub mod config;
pub mod flags;
