//! `sluice run`: serve until SIGTERM or SIGINT, then drain.

use std::path::Path;

use super::{EXIT_INVALID, EXIT_OK, EXIT_REFUSED};
use crate::config::Settings;
use crate::instance::{Instance, StartOptions};

/// Serves with the settings at `config`.
pub fn run(config: &Path) -> i32 {
    crate::telemetry::init_tracing(std::env::var_os("SLUICE_LOG_JSON").is_some());
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: invalid settings:\n{e}", config.display());
            return EXIT_INVALID;
        }
    };
    let instance = match Instance::start(settings, StartOptions::default()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_REFUSED;
        }
    };
    wait_for_signal();
    tracing::info!("Shutting down: draining connections.");
    instance.shutdown();
    EXIT_OK
}

/// Blocks until SIGTERM or SIGINT.
pub fn wait_for_signal() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    });
}
