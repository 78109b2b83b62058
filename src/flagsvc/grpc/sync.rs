//! `flagd.sync.v1.FlagSyncService` for in-process providers: the active flags as a flagd
//! file (`flags`, `$evaluators`, `metadata`), now and after every change. sluice serves one
//! flag set: a selector (the `flagd-selector` metadata, or the deprecated request field)
//! must be empty or name the set's `flagSetId`; any other is NOT_FOUND, not silently the
//! whole set.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::pb::sync_v1 as pb;
use super::value::json_to_struct;
use crate::proxy::Shared;

/// The sync service.
#[derive(Debug, Clone)]
pub(crate) struct Sync {
    shared: Arc<Shared>,
}

// === impl Sync ===

impl Sync {
    pub(crate) fn new(shared: Arc<Shared>) -> Sync {
        Sync { shared }
    }

    /// Refuses a selector that does not name the one flag set sluice serves.
    fn check_selector<T>(&self, req: &Request<T>, field: &str) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("flagd-selector")
            .and_then(|v| v.to_str().ok());
        let selector = header.unwrap_or(field).trim();
        if selector.is_empty() {
            return Ok(());
        }
        let snap = self.shared.snapshot.load_full();
        let set_id = snap.as_ref().and_then(|s| {
            s.flags
                .set
                .metadata()
                .get("flagSetId")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
        if set_id.as_deref() == Some(selector) {
            return Ok(());
        }
        Err(Status::not_found(format!(
            "unknown selector `{selector}`: sluice serves one flag set{}",
            set_id.map_or(String::new(), |id| format!(" (flagSetId `{id}`)"))
        )))
    }

    /// The flagd file now served.
    fn configuration(&self) -> Result<(String, prost_types::Struct), Status> {
        let snap = self
            .shared
            .snapshot
            .load_full()
            .ok_or_else(|| Status::unavailable("no configuration is active"))?;
        Ok((
            snap.flags.flagd_json.to_string(),
            json_to_struct(snap.flags.set.metadata()),
        ))
    }
}

#[tonic::async_trait]
impl pb::flag_sync_service_server::FlagSyncService for Sync {
    type SyncFlagsStream =
        Pin<Box<dyn Stream<Item = Result<pb::SyncFlagsResponse, Status>> + Send>>;

    async fn sync_flags(
        &self,
        req: Request<pb::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        #[allow(deprecated)]
        let field = req.get_ref().selector.clone();
        self.check_selector(&req, &field)?;
        let me = self.clone();
        // The current configuration first (as soon as there is one), then each change.
        let s = WatchStream::new(self.shared.flag_services.feed.subscribe()).filter_map(move |c| {
            c?;
            let (flag_configuration, metadata) = me.configuration().ok()?;
            Some(Ok(pb::SyncFlagsResponse {
                flag_configuration,
                sync_context: Some(metadata),
            }))
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn fetch_all_flags(
        &self,
        req: Request<pb::FetchAllFlagsRequest>,
    ) -> Result<Response<pb::FetchAllFlagsResponse>, Status> {
        #[allow(deprecated)]
        let field = req.get_ref().selector.clone();
        self.check_selector(&req, &field)?;
        let (flag_configuration, _) = self.configuration()?;
        Ok(Response::new(pb::FetchAllFlagsResponse {
            flag_configuration,
        }))
    }

    #[allow(deprecated)]
    async fn get_metadata(
        &self,
        _req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let (_, metadata) = self.configuration()?;
        Ok(Response::new(pb::GetMetadataResponse {
            metadata: Some(metadata),
        }))
    }
}
