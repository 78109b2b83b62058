//! sluice: a feature-flag and progressive-delivery edge proxy.
//!
//! Map of the crate:
//! - [`config`]: `sluice.yaml` and `traffic.yaml` — YAML with positions, raw types, validation.
//! - [`bucket`]: the one bucketing primitive (canonical CBOR → murmur3 → bucket), shared by
//!   rollout splitting and flagd `fractional`.
//! - [`request_match`]: header, cookie and query conditions (exact, prefix, linear-time
//!   regex, present), compiled once, shared by route `match`, `canary_match` and
//!   `preview_match`.
//! - [`change`]: change approval — EdDSA tokens, trust store, diff and classification, the
//!   approval policy, anti-rollback (pure; the change gate wires them).
//! - [`rollout`]: per-variant lock-free windows, the canary verdict, and the rollout state
//!   machine (pure; the proxy, admin API and tick loop drive it).
//! - [`shutdown`]: drain before stop — readiness fails, listeners keep accepting for
//!   `drain_delay`, connections are told to go elsewhere.
//! - [`cluster`]: cluster mode on etcd (SPEC §12) — publication, the watch into the change
//!   gate, leader election with fenced writes, fleet windows, the fleet audit chain.
//! - [`flags`]: flagd flag definitions compiled for in-process evaluation (JsonLogic and
//!   flagd's custom operators), SDK-less flag headers, and the OFREP core. Pure.
//! - [`flagsvc`]: flags served to SDKs — OFREP over HTTP with its SSE change push, flagd
//!   gRPC (evaluation and sync), and the API keys they may require.

pub mod admin;
pub mod bucket;
pub mod change;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod flags;
pub mod flagsvc;
pub mod instance;
pub mod proxy;
pub mod request_match;
pub mod rollout;
pub mod shutdown;
pub mod snapshot;
pub mod telemetry;
