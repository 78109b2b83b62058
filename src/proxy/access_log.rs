//! The JSON access log (`access_log` in `sluice.yaml`, off by default).
//!
//! Workers never touch the file: a request's entry goes into a bounded channel with
//! `try_send` (a full channel drops the entry and counts it) when its response body ends
//! (`proxy::record`), and one writer thread takes what was queued every few milliseconds
//! (`telemetry::handoff`), formats the lines and writes them through a buffer, flushing
//! whenever the channel runs dry. When the log is off, the data plane pays one `Option`
//! check.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use serde::Serialize;

use crate::config::settings::AccessLog as AccessLogSettings;
use crate::telemetry::handoff;

/// Entries waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// Entries the writer takes at once.
const TAKE: usize = 1024;

/// The sending side, held by the data plane.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: AtomicU64,
}

/// One request, as the data plane hands it over (formatted by the writer).
#[derive(Debug)]
pub struct Entry {
    /// When the request started.
    pub start: SystemTime,
    /// Route name (none matched: `None`).
    pub route: Option<std::sync::Arc<str>>,
    /// `stable`/`canary` on rollouts, else the upstream name.
    pub variant: Option<HeaderValue>,
    /// The upstream pool's name.
    pub upstream: Option<std::sync::Arc<str>>,
    /// The endpoint the request went to (the last one tried when none answered).
    pub upstream_addr: Option<SocketAddr>,
    /// Status sent to the client.
    pub status: u16,
    /// Request start to the response body's end (or the moment it was cut).
    pub duration: Duration,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes handed to the client's connection.
    pub bytes_out: u64,
    /// The response body was sent to its end (false: the client went away or the
    /// upstream broke off midway).
    pub complete: bool,
    /// Method.
    pub method: Method,
    /// Path (after dot-segment removal).
    pub path: Box<str>,
    /// Client address (behind trusted proxies: the client they name).
    pub client: IpAddr,
    /// The verified client certificate (mTLS listeners).
    pub client_cert: Option<std::sync::Arc<crate::proxy::client::ClientCert>>,
    /// The `x-sluice-flags` value injected upstream (empty when none).
    pub flags: Option<HeaderValue>,
    /// `x-sluice-error` code when sluice answered itself.
    pub error: Option<&'static str>,
    /// The `x-request-id` sent upstream (kept or generated).
    pub request_id: Option<HeaderValue>,
    /// The W3C trace id, when tracing is on.
    pub trace_id: Option<[u8; 16]>,
    /// The request's authority (`Host`, or the absolute URI's).
    pub host: Option<HeaderValue>,
    /// Whether the client connection is TLS.
    pub tls: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    route: &'a str,
    variant: &'a str,
    upstream: &'a str,
    upstream_addr: &'a str,
    status: u16,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    complete: bool,
    method: &'a str,
    path: &'a str,
    client: IpAddr,
    client_subject: &'a str,
    client_san: &'a str,
    flags: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    request_id: &'a str,
    trace_id: &'a str,
    host: &'a str,
    tls: bool,
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens the log and starts its writer thread; `None` when the log is off.
    pub fn start(s: &AccessLogSettings) -> std::io::Result<Option<AccessLog>> {
        if !s.enabled {
            return Ok(None);
        }
        let out: Box<dyn Write + Send> = match &s.path {
            Some(p) => Box::new(open(p)?),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(Some(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues an entry; never blocks.
    pub fn record(&self, e: Entry) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open(p: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

fn write_loop(rx: Receiver<Entry>, out: Box<dyn Write + Send>) {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut buf = Vec::with_capacity(512);
    let mut entries = Vec::with_capacity(TAKE);
    loop {
        let open = handoff::take(&rx, &mut entries, TAKE);
        let more = entries.len() == TAKE;
        for e in entries.drain(..) {
            buf.clear();
            if format(&e, &mut buf).is_ok() && w.write_all(&buf).is_err() {
                return;
            }
        }
        if more {
            continue;
        }
        // The queue ran dry: make what was written visible.
        if w.flush().is_err() || !open {
            return;
        }
        std::thread::sleep(handoff::TICK);
    }
}

/// One JSON line for `e`, newline included.
pub fn format(e: &Entry, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    let text = |v: &Option<HeaderValue>| -> String {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let variant = text(&e.variant);
    let flags = text(&e.flags);
    let request_id = text(&e.request_id);
    let host = text(&e.host);
    let trace_id = e.trace_id.map(hex::encode).unwrap_or_default();
    let upstream_addr = e.upstream_addr.map(|a| a.to_string()).unwrap_or_default();
    let line = Line {
        ts: httpdate_rfc3339(e.start),
        route: e.route.as_deref().unwrap_or(""),
        variant: &variant,
        upstream: e.upstream.as_deref().unwrap_or(""),
        upstream_addr: &upstream_addr,
        status: e.status,
        duration_ms: e.duration.as_secs_f64() * 1000.0,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        complete: e.complete,
        method: e.method.as_str(),
        path: &e.path,
        client: e.client,
        client_subject: e.client_cert.as_ref().map_or("", |c| &c.subject),
        client_san: e
            .client_cert
            .as_ref()
            .and_then(|c| c.first_san())
            .unwrap_or(""),
        flags: &flags,
        error: e.error,
        request_id: &request_id,
        trace_id: &trace_id,
        host: &host,
        tls: e.tls,
    };
    serde_json::to_writer(&mut *buf, &line)?;
    buf.push(b'\n');
    Ok(())
}

/// RFC 3339 UTC with milliseconds.
fn httpdate_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let e = Entry {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            route: Some("checkout".into()),
            variant: Some(HeaderValue::from_static("canary")),
            upstream: Some("v2".into()),
            upstream_addr: Some("10.0.0.7:8080".parse().unwrap()),
            status: 200,
            duration: Duration::from_micros(1500),
            bytes_in: 12,
            bytes_out: 3456,
            complete: true,
            method: Method::GET,
            path: "/checkout".into(),
            client: "127.0.0.1".parse().unwrap(),
            client_cert: Some(std::sync::Arc::new(crate::proxy::client::ClientCert {
                subject: "CN=alice,O=Example".into(),
                sans: vec!["spiffe://example.org/alice".into()].into(),
            })),
            flags: Some(HeaderValue::from_static("a=on; b=off")),
            error: None,
            request_id: Some(HeaderValue::from_static("req-1")),
            trace_id: Some([0xab; 16]),
            host: Some(HeaderValue::from_static("shop.example.com")),
            tls: true,
        };
        let mut buf = Vec::new();
        format(&e, &mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["route"], "checkout");
        assert_eq!(v["variant"], "canary");
        assert_eq!(v["upstream"], "v2");
        assert_eq!(v["upstream_addr"], "10.0.0.7:8080");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["bytes_in"], 12);
        assert_eq!(v["bytes_out"], 3456);
        assert_eq!(v["complete"], true);
        assert_eq!(v["flags"], "a=on; b=off");
        assert!(v.get("error").is_none());
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["host"], "shop.example.com");
        assert_eq!(v["tls"], true);
        assert_eq!(v["client_subject"], "CN=alice,O=Example");
        assert_eq!(v["client_san"], "spiffe://example.org/alice");
        assert_eq!(*buf.last().unwrap(), b'\n');
    }
}
