//! The compiled, immutable view of an active traffic document that the data plane reads.
//!
//! Built off the hot path by the change gate and published with one `ArcSwap::store`.
//! Everything a request needs is resolved here: the route table, upstream pools, rollout
//! handles (whose weight is an atomic the rollout controller moves without a rebuild), and
//! metric handles. State that must outlive a reload (endpoint in-flight counts, rollout
//! weights) is carried over from the previous snapshot by name.

pub mod addresses;
pub mod balance;
mod published;
mod recording;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use metrics::{Counter, Histogram};

use crate::config::traffic::model::{self, CheckedRollout, CheckedRoute, ListenerRef, Model};
use crate::config::traffic::{
    self as config, ActiveHealth, Balance, Builtin, ParsedTraffic, PassiveHealth, Rollout,
    StepGate, Strategy, TrafficDoc,
};
use crate::flags::headers::RouteHeaders;
use crate::proxy::connect::Connector;
use crate::proxy::flags::{Arm, FlagRuntime, FlagTarget};
use crate::proxy::health::EndpointHealth;
use crate::proxy::retry::{RetryBudget, RetryPolicy};
use crate::request_match::RequestMatcher;
use crate::rollout::{ErrorStatuses, RolloutWindows};
use crate::telemetry::{self, Registry};
pub use addresses::Addresses;
pub use published::Published;
pub use routes::{HostMatch, RouteMatcher, RouteTable};

/// An active document, compiled.
#[derive(Debug)]
pub struct Snapshot {
    /// The document's version.
    pub version: u64,
    /// `sha256:<hex>` of the document's bytes.
    pub digest: String,
    /// Routes, first match wins.
    pub routes: RouteTable<Route>,
    /// Upstream pools, indexed by [`Target`].
    pub upstreams: Vec<Arc<Upstream>>,
    /// Rollouts, indexed by [`Target`].
    pub rollouts: Vec<Arc<RolloutRt>>,
    /// Compiled flags, `flag_context` and flag metric handles (data plane and OFREP).
    pub flags: FlagRuntime,
    /// `notifications`, with their secrets read.
    pub notifications: Arc<[crate::notify::Target]>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name (shared: the access log and spans take a copy per request).
    pub name: Arc<str>,
    /// The name as a header value (`x-sluice-route`).
    pub name_header: HeaderValue,
    /// Where it sends.
    pub target: Target,
    /// Retry policy (`retries`).
    pub retry: RetryPolicy,
    /// Flags injected upstream, in order (SPEC §4).
    pub flags: RouteHeaders,
    /// `mirror`, compiled (boxed: most routes have none). A rollout's or step's mirror, when
    /// one is active, takes its place: at most one copy per request.
    pub mirror: Option<Box<RouteMirror>>,
}

/// A route's `mirror` and the metrics of its copies.
#[derive(Debug)]
pub struct RouteMirror {
    /// Which requests are copied, the bounds, the counters.
    pub rt: Arc<MirrorRt>,
    /// `sluice_requests_total{variant="mirror"}` of this route.
    pub metrics: VariantMetrics,
}

/// Where a route sends.
#[derive(Debug)]
pub enum Target {
    /// One upstream pool.
    Upstream {
        /// Index into [`Snapshot::upstreams`].
        upstream: usize,
        /// Metrics of this route and variant.
        metrics: VariantMetrics,
    },
    /// A rollout between two pools.
    Rollout {
        /// Index into [`Snapshot::rollouts`].
        rollout: usize,
        /// Metrics for the stable side.
        stable: VariantMetrics,
        /// Metrics for the canary side.
        canary: VariantMetrics,
        /// Metrics for the mirror copies, by mirror upstream (the rollout's and its steps'
        /// `mirror`; empty for most rollouts).
        mirrors: Box<[(usize, VariantMetrics)]>,
    },
    /// The upstream a flag's variant maps to.
    Flag(FlagTarget),
    /// OFREP served by sluice itself (`builtin: ofrep`).
    Ofrep {
        /// Metrics of this route (`upstream` is empty, `variant` is `ofrep`).
        metrics: VariantMetrics,
    },
}

/// Metric handles of one (route, variant).
#[derive(Debug, Clone)]
pub struct VariantMetrics {
    /// `x-sluice-variant` value.
    pub variant_header: HeaderValue,
    /// `sluice_requests_total` by code class 1xx..5xx (index 0..4).
    pub requests: [Counter; 5],
    /// `sluice_request_duration_seconds`.
    pub duration: Histogram,
}

