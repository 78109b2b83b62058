//! The per-request path: route, split, rewrite headers, forward, account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::Shared;
use super::body::{BodyWatch, DownBody, UpBody};
use super::client::ClientCert;
use super::deadline::Deadline;
use super::error::ProxyError;
use super::flags::{self, RequestFacts};
use super::headers::{
    self, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, X_SLUICE_ERROR, X_SLUICE_ROUTE,
    X_SLUICE_VARIANT,
};
use super::pool::{self, SendError};
use super::retry::{self, RetryPolicy};
use super::split::{self, Side};
use super::trace::TraceCtx;
use super::{access_log, mirror, record, upgrade};
use crate::snapshot::routes::strip_port;
use crate::snapshot::{Endpoint, RolloutRt, Route, Snapshot, Target, Upstream, VariantMetrics};

/// What the service knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Index of the listener in `sluice.yaml`.
    pub listener: usize,
    /// The peer's address: the TCP peer, or the client a PROXY protocol header named.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate, on listeners with `tls.client_auth`.
    pub client_cert: Option<Arc<ClientCert>>,
}

static X_SLUICE_FLAGS: HeaderName = HeaderName::from_static("x-sluice-flags");
static VIA: HeaderValue = HeaderValue::from_static("1.1 sluice");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static CHUNKED: HeaderValue = HeaderValue::from_static("chunked");

static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// Handles one request; never fails (errors become sluice's own responses). `deadline`
/// bounds the upstream attempts by their `request_timeout`.
///
/// The request is kept once, in this future's state, and lent to the functions below: an
/// `async fn` keeps a by-value argument twice (as its argument and as the local it moves
/// to), so passing it down by value through three of them kept it up to six times in a
/// future that is moved, and boxed, for every request.
pub fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
    deadline: Deadline,
) -> impl Future<Output = Response<DownBody>> {
    let h1 = req.version() < Version::HTTP_2;
    let mut req = Some(req);
    async move {
        let mut resp = respond(&shared, &conn, &mut req, &deadline).await;
        // Draining (SIGTERM): an HTTP/1 keep-alive client learns from this response that the
        // connection ends here, and sends its next request elsewhere (HTTP/2 gets GOAWAY).
        if h1
            && shared.drain.is_draining()
            && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut().insert(header::CONNECTION, CLOSE.clone());
        }
        resp
    }
}

async fn respond(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: &mut Option<Request<Incoming>>,
    deadline: &Deadline,
) -> Response<DownBody> {
    let start = Instant::now();
    let exporter = shared.tracer.as_ref().and_then(|t| t.exporter.as_ref());
    // One call site for `proxy`: its future is most of this one's size, and a second
    // site would double it (the future is copied into place for every request).
    let logged = match req.as_ref() {
        Some(req) if shared.access_log.is_some() || exporter.is_some() => Some((
            std::time::SystemTime::now(),
            req.method().clone(),
            // Only the log shows the path (a span names its route).
            shared
                .access_log
                .is_some()
                .then(|| Box::<str>::from(headers::normalize_path(req.uri().path()))),
        )),
        _ => None,
    };
    let mut seen = Seen {
        wanted: logged.is_some(),
        log: shared.access_log.is_some(),
        ..Seen::default()
    };
    let snap = shared.snapshot.load_full();
    let resp = match &snap {
        None => ProxyError::NoConfig.response(),
        Some(snap) => proxy(shared, snap, conn, req, start, deadline, &mut seen).await,
    };
    let Some((started, method, path)) = logged else {
        return resp;
    };
    let error = resp
        .headers()
        .get(&X_SLUICE_ERROR)
        .and_then(|v| v.to_str().ok())
        .and_then(ProxyError::static_code);
    let status = resp.status().as_u16();
    let route_name = seen.route.map(|r| r.name.clone());
    let upstream_name = seen.upstream.map(|u| u.name.clone());
    // The span and the entry are finished (end, byte counts) when the body ends.
    let span = match (exporter, seen.trace) {
        (Some(_), Some(t)) if t.sampled => Some(crate::telemetry::otlp::SpanRecord {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent: t.parent,
            start_unix_nanos: record::unix_nanos(started),
            end_unix_nanos: 0,
            method: method.clone(),
            route: route_name.clone(),
            variant: seen.variant.clone(),
            upstream: upstream_name.clone(),
            status,
            flags: seen.flags.clone(),
            error,
        }),
        _ => None,
    };
    let entry = shared.access_log.as_ref().map(|_| access_log::Entry {
        start: started,
        route: route_name,
        variant: seen.variant,
        upstream: upstream_name,
        upstream_addr: resp.body().upstream_addr().or(seen.upstream_addr),
        status,
        duration: std::time::Duration::ZERO,
        bytes_in: 0,
        bytes_out: 0,
        complete: false,
        method,
        path: path.unwrap_or_default(),
        client: seen.client.unwrap_or(conn.peer.ip()),
        client_cert: conn.client_cert.clone(),
        flags: seen.flags,
        error,
        request_id: seen.request_id,
        trace_id: seen.trace.map(|t| t.trace_id),
        host: seen.host,
        tls: conn.tls,
    });
    if span.is_none() && entry.is_none() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let tail = record::Tail {
        shared: shared.clone(),
        start,
        started,
        entry,
        span,
        request_body: seen.request_body,
        bytes_out: 0,
    };
    Response::from_parts(
        parts,
        DownBody::Recorded(Box::new(record::Recorded::new(body, tail))),
    )
}

