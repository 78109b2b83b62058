//! Upstream connections: per worker thread, keyed by address and connector, no lock.
//!
//! Each worker runs a single-threaded runtime, so its idle connections live in a
//! thread-local map: checkout and check-in are a `RefCell` borrow, never a lock shared with
//! other threads. A connection goes back to the pool only when both directions are complete:
//! its response body read to the end *and* the request body sent to its end. An upstream
//! may answer before it has read the body (an early error) while the client still trickles
//! it; a connection reused then would make the next request wait behind that upload. Any
//! other connection is closed at once (its task aborted). A pooled connection that the upstream closed
//! at the instant it was reused gives the request back unsent (`try_send_request`), and the
//! request goes out on another connection, whatever its method.
//!
//! When the close crosses the request instead (the upstream shuts a kept-alive connection
//! without `Connection: close`, right after answering or on its idle timeout, while the
//! next request is on its way), the request was written and never answered: the upstream
//! never took it. An idempotent request without a body is then sent once more on a fresh
//! connection (RFC 9112 §9.3.1, as NGINX does), whatever the route's `retries`; any other
//! request is never sent twice. Sending consumes a request, so its head must be copied
//! beforehand: that copy (a few allocations) is made only on the reused connections of an
//! endpoint already seen closing one this way ([`Endpoint::drops_kept_alive`]), so a
//! well-behaved upstream costs nothing and a misbehaving one loses at most its first such
//! request per endpoint. HTTP/2 upstreams get one shared connection per endpoint and worker.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use rustc_hash::FxHashMap;

use tokio::task::AbortHandle;

use super::body::{BodyWatch, UpBody};
use super::connect::{Conn, ConnectError, Connector};
use super::retry;
use crate::snapshot::Endpoint;

/// Idle connections kept per address and worker. Above the requests a worker has in
/// flight to one address at its peak, connections are closed when they come back and
/// opened again on the next burst: at 256, HTTP/2 clients with 640 streams in flight
/// (h2load 64 × 10) made a worker open a new upstream connection about every tenth
/// request. An idle connection costs what it cost in flight (its buffers, ~16 KiB), and
/// the upstream's own keep-alive timeout closes those not reused.
const MAX_IDLE_PER_ADDR: usize = 1024;

/// An endpoint's address and the connector's settings key.
type Key = (SocketAddr, u64);

/// An idle HTTP/1.1 connection and the handle that closes it.
type Idle = (http1::SendRequest<UpBody>, AbortHandle);

thread_local! {
    static IDLE: RefCell<FxHashMap<Key, Vec<Idle>>> = RefCell::new(FxHashMap::default());
    /// One HTTP/2 connection per endpoint and worker, shared by its requests.
    static H2: RefCell<FxHashMap<Key, http2::SendRequest<UpBody>>> = RefCell::new(FxHashMap::default());
}

/// Why a request got no upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made in time (or it was refused).
    Connect,
    /// The TLS handshake with the upstream failed.
    Tls,
    /// The connection broke before a complete response head.
    Reset,
}

/// A failed send; `req` is the request when none of it was written (safe to send again).
#[derive(Debug)]
pub struct Failure {
    /// What failed.
    pub kind: SendError,
    /// The request, unsent.
    pub req: Option<Request<UpBody>>,
}

/// Gives a connection back to its worker's pool when the response body ends, if the
/// request body ended too; closes it otherwise.
#[derive(Debug)]
pub struct Returner {
    key: Key,
    /// An HTTP/1.1 connection (none for HTTP/2 and upgrades).
    conn: Option<Idle>,
    /// The request body's progress (none: no body).
    body: Option<Arc<BodyWatch>>,
    flight: InFlight,
}

/// Counts a request in flight on an endpoint while it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

// === impl InFlight ===

