//! The `sidewire` binary: CLI, logging, signals. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use sidewire::config::{Config, RawConfig, DEFAULT_CONFIG, DEFAULT_CONFIG_NAME};
use sidewire::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core io_uring sidecar TCP proxy.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default (config/sidewire.toml).
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and print the effective one (defaults filled in).
    Check,
    /// Program transparent interception (nftables) in this network namespace.
    Init(sidewire::init::InitArgs),
    /// Add the sidecar to Kubernetes manifests (YAML in, YAML out, for `kubectl apply -f -`).
    Inject(sidewire::inject::InjectArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if let Some(Command::Init(a)) = &cli.command {
        return sidewire::init::main(a);
    }
    if let Some(Command::Inject(a)) = &cli.command {
        return sidewire::inject::main(a);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let (name, text) = match &cli.config {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (p.display().to_string(), t),
            Err(e) => {
                eprintln!("sidewire: {}: (file): cannot read: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => (DEFAULT_CONFIG_NAME.to_string(), DEFAULT_CONFIG.to_string()),
    };
    let raw = match RawConfig::parse(&text, &name) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidewire: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match raw.validate(&name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sidewire: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check) = cli.command {
        println!("# {name}: ok");
        let cpus = core_affinity::get_core_ids().map_or(1, |c| c.len());
        if cfg.runtime.workers == 0 {
            println!("# runtime.workers = 0 means {cpus} worker(s) on this machine");
        }
        print!("{}", raw.to_toml());
        return ExitCode::SUCCESS;
    }
    run(cfg, &name)
}

/// A command-line error as one line on stderr (clap's message without its usage block and
/// `--help` hint), exit code 2; help and version print as usual.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    eprintln!("sidewire: {}", line.join(" "));
    ExitCode::from(2)
}

fn run(cfg: Config, name: &str) -> ExitCode {
    // Nothing is logged until the proxy runs: a config or bind error is exactly one line on
    // stderr (`sidewire: file: key: problem`).
    let nofile = sidewire::sys::raise_nofile_limit();
    // Register before starting so a signal during start-up is not lost.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidewire: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidewire: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    info!(config = %name, version = env!("CARGO_PKG_VERSION"), "started");
    match nofile {
        Ok(n) => info!(nofile = n, "file descriptor limit"),
        Err(e) => warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let sig = signals.forever().next();
    info!(signal = ?sig, "signal received");
    // A second signal while draining exits at once.
    let handle = signals.handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            error!("second signal: exiting without waiting for connections");
            std::process::exit(1);
        }
    });
    let report = server.shutdown();
    handle.close();
    info!(
        finished = report.finished,
        workers = report.workers,
        "stopped"
    );
    ExitCode::SUCCESS
}