/// Answers a request refused before routing, counting the client's fault.
fn refuse(shared: &Shared, e: ProxyError) -> Response<DownBody> {
    if let Some(f) = e.client_fault() {
        shared.client_errors.of(f).increment(1);
    }
    e.response()
}

/// What the access log and the span want to know about a request, filled in as it is
/// routed.
#[derive(Default)]
struct Seen<'a> {
    /// The log or span export is on (else nothing is copied).
    wanted: bool,
    /// The log is on: what only the log shows (request id, host, client, byte counts) is
    /// copied too. A fresh request id's copy would cost the span an allocation.
    log: bool,
    route: Option<&'a Route>,
    upstream: Option<&'a Arc<Upstream>>,
    /// The endpoint tried last (the response's, or the one that failed).
    upstream_addr: Option<SocketAddr>,
    /// The request body's progress (its byte count).
    request_body: Option<Arc<BodyWatch>>,
    variant: Option<HeaderValue>,
    flags: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    host: Option<HeaderValue>,
    /// Set whenever tracing is on (logged or not): the span needs it.
    trace: Option<TraceCtx>,
    /// The client behind trusted proxies, once known.
    client: Option<std::net::IpAddr>,
}

async fn proxy<'s>(
    shared: &Arc<Shared>,
    snap: &'s Snapshot,
    conn: &ConnInfo,
    req: &mut Option<Request<Incoming>>,
    start: Instant,
    deadline: &Deadline,
    seen: &mut Seen<'s>,
) -> Response<DownBody> {
    // Always there: `handle` lends the request it was given, once.
    let Some(mut req) = req.take() else {
        return ProxyError::NoRoute.response();
    };
    headers::remove_sluice_headers(req.headers_mut());
    if let Err(e) = headers::check_request(&req) {
        return refuse(shared, e);
    }

    // One canonical authority: an absolute URI's wins over Host (RFC 9112 §3.2.2).
    let from_uri = req.uri().authority().is_some();
    let authority: Option<HeaderValue> = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let host = authority
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .unwrap_or("");
    let path = headers::normalize_path(req.uri().path());
    if headers::ambiguous_path(&path) {
        return refuse(shared, ProxyError::InvalidPath);
    }

    let from = crate::snapshot::routes::FromConn {
        listener: conn.listener,
        client_cert: conn.client_cert.as_deref(),
    };
    let Some(route) = snap.routes.find_for(
        from,
        host,
        &path,
        req.method(),
        req.headers(),
        req.uri().query(),
    ) else {
        return ProxyError::NoRoute.response();
    };
    if let Target::Ofrep { metrics } = &route.target {
        if seen.wanted {
            seen.route = Some(route);
        }
        // Boxed: OFREP's future is large and rare on a proxy route.
        let reply = Box::pin(crate::flagsvc::ofrep::serve(
            Some(&snap.flags),
            &shared.flag_services,
            req,
        ))
        .await;
        let resp = match reply {
            crate::flagsvc::ofrep::Reply::Done(r) => r.map(DownBody::full),
            crate::flagsvc::ofrep::Reply::Events(r) => r.map(DownBody::Events),
        };
        let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
        metrics.requests[class].increment(1);
        metrics.duration.record(start.elapsed().as_secs_f64());
        return resp;
    }

    // The client behind trusted proxies; the `X-Forwarded-For` sent upstream starts at it.
    // Without trusted proxies the client is the peer and the chain is appended to.
    let (client_ip, chain) = if shared.trusted_proxies.is_empty() {
        (conn.peer.ip(), None)
    } else {
        shared
            .trusted_proxies
            .resolve(req.headers(), conn.peer.ip())
    };
    if seen.log {
        seen.client = Some(client_ip);
    }
    // Split before flags: a sticky key drawn here also serves `flag_context` (SPEC §3).
    let split = match &route.target {
        Target::Rollout { rollout, .. } => {
            let ro = &snap.rollouts[*rollout];
            Some((ro, split::decide(ro, req.headers(), req.uri().query())))
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
            client_ip,
            client_cert: conn.client_cert.as_deref(),
            drawn: split
                .as_ref()
                .and_then(|(ro, d)| flags::drawn_cookie(ro, d)),
        },
    );
    let (upstream, metrics, drawn, rollout): (
        &Arc<Upstream>,
        &VariantMetrics,
        _,
        Option<(&RolloutRt, Side)>,
    ) = match (&route.target, split) {
        (Target::Upstream { upstream, metrics }, _) => {
            (&snap.upstreams[*upstream], metrics, None, None)
        }
        (Target::Rollout { stable, canary, .. }, Some((ro, d))) => match d.side {
            Side::Stable => (
                &snap.upstreams[ro.stable],
                stable,
                d.drawn,
                Some((ro, d.side)),
            ),
            Side::Canary => (
                &snap.upstreams[ro.canary],
                canary,
                d.drawn,
                Some((ro, d.side)),
            ),
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
        // Never the client's form instead: what goes upstream is what was routed.
        match PathAndQuery::try_from(pq) {
            Ok(pq) => Some(Uri::from(pq)),
            Err(_) => return refuse(shared, ProxyError::InvalidPath),
        }
    } else {
        None
    };
    if let Some(u) = new_uri {
        *req.uri_mut() = u;
    }
    // An upgrade keeps its handshake headers and takes the client's side of the upgrade.
    let upgrade_to = upgrade::requested(&req, &shared.limits.upgrades);
    let client_upgrade = upgrade_to.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let from_h2 = req.version() == Version::HTTP_2;
    // A body of unknown length (chunked, or HTTP/2 without content-length) must say so on
    // HTTP/1.1, whatever the method: hyper sends no body for a GET that does not.
    let chunked = !req.body().is_end_stream()
        && req.body().size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH);
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    // Room for the headers added below (flags included), so the map grows at most once.
    h.reserve(8 + route.flags.len() + 1);
    let had_hop = headers::remove_hop_by_hop(h);
    if from_h2 {
        headers::join_cookies(h);
    }
    if chunked {
        h.insert(header::TRANSFER_ENCODING, CHUNKED.clone());
    }
    shared.trusted_proxies.apply(h, conn.peer.ip(), chain);
    h.insert(
        X_FORWARDED_PROTO.clone(),
        if conn.tls {
            HTTPS.clone()
        } else {
            HTTP.clone()
        },
    );
    // The client's own `X-Forwarded-Host` never travels: sluice says which host it served
    // (an insert replaces every value the client sent).
    match authority {
        Some(a) => {
            if seen.log {
                seen.host = Some(a.clone());
            }
            h.insert(X_FORWARDED_HOST.clone(), a.clone());
            // The `Host` the authority was read from is already the one value there (more
            // than one is refused above) unless `Connection` named it: no second insert.
            if from_uri || had_hop {
                h.insert(header::HOST, a);
            }
        }
        None => {
            h.remove(&X_FORWARDED_HOST);
        }
    }
    h.insert(header::VIA, VIA.clone());
    // One lookup: the client's id is kept, else one is made.
    h.entry(&X_REQUEST_ID)
        .or_insert_with(headers::new_request_id);
    if let Some(t) = &shared.tracer {
        seen.trace = Some(t.propagate(h));
    }
    // Appended, not inserted: every `x-sluice-*` the client sent was removed above, so
    // there is nothing to replace (an insert would look for old values to drop).
    h.append(&X_SLUICE_ROUTE, route.name_header.clone());
    h.append(&X_SLUICE_VARIANT, metrics.variant_header.clone());
    // By value: the evaluation is not kept in the future's state across the await below.
    flags::inject(route, evaluated, h);
    if let Some(p) = &upgrade_to {
        upgrade::restore(h, p.clone());
    }
    if seen.wanted {
        seen.route = Some(route);
        seen.upstream = Some(upstream);
        seen.variant = Some(metrics.variant_header.clone());
        seen.flags = h.get(&X_SLUICE_FLAGS).cloned();
        if seen.log {
            seen.request_id = h.get(&X_REQUEST_ID).cloned();
        }
    }

    // Mirrored routes and rollouts only: a test or two for every other request. At most one
    // copy: the live step's mirror, else the rollout's, else the route's.
    let tee = match (rollout, &route.target) {
        _ if client_upgrade.is_some() => None,
        (Some((ro, side)), Target::Rollout { mirrors, .. }) if !mirrors.is_empty() => {
            match ro.active_mirror() {
                // A request the canary serves is not copied to it again.
                Some(m) if side == Side::Canary && m.upstream == ro.canary => None,
                Some(m) => mirrors
                    .iter()
                    .find(|(u, _)| *u == m.upstream)
                    .and_then(|(_, mm)| mirror::begin(m, &snap.upstreams[m.upstream], mm, &req)),
                None => route_mirror(route, snap, upstream, &req),
            }
        }
        _ => route_mirror(route, snap, upstream, &req),
    };
    let (parts, body) = req.into_parts();
    let (mut body, watch) = UpBody::client(body);
    if seen.log {
        seen.request_body = watch.clone();
    }
    if let Some(t) = tee {
        body = body.teed(t);
    }
    let req = Request::from_parts(parts, body);
    let result = match client_upgrade {
        Some(on) => Box::pin(upgrade::forward(shared, conn.listener, upstream, req, on)).await,
        None => {
            let mut req = Some(req);
            forward(
                upstream,
                &route.retry,
                &mut req,
                watch.as_deref(),
                start,
                deadline,
                &mut seen.upstream_addr,
            )
            .await
        }
    };
    let sluice_generated = result.is_err();
    let client_fault = result.as_ref().err().and_then(|e| e.client_fault());
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    if let (Some(id), Some((ro, _))) = (drawn, rollout)
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
    if let Some(f) = client_fault {
        // The client's doing says nothing of the variant: no latency, no verdict input.
        shared.client_errors.of(f).increment(1);
        return resp;
    }
    // One clock read serves the histogram and the rollout window.
    let end = Instant::now();
    metrics
        .duration
        .record(end.saturating_duration_since(start).as_secs_f64());
    if let Some((ro, side)) = rollout {
        ro.record(side.into(), resp.status(), sluice_generated, start, end);
    }
    resp
}

