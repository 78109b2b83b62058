//! flagd's gRPC services on `flags.grpc.bind` (SPEC §4), so that flagd's own providers read
//! sluice's flags:
//!
//! - `flagd.evaluation.v1.Service` (the protos in `proto/`) and `flagd.evaluation.v2.Service`
//!   (what current RPC-mode providers call): `Resolve*` (v1 also `ResolveAll`) and
//!   `EventStream` (`provider_ready`, then `configuration_change` naming the flags an
//!   activation changed) — [`evaluation`];
//! - `flagd.sync.v1.FlagSyncService` for in-process providers: `SyncFlags` (the flagd file
//!   now, and again after every change), `FetchAllFlags`, `GetMetadata` — [`sync`].
//!
//! Evaluation is the one the proxy and OFREP use, on the same snapshot. Errors map to gRPC
//! codes as flagd maps them: `FLAG_NOT_FOUND` → NOT_FOUND, `TYPE_MISMATCH` and
//! `INVALID_CONTEXT` → INVALID_ARGUMENT, `PARSE_ERROR` → DATA_LOSS, anything else → UNKNOWN;
//! nothing active → UNAVAILABLE. With `ofrep.api_keys_file`, every call needs a key in
//! the `authorization: Bearer <key>` or `x-api-key` metadata: UNAUTHENTICATED without.
//!
//! The listener is HTTP/2 (h2c, or TLS with `flags.grpc.tls`), served on a thread of its own.

mod evaluation;
mod server;
mod sync;
mod value;

pub use server::{GrpcServer, bind};

/// Code generated from `proto/` by `build.rs`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// `flagd.evaluation.v1`.
    pub mod evaluation_v1 {
        tonic::include_proto!("flagd.evaluation.v1");
    }
    /// `flagd.evaluation.v2`.
    pub mod evaluation_v2 {
        tonic::include_proto!("flagd.evaluation.v2");
    }
    /// `flagd.sync.v1`.
    pub mod sync_v1 {
        tonic::include_proto!("flagd.sync.v1");
    }
}
