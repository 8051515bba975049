//! `cubby-server`: parses the command line and hands over to the library.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cubby_server::meta::{MetaError, MetaStore, SqliteMetaStore};
use cubby_server::{ServerConfig, config};
use tracing_subscriber::EnvFilter;

/// A log filter (a level or RUST_LOG's syntax), refused here when it does not parse.
fn parse_log_filter(filter: &str) -> Result<String, String> {
    EnvFilter::try_new(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| e.to_string())
}

/// The settings a bare `serve` runs with, shown as the options' defaults.
fn defaults() -> ServerConfig {
    ServerConfig::new(PathBuf::new())
}

/// A duration in days, as the options that count days take it.
fn days(duration: Duration) -> f64 {
    duration.as_secs_f64() / 86400.0
}

/// The Cubby server: versioned, content-addressed file storage over HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// What to log on stderr: a level (error, warn, info, debug, trace) or a filter in
    /// RUST_LOG's syntax (`cubby_server=debug`). Without it RUST_LOG is used, and
    /// without that INFO: starts, stops, logins, maintenance passes and one line a
    /// minute counting requests (each request is logged at DEBUG, failures at WARN).
    #[arg(long, global = true, value_name = "FILTER", value_parser = parse_log_filter)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// State directory (metadata, secret, blobs).
        #[arg(long, env = "CUBBY_DATA", default_value_os_t = ServerConfig::default_data_dir())]
        data: PathBuf,
        /// Address to listen on (port 0: any free port; the chosen one is printed).
        #[arg(long, env = "CUBBY_LISTEN", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Where chunk blobs live (default: DATA/blobs).
        #[arg(long, env = "CUBBY_BLOB_DIR")]
        blob_dir: Option<PathBuf>,
        /// Largest upload body accepted, in bytes.
        #[arg(long, env = "CUBBY_MAX_UPLOAD_BYTES", default_value_t = defaults().max_upload_bytes)]
        max_upload_bytes: u64,
        /// Lifetime of login tokens, in seconds (a mount renews its token by itself).
        #[arg(long, env = "CUBBY_TOKEN_TTL_SECS", default_value_t = defaults().token_ttl.as_secs())]
        token_ttl_secs: u64,
        /// Days a login's refresh token stays valid without being used (each renewal
        /// of the login token moves it on).
        #[arg(long, env = "CUBBY_REFRESH_DAYS", default_value_t = days(defaults().refresh_ttl))]
        refresh_days: f64,
        /// Lifetime of chunked-upload sessions and their signed URLs, in seconds.
        #[arg(long, env = "CUBBY_UPLOAD_TTL_SECS", default_value_t = defaults().upload_ttl.as_secs())]
        upload_ttl_secs: u64,
        /// Seconds between garbage-collection passes (expired uploads, unreferenced
        /// chunks).
        #[arg(long, env = "CUBBY_GC_INTERVAL_SECS", default_value_t = defaults().gc_interval.as_secs())]
        gc_interval_secs: u64,
        /// Seconds an unreferenced chunk is kept before it may be collected.
        #[arg(long, env = "CUBBY_GC_GRACE_SECS", default_value_t = defaults().gc_grace.as_secs())]
        gc_grace_secs: u64,
        /// Keep non-current versions this many days.
        #[arg(long, env = "CUBBY_RETENTION_DAYS", default_value_t = days(defaults().retention_max_age))]
        retention_days: f64,
        /// Keep at most this many versions per file (the current one always stays).
        #[arg(long, env = "CUBBY_RETENTION_MAX_VERSIONS", default_value_t = defaults().retention_max_versions)]
        retention_max_versions: u32,
        /// Purge trashed entries after this many days.
        #[arg(long, env = "CUBBY_TRASH_DAYS", default_value_t = days(defaults().trash_max_age))]
        trash_days: f64,
        /// Seconds between retention passes (old versions, trash).
        #[arg(long, env = "CUBBY_RETENTION_INTERVAL_SECS", default_value_t = defaults().retention_interval.as_secs())]
        retention_interval_secs: u64,
        /// Keep the change feed this many days (older cursors are told to reset).
        #[arg(long, env = "CUBBY_CHANGES_DAYS", default_value_t = days(defaults().changes_max_age))]
        changes_days: f64,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. Without --password, the password is read from the first line of stdin.
    Add {
        /// The new account's name: 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        /// The password (visible to other users in the process list: prefer stdin).
        #[arg(long)]
        password: Option<String>,
        /// The server's state directory, as given to `serve`.
        #[arg(long, env = "CUBBY_DATA", default_value_os_t = ServerConfig::default_data_dir())]
        data: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // --log-level first, then RUST_LOG, then INFO (a summary of requests a minute).
    let filter = match cli.log_level.as_deref() {
        Some(level) => EnvFilter::try_new(level).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cubby-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            data,
            listen,
            blob_dir,
            max_upload_bytes,
            token_ttl_secs,
            refresh_days,
            upload_ttl_secs,
            gc_interval_secs,
            gc_grace_secs,
            retention_days,
            retention_max_versions,
            trash_days,
            retention_interval_secs,
            changes_days,
        } => {
            let mut config = ServerConfig::new(data);
            config.listen = listen;
            config.blob_dir = blob_dir;
            config.max_upload_bytes = max_upload_bytes;
            let from_days = |days: f64| Duration::from_secs_f64(days.max(0.0) * 86400.0);
            config.token_ttl = Duration::from_secs(token_ttl_secs);
            config.upload_ttl = Duration::from_secs(upload_ttl_secs);
            config.gc_interval =
                Duration::from_secs(gc_interval_secs).max(Duration::from_millis(100));
            config.gc_grace = Duration::from_secs(gc_grace_secs);
            config.retention_max_age = from_days(retention_days);
            config.trash_max_age = from_days(trash_days);
            config.refresh_ttl = from_days(refresh_days);
            config.changes_max_age = from_days(changes_days);
            config.retention_max_versions = retention_max_versions.max(1);
            config.retention_interval =
                Duration::from_secs(retention_interval_secs).max(Duration::from_millis(100));
            runtime.block_on(serve(config))
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    password,
                    data,
                },
        } => runtime.block_on(add_user(data, name, password)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cubby-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServerConfig) -> Result<(), String> {
    let listen = config.listen;
    let state = cubby_server::open(config).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%bound, data = %state.config.data_dir.display(), "serving");
    // Tests and scripts read this line to learn the port.
    println!("cubby-server listening on {bound}");
    let _ = std::io::stdout().flush();
    cubby_server::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn add_user(data: PathBuf, name: String, password: Option<String>) -> Result<(), String> {
    if !valid_username(&name) {
        return Err("a username is 1 to 64 of A-Z a-z 0-9 . _ -".into());
    }
    let password = match password {
        Some(password) => password,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        return Err("the password cannot be empty".into());
    }
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let store =
        SqliteMetaStore::open(&ServerConfig::new(data).meta_path()).map_err(|e| e.to_string())?;
    let hash = tokio::task::spawn_blocking(move || cubby_server::auth::hash_password(&password))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match store.create_user(&name, &hash).await {
        Ok(id) => {
            println!("added user {name} (id {})", id.0);
            Ok(())
        }
        Err(MetaError::UserExists) => Err(format!("user {name} exists")),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_argument_and_option_has_a_description() {
        let missing = cubby_testkit::undescribed_arguments(&Cli::command(), "cubby-server");
        assert!(missing.is_empty(), "no description in --help: {missing:?}");
    }
}