/// An upstream pool.
#[derive(Debug)]
pub struct Upstream {
    /// Pool name (shared: the access log takes a copy per request).
    pub name: Arc<str>,
    /// Endpoints (resolved addresses); replaced when re-resolution finds new addresses.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// `endpoints` as written in the document (`host:port`).
    pub endpoint_specs: Vec<String>,
    /// Balancing policy.
    pub balance: Balance,
    /// Round-robin cursor.
    rr: AtomicUsize,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Request start to response headers.
    pub request_timeout: Duration,
    /// `sluice_upstream_errors_total` by kind.
    pub errors: UpstreamErrors,
    /// How connections are made (TLS, protocol).
    pub connector: Connector,
    /// Passive health: consecutive failures eject an endpoint.
    pub passive_health: Option<PassiveHealth>,
    /// Active health probes.
    pub active_health: Option<ActiveHealth>,
    /// Retries to this pool stay within this budget.
    pub retry_budget: RetryBudget,
}

/// `sluice_upstream_errors_total{upstream,kind}` handles.
#[derive(Debug, Clone)]
pub struct UpstreamErrors {
    /// kind="connect".
    pub connect: Counter,
    /// kind="timeout".
    pub timeout: Counter,
    /// kind="reset".
    pub reset: Counter,
    /// kind="tls".
    pub tls: Counter,
}

/// One upstream endpoint; shared across snapshots while its pool keeps it.
#[derive(Debug)]
pub struct Endpoint {
    /// Address connected to.
    pub addr: SocketAddr,
    /// The host it was resolved from (or the IP literal): default TLS server name.
    pub host: Box<str>,
    /// Requests in flight (least_request).
    pub in_flight: AtomicU32,
    /// Passive and active health.
    pub health: EndpointHealth,
    /// It was seen closing a kept-alive connection under a request (without `Connection:
    /// close`): from then on, requests that may go out again keep a copy of their head on
    /// its reused connections (see `proxy::pool`).
    pub drops_kept_alive: AtomicBool,
}

/// State of a rollout that outlives snapshots: the canary weight the controller moves.
#[derive(Debug)]
pub struct RolloutState {
    /// Canary weight in basis points (0..=10,000).
    pub weight_bp: AtomicU32,
    /// The step that is live (progressing, paused or at a gate), [`NO_STEP`] otherwise:
    /// picks a step's `mirror`. Stored by the runner with the weight.
    pub live_step: AtomicU32,
    /// The spec this state was started for; a changed spec restarts it.
    spec: Rollout,
}

/// A compiled rollout.
#[derive(Debug)]
pub struct RolloutRt {
    /// Rollout name.
    pub name: Box<str>,
    /// Its definition in the active document (the rollout runner drives it from here).
    pub spec: Rollout,
    /// Shared state (weight).
    pub state: Arc<RolloutState>,
    /// Index of the stable (blue-green: active) upstream.
    pub stable: usize,
    /// Index of the canary (blue-green: preview) upstream.
    pub canary: usize,
    /// Header carrying the sticky key.
    pub sticky_header: Option<HeaderName>,
    /// Cookie carrying the sticky key.
    pub sticky_cookie: Option<Box<str>>,
    /// Set the cookie when the key was drawn.
    pub set_cookie: bool,
    /// Max-Age of that cookie, seconds.
    pub cookie_max_age: u64,
    /// Requests always sent to canary (blue-green: preview): `canary_match` /
    /// `preview_match`, compiled.
    pub force_canary: Option<RequestMatcher>,
    /// Per-variant request windows the data plane records into and the rollout runner
    /// judges; carried across snapshots together with [`RolloutRt::state`].
    pub windows: Arc<RolloutWindows>,
    /// `analysis.error_statuses`, compiled.
    pub errors: ErrorStatuses,
    /// The split's hasher state after the rollout's name ([`crate::bucket::rollout_prefix`]).
    pub bucket_prefix: crate::bucket::Murmur3,
    /// `mirror`, compiled (none: nothing is copied).
    pub mirror: Option<Arc<MirrorRt>>,
    /// `steps[i].mirror`, compiled, by step (empty when no step mirrors); the live step's
    /// replaces [`RolloutRt::mirror`] while it is live.
    pub step_mirrors: Box<[Option<Arc<MirrorRt>>]>,
}

