//! OTLP/HTTP export of one span per sampled request (`tracing.otlp`).
//!
//! The data plane hands a small [`SpanRecord`] to a bounded channel with `try_send` (a full
//! queue drops the span and counts it) and goes on; one exporter thread takes what was
//! queued every few milliseconds (`telemetry::handoff`), batches records,
//! turns them into the OTLP protobuf messages of the maintained `opentelemetry-proto` crate,
//! and POSTs them to `{endpoint}/v1/traces`. A collector that is down or slow costs the
//! requests nothing: its batches are dropped and counted
//! (`sluice_tracing_spans_dropped_total{reason="export_failed"}`), and the first failure
//! of a streak is logged with the setting's name, as is the recovery.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metrics::Counter;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message as _;

use super::{Registry, SPANS_DROPPED, SPANS_EXPORTED, handoff};
use crate::config::settings::Otlp;

/// Spans waiting for the exporter before new ones are dropped.
const QUEUE: usize = 8192;
/// Spans in one export request at most.
const BATCH: usize = 512;
/// A partial batch waits at most this long.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where spans go: a parsed `tracing.otlp.endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (and send as `Host`).
    pub authority: String,
    /// The request path: the endpoint's path + `/v1/traces`.
    pub path: String,
}

/// One finished request, as the data plane hands it over (encoded by the exporter).
#[derive(Debug)]
pub struct SpanRecord {
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// sluice's span id (the `parent-id` it sent upstream).
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Request start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// Response head sent, Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// Request method.
    pub method: Method,
    /// Route name (none matched: `None`).
    pub route: Option<std::sync::Arc<str>>,
    /// `stable`/`canary` on rollouts, else the upstream name.
    pub variant: Option<HeaderValue>,
    /// Upstream pool name.
    pub upstream: Option<std::sync::Arc<str>>,
    /// Status sent to the client.
    pub status: u16,
    /// The `x-sluice-flags` value sent upstream: `key=variant; key=variant`.
    pub flags: Option<HeaderValue>,
    /// sluice's own error code, when it answered itself.
    pub error: Option<&'static str>,
}

/// The sending side, held by the data plane.
#[derive(Debug)]
pub struct Exporter {
    tx: SyncSender<SpanRecord>,
    queue_full: Counter,
}

/// The exporter thread's counters.
struct Counters {
    exported: Counter,
    failed: Counter,
}

// === impl Target ===

impl Target {
    /// Parses `http://host:port[/base]`; the error says what is wrong with the setting.
    pub fn parse(endpoint: &str) -> Result<Target, String> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            if endpoint.starts_with("https://") {
                format!("`{endpoint}`: only http:// is supported (run a collector or agent beside sluice)")
            } else {
                format!("`{endpoint}` is not a URL: write `http://host:4318`")
            }
        })?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let a: http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("`{endpoint}`: {e}"))?;
        if a.as_str().contains('@') || base.contains(['?', '#']) {
            return Err(format!("`{endpoint}`: host, port and path only"));
        }
        let authority = match a.port_u16() {
            Some(_) => a.as_str().to_string(),
            None => format!("{}:80", a.host()),
        };
        Ok(Target {
            authority,
            path: format!("{base}/v1/traces"),
        })
    }
}

// === impl Exporter ===

impl Exporter {
    /// Starts the exporter thread for `cfg` (already validated by the settings).
    pub fn start(cfg: &Otlp, registry: &Registry) -> std::io::Result<Exporter> {
        let target = Target::parse(&cfg.endpoint)
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Counters {
            exported: registry.counter(SPANS_EXPORTED, &[]),
            failed: registry.counter(SPANS_DROPPED, &[("reason", "export_failed")]),
        };
        let queue_full = registry.counter(SPANS_DROPPED, &[("reason", "queue_full")]);
        let timeout = cfg.timeout.0;
        let endpoint = cfg.endpoint.clone();
        std::thread::Builder::new()
            .name("sluice-otlp".into())
            .spawn(move || export_loop(rx, target, endpoint, timeout, counters))?;
        Ok(Exporter { tx, queue_full })
    }

    /// Queues a span; never blocks.
    pub fn record(&self, span: SpanRecord) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(span) {
            self.queue_full.increment(1);
        }
    }
}

