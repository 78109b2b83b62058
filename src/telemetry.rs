//! Metrics and logging: metric names in one place, a per-instance registry behind the
//! `metrics` facade, Prometheus text rendering, and tracing setup.
//!
//! The registry is per instance (tests run several sluices in one process) and not
//! installed globally. Handles are resolved when a snapshot is built; recording is one
//! relaxed atomic add (counters) or a bucket search plus two adds (histograms), with no
//! per-request allocation, clock read or label formatting. That is why sluice does not use
//! metrics-exporter-prometheus: its histograms buffer every sample with a timestamp until
//! the next scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

pub mod handoff;
pub mod otlp;
pub mod process;

/// The version sluice was built as (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit sluice was built from (`build.rs`: `SLUICE_COMMIT`, git, or `unknown`).
pub const COMMIT: &str = env!("SLUICE_COMMIT");

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in fixed buckets (upper bounds, in the family's unit).
    Histogram(&'static [f64]),
}

/// One metric family: its name, kind and `# HELP` text. Every family sluice exports is a
/// constant here and a row of [`FAMILIES`]; code records through these constants, so a name
/// and its help live in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text: one sentence.
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, buckets: &'static [f64], help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Histogram(buckets),
        help,
    }
}

/// Request-duration buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

// To add a family: a constant below (name, kind, help) and its row in `FAMILIES`; the
// registry refuses a family that is not in the table (see `every_family_renders_help_and_type`).

/// `sluice_build_info{version,commit}`: always 1.
pub const BUILD_INFO: Family = gauge(
    "sluice_build_info",
    "Always 1; the labels say which version and commit is running.",
);
/// `sluice_requests_total{route,upstream,rollout,variant,code_class}`.
pub const REQUESTS_TOTAL: Family = counter(
    "sluice_requests_total",
    "Requests answered, by route, upstream, rollout, variant and status class.",
);
/// `sluice_request_duration_seconds{route,rollout,variant}`.
pub const REQUEST_DURATION: Family = histogram(
    "sluice_request_duration_seconds",
    DURATION_BUCKETS,
    "Time from request start to response headers.",
);
/// `sluice_upstream_errors_total{upstream,kind}`.
pub const UPSTREAM_ERRORS: Family =
    counter("sluice_upstream_errors_total", "Upstream failures by kind.");
