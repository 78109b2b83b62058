//! sluice: a feature-flag and progressive-delivery edge proxy.
//!
//! Two planes. The **data plane** serves requests from one immutable [`snapshot`] it loads
//! per request; the **control plane** (the change gate, the rollout runner, the admin API)
//! is the only writer, and publishes a new snapshot through the change gate.
//!
//! Modules, one line each (leaves first):
//! - [`clock`]: wall and monotonic time, injectable for tests.
//! - [`bucket`]: the one bucketing primitive (canonical CBOR → murmur3 → bucket).
//! - [`request_match`]: header, cookie and query conditions (exact, prefix, linear-time
//!   regex, present), compiled once; route `match`, `canary_match` and `preview_match`.
//! - [`telemetry`]: the table of metric families, the registry and `/metrics`, logging.
//! - [`shutdown`]: the stop signal every task holds, and the drain before it.
//! - [`flags`]: flagd flags compiled and evaluated in-process, flag headers, OFREP shapes.
//! - [`config`]: `sluice.yaml` and `traffic.yaml`: raw types → named checks → checked model.
//! - [`snapshot`]: a checked document compiled for the data plane, its publication, the
//!   load-balancing algorithms and endpoint addresses.
//! - [`proxy`]: the data plane — listeners, TLS, the per-request service, header hygiene,
//!   splitting, retries, upstream pools, health.
//! - [`flagsvc`]: flags served to SDKs — OFREP over HTTP (on the admin listener and
//!   `builtin: ofrep` routes) with its SSE change push, flagd gRPC (evaluation and sync),
//!   and the API keys they may require; it follows publications of the snapshot.
//! - [`outbound`]: plain-http requests of the control plane (notifications, rollout hooks,
//!   `web` metric providers).
//! - [`metric_check`]: `analysis.metrics` checks (Prometheus, web) compiled, judged and
//!   folded into a verdict; pure, shared by validation and the rollout runner.
//! - [`rollout`]: per-variant windows, the verdict, the rollout state machine and runner.
//! - [`change`]: the change gate — tokens, trust, classification, policy, anti-rollback,
//!   the audit log and the state directory.
//! - [`cluster`]: a fleet on etcd — publication, watch, leader election, fleet windows,
//!   the fleet audit chain; it feeds the same change gate and rollout runner.
//! - [`admin`]: the admin listener — health, readiness, metrics, the `/api/v1` endpoints.
//! - [`notify`]: notifications — audit events POSTed (signed, retried) through a bounded
//!   queue that never blocks.
//! - [`instance`]: a running sluice: binds, starts the planes, wires them, shuts down.
//! - [`cli`]: the `sluice` subcommands.
//!
//! Where to change what:
//! - a `traffic.yaml` field: `config/traffic/raw.rs`, its check in `validation.rs`, and
//!   `model.rs` if the data plane needs it resolved; then `snapshot` compiles it.
//! - a `sluice.yaml` field: `config/settings.rs`.
//! - a load-balancing algorithm: a file in `snapshot/balance/`.
//! - per-request behaviour: `proxy/service.rs` (phases in order), `proxy/headers.rs`.
//! - a flagd operator: `flags/custom.rs`, named in `flags/logic.rs`, checked in `flags/schema.rs`.
//! - how SDKs read flags (OFREP, SSE, flagd gRPC): `flagsvc/`.
//! - a refusal reason: `change/reason.rs`; an audit event: `change/audit/event.rs`.
//! - a metric family: `telemetry.rs` (one row of `FAMILIES`).
//! - a rollout rule or phase: `rollout/analysis.rs`, `rollout/controller.rs`.
//! - an admin endpoint: `admin/`; a subcommand: a file in `cli/`.
//!
//! Edges (checked by the tests in `src/edges.rs`): the control plane (`change`, `rollout`,
//! `cluster`, `config`, `flags`) never imports the data plane's `proxy`, `flagsvc` or the
//! `admin` listener; `proxy` and `flagsvc` never name `admin` or `change`; `flags` imports
//! nothing of the crate but `bucket`; `change/` has no import cycle.

#![forbid(unsafe_code)]

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
pub mod metric_check;
pub mod notify;
pub mod outbound;
pub mod proxy;
pub mod request_match;
pub mod rollout;
pub mod shutdown;
pub mod snapshot;
pub mod telemetry;

#[cfg(test)]
mod docs_check;
#[cfg(test)]
mod edges;