impl InFlight {
    /// Starts counting.
    pub fn new(ep: &Arc<Endpoint>) -> Self {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(ep.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Returner ===

impl Returner {
    /// The endpoint the request went to.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.flight.0.addr
    }

    /// Puts the connection back in this thread's pool when both directions are complete;
    /// closes it otherwise.
    pub fn give_back(mut self) {
        let sent = self.body.as_ref().is_none_or(|b| b.is_done());
        if let Some((tx, task)) = self.conn.take() {
            if !sent || tx.is_closed() {
                task.abort();
                return;
            }
            let key = self.key;
            IDLE.with(|p| {
                let mut p = p.borrow_mut();
                let idle = p.entry(key).or_default();
                if idle.len() < MAX_IDLE_PER_ADDR {
                    idle.push((tx, task));
                } else {
                    task.abort();
                }
            });
        }
    }
}

impl Drop for Returner {
    fn drop(&mut self) {
        // Not given back (the response was dropped midway): the connection cannot carry
        // another request, and a request body still streaming would keep it busy.
        if let Some((_, task)) = self.conn.take() {
            task.abort();
        }
    }
}

fn checkout(key: Key) -> Option<Conn> {
    // Most workers hold no HTTP/2 upstream connection: no hash of the key then.
    if let Some(tx) = H2.with(|p| {
        let p = p.borrow();
        if p.is_empty() {
            None
        } else {
            p.get(&key).cloned()
        }
    }) {
        if !tx.is_closed() {
            return Some(Conn::H2(tx));
        }
        H2.with(|p| p.borrow_mut().remove(&key));
    }
    IDLE.with(|p| p.borrow_mut().get_mut(&key).and_then(Vec::pop))
        .map(|(tx, task)| Conn::H1(tx, task))
}

impl From<ConnectError> for SendError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Connect => SendError::Connect,
            ConnectError::Tls => SendError::Tls,
        }
    }
}

/// Sends the request in `req` to `ep`, reusing a connection of this worker when there is
/// one. On failure `req` holds the request again when none of it was written (safe to send
/// again), and is empty otherwise.
///
/// The request is lent, not moved in: an `async fn` keeps its arguments in its state
/// besides the locals they move to, and this future sits in every request's future (which
/// is moved, and boxed, per request).
pub async fn send(
    ep: &Arc<Endpoint>,
    connector: &Connector,
    req: &mut Option<Request<UpBody>>,
) -> Result<(Response<Incoming>, Returner), SendError> {
    let Some(body) = req.as_ref().map(|r| r.body().watch().cloned()) else {
        return Err(SendError::Reset);
    };
    let flight = InFlight::new(ep);
    let key = (ep.addr, connector.key);
    // Set once a request is sent again after a stale connection: on a new connection, once.
    let mut fresh = false;
    loop {
        let pooled = if fresh { None } else { checkout(key) };
        let (conn, reused) = match pooled {
            Some(c) => (c, true),
            // Boxed: handshake state (TLS, HTTP/2) is large and rarely needed, and would
            // otherwise sit in every request's future.
            None => match Box::pin(connector.connect(ep, false)).await {
                Ok(c) => (c, false),
                Err(e) => return Err(e.into()),
            },
        };
        match conn {
            Conn::H1(mut tx, task) => {
                if reused && (tx.is_closed() || tx.ready().await.is_err()) {
                    task.abort();
                    continue;
                }
                let Some(mut r) = req.take() else {
                    return Err(SendError::Reset);
                };
                if !r.headers().contains_key(header::HOST) {
                    insert_upstream_host(&mut r, ep);
                }
                // Boxed: rare (an endpoint seen dropping kept-alive connections), and a
                // head inline would sit in every request's future.
                let again = (reused
                    && ep.drops_kept_alive.load(Ordering::Relaxed)
                    && r.body().is_end_stream()
                    && retry::is_idempotent(r.method()))
                .then(|| Box::new(retry::head_of(&r)));
                match tx.try_send_request(r).await {
                    Ok(resp) => {
                        return Ok((
                            resp,
                            Returner {
                                key,
                                conn: Some((tx, task)),
                                body,
                                flight,
                            },
                        ));
                    }
                    Err(mut e) => {
                        task.abort();
                        match (e.take_message(), again) {
                            // Never written: safe to send again on another connection, whatever the method.
                            (Some(back), _) if reused => *req = Some(back),
                            // Written into a connection the upstream was closing: once more, anew.
                            (None, Some(head)) => {
                                tracing::debug!(error = %e.error(), addr = %ep.addr, "Kept-alive upstream connection closed under a request; sending it again.");
                                *req = Some(retry::rebuild(&head));
                                fresh = true;
                            }
                            (back, _) => {
                                if reused && back.is_none() {
                                    // Remembered: this endpoint's next such requests keep a copy.
                                    ep.drops_kept_alive.store(true, Ordering::Relaxed);
                                }
                                tracing::debug!(error = %e.error(), addr = %ep.addr, "Upstream request failed.");
                                *req = back;
                                return Err(failure_kind(e.error()));
                            }
                        }
                    }
                }
            }
            Conn::H2(mut tx) => {
                if !reused {
                    H2.with(|p| p.borrow_mut().insert(key, tx.clone()));
                }
                if tx.ready().await.is_err() {
                    H2.with(|p| p.borrow_mut().remove(&key));
                    if reused {
                        continue;
                    }
                    return Err(SendError::Reset);
                }
                let Some(mut r) = req.take() else {
                    return Err(SendError::Reset);
                };
                to_h2_form(&mut r, connector.is_tls(), ep.addr);
                match tx.try_send_request(r).await {
                    Ok(resp) => {
                        return Ok((
                            resp,
                            Returner {
                                key,
                                conn: None,
                                body,
                                flight,
                            },
                        ));
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) if reused => {
                            H2.with(|p| p.borrow_mut().remove(&key));
                            *req = Some(back);
                        }
                        back => {
                            tracing::debug!(error = %e.error(), addr = %ep.addr, "Upstream HTTP/2 request failed.");
                            *req = back;
                            return Err(failure_kind(e.error()));
                        }
                    },
                }
            }
        }
    }
}

