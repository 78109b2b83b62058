//! A running sluice: binds listeners, starts worker threads and the control thread, and
//! shuts down with a drain. `sluice run`, `sluice demo` and the tests all start one here;
//! several can run in one process (metrics are per instance).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;

use crate::admin::{self, AdminCtx};
use crate::change::TrustStore;
use crate::change::folder::Folder;
use crate::change::gate::{Gate, GateHandle, Outcome, Source};
use crate::change::inputs::{MAX_DOCUMENT_BYTES, read_regular};
use crate::change::{store, watch as file_watch};
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::flagsvc::{ApiKeys, Cors, FlagServices};
use crate::proxy::server;
use crate::proxy::{ListenerInfo, Shared};
use crate::rollout::Runner;
use crate::shutdown::{Shutdown, Stop};
use crate::telemetry::{self, Registry};

/// Options that tests and the demo set.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Wall clock for the control plane.
    pub clock: Clock,
    /// Rollouts tick only when [`Runner::tick_now`] is called (tests), not on a timer.
    pub manual_rollout_ticks: bool,
}

/// A running instance.
pub struct Instance {
    /// Bound address of each listener, in `sluice.yaml` order.
    pub listeners: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// Bound metrics listener address, when `metrics.bind` is set.
    pub metrics: Option<SocketAddr>,
    /// Bound flagd gRPC address, when `flags.grpc` is set.
    pub grpc: Option<SocketAddr>,
    /// The admin bearer token.
    pub admin_token: String,
    /// The data plane's shared state.
    pub shared: Arc<Shared>,
    /// The change gate.
    pub gate: GateHandle,
    /// Metrics.
    pub registry: Registry,
    /// The rollout runner.
    pub rollouts: Arc<Runner>,
    /// The fleet, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
    shutdown: Stop,
    threads: Vec<JoinHandle<()>>,
}

/// Why an instance did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The state directory or audit log is unusable.
    #[error("state directory {path}: {source}")]
    State {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The trust section does not compile (bad keys, bad globs).
    #[error("invalid trust settings:\n{0}")]
    Trust(crate::config::ConfigErrors),
    /// A listener's certificates do not load.
    #[error("listener {listener}: {detail}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What failed.
        detail: String,
    },
    /// `flags.grpc` cannot be bound or its certificates do not load.
    #[error("flags.grpc: {0}")]
    Grpc(String),
    /// `ofrep.api_keys_file` cannot be read.
    #[error("API keys file {path}: {source}")]
    Keys {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
    /// This node cannot join its fleet (node-id collision, wrong prefix, TLS files).
    #[error("cluster: {0}")]
    Cluster(crate::cluster::ClusterError),
}

// === impl Instance ===

