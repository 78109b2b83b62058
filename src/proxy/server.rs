//! Listeners and worker threads.
//!
//! Each worker is a thread with its own single-threaded tokio runtime (no work stealing)
//! and its own `SO_REUSEPORT` socket per listener, so the kernel spreads connections and a
//! connection never leaves its thread: upstream pools are thread-local and lock-free.
//!
//! A connection first passes `handshake_timeout`: the TLS handshake (ALPN picks h2 or
//! http/1.1) or, in plaintext, the detection of the HTTP/2 preface (h2c prior knowledge).
//! HTTP/1 is then bounded by `header_read_timeout` (slowloris, idle keep-alive) and
//! `max_header_bytes`; HTTP/2 by `idle_timeout`, a stream limit, a header list size and
//! hyper's reset-flood counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use std::sync::atomic::{AtomicU32, AtomicU64};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::Shared;
use super::coalesce::Coalesce;
use super::deadline::{ConnClock, Deadline, Fired, StreamClock, Tracked};
use super::detect::{Proto, detect};
use super::service::{self, ConnInfo};
use super::wake_gate::WakeGate;
use crate::shutdown::Shutdown;

/// Binds `addr` with `SO_REUSEPORT` so that each worker can hold its own socket.
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds `workers` sockets for one listener on the same address; port 0 picks one port for all.
pub fn bind_listener(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_reuseport(addr)?;
    let actual = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..workers {
        out.push(bind_reuseport(actual)?);
    }
    Ok(out)
}

/// Runs one worker until `shutdown` turns true, then drains its connections.
pub fn run_worker(
    id: usize,
    shared: Arc<Shared>,
    sockets: Vec<(usize, std::net::TcpListener)>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("sluice-worker-{id}"))
        .build()?;
    rt.block_on(async move {
        let tracker = Tracker::default();
        let mut accepts = Vec::new();
        for (listener, sock) in sockets {
            let l = tokio::net::TcpListener::from_std(sock)?;
            accepts.push(tokio::spawn(accept_loop(
                l,
                listener,
                shared.clone(),
                shutdown.clone(),
                tracker.clone(),
            )));
        }
        shutdown.clone().wait().await;
        for a in &accepts {
            a.abort();
        }
        let drain = shared.limits.drain_timeout.0;
        if tokio::time::timeout(drain, tracker.idle()).await.is_err() {
            tracing::warn!(
                worker = id,
                open = tracker.count(),
                "Drain timeout passed; closing remaining connections."
            );
        }
        Ok(())
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    index: usize,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    tracker: Tracker,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = shared.limits.max_connections;
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= max {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            listener: index,
            peer,
            tls: shared.listeners[index].tls.is_some(),
            client_cert: None,
        };
        let guard = tracker.enter(shared.clone(), index);
        tokio::spawn(serve_conn(
            stream,
            info,
            shared.clone(),
            shutdown.clone(),
            guard,
        ));
    }
}

/// Handshake (TLS, or h2c detection), then HTTP/1 or HTTP/2 until the peer leaves.
///
/// This future lives inline in the connection's task for as long as the connection is
/// open, so the rarer and bulkier paths (TLS, HTTP/2) are boxed: an idle plaintext HTTP/1
/// connection carries only what HTTP/1 needs.
async fn serve_conn(
    mut stream: TcpStream,
    mut info: ConnInfo,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    _guard: ConnGuard,
) {
    // One deadline for the PROXY header and the TLS handshake or protocol detection.
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout.0;
    let listener = &shared.listeners[info.listener];
    if listener.proxy_protocol {
        let read = crate::proxy::proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(Some(client))) => info.peer = client,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                listener.refused.proxy_protocol.increment(1);
                tracing::debug!(reason = "proxy_protocol", error = %e, peer = %info.peer, "Connection refused.");
                return;
            }
            Err(_) => {
                listener.refused.proxy_protocol.increment(1);
                tracing::debug!(reason = "proxy_protocol", peer = %info.peer, "No PROXY protocol header within handshake_timeout.");
                return;
            }
        }
    }
    // Below TLS too: rustls writes its queued records vectored.
    let stream = Coalesce::new(stream);
    if listener.tls.is_some() {
        Box::pin(serve_tls(stream, info, shared, shutdown, deadline)).await;
        return;
    }
    let (proto, stream) = match tokio::time::timeout_at(deadline, detect(stream)).await {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(peer = %info.peer, "No request within handshake_timeout.");
            return;
        }
    };
    match proto {
        Proto::Http1 => serve_h1(stream, info, shared, shutdown).await,
        Proto::H2 => Box::pin(serve_h2(stream, info, shared, shutdown)).await,
    }
}

