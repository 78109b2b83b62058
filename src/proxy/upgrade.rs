//! HTTP/1.1 Upgrade (WebSocket and the like): the request goes upstream on a connection of
//! its own, and only when the upstream answers `101 Switching Protocols` are the two
//! upgraded streams joined. Any other answer is an ordinary response and the client's
//! connection stays HTTP.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{DownBody, UpBody};
use super::error::ProxyError;
use super::headers;
use super::pool::{self, SendError};
use crate::snapshot::Upstream;

static UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// The `Upgrade` value when `req` asks to switch protocols (HTTP/1.1, `Connection: upgrade`).
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
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
    h.get(header::UPGRADE).cloned()
}

/// Puts back the upgrade handshake headers that hop-by-hop removal took out.
pub fn restore(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, UPGRADE.clone());
    h.insert(header::UPGRADE, protocol);
}

/// Sends an upgrade request; on `101`, joins the client's and the upstream's streams.
pub async fn forward(
    up: &Upstream,
    req: Request<UpBody>,
    client: OnUpgrade,
) -> Result<Response<DownBody>, ProxyError> {
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
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
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