/// [`RolloutState::live_step`] when no step is live (finished, or awaiting its start hooks).
pub const NO_STEP: u32 = u32::MAX;

/// Where a rollout's copies to its canary are judged: the rollout's windows (as canary
/// traffic) and its error statuses.
#[derive(Debug)]
pub struct MirrorJudge {
    /// The rollout's windows (shared with [`RolloutRt::windows`]).
    pub windows: Arc<RolloutWindows>,
    /// The rollout's `analysis.error_statuses`.
    pub errors: ErrorStatuses,
}

/// A rollout's `mirror`: which requests are copied, the bounds, and its counters.
#[derive(Debug)]
pub struct MirrorRt {
    /// Index of the mirror upstream.
    pub upstream: usize,
    /// `percent` in basis points.
    bp: u64,
    /// `max_body`, bytes.
    pub max_body: u64,
    /// `max_in_flight`.
    pub max_in_flight: u32,
    /// Requests offered so far (the pick is a function of it).
    seq: AtomicU64,
    /// Copies out now; shared with the previous snapshot's mirror of this rollout, so a
    /// new document does not reset the bound.
    pub in_flight: Arc<AtomicU32>,
    /// `sluice_mirror_skipped_total{reason="body"}`.
    pub skipped_body: Counter,
    /// `sluice_mirror_skipped_total{reason="in_flight"}`.
    pub skipped_in_flight: Counter,
    /// `sluice_mirror_errors_total{kind}`.
    pub errors: UpstreamErrors,
    /// A rollout's (or step's) mirror to its own canary: each copy's outcome is canary
    /// evidence for the analysis (a dark launch). None for other mirrors.
    pub judge: Option<MirrorJudge>,
}

/// What building a snapshot needs besides the document.
pub struct BuildCtx<'a> {
    /// Where metric handles are registered.
    pub registry: &'a Registry,
    /// Hostname endpoints, resolved before the build (which does no lookup).
    pub addresses: &'a Addresses,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles `traffic` as the gate would, and throws the result away: what `sluice
    /// validate` runs so that it refuses exactly what activation would. No lookups (the
    /// build does none: addresses are resolved before it), no metrics kept.
    pub fn check(traffic: &ParsedTraffic) -> Result<(), String> {
        let ctx = BuildCtx {
            registry: &Registry::new(),
            addresses: &Addresses::default(),
        };
        Snapshot::build(traffic, "sha256:check", &ctx, None).map(|_| ())
    }

    /// Compiles a checked document. `prev` carries endpoint and rollout state over.
    /// Fails only when an upstream's TLS files or a notification's secret file do not load.
    pub fn build(
        traffic: &ParsedTraffic,
        digest: &str,
        ctx: &BuildCtx<'_>,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let (doc, model) = (&traffic.doc, &traffic.model);
        let upstreams = doc
            .upstreams
            .iter()
            .map(|(name, u)| build_upstream(name, u, ctx, prev))
            .collect::<Result<Vec<_>, String>>()?;
        let rollouts: Vec<Arc<RolloutRt>> = doc
            .rollouts
            .iter()
            .zip(&model.rollouts)
            .map(|((name, r), m)| build_rollout(name, r, m, ctx, prev))
            .collect();
        let flags = FlagRuntime::build(doc, ctx.registry)?;
        let notifications = doc
            .notifications
            .iter()
            .map(crate::notify::Target::build)
            .collect::<Result<Vec<_>, String>>()?;
        let built = Built {
            model,
            upstreams: &upstreams,
            rollouts: &rollouts,
            flags: &flags,
            registry: ctx.registry,
            prev,
        };
        let routes = doc
            .routes
            .iter()
            .zip(&model.routes)
            .map(|(r, m)| built.route(doc, r, m))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot {
            version: doc.version,
            digest: digest.to_string(),
            routes: RouteTable::new(routes),
            upstreams,
            rollouts,
            flags,
            notifications: notifications.into(),
        })
    }
}

/// What routes are compiled against: the pools and rollouts built so far.
struct Built<'a> {
    model: &'a Model,
    upstreams: &'a [Arc<Upstream>],
    rollouts: &'a [Arc<RolloutRt>],
    flags: &'a FlagRuntime,
    registry: &'a Registry,
    prev: Option<&'a Snapshot>,
}

// === impl Built ===

