//! The `roomd` command: read the config, start the broker, stop gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roomd::config::LogFormat;
use roomd::{Config, Server};

/// A self-hosted realtime broker: durable rooms over WebSocket + MessagePack.
///
/// Every config key can also be set with an environment variable ROOMD_SECTION_KEY (for
/// example ROOMD_SERVER_LISTEN=0.0.0.0:7700), which overrides the file.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Config file (TOML); without it the built-in defaults apply. A relative
    /// `server.data_dir` in it is taken from the file's directory.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, overriding `server.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Print the effective config (file, then environment; secrets masked) and exit 0, or
    /// print every error and exit 2.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.command {
        return check_config(file);
    }
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.server.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = cli.data_dir {
        config.server.data_dir = dir;
    }
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// Logs go to stderr, as text or JSON; colour codes only where a person reads them.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(colour).init();
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(Some(file), std::env::vars()) {
        Ok(config) => {
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.to_toml_masked());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomd: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config) -> ExitCode {
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("listening on http://{}", server.local_addr());
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGTERM; stop roomd with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Each connection is a file descriptor: take the hard limit, not the often-tiny soft one.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}
