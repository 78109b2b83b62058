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

/// `sluice_requests_total{route,upstream,rollout,variant,code_class}`.
pub const REQUESTS_TOTAL: &str = "sluice_requests_total";
/// `sluice_request_duration_seconds{route,rollout,variant}`.
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
/// `sluice_upstream_errors_total{upstream,kind}`.
pub const UPSTREAM_ERRORS: &str = "sluice_upstream_errors_total";
/// `sluice_client_errors_total{kind}`: requests failed by the client (aborted, malformed,
/// timeout), apart from upstream errors.
pub const CLIENT_ERRORS: &str = "sluice_client_errors_total";
/// `sluice_active_connections{listener}`.
pub const ACTIVE_CONNECTIONS: &str = "sluice_active_connections";
/// `sluice_rollout_weight{rollout}`.
pub const ROLLOUT_WEIGHT: &str = "sluice_rollout_weight";
/// `sluice_rollout_phase{rollout,phase}`.
pub const ROLLOUT_PHASE: &str = "sluice_rollout_phase";
/// `sluice_rollout_verdicts_total{rollout,verdict}`.
pub const ROLLOUT_VERDICTS: &str = "sluice_rollout_verdicts_total";
/// `sluice_rollbacks_total{rollout,reason}`.
pub const ROLLBACKS: &str = "sluice_rollbacks_total";
/// `sluice_flag_evaluations_total{flag,variant,reason}`.
pub const FLAG_EVALUATIONS: &str = "sluice_flag_evaluations_total";
/// `sluice_config_version`.
pub const CONFIG_VERSION: &str = "sluice_config_version";
/// `sluice_config_activations_total{class}`.
pub const CONFIG_ACTIVATIONS: &str = "sluice_config_activations_total";
/// `sluice_config_rejections_total{reason}`.
pub const CONFIG_REJECTIONS: &str = "sluice_config_rejections_total";
/// `sluice_config_pending`.
pub const CONFIG_PENDING: &str = "sluice_config_pending";
/// `sluice_emergency_reviews_overdue`.
pub const EMERGENCY_OVERDUE: &str = "sluice_emergency_reviews_overdue";

/// Request-duration buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A per-instance metrics registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Families>>,
}

#[derive(Debug, Default)]
struct Families {
    help: BTreeMap<String, String>,
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

    /// The counter `name{labels}`, created on first use.
    pub fn counter(&self, name: &'static str, labels: &[(&str, &str)]) -> Counter {
        self.register_counter(&key(name, labels), &META)
    }

    /// The gauge `name{labels}`, created on first use.
    pub fn gauge(&self, name: &'static str, labels: &[(&str, &str)]) -> Gauge {
        self.register_gauge(&key(name, labels), &META)
    }

    /// The histogram `name{labels}`, created on first use.
    pub fn histogram(&self, name: &'static str, labels: &[(&str, &str)]) -> Histogram {
        self.register_histogram(&key(name, labels), &META)
    }

    /// Sets the `# HELP` text of a family.
    pub fn describe(&self, name: &str, help: &str) {
        self.lock().help.insert(name.to_string(), help.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        // A panic while holding this lock cannot leave the maps inconsistent (inserts only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let f = self.lock();
        let mut out = String::with_capacity(4096);
        for (name, series) in &f.counters {
            header(&mut out, &f.help, name, "counter");
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
            header(&mut out, &f.help, name, "gauge");
            for (labels, g) in series {
                let v = f64::from_bits(g.0.load(Ordering::Relaxed));
                let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), fmt_f64(v));
            }
        }
        for (name, series) in &f.histograms {
            header(&mut out, &f.help, name, "histogram");
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

fn header(out: &mut String, help: &BTreeMap<String, String>, name: &str, kind: &str) {
    if let Some(h) = help.get(name) {
        let _ = writeln!(out, "# HELP {name} {h}");
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

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

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
        let mut f = self.lock();
        let h = f
            .histograms
            .entry(key.name().to_string())
            .or_default()
            .entry(labels_of(key))
            .or_insert_with(|| Arc::new(BucketHistogram::new(DURATION_BUCKETS)))
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

/// Initializes logging to stderr; `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_histograms() {
        let r = Registry::new();
        r.describe(REQUESTS_TOTAL, "Requests served.");
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
            text.contains("# HELP sluice_requests_total Requests served."),
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

    #[test]
    fn instances_are_separate() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter(REQUESTS_TOTAL, &[]).increment(1);
        assert!(!b.render().contains(REQUESTS_TOTAL));
    }
}
