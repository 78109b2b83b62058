//! Notifications (SPEC §2.2 `notifications`): every audit event whose name matches a target's
//! `events` is POSTed to its `url`, as the audit line itself (`format: json`) or a Slack
//! message (`format: slack`), signed with HMAC-SHA256 when the target has a `secret_file`
//! (`x-sluice-signature: sha256=<hex>` over the exact body).
//!
//! The audit log hands each appended line to [`Notifier::offer`]: a `try_send` into a bounded
//! queue, so a slow or dead receiver never blocks an activation, a rollback or a request —
//! lines that do not fit are dropped and counted (`sluice_notifications_dropped_total`). A
//! dispatcher hands each line to the queue of every target that wants it ([`TARGET_QUEUE`]
//! lines each, full → dropped and counted the same way), and each target has a task of its
//! own that delivers its lines in order, each with up to [`ATTEMPTS`] tries and a doubling
//! backoff — so a dead or slow target delays only its own lines. An undeliverable one is
//! logged, counted (`sluice_notifications_total{result="failed"}`), and the next goes on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics::Counter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::traffic::{Notification, NotifyFormat};
use crate::shutdown::Shutdown;
use crate::snapshot::Published;
use crate::telemetry::{self, Registry};

/// Lines waiting for dispatch before new ones are dropped.
pub const QUEUE: usize = 1024;

/// Lines waiting for one target before new ones for it are dropped.
pub const TARGET_QUEUE: usize = 256;

/// Tries per delivery.
pub const ATTEMPTS: u32 = 3;

/// The wait before the second try; doubled before each later one.
const BACKOFF: Duration = Duration::from_millis(200);

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";

/// A notification target, ready to send to (built with the snapshot).
#[derive(Clone, PartialEq)]
pub struct Target {
    url: String,
    events: Vec<String>,
    secret: Option<Vec<u8>>,
    format: NotifyFormat,
    timeout: Duration,
    /// `https`: the CAs trusted instead of the web roots (read at each delivery).
    ca_file: Option<String>,
}

/// The audit log's side of the queue.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Bytes>,
    dropped: Counter,
}

/// The delivery side: the dispatcher and its per-target tasks.
pub struct Deliveries {
    rx: mpsc::Receiver<Bytes>,
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

/// A target's delivery task, fed through its own queue.
struct Worker {
    target: Target,
    tx: mpsc::Sender<Bytes>,
}

// === impl Target ===

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("signed", &self.secret.is_some())
            .field("format", &self.format)
            .finish()
    }
}

impl Target {
    /// The target of `n`, reading its secret file (blocking; at activation).
    pub fn build(n: &Notification) -> Result<Target, String> {
        let secret = match &n.secret_file {
            Some(p) => {
                let s = std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"))?;
                let s = s.trim_ascii().to_vec();
                if s.is_empty() {
                    return Err(format!("{p} is empty"));
                }
                Some(s)
            }
            None => None,
        };
        Ok(Target {
            url: n.url.clone(),
            events: n.events.clone(),
            secret,
            format: n.format,
            timeout: n.timeout.0,
            ca_file: n.ca_file.clone(),
        })
    }

    /// Whether this target wants the event named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|p| event_matches(p, name))
    }
}

