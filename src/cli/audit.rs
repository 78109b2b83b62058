//! `sluice audit verify [FILE] [--head HEX]`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{EXIT_OK, EXIT_REFUSED};
use crate::change::audit;

/// `sluice audit ...`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain (and, with --head, where it ends).
    Verify {
        /// The log.
        #[arg(default_value = "state/audit.jsonl")]
        file: PathBuf,
        /// Expected sha256 hex of the last line.
        #[arg(long)]
        head: Option<String>,
        /// Check the fleet chain in etcd instead (SPEC §12).
        #[command(flatten)]
        fleet: super::fleet::EtcdArgs,
    },
}

/// Runs `sluice audit`.
pub fn audit(a: AuditArgs) -> i32 {
    match a.command {
        AuditCommand::Verify { fleet, head, .. } if fleet.given() => {
            super::fleet::verify(&fleet, head.as_deref())
        }
        AuditCommand::Verify { file, head, .. } => match audit::verify(&file, head.as_deref()) {
            Ok((h, _)) => {
                println!("ok: {} lines, chain intact, head {}", h.seq, h.hash);
                EXIT_OK
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                EXIT_REFUSED
            }
        },
    }
}
