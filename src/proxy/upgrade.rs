//! HTTP/1.1 Upgrade (WebSocket and the like): the request goes upstream on a connection of
//! its own, and only when the upstream answers `101 Switching Protocols` to the protocol
//! asked for are the two upgraded streams joined. Any other answer is an ordinary response
//! and the client's connection stays HTTP.
//!
//! Only the protocols of `limits.upgrades` (default `websocket`) are tunnelled; another
//! `Upgrade` is dropped with the hop-by-hop headers and the request goes out as plain HTTP.
//! A tunnel is past routing and header hygiene — whatever the client sends after the switch
//! reaches the upstream as is — which is why `h2c` never is one. A tunnel counts as a client
//! connection (`max_connections`, `sluice_active_connections`) for as long as it lives.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;
use super::body::{DownBody, UpBody};
use super::error::ProxyError;
use super::headers;
use super::pool::{self, SendError};
use crate::snapshot::Upstream;

static UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// The `Upgrade` value when `req` asks to switch protocols (HTTP/1.1, `Connection: upgrade`)
/// to one protocol of `allowed`.
pub fn requested<B>(req: &Request<B>, allowed: &[String]) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let h = req.headers();
    let asks = h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !asks {
        return None;
    }
    let mut values = h.get_all(header::UPGRADE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    // One protocol, allowed: a list would let the upstream pick one that is not.
    let token = v.to_str().ok()?.trim();
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(token))
        .then(|| v.clone())
}

/// One tunnel, counted as a client connection of its listener while it lives.
struct TunnelSlot {
    shared: Arc<Shared>,
    listener: usize,
}

// === impl TunnelSlot ===

impl TunnelSlot {
    /// Counted from before the `101` goes out, so the count never dips while the client's
    /// HTTP connection hands over to the tunnel.
    fn enter(shared: &Arc<Shared>, listener: usize) -> Self {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        shared.listeners[listener].active.increment(1.0);
        TunnelSlot {
            shared: shared.clone(),
            listener,
        }
    }
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        self.shared.listeners[self.listener].active.decrement(1.0);
    }
}

/// Puts back the upgrade handshake headers that hop-by-hop removal took out.
pub fn restore(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, UPGRADE.clone());
    h.insert(header::UPGRADE, protocol);
}

/// Sends an upgrade request; on `101`, joins the client's and the upstream's streams.
pub async fn forward(
    shared: &Arc<Shared>,
    listener: usize,
    up: &Upstream,
    req: Request<UpBody>,
    client: OnUpgrade,
) -> Result<Response<DownBody>, ProxyError> {
    let asked = req.headers().get(header::UPGRADE).cloned();
    let Some(ep) = up.pick(None) else {
        return Err(ProxyError::NoHealthyEndpoint);
    };
    let passive = up.passive_health.as_ref();
    let sent = tokio::time::timeout(
        up.request_timeout,
        pool::send_upgrade(&ep, &up.connector, req),
    )
    .await;
    let (mut resp, returner) = match sent {
        Err(_) => {
            up.errors.timeout.increment(1);
            ep.health.failure(passive, ep.addr);
            return Err(ProxyError::UpstreamTimeout);
        }
        Ok(Err(f)) => {
            ep.health.failure(passive, ep.addr);
            return Err(match f.kind {
                SendError::Connect => {
                    up.errors.connect.increment(1);
                    ProxyError::UpstreamConnect
                }
                SendError::Tls => {
                    up.errors.tls.increment(1);
                    ProxyError::UpstreamTls
                }
                SendError::Reset => {
                    up.errors.reset.increment(1);
                    ProxyError::UpstreamReset
                }
            });
        }
        Ok(Ok(x)) => x,
    };
    ep.health.success();
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            DownBody::Upstream(body, Some(returner)),
        ));
    }
    let protocol = resp.headers().get(header::UPGRADE).cloned();
    let same = match (&protocol, &asked) {
        (Some(p), Some(a)) => p.as_bytes().eq_ignore_ascii_case(a.as_bytes()),
        _ => false,
    };
    if !same {
        // The upstream switched to something else than was asked (and allowed).
        tracing::debug!(
            ?protocol,
            ?asked,
            "Upstream switched to another protocol; refused."
        );
        up.errors.reset.increment(1);
        return Err(ProxyError::UpstreamReset);
    }
    let upstream = hyper::upgrade::on(&mut resp);
    let slot = TunnelSlot::enter(shared, listener);
    tokio::spawn(async move {
        let _slot = slot;
        // Keeps the endpoint's in-flight count while the tunnel lives.
        let _flight = returner;
        let (c, u) = tokio::join!(client, upstream);
        match (c, u) {
            (Ok(c), Ok(u)) => {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    tracing::debug!(error = %e, "Upgraded connection ended with an error.");
                }
            }
            (c, u) => {
                tracing::debug!(
                    client = c.is_ok(),
                    upstream = u.is_ok(),
                    "Upgrade did not complete."
                );
            }
        }
    });
    let (mut parts, body) = resp.into_parts();
    drop(body);
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        restore(&mut parts.headers, p);
    }
    Ok(Response::from_parts(parts, DownBody::empty()))
}