impl Built<'_> {
    fn route(
        &self,
        doc: &TrafficDoc,
        r: &config::Route,
        m: &CheckedRoute,
    ) -> Result<(RouteMatcher, Route), String> {
        let host = match r.matches.host.as_deref() {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase().into()),
                None => HostMatch::Exact(h.to_ascii_lowercase().into()),
            },
        };
        let matcher = RouteMatcher {
            listener: match m.listener {
                ListenerRef::Any => None,
                ListenerRef::At(i) => Some(i),
                // Checked without sluice.yaml: no listener has this index.
                ListenerRef::Unchecked => Some(usize::MAX),
            },
            host,
            path_prefix: r.matches.path_prefix.as_deref().map(Into::into),
            request: m.request.clone(),
            methods: m.methods.clone(),
            client_cert: r.matches.client_cert.as_ref().map(|c| routes::CertRule {
                subject: c.subject.as_deref().map(Into::into),
                san: c.san.as_deref().map(Into::into),
            }),
        };
        let upstream_metrics = |u: usize| {
            let name = &doc.upstreams.keys().nth(u).map_or("", String::as_str);
            let header = &self.model.upstreams[u].name_header;
            variant_metrics(self.registry, &r.name, name, "", header.clone())
        };
        let route_flags = self.flags.route_headers(&r.name, &r.flags)?;
        let target = match &m.target {
            model::Target::Upstream(u) => Target::Upstream {
                upstream: *u,
                metrics: upstream_metrics(*u),
            },
            model::Target::Rollout(i) => {
                let rt = &self.rollouts[*i];
                let side = |u: usize, variant: &'static str| {
                    variant_metrics(
                        self.registry,
                        &r.name,
                        &self.upstreams[u].name,
                        &rt.name,
                        HeaderValue::from_static(variant),
                    )
                };
                let mut ups: Vec<usize> = rt
                    .mirror
                    .iter()
                    .chain(rt.step_mirrors.iter().flatten())
                    .map(|m| m.upstream)
                    .collect();
                ups.sort_unstable();
                ups.dedup();
                Target::Rollout {
                    rollout: *i,
                    stable: side(rt.stable, "stable"),
                    canary: side(rt.canary, "canary"),
                    mirrors: ups.into_iter().map(|u| (u, side(u, "mirror"))).collect(),
                }
            }
            model::Target::Flag { flag, arms } => Target::Flag(FlagTarget::build(
                self.flags,
                flag,
                arms,
                &route_flags,
                |u| Arm {
                    upstream: u,
                    metrics: upstream_metrics(u),
                },
            )?),
            model::Target::Builtin(Builtin::Ofrep) => Target::Ofrep {
                metrics: variant_metrics(
                    self.registry,
                    &r.name,
                    "",
                    "",
                    HeaderValue::from_static("ofrep"),
                ),
            },
        };
        let mirror = match (&r.mirror, m.mirror) {
            (Some(spec), Some(u)) => {
                let old = self.prev.and_then(|p| {
                    p.routes
                        .iter()
                        .find(|o| *o.name == *r.name)
                        .and_then(|o| o.mirror.as_ref())
                });
                let owner = ("route", r.name.as_str());
                Some(Box::new(RouteMirror {
                    rt: build_mirror(owner, spec, u, None, self.registry, old.map(|o| &o.rt)),
                    metrics: variant_metrics(
                        self.registry,
                        &r.name,
                        &self.upstreams[u].name,
                        "",
                        HeaderValue::from_static("mirror"),
                    ),
                }))
            }
            _ => None,
        };
        Ok((
            matcher,
            Route {
                name: r.name.as_str().into(),
                name_header: m.name_header.clone(),
                target,
                retry: RetryPolicy::new(r.retries.as_ref()),
                flags: route_flags,
                mirror,
            },
        ))
    }
}