async fn serve_tls(
    stream: Coalesce<TcpStream>,
    mut info: ConnInfo,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    deadline: tokio::time::Instant,
) {
    let listener = &shared.listeners[info.listener];
    let Some(tls) = listener.tls.clone() else {
        return;
    };
    let stream = match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = if tls.client_auth() && is_client_cert_error(&e) {
                listener.refused.client_cert.increment(1);
                "client_cert"
            } else {
                listener.refused.tls_handshake.increment(1);
                "tls_handshake"
            };
            tracing::debug!(reason, error = %e, peer = %info.peer, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            listener.refused.tls_handshake.increment(1);
            tracing::debug!(reason = "tls_handshake", peer = %info.peer, "TLS handshake timed out.");
            return;
        }
    };
    if tls.client_auth() {
        // Verified by rustls during the handshake; read once per connection.
        info.client_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| crate::proxy::client::ClientCert::from_der(der))
            .map(Arc::new);
    }
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    // Above TLS: a small response's head and body become one record.
    let stream = Coalesce::new(stream);
    if h2 {
        serve_h2(stream, info, shared, shutdown).await
    } else {
        serve_h1(stream, info, shared, shutdown).await
    }
}

/// Serves HTTP/1 on an accepted (and, for TLS, handshaken) connection until the peer leaves
/// or `shutdown`; public for the in-process request bench (`benches/proxy.rs`).
pub async fn serve_h1<IO>(io: IO, info: ConnInfo, shared: Arc<Shared>, mut shutdown: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    // One timer for the connection: header read / idle keep-alive and the upstream
    // timeout of the request in flight (see `deadline`), none per request.
    let clock = Arc::new(ConnClock::new(limits.header_read_timeout.0));
    let svc_shared = shared.clone();
    let svc_clock = clock.clone();
    let peer = info.peer;
    // hyper keeps room for one service future per HTTP/1 connection for as long as the
    // connection lives; boxing it per request keeps that room at a pointer, so an idle
    // keep-alive connection does not hold a request's worth of state.
    let svc = service_fn(move |req| {
        let s = svc_shared.clone();
        let c = svc_clock.clone();
        c.begin();
        let fut = Box::pin(service::handle(
            s,
            info.clone(),
            req,
            Deadline::Conn(c.clone()),
        ));
        async move { Ok::<_, std::convert::Infallible>(fut.await.map(|b| Tracked::new(b, c))) }
    });
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until(clock.first().into());
    tokio::pin!(timer);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // The timer and the stop signal are polled only when they woke the task, not on each
    // of the connection's wakes (see `wake_gate`).
    let (timer_gate, stop_gate) = (WakeGate::default(), WakeGate::default());
    let mut graceful = false;
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r { tracing::debug!(error = %e, "Client connection ended with an error."); }
                return;
            }
            () = std::future::poll_fn(|cx| timer_gate.poll(cx, |cx| timer.as_mut().poll(cx))) => {
                match clock.fired(std::time::Instant::now()) {
                    Fired::Close => {
                        tracing::debug!(peer = %peer, "No request head within header_read_timeout.");
                        return;
                    }
                    Fired::Until(at) => {
                        timer.as_mut().reset(at.into());
                        timer_gate.open();
                    }
                }
            }
            () = std::future::poll_fn(|cx| stop_gate.poll(cx, |cx| stop.as_mut().poll(cx))), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            () = std::future::poll_fn(|_| if clock.take_rearm() { Poll::Ready(()) } else { Poll::Pending }) => {
                timer.as_mut().reset(clock.armed_at().into());
                timer_gate.open();
            }
        }
    }
}

