//! The `acme-cse` binary: parse flags, load and validate the configuration, run the CSE
//! until SIGINT or SIGTERM. SIGHUP reads the configuration again and applies what can
//! change while running (the registration settings, the registrars, the log level).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use acme_cse::App;
use acme_cse::config::{CseKind, LogFormat, Overrides, Source};
use acme_cse::event::Event;
use acme_cse::remote::RemoteCseManager;
use clap::Parser;
use tokio::sync::broadcast;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

// mimalloc: a request allocates and frees many small objects (JSON maps, headers); with
// glibc's allocator a quarter of a RETRIEVE's CPU went to malloc/free (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A oneM2M CSE (IN, MN or ASN) with remote-CSE registration.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = "acme.toml")]
    config: PathBuf,
    /// HTTP port (keeps the host of http.listen).
    #[arg(long)]
    http_port: Option<u16>,
    /// CSE-ID, like /id-mn.
    #[arg(long)]
    cse_id: Option<String>,
    /// CSE type: IN, MN or ASN.
    #[arg(long, value_parser = parse_kind)]
    cse_type: Option<CseKind>,
    /// SQLite database file.
    #[arg(long)]
    db_path: Option<PathBuf>,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    in_memory: bool,
    /// Log filter, like info or acme_cse=debug (RUST_LOG wins).
    #[arg(long)]
    log_level: Option<String>,
    /// Directory of initial resources imported into a new database.
    #[arg(long, default_value = "init")]
    init_dir: PathBuf,
}

fn parse_kind(text: &str) -> Result<CseKind, String> {
    CseKind::parse(text).ok_or_else(|| format!("{text:?} is not IN, MN or ASN"))
}

/// Exit code for an invalid configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Threads for blocking work (database reads). A few more than the store's reader
/// connections is enough; more would only wait for a connection and cost memory.
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(MAX_BLOCKING_THREADS).build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("acme-cse: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let explicit_config = std::env::args().any(|arg| arg == "--config" || arg.starts_with("--config="));
    let overrides = Overrides {
        http_port: cli.http_port,
        cse_id: cli.cse_id.clone(),
        cse_type: cli.cse_type,
        db_path: cli.db_path.clone(),
        in_memory: cli.in_memory,
        log_level: cli.log_level.clone(),
    };
    let source = Source::new(&cli.config, explicit_config, overrides);
    let config = match source.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("acme-cse: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // RUST_LOG, when set, wins over `logging.level`, also after a reload.
    let from_environment = EnvFilter::try_from_default_env().ok();
    let fixed = from_environment.is_some();
    let (filter, log_filter) =
        reload::Layer::new(from_environment.unwrap_or_else(|| EnvFilter::new(&config.log_level)));
    // Colours only for a terminal, and not when NO_COLOR is set (https://no-color.org): a
    // log file or a pipe gets plain text.
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let (text, json) = match config.log_format {
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json().flatten_event(true))),
        _ => (Some(tracing_subscriber::fmt::layer().with_ansi(colour)), None),
    };
    tracing_subscriber::registry().with(filter).with(text).with(json).init();
    if let Some(notice) = source.missing_file() {
        tracing::info!("{notice}");
    }
    for unread in Source::unread_variables(std::env::vars()) {
        tracing::warn!("{unread}");
    }
    raise_open_files_limit(config.http.max_connections);

    let app = match App::build_from(config, Some(source), Some(cli.init_dir)).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    if !fixed {
        tokio::spawn(follow_log_level(app.cse().clone(), app.cse().events().subscribe(), log_filter));
    }
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        // Listening before the CSE serves: a SIGHUP never finds the default action (exit).
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(hangups, app.remote().clone()));
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; no configuration reloads"),
    }
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Open files this CSE needs besides its client connections: the database, outgoing
/// connections to other CSEs, the listener.
const OTHER_FILES: u64 = 128;

/// Raise the soft open-files limit as far as the hard limit allows, and warn when
/// `http.max_connections` does not fit in it (accepting would then fail for want of file
/// descriptors rather than wait at the connection limit).
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + OTHER_FILES => tracing::warn!(
            open_files_limit = limit,
            max_connections,
            "http.max_connections is too close to the open-files limit (ulimit -n); lower it or raise the limit"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-files limit"),
    }
}

/// Apply `logging.level` whenever a reload changes it.
async fn follow_log_level(
    cse: acme_cse::Cse,
    mut events: broadcast::Receiver<Event>,
    log_filter: reload::Handle<EnvFilter, Registry>,
) {
    loop {
        let apply = match events.recv().await {
            Ok(Event::ConfigUpdated { keys }) => keys.iter().any(|key| key == "logging.level"),
            Ok(_) => false,
            // Missed events: apply what is in force, which is right either way.
            Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if apply {
            let level = cse.config().log_level.clone();
            match log_filter.reload(EnvFilter::new(&level)) {
                Ok(()) => tracing::info!(%level, "log level changed"),
                Err(error) => tracing::warn!(%error, "cannot change the log level"),
            }
        }
    }
}

/// Read the configuration again on every SIGHUP (the outcome is logged by the manager).
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, remote: RemoteCseManager) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reading the configuration again");
        let _ = remote.reload().await;
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}