/// `sluice_client_errors_total{kind}`: requests that failed by the client's doing, kept apart
/// from upstream errors, endpoint health and rollout analysis.
pub const CLIENT_ERRORS: Family = counter(
    "sluice_client_errors_total",
    "Requests failed by the client (aborted, malformed body, body timeout), by kind.",
);
/// `sluice_active_connections{listener}`.
pub const ACTIVE_CONNECTIONS: Family = gauge(
    "sluice_active_connections",
    "Open client connections per listener.",
);
/// `sluice_connections_refused_total{listener,reason}`: connections closed before any
/// request (reason `proxy_protocol`, `client_cert`, `tls_handshake`).
pub const CONNECTIONS_REFUSED: Family = counter(
    "sluice_connections_refused_total",
    "Connections closed before any request, by listener and reason.",
);
/// `sluice_rollout_weight{rollout}`.
pub const ROLLOUT_WEIGHT: Family = gauge("sluice_rollout_weight", "Canary weight in percent.");
/// `sluice_rollout_phase{rollout,phase}`.
pub const ROLLOUT_PHASE: Family = gauge(
    "sluice_rollout_phase",
    "1 for the current phase of each rollout, 0 for the others.",
);
/// `sluice_rollout_verdicts_total{rollout,verdict}`.
pub const ROLLOUT_VERDICTS: Family = counter(
    "sluice_rollout_verdicts_total",
    "Rollout analysis verdicts, by outcome.",
);
/// `sluice_rollbacks_total{rollout,reason}`.
pub const ROLLBACKS: Family = counter(
    "sluice_rollbacks_total",
    "Rollouts rolled back or swapped back, by reason.",
);
/// `sluice_mirror_skipped_total{rollout,reason}`.
pub const MIRROR_SKIPPED: Family = counter(
    "sluice_mirror_skipped_total",
    "Requests picked for mirroring but not copied: in_flight (max_in_flight copies already out) or body (longer than max_body, or never ended).",
);
/// `sluice_mirror_errors_total{rollout,kind}`.
pub const MIRROR_ERRORS: Family = counter(
    "sluice_mirror_errors_total",
    "Mirror copies that got no answer: connect, timeout, reset, tls.",
);
/// `sluice_notifications_total{result}`.
pub const NOTIFICATIONS: Family = counter(
    "sluice_notifications_total",
    "Notifications delivered (sent) or given up after every retry (failed).",
);
/// `sluice_hook_calls_total{rollout,hook,outcome}`.
pub const HOOK_CALLS: Family = counter(
    "sluice_hook_calls_total",
    "Rollout hook calls (each try), by rollout, hook kind and outcome: passed (2xx), failed (another status) or error (no answer: connect, TLS, timeout).",
);
/// Hook-call buckets, in seconds (a hook may take up to its 5 minute timeout).
pub const HOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// `sluice_hook_duration_seconds{rollout,hook,outcome}`.
pub const HOOK_DURATION: Family = histogram(
    "sluice_hook_duration_seconds",
    HOOK_BUCKETS,
    "Time of one rollout hook call (one try), from connect to the answer's end or the timeout.",
);
/// `sluice_notifications_dropped_total`.
pub const NOTIFICATIONS_DROPPED: Family = counter(
    "sluice_notifications_dropped_total",
    "Audit events not queued for notification because the queue was full.",
);
/// `sluice_flag_evaluations_total{flag,variant,reason}`.
pub const FLAG_EVALUATIONS: Family = counter(
    "sluice_flag_evaluations_total",
    "Flag evaluations on the data plane and OFREP, by flag, variant and reason.",
);
/// `sluice_config_version`.
pub const CONFIG_VERSION: Family = gauge(
    "sluice_config_version",
    "Version of the active traffic document (0 when none).",
);
/// `sluice_config_activations_total{class}`.
pub const CONFIG_ACTIVATIONS: Family = counter(
    "sluice_config_activations_total",
    "Documents activated, by class.",
);
/// `sluice_config_rejections_total{reason}`.
pub const CONFIG_REJECTIONS: Family = counter(
    "sluice_config_rejections_total",
    "Documents or tokens refused, by reason.",
);
/// `sluice_config_pending`.
pub const CONFIG_PENDING: Family = gauge(
    "sluice_config_pending",
    "Valid changes waiting for approvals.",
);
/// `sluice_emergency_reviews_overdue`.
pub const EMERGENCY_OVERDUE: Family = gauge(
    "sluice_emergency_reviews_overdue",
    "Emergency changes whose review is overdue.",
);
/// `sluice_cluster_connected` (SPEC §12).
pub const CLUSTER_CONNECTED: Family = gauge(
    "sluice_cluster_connected",
    "1 while this node is connected to etcd with a live lease.",
);
/// `sluice_cluster_leader` (SPEC §12).
pub const CLUSTER_LEADER: Family = gauge(
    "sluice_cluster_leader",
    "1 while this node leads the fleet.",
);
/// `sluice_cluster_nodes` (SPEC §12).
pub const CLUSTER_NODES: Family = gauge(
    "sluice_cluster_nodes",
    "Live nodes registered in the fleet, as this node sees it.",
);
/// `sluice_cluster_sync_seconds` (SPEC §12).
pub const CLUSTER_SYNC: Family = histogram(
    "sluice_cluster_sync_seconds",
    DURATION_BUCKETS,
    "Time from a candidate's etcd revision being seen to its local activation.",
);

/// `sluice_tracing_spans_exported_total`: spans an OTLP collector accepted.
pub const SPANS_EXPORTED: Family = counter(
    "sluice_tracing_spans_exported_total",
    "Spans exported to the OTLP collector.",
);
/// `sluice_tracing_spans_dropped_total{reason}` (queue_full, export_failed).
pub const SPANS_DROPPED: Family = counter(
    "sluice_tracing_spans_dropped_total",
    "Spans dropped instead of exported, by reason (queue_full, export_failed).",
);

