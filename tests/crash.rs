//! Crash safety: a real `sluice run` child is SIGKILLed at random moments while a stream of
//! approved documents (files and pushes, and the odd revert) arrives under request load,
//! then restarted. After every kill the
//! state must be consistent: the audit chain verifies (`sluice audit verify`), state files
//! parse, stored documents match their digests, the high-water mark never decreases. At the
//! end, and at every restart recorded in the log, the active document is the last one the
//! log activated or reverted to.
//!
//! The kill delays come from a seeded generator; the seed is printed (set `CRASH_SEED` to
//! replay a run). `SLUICE_CRASH_ROUNDS` sets the number of kills (default 40).
//!
//! The second suite fills a small tmpfs under `state_dir` (root only; skipped otherwise,
//! unless `SLUICE_REQUIRE_TMPFS=1`).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::gate::{Doc, token_at};
use common::principals::{HOUR, trust_yaml};
use common::settings_yaml;
use serde_json::Value;
use sluice::change::digest;
use sluice::change::token::Act;

/// Kills per run unless `SLUICE_CRASH_ROUNDS` says otherwise.
const ROUNDS: u64 = 40;

/// xorshift64*: reproducible delays without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port below the kernel's ephemeral range: the child binds it again after every
/// kill, and a port from the ephemeral range could meanwhile be handed to some outgoing
/// connection (ours, or another test's).
fn stable_port(rng: &mut Rng) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000, low)
    } else {
        (61000, 65000)
    };
    loop {
        let p = from + rng.below(u64::from(to - from)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A minimal blocking HTTP/1.1 exchange with the child's admin listener.
fn admin_call(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Value)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.get(9..12)?.parse().ok()?;
    let json = resp.split_once("\r\n\r\n").map(|(_, b)| b)?;
    Some((status, serde_json::from_str(json).unwrap_or(Value::Null)))
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Everything that must hold whenever sluice is down.
fn check_state(dir: &Path, hw_floor: &mut u64) {
    let state = dir.join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["audit", "verify"])
        .arg(state.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(b) = std::fs::read(state.join("high_water.json")) {
        let hw: Value = serde_json::from_slice(&b).expect("high_water.json parses");
        let v = hw["version"].as_u64().expect("high-water version");
        assert!(
            v >= *hw_floor,
            "high-water mark went down: {v} < {hw_floor}"
        );
        *hw_floor = v;
    }
    for name in ["used_tokens.json", "reviews.json"] {
        if let Ok(b) = std::fs::read(state.join(name)) {
            serde_json::from_slice::<Value>(&b).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(state.join("pending")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // a temp file a kill left behind; never read
            }
            let p: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
                .unwrap_or_else(|err| panic!("pending/{name}: {err}"));
            assert_eq!(
                digest(p["text"].as_str().unwrap().as_bytes()),
                p["digest"].as_str().unwrap()
            );
        }
    }
    for e in std::fs::read_dir(state.join("docs")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            format!("sha256:{}.yaml", name.trim_end_matches(".yaml")),
            format!("{}.yaml", digest(&bytes)),
            "stored document {name} does not match its name"
        );
    }
}

/// The log's own consistency: activations strictly increase, and every restart restored
/// the last document activated or reverted to before it, before judging anything new.
fn check_log(entries: &[Value]) -> Option<String> {
    let mut last_active: Option<String> = None;
    let mut last_version = 0;
    let mut block_start = false;
    for e in entries {
        let ev = e["event"].as_str().unwrap();
        let d = e["change"]["digest"].as_str().map(str::to_string);
        if ev == "sluice.started" {
            block_start = true;
            continue;
        }
        if block_start && ev.starts_with("change.") {
            if let Some(expected) = &last_active {
                assert_eq!(
                    ev, "change.restored",
                    "a start judged something before restoring: {e}"
                );
                assert_eq!(
                    d.as_ref(),
                    Some(expected),
                    "restored the wrong document: {e}"
                );
            }
            block_start = false;
        }
        match ev {
            "change.activated" => {
                let v = e["change"]["version"].as_u64().unwrap();
                assert!(
                    v > last_version,
                    "activations not increasing: {v} after {last_version}"
                );
                last_version = v;
                last_active = d;
            }
            "change.reverted" | "change.restored" => last_active = d,
            _ => {}
        }
    }
    last_active
}

#[test]
fn sigkill_during_activations_leaves_state_and_log_consistent() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed}");
    let rounds: u64 = std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("approvals")).unwrap();
    let admin = stable_port(&mut rng);
    let proxy = stable_port(&mut rng);
    let yaml = settings_yaml(dir, &trust_yaml())
        .replace(
            "admin: { bind: \"127.0.0.1:0\" }",
            &format!("admin: {{ bind: \"127.0.0.1:{admin}\" }}"),
        )
        .replace(
            "bind: \"127.0.0.1:0\" }]",
            &format!("bind: \"127.0.0.1:{proxy}\" }}]"),
        )
        .replace("workers: 2", "workers: 1");
    std::fs::write(dir.join("sluice.yaml"), &yaml).unwrap();
    let log = std::fs::File::create(dir.join("sluice.log")).unwrap();
    let spawn = || {
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", "-c"])
                .arg(dir.join("sluice.yaml"))
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap(),
        )
    };

    // Load: requests through the proxy all along, across kills.
    let up = common::Upstream::start("app");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut other) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match admin_call(proxy, "", "GET", "/", &[], "") {
                    Some((200, _)) => ok += 1,
                    _ => {
                        other += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            (ok, other)
        })
    };
    let started = Instant::now();
    let mut hw_floor = 0;
    let mut pushes = 0;
    let mut texts: Vec<String> = vec![String::new()];
    let mut reverts = 0;
    for round in 1..=rounds {
        let mut child = spawn();
        let text = Doc::new(round)
            .port(1000 + (round % 50_000) as u16)
            .upstream(up.addr)
            .text();
        texts.push(text.clone());
        let t = now();
        let tokens = [
            ("alice", Act::Author),
            ("bob", Act::Approve),
            ("carol", Act::Approve),
        ];
        // Four orders: tokens then document (activates at once); document and author,
        // approvers later (pending first); document alone, tokens later (refused, then
        // resubmitted when the folder changes); document and tokens pushed to the admin API
        // (and also written, so that a push lost to the kill still arrives).
        let order = rng.below(4);
        let write_token = |who: &str, act: Act| {
            let tok = token_at(who, &text, act, t, HOUR);
            write_atomic(&dir.join(format!("approvals/v{round}-{who}.jwt")), &tok);
        };
        let push = (order == 3).then(|| {
            let toks: Vec<String> = tokens
                .iter()
                .map(|(w, a)| token_at(w, &text, *a, t, HOUR))
                .collect();
            let token = std::fs::read_to_string(dir.join("state/admin.token")).unwrap_or_default();
            let text = text.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_millis(800);
                let headers: Vec<(&str, &str)> = toks
                    .iter()
                    .map(|t| ("sluice-approval", t.as_str()))
                    .collect();
                while Instant::now() < deadline {
                    if let Some((code, _)) = admin_call(
                        admin,
                        token.trim(),
                        "PUT",
                        "/api/v1/traffic",
                        &headers,
                        &text,
                    ) {
                        return code;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                0
            })
        });
        if order == 0 || order == 3 {
            if order == 3 {
                std::thread::sleep(Duration::from_millis(rng.below(200)));
            }
            tokens.iter().for_each(|(w, a)| write_token(w, *a));
            write_atomic(&dir.join("traffic.yaml"), &text);
        } else {
            if order == 1 {
                write_token("alice", Act::Author);
            }
            write_atomic(&dir.join("traffic.yaml"), &text);
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            tokens.iter().for_each(|(w, a)| write_token(w, *a));
        }
        // Now and then, also ask for a revert to the document before last.
        let revert = (round % 5 == 0 && round > 2 && round < rounds).then(|| {
            let back = texts[(round - 2) as usize].clone();
            let tok = token_at("dave", &back, Act::Revert, t, HOUR);
            let token = std::fs::read_to_string(dir.join("state/admin.token")).unwrap_or_default();
            let v = round - 2;
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_millis(800);
                while Instant::now() < deadline {
                    if let Some((code, _)) = admin_call(
                        admin,
                        token.trim(),
                        "POST",
                        "/api/v1/revert",
                        &[("sluice-approval", &tok)],
                        &format!("{{\"version\": {v}}}"),
                    ) {
                        return code;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                0
            })
        });
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        let _ = child.0.kill();
        let _ = child.0.wait();
        if let Some(h) = revert
            && h.join().unwrap() == 200
        {
            reverts += 1;
        }
        if let Some(h) = push
            && h.join().unwrap() == 200
        {
            pushes += 1;
        }
        check_state(dir, &mut hw_floor);
        check_log(&audit(dir));
    }

    // Restart for good: the last document (approved, on disk) activates, and what serves is
    // what the log says.
    let mut child = spawn();
    let token = std::fs::read_to_string(dir.join("state/admin.token")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some((200, s)) = admin_call(admin, token.trim(), "GET", "/api/v1/status", &[], "")
            && s["active"]["version"] == rounds
        {
            break s;
        }
        if let Ok(Some(exit)) = child.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default();
            panic!("sluice exited by itself ({exit}):\n{log}");
        }
        if Instant::now() > deadline {
            let tail: Vec<String> = audit(dir)
                .iter()
                .rev()
                .take(8)
                .map(|e| e.to_string())
                .collect();
            let log = std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default();
            let log_tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "version {rounds} never became active; status {:?}\naudit (newest first):\n{}\nlog (newest first):\n{}",
                admin_call(admin, token.trim(), "GET", "/api/v1/status", &[], ""),
                tail.join("\n"),
                log_tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let entries = audit(dir);
    let last = check_log(&entries).expect("something was activated");
    assert_eq!(status["active"]["digest"], last);
    assert_eq!(status["high_water"]["version"], rounds);
    assert!(hw_floor <= rounds);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, failed) = load.join().unwrap();
    assert!(served > 0, "the load never got an answer");
    let count = |ev: &str| entries.iter().filter(|e| e["event"] == ev).count();
    println!(
        "{rounds} kills in {:.1}s: {} starts, {} activations ({pushes} pushes answered 200), {} restores, {} reverts ({reverts} answered), {} pending records; load: {served} requests served, {failed} not (sluice down)",
        started.elapsed().as_secs_f64(),
        count("sluice.started"),
        count("change.activated"),
        count("change.restored"),
        count("change.reverted"),
        count("change.pending"),
    );
}

