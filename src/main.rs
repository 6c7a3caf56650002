//! The `coregate` command: run a config, check one, or start the demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use coregate::config::{self, Config};
use coregate::{Gateway, admin, control, demo};

#[derive(Parser)]
#[command(
    name = "coregate",
    version,
    about = "A thread-per-core io_uring edge gateway (HTTP/1.1 reverse proxy)",
    long_about = "A thread-per-core io_uring edge gateway: every core accepts on its own \
                  SO_REUSEPORT socket and serves its connections from accept to close, routing \
                  by host and path to weighted upstream clusters.\n\n\
                  Log verbosity follows RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listeners, routes and clusters of a config file.
    ///
    /// SIGHUP re-reads the file and switches every core to it (an invalid file changes
    /// nothing). SIGTERM or SIGINT drains in-flight requests and exits; a second one exits at
    /// once.
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exits non-zero when it is invalid.
    Check {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start the demo: the gateway on 127.0.0.1:10000 in front of two built-in services.
    ///
    /// Then `curl 127.0.0.1:10000` answers alternately from bill-service-v1 and
    /// bill-service-v2.
    Demo {
        /// Serve this config instead of the built-in config/demo.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => {
            let mut loader = config::Loader::default();
            match loader.load(&config) {
                Ok(c) => serve(c, Some((config, loader))),
                Err(errors) => Err(anyhow::anyhow!("invalid config:\n{errors}")),
            }
        }
        Command::Check { config } => check(&config),
        Command::Demo { config } => run_demo(config),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("coregate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|errors| anyhow::anyhow!("invalid config:\n{errors}"))
}

fn check(path: &Path) -> anyhow::Result<u8> {
    let config = load(path)?;
    print!("{} is valid\n{}", path.display(), config.summary());
    for w in config.warnings() {
        println!("warning: {w}");
    }
    Ok(0)
}

/// Serves `config` until a termination signal; SIGHUP re-reads the file of `reload` when there
/// is one, with the loader that read it.
fn serve(config: Config, reload: Option<(PathBuf, config::Loader)>) -> anyhow::Result<u8> {
    let admin_address = config.admin.as_ref().map(|a| a.address);
    for w in config.warnings() {
        warn!("{w}");
    }
    let control = control::install().context("cannot install signal handlers")?;
    let gateway = Gateway::start(config).context("cannot start")?;
    for l in &gateway.snapshot().listeners {
        if let Some(addr) = gateway.local_addr(&l.name) {
            info!(listener = %l.name, address = %addr, workers = gateway.worker_count(), "listening");
        }
    }
    if let Some(address) = admin_address {
        admin::start(address, gateway.registry().clone(), gateway.published())
            .with_context(|| format!("cannot start the admin listener on {address}"))?;
    }
    Ok(control::run(control, gateway, reload) as u8)
}

fn run_demo(path: Option<PathBuf>) -> anyhow::Result<u8> {
    let tls_dir = std::env::temp_dir().join(format!("coregate-demo-{}", std::process::id()));
    let mut loader = config::Loader::default();
    let config = match &path {
        Some(path) => loader
            .load(path)
            .map_err(|errors| anyhow::anyhow!("invalid config:\n{errors}"))?,
        None => {
            let yaml = demo::demo_config(&tls_dir)
                .with_context(|| format!("cannot write the demo certificate in {tls_dir:?}"))?;
            config::parse(&yaml, "config/demo.yaml")
                .map_err(|errors| anyhow::anyhow!("invalid demo config:\n{errors}"))?
        }
    };
    let services = demo::start_services().context("cannot start the demo services")?;
    for (addr, (_, answer)) in services.iter().zip(demo::SERVICES) {
        info!(address = %addr, answer = answer.trim_end(), "demo service");
    }
    for l in config.listeners.iter() {
        let curl = match l.tls {
            Some(_) => format!("curl -k https://{}", l.address),
            None => format!("curl {}", l.address),
        };
        println!("coregate demo: try `{curl}` (repeat it: the answers alternate)");
    }
    let code = serve(config, path.map(|p| (p, loader)));
    let _ = std::fs::remove_dir_all(&tls_dir);
    code
}