/// `process_cpu_seconds_total` (read from `/proc` at scrape time, see [`process`]).
pub const PROCESS_CPU: Family = counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);
/// `process_resident_memory_bytes`.
pub const PROCESS_RESIDENT: Family = gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
/// `process_virtual_memory_bytes`.
pub const PROCESS_VIRTUAL: Family = gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
);
/// `process_open_fds`.
pub const PROCESS_OPEN_FDS: Family = gauge("process_open_fds", "Number of open file descriptors.");
/// `process_max_fds`.
pub const PROCESS_MAX_FDS: Family = gauge(
    "process_max_fds",
    "Maximum number of open file descriptors.",
);
/// `process_start_time_seconds`.
pub const PROCESS_START_TIME: Family = gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);

/// Every family sluice exports (SPEC §10), one row each.
pub const FAMILIES: &[Family] = &[
    BUILD_INFO,
    REQUESTS_TOTAL,
    REQUEST_DURATION,
    UPSTREAM_ERRORS,
    CLIENT_ERRORS,
    ACTIVE_CONNECTIONS,
    CONNECTIONS_REFUSED,
    ROLLOUT_WEIGHT,
    ROLLOUT_PHASE,
    ROLLOUT_VERDICTS,
    ROLLBACKS,
    FLAG_EVALUATIONS,
    CONFIG_VERSION,
    CONFIG_ACTIVATIONS,
    CONFIG_REJECTIONS,
    CONFIG_PENDING,
    EMERGENCY_OVERDUE,
    SPANS_EXPORTED,
    SPANS_DROPPED,
    NOTIFICATIONS,
    NOTIFICATIONS_DROPPED,
    HOOK_CALLS,
    HOOK_DURATION,
    MIRROR_SKIPPED,
    MIRROR_ERRORS,
    CLUSTER_CONNECTED,
    CLUSTER_LEADER,
    CLUSTER_NODES,
    CLUSTER_SYNC,
    PROCESS_CPU,
    PROCESS_RESIDENT,
    PROCESS_VIRTUAL,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
];

/// The family named `name`, if sluice exports it.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// A per-instance metrics registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Families>>,
}

#[derive(Debug, Default)]
struct Families {
    counters: BTreeMap<String, BTreeMap<Labels, Arc<AtomicCounter>>>,
    gauges: BTreeMap<String, BTreeMap<Labels, Arc<AtomicGauge>>>,
    histograms: BTreeMap<String, BTreeMap<Labels, Arc<BucketHistogram>>>,
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct AtomicCounter(AtomicU64);

#[derive(Debug, Default)]
struct AtomicGauge(AtomicU64);

/// A fixed-bucket histogram: one counter per bucket plus a sum in nanoseconds.
#[derive(Debug)]
struct BucketHistogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

// === impl Registry ===

impl Registry {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `family{labels}`, created on first use.
    pub fn counter(&self, family: Family, labels: &[(&str, &str)]) -> Counter {
        debug_assert_eq!(family.kind, Kind::Counter, "{}", family.name);
        self.register_counter(&key(family.name, labels), &META)
    }

    /// The gauge `family{labels}`, created on first use.
    pub fn gauge(&self, family: Family, labels: &[(&str, &str)]) -> Gauge {
        debug_assert_eq!(family.kind, Kind::Gauge, "{}", family.name);
        self.register_gauge(&key(family.name, labels), &META)
    }

    /// The histogram `family{labels}`, created on first use.
    pub fn histogram(&self, family: Family, labels: &[(&str, &str)]) -> Histogram {
        let Kind::Histogram(buckets) = family.kind else {
            debug_assert!(false, "{} is not a histogram", family.name);
            return Histogram::noop();
        };
        let mut f = self.lock();
        let h = f
            .histograms
            .entry(family.name.to_string())
            .or_default()
            .entry(labels_of(&key(family.name, labels)))
            .or_insert_with(|| Arc::new(BucketHistogram::new(buckets)))
            .clone();
        Histogram::from_arc(h)
    }

