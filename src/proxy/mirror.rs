//! Traffic mirroring (SPEC §2.2 `mirror`, as Envoy's request mirroring and Argo Rollouts'
//! `setMirrorRoute`): a share of a rollout's requests is copied to the mirror upstream,
//! fire-and-forget. The copy never delays or changes the client's response:
//!
//! - which requests: exactly `percent` of them, evenly spread ([`MirrorRt::pick`]: a
//!   counter, not a random draw);
//! - bounded: at most `max_in_flight` copies at once (more are skipped and counted), and
//!   only bodies up to `max_body` — a body is teed as it streams to the real upstream
//!   ([`Tee`]: the frames' `Bytes` are shared, not copied), and the copy leaves once the
//!   client's body has ended; a longer body, or one that never ends, is not mirrored;
//! - the copy is a task of its own, bounded by the mirror upstream's `request_timeout`; its
//!   response is read (at most [`MAX_DISCARD`] bytes) and thrown away; its outcome feeds
//!   metrics — never the mirror's endpoint health (a mirror of the canary must not eject
//!   the endpoints that serve clients) — and, for a rollout's (or step's) mirror to its own
//!   canary, the rollout's canary window: the analysis judges those copies as canary
//!   traffic against stable's real traffic (a dark launch); other mirrors are not judged.
//!
//! Which mirror: the live step's `mirror`, else the rollout's, else the route's — at most
//! one copy per request. Requests of routes with no mirror pay one or two `Option` tests.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Request, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use tokio::sync::oneshot;

use super::body::UpBody;
use super::headers::X_SLUICE_VARIANT;
use super::pool::{self, SendError};
use crate::rollout::Variant;
use crate::snapshot::{MirrorRt, Upstream, VariantMetrics};

/// Most bytes of a mirror's response read before it is dropped.
pub const MAX_DISCARD: usize = 1 << 20;

static MIRROR: HeaderValue = HeaderValue::from_static("mirror");

/// The copy of a request body being collected on its way upstream.
#[derive(Debug)]
pub struct Tee {
    buf: BytesMut,
    max: u64,
    done: Option<oneshot::Sender<Bytes>>,
}

/// A mirror copy that left: holds one of `max_in_flight` until dropped.
struct Slot(Arc<MirrorRt>);

// === impl Tee ===

impl Tee {
    /// A data frame passed: keep a copy, or give up once over `max_body`.
    pub fn data(&mut self, data: &Bytes) {
        if self.done.is_none() {
            return;
        }
        if (self.buf.len() + data.len()) as u64 > self.max {
            // Dropping the sender tells the waiting copy it will not come.
            self.done = None;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The client's body ended: the copy may leave.
    pub fn end(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(std::mem::take(&mut self.buf).freeze());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts mirroring `req` (already rewritten for upstream) when it is picked: a bodiless
/// request's copy leaves now; for one with a body, the returned [`Tee`] goes on the body
/// sent upstream and the copy leaves when it ends.
pub fn begin(
    m: &Arc<MirrorRt>,
    up: &Arc<Upstream>,
    metrics: &VariantMetrics,
    req: &Request<hyper::body::Incoming>,
) -> Option<Tee> {
    if !m.pick() {
        return None;
    }
    let body = req.body();
    let bodiless = body.is_end_stream();
    if !bodiless && body.size_hint().lower() > m.max_body {
        m.skipped_body.increment(1);
        return None;
    }
    if m.in_flight.fetch_add(1, Ordering::AcqRel) >= m.max_in_flight {
        m.in_flight.fetch_sub(1, Ordering::AcqRel);
        m.skipped_in_flight.increment(1);
        return None;
    }
    let slot = Slot(m.clone());
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = Version::HTTP_11;
    *head.headers_mut() = req.headers().clone();
    head.headers_mut()
        .insert(X_SLUICE_VARIANT.clone(), MIRROR.clone());
    let (up, metrics) = (up.clone(), metrics.clone());
    if bodiless {
        tokio::spawn(send(slot, up, metrics, head, None));
        return None;
    }
    let (tx, rx) = oneshot::channel();
    let wait = up.request_timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(body)) => send(slot, up, metrics, head, Some(body)).await,
            _ => slot.0.skipped_body.increment(1),
        }
    });
    Some(Tee {
        buf: BytesMut::new(),
        max: m.max_body,
        done: Some(tx),
    })
}

/// Sends one copy and discards the answer; counts the outcome as the mirror variant's.
async fn send(
    slot: Slot,
    up: Arc<Upstream>,
    metrics: VariantMetrics,
    head: Request<()>,
    body: Option<Bytes>,
) {
    let start = std::time::Instant::now();
    let Some(ep) = up.pick(None) else {
        judge(&slot, StatusCode::SERVICE_UNAVAILABLE, true, start);
        slot.0.errors.connect.increment(1);
        drop(slot);
        metrics.requests[4].increment(1);
        return;
    };
    let (parts, ()) = head.into_parts();
    let mut req = Some(Request::from_parts(parts, UpBody::Copy(body)));
    let deadline = up.request_timeout;
    let sent = tokio::time::timeout(deadline, pool::send(&ep, &up.connector, &mut req)).await;
    let class = match sent {
        Ok(Ok((resp, returner))) => {
            judge(&slot, resp.status(), false, start);
            let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
            let read = Limited::new(resp.into_body(), MAX_DISCARD).collect();
            // A whole answer in time returns the connection; anything else drops it.
            if let Ok(Ok(_)) = tokio::time::timeout(deadline, read).await {
                returner.give_back();
            }
            class
        }
        Ok(Err(kind)) => {
            judge(&slot, StatusCode::BAD_GATEWAY, true, start);
            match kind {
                SendError::Connect => slot.0.errors.connect.increment(1),
                SendError::Tls => slot.0.errors.tls.increment(1),
                SendError::Reset => slot.0.errors.reset.increment(1),
            }
            4
        }
        Err(_) => {
            judge(&slot, StatusCode::GATEWAY_TIMEOUT, true, start);
            slot.0.errors.timeout.increment(1);
            4
        }
    };
    // The slot is free before the outcome is counted: a count seen means a slot free.
    drop(slot);
    metrics.requests[class].increment(1);
    metrics.duration.record(start.elapsed().as_secs_f64());
}

/// A copy to the rollout's own canary is canary evidence: its outcome (status, or sluice's
/// own 502/503/504 for no answer) and time to its answer's head go into the rollout's
/// window, as a request the canary served would.
fn judge(slot: &Slot, status: StatusCode, sluice_generated: bool, start: std::time::Instant) {
    if let Some(j) = &slot.0.judge {
        let end = std::time::Instant::now();
        j.windows.record(
            Variant::Canary,
            crate::clock::mono_secs(end),
            j.errors.is_error(status.as_u16(), sluice_generated),
            end.saturating_duration_since(start),
        );
    }
}
