//! The `sidewire` binary: CLI, logging, signals. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use sidewire::config::{Config, LogFormat, RawConfig, DEFAULT_CONFIG, DEFAULT_CONFIG_NAME};
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
    /// Log line format: one JSON object per line, or plain text (overrides `[log] format`;
    /// default plain).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
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
        if cli.config.is_some() {
            eprintln!(
                "sidewire: inject: --config is not read by inject: the proxy's config is the \
                 sidecar preset (config/sidecar.toml) with the pod's opaque ports"
            );
            return ExitCode::from(2);
        }
        return sidewire::inject::main(a);
    }
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
        use std::fmt::Write as _;
        let mut out = format!("# {name}: ok\n");
        let cpus = sidewire::cpus::CpuBudget::current();
        if cfg.runtime.workers == 0 {
            let quota = cpus
                .quota
                .map(|q| format!(", cgroup CPU quota {q:.2}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "# runtime.workers = 0 means {} worker(s) here ({} CPU(s) in the affinity mask{quota})",
                cpus.default_workers(),
                cpus.affinity.len()
            );
        }
        let pinned = cpus.pin_for(cfg.runtime.pin_cores, 0).is_some();
        let _ = writeln!(
            out,
            "# runtime.pin_cores = {} means {} here",
            raw.runtime.pin_cores.to_toml_value(),
            if pinned {
                "pinned workers"
            } else {
                "no pinning"
            }
        );
        // Upstream names are resolved after start; one that does not resolve now is a
        // warning (the proxy would start, its endpoints empty until it resolves).
        let names = cfg.upstream_names();
        if !names.is_empty() {
            for (name, r) in sidewire::dns::check(&cfg.dns, &names) {
                let _ = match r {
                    Ok(addrs) => writeln!(
                        out,
                        "# upstream {name} resolves to {}",
                        addrs
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(e) => writeln!(
                        out,
                        "# warning: upstream {name} does not resolve now ({e}): the proxy starts anyway and keeps trying; its endpoints are empty until then"
                    ),
                };
            }
        }
        out.push_str(&raw.to_toml());
        // A closed pipe (`sidewire check | head -1`) is not an error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
        return ExitCode::SUCCESS;
    }
    // Logging starts once the configuration is known (it names the format): a configuration
    // error above is one plain line on stderr whatever the format.
    let format = cli.log_format.unwrap_or(cfg.log.format);
    let bad_rust_log = sidewire::logging::init(
        format,
        format == LogFormat::Plain && std::io::stderr().is_terminal(),
    );
    run(cfg, &name, cli.config.as_deref(), bad_rust_log)
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

/// What the main thread waits for once the proxy runs.
enum Event {
    /// Shut down (what asked: a signal name or `POST /shutdown`).
    Stop(&'static str),
    /// Reload the configuration file (asked by SIGHUP, or by `POST /reload` with its reply
    /// channel).
    Reload(Option<sidewire::admin::ReloadRequest>),
}

fn run(
    cfg: Config,
    name: &str,
    path: Option<&std::path::Path>,
    bad_rust_log: Option<String>,
) -> ExitCode {
    // Nothing is logged until the proxy runs: a config or bind error is exactly one line on
    // stderr (`sidewire: file: key: problem`).
    let nofile = sidewire::sys::raise_nofile_limit();
    // Before the workers allocate: their connections' memory is then faulted in 4 KiB pages.
    let thp_off =
        (!cfg.runtime.transparent_huge_pages).then(sidewire::sys::disable_transparent_huge_pages);
    // Register before starting so a signal during start-up is not lost.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidewire: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidewire: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    info!(config = %name, version = env!("CARGO_PKG_VERSION"), "started");
    if let Some(why) = bad_rust_log {
        warn!("{why}");
    }
    match nofile {
        Ok(n) => info!(nofile = n, "file descriptor limit"),
        Err(e) => warn!(error = %e, "could not raise the file descriptor limit"),
    }
    if let Some(Err(e)) = thp_off {
        warn!(error = %e, "could not opt out of transparent huge pages (runtime.transparent_huge_pages = false); idle connections may cost more memory");
    }
    // Shutdown starts on SIGTERM, SIGINT or `POST /shutdown`; a second SIGTERM/SIGINT while
    // draining exits at once. SIGHUP and `POST /reload` reload the configuration file. USR1
    // and USR2 are logged and ignored: their default action would kill the proxy (and every
    // connection) on a stray `kill`.
    let (event_tx, events) = std::sync::mpsc::channel::<Event>();
    let handle = signals.handle();
    let tx = event_tx.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let event = match sig {
                SIGTERM => Event::Stop("SIGTERM"),
                SIGINT => Event::Stop("SIGINT"),
                SIGHUP => Event::Reload(None),
                _ => {
                    info!(
                        signal = sig,
                        "signal ignored (SIGUSR1/SIGUSR2 have no meaning here)"
                    );
                    continue;
                }
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    if let Some(requests) = server.take_shutdown_requests() {
        let tx = event_tx.clone();
        std::thread::spawn(move || {
            if requests.recv().is_ok() {
                let _ = tx.send(Event::Stop("POST /shutdown"));
            }
        });
    }
    if let Some(requests) = server.take_reload_requests() {
        let tx = event_tx.clone();
        std::thread::spawn(move || {
            for reply in requests {
                if tx.send(Event::Reload(Some(reply))).is_err() {
                    break;
                }
            }
        });
    }
    drop(event_tx);
    let why = loop {
        match events.recv() {
            Ok(Event::Stop(why)) => break why,
            Ok(Event::Reload(reply)) => {
                let by = if reply.is_some() {
                    "POST /reload"
                } else {
                    "SIGHUP"
                };
                let result = match path {
                    Some(p) => server.reload_file(p),
                    None => Ok(sidewire::server::ReloadSummary::default()),
                };
                let answer = match (&result, path) {
                    (Ok(_), None) => {
                        info!(
                            by,
                            "reload: no --config file; the embedded default config stays"
                        );
                        Ok("nothing to reload: no --config file (the embedded default config runs)".to_string())
                    }
                    (Ok(summary), Some(_)) => {
                        info!(by, config = %name, "{summary}");
                        Ok(summary.to_string())
                    }
                    (Err(e), _) => {
                        error!(by, "reload rejected, the running configuration stays: {e}");
                        Err(format!(
                            "reload rejected, the running configuration stays: {e}"
                        ))
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Err(_) => break "signal thread gone",
        }
    };
    info!(by = why, "shutting down");
    std::thread::spawn(move || {
        for again in events {
            match again {
                Event::Stop(sig) if sig.starts_with("SIG") => {
                    error!(
                        signal = sig,
                        "second signal: exiting without waiting for connections"
                    );
                    std::process::exit(1);
                }
                Event::Reload(reply) => {
                    // Not counted: nothing was read. `POST /reload` answers 503 (the reply
                    // channel closes unanswered).
                    info!("reload ignored: shutting down");
                    drop(reply);
                }
                _ => {}
            }
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