    /// Removes every series whose labels `keep` refuses, and the families left empty: how
    /// series of routes, upstreams, rollouts and flags that the active document no longer
    /// names go away (SPEC §10: series are bounded by the config). A handle still held (a
    /// request in flight on the previous snapshot) counts on into a series nobody renders.
    pub fn retain(&self, keep: impl Fn(&[(String, String)]) -> bool) {
        let mut f = self.lock();
        f.counters.retain(|_, s| {
            s.retain(|l, _| keep(l));
            !s.is_empty()
        });
        f.gauges.retain(|_, s| {
            s.retain(|l, _| keep(l));
            !s.is_empty()
        });
        f.histograms.retain(|_, s| {
            s.retain(|l, _| keep(l));
            !s.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        // A panic while holding this lock cannot leave the maps inconsistent (whole-entry
        // inserts and removals only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `/metrics` serves: every registered family, then the `process_*` families.
    pub fn exposition(&self) -> String {
        let mut out = self.render();
        process::render(&mut out);
        out
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let f = self.lock();
        let mut out = String::with_capacity(4096);
        for (name, series) in &f.counters {
            header(&mut out, name, "counter");
            for (labels, c) in series {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    fmt_labels(labels, None),
                    c.0.load(Ordering::Relaxed)
                );
            }
        }
        for (name, series) in &f.gauges {
            header(&mut out, name, "gauge");
            for (labels, g) in series {
                let v = f64::from_bits(g.0.load(Ordering::Relaxed));
                let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), fmt_f64(v));
            }
        }
        for (name, series) in &f.histograms {
            header(&mut out, name, "histogram");
            for (labels, h) in series {
                let mut cumulative = 0u64;
                for (i, bound) in h.bounds.iter().enumerate() {
                    cumulative += h.counts[i].load(Ordering::Relaxed);
                    let le = fmt_f64(*bound);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        fmt_labels(labels, Some(&le))
                    );
                }
                cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    fmt_labels(labels, Some("+Inf"))
                );
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    fmt_labels(labels, None),
                    fmt_f64(sum)
                );
                let _ = writeln!(out, "{name}_count{} {cumulative}", fmt_labels(labels, None));
            }
        }
        out
    }
}

static META: Metadata<'static> = Metadata::new("sluice", metrics::Level::INFO, None);

fn key(name: &'static str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn labels_of(key: &Key) -> Labels {
    key.labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect()
}

fn header(out: &mut String, name: &str, kind: &str) {
    if let Some(f) = family(name) {
        let _ = writeln!(out, "# HELP {name} {}", f.help);
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let mut first = true;
    for (k, v) in labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le.map(|l| ("le", l)))
    {
        if !first {
            s.push(',');
        }
        first = false;
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v.is_nan() {
        return "NaN".into();
    }
    format!("{v}")
}

// Help texts come from `FAMILIES`, not from `describe_*`.
impl Recorder for Registry {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _help: SharedString) {}

    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _help: SharedString) {}

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _help: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let mut f = self.lock();
        let c = f
            .counters
            .entry(key.name().to_string())
            .or_default()
            .entry(labels_of(key))
            .or_default()
            .clone();
        Counter::from_arc(c)
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let mut f = self.lock();
        let g = f
            .gauges
            .entry(key.name().to_string())
            .or_default()
            .entry(labels_of(key))
            .or_default()
            .clone();
        Gauge::from_arc(g)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let buckets = match family(key.name()).map(|f| f.kind) {
            Some(Kind::Histogram(b)) => b,
            _ => DURATION_BUCKETS,
        };
        let mut f = self.lock();
        let h = f
            .histograms
            .entry(key.name().to_string())
            .or_default()
            .entry(labels_of(key))
            .or_insert_with(|| Arc::new(BucketHistogram::new(buckets)))
            .clone();
        Histogram::from_arc(h)
    }
}

// === impl AtomicCounter ===