/// `*` matches every event, `rollout.*` every event whose name starts with `rollout.`, any
/// other pattern only that name.
pub fn event_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether `pattern` matches the name of some audit event (SPEC §11).
pub fn matches_some_event(pattern: &str) -> bool {
    crate::change::audit::EventKind::ALL
        .iter()
        .any(|k| event_matches(pattern, k.name()))
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The body sent for an audit line: the line (`json`), or a Slack message naming the event.
pub fn body(format: NotifyFormat, line: &[u8], event: &Value) -> Bytes {
    match format {
        NotifyFormat::Json => Bytes::copy_from_slice(line),
        NotifyFormat::Slack => {
            let name = event["event"].as_str().unwrap_or("event");
            let mut text = format!("sluice: {name}");
            for key in ["rollout", "phase", "step", "weight", "reason", "actor"] {
                if let Some(v) = event.get(key).filter(|v| !v.is_null()) {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    text.push_str(&format!(" {key}={v}"));
                }
            }
            if let Some(c) = event.get("change").and_then(|c| c.get("version")) {
                text.push_str(&format!(" version={c}"));
            }
            Bytes::from(json!({ "text": text }).to_string())
        }
    }
}

// === impl Notifier ===

impl Notifier {
    /// A queue of [`QUEUE`] lines, with its counters.
    pub fn new(registry: &Registry) -> (Notifier, Deliveries) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let n = Notifier {
            tx,
            dropped: registry.counter(telemetry::NOTIFICATIONS_DROPPED, &[]),
        };
        let d = Deliveries {
            rx,
            sent: registry.counter(telemetry::NOTIFICATIONS, &[("result", "sent")]),
            failed: registry.counter(telemetry::NOTIFICATIONS, &[("result", "failed")]),
            dropped: n.dropped.clone(),
        };
        (n, d)
    }

    /// Offers an appended audit line; never waits.
    pub fn offer(&self, line: &[u8]) {
        if self.tx.try_send(Bytes::copy_from_slice(line)).is_err() {
            self.dropped.increment(1);
        }
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

// === impl Deliveries ===

impl Deliveries {
    /// Hands queued lines to the active document's targets until shutdown.
    pub async fn run(mut self, snapshot: Arc<Published>, mut shutdown: Shutdown) {
        let mut workers: Vec<Worker> = Vec::new();
        loop {
            let line = tokio::select! {
                l = self.rx.recv() => match l {
                    Some(l) => l,
                    None => return,
                },
                _ = shutdown.wait() => return,
            };
            let Some(snap) = snapshot.load_full() else {
                continue;
            };
            // A target no longer configured: its task delivers what it holds, then ends.
            workers.retain(|w| snap.notifications.contains(&w.target));
            if snap.notifications.is_empty() {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let name = event["event"].as_str().unwrap_or("");
            for t in snap.notifications.iter().filter(|t| t.wants(name)) {
                let i = match workers.iter().position(|w| w.target == *t) {
                    Some(i) => i,
                    None => {
                        workers.push(self.spawn(t.clone(), shutdown.clone()));
                        workers.len() - 1
                    }
                };
                if workers[i]
                    .tx
                    .try_send(body(t.format, &line, &event))
                    .is_err()
                {
                    self.dropped.increment(1);
                }
            }
        }
    }

    /// Starts the delivery task of `target`.
    fn spawn(&self, target: Target, mut shutdown: Shutdown) -> Worker {
        let (tx, mut rx) = mpsc::channel::<Bytes>(TARGET_QUEUE);
        let (sent, failed) = (self.sent.clone(), self.failed.clone());
        let t = target.clone();
        tokio::spawn(async move {
            loop {
                let body = tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) => b,
                        None => return,
                    },
                    _ = shutdown.wait() => return,
                };
                match deliver(&t, body).await {
                    Ok(()) => sent.increment(1),
                    Err(e) => {
                        failed.increment(1);
                        tracing::warn!(url = %t.url, error = %e, "A notification could not be delivered; it is dropped.");
                    }
                }
            }
        });
        Worker { target, tx }
    }
}

/// POSTs `body` to the target, with retries and backoff.
async fn deliver(t: &Target, body: Bytes) -> Result<(), String> {
    let signature = t
        .secret
        .as_ref()
        .map(|k| format!("sha256={}", hex::encode(hmac_sha256(k, &body))));
    let mut wait = BACKOFF;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        let headers: &[(&str, &str)] = match &signature {
            Some(s) => &[(SIGNATURE_HEADER, s.as_str())],
            None => &[],
        };
        let sent = crate::outbound::post(
            &t.url,
            t.ca_file.as_deref(),
            &body,
            headers,
            "sluice-notifications",
        );
        match tokio::time::timeout(t.timeout, sent).await {
            Ok(Ok(status)) if status.is_success() => return Ok(()),
            Ok(Ok(status)) => last = format!("{} answered {status}", t.url),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {:?}", t.timeout),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} tries)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn event_patterns() {
        assert!(event_matches("*", "change.activated"));
        assert!(event_matches("rollout.*", "rollout.aborted"));
        assert!(!event_matches("rollout.*", "rollouts.x"));
        assert!(!event_matches("roll*", "rollout.aborted"));
        assert!(event_matches("change.activated", "change.activated"));
        assert!(!event_matches("change.activated", "change.activated2"));
    }

    #[test]
    fn slack_bodies_name_the_event() {
        let e = json!({"event": "rollout.aborted", "rollout": "web", "reason": "metric", "weight": 0.0, "change": {"version": 3}});
        let b = body(NotifyFormat::Slack, b"{}", &e);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["text"],
            "sluice: rollout.aborted rollout=web weight=0.0 reason=metric version=3"
        );
        assert_eq!(
            &body(NotifyFormat::Json, b"{\"a\":1}", &e)[..],
            b"{\"a\":1}"
        );
    }
}
