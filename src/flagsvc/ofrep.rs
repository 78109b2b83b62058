//! OFREP over HTTP (SPEC §4): `POST /ofrep/v1/evaluate/flags/{key}`,
//! `POST /ofrep/v1/evaluate/flags` (bulk, announcing the event stream in `eventStreams`)
//! and `GET /ofrep/v1/events` (the event stream, [`super::sse`]), with CORS for browser
//! clients and, with `ofrep.api_keys_file`, an API key ([`super::keys`]: 401 without).
//! Served on the admin listener (no admin token: SPEC §8) and by routes with
//! `to: { builtin: ofrep }`, both through [`serve`]; the shapes and status codes come from
//! [`crate::flags::ofrep`].
//!
//! On a route, the endpoint may sit below a prefix (`/flags/ofrep/v1/...`), so that a
//! provider's base URL can include a path. Errors that are not evaluations use OFREP's
//! general error shape `{"errorDetails": ...}`: 404 for another path, 405 for another
//! method, 413 for a body over [`MAX_BODY_BYTES`], 503 while no configuration is active.
//!
//! CORS (`ofrep.cors_origins`, exact origins or `*`): responses to an allowed `Origin`
//! carry `Access-Control-Allow-Origin` and expose `ETag` (browser providers poll the bulk
//! endpoint with `If-None-Match`); a preflight from an allowed origin gets 204 with the
//! allowed method and headers, from any other origin 403 without CORS headers. Credentials
//! are never allowed: an OFREP context travels in the body, not in cookies.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::FlagServices;
use super::keys::Denied;
use super::sse::EventStream;
use crate::flags::ofrep::{self, OfrepResponse};
use crate::proxy::flags::FlagRuntime;

/// Largest request body read (an evaluation context).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The path every OFREP evaluation endpoint starts with.
const BASE: &str = "/ofrep/v1/evaluate/flags";

/// The event stream's path (below the same prefix as the evaluations).
const EVENTS: &str = "/ofrep/v1/events";

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Headers a preflight allows when the browser asks for none in particular.
const DEFAULT_ALLOWED_HEADERS: &str =
    "content-type, if-none-match, authorization, x-api-key, last-event-id";

/// Origins allowed to call OFREP from browsers.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `*` was listed: any origin.
    any: bool,
    /// Exact origins (`https://shop.example.com`), compared as bytes.
    origins: Box<[HeaderValue]>,
}

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint<'p> {
    /// `.../ofrep/v1/evaluate/flags`.
    Bulk,
    /// `.../ofrep/v1/events`: the event stream (SSE).
    Events,
    /// `.../ofrep/v1/evaluate/flags/{key}`, the key percent-decoded.
    Single(Cow<'p, str>),
}

// === impl Cors ===

impl Cors {
    /// From `ofrep.cors_origins`; entries that cannot be header values are ignored
    /// (settings validation refuses them).
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
                .collect(),
        }
    }

    /// Whether no origin is allowed.
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            .then(|| origin.clone())
    }

    /// Adds the CORS headers of an actual (non-preflight) response.
    fn decorate(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        if self.is_empty() {
            return;
        }
        if !self.any {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(allow) = self.allow(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ETag"),
            );
        }
    }
}

/// What [`serve`] answers: a complete response, or an event stream.
#[derive(Debug)]
pub enum Reply {
    /// A complete response.
    Done(Response<Bytes>),
    /// `…/ofrep/v1/events`: a stream that lasts.
    Events(Response<EventStream>),
}

