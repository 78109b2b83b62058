//! The gRPC listener: HTTP/2 (h2c, or TLS by ALPN), one thread of its own, routing by
//! service path; the API key (when required) is checked before any service sees the call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::Status;
use tonic::codegen::Service as _;

use super::evaluation::Evaluation;
use super::pb::{evaluation_v1 as v1, evaluation_v2 as v2, sync_v1};
use super::sync::Sync;
use crate::config::settings::FlagGrpc;
use crate::proxy::Shared;
use crate::shutdown::Shutdown;

/// A bound gRPC listener, not yet serving.
pub struct GrpcServer {
    /// The bound address.
    pub addr: SocketAddr,
    sock: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The services behind the listener.
#[derive(Clone)]
struct Services {
    shared: Arc<Shared>,
    v1: v1::service_server::ServiceServer<Evaluation>,
    v2: v2::service_server::ServiceServer<Evaluation>,
    sync: sync_v1::flag_sync_service_server::FlagSyncServiceServer<Sync>,
}

/// Binds `flags.grpc` (errors name the address or the certificate).
pub fn bind(settings: &FlagGrpc) -> Result<GrpcServer, String> {
    let sock = std::net::TcpListener::bind(settings.bind)
        .map_err(|e| format!("cannot bind {}: {e}", settings.bind))?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let tls = settings
        .tls
        .as_ref()
        .map(crate::proxy::tls::listener_tls)
        .transpose()
        .map_err(|e| format!("flags.grpc.tls: {e}"))?
        .map(|t| t.acceptor());
    Ok(GrpcServer { addr, sock, tls })
}

// === impl GrpcServer ===

impl GrpcServer {
    /// Serves on a thread of its own until `shutdown`.
    pub fn spawn(self, shared: Arc<Shared>, shutdown: Shutdown) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("sluice-grpc".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "gRPC runtime failed to start.");
                        return;
                    }
                };
                rt.block_on(self.serve(shared, shutdown));
            })
    }

    async fn serve(self, shared: Arc<Shared>, mut shutdown: Shutdown) {
        let listener = match tokio::net::TcpListener::from_std(self.sock) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "gRPC listener failed.");
                return;
            }
        };
        let evaluation = Evaluation::new(shared.clone());
        let services = Services {
            v1: v1::service_server::ServiceServer::new(evaluation.clone()),
            v2: v2::service_server::ServiceServer::new(evaluation),
            sync: sync_v1::flag_sync_service_server::FlagSyncServiceServer::new(Sync::new(
                shared.clone(),
            )),
            shared,
        };
        tracing::info!(addr = %self.addr, tls = self.tls.is_some(), "flagd gRPC is serving.");
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let (services, tls) = (services.clone(), self.tls.clone());
            conns.spawn(async move {
                let svc = service_fn(move |req| route(services.clone(), req));
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .clone();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = h2.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
        // Streams (EventStream, SyncFlags) last: they end with the listener.
        conns.shutdown().await;
    }
}

/// Checks the API key, then hands the call to the service its path names.
async fn route(
    mut s: Services,
    req: Request<Incoming>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if let Err(denied) = s.shared.flag_services.keys.check(req.headers()) {
        return Ok(Status::unauthenticated(denied.to_string()).into_http());
    }
    let path = req.uri().path();
    if path.starts_with("/flagd.evaluation.v2.Service/") {
        s.v2.call(req).await
    } else if path.starts_with("/flagd.evaluation.v1.Service/") {
        s.v1.call(req).await
    } else if path.starts_with("/flagd.sync.v1.FlagSyncService/") {
        s.sync.call(req).await
    } else {
        Ok(Status::unimplemented(format!("no service at {path}")).into_http())
    }
}