/// An upstream pool; endpoints and in-flight counts carry over from `prev`'s pool of the
/// same name.
fn build_upstream(
    name: &str,
    u: &config::Upstream,
    ctx: &BuildCtx<'_>,
    prev: Option<&Snapshot>,
) -> Result<Arc<Upstream>, String> {
    let old = prev.and_then(|p| p.upstreams.iter().find(|x| *x.name == *name));
    let resolved: Vec<Vec<SocketAddr>> = u.endpoints.iter().map(|e| ctx.addresses.get(e)).collect();
    let endpoints = merge_endpoints(
        &u.endpoints,
        &resolved,
        old.map(|o| o.endpoints()).as_deref().map(|v| &v[..]),
    );
    let connector = Connector::build(u).map_err(|e| format!("upstreams.{name}.tls: {e}"))?;
    if endpoints.is_empty() {
        tracing::warn!(upstream = %name, "No endpoint of this upstream resolved; requests to it get 503.");
    }
    let err = |kind: &str| {
        ctx.registry.counter(
            telemetry::UPSTREAM_ERRORS,
            &[("upstream", name), ("kind", kind)],
        )
    };
    Ok(Arc::new(Upstream {
        name: name.into(),
        endpoints: ArcSwap::from_pointee(endpoints),
        endpoint_specs: u.endpoints.clone(),
        balance: u.balance,
        rr: AtomicUsize::new(0),
        connect_timeout: u.connect_timeout.0,
        request_timeout: u.request_timeout.0,
        errors: UpstreamErrors {
            connect: err("connect"),
            timeout: err("timeout"),
            reset: err("reset"),
            tls: err("tls"),
        },
        connector,
        passive_health: u.passive_health.clone(),
        active_health: u.active_health.clone(),
        retry_budget: RetryBudget::default(),
    }))
}

/// A rollout; its weight and windows carry over from `prev` when its progress does.
fn build_rollout(
    name: &str,
    r: &Rollout,
    m: &CheckedRollout,
    ctx: &BuildCtx<'_>,
    prev: Option<&Snapshot>,
) -> Arc<RolloutRt> {
    let old = prev.and_then(|p| p.rollouts.iter().find(|x| *x.name == *name));
    let kept = old.filter(|o| same_progress_spec(&o.state.spec, r));
    let state = match kept {
        Some(o) => o.state.clone(),
        None => Arc::new(RolloutState {
            weight_bp: AtomicU32::new(initial_weight(r)),
            live_step: AtomicU32::new(initial_step(r)),
            spec: r.clone(),
        }),
    };
    ctx.registry
        .gauge(telemetry::ROLLOUT_WEIGHT, &[("rollout", name)])
        .set(state.weight_bp.load(Ordering::Relaxed) as f64 / 100.0);
    let windows = recording::windows(kept, r);
    let errors = ErrorStatuses::from_ranges(&m.error_statuses);
    let old = old.map(|o| &**o);
    // Copies to the rollout's own canary are judged as canary traffic.
    let compile = |spec: &config::Mirror, u: usize, old: Option<&Arc<MirrorRt>>| {
        let judge = (u == m.canary).then(|| MirrorJudge {
            windows: windows.clone(),
            errors: errors.clone(),
        });
        build_mirror(("rollout", name), spec, u, judge, ctx.registry, old)
    };
    let mirror = match (&r.mirror, m.mirror) {
        (Some(spec), Some(u)) => Some(compile(spec, u, old.and_then(|o| o.mirror.as_ref()))),
        _ => None,
    };
    let step_mirrors = m
        .step_mirrors
        .iter()
        .zip(&r.steps)
        .enumerate()
        .map(|(j, (u, st))| {
            let old = old
                .and_then(|o| o.step_mirrors.get(j))
                .and_then(Option::as_ref);
            Some(compile(st.mirror.as_ref()?, (*u)?, old))
        })
        .collect();
    Arc::new(RolloutRt {
        name: name.into(),
        spec: r.clone(),
        state,
        stable: m.stable,
        canary: m.canary,
        sticky_header: m.sticky_header.clone(),
        sticky_cookie: r.sticky.cookie.as_deref().map(Into::into),
        set_cookie: r.sticky.set_cookie,
        cookie_max_age: r.sticky.cookie_max_age.0.as_secs(),
        force_canary: m.force_canary.clone(),
        windows,
        errors,
        bucket_prefix: crate::bucket::rollout_prefix(name),
        mirror,
        step_mirrors,
    })
}

/// A compiled `mirror` to upstream `upstream`, counted under the label `owner` (`rollout` or
/// `route`, and the name), its in-flight count carried over from `old`.
fn build_mirror(
    owner: (&str, &str),
    spec: &config::Mirror,
    upstream: usize,
    judge: Option<MirrorJudge>,
    registry: &Registry,
    old: Option<&Arc<MirrorRt>>,
) -> Arc<MirrorRt> {
    let skipped =
        |reason: &str| registry.counter(telemetry::MIRROR_SKIPPED, &[owner, ("reason", reason)]);
    let err = |kind: &str| registry.counter(telemetry::MIRROR_ERRORS, &[owner, ("kind", kind)]);
    let in_flight = old.map_or_else(Arc::default, |o| o.in_flight.clone());
    Arc::new(MirrorRt {
        upstream,
        bp: u64::from(spec.percent.0),
        max_body: spec.max_body.0,
        max_in_flight: spec.max_in_flight,
        seq: AtomicU64::new(0),
        in_flight,
        skipped_body: skipped("body"),
        skipped_in_flight: skipped("in_flight"),
        errors: UpstreamErrors {
            connect: err("connect"),
            timeout: err("timeout"),
            reset: err("reset"),
            tls: err("tls"),
        },
        judge,
    })
}