impl CounterFn for AtomicCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

// === impl AtomicGauge ===

impl AtomicGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
    }
}

impl GaugeFn for AtomicGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

// === impl BucketHistogram ===

impl BucketHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        BucketHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = if value > 0.0 { (value * 1e9) as u64 } else { 0 };
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// How log lines are written (`--log-format`, `SLUICE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object a line, fields flattened (README: "Logs").
    Json,
}

// === impl LogFormat ===

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("log format `{s}` is not `text` or `json`")),
        }
    }
}

/// Initializes logging to standard error with `filter` (an `EnvFilter` directive such as
/// `info` or `debug,hyper=warn`). Colour only when standard error is a terminal and
/// `NO_COLOR` is unset, so files and pipes get plain text.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("log level `{filter}`: {e}"))?;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_histograms() {
        let r = Registry::new();
        let c = r.counter(REQUESTS_TOTAL, &[("route", "a"), ("code_class", "2xx")]);
        c.increment(3);
        r.counter(REQUESTS_TOTAL, &[("route", "a"), ("code_class", "2xx")])
            .increment(1);
        r.gauge(CONFIG_VERSION, &[]).set(7.0);
        let h = r.histogram(REQUEST_DURATION, &[("route", "a")]);
        h.record(0.002);
        h.record(0.2);
        let text = r.render();
        assert!(
            text.contains(&format!(
                "# HELP sluice_requests_total {}",
                REQUESTS_TOTAL.help
            )),
            "{text}"
        );
        assert!(
            text.contains("sluice_requests_total{route=\"a\",code_class=\"2xx\"} 4"),
            "{text}"
        );
        assert!(text.contains("sluice_config_version 7"), "{text}");
        assert!(
            text.contains("sluice_request_duration_seconds_bucket{route=\"a\",le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sluice_request_duration_seconds_count{route=\"a\"} 2"),
            "{text}"
        );
    }

    /// One series of every family, as `/metrics` would show them.
    fn every_family(r: &Registry) {
        for f in FAMILIES {
            match f.kind {
                Kind::Counter => r.counter(*f, &[("route", "a")]).increment(1),
                Kind::Gauge => r.gauge(*f, &[("rollout", "b")]).set(1.0),
                Kind::Histogram(_) => r.histogram(*f, &[("route", "a")]).record(0.01),
            }
        }
    }

    #[test]
    fn every_family_renders_help_and_type() {
        let r = Registry::new();
        every_family(&r);
        let text = r.render();
        for f in FAMILIES {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram(_) => "histogram",
            };
            assert!(
                text.contains(&format!("# HELP {} {}\n", f.name, f.help)),
                "{}: {text}",
                f.name
            );
            assert!(
                text.contains(&format!("# TYPE {} {kind}\n", f.name)),
                "{}: {text}",
                f.name
            );
            assert!(
                (f.name.starts_with("sluice_") || f.name.starts_with("process_"))
                    && !f.help.is_empty()
            );
        }
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is listed twice");
    }

    #[test]
    fn every_family_passes_promtool() {
        let r = Registry::new();
        every_family(&r);
        let Some(problems) = promtool_check(&r.render()) else {
            return;
        };
        assert!(problems.is_empty(), "promtool check metrics: {problems}");
    }

    /// `promtool check metrics` on `text`: `None` (after saying why) when promtool is not
    /// installed and `SLUICE_REQUIRE_PROMTOOL` is not set.
    fn promtool_check(text: &str) -> Option<String> {
        use std::io::Write as _;
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("SLUICE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                    "SLUICE_REQUIRE_PROMTOOL is set but promtool cannot run: {e}"
                );
                eprintln!("SKIPPED: promtool not found (apt-get install prometheus): {e}");
                return None;
            }
        };
        child.stdin.take()?.write_all(text.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(if out.status.success() {
            String::new()
        } else {
            said
        })
    }

    #[test]
    fn instances_are_separate() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter(REQUESTS_TOTAL, &[]).increment(1);
        assert!(!b.render().contains(REQUESTS_TOTAL.name));
    }
}
