//! The control thread: signals. SIGHUP reloads the config file (read -> validate -> compile ->
//! bind new sockets -> publish to every core, or change nothing); SIGTERM/SIGINT drain and exit
//! (a second one exits at once); SIGUSR1 reopens the access log files.

use std::path::{Path, PathBuf};
use std::process;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::config;
use crate::gateway::Gateway;

/// The signals the control thread serves, caught from the moment they are installed.
pub struct Control {
    signals: Signals,
}

/// Installs the signal handlers. Done before the gateway starts listening: a signal that
/// arrives once a client can connect must reach the handlers (SIGTERM's default action would
/// kill the process without a drain, SIGHUP's too).
pub fn install() -> std::io::Result<Control> {
    Ok(Control {
        signals: Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?,
    })
}

/// Serves signals until the gateway has shut down; returns the process exit code. `config`
/// is the file SIGHUP re-reads (none for the built-in demo config), with the loader that read
/// it at start (it keeps the parse of the sections that do not change).
pub fn run(
    control: Control,
    gateway: Gateway,
    mut config: Option<(PathBuf, config::Loader)>,
) -> i32 {
    let mut signals = control.signals;
    let handle = signals.handle();
    let mut gateway = Some(gateway);
    for signal in signals.forever() {
        match signal {
            SIGHUP => match (&mut gateway, &mut config) {
                (Some(g), Some((path, loader))) => reload(g, path, loader),
                (Some(_), None) => warn!("SIGHUP: serving the built-in config; nothing to reload"),
                (None, _) => warn!("SIGHUP ignored: shutting down"),
            },
            SIGTERM | SIGINT => match gateway.take() {
                Some(g) => {
                    // /ready answers 503 from now on, so balancers in front stop sending.
                    g.registry().server.live.set(0);
                    let drain = g.snapshot().limits.drain_timeout;
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
            SIGUSR1 => {
                // logrotate's postrotate: the files renamed away are closed, new ones created.
                crate::access_log::writer().reopen();
                info!("SIGUSR1: access log files reopened");
            }
            _ => {}
        }
    }
    0
}

/// Re-reads `path` and switches every core to it, or logs why nothing changed. The time
/// logged runs from the signal to the moment every core serves the new config.
fn reload(gateway: &mut Gateway, path: &Path, loader: &mut config::Loader) {
    let started = std::time::Instant::now();
    let config = match loader.load(path) {
        Ok(c) => c,
        Err(errors) => {
            gateway.registry().record_reload(false);
            error!("reload refused, the running config stays:\n{errors}");
            return;
        }
    };
    let warnings = config.warnings();
    match gateway.reload(config) {
        Ok(done) => {
            for kept in &done.kept {
                warn!("reload: {kept}");
            }
            for w in &warnings {
                warn!("{w}");
            }
            info!(
                generation = done.generation,
                took_us = (done.served_at - started).as_micros() as u64,
                apply_us = done.took.as_micros() as u64,
                "reloaded: {}",
                done.changes
            );
        }
        Err(e) => error!("reload refused, the running config stays: {e}"),
    }
}
