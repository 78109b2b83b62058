//! W3C Trace Context (`traceparent`, `tracestate`) on the data plane (`tracing` in
//! `sluice.yaml`).
//!
//! A request's `traceparent` is kept (same trace, its sampled flag) or, when absent or
//! malformed, a new trace is started, sampled by `tracing.sample` as OpenTelemetry's
//! trace-id-ratio sampler does (the trace id's low 64 bits against the ratio). sluice's
//! own span id replaces the parent id sent upstream, so the upstream's spans hang under
//! sluice's. `tracestate` travels untouched with a kept trace and is removed with a new one.
//! Per request: one header parse, two random draws, one 55-byte header value.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::settings::Tracing;
use crate::telemetry::otlp::Exporter;

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Tracing as configured: sampling and the optional exporter.
#[derive(Debug)]
pub struct Tracer {
    /// New traces whose id's low 64 bits fall below this are sampled.
    threshold: u64,
    /// Always sample (`sample: 1.0`), whatever the id.
    all: bool,
    /// OTLP export of sampled spans.
    pub exporter: Option<Exporter>,
}

/// One request's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCtx {
    /// The trace.
    pub trace_id: [u8; 16],
    /// sluice's span for this request.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
}

// === impl Tracer ===

impl Tracer {
    /// A tracer for `t`, with `exporter` when `tracing.otlp` is set.
    pub fn new(t: &Tracing, exporter: Option<Exporter>) -> Tracer {
        let ratio = t.sample.clamp(0.0, 1.0);
        Tracer {
            threshold: (ratio * u64::MAX as f64) as u64,
            all: ratio >= 1.0,
            exporter,
        }
    }

    /// The request's trace context; rewrites `traceparent` (and drops a stale `tracestate`)
    /// in `headers` for the upstream.
    pub fn propagate(&self, headers: &mut HeaderMap) -> TraceCtx {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        // Two `traceparent` headers are as malformed as one bad one (W3C §3.2).
        let parsed = match (values.next(), values.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        let span_id = nonzero_id();
        let ctx = match parsed {
            Some((trace_id, parent, flags)) => TraceCtx {
                trace_id,
                span_id,
                parent: Some(parent),
                sampled: flags & 1 == 1,
            },
            None => {
                headers.remove(&TRACESTATE);
                let trace_id: u128 = loop {
                    let t: u128 = rand::random();
                    if t != 0 {
                        break t;
                    }
                };
                let trace_id = trace_id.to_be_bytes();
                let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
                TraceCtx {
                    trace_id,
                    span_id,
                    parent: None,
                    sampled: self.all || low < self.threshold,
                }
            }
        };
        headers.insert(TRACEPARENT.clone(), ctx.traceparent());
        ctx
    }
}

fn nonzero_id() -> [u8; 8] {
    loop {
        let s: u64 = rand::random();
        if s != 0 {
            return s.to_be_bytes();
        }
    }
}

// === impl TraceCtx ===

impl TraceCtx {
    /// `00-<trace id>-<span id>-<flags>`, as sent upstream.
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut buf[3..35]);
        buf[35] = b'-';
        hex(&self.span_id, &mut buf[36..52]);
        buf[52] = b'-';
        buf[53] = b'0';
        buf[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The trace id as 32 lowercase hex digits (access log).
    pub fn trace_id_hex(&self) -> String {
        let mut buf = [0u8; 32];
        hex(&self.trace_id, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        // W3C: lowercase only.
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

/// Parses a `traceparent` (W3C Trace Context §3.2): trace id, parent id, flags. Version 00
/// must be exactly 55 bytes; a later version may carry more after a `-`; `ff` is invalid;
/// all-zero ids are invalid.
pub fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace: [u8; 16] = unhex(&v[3..35])?;
    let parent: [u8; 8] = unhex(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn tracer(sample: f64) -> Tracer {
        Tracer::new(&Tracing { sample, otlp: None }, None)
    }

    #[test]
    fn keeps_a_valid_trace_with_a_new_parent_id() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(TP));
        h.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
        let ctx = tracer(0.0).propagate(&mut h);
        assert!(ctx.sampled, "the caller's sampled flag wins over sample: 0");
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let sent = h[&TRACEPARENT].to_str().unwrap().to_string();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert!(
            !sent.contains("00f067aa0ba902b7"),
            "sluice's span is the new parent"
        );
        assert_eq!(h[&TRACESTATE], "vendor=x");
        assert_eq!(parse(sent.as_bytes()).map(|p| p.1), Some(ctx.span_id));
    }

    #[test]
    fn starts_a_trace_when_absent_or_malformed() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let mut h = HeaderMap::new();
            if !bad.is_empty() {
                h.insert(&TRACEPARENT, HeaderValue::from_str(bad).unwrap());
            }
            h.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
            let ctx = tracer(1.0).propagate(&mut h);
            assert_eq!(ctx.parent, None, "{bad}");
            assert!(ctx.sampled);
            assert!(
                h.get(&TRACESTATE).is_none(),
                "a new trace drops the old state"
            );
            assert!(parse(h[&TRACEPARENT].as_bytes()).is_some());
        }
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(parse(v1.as_bytes()).is_some());
        // Two traceparent headers: malformed.
        let mut h = HeaderMap::new();
        h.append(&TRACEPARENT, HeaderValue::from_static(TP));
        h.append(&TRACEPARENT, HeaderValue::from_static(TP));
        assert_eq!(tracer(1.0).propagate(&mut h).parent, None);
    }

    #[test]
    fn samples_new_traces_by_ratio() {
        let t = tracer(0.25);
        let n = 20_000;
        let sampled = (0..n)
            .filter(|_| t.propagate(&mut HeaderMap::new()).sampled)
            .count();
        let share = sampled as f64 / n as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        assert!(!tracer(0.0).propagate(&mut HeaderMap::new()).sampled);
    }
}
