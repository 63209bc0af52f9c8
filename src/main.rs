//! The `roomd` command: read the config, start the broker, stop gracefully on SIGINT/SIGTERM,
//! reload the TLS certificate on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, overriding `server.data_dir`.
    #[arg(long, global = true)]
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
    /// Copy a running server's data, consistently and without stopping it, into DEST. Every
    /// entry acknowledged before the backup began is in it.
    Backup {
        /// The server's admin listener (`[admin] listen`).
        #[arg(long)]
        admin: SocketAddr,
        /// The file to write (written beside itself first, renamed when complete).
        dest: PathBuf,
    },
    /// Install a backup as the database of an empty data directory (from --config, or
    /// --data-dir), for a server to be started on.
    Restore {
        /// The backup file.
        src: PathBuf,
    },
    /// Print a development token: a JWT for USER signed with the config's auth.jwt_secret
    /// (with its first auth.issuer and auth.audience), which the server accepts.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// A room grant PATTERN=CAP,CAP, e.g. 'chat:*=sub,pub,hist' or 'inbox:{sub}=sub'
        /// (capabilities: sub, pub, hist, state.read, state.write, presence). Repeatable; the
        /// first match wins. Without any, the server's defaults apply.
        #[arg(long = "room", value_name = "GRANT")]
        rooms: Vec<String>,
        /// How long the token is valid: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "1h", value_parser = roomd::token::parse_ttl)]
        ttl: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Cmd::CheckConfig { file }) => return check_config(file),
        Some(Cmd::Backup { admin, dest }) => return backup(*admin, dest),
        Some(Cmd::Restore { src }) => return restore(&cli, src),
        Some(Cmd::Token { user, rooms, ttl }) => return token(&cli, user, rooms, *ttl),
        None => {}
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

fn backup(admin: SocketAddr, dest: &std::path::Path) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let res = match runtime {
        Ok(rt) => rt.block_on(roomd::backup::fetch(admin, dest)),
        Err(e) => Err(e.into()),
    };
    match res {
        Ok(s) => {
            println!(
                "backup written to {}: {} rooms, {} entries, {} state keys",
                dest.display(),
                s.rooms,
                s.entries,
                s.keys
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomd: backup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(cli: &Cli, src: &std::path::Path) -> ExitCode {
    let dir = match (
        &cli.data_dir,
        Config::load(cli.config.as_deref(), std::env::vars()),
    ) {
        (Some(dir), _) => dir.clone(),
        (None, Ok(config)) => config.server.data_dir,
        (None, Err(e)) => {
            eprintln!("roomd: {e}");
            return ExitCode::from(2);
        }
    };
    match roomd::backup::restore(src, &dir) {
        Ok(s) => {
            println!(
                "restored into {}: {} rooms, {} entries, {} state keys",
                dir.display(),
                s.rooms,
                s.entries,
                s.keys
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomd: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(cli: &Cli, user: &str, rooms: &[String], ttl: Duration) -> ExitCode {
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roomd: {e}");
            return ExitCode::from(2);
        }
    };
    match roomd::token::mint(&config.auth, user, rooms, ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomd: {e}");
            ExitCode::from(2)
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
    // Before the server listens: a SIGHUP (a reload) or SIGTERM that comes as soon as the
    // address is printed must find its handler, not the default action (exit).
    let signals = Signals::install();
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("listening on {}://{}", server.scheme(), server.local_addr());
    signals.serve(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The signals roomd handles: SIGINT and SIGTERM stop it gracefully; SIGHUP reloads the TLS
/// certificate (so `systemctl reload roomd` after a renewal needs no restart).
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt())
                .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGINT"))
                .ok(),
            term: signal(SignalKind::terminate())
                .map_err(
                    |e| tracing::warn!(error = %e, "cannot handle SIGTERM; stop roomd with SIGINT"),
                )
                .ok(),
            hup: signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP"))
                .ok(),
        }
    }

    /// Waits for SIGINT or SIGTERM, reloading the TLS certificate on each SIGHUP meanwhile.
    async fn serve(mut self, server: &Server) {
        loop {
            tokio::select! {
                Some(()) = recv(&mut self.int) => return,
                Some(()) = recv(&mut self.term) => return,
                Some(()) = recv(&mut self.hup) => match server.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Err(roomd::ServerError::NoTls) => tracing::info!("SIGHUP: no [tls] to reload"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed; the TLS files in use stay"),
                },
            }
        }
    }
}

/// The next signal of `s`, or never when it could not be set up.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Each connection is a file descriptor: take the hard limit, not the often-tiny soft one.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}
