//! `sluice validate [-c ...] [--against FILE] [TRAFFIC]`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::Settings;
use crate::config::traffic::{CheckContext, TrafficDoc};

/// `sluice validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Document to diff against (default: the persisted active document).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// The traffic document (default: paths.traffic from the settings).
    pub traffic: Option<PathBuf>,
}

/// Validates settings and a traffic document; prints every error with path and line.
pub fn validate(config: &Path, a: ValidateArgs) -> i32 {
    let settings = if config.exists() {
        match Settings::load(config) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("{}: invalid settings:\n{e}", config.display());
                return EXIT_INVALID;
            }
        }
    } else {
        None
    };
    let traffic = a
        .traffic
        .or_else(|| settings.as_ref().map(|s| s.paths.traffic.clone()))
        .unwrap_or_else(|| PathBuf::from("config/traffic.yaml"));
    let text = match std::fs::read_to_string(&traffic) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", traffic.display());
            return EXIT_INVALID;
        }
    };
    let ctx = CheckContext {
        listeners: settings
            .as_ref()
            .map(|s| s.listeners.iter().map(|l| l.name.clone()).collect()),
    };
    match TrafficDoc::parse(&text, &ctx) {
        Ok(p) => {
            println!(
                "{}: valid (version {}, change {} by {})",
                traffic.display(),
                p.doc.version,
                p.doc.change.id,
                p.doc.change.author
            );
            EXIT_OK
        }
        Err(errs) => {
            eprintln!("{}: {} error(s):", traffic.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            EXIT_INVALID
        }
    }
}