/// The step live when a rollout starts: step 0, unless start hooks hold it.
fn initial_step(r: &Rollout) -> u32 {
    if !r.hooks.confirm_rollout.is_empty() || !r.hooks.pre_rollout.is_empty() {
        NO_STEP
    } else {
        0
    }
}

/// The weight a rollout starts at: the first step's (0 if it is a gate); blue-green starts at 0.
/// A rollout with `confirm_rollout` or `pre_rollout` hooks starts at 0: its canary gets no
/// traffic before they pass, not even between the activation and the runner's first tick.
pub fn initial_weight(r: &Rollout) -> u32 {
    if !r.hooks.confirm_rollout.is_empty() || !r.hooks.pre_rollout.is_empty() {
        return 0;
    }
    match r.strategy {
        Strategy::BlueGreen => 0,
        Strategy::Canary => match r.steps.first() {
            Some(s) if s.gate == Some(StepGate::Manual) => 0,
            Some(s) => s.weight.map(|w| w.0).unwrap_or(0),
            None => 0,
        },
    }
}

/// Whether a rollout's progress carries over to `new` (SPEC §6: stable, canary and steps unchanged).
fn same_progress_spec(old: &Rollout, new: &Rollout) -> bool {
    old.strategy == new.strategy
        && old.stable == new.stable
        && old.canary == new.canary
        && old.active == new.active
        && old.preview == new.preview
        && old.steps == new.steps
}

/// Whether a series belongs to `doc`: every route, upstream, rollout and flag its labels
/// name is one of the document's, and so is a flag's variant (an empty value names none).
/// What [`Registry::retain`] keeps when `doc` becomes active.
pub fn series_of(doc: &TrafficDoc) -> impl Fn(&[(String, String)]) -> bool + '_ {
    let routes: std::collections::HashSet<&str> =
        doc.routes.iter().map(|r| r.name.as_str()).collect();
    move |labels| {
        let flag = labels
            .iter()
            .find(|(k, _)| k == "flag")
            .map(|(_, v)| v.as_str());
        labels.iter().all(|(k, v)| {
            v.is_empty()
                || match (k.as_str(), flag) {
                    ("route", _) => routes.contains(v.as_str()),
                    ("upstream", _) => doc.upstreams.contains_key(v),
                    ("rollout", _) => doc.rollouts.contains_key(v),
                    ("flag", _) => doc.flags.contains_key(v),
                    ("variant", Some(f)) => doc
                        .flags
                        .get(f)
                        .and_then(|d| d.get("variants"))
                        .and_then(|vs| vs.as_object())
                        .is_some_and(|vs| vs.contains_key(v)),
                    _ => true,
                }
        })
    }
}

fn variant_metrics(
    registry: &Registry,
    route: &str,
    upstream: &str,
    rollout: &str,
    variant_header: HeaderValue,
) -> VariantMetrics {
    let variant = variant_header.to_str().unwrap_or("");
    let class = |c: &str| {
        registry.counter(
            telemetry::REQUESTS_TOTAL,
            &[
                ("route", route),
                ("upstream", upstream),
                ("rollout", rollout),
                ("variant", variant),
                ("code_class", c),
            ],
        )
    };
    VariantMetrics {
        requests: [
            class("1xx"),
            class("2xx"),
            class("3xx"),
            class("4xx"),
            class("5xx"),
        ],
        duration: registry.histogram(
            telemetry::REQUEST_DURATION,
            &[("route", route), ("rollout", rollout), ("variant", variant)],
        ),
        variant_header,
    }
}

