//! Upstream connections: per worker thread, keyed by address, no lock.
//!
//! Each worker runs a single-threaded runtime, so its idle connections live in a
//! thread-local map: checkout and check-in are a `RefCell` borrow, never a lock shared with
//! other threads. A connection goes back to the pool when its response body has been read
//! to the end; one dropped midway is closed. A pooled connection that the upstream closed
//! at the instant it was reused gives the request back unsent (`try_send_request`), and the
//! request goes out on another connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpBody;
use crate::snapshot::Endpoint;

/// Idle connections kept per address and worker.
const MAX_IDLE_PER_ADDR: usize = 256;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<http1::SendRequest<UpBody>>>> = RefCell::new(HashMap::new());
}

/// Why a request got no upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made in time (or it was refused).
    Connect,
    /// The connection broke before a complete response head.
    Reset,
}

/// Gives a connection back to its worker's pool when the response body ends.
#[derive(Debug)]
pub struct Returner {
    addr: SocketAddr,
    tx: Option<http1::SendRequest<UpBody>>,
    _flight: InFlight,
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
    /// Puts the connection back in this thread's pool.
    pub fn give_back(mut self) {
        if let Some(tx) = self.tx.take()
            && !tx.is_closed()
        {
            let addr = self.addr;
            IDLE.with(|p| {
                let mut p = p.borrow_mut();
                let idle = p.entry(addr).or_default();
                if idle.len() < MAX_IDLE_PER_ADDR {
                    idle.push(tx);
                }
            });
        }
    }
}

fn checkout(addr: SocketAddr) -> Option<http1::SendRequest<UpBody>> {
    IDLE.with(|p| p.borrow_mut().get_mut(&addr).and_then(Vec::pop))
}

async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<http1::SendRequest<UpBody>, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Err(SendError::Connect),
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| SendError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Upstream connection ended with an error.");
        }
    });
    Ok(tx)
}

/// Sends `req` to `ep`, reusing an idle connection of this worker when there is one.
pub async fn send(
    ep: &Arc<Endpoint>,
    connect_timeout: Duration,
    mut req: Request<UpBody>,
) -> Result<(Response<Incoming>, Returner), SendError> {
    let flight = InFlight::new(ep);
    let addr = ep.addr;
    loop {
        let (mut tx, reused) = match checkout(addr) {
            Some(tx) => (tx, true),
            None => (connect(addr, connect_timeout).await?, false),
        };
        if reused && (tx.is_closed() || tx.ready().await.is_err()) {
            continue;
        }
        match tx.try_send_request(req).await {
            Ok(resp) => {
                return Ok((
                    resp,
                    Returner {
                        addr,
                        tx: Some(tx),
                        _flight: flight,
                    },
                ));
            }
            Err(mut e) => match e.take_message() {
                // Never written: safe to send again on another connection, whatever the method.
                Some(back) if reused => req = back,
                _ => {
                    tracing::debug!(error = %e.error(), %addr, "Upstream request failed.");
                    return Err(SendError::Reset);
                }
            },
        }
    }
}
