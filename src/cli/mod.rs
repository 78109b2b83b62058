//! The command line (SPEC §7): one file per subcommand.

pub mod approve;
pub mod audit;
pub mod client;
pub mod demo;
mod demo_fleet;
pub mod eval;
pub mod fleet;
pub mod keygen;
pub mod revert;
pub mod rollout;
pub mod run;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: refused.
pub const EXIT_REFUSED: i32 = 1;
/// Exit status: bad usage or invalid input.
pub const EXIT_INVALID: i32 = 2;
/// Exit status: accepted but pending.
pub const EXIT_PENDING: i32 = 3;

/// sluice: a feature-flag and progressive-delivery edge proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SLUICE_COMMIT"), ")"), about)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings file (for the default `run`).
    #[arg(
        short = 'c',
        long = "config",
        default_value = "config/sluice.yaml",
        global = true
    )]
    pub config: PathBuf,
    /// Log format: `text` or `json` (default: `SLUICE_LOG_FORMAT`, else text).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// Log level or filter, e.g. `info`, `debug,hyper=warn` (default: `SLUICE_LOG`,
    /// else `RUST_LOG`, else info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

/// Logging as `--log-format`/`--log-level` or their environment variables say; an error
/// names the setting.
fn init_logging(cli: &Cli, default_filter: &str) -> Result<(), String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (format, from) = match &cli.log_format {
        Some(f) => (Some(f.clone()), "--log-format"),
        None => (env("SLUICE_LOG_FORMAT"), "SLUICE_LOG_FORMAT"),
    };
    let format = match format {
        None => crate::telemetry::LogFormat::Text,
        Some(f) => f.parse().map_err(|e| format!("{from}: {e}"))?,
    };
    let (filter, from) = match &cli.log_level {
        Some(l) => (l.clone(), "--log-level"),
        None => match env("SLUICE_LOG") {
            Some(l) => (l, "SLUICE_LOG"),
            None => match env("RUST_LOG") {
                Some(l) => (l, "RUST_LOG"),
                None => (default_filter.to_string(), "the default"),
            },
        },
    };
    crate::telemetry::init_logging(format, &filter).map_err(|e| format!("{from}: {e}"))
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default command).
    Run,
    /// A self-contained show of the whole mission.
    Demo(demo::DemoArgs),
    /// Check settings, a traffic document and its tokens; print the class and what is missing.
    Validate(validate::ValidateArgs),
    /// Audit log tools.
    Audit(audit::AuditArgs),
    /// Push a traffic document (and approval tokens) to a running sluice.
    Push(client::PushArgs),
    /// Show a running sluice's status.
    Status(client::StatusArgs),
    /// Make an Ed25519 key for a principal; print its `ed25519:` line.
    Keygen(keygen::KeygenArgs),
    /// Sign an approval token for a traffic document; print it.
    Approve(approve::ApproveArgs),
    /// Re-activate an earlier document on a running sluice.
    Revert(revert::RevertArgs),
    /// Promote, pause, resume or abort a rollout of a running sluice.
    Rollout(rollout::RolloutArgs),
    /// Evaluate one flag of a traffic document and print the resolution as JSON.
    Eval(eval::EvalArgs),
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            };
            let _ = e.print();
            return code;
        }
    };
    // Serving logs; the demo shows its own table (warnings only unless asked otherwise);
    // the other commands print their results and log nothing.
    let default_filter = match cli.command {
        None | Some(Command::Run) => Some("info"),
        Some(Command::Demo(_)) => Some("warn,sluice::rollout=error"),
        _ => None,
    };
    if let Some(f) = default_filter
        && let Err(e) = init_logging(&cli, f)
    {
        eprintln!("sluice: {e}");
        return EXIT_INVALID;
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(&cli.config),
        Command::Demo(a) => demo::demo(a),
        Command::Validate(a) => validate::validate(&cli.config, a),
        Command::Audit(a) => audit::audit(a),
        Command::Push(a) => client::push(a),
        Command::Status(a) => client::status(a),
        Command::Keygen(a) => keygen::keygen(a),
        Command::Approve(a) => approve::approve(a),
        Command::Revert(a) => revert::revert(a),
        Command::Rollout(a) => rollout::rollout(a),
        Command::Eval(a) => eval::eval(a),
    }
}
