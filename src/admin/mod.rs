//! The admin listener: health, readiness, metrics, OFREP, and the authenticated `/api/v1`.

pub mod auth;
pub mod ofrep;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::change::gate::{Gate, Outcome, Source};
use crate::proxy::Shared;
use crate::telemetry::Registry;

/// Largest document accepted by `PUT /api/v1/traffic`.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// What the admin handlers need.
pub struct AdminCtx {
    /// The data plane's shared state (readiness).
    pub shared: Arc<Shared>,
    /// The change gate.
    pub gate: Arc<Mutex<Gate>>,
    /// Metrics.
    pub registry: Registry,
    /// The bearer token.
    pub token: String,
    /// Extra Host values accepted on `/api/v1`.
    pub allowed_hosts: Vec<String>,
}

type Resp = Response<Full<Bytes>>;

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

fn lock(gate: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handles one admin request.
pub async fn handle(ctx: Arc<AdminCtx>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let r = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if ctx.shared.snapshot.load().is_some() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no configuration is active\n",
                )
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, ctx.registry.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (_, p) if p.starts_with("/ofrep/") => {
            // Unauthenticated (SPEC §8): flag values are what applications read anyway.
            let snap = ctx.shared.snapshot.load_full();
            ofrep::serve(
                snap.as_deref().map(|s| &s.flags),
                &ctx.shared.ofrep_cors,
                req,
            )
            .await
            .map(Full::new)
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
    Ok(r)
}

async fn api(ctx: Arc<AdminCtx>, req: Request<Incoming>, path: &str) -> Resp {
    match (req.method().clone(), path) {
        (Method::GET, "/api/v1/status") => {
            let gate = ctx.gate.clone();
            match tokio::task::spawn_blocking(move || lock(&gate).status_json()).await {
                Ok(v) => json_resp(StatusCode::OK, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
            }
        }
        (Method::GET, "/api/v1/audit") => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let gate = ctx.gate.clone();
            match tokio::task::spawn_blocking(move || lock(&gate).audit().read_since(since)).await {
                Ok(Ok(lines)) => json_resp(StatusCode::OK, &json!({ "entries": lines })),
                Ok(Err(e)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "audit_unreadable",
                    e.to_string(),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
            }
        }
        (Method::PUT, "/api/v1/traffic") => {
            let body = match Limited::new(req.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_document",
                        format!("cannot read the body: {e}"),
                    );
                }
            };
            let gate = ctx.gate.clone();
            match tokio::task::spawn_blocking(move || lock(&gate).submit(&body, Source::Push)).await
            {
                Ok(o) => outcome_response(&o),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {} {path}", req.method()),
        ),
    }
}

/// Maps a gate outcome to the admin API's status codes (SPEC §8).
pub fn outcome_response(o: &Outcome) -> Resp {
    match o {
        Outcome::Activated {
            version,
            digest,
            class,
        } => json_resp(
            StatusCode::OK,
            &json!({ "result": "activated", "version": version, "digest": digest, "class": class }),
        ),
        Outcome::NoOp { detail } => json_resp(
            StatusCode::OK,
            &json!({ "result": "no_op", "detail": detail }),
        ),
        Outcome::Rejected(r) => error(
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::FORBIDDEN),
            r.reason,
            r.detail.clone(),
        ),
    }
}