// --- full disk ----------------------------------------------------------------------------

/// A tmpfs of `size` mounted at `dir` for the test's lifetime (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts, or says why not. `SLUICE_REQUIRE_TMPFS=1` (CI) turns a refusal into a failure.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("SLUICE_REQUIRE_TMPFS").as_deref() != Ok("1"),
                    "SLUICE_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted: {why}"
                );
                eprintln!(
                    "SKIPPED: the full-disk test needs to mount a small tmpfs (run as root): {why}"
                );
                None
            }
        }
    }

    /// Fills the filesystem with 4 KiB files, then frees `pages` of them.
    fn fill_leaving(&self, pages: usize) -> Vec<std::path::PathBuf> {
        let filler = self.0.join("filler");
        std::fs::create_dir_all(&filler).unwrap();
        let page = vec![b'f'; 4096];
        let mut made = Vec::new();
        for i in 0.. {
            let p = filler.join(format!("{i}"));
            let wrote = std::fs::write(&p, &page);
            made.push(p);
            if wrote.is_err() {
                break;
            }
        }
        for p in made.iter().rev().skip(1).take(pages) {
            std::fs::remove_file(p).unwrap();
        }
        made
    }

    fn free(&self) {
        let _ = std::fs::remove_dir_all(self.0.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn plain_doc(version: u64, up: std::net::SocketAddr) -> String {
    // The summary pads documents to different sizes, so appends cross pages at many points.
    format!(
        "version: {version}\nchange: {{ id: C{version}, author: alice, summary: \"{}\" }}\n\
         upstreams: {{ app: {{ endpoints: [\"{up}\"] }} }}\n\
         routes: [{{ name: r{version}, to: {{ upstream: app }} }}]\n",
        "s".repeat((version as usize * 37) % 300)
    )
}

fn verify_log(path: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Item 2 of issue 16, through the binary on a small tmpfs: pushes on a full disk get 500
/// `state_unwritable` and leave the audit log a chain that verifies — the bytes before the
/// push, plus only whole lines — including when the document was stored but the audit line
/// could not be (before the fix that left a torn line, the next append went after it and
/// `audit verify` and the next start failed). After space is freed the push activates; a
/// kill -9 and restart on the full disk serves the last activated document.
///
/// `SLUICE_DISKFULL_ROUNDS` sets the rounds (default 8).
#[test]
fn full_disk_never_tears_the_audit_log() {
    let rounds: u64 = std::env::var("SLUICE_DISKFULL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now() | 1);
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(disk) = Tmpfs::mount(&dir.join("state"), "2m") else {
        return;
    };
    std::fs::create_dir_all(dir.join("approvals")).unwrap();
    let (admin, proxy) = (stable_port(&mut rng), stable_port(&mut rng));
    let yaml = settings_yaml(dir, "trust: { require_approvals: false }\n")
        .replace(
            "admin: { bind: \"127.0.0.1:0\" }",
            &format!("admin: {{ bind: \"127.0.0.1:{admin}\" }}"),
        )
        .replace(
            "bind: \"127.0.0.1:0\" }]",
            &format!("bind: \"127.0.0.1:{proxy}\" }}]"),
        )
        .replace("workers: 2", "workers: 1");
    std::fs::write(dir.join("sluice.yaml"), &yaml).unwrap();
    let log = std::fs::File::create(dir.join("sluice.log")).unwrap();
    let spawn = || {
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", "-c"])
                .arg(dir.join("sluice.yaml"))
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let up = common::Upstream::start("app");
    let audit_path = dir.join("state/audit.jsonl");
    let wait_status = |token: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, s)) = admin_call(admin, token, "GET", "/api/v1/status", &[], "") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "sluice does not answer:\n{}",
                std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut child = spawn();
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("state/admin.token"))
            && !t.trim().is_empty()
        {
            break t.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_status(&token);
    let push = |v: u64| {
        admin_call(
            admin,
            &token,
            "PUT",
            "/api/v1/traffic",
            &[],
            &plain_doc(v, up.addr),
        )
        .map(|(code, body)| (code, body["error"].as_str().unwrap_or("").to_string()))
    };
    assert_eq!(push(1).unwrap().0, 200);
    let (mut active, mut next) = (1, 2);
    let (mut refused, mut torn_cases, mut restarts) = (0, 0, 0);
    for round in 1..=rounds {
        let before = std::fs::read(&audit_path).unwrap();
        // Free pages left: 1 page holds the new document's file, so with 1 left the audit
        // line fails when it needs a page of its own (it crosses one every few appends).
        let room = 4096 - before.len() % 4096;
        disk.fill_leaving(if room < 400 { 1 } else { rng.below(4) as usize });
        let digest = digest(plain_doc(next, up.addr).as_bytes());
        let stored = dir
            .join("state/docs")
            .join(format!("{}.yaml", digest.trim_start_matches("sha256:")));
        match push(next) {
            Some((200, _)) => {
                active = next;
                next += 1;
            }
            Some((500, reason)) => {
                assert_eq!(reason, "state_unwritable");
                refused += 1;
                if stored.exists() {
                    // The document fit; the audit line did not.
                    torn_cases += 1;
                }
            }
            other => panic!("round {round}: push got {other:?}"),
        }
        let after = std::fs::read(&audit_path).unwrap();
        assert!(
            after.starts_with(&before),
            "round {round}: the push rewrote the audit log"
        );
        verify_log(&audit_path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if round % 4 == 0 {
            // kill -9 and start again on the full disk: the approved state serves.
            drop(child);
            child = spawn();
            restarts += 1;
            let s = wait_status(&token);
            assert_eq!(s["active"]["version"], active, "round {round}: {s}");
            verify_log(&audit_path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        disk.free();
        let (code, reason) = push(next).unwrap();
        assert_eq!(code, 200, "round {round}: {reason}");
        active = next;
        next += 1;
        verify_log(&audit_path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let s = wait_status(&token);
        assert_eq!(s["active"]["version"], active);
    }
    drop(child);
    let child = spawn();
    let s = wait_status(&token);
    assert_eq!(s["active"]["version"], active);
    drop(child);
    println!(
        "full disk: {rounds} rounds, {refused} pushes refused on a full disk ({torn_cases} after the document was stored, at the audit append), {restarts} kill -9 restarts on a full disk"
    );
}