/// Endpoints from resolved addresses (one list per spec entry), reusing `old` endpoints
/// with the same address so that their health and in-flight counts carry over. A spec
/// entry that resolved to nothing keeps the addresses it had in `old` (a failed lookup is
/// not a reason to drop a working endpoint).
fn merge_endpoints(
    specs: &[String],
    resolved: &[Vec<SocketAddr>],
    old: Option<&[Arc<Endpoint>]>,
) -> Vec<Arc<Endpoint>> {
    let mut out: Vec<Arc<Endpoint>> = Vec::new();
    for (spec, addrs) in specs.iter().zip(resolved) {
        let host = addresses::host_of(spec);
        let kept: Vec<SocketAddr>;
        let addrs = if addrs.is_empty() {
            kept = old
                .unwrap_or(&[])
                .iter()
                .filter(|e| &*e.host == host)
                .map(|e| e.addr)
                .collect();
            &kept
        } else {
            addrs
        };
        for &addr in addrs {
            if out.iter().any(|x| x.addr == addr) {
                continue;
            }
            let reuse = old
                .and_then(|o| o.iter().find(|x| x.addr == addr && &*x.host == host))
                .cloned();
            out.push(reuse.unwrap_or_else(|| {
                Arc::new(Endpoint {
                    addr,
                    host: host.into(),
                    in_flight: AtomicU32::new(0),
                    health: EndpointHealth::default(),
                    drops_kept_alive: AtomicBool::new(false),
                })
            }));
        }
    }
    out
}

// === impl Upstream ===

impl Upstream {
    /// The current endpoints.
    #[inline]
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    /// Whether any endpoint is written as a hostname (re-resolved periodically).
    pub fn has_hostnames(&self) -> bool {
        self.endpoint_specs
            .iter()
            .any(|s| s.parse::<SocketAddr>().is_err())
    }

    /// Whether some hostname endpoint has no address yet (it was not resolved before the
    /// build, or its lookups have failed so far).
    pub fn has_unresolved(&self) -> bool {
        let eps = self.endpoints.load();
        self.endpoint_specs
            .iter()
            .filter(|s| s.parse::<SocketAddr>().is_err())
            .any(|s| {
                let host = addresses::host_of(s);
                !eps.iter().any(|e| &*e.host == host)
            })
    }

    /// Stores re-resolved addresses (one list per spec entry) if they differ.
    pub fn apply_resolved(&self, resolved: &[Vec<SocketAddr>]) {
        let cur = self.endpoints.load_full();
        let next = merge_endpoints(&self.endpoint_specs, resolved, Some(&cur));
        let same =
            next.len() == cur.len() && next.iter().zip(cur.iter()).all(|(a, b)| a.addr == b.addr);
        if !same {
            tracing::info!(upstream = %self.name, endpoints = next.len(), "Endpoints re-resolved.");
            self.endpoints.store(Arc::new(next));
        }
    }

    /// Picks an endpoint by the pool's `balance` (see [`balance`]); `avoid` (a retry's
    /// previous endpoint) is skipped when another one qualifies. `None` only when the pool
    /// has no endpoint.
    #[inline]
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        balance::pick(self, avoid)
    }
}

// === impl MirrorRt ===

impl MirrorRt {
    /// Whether the next request is copied: exactly `percent` of requests, evenly spread
    /// (the n-th is copied when `⌊n·p⌋` steps), so the share holds over any stretch and
    /// tests can count on it.
    #[inline]
    pub fn pick(&self) -> bool {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (n + 1).wrapping_mul(self.bp) / 10_000 != n.wrapping_mul(self.bp) / 10_000
    }
}

// === impl RolloutRt ===

