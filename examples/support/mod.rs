//! Shared by the examples (`mod support;`; each takes what it needs):
//! the `sluice` binary next to the example, free ports and a process's RSS for the
//! process benches, and an in-process sluice serving one canary rollout for the rollout
//! benches.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sluice::config::Settings;
use sluice::instance::{Instance, StartOptions};

/// The examples' error type.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

// === a sluice process ===

/// `target/<profile>/sluice`, next to `target/<profile>/examples/<example>`.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("sluice")))
        .unwrap_or_else(|| PathBuf::from("target/release/sluice"))
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The resident set of process `pid`, KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

// === an in-process sluice with one rollout ===

/// Writes `traffic` to `dir/traffic.yaml` and starts a sluice on one worker thread, approvals
/// off, serving it (started off the async runtime: `Instance::start` blocks).
pub async fn start_in(dir: &Path, traffic: &str) -> Instance {
    let path = dir.join("traffic.yaml");
    std::fs::write(&path, traffic).expect("traffic.yaml");
    let settings = Settings::parse(&format!(
        r#"listeners: [{{ name: public, bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
runtime: {{ workers: 1 }}
limits: {{ drain_timeout: 1s }}
paths: {{ traffic: "{}", approvals: "{}", state_dir: "{}" }}
trust: {{ require_approvals: false }}
"#,
        path.display(),
        dir.join("approvals").display(),
        dir.join("state").display()
    ))
    .expect("settings");
    tokio::task::spawn_blocking(move || Instance::start(settings, StartOptions::default()))
        .await
        .expect("start task")
        .expect("sluice starts")
}

/// The weight the data plane splits the first rollout by, in basis points.
pub fn weight(inst: &Instance) -> u32 {
    inst.shared
        .snapshot
        .load_full()
        .map_or(0, |s| s.rollouts[0].weight())
}

/// Shuts `inst` down off the async runtime.
pub async fn stop(inst: Instance) {
    tokio::task::spawn_blocking(move || inst.shutdown())
        .await
        .expect("shutdown");
}