/// The route's own `mirror` for `req`, when it has one and picks it — unless `serving`, the
/// upstream the request goes to, is the mirror's (a flag arm or a rollout side): it gets the
/// request already.
#[inline]
fn route_mirror(
    route: &Route,
    snap: &Snapshot,
    serving: &Arc<Upstream>,
    req: &Request<hyper::body::Incoming>,
) -> Option<mirror::Tee> {
    let rm = route.mirror.as_deref()?;
    let to = &snap.upstreams[rm.rt.upstream];
    if Arc::ptr_eq(to, serving) {
        return None;
    }
    mirror::begin(&rm.rt, to, &rm.metrics, req)
}

/// Sends to a pool with the route's retry policy; maps failures to sluice's errors and
/// feeds passive health; `tried` is the endpoint tried last. A failure the client caused
/// (`body` says so) is answered as the client's error at once: not retried, not counted
/// against the upstream or its health. The request is lent (see [`pool::send`]): this
/// future stays small.
async fn forward(
    up: &Upstream,
    policy: &RetryPolicy,
    req: &mut Option<Request<UpBody>>,
    body: Option<&BodyWatch>,
    start: Instant,
    deadline: &Deadline,
    tried: &mut Option<SocketAddr>,
) -> Result<Response<DownBody>, ProxyError> {
    // A bodiless idempotent request can be rebuilt for a retry after it was sent; its head
    // is copied only when the route would use the copy (boxed: only then is it kept).
    let replay = req.as_ref().and_then(|r| {
        policy
            .replays(r.method(), r.body().is_end_stream())
            .then(|| Box::new(retry::head_of(r)))
    });
    if policy.attempts > 0 {
        up.retry_budget.deposit();
    }
    let mut tries = 0;
    let mut last: Option<Arc<Endpoint>> = None;
    loop {
        let Some(ep) = up.pick(last.as_ref()) else {
            return Err(ProxyError::NoHealthyEndpoint);
        };
        *tried = Some(ep.addr);
        if req.is_none() {
            match &replay {
                Some(head) => *req = Some(retry::rebuild(head)),
                None => return Err(ProxyError::UpstreamReset),
            }
        }
        let passive = up.passive_health.as_ref();
        // The first attempt's clock started with the request (no clock read); a retry's now.
        let began = if tries == 0 { start } else { Instant::now() };
        let sent = deadline
            .within(
                began,
                up.request_timeout,
                pool::send(&ep, &up.connector, req),
            )
            .await;
        let failed = match &sent {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some(false),
            Err(_) => Some(true),
        };
        if let Some(timed_out) = failed
            && let Some(fault) = body.and_then(|b| b.fault(timed_out))
        {
            return Err(ProxyError::Client(fault));
        }
        let (err, retry) = match sent {
            Err(_) => {
                // Given up on, sent or not: a retry goes out from the replay copy only.
                *req = None;
                up.errors.timeout.increment(1);
                ep.health.failure(passive, ep.addr);
                (
                    ProxyError::UpstreamTimeout,
                    policy.timeout && replay.is_some(),
                )
            }
            Ok(Err(kind)) => {
                ep.health.failure(passive, ep.addr);
                // The pool gave the request back: none of it was written.
                let unsent = req.is_some();
                match kind {
                    SendError::Connect => {
                        up.errors.connect.increment(1);
                        (ProxyError::UpstreamConnect, policy.connect_failure)
                    }
                    SendError::Tls => {
                        up.errors.tls.increment(1);
                        (ProxyError::UpstreamTls, policy.connect_failure)
                    }
                    SendError::Reset => {
                        up.errors.reset.increment(1);
                        // Unsent and bodiless: as good as a connect failure.
                        let ok = (policy.reset && replay.is_some())
                            || (policy.connect_failure && unsent);
                        (ProxyError::UpstreamReset, ok)
                    }
                }
            }
            Ok(Ok((resp, returner))) => {
                ep.health.success();
                let again = resp.status() == http::StatusCode::SERVICE_UNAVAILABLE
                    && policy.status_503
                    && replay.is_some()
                    && tries < policy.attempts
                    && up.retry_budget.withdraw();
                if again {
                    tries += 1;
                    last = Some(ep);
                    continue;
                }
                let (mut parts, body) = resp.into_parts();
                headers::remove_hop_by_hop(&mut parts.headers);
                return Ok(Response::from_parts(
                    parts,
                    DownBody::Upstream(body, Some(returner)),
                ));
            }
        };
        let can = retry
            && tries < policy.attempts
            && (req.is_some() || replay.is_some())
            && up.retry_budget.withdraw();
        if !can {
            return Err(err);
        }
        tries += 1;
        last = Some(ep);
    }
}
