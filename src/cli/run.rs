//! `sluice run`: serve until SIGTERM or SIGINT, drain, then stop.

use std::path::Path;

use super::{EXIT_INVALID, EXIT_OK, EXIT_REFUSED};
use crate::config::Settings;
use crate::instance::{Instance, StartOptions};

/// Serves with the settings at `config`.
pub fn run(config: &Path) -> i32 {
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
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("sluice: cannot start the signal runtime");
        return EXIT_REFUSED;
    };
    let delay = instance.shared.limits.drain_delay.0;
    rt.block_on(async {
        let mut signals = Signals::new();
        signals.next().await;
        instance.start_drain();
        // A second signal cuts the delay short (an operator who means "now").
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.next() => {
                tracing::info!("Second signal: skipping the rest of drain_delay.");
            }
        }
    });
    tracing::info!(
        drain_timeout = %instance.shared.limits.drain_timeout,
        "Listeners stopped; finishing in-flight requests."
    );
    instance.shutdown();
    tracing::info!("Stopped.");
    EXIT_OK
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

// === impl Signals ===

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => Some((t, i)),
                _ => None,
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