impl RolloutRt {
    /// The canary weight in basis points.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.state.weight_bp.load(Ordering::Relaxed)
    }

    /// The mirror copying this rollout's requests now: the live step's `mirror`, else the
    /// rollout's own.
    #[inline]
    pub fn active_mirror(&self) -> Option<&Arc<MirrorRt>> {
        if !self.step_mirrors.is_empty() {
            let step = self.state.live_step.load(Ordering::Relaxed) as usize;
            if let Some(Some(m)) = self.step_mirrors.get(step) {
                return Some(m);
            }
        }
        self.mirror.as_ref()
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::config::traffic::CheckContext;

    #[test]
    fn the_build_looks_nothing_up() {
        let text = r#"
version: 1
change: { id: C-1, author: alice }
upstreams:
  named: { endpoints: ["localhost:8080", "10.0.0.1:8080"] }
routes:
  - { name: all, to: { upstream: named } }
"#;
        let parsed = TrafficDoc::parse(text, &CheckContext::default()).unwrap();
        let registry = Registry::new();
        // Nothing resolved beforehand: the hostname stays unresolved, the literal is used.
        let none = Addresses::default();
        let ctx = BuildCtx {
            registry: &registry,
            addresses: &none,
        };
        let snap = Snapshot::build(&parsed, "sha256:x", &ctx, None).unwrap();
        let up = &snap.upstreams[0];
        assert_eq!(up.endpoints().len(), 1);
        assert!(up.has_unresolved());
        // Resolved before the build (as the gate does before its lock): both are there.
        let resolved = Addresses::resolve(&parsed.doc);
        let ctx = BuildCtx {
            registry: &registry,
            addresses: &resolved,
        };
        let snap = Snapshot::build(&parsed, "sha256:x", &ctx, None).unwrap();
        assert!(snap.upstreams[0].endpoints().len() >= 2);
        assert!(!snap.upstreams[0].has_unresolved());
    }

    #[test]
    fn a_mirror_picks_exactly_its_share_evenly_and_keeps_its_bound_across_documents() {
        let text = |pct: &str| {
            format!(
                r#"
version: 1
change: {{ id: C-1, author: alice }}
upstreams:
  a: {{ endpoints: ["10.0.0.1:80"] }}
  b: {{ endpoints: ["10.0.0.2:80"] }}
  m: {{ endpoints: ["10.0.0.3:80"] }}
routes:
  - {{ name: all, to: {{ rollout: r }} }}
rollouts:
  r: {{ strategy: canary, stable: a, canary: b, steps: [{{ weight: 10 }}], mirror: {{ upstream: m, percent: {pct} }} }}
"#
            )
        };
        let registry = Registry::new();
        let none = Addresses::default();
        let ctx = BuildCtx {
            registry: &registry,
            addresses: &none,
        };
        let parsed = TrafficDoc::parse(&text("5.25"), &CheckContext::default()).unwrap();
        let snap = Snapshot::build(&parsed, "sha256:x", &ctx, None).unwrap();
        let m = snap.rollouts[0].mirror.as_ref().unwrap();
        assert_eq!(
            (m.upstream, m.max_body, m.max_in_flight),
            (2, 64 * 1024, 64)
        );
        // 525 of every 10,000, and never two picks closer than 19 requests apart.
        let picks: Vec<usize> = (0..20_000).filter(|_| m.pick()).collect();
        assert_eq!(picks.len(), 1_050);
        assert!(picks.windows(2).all(|w| w[1] - w[0] >= 19), "{picks:?}");
        m.in_flight.fetch_add(3, Ordering::Relaxed);
        let parsed = TrafficDoc::parse(&text("100"), &CheckContext::default()).unwrap();
        let next = Snapshot::build(&parsed, "sha256:y", &ctx, Some(&snap)).unwrap();
        let n = next.rollouts[0].mirror.as_ref().unwrap();
        assert_eq!(
            n.in_flight.load(Ordering::Relaxed),
            3,
            "copies still out count"
        );
        assert!((0..100).all(|_| n.pick()));
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn re_resolution_keeps_endpoints_and_survives_failed_lookups() {
        let specs = vec!["svc.internal:80".to_string(), "10.0.0.9:80".to_string()];
        let first = merge_endpoints(
            &specs,
            &[
                addrs(&["10.0.0.1:80", "10.0.0.2:80"]),
                addrs(&["10.0.0.9:80"]),
            ],
            None,
        );
        assert_eq!(first.len(), 3);
        assert_eq!(&*first[0].host, "svc.internal");
        // One address moved: the unchanged ones are the same endpoints (health carries over).
        let second = merge_endpoints(
            &specs,
            &[
                addrs(&["10.0.0.2:80", "10.0.0.3:80"]),
                addrs(&["10.0.0.9:80"]),
            ],
            Some(&first),
        );
        assert_eq!(second.len(), 3);
        assert!(Arc::ptr_eq(&second[0], &first[1]));
        assert_eq!(second[1].addr, "10.0.0.3:80".parse().unwrap());
        assert!(Arc::ptr_eq(&second[2], &first[2]));
        // A failed lookup keeps what the name had.
        let third = merge_endpoints(
            &specs,
            &[Vec::new(), addrs(&["10.0.0.9:80"])],
            Some(&second),
        );
        assert_eq!(third.len(), 3);
        assert!(Arc::ptr_eq(&third[0], &second[0]) && Arc::ptr_eq(&third[1], &second[1]));
    }
}
