//! Listeners and worker threads.
//!
//! Each worker is a thread with its own single-threaded tokio runtime (no work stealing)
//! and its own `SO_REUSEPORT` socket per listener, so the kernel spreads connections and a
//! connection never leaves its thread: upstream pools are thread-local and lock-free.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Shared;
use super::service::{self, ConnInfo};

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
    shutdown: watch::Receiver<bool>,
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
        wait_shutdown(&mut shutdown.clone()).await;
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
    shutdown: watch::Receiver<bool>,
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
            tls: false,
        };
        let guard = tracker.enter(shared.clone(), index);
        tokio::spawn(serve_http1(
            stream,
            info,
            shared.clone(),
            shutdown.clone(),
            guard,
        ));
    }
}

async fn serve_http1(
    stream: TcpStream,
    info: ConnInfo,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _guard: ConnGuard,
) {
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let s = svc_shared.clone();
        async move { Ok::<_, std::convert::Infallible>(service::handle(s, info, req).await) }
    });
    let limits = &shared.limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r { tracing::debug!(error = %e, "Client connection ended with an error."); }
        }
        _ = wait_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
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
