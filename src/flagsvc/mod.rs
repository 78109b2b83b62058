//! Flags served to SDKs (SPEC §4), the same approved flags the proxy injects:
//!
//! - [`ofrep`]: OFREP over HTTP (single and bulk evaluation, CORS), on the admin listener and
//!   on `builtin: ofrep` routes; the bulk response announces the event stream;
//! - [`sse`]: that event stream (OFREP ADR 0008): `refetchEvaluation` after every activation
//!   that changes a flag;
//! - [`grpc`]: flagd's gRPC services on `flags.grpc.bind` — evaluation (RPC-mode providers)
//!   and sync (in-process providers);
//! - [`feed`]: which activation changed which flags, for both kinds of stream;
//! - [`keys`]: `ofrep.api_keys_file`, required by all three when set.

pub mod feed;
pub mod grpc;
pub mod keys;
pub mod ofrep;
pub mod sse;

use std::sync::Arc;

pub use feed::{Feed, FlagChange};
pub use keys::ApiKeys;
pub use ofrep::Cors;
pub use sse::Hub;

/// What serving flags to SDKs shares across listeners.
#[derive(Debug)]
pub struct FlagServices {
    /// Origins allowed to call OFREP from browsers (`ofrep.cors_origins`).
    pub cors: Cors,
    /// API keys (`ofrep.api_keys_file`).
    pub keys: Arc<ApiKeys>,
    /// Flag changes.
    pub feed: Arc<Feed>,
    /// Open event streams.
    pub events: Hub,
}

// === impl FlagServices ===

impl FlagServices {
    /// Services with `cors` and `keys`, at most `max_streams` event streams heartbeating
    /// every `heartbeat`.
    pub fn new(
        cors: Cors,
        keys: ApiKeys,
        max_streams: usize,
        heartbeat: std::time::Duration,
    ) -> FlagServices {
        let feed = Arc::new(Feed::default());
        FlagServices {
            cors,
            keys: Arc::new(keys),
            events: Hub::new(feed.clone(), max_streams, heartbeat),
            feed,
        }
    }

    /// No keys, no CORS, defaults (tests and benchmarks).
    pub fn open() -> FlagServices {
        FlagServices::new(
            Cors::default(),
            ApiKeys::open(),
            10_000,
            std::time::Duration::from_secs(15),
        )
    }
}