impl Instance {
    /// Starts an instance: restores state, activates `traffic.yaml` if it passes the gate,
    /// then serves.
    pub fn start(settings: Settings, opts: StartOptions) -> Result<Instance, StartError> {
        let settings = Arc::new(settings);
        let registry = Registry::new();
        registry
            .gauge(
                telemetry::BUILD_INFO,
                &[
                    ("version", telemetry::VERSION),
                    ("commit", telemetry::COMMIT),
                ],
            )
            .set(1.0);
        let workers = match settings.runtime.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let mut listener_infos = Vec::with_capacity(settings.listeners.len());
        for l in &settings.listeners {
            listener_infos.push(ListenerInfo {
                name: l.name.clone(),
                active: registry.gauge(telemetry::ACTIVE_CONNECTIONS, &[("listener", &l.name)]),
                tls: l
                    .tls
                    .as_ref()
                    .map(crate::proxy::tls::listener_tls)
                    .transpose()
                    .map_err(|e| StartError::Tls {
                        listener: l.name.clone(),
                        detail: e.to_string(),
                    })?,
                proxy_protocol: l.proxy_protocol,
                refused: crate::proxy::Refused::new(&registry, &l.name),
            });
        }
        let tls_listeners: Vec<_> = listener_infos
            .iter()
            .filter_map(|l| l.tls.clone())
            .collect();
        let keys = match &settings.ofrep.api_keys_file {
            Some(path) => ApiKeys::load(path).map_err(|source| StartError::Keys {
                path: path.clone(),
                source,
            })?,
            None => ApiKeys::open(),
        };
        let shared = Arc::new(Shared {
            snapshot: Default::default(),
            listeners: listener_infos,
            limits: settings.limits.clone(),
            connections: AtomicUsize::new(0),
            access_log: crate::proxy::access_log::AccessLog::start(&settings.access_log)
                .map_err(StartError::Runtime)?,
            flag_services: Arc::new(FlagServices::new(
                Cors::new(&settings.ofrep.cors_origins),
                keys,
                settings.ofrep.max_streams,
                settings.ofrep.heartbeat.0,
            )),
            client_errors: crate::proxy::ClientErrors::new(&registry),
            drain: Default::default(),
            tracer: match &settings.tracing {
                None => None,
                Some(t) => {
                    let exporter = t
                        .otlp
                        .as_ref()
                        .map(|o| crate::telemetry::otlp::Exporter::start(o, &registry))
                        .transpose()
                        .map_err(StartError::Runtime)?;
                    Some(crate::proxy::trace::Tracer::new(t, exporter))
                }
            },
            trusted_proxies: crate::proxy::client::TrustedProxies::new(
                &settings.network.trusted_proxies,
            ),
        });
        let state_err = |source| StartError::State {
            path: settings.paths.state_dir.clone(),
            source,
        };
        let trust = Arc::new(TrustStore::new(&settings.trust).map_err(StartError::Trust)?);
        let gate = Gate::open(
            settings.clone(),
            trust,
            shared.snapshot.clone(),
            registry.clone(),
            opts.clock.clone(),
        )
        .map_err(state_err)?;
        let gate = GateHandle::new(gate);
        // Notifications: every audit line from here on is offered to a bounded queue.
        let (notifier, deliveries) = crate::notify::Notifier::new(&registry);
        gate.lock().set_notifier(notifier);
        let token = store::StateDir::open(&settings.paths.state_dir)
            .and_then(|s| s.admin_token(settings.admin.token_file.as_deref()))
            .map_err(state_err)?;

        // Bind everything before serving so that errors surface here.
        let mut per_worker: Vec<Vec<(usize, std::net::TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        for (i, l) in settings.listeners.iter().enumerate() {
            let socks =
                server::bind_listener(l.bind, workers).map_err(|source| StartError::Bind {
                    addr: l.bind,
                    source,
                })?;
            listeners.push(socks[0].local_addr().map_err(StartError::Runtime)?);
            for (w, s) in socks.into_iter().enumerate() {
                per_worker[w].push((i, s));
            }
        }
        let admin_sock = std::net::TcpListener::bind(settings.admin.bind).map_err(|source| {
            StartError::Bind {
                addr: settings.admin.bind,
                source,
            }
        })?;
        admin_sock
            .set_nonblocking(true)
            .map_err(StartError::Runtime)?;
        let admin_addr = admin_sock.local_addr().map_err(StartError::Runtime)?;
        let metrics_sock = match &settings.metrics {
            None => None,
            Some(m) => {
                let sock =
                    std::net::TcpListener::bind(m.bind).map_err(|source| StartError::Bind {
                        addr: m.bind,
                        source,
                    })?;
                sock.set_nonblocking(true).map_err(StartError::Runtime)?;
                Some(sock)
            }
        };
        let metrics_addr = metrics_sock
            .as_ref()
            .map(|s| s.local_addr())
            .transpose()
            .map_err(StartError::Runtime)?;
        let grpc = settings
            .flags
            .grpc
            .as_ref()
            .map(crate::flagsvc::grpc::bind)
            .transpose()
            .map_err(StartError::Grpc)?;
        let grpc_addr = grpc.as_ref().map(|g| g.addr);

        // In a fleet, the cluster joins (and adopts the fleet's document) before anything
        // serves; the files on disk are then published to etcd rather than judged here.
        let cluster = match &settings.cluster {
            Some(_) => Some(
                Cluster::start(settings.clone(), gate.clone(), &registry, admin_addr)
                    .map_err(StartError::Cluster)?,
            ),
            None => None,
        };
        // Before any worker serves: rollouts resume at their persisted step and weight.
        let rollouts = Runner::start(
            gate.clone(),
            shared.snapshot.clone(),
            registry.clone(),
            opts.clock.clone(),
        );
        if let Some(c) = &cluster {
            rollouts.set_fleet(c.clone());
            c.attach_runner(rollouts.clone());
            rollouts.follow_fleet();
        }

        let (tx, rx) = crate::shutdown::channel();
        let mut threads = Vec::new();
        for (w, socks) in per_worker.into_iter().enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{w}"))
                    .spawn(move || {
                        if let Err(e) = server::run_worker(w, shared, socks, rx) {
                            tracing::error!(worker = w, error = %e, "Worker stopped.");
                        }
                    })
                    .map_err(StartError::Runtime)?,
            );
        }
        // The restored document serves while the one on disk is judged: a candidate, like
        // any other, that can be refused but never keep the approved state from serving.
        // Then pending changes are judged again with the approvals folder as it is now.
        let traffic = settings.paths.traffic.clone();
        let last_folder = Folder::read(&settings.paths.approvals).fingerprint;
        let last_seen = match &cluster {
            None => submit_file(&gate, &traffic, Source::Start, None),
            Some(_) => None,
        };
        let _ = gate.lock().recheck(Source::Start);
        rollouts.sync_now();
        if let Some(g) = grpc {
            threads.push(
                g.spawn(shared.clone(), rx.clone())
                    .map_err(StartError::Runtime)?,
            );
        }
        let ctx = Arc::new(AdminCtx {
            shared: shared.clone(),
            gate: gate.clone(),
            registry: registry.clone(),
            token: token.clone(),
            allowed_hosts: settings.admin.allowed_hosts.clone(),
            rollouts: rollouts.clone(),
            cluster: cluster.clone(),
        });
        let control = Control {
            settings: settings.clone(),
            gate: gate.clone(),
            admin: ctx,
            admin_sock,
            metrics_sock,
            shutdown: rx,
            last_seen,
            last_folder,
            tls_listeners,
            rollouts: (!opts.manual_rollout_ticks).then(|| rollouts.clone()),
            cluster: cluster.clone(),
            deliveries,
        };
        threads.push(
            std::thread::Builder::new()
                .name("sluice-control".into())
                .spawn(move || control.run())
                .map_err(StartError::Runtime)?,
        );
        tracing::info!(?listeners, admin = %admin_addr, metrics = ?metrics_addr, workers, "sluice is serving.");
        Ok(Instance {
            listeners,
            admin: admin_addr,
            metrics: metrics_addr,
            grpc: grpc_addr,
            admin_token: token,
            shared,
            gate,
            registry,
            rollouts,
            cluster,
            shutdown: tx,
            threads,
        })
    }

    /// Stops accepting, drains in-flight requests (up to `drain_timeout`), and joins all threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Starts draining (SIGTERM): `/readyz` answers 503 and connections are asked to
    /// leave, while the listeners keep accepting. Returns false when already draining.
    pub fn start_drain(&self) -> bool {
        let started = self.shared.drain.start();
        if started {
            tracing::info!(
                drain_delay = %self.shared.limits.drain_delay,
                "Draining: /readyz answers 503; listeners keep accepting for drain_delay."
            );
        }
        started
    }

    fn stop(&mut self) {
        // Leave the fleet first: the lease goes, and leadership passes on at once.
        if let Some(c) = &self.cluster {
            c.stop();
        }
        self.shutdown.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `path` and submits it unless its digest is `last_seen`; returns the digest read.
fn submit_file(
    gate: &GateHandle,
    path: &std::path::Path,
    source: Source,
    last_seen: Option<&str>,
) -> Option<String> {
    let bytes = match read_regular(path, MAX_DOCUMENT_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            if source == Source::Start {
                tracing::info!(path = %path.display(), "No traffic document on disk yet.");
            }
            return last_seen.map(str::to_string);
        }
        Err(e) => {
            // Said once per kind of failure, not at every poll.
            let seen = format!("unreadable: {e}");
            if last_seen != Some(seen.as_str()) {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the traffic document; the active configuration keeps serving.");
            }
            return Some(seen);
        }
    };
    let d = store::digest(&bytes);
    if last_seen == Some(d.as_str()) {
        return Some(d);
    }
    let outcome = gate.submit(bytes, source, &[]);
    match &outcome {
        Outcome::Activated { version, .. } => {
            tracing::info!(version, path = %path.display(), "Traffic document activated.")
        }
        Outcome::NoOp { detail } => tracing::debug!(detail, "Traffic document: nothing to do."),
        // The gate logs pending changes and refusals with their reasons.
        _ => {}
    }
    Some(d)
}

