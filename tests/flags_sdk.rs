//! Every SDK reads sluice's flags (SPEC §4), against a running sluice whose flags change
//! through the change gate:
//!
//! - OFREP change push (ADR 0008): `eventStreams` in bulk responses, the SSE stream on the
//!   admin listener and on a `builtin: ofrep` route, `id`/`Last-Event-ID`, heartbeats, the
//!   stream bound, one event per activation that changes a flag and none otherwise — read
//!   by a raw client here, and by the OpenFeature OFREP web provider (npm) over a standard
//!   `EventSource` (Node; skipped without `tests/node/node_modules` unless
//!   `SLUICE_REQUIRE_NODE=1`; `cd tests/node && npm ci` installs it);
//! - flagd gRPC: the official Python flagd provider in RPC mode (evaluation v2) and
//!   in-process mode (sync v1) answers as OFREP does for every testbed flag, and a change
//!   through the gate reaches both as a change event (skipped without
//!   `openfeature-provider-flagd` unless `SLUICE_REQUIRE_FLAGD_PYTHON=1`);
//! - `ofrep.api_keys_file`: OFREP, SSE and gRPC need a key; the file is re-read when it
//!   changes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, Reply, Sluice};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A document whose flag `banner` serves `variant`; `port` changes something else.
fn doc(version: u64, variant: &str, port: u16) -> String {
    format!(
        r#"version: {version}
change: {{ id: CHG-{version}, author: alice }}
upstreams:
  app: {{ endpoints: ["127.0.0.1:{port}"] }}
routes:
  - name: ofrep
    match: {{ path_prefix: /features }}
    to: {{ builtin: ofrep }}
  - name: app
    to: {{ upstream: app }}
flags:
  banner:
    state: ENABLED
    variants: {{ "on": "shown", "off": "hidden" }}
    defaultVariant: "{variant}"
"#
    )
}

/// `POST` with a JSON body.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::post(path).header("host", "127.0.0.1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from_static(
            b"{\"context\": {\"targetingKey\": \"u\"}}",
        )))
        .unwrap();
    Client::connect(addr).await.send(req).await.unwrap()
}

/// A raw SSE client: the status line and headers, then events as they come.
struct Events {
    status: u16,
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

/// One SSE event (or comment) as read.
#[derive(Debug, Default, PartialEq)]
struct Event {
    id: Option<String>,
    data: Option<Value>,
    comment: bool,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Events {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let status_line = lines.next_line().await.unwrap().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.is_empty() {
                break;
            }
        }
        Events { status, lines }
    }

