//! The admin listener: health, readiness, metrics, OFREP, and the authenticated `/api/v1`.

pub mod auth;
pub mod changes;
pub mod rollouts;

pub use changes::{MAX_DOCUMENT_BYTES, outcome_response};

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::change::gate::GateHandle;
use crate::flagsvc::ofrep;
use crate::flagsvc::sse::EventStream;
use crate::proxy::Shared;
use crate::rollout::Runner;
use crate::telemetry::Registry;

/// What the admin handlers need.
pub struct AdminCtx {
    /// The data plane's shared state (readiness).
    pub shared: Arc<Shared>,
    /// The change gate.
    pub gate: GateHandle,
    /// Metrics.
    pub registry: Registry,
    /// The bearer token.
    pub token: String,
    /// Extra Host values accepted on `/api/v1`.
    pub allowed_hosts: Vec<String>,
    /// The rollout runner (status and actions).
    pub rollouts: Arc<Runner>,
    /// The fleet, in cluster mode (SPEC §12).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// An admin response.
pub type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
pub fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON error: `{"error": code, "detail": sentence}`.
pub fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Resp {
    json_resp(status, &json!({ "error": code, "detail": detail.into() }))
}

/// An admin response body: complete, or an OFREP event stream.
pub type AdminBody = Either<Full<Bytes>, EventStream>;

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics(registry: &Registry) -> Resp {
    let mut r = text(StatusCode::OK, registry.exposition());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The metrics listener (`metrics.bind`): `/metrics` and `/healthz`, nothing else, so that
/// a Prometheus outside the pod never needs the admin API's port.
pub async fn handle_metrics_only(
    registry: Registry,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&registry),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (_, p) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the metrics listener serves /metrics and /healthz only, not {p}"),
        ),
    })
}

/// Handles one admin request.
pub async fn handle(
    ctx: Arc<AdminCtx>,
    req: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    let path = req.uri().path().to_string();
    let r = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if ctx.shared.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if ctx.shared.snapshot.load().is_some() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no configuration is active\n",
                )
            }
        }
        (&Method::GET, "/metrics") => metrics(&ctx.registry),
        (_, p) if p.starts_with("/ofrep/") => {
            // No admin token (SPEC §8): flag values are what applications read anyway;
            // `ofrep.api_keys_file` may require an API key.
            let snap = ctx.shared.snapshot.load_full();
            let flags = snap.as_deref().map(|s| &s.flags);
            return Ok(
                match ofrep::serve(flags, &ctx.shared.flag_services, req).await {
                    ofrep::Reply::Done(r) => r.map(|b| Either::Left(Full::new(b))),
                    ofrep::Reply::Events(r) => r.map(Either::Right),
                },
            );
        }
        (_, p) if p.starts_with("/api/v1/") => {
            match auth::check(&req, &ctx.token, &ctx.allowed_hosts) {
                Err(denied) => denied.response(),
                Ok(()) => api(ctx, req, &path).await,
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {path}"),
        ),
    };
    Ok(r.map(Either::Left))
}

async fn api(ctx: Arc<AdminCtx>, req: Request<Incoming>, path: &str) -> Resp {
    if req.method() == Method::GET && path == "/api/v1/status" {
        let (gate, runner, cluster) = (ctx.gate.clone(), ctx.rollouts.clone(), ctx.cluster.clone());
        let status = move || {
            // The gate and the runner are locked one after the other, never nested.
            let mut v = {
                let mut g = gate.lock();
                g.tick();
                g.status_json()
            };
            v["rollouts"] = runner.status_json();
            if let Some(c) = &cluster {
                let f = c.status_json();
                v["cluster"] = serde_json::json!({
                    "node_id": f["node_id"], "connected": f["connected"], "leading": f["leading"],
                    "leader": f["leader"], "role": f["role"], "last_error": f["last_error"],
                });
            }
            v
        };
        return match tokio::task::spawn_blocking(status).await {
            Ok(v) => json_resp(StatusCode::OK, &v),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        };
    }
    if req.method() == Method::GET && path == "/api/v1/cluster" {
        return match &ctx.cluster {
            Some(c) => json_resp(StatusCode::OK, &c.status_json()),
            None => error(
                StatusCode::NOT_FOUND,
                "not_clustered",
                "this node runs alone: sluice.yaml has no `cluster` section",
            ),
        };
    }
    if path.starts_with(rollouts::PREFIX) {
        return rollouts::action(ctx, req, path).await;
    }
    let req = match changes::handle(&ctx, req, path).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no admin endpoint {} {path}", req.method()),
    )
}