/// Serves one OFREP request; `flags` is `None` while nothing is active.
pub async fn serve(
    flags: Option<&FlagRuntime>,
    svc: &FlagServices,
    req: Request<Incoming>,
) -> Reply {
    let cors = &svc.cors;
    let origin = req.headers().get(header::ORIGIN).cloned();
    let path = req.uri().path().to_string();
    let Some(endpoint) = endpoint(&path) else {
        let detail = format!("no OFREP endpoint at {path}");
        let mut r = general(StatusCode::NOT_FOUND, &detail);
        cors.decorate(origin.as_ref(), r.headers_mut());
        return Reply::Done(r);
    };
    if req.method() == Method::OPTIONS {
        let methods = match endpoint {
            Endpoint::Events => "GET, OPTIONS",
            _ => "POST, OPTIONS",
        };
        return Reply::Done(preflight(cors, origin.as_ref(), req.headers(), methods));
    }
    let allowed = match (&endpoint, req.method()) {
        (Endpoint::Events, &Method::GET) => svc
            .keys
            .check_stream(query_param(req.uri(), "token"), req.headers()),
        (Endpoint::Events, _) => Ok(()),
        _ => svc.keys.check(req.headers()),
    };
    let reply = match (allowed, endpoint, req.method().clone()) {
        (Err(denied), _, _) => Reply::Done(unauthorized(&denied)),
        (Ok(()), Endpoint::Events, Method::GET) => events(flags, svc, &req),
        (Ok(()), Endpoint::Events, _) => Reply::Done(not_allowed("GET, OPTIONS")),
        (Ok(()), endpoint, Method::POST) => {
            let endpoint = match endpoint {
                Endpoint::Single(k) => Endpoint::Single(Cow::Owned(k.into_owned())),
                other => other,
            };
            let streams = match endpoint {
                Endpoint::Bulk => Some(event_streams(&path, svc, req.headers())),
                _ => None,
            };
            Reply::Done(evaluate(flags, endpoint, streams.as_ref(), req).await)
        }
        (Ok(()), _, _) => Reply::Done(not_allowed("POST, OPTIONS")),
    };
    match reply {
        Reply::Done(mut r) => {
            cors.decorate(origin.as_ref(), r.headers_mut());
            Reply::Done(r)
        }
        Reply::Events(mut r) => {
            cors.decorate(origin.as_ref(), r.headers_mut());
            Reply::Events(r)
        }
    }
}

/// Opens an event stream (ADR 0008).
fn events(flags: Option<&FlagRuntime>, svc: &FlagServices, req: &Request<Incoming>) -> Reply {
    if flags.is_none() {
        return Reply::Done(general(
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration is active",
        ));
    }
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    match svc.events.open(last) {
        Ok(stream) => {
            let mut r = Response::new(stream);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // nginx and friends: do not buffer a stream.
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Reply::Events(r)
        }
        Err(e) => {
            tracing::debug!(open = e.0, "Event stream refused: too many open.");
            let mut r = general(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Reply::Done(r)
        }
    }
}

/// The `eventStreams` of a bulk response on `path`: the event stream below the same
/// prefix, on the origin the provider already talks to; with keys, a stream token.
fn event_streams(path: &str, svc: &FlagServices, headers: &HeaderMap) -> Value {
    let prefix = path.find(BASE).map_or("", |at| &path[..at]);
    let mut uri = format!("{prefix}{EVENTS}");
    if let Some(t) = svc.keys.stream_token(headers) {
        uri.push_str("?token=");
        uri.push_str(&t);
    }
    json!([{ "type": "sse", "endpoint": { "requestUri": uri } }])
}

/// The value of query parameter `name` (not percent-decoded: tokens are hex).
fn query_param<'u>(uri: &'u http::Uri, name: &str) -> Option<&'u str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut r = general(
        StatusCode::METHOD_NOT_ALLOWED,
        "OFREP evaluations are POST requests; the event stream is GET",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 401 with OFREP's general error shape.
fn unauthorized(d: &Denied) -> Response<Bytes> {
    let mut r = general(StatusCode::UNAUTHORIZED, &d.to_string());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ofrep\""),
    );
    r
}