    /// The next event or comment block (chunked framing lines are skipped).
    async fn next(&mut self) -> Event {
        let mut e = Event::default();
        let mut any = false;
        loop {
            let l = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            // Chunk sizes of the chunked encoding are hex lines of their own.
            if !any && !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if l.is_empty() {
                if any {
                    return e;
                }
                continue;
            }
            any = true;
            if l.starts_with(':') {
                e.comment = true;
            } else if let Some(v) = l.strip_prefix("id: ") {
                e.id = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("data: ") {
                e.data = Some(serde_json::from_str(v).unwrap());
            }
        }
    }

    /// The next event that is not a comment (heartbeats and the opening are skipped).
    async fn next_event(&mut self) -> Event {
        loop {
            let e = self.next().await;
            if !e.comment || e.id.is_some() {
                return e;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_announce_each_flag_change_once_and_survive_activations() {
    let s = Sluice::builder()
        .traffic(&doc(1, "off", 9))
        .settings("ofrep: { heartbeat: 100ms, max_streams: 3 }\n")
        .start();
    assert_eq!(s.version(), 1);

    // Bulk responses name the stream below the prefix they were asked on.
    let r = post(s.admin(), "/ofrep/v1/evaluate/flags", &[]).await;
    assert_eq!(
        r.json()["eventStreams"],
        json!([{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events"}}])
    );
    let r = post(s.proxy(), "/features/ofrep/v1/evaluate/flags", &[]).await;
    assert_eq!(
        r.json()["eventStreams"][0]["endpoint"]["requestUri"],
        "/features/ofrep/v1/events"
    );

    let mut admin = Events::open(s.admin(), "/ofrep/v1/events", &[]).await;
    let mut route = Events::open(s.proxy(), "/features/ofrep/v1/events", &[]).await;
    assert_eq!((admin.status, route.status), (200, 200));
    // Heartbeats keep an idle stream alive.
    assert!(admin.next().await.comment);
    assert!(admin.next().await.comment);

    // A flag change: one refetchEvaluation on each stream, with the version as its id.
    s.write_traffic(&doc(2, "on", 9));
    for st in [&mut admin, &mut route] {
        let e = st.next_event().await;
        assert_eq!(e.id.as_deref(), Some("2"));
        let data = e.data.unwrap();
        assert_eq!(data["type"], "refetchEvaluation");
        assert!(data["etag"].as_str().is_some_and(|t| t.starts_with('"')));
        assert!(data["lastModified"].as_u64().is_some());
    }
    // An activation that changes no flag announces nothing: the next event is version 4's.
    s.write_traffic(&doc(3, "on", 10));
    s.wait_version(3);
    s.write_traffic(&doc(4, "off", 10));
    for st in [&mut admin, &mut route] {
        assert_eq!(st.next_event().await.id.as_deref(), Some("4"));
    }

    // Resume: a stale Last-Event-ID gets the current event at once, the current one none.
    let mut stale = Events::open(s.admin(), "/ofrep/v1/events", &[("last-event-id", "2")]).await;
    assert_eq!(stale.next_event().await.id.as_deref(), Some("4"));
    // Three streams are open: the bound (max_streams: 3) refuses a fourth.
    let full = Events::open(s.admin(), "/ofrep/v1/events", &[]).await;
    assert_eq!(full.status, 503);
    drop(stale);
    let mut resumed = None;
    for _ in 0..100 {
        let e = Events::open(s.admin(), "/ofrep/v1/events", &[("last-event-id", "4")]).await;
        if e.status == 200 {
            resumed = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut resumed = resumed.expect("a slot frees when a stream closes");
    s.write_traffic(&doc(5, "on", 10));
    assert_eq!(resumed.next_event().await.id.as_deref(), Some("5"));
    assert_eq!(admin.next_event().await.id.as_deref(), Some("5"));
}

/// The keys file of these tests: in a directory of its own, written atomically.
fn write_keys(dir: &Path, keys: &str) -> PathBuf {
    let path = dir.join("ofrep.keys");
    common::write_atomic(&path, keys);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_ofrep_and_its_event_stream_and_reload_when_the_file_changes() {
    let kdir = tempfile::tempdir().unwrap();
    let keys = write_keys(kdir.path(), "# team a\nkey-one\nkey-two\n");
    let s = Sluice::builder()
        .traffic(&doc(1, "off", 9))
        .settings(&format!(
            "ofrep: {{ api_keys_file: \"{}\" }}\n",
            keys.display()
        ))
        .start();
    let single = "/ofrep/v1/evaluate/flags/banner";
    for addr in [s.admin(), s.proxy()] {
        let path = if addr == s.admin() {
            single.to_string()
        } else {
            format!("/features{single}")
        };
        let r = post(addr, &path, &[]).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.json()["errorDetails"].is_string());
        assert!(r.headers.contains_key("www-authenticate"));
        assert_eq!(
            post(addr, &path, &[("authorization", "Bearer nope")])
                .await
                .status,
            401
        );
        assert_eq!(
            post(addr, &path, &[("authorization", "Bearer key-one")])
                .await
                .status,
            200
        );
        assert_eq!(
            post(addr, &path, &[("x-api-key", "key-two")]).await.status,
            200
        );
    }
    // The stream: a token in the announced URL (EventSource cannot send headers).
    assert_eq!(
        Events::open(s.admin(), "/ofrep/v1/events", &[])
            .await
            .status,
        401
    );
    let r = post(
        s.admin(),
        "/ofrep/v1/evaluate/flags",
        &[("x-api-key", "key-one")],
    )
    .await;
    let uri = r.json()["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("/ofrep/v1/events?token=") && !uri.contains("key-one"),
        "{uri}"
    );
    assert_eq!(Events::open(s.admin(), &uri, &[]).await.status, 200);
    assert_eq!(
        Events::open(
            s.admin(),
            "/ofrep/v1/events",
            &[("authorization", "Bearer key-two")]
        )
        .await
        .status,
        200
    );
    // A preflight needs no key.
    let pre = Request::options(single)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        Client::connect(s.admin())
            .await
            .send(pre)
            .await
            .unwrap()
            .status,
        204
    );

    // The file changes: key-one (and its stream token) stop working, key-three starts.
    write_keys(kdir.path(), "key-two\nkey-three\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(s.admin(), single, &[("x-api-key", "key-three")])
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the new key never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        post(s.admin(), single, &[("x-api-key", "key-one")])
            .await
            .status,
        401
    );
    assert_eq!(Events::open(s.admin(), &uri, &[]).await.status, 401);
    // An unreadable file keeps the keys in force.
    std::fs::remove_file(&keys).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post(s.admin(), single, &[("x-api-key", "key-three")])
            .await
            .status,
        200
    );
}

/// `tests/node` with its modules installed, or why not.
fn node_ready() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir
        .join("node_modules/@openfeature/ofrep-web-provider")
        .exists()
    {
        return Err("tests/node/node_modules is missing (cd tests/node && npm ci)".into());
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(dir),
        _ => Err("node is not installed".into()),
    }
}

/// Skips (returns None) when a component is missing, unless `SLUICE_REQUIRE_<var>=1`.
fn require<T>(var: &str, ready: Result<T, String>) -> Option<T> {
    match ready {
        Ok(t) => Some(t),
        Err(why) => {
            let required = std::env::var(format!("SLUICE_REQUIRE_{var}")).is_ok_and(|v| v == "1");
            assert!(!required, "SLUICE_REQUIRE_{var}=1 but {why}");
            println!("SKIPPED: {why}");
            None
        }
    }
}

/// The next line a client prints, as JSON (within 20 s).
async fn json_line<R: tokio::io::AsyncBufRead + Unpin>(out: &mut tokio::io::Lines<R>) -> Value {
    let l = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("the client answers within 20 s")
        .unwrap()
        .expect("the client prints a line");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeature_ofrep_web_provider_follows_changes_over_sse() {
    let Some(dir) = require("NODE", node_ready()) else {
        return;
    };
    let kdir = tempfile::tempdir().unwrap();
    let keys = write_keys(kdir.path(), "web-key\n");
    let s = Sluice::builder()
        .traffic(&doc(1, "off", 9))
        .settings(&format!(
            "ofrep: {{ api_keys_file: \"{}\" }}\n",
            keys.display()
        ))
        .start();
    for base in [
        format!("http://{}", s.admin()),
        format!("http://{}/features", s.proxy()),
    ] {
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .args(["ofrep_sse.mjs", &base, "banner", "web-key"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let v = s.version();
        let (before, after) = if v % 2 == 1 {
            ("hidden", "shown")
        } else {
            ("shown", "hidden")
        };
        let ready = json_line(&mut out).await;
        assert_eq!(
            (ready["event"].as_str(), ready["value"].as_str()),
            (Some("ready"), Some(before))
        );
        // A change through the gate reaches the provider as ConfigurationChanged, no polling.
        s.write_traffic(&doc(v + 1, if after == "shown" { "on" } else { "off" }, 9));
        let changed = json_line(&mut out).await;
        assert_eq!(changed["event"], "changed", "{changed}");
        assert_eq!(changed["value"], after, "{changed}");
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
}

// ---------------------------------------------------------------------------------------
// flagd gRPC with the official Python flagd provider (PyPI `openfeature-provider-flagd`), in
// RPC mode (evaluation service) and in-process mode (sync service). Skipped without it
// unless `SLUICE_REQUIRE_FLAGD_PYTHON=1`.
// ---------------------------------------------------------------------------------------

/// Evaluates cases with the flagd provider, prints `{"results": [...]}`, then one line per
/// configuration change (with `watch`'s value), until stdin closes.
const FLAGD_CLIENT: &str = r#"
import json, sys, threading
from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

mode, port, watch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = json.loads(sys.stdin.readline())
provider = FlagdProvider(host="127.0.0.1", port=port, deadline_ms=5000,
    resolver_type=ResolverType.RPC if mode == "rpc" else ResolverType.IN_PROCESS)
api.set_provider_and_wait(provider)
client = api.get_client()

def name(x):
    return None if x is None else getattr(x, "value", x)

def ctx(c):
    c = dict(c)
    return EvaluationContext(c.pop("targetingKey", None), c)

getters = {"boolean": client.get_boolean_details, "string": client.get_string_details,
           "integer": client.get_integer_details, "float": client.get_float_details,
           "object": client.get_object_details}
defaults = {"boolean": False, "string": "fallback", "integer": -1, "float": -1.5, "object": {}}
out = []
for key, ty, c in cases:
    d = getters[ty](key, defaults[ty], ctx(c))
    out.append({"value": d.value, "variant": d.variant, "reason": name(d.reason), "error": name(d.error_code)})
print(json.dumps({"results": out}), flush=True)

lock = threading.Lock()
def changed(details):
    with lock:
        d = client.get_string_details(watch, "fallback", EvaluationContext("user-1", {}))
        print(json.dumps({"event": "changed", "flags": details.flags_changed or [], "value": d.value}), flush=True)
api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed)
print(json.dumps({"event": "watching"}), flush=True)
sys.stdin.read()
api.shutdown()
"#;

fn flagd_python_ready() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import openfeature.contrib.provider.flagd, grpc"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("python3 with openfeature-provider-flagd is not installed (pip install openfeature-provider-flagd)".into()),
    }
}

/// The testbed's flag files (as `flags_conformance.rs` merges them), minus the two flags
/// refused on purpose, plus `watched` for change events.
fn testbed_flags(watched: &str) -> (Value, Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/flagd-testbed/flags");
    let (mut flags, mut evaluators) = (serde_json::Map::new(), serde_json::Map::new());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("selector")
        })
        .collect();
    files.sort();
    for f in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        flags.extend(doc["flags"].as_object().unwrap().clone());
        if let Some(Value::Object(e)) = doc.get("$evaluators") {
            evaluators.extend(e.clone());
        }
    }
    for k in ["error-targeting-flag", "ref-to-nonexistent-evaluator-flag"] {
        flags.remove(k);
    }
    flags.insert(
        "watched".into(),
        json!({"state": "ENABLED", "variants": {"a": "first", "b": "second"}, "defaultVariant": watched}),
    );
    (Value::Object(flags), Value::Object(evaluators))
}

fn grpc_doc(version: u64, watched: &str) -> String {
    let (flags, evaluators) = testbed_flags(watched);
    serde_json::to_string_pretty(&json!({
        "version": version,
        "change": {"id": format!("CHG-{version}"), "author": "alice"},
        "flags": flags,
        "$evaluators": evaluators,
    }))
    .unwrap()
}

/// Equal JSON, numbers compared by value (a protobuf Struct carries every number as a
/// double: `100` comes back as `100.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The OpenFeature type an OFREP value has.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        _ => "object",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_python_provider_reads_the_same_flags_over_grpc_in_rpc_and_in_process_mode() {
    if require("FLAGD_PYTHON", flagd_python_ready()).is_none() {
        return;
    }
    let s = Sluice::builder()
        .traffic(&grpc_doc(1, "a"))
        .settings("flags: { grpc: { bind: \"127.0.0.1:0\" } }\n")
        .start();
    assert_eq!(s.version(), 1);
    let port = s.inst().grpc.expect("gRPC is bound").port();

    for mode in ["rpc", "in-process"] {
        // What OFREP answers now, flag by flag, for a few contexts: the reference.
        let (flags, _) = testbed_flags("a");
        let contexts = [
            json!({"targetingKey": "user-1", "email": "ballmer@macrosoft.com", "version": "v1.0.0", "id": "abc-xyz"}),
            json!({"targetingKey": "jon@company.com", "email": "user@faas.com", "version": "2.1", "id": "xyz", "age": 30}),
        ];
        let mut cases = Vec::new();
        let mut expected = Vec::new();
        let mut c = Client::connect(s.admin()).await;
        for ctx in &contexts {
            for key in flags.as_object().unwrap().keys() {
                let body = json!({"context": ctx}).to_string();
                let req = Request::post(format!("/ofrep/v1/evaluate/flags/{key}"))
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let j = c.send(req).await.unwrap().json();
                // The type a caller would ask for: the value's, else the flag's variants'.
                let ty = match j.get("value") {
                    Some(v) => type_of(v),
                    None => flags[key]["variants"]
                        .as_object()
                        .and_then(|v| v.values().next())
                        .map_or("string", type_of),
                };
                cases.push(json!([key, ty, ctx]));
                expected.push(j);
            }
        }

        let mut child = tokio::process::Command::new("python3")
            .args(["-c", FLAGD_CLIENT, mode, &port.to_string(), "watched"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{}\n", Value::Array(cases.clone())).as_bytes())
            .await
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let results = json_line(&mut out).await;
        let results = results["results"].as_array().expect("results");
        let mut differ = Vec::new();
        for ((case, want), got) in cases.iter().zip(&expected).zip(results) {
            let same = match want.get("errorCode") {
                Some(code) => got["error"] == *code,
                None => {
                    let value_same = want
                        .get("value")
                        .is_none_or(|v| same_json(&got["value"], v));
                    // The RPC provider caches STATIC answers and says CACHED the second time.
                    let reason_same = got["reason"] == want["reason"]
                        || (got["reason"] == "CACHED" && want["reason"] == "STATIC");
                    value_same
                        && reason_same
                        && got["variant"] == want["variant"]
                        && got["error"].is_null()
                }
            };
            if !same {
                differ.push(format!("{case}: OFREP {want} vs flagd {mode} {got}"));
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} differ in {mode} mode:\n{}",
            differ.len(),
            cases.len(),
            differ.join("\n")
        );
        assert_eq!(json_line(&mut out).await["event"], "watching");

        // A change through the change gate reaches the provider as a change event.
        let v = s.version();
        let next = if v % 2 == 1 { "b" } else { "a" };
        s.write_traffic(&grpc_doc(v + 1, next));
        let ev = json_line(&mut out).await;
        assert_eq!(ev["event"], "changed", "{ev}");
        assert_eq!(
            ev["value"],
            if next == "b" { "second" } else { "first" },
            "{mode}: {ev}"
        );
        if mode == "rpc" {
            assert_eq!(ev["flags"], json!(["watched"]), "{ev}");
        }
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_an_api_key_when_keys_are_set() {
    if require("FLAGD_PYTHON", flagd_python_ready()).is_none() {
        return;
    }
    let kdir = tempfile::tempdir().unwrap();
    let keys = write_keys(kdir.path(), "grpc-key\n");
    let s = Sluice::builder()
        .traffic(&grpc_doc(1, "a"))
        .settings(&format!(
            "ofrep: {{ api_keys_file: \"{}\" }}\nflags: {{ grpc: {{ bind: \"127.0.0.1:0\" }} }}\n",
            keys.display()
        ))
        .start();
    let port = s.inst().grpc.expect("gRPC is bound").port();
    let script = r#"
import grpc, json, sys
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as e, evaluation_pb2_grpc as g
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2 as sp, sync_pb2_grpc as sg
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
ev, sync = g.ServiceStub(ch), sg.FlagSyncServiceStub(ch)
out = {}
for name, md in [("none", []), ("wrong", [("x-api-key", "nope")]),
                 ("x-api-key", [("x-api-key", "grpc-key")]),
                 ("bearer", [("authorization", "Bearer grpc-key")])]:
    try:
        r = ev.ResolveString(e.ResolveStringRequest(flag_key="watched"), metadata=md, timeout=5)
        f = sync.FetchAllFlags(sp.FetchAllFlagsRequest(), metadata=md, timeout=5)
        out[name] = [r.value, "watched" in json.loads(f.flag_configuration)["flags"]]
    except grpc.RpcError as x:
        out[name] = x.code().name
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r,
        json!({"none": "UNAUTHENTICATED", "wrong": "UNAUTHENTICATED",
               "x-api-key": ["first", true], "bearer": ["first", true]})
    );
}
