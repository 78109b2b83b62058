//! `sluice rollout promote|pause|resume|abort NAME`: operator actions on a running sluice.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use http::Method;

use super::client::{AdminTarget, admin_request};
use super::{EXIT_INVALID, EXIT_OK, EXIT_REFUSED};

/// `sluice rollout` arguments.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// What to do.
    pub action: RolloutAction,
    /// The rollout's name.
    pub name: String,
    /// The admin API to talk to.
    #[command(flatten)]
    pub admin: AdminTarget,
    /// Admin bearer token file.
    #[arg(long, default_value = "state/admin.token")]
    pub token_file: PathBuf,
    /// A `promote` approval token file (needed for promote when approvals are required).
    #[arg(long)]
    pub approval: Option<PathBuf>,
    /// promote: skip every remaining step, hold, gate and verdict and complete now (Argo's
    /// `promote --full`); with approvals required the token must be signed `--full` too.
    #[arg(long)]
    pub full: bool,
}

/// A rollout action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutAction {
    /// Pass the manual gate the rollout waits at (blue-green: promote preview).
    Promote,
    /// Freeze progress.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Send all traffic back to stable; final for the active document.
    Abort,
}

// === impl RolloutAction ===

impl RolloutAction {
    /// The admin API action (`promote --full` is `promote_full`).
    fn api_name(self, full: bool) -> &'static str {
        match self {
            RolloutAction::Promote if full => "promote_full",
            other => other.as_str(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Promote => "promote",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

/// Runs `sluice rollout ...`: prints the rollout's state afterwards, or the refusal.
pub fn rollout(a: RolloutArgs) -> i32 {
    if a.full && a.action != RolloutAction::Promote {
        eprintln!("sluice rollout: --full is for promote only");
        return EXIT_INVALID;
    }
    let mut headers = Vec::new();
    if let Some(f) = &a.approval {
        match std::fs::read_to_string(f) {
            Ok(t) => headers.push(("sluice-approval", t.trim().to_string())),
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return EXIT_INVALID;
            }
        }
    }
    let action = a.action.api_name(a.full);
    let path = format!("/api/v1/rollouts/{}/{action}", a.name);
    match admin_request(
        &a.admin,
        &a.token_file,
        Method::POST,
        &path,
        &headers,
        Vec::new(),
    ) {
        Ok((status, body)) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if status.is_success() {
                println!(
                    "{} {}: phase {}, step {}, weight {}%",
                    a.name,
                    action,
                    v["phase"].as_str().unwrap_or("?"),
                    v["step"],
                    v["weight"].as_f64().unwrap_or(f64::NAN)
                );
                EXIT_OK
            } else {
                eprintln!(
                    "sluice rollout {}: {} {}: {}",
                    action,
                    status.as_u16(),
                    v["error"].as_str().unwrap_or("refused"),
                    v["detail"]
                        .as_str()
                        .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), String::from)
                );
                if status.as_u16() == 400 {
                    EXIT_INVALID
                } else {
                    EXIT_REFUSED
                }
            }
        }
        Err(e) => {
            eprintln!("sluice rollout: {e}");
            EXIT_REFUSED
        }
    }
}