async fn evaluate(
    flags: Option<&FlagRuntime>,
    endpoint: Endpoint<'_>,
    event_streams: Option<&Value>,
    req: Request<Incoming>,
) -> Response<Bytes> {
    let Some(rt) = flags else {
        return general(
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration is active",
        );
    };
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return general(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            );
        }
        Err(e) => {
            return general(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let out = match endpoint {
        Endpoint::Single(key) => {
            ofrep::evaluate_flag_with(&rt.set, &key, &body, now, |id, res| rt.record(id, res))
        }
        Endpoint::Bulk | Endpoint::Events => {
            let inm = if_none_match.as_ref().and_then(|v| v.to_str().ok());
            ofrep::evaluate_bulk_with(&rt.set, &body, now, inm, event_streams, |id, res| {
                rt.record(id, res)
            })
        }
    };
    respond(out)
}

/// Answers a CORS preflight (or a plain `OPTIONS`).
fn preflight(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    req: &HeaderMap,
    methods: &'static str,
) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    if origin.is_none() {
        return r;
    }
    let Some(allow) = cors.allow(origin) else {
        let mut r = general(StatusCode::FORBIDDEN, "this origin may not call OFREP");
        if !cors.is_empty() && !cors.any {
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        return r;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    // Reflect what the browser asks for when it is a well-formed list of header names:
    // providers add their own (API keys, tracing) and OFREP defines no fixed set.
    let asked = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .map(str::trim)
                    .all(|n| HeaderName::from_bytes(n.as_bytes()).is_ok())
            })
        })
        .cloned();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS)),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    r
}

/// The endpoint `path` names: `BASE`, `BASE/{key}` or `EVENTS`, below any prefix.
fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    if path.ends_with(EVENTS) {
        return Some(Endpoint::Events);
    }
    let at = path.find(BASE)?;
    let rest = &path[at + BASE.len()..];
    if rest.is_empty() {
        return Some(Endpoint::Bulk);
    }
    let key = rest.strip_prefix('/')?;
    if key.is_empty() || key.contains('/') {
        return None;
    }
    Some(Endpoint::Single(percent_decode(key)))
}

/// Decodes `%XX` escapes (a flag key in a path); invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// An evaluation outcome as an HTTP response.
fn respond(out: OfrepResponse) -> Response<Bytes> {
    let empty = out.body.is_empty();
    let mut r = Response::new(Bytes::from(out.body));
    *r.status_mut() = StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if !empty {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(etag) = out.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, etag);
    }
    r
}

/// OFREP's general error: `{"errorDetails": ...}`.
fn general(status: StatusCode, detail: &str) -> Response<Bytes> {
    let body = serde_json::to_vec(&json!({ "errorDetails": detail })).unwrap_or_default();
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_below_any_prefix() {
        assert_eq!(endpoint("/ofrep/v1/evaluate/flags"), Some(Endpoint::Bulk));
        assert_eq!(
            endpoint("/ofrep/v1/evaluate/flags/new-checkout"),
            Some(Endpoint::Single("new-checkout".into()))
        );
        assert_eq!(
            endpoint("/flags/ofrep/v1/evaluate/flags/a%20b"),
            Some(Endpoint::Single("a b".into()))
        );
        assert_eq!(endpoint("/ofrep/v1/evaluate/flags/"), None);
        assert_eq!(endpoint("/ofrep/v1/evaluate/flags/a/b"), None);
        assert_eq!(endpoint("/ofrep/v1/evaluate/flagsx"), None);
        assert_eq!(endpoint("/ofrep/v2/evaluate/flags"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("a%2Fb%41"), "a/bA");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn cors_origins() {
        let c = Cors::new(&["https://shop.example.com/".into()]);
        let ok = HeaderValue::from_static("https://shop.example.com");
        let other = HeaderValue::from_static("https://evil.example.com");
        assert_eq!(c.allow(Some(&ok)), Some(ok.clone()));
        assert_eq!(c.allow(Some(&other)), None);
        assert_eq!(c.allow(None), None);
        let any = Cors::new(&["*".into()]);
        assert_eq!(any.allow(Some(&other)), Some(HeaderValue::from_static("*")));
        assert!(Cors::new(&[]).is_empty());
    }
}