/// A reset, unless TLS failed under it: with TLS 1.3 a server that refuses the client's
/// certificate says so after the handshake, on the first read.
fn failure_kind(e: &hyper::Error) -> SendError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if err.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return SendError::Tls;
        }
        cur = err.source();
    }
    SendError::Reset
}

/// Sends a request that asks to switch protocols on a connection of its own (HTTP/1.1,
/// upgrades enabled); the connection is never pooled.
pub async fn send_upgrade(
    ep: &Arc<Endpoint>,
    connector: &Connector,
    req: Request<UpBody>,
) -> Result<(Response<Incoming>, Returner), Failure> {
    let flight = InFlight::new(ep);
    let mut tx = match Box::pin(connector.connect(ep, true)).await {
        // The task ends by itself when the connection upgrades (or closes).
        Ok(Conn::H1(tx, _)) => tx,
        Ok(Conn::H2(_)) => {
            return Err(Failure {
                kind: SendError::Reset,
                req: Some(req),
            });
        }
        Err(e) => {
            return Err(Failure {
                kind: e.into(),
                req: Some(req),
            });
        }
    };
    match tx.send_request(req).await {
        Ok(resp) => Ok((
            resp,
            Returner {
                key: (ep.addr, connector.key),
                conn: None,
                body: None,
                flight,
            },
        )),
        Err(e) => {
            tracing::debug!(error = %e, addr = %ep.addr, "Upstream upgrade request failed.");
            Err(Failure {
                kind: SendError::Reset,
                req: None,
            })
        }
    }
}

/// An HTTP/1.0 request without `Host` (nothing to keep) goes upstream as HTTP/1.1, which
/// needs one (RFC 9112 §3.2): the upstream's own `host:port`, as NGINX's default
/// `proxy_set_header Host $proxy_host` does.
fn insert_upstream_host(req: &mut Request<UpBody>, ep: &Endpoint) {
    if let Some(v) = upstream_host(ep) {
        req.headers_mut().insert(header::HOST, v);
    }
}

/// `host:port` of an endpoint, an IPv6 literal in brackets.
fn upstream_host(ep: &Endpoint) -> Option<http::HeaderValue> {
    let host = if ep.host.contains(':') && !ep.host.starts_with('[') {
        format!("[{}]:{}", ep.host, ep.addr.port())
    } else {
        format!("{}:{}", ep.host, ep.addr.port())
    };
    http::HeaderValue::try_from(host).ok()
}

/// HTTP/2 carries the scheme and authority in the request: rebuild the URI from the
/// `Host` the service set.
pub(crate) fn to_h2_form(req: &mut Request<UpBody>, tls: bool, addr: SocketAddr) {
    *req.version_mut() = Version::HTTP_2;
    // HTTP/2 frames its own bodies (the service marks unknown lengths chunked for HTTP/1.1).
    req.headers_mut().remove(header::TRANSFER_ENCODING);
    if req.uri().scheme().is_some() {
        return;
    }
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(addr.to_string()).ok());
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = authority;
    parts.path_and_query = Some(pq);
    if let Ok(u) = Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, addr: &str) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            host: host.into(),
            in_flight: Default::default(),
            health: Default::default(),
            drops_kept_alive: Default::default(),
        }
    }

    #[test]
    fn upstream_host_is_host_and_port() {
        let cases = [
            ("app.internal", "10.0.0.7:8080", "app.internal:8080"),
            ("127.0.0.1", "127.0.0.1:9101", "127.0.0.1:9101"),
            ("::1", "[::1]:8443", "[::1]:8443"),
            ("[::1]", "[::1]:8443", "[::1]:8443"),
        ];
        for (host, addr, want) in cases {
            let got = upstream_host(&endpoint(host, addr)).unwrap();
            assert_eq!(got, want, "{host} {addr}");
        }
    }
}
