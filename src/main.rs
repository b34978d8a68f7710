//! The `acme-cse` binary: parse flags, load and validate the configuration, run the CSE
//! until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use acme_cse::App;
use acme_cse::config::{CseKind, Overrides, Settings};
use clap::Parser;

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
    let config = Settings::load(&cli.config, explicit_config, std::env::vars()).and_then(|mut settings| {
        settings.apply(&Overrides {
            http_port: cli.http_port,
            cse_id: cli.cse_id.clone(),
            cse_type: cli.cse_type,
            db_path: cli.db_path.clone(),
            in_memory: cli.in_memory,
            log_level: cli.log_level.clone(),
        });
        settings.validate()
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("acme-cse: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    raise_open_files_limit(config.http.max_connections);

    let app = match App::build(config, Some(cli.init_dir)).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
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
