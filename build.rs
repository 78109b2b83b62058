//! Build-time work:
//! - records the commit sluice was built from, for `sluice_build_info{commit}` and
//!   `sluice --version`: `SLUICE_COMMIT` when set (container builds without `.git`), else
//!   `git rev-parse`, else `unknown`;
//! - generates the flagd gRPC services (server side only) from `proto/`, the protos of
//!   open-feature/flagd-schemas copied into this repository (needs `protoc`, as
//!   etcd-client's build does).

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=SLUICE_COMMIT");
    let commit = std::env::var("SLUICE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself and the branch it names.
            if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
                println!("cargo:rerun-if-changed={p}");
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["rev-parse", "--git-path", &branch])
            {
                println!("cargo:rerun-if-changed={p}");
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SLUICE_COMMIT={commit}");

    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[
                "proto/flagd/evaluation/v1/evaluation.proto",
                "proto/flagd/evaluation/v2/evaluation.proto",
                "proto/flagd/sync/v1/sync.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