async fn serve_h2<IO>(io: IO, info: ConnInfo, shared: Arc<Shared>, mut shutdown: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    let activity = Arc::new(Activity::default());
    let svc_shared = shared.clone();
    let act = activity.clone();
    // One timer for the upstream deadlines of all the connection's streams (see
    // `deadline::StreamClock`), none per stream.
    let clock = Arc::new(StreamClock::default());
    let svc_clock = clock.clone();
    let svc = service_fn(move |req| {
        let s = svc_shared.clone();
        let busy = Busy::enter(&act);
        // Boxed: hyper moves each stream's future into a task of its own, and the request
        // future (~4 KiB) was copied whole at each move; a box is copied once.
        let fut = Box::pin(service::handle(
            s,
            info.clone(),
            req,
            Deadline::Stream(svc_clock.clone()),
        ));
        async move {
            let r = fut.await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Rapid Reset (CVE-2023-44487) and its local-error variant: a peer that makes
        // streams reset faster than they are served loses the connection.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Bounds a header block however many CONTINUATION frames carry it.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout.0;
    let mut graceful = false;
    // Connections that were open when draining started get GOAWAY at once; those accepted
    // during `drain_delay` are served until the listeners stop (GOAWAY before the client's
    // first stream would refuse it).
    let drain_at_start = !shared.drain.is_draining();
    let timer = tokio::time::sleep_until(clock.armed_at().into());
    tokio::pin!(timer);
    let (timer_gate, rearm_gate) = (WakeGate::default(), WakeGate::default());
    loop {
        let wait = activity.idle_left(idle);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r { tracing::debug!(error = %e, "HTTP/2 client connection ended with an error."); }
                return;
            }
            () = std::future::poll_fn(|cx| timer_gate.poll(cx, |cx| timer.as_mut().poll(cx))) => {
                let at = clock.fired(std::time::Instant::now());
                timer.as_mut().reset(at.into());
                timer_gate.open();
            }
            () = std::future::poll_fn(|cx| rearm_gate.poll(cx, |cx| clock.poll_rearm(cx))) => {
                timer.as_mut().reset(clock.armed_at().into());
                timer_gate.open();
                rearm_gate.open();
            }
            _ = tokio::time::sleep(wait), if !graceful => {
                if activity.idle_left(idle).is_zero() {
                    graceful = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = shared.drain.started(), if !graceful && drain_at_start => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shutdown.wait(), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether a failed handshake failed on the client's certificate (none, or not valid).
fn is_client_cert_error(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
}

/// Streams served at once on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 256;
/// Streams the peer may reset before sluice accepts them (hyper's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams sluice may reset for the peer's protocol errors before closing.
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// Activity of an HTTP/2 connection, for its idle timeout.
#[derive(Debug)]
struct Activity {
    start: tokio::time::Instant,
    /// Requests being served.
    busy: AtomicU32,
    /// Milliseconds after `start` of the last request start or end.
    last_ms: AtomicU64,
}

/// One request being served on an HTTP/2 connection.
struct Busy(Arc<Activity>);

// === impl Activity ===

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            busy: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time left before the connection counts as idle (zero: idle now).
    fn idle_left(&self, idle: Duration) -> Duration {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return idle;
        }
        let since = self
            .start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        idle.saturating_sub(since)
    }
}

// === impl Busy ===

impl Busy {
    fn enter(a: &Arc<Activity>) -> Busy {
        // No clock read: while a request is served the connection is not idle whatever
        // `last_ms` says, and the request's end sets it.
        a.busy.fetch_add(1, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Only the last request to end starts the idle time: one clock read for it, none
        // for the streams that end while others are served.
        if self.0.busy.load(Ordering::Relaxed) == 1 {
            self.0.touch();
        }
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a worker's open connections so drain can wait for them.
#[derive(Clone, Default)]
struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    open: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

/// One open connection: keeps the counts and the gauge right however it ends.
struct ConnGuard {
    tracker: Tracker,
    shared: Arc<Shared>,
    listener: usize,
}

// === impl Tracker ===

impl Tracker {
    fn enter(&self, shared: Arc<Shared>, listener: usize) -> ConnGuard {
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        shared.listeners[listener].active.increment(1.0);
        ConnGuard {
            tracker: self.clone(),
            shared,
            listener,
        }
    }

    fn count(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    async fn idle(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.listeners[self.listener].active.decrement(1.0);
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if self.tracker.inner.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.tracker.inner.notify.notify_waiters();
        }
    }
}