fn export_loop(
    rx: Receiver<SpanRecord>,
    target: Target,
    endpoint: String,
    timeout: Duration,
    counters: Counters,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("OTLP exporter runtime failed to start; spans will be dropped.");
        return;
    };
    let resource = resource();
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(BATCH);
    let mut failing = false;
    // When the batch's first span was taken: a partial batch waits `FLUSH_EVERY` at most.
    let mut oldest: Option<Instant> = None;
    loop {
        let open = handoff::take(&rx, &mut batch, BATCH);
        if !batch.is_empty() && oldest.is_none() {
            oldest = Some(Instant::now());
        }
        let due =
            batch.len() >= BATCH || !open || oldest.is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
        if !due {
            std::thread::sleep(handoff::TICK);
            continue;
        }
        oldest = None;
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let body = encode(&resource, batch.drain(..));
            let sent = rt.block_on(async {
                tokio::time::timeout(timeout, post(&target, body))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
            });
            match sent {
                Ok(()) => {
                    counters.exported.increment(n);
                    if failing {
                        failing = false;
                        tracing::info!(endpoint, "OTLP export works again.");
                    }
                }
                Err(e) => {
                    counters.failed.increment(n);
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            setting = "tracing.otlp.endpoint",
                            endpoint,
                            error = %e,
                            dropped = n,
                            "OTLP export failed; spans are dropped and counted until it works again (requests are unaffected)."
                        );
                    }
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// One POST of an encoded `ExportTraceServiceRequest`.
async fn post(target: &Target, body: Vec<u8>) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read the body so the collector's answer is complete (partial success is not retried).
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// `service.name` and the SDK-ish attributes collectors group by.
fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", "sluice"),
            kv("service.version", super::VERSION),
            kv("telemetry.sdk.name", "sluice"),
            kv("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn text(v: &Option<HeaderValue>) -> String {
    v.as_ref()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The protobuf body for a batch.
pub fn encode(resource: &Resource, spans: impl Iterator<Item = SpanRecord>) -> Vec<u8> {
    let spans = spans.map(to_span).collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "sluice".into(),
                    version: super::VERSION.into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec()
}

/// A server span with HTTP semantic-convention attributes, sluice's routing decision, and
/// one `feature_flag.evaluation` event per flag (OpenFeature's semantic conventions).
fn to_span(r: SpanRecord) -> Span {
    let method = r.method.as_str().to_string();
    let route = r.route.as_deref().unwrap_or("");
    let name = if route.is_empty() {
        method.clone()
    } else {
        format!("{method} {route}")
    };
    let mut attributes = vec![
        kv("http.request.method", method),
        kv_int("http.response.status_code", i64::from(r.status)),
        kv("sluice.route", route),
        kv("sluice.variant", text(&r.variant)),
        kv("sluice.upstream", r.upstream.as_deref().unwrap_or("")),
    ];
    if let Some(e) = r.error {
        attributes.push(kv("error.type", e));
    }
    let flags = text(&r.flags);
    let events = flags
        .split("; ")
        .filter_map(|kv| kv.split_once('='))
        .map(|(key, variant)| span::Event {
            time_unix_nano: r.start_unix_nanos,
            name: "feature_flag.evaluation".into(),
            attributes: vec![
                self::kv("feature_flag.key", key),
                self::kv("feature_flag.result.variant", percent_decode(variant)),
                self::kv("feature_flag.provider.name", "sluice"),
            ],
            dropped_attributes_count: 0,
        })
        .collect();
    // Server errors mark the span as failed (OpenTelemetry HTTP conventions: 5xx only).
    let status = (r.status >= 500).then(|| Status {
        message: r.error.unwrap_or_default().to_string(),
        code: 2,
    });
    Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x100 | u32::from(r.parent.is_some()) << 9 | 1,
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: r.start_unix_nanos,
        end_time_unix_nano: r.end_unix_nanos,
        attributes,
        events,
        status,
        ..Default::default()
    }
}

/// Undoes the percent-encoding of `x-sluice-flags` values.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let t = Target::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let t = Target::parse("http://collector/otlp/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("collector:80", "/otlp/v1/traces")
        );
        assert!(
            Target::parse("https://c:4318")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(Target::parse("c:4318").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn span_shape() {
        let r = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            start_unix_nanos: 10,
            end_unix_nanos: 20,
            method: Method::GET,
            route: Some("checkout".into()),
            variant: Some(HeaderValue::from_static("canary")),
            upstream: Some("v2".into()),
            status: 503,
            flags: Some(HeaderValue::from_static("theme=dark; new-checkout=on%20x")),
            error: Some("no_healthy_endpoint"),
        };
        let body = encode(&resource(), std::iter::once(r));
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.name, "GET checkout");
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.events.len(), 2);
        let e = &s.events[1];
        assert_eq!(e.name, "feature_flag.evaluation");
        let get = |k: &str| {
            e.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
        };
        assert_eq!(
            get("feature_flag.result.variant").and_then(|v| v.value),
            Some(any_value::Value::StringValue("on x".into()))
        );
    }
}
