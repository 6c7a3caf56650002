//! The control thread: signals. SIGTERM/SIGINT drain and exit (a second one exits at once).

use std::process;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use crate::gateway::Gateway;

/// Serves signals until the gateway has shut down; returns the process exit code.
pub fn run(gateway: Gateway) -> std::io::Result<i32> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let drain = gateway.snapshot().limits.drain_timeout;
    let mut gateway = Some(gateway);
    let handle = signals.handle();
    for signal in signals.forever() {
        match signal {
            SIGTERM | SIGINT => match gateway.take() {
                Some(g) => {
                    info!(?drain, "shutting down: draining connections");
                    let handle = handle.clone();
                    thread::spawn(move || {
                        g.shutdown(drain);
                        info!("drained; exiting");
                        // Ends the signal loop below.
                        handle.close();
                    });
                }
                None => {
                    warn!("second termination signal: exiting now");
                    process::exit(1);
                }
            },
            SIGHUP => warn!("SIGHUP: configuration reload is not available in this build"),
            _ => {}
        }
    }
    Ok(0)
}
