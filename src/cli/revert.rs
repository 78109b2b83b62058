//! `sluice revert --to-version N --admin URL [--token-file F] --approval FILE`.

use std::path::PathBuf;

use clap::Args;
use http::Method;

use super::client::{AdminTarget, admin_request, exit_for};
use super::{EXIT_INVALID, EXIT_REFUSED};

/// `sluice revert` arguments.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The version to serve again (it must have been activated before).
    #[arg(long)]
    pub to_version: u64,
    /// The admin API to talk to.
    #[command(flatten)]
    pub admin: AdminTarget,
    /// Admin bearer token file.
    #[arg(long, default_value = "state/admin.token")]
    pub token_file: PathBuf,
    /// A `revert` token for that document (`sluice approve --act revert`).
    #[arg(long)]
    pub approval: PathBuf,
}

/// Asks a running sluice to re-activate an earlier document.
pub fn revert(a: RevertArgs) -> i32 {
    let token = match std::fs::read_to_string(&a.approval) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            eprintln!("{}: {e}", a.approval.display());
            return EXIT_INVALID;
        }
    };
    let body = serde_json::json!({ "version": a.to_version }).to_string();
    match admin_request(
        &a.admin,
        &a.token_file,
        Method::POST,
        "/api/v1/revert",
        &[("sluice-approval", token)],
        body.into_bytes(),
    ) {
        Ok((status, body)) => {
            println!("{}", String::from_utf8_lossy(&body).trim_end());
            exit_for(status)
        }
        Err(e) => {
            eprintln!("sluice revert: {e}");
            EXIT_REFUSED
        }
    }
}
