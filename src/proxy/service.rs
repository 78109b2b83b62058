//! The per-request path: route, split, rewrite headers, forward, account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::Shared;
use super::body::{DownBody, UpBody};
use super::error::ProxyError;
use super::flags::{self, RequestFacts};
use super::headers::{
    self, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, X_SLUICE_ROUTE, X_SLUICE_VARIANT,
};
use super::pool::{self, SendError};
use super::split::{self, Side};
use crate::snapshot::routes::strip_port;
use crate::snapshot::{RolloutRt, Snapshot, Target, Upstream, VariantMetrics};

/// What the service knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Index of the listener in `sluice.yaml`.
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

static VIA: HeaderValue = HeaderValue::from_static("1.1 sluice");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Handles one request; never fails (errors become sluice's own responses).
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<DownBody> {
    let start = Instant::now();
    let Some(snap) = shared.snapshot.load_full() else {
        return ProxyError::NoConfig.response();
    };
    proxy(&shared, &snap, conn, req, start).await
}

async fn proxy(
    shared: &Shared,
    snap: &Snapshot,
    conn: ConnInfo,
    mut req: Request<Incoming>,
    start: Instant,
) -> Response<DownBody> {
    headers::remove_sluice_headers(req.headers_mut());

    // One canonical authority: an absolute URI's wins over Host (RFC 9112 §3.2.2).
    let authority: Option<HeaderValue> = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let host = authority
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .unwrap_or("");
    let path = headers::remove_dot_segments(req.uri().path());

    let Some(route) = snap
        .routes
        .find(conn.listener, host, &path, req.method(), req.headers())
    else {
        return ProxyError::NoRoute.response();
    };
    if let Target::Ofrep { metrics } = &route.target {
        let resp = crate::admin::ofrep::serve(Some(&snap.flags), &shared.ofrep_cors, req)
            .await
            .map(DownBody::full);
        let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
        metrics.requests[class].increment(1);
        metrics.duration.record(start.elapsed().as_secs_f64());
        return resp;
    }

    // Split before flags: a sticky key drawn here also serves `flag_context` (SPEC §3).
    let split = match &route.target {
        Target::Rollout { rollout, .. } => {
            let ro = &snap.rollouts[*rollout];
            Some((ro, split::decide(ro, req.headers())))
        }
        _ => None,
    };
    let evaluated = flags::evaluate(
        &snap.flags,
        route,
        &RequestFacts {
            headers: req.headers(),
            method: req.method(),
            host,
            path: &path,
            client_ip: conn.peer.ip(),
            drawn: split
                .as_ref()
                .and_then(|(ro, d)| flags::drawn_cookie(ro, d)),
        },
    );
    let (upstream, metrics, drawn, rollout): (
        &Arc<Upstream>,
        &VariantMetrics,
        _,
        Option<&RolloutRt>,
    ) = match (&route.target, split) {
        (Target::Upstream { upstream, metrics }, _) => {
            (&snap.upstreams[*upstream], metrics, None, None)
        }
        (Target::Rollout { stable, canary, .. }, Some((ro, d))) => match d.side {
            Side::Stable => (&snap.upstreams[ro.stable], stable, d.drawn, Some(ro)),
            Side::Canary => (&snap.upstreams[ro.canary], canary, d.drawn, Some(ro)),
        },
        (Target::Flag(t), _) => {
            let arm = t.pick(evaluated.as_ref());
            (&snap.upstreams[arm.upstream], &arm.metrics, None, None)
        }
        // Served above (OFREP) or impossible (a rollout is always split).
        (Target::Ofrep { .. } | Target::Rollout { .. }, _) => {
            return ProxyError::NoRoute.response();
        }
    };

    // Rewrite the request in place.
    let new_uri = if req.uri().authority().is_some() || matches!(path, std::borrow::Cow::Owned(_)) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        PathAndQuery::try_from(pq).ok().map(Uri::from)
    } else {
        None
    };
    if let Some(u) = new_uri {
        *req.uri_mut() = u;
    }
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    // Room for the headers added below, so the map grows at most once.
    h.reserve(8);
    headers::remove_hop_by_hop(h);
    headers::append_forwarded_for(h, conn.peer.ip());
    h.insert(
        X_FORWARDED_PROTO.clone(),
        if conn.tls {
            HTTPS.clone()
        } else {
            HTTP.clone()
        },
    );
    if let Some(a) = authority {
        h.insert(X_FORWARDED_HOST.clone(), a.clone());
        h.insert(header::HOST, a);
    }
    h.insert(header::VIA, VIA.clone());
    if !h.contains_key(&X_REQUEST_ID) {
        h.insert(X_REQUEST_ID.clone(), headers::new_request_id());
    }
    h.insert(X_SLUICE_ROUTE.clone(), route.name_header.clone());
    h.insert(X_SLUICE_VARIANT.clone(), metrics.variant_header.clone());
    // By value: the evaluation is not kept in the future's state across the await below.
    flags::inject(route, evaluated, h);

    let req = req.map(UpBody::Stream);
    let result = forward(upstream, req).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    if let (Some(id), Some(ro)) = (drawn, rollout)
        && ro.set_cookie
        && let Some(cookie) = &ro.sticky_cookie
    {
        let secure = if conn.tls { "; Secure" } else { "" };
        let v = format!(
            "{cookie}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            id.as_str(),
            ro.cookie_max_age
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    metrics.requests[class].increment(1);
    metrics.duration.record(start.elapsed().as_secs_f64());
    resp
}

async fn forward(up: &Upstream, req: Request<UpBody>) -> Result<Response<DownBody>, ProxyError> {
    let Some(ep) = up.pick() else {
        return Err(ProxyError::NoHealthyEndpoint);
    };
    match tokio::time::timeout(up.request_timeout, pool::send(ep, up.connect_timeout, req)).await {
        Err(_) => {
            up.errors.timeout.increment(1);
            Err(ProxyError::UpstreamTimeout)
        }
        Ok(Err(SendError::Connect)) => {
            up.errors.connect.increment(1);
            Err(ProxyError::UpstreamConnect)
        }
        Ok(Err(SendError::Reset)) => {
            up.errors.reset.increment(1);
            Err(ProxyError::UpstreamReset)
        }
        Ok(Ok((resp, returner))) => {
            let (mut parts, body) = resp.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                DownBody::Upstream(body, Some(returner)),
            ))
        }
    }
}
