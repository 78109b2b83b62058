//! `POST /api/v1/rollouts/{name}/{promote,promote_full,pause,resume,abort}` (SPEC §6, §8). The bearer
//! token was checked by the caller; the runner checks the `promote` approval token.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::{AdminCtx, Resp, error, json_resp};
use crate::rollout::runner::Action;

/// The path prefix of rollout actions.
pub const PREFIX: &str = "/api/v1/rollouts/";

/// The approval token header (one per request for a promote).
const APPROVAL: &str = "sluice-approval";

/// Handles one rollout action request.
pub async fn action(ctx: Arc<AdminCtx>, req: Request<Incoming>, path: &str) -> Resp {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) if !n.is_empty() && !a.contains('/') => (n.to_string(), a),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no admin endpoint {path}; use {PREFIX}{{name}}/{{promote,promote_full,pause,resume,abort}}"
                ),
            );
        }
    };
    let Some(action) = Action::parse(action) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "`{action}` is not a rollout action; use promote, promote_full, pause, resume or abort"
            ),
        );
    };
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("rollout actions are POST, not {}", req.method()),
        );
    }
    let mut approvals = req.headers().get_all(APPROVAL).iter();
    let approval = match (approvals.next(), approvals.next()) {
        (None, _) => None,
        (Some(v), None) => match v.to_str() {
            Ok(s) => Some(s.trim().to_string()),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed_token",
                    "the Sluice-Approval header is not ASCII text",
                );
            }
        },
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_token",
                "a rollout action takes one Sluice-Approval header",
            );
        }
    };
    if let Some(c) = &ctx.cluster {
        // In a fleet only the leader acts; a follower forwards through etcd.
        match c.forward_action(&name, action, approval.clone()).await {
            Ok(Some((status, body))) => {
                return json_resp(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &body,
                );
            }
            Ok(None) => {}
            Err(f) => {
                return error(
                    StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    f.code,
                    f.detail,
                );
            }
        }
    }
    let runner = ctx.rollouts.clone();
    let done =
        tokio::task::spawn_blocking(move || runner.act(&name, action, approval.as_deref())).await;
    match done {
        Ok(Ok(status)) => json_resp(StatusCode::OK, &status),
        Ok(Err(r)) => error(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN),
            r.code,
            r.detail,
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