/// The control thread: admin API, the file watch and the rollout timer.
struct Control {
    settings: Arc<Settings>,
    gate: GateHandle,
    admin: Arc<AdminCtx>,
    admin_sock: std::net::TcpListener,
    metrics_sock: Option<std::net::TcpListener>,
    shutdown: Shutdown,
    last_seen: Option<String>,
    last_folder: String,
    tls_listeners: Vec<crate::proxy::ListenerTls>,
    /// `None` when rollouts tick by hand.
    rollouts: Option<Arc<Runner>>,
    cluster: Option<Arc<Cluster>>,
    /// The notification queue's delivery side.
    deliveries: crate::notify::Deliveries,
}

impl Control {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "Control runtime failed to start.");
                return;
            }
        };
        rt.block_on(async move {
            let Control {
                settings,
                gate,
                admin,
                admin_sock,
                metrics_sock,
                shutdown,
                last_seen,
                last_folder,
                tls_listeners,
                rollouts,
                cluster,
                deliveries,
            } = self;
            let notify_task =
                tokio::spawn(deliveries.run(admin.shared.snapshot.clone(), shutdown.clone()));
            let tls_task = tokio::spawn(crate::proxy::tls::reload_loop(
                tls_listeners,
                shutdown.clone(),
            ));
            let health_task = tokio::spawn(crate::proxy::health::run(
                admin.shared.clone(),
                shutdown.clone(),
            ));
            let flag_tasks = spawn_flag_services(&admin.shared, &shutdown);
            let metrics_task = metrics_sock.map(|sock| {
                let registry = admin.registry.clone();
                tokio::spawn(serve_http1(sock, shutdown.clone(), move |req| {
                    admin::handle_metrics_only(registry.clone(), req)
                }))
            });
            let admin_ctx = admin.clone();
            let admin_task = tokio::spawn(serve_http1(admin_sock, shutdown.clone(), move |req| {
                admin::handle(admin_ctx.clone(), req)
            }));
            let watch_task = tokio::spawn(watch_files(
                settings,
                gate,
                cluster,
                last_seen,
                last_folder,
                shutdown.clone(),
            ));
            let rollout_task = rollouts.map(|r| tokio::spawn(r.run(shutdown.clone())));
            shutdown.clone().wait().await;
            watch_task.abort();
            tls_task.abort();
            for t in flag_tasks {
                t.abort();
            }
            health_task.abort();
            notify_task.abort();
            if let Some(t) = rollout_task {
                let _ = t.await;
            }
            let _ = admin_task.await;
            if let Some(t) = metrics_task {
                let _ = t.await;
            }
        });
    }
}

