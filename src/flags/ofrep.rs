//! OFREP (OpenFeature Remote Evaluation Protocol) core, as pure functions from request
//! bytes to `(status, body, ETag)`. The HTTP layer (routing, CORS, headers) lives with the
//! admin/proxy listeners; it calls:
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}` → [`evaluate_flag`] (`key` percent-decoded);
//! - `POST /ofrep/v1/evaluate/flags` → [`evaluate_bulk`] with the `If-None-Match` value;
//!   send `ETag` whenever [`OfrepResponse::etag`] is set, `Content-Type: application/json`
//!   whenever the body is not empty.
//!
//! Shapes follow `openapi.yaml` (0.3.0): success `{key, value?, variant, reason, metadata?}`
//! where `variant` is `null` when there is none (the Python client requires the member) and
//! `value` is omitted for a code default (ADR 0006: no default variant, or a disabled
//! flag); failures `{key, errorCode, errorDetails}` with 404 for `FLAG_NOT_FOUND` and 400
//! otherwise. A body that is not `{"context": {...}}` (an empty body counts as an empty
//! context) or whose `targetingKey` is not a string is `INVALID_CONTEXT`. A missing
//! targeting key is not an error: as in flagd, rules that need one (the `fractional`
//! shorthand) resolve to the default. The bulk response lists every flag, disabled ones
//! with reason `DISABLED` and no value; its `ETag` is a hash of the exact body bytes.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Context, ErrorCode, FlagId, FlagSet, Resolution};

/// A response for the HTTP layer to send as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfrepResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body; empty for `304 Not Modified`.
    pub body: Vec<u8>,
    /// Bulk only: the `ETag` header value (quoted).
    pub etag: Option<String>,
}

/// Why a request body was refused (always `INVALID_CONTEXT`, HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON.
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("request body must be an object: {{\"context\": {{...}}}}")]
    NotObject,
    /// `context` is not an object.
    #[error("`context` must be an object")]
    ContextNotObject,
    /// `targetingKey` is not a string.
    #[error("`context.targetingKey` must be a string")]
    TargetingKey,
}

/// Parses a request body into its context object.
pub fn parse_request(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let Value::Object(mut top) = v else {
        return Err(RequestError::NotObject);
    };
    let ctx = match top.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(RequestError::ContextNotObject),
    };
    if !matches!(
        ctx.get("targetingKey"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err(RequestError::TargetingKey);
    }
    Ok(ctx)
}

/// Single-flag evaluation.
pub fn evaluate_flag(set: &FlagSet, key: &str, body: &[u8], now_unix_secs: i64) -> OfrepResponse {
    evaluate_flag_with(set, key, body, now_unix_secs, |_, _| {})
}

/// Single-flag evaluation; `observe` sees the resolution when the flag exists (for
/// metrics: an unknown key is request data and must not become a label).
pub fn evaluate_flag_with<F>(
    set: &FlagSet,
    key: &str,
    body: &[u8],
    now_unix_secs: i64,
    mut observe: F,
) -> OfrepResponse
where
    F: FnMut(FlagId, &Resolution<'_>),
{
    let ctx_map = match parse_request(body) {
        Ok(m) => m,
        Err(e) => return error_response(400, Some(key), ErrorCode::InvalidContext, &e.to_string()),
    };
    let ctx = match Context::from_json(&ctx_map) {
        Ok(c) => c,
        Err(e) => return error_response(400, Some(key), ErrorCode::InvalidContext, &e.to_string()),
    };
    let res = match set.get(key) {
        Some(id) => {
            let res = set.evaluate(id, &ctx, now_unix_secs);
            observe(id, &res);
            res
        }
        None => set.evaluate_key(key, &ctx, now_unix_secs),
    };
    let status = match res.error_code {
        None => 200,
        Some(ErrorCode::FlagNotFound) => 404,
        Some(_) => 400,
    };
    OfrepResponse {
        status,
        body: to_bytes(&evaluation_json(key, &res)),
        etag: None,
    }
}

/// Bulk evaluation; `if_none_match` is the request's `If-None-Match` header, if any.
pub fn evaluate_bulk(
    set: &FlagSet,
    body: &[u8],
    now_unix_secs: i64,
    if_none_match: Option<&str>,
) -> OfrepResponse {
    evaluate_bulk_with(set, body, now_unix_secs, if_none_match, None, |_, _| {})
}

/// Bulk evaluation; `event_streams` is the ADR 0008 `eventStreams` array to announce, if
/// any; `observe` sees every flag's resolution (for metrics).
pub fn evaluate_bulk_with<F>(
    set: &FlagSet,
    body: &[u8],
    now_unix_secs: i64,
    if_none_match: Option<&str>,
    event_streams: Option<&Value>,
    mut observe: F,
) -> OfrepResponse
where
    F: FnMut(FlagId, &Resolution<'_>),
{
    let ctx_map = match parse_request(body) {
        Ok(m) => m,
        Err(e) => return error_response(400, None, ErrorCode::InvalidContext, &e.to_string()),
    };
    let ctx = match Context::from_json(&ctx_map) {
        Ok(c) => c,
        Err(e) => return error_response(400, None, ErrorCode::InvalidContext, &e.to_string()),
    };
    let flags: Vec<Value> = set
        .iter()
        .map(|(id, key)| {
            let res = set.evaluate(id, &ctx, now_unix_secs);
            observe(id, &res);
            evaluation_json(key, &res)
        })
        .collect();
    let mut top = Map::new();
    top.insert("flags".into(), Value::Array(flags));
    if !set.metadata().is_empty() {
        top.insert("metadata".into(), Value::Object(set.metadata().clone()));
    }
    if let Some(streams) = event_streams {
        top.insert("eventStreams".into(), streams.clone());
    }
    let body = to_bytes(&Value::Object(top));
    let etag = etag_of(&body);
    if if_none_match.is_some_and(|h| if_none_match_matches(h, &etag)) {
        return OfrepResponse {
            status: 304,
            body: Vec::new(),
            etag: Some(etag),
        };
    }
    OfrepResponse {
        status: 200,
        body,
        etag: Some(etag),
    }
}

/// One evaluation as OFREP JSON: the success shape, or the failure shape for errors.
pub fn evaluation_json(key: &str, res: &Resolution<'_>) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), Value::String(key.into()));
    if let Some(code) = res.error_code {
        m.insert("errorCode".into(), Value::String(code.as_str().into()));
        let details = res.error_message.as_deref().unwrap_or(code.as_str());
        m.insert("errorDetails".into(), Value::String(details.into()));
    } else {
        if let Some(v) = res.value {
            m.insert("value".into(), v.clone());
        }
        m.insert(
            "variant".into(),
            res.variant.map_or(Value::Null, |v| Value::String(v.into())),
        );
        m.insert("reason".into(), Value::String(res.reason.as_str().into()));
    }
    if !res.metadata.is_empty() {
        m.insert("metadata".into(), Value::Object(res.metadata.clone()));
    }
    Value::Object(m)
}

/// The strong `ETag` of a body: a quoted prefix of its SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// `If-None-Match` evaluation (RFC 9110 §13.1.2): `*`, or any listed tag equal to `etag`
/// under weak comparison.
pub fn if_none_match_matches(header: &str, etag: &str) -> bool {
    let want = etag.strip_prefix("W/").unwrap_or(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == want)
}

fn error_response(status: u16, key: Option<&str>, code: ErrorCode, details: &str) -> OfrepResponse {
    let mut m = Map::new();
    if let Some(k) = key {
        m.insert("key".into(), Value::String(k.into()));
    }
    m.insert("errorCode".into(), Value::String(code.as_str().into()));
    m.insert("errorDetails".into(), Value::String(details.into()));
    OfrepResponse {
        status,
        body: to_bytes(&Value::Object(m)),
        etag: None,
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail (keys are strings, numbers are finite).
    serde_json::to_vec(v).unwrap_or_default()
}
