//! The change endpoints of `/api/v1` (SPEC §8): push a document, attach an approval,
//! revert, status, audit. Each hands its input to the change gate and maps the gate's
//! [`Outcome`] to a status code: 200 activated / no-op / reverted / reviewed, 202 pending,
//! 400 not a document or not a JWS, 403 an invalid token or a policy refusal, 409 at or
//! below the high-water mark or equivocation. Errors are `{"error": code, "detail": ...}`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{AdminCtx, Resp, error, json_resp};
use crate::change::gate::{Gate, GateHandle, Outcome, Source};
use crate::change::reason::{Reason, Refusal};
use crate::change::token::MAX_TOKEN_BYTES;
use crate::config::traffic::ChangeClass;

pub use crate::change::inputs::MAX_DOCUMENT_BYTES;

/// The header that carries approval tokens, one token per header.
pub const APPROVAL_HEADER: &str = "sluice-approval";

/// Largest body of `POST /api/v1/approvals` and `POST /api/v1/revert` read at all; a token
/// above 8 KiB is refused as `token_too_large` either way.
const MAX_SMALL_BODY: usize = 64 * 1024;

/// Handles the change endpoints; gives the request back when `path` is not one of them.
pub async fn handle(
    ctx: &Arc<AdminCtx>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Resp, Request<Incoming>> {
    let gate = ctx.gate.clone();
    let r = match (req.method().clone(), path) {
        (Method::GET, "/api/v1/audit") => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            blocking(gate, move |g| match g.audit().read_since(since) {
                Ok(lines) => json_resp(StatusCode::OK, &json!({ "entries": lines })),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "audit_unreadable",
                    e.to_string(),
                ),
            })
            .await
        }
        (Method::PUT, "/api/v1/traffic") => {
            let tokens = match approval_headers(req.headers()) {
                Ok(t) => t,
                Err(r) => return Ok(refusal(r.reason, r.detail)),
            };
            let body = match read_body(req, MAX_DOCUMENT_BYTES).await {
                Ok(b) => b,
                Err(detail) => {
                    return Ok(refusal(Reason::InvalidDocument, detail));
                }
            };
            if let Some(c) = &ctx.cluster {
                return Ok(answer(c.push(body.to_vec(), tokens).await));
            }
            // Parsed and resolved before the gate's lock is taken.
            let submit =
                move || outcome_response(&gate.submit(body.to_vec(), Source::Push, &tokens));
            match tokio::task::spawn_blocking(submit).await {
                Ok(r) => r,
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
            }
        }
        (Method::POST, "/api/v1/approvals") => {
            let body = match read_body(req, MAX_SMALL_BODY).await {
                Ok(b) => b,
                Err(detail) => return Ok(refusal(Reason::TokenTooLarge, detail)),
            };
            let token = match std::str::from_utf8(&body) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    return Ok(refusal(
                        Reason::MalformedToken,
                        "the body must be one token (JWS compact, UTF-8)",
                    ));
                }
            };
            if let Some(c) = &ctx.cluster {
                return Ok(answer(c.approve(token).await));
            }
            blocking(gate, move |g| outcome_response(&g.approve(&token))).await
        }
        (Method::POST, "/api/v1/revert") => {
            let tokens = match approval_headers(req.headers()) {
                Ok(t) => t,
                Err(r) => return Ok(refusal(r.reason, r.detail)),
            };
            let [token] = tokens.as_slice() else {
                return Ok(refusal(
                    Reason::MalformedToken,
                    format!(
                        "a revert needs exactly one `Sluice-Approval` header with a revert token; got {}",
                        tokens.len()
                    ),
                ));
            };
            let token = token.clone();
            let body = match read_body(req, MAX_SMALL_BODY).await {
                Ok(b) => b,
                Err(detail) => {
                    return Ok(error(StatusCode::BAD_REQUEST, "invalid_request", detail));
                }
            };
            let version = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
            let Some(version) = version else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body must be JSON `{\"version\": N}` with N a non-negative integer",
                ));
            };
            if let Some(c) = &ctx.cluster {
                return Ok(answer(c.revert(version, token).await));
            }
            blocking(gate, move |g| outcome_response(&g.revert(version, &token))).await
        }
        _ => return Err(req),
    };
    Ok(r)
}

/// Runs `f` on the gate off the async runtime (the gate fsyncs).
async fn blocking(gate: GateHandle, f: impl FnOnce(&mut Gate) -> Resp + Send + 'static) -> Resp {
    let run = move || f(&mut gate.lock());
    match tokio::task::spawn_blocking(run).await {
        Ok(r) => r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, String> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("cannot read the body (at most {limit} bytes): {e}"))
}

/// Every `Sluice-Approval` header, one token each (a comma-joined value is split: a JWS has
/// no commas).
fn approval_headers(h: &HeaderMap) -> Result<Vec<String>, Refusal> {
    let mut out = Vec::new();
    for v in h.get_all(APPROVAL_HEADER) {
        let Ok(s) = v.to_str() else {
            return Err(Reason::MalformedToken
                .because("a Sluice-Approval header is not ASCII text, so it is not a JWS"));
        };
        out.extend(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    if let Some(t) = out.iter().find(|t| t.len() > MAX_TOKEN_BYTES) {
        return Err(Reason::TokenTooLarge.because(format!(
            "a token is {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
            t.len()
        )));
    }
    Ok(out)
}

fn refusal(reason: Reason, detail: impl Into<String>) -> Resp {
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    error(status, reason.as_str(), detail)
}

fn class_str(c: ChangeClass) -> &'static str {
    crate::change::classify::class_name(c)
}

/// A cluster-mode answer (SPEC §12) as a response: this node's judgement, a token refused
/// before publication, or why the fleet could not take the request.
fn answer(a: crate::cluster::requests::Answer) -> Resp {
    use crate::cluster::requests::Answer;
    match a {
        Answer::Judged(o) => outcome_response(&o),
        Answer::Refused(r) => refusal(r.reason, r.detail),
        Answer::Fleet(f) => error(
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            f.code,
            f.detail,
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
            &json!({ "result": "activated", "version": version, "digest": digest, "class": class_str(*class) }),
        ),
        Outcome::Pending {
            version,
            digest,
            class,
            missing,
        } => json_resp(
            StatusCode::ACCEPTED,
            &json!({ "result": "pending", "version": version, "digest": digest, "class": class_str(*class), "missing": missing }),
        ),
        Outcome::Reverted { version, digest } => json_resp(
            StatusCode::OK,
            &json!({ "result": "reverted", "version": version, "digest": digest }),
        ),
        Outcome::Reviewed { version, digest } => json_resp(
            StatusCode::OK,
            &json!({ "result": "reviewed", "version": version, "digest": digest }),
        ),
        Outcome::ReviewPending {
            version,
            digest,
            missing,
        } => json_resp(
            StatusCode::ACCEPTED,
            &json!({ "result": "review_pending", "version": version, "digest": digest, "missing": missing }),
        ),
        Outcome::NoOp { detail } => json_resp(
            StatusCode::OK,
            &json!({ "result": "no_op", "detail": detail }),
        ),
        Outcome::Rejected(r) => error(
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.reason.as_str(),
            r.detail.clone(),
        ),
    }
}