/// The flag services' background work: the change feed, the event-stream hub, and the
/// API keys file watch.
fn spawn_flag_services(
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let svc = shared.flag_services.clone();
    let mut tasks = vec![
        tokio::spawn(
            svc.feed
                .clone()
                .follow(shared.snapshot.clone(), shutdown.clone()),
        ),
        tokio::spawn(svc.events.clone().run(shutdown.clone())),
    ];
    if svc.keys.required() {
        tasks.push(tokio::spawn(watch_keys(svc.keys.clone(), shutdown.clone())));
    }
    tasks
}

/// Re-reads the API keys file on every change in its folder, and every poll period.
async fn watch_keys(keys: Arc<ApiKeys>, mut shutdown: Shutdown) {
    let Some(path) = keys.path().map(std::path::Path::to_path_buf) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(1);
    let _watcher = file_watch::watch(&[&path], tx).ok();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = rx.recv() => tokio::time::sleep(file_watch::DEBOUNCE).await,
            _ = poll.tick() => {}
            _ = shutdown.wait() => return,
        }
        let k = keys.clone();
        let _ = tokio::task::spawn_blocking(move || k.reload()).await;
    }
}

/// Serves the admin or metrics listener: HTTP/1 on the control thread, off the data plane.
async fn serve_http1<F, Fut, B>(sock: std::net::TcpListener, mut shutdown: Shutdown, handler: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<http::Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = match tokio::net::TcpListener::from_std(sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Admin or metrics listener failed.");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .await;
        });
    }
}

/// The file watch: on any event in the traffic or approvals folder, and on every poll,
/// resubmit `traffic.yaml` when its bytes *or the approvals folder* changed (a token may be
/// what it was waiting for, even if it was refused rather than kept pending), then re-check
/// pending changes and emergency reviews (tokens expire and come due with time alone).
async fn watch_files(
    settings: Arc<Settings>,
    gate: GateHandle,
    cluster: Option<Arc<Cluster>>,
    mut last_seen: Option<String>,
    mut last_folder: String,
    mut shutdown: Shutdown,
) {
    let (tx, mut rx) = mpsc::channel(1);
    let traffic = settings.paths.traffic.clone();
    let approvals = settings.paths.approvals.clone();
    let _watcher = match file_watch::watch(&[&traffic, &approvals], tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "File watch unavailable; polling only.");
            None
        }
    };
    let mut poll = tokio::time::interval(file_watch::POLL);
    loop {
        tokio::select! {
            _ = rx.recv() => {
                tokio::time::sleep(file_watch::DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
            _ = shutdown.wait() => return,
        }
        let (g, p, a) = (gate.clone(), traffic.clone(), approvals.clone());
        let (seen, folder_seen) = (last_seen.clone(), last_folder.clone());
        let fleet = cluster.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let folder = Folder::read(&a).fingerprint;
            let seen = if folder == folder_seen { seen } else { None };
            let d = match &fleet {
                None => submit_file(&g, &p, Source::File, seen.as_deref()),
                Some(c) => {
                    // A fleet member publishes what changed; the watch brings it back.
                    let d = std::fs::read(&p).ok().map(|b| store::digest(&b));
                    if d != seen {
                        c.files_changed();
                    }
                    d
                }
            };
            let _ = g.lock().recheck(Source::File);
            (d, folder)
        })
        .await;
        if let Ok((d, folder)) = pass {
            last_seen = d;
            last_folder = folder;
        }
    }
}
