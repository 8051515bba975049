//! The command line: `cubby login`, `cubby upload`, `cubby download`.
//!
//! Exit codes: 0 success; 1 failure (nothing changed on the server); 3 the base version
//! was stale, and the local bytes were kept as a conflicted copy.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cubby_proto::RemotePath;
use serde::Serialize;

use crate::config::{self, ClientConfig, DEFAULT_SERVER};
use crate::progress::Progress;
use crate::remote::Remote;
use crate::transfer::{self, Base};

/// Exit code of an upload whose bytes went to a conflicted copy.
pub const EXIT_CONFLICT: u8 = 3;

/// Cubby: a self-hosted, Dropbox-like file store.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (default: $CUBBY_CONFIG or ~/.config/cubby/config.json).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the server and token in the configuration file.
    Login {
        /// Server base URL.
        #[arg(long, env = "CUBBY_SERVER", default_value = DEFAULT_SERVER)]
        server: String,
        #[arg(long, env = "CUBBY_USER")]
        username: String,
        /// Read the password from the first line of stdin (else it is prompted for).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Upload a local file, sending only the chunks the server does not have.
    Upload {
        local: PathBuf,
        /// Absolute path on the server, e.g. /docs/report.pdf.
        remote: String,
        /// Replace exactly this version (a newer one on the server is a conflict).
        #[arg(long, conflicts_with = "new")]
        base_version: Option<u64>,
        /// Create a new file (an existing one is a conflict).
        #[arg(long)]
        new: bool,
        /// Print a JSON report instead of a progress bar and summary.
        #[arg(long)]
        json: bool,
    },
    /// Download a file from the server.
    Download {
        remote: String,
        local: PathBuf,
        /// An older version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cubby: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn remote_from(config_path: &std::path::Path) -> Result<Remote, String> {
    let config = ClientConfig::load(config_path).map_err(|e| e.to_string())?;
    Ok(Remote::new(&config.server, &config.token))
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    eprint!("password: ");
    let _ = std::io::stderr().flush();
    rpassword::read_password().map_err(|e| e.to_string())
}

async fn dispatch(cli: Cli) -> Result<ExitCode, String> {
    let config_path = cli.config.unwrap_or_else(config::default_path);
    match cli.command {
        Command::Login {
            server,
            username,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let login = Remote::login(&server, &username, &password)
                .await
                .map_err(|e| e.to_string())?;
            let config = ClientConfig {
                server: server.trim_end_matches('/').to_owned(),
                username: username.clone(),
                token: login.token,
                expires_at: login.expires_at,
            };
            config.save(&config_path).map_err(|e| e.to_string())?;
            eprintln!("logged in to {} as {username}", config.server);
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload {
            local,
            remote: remote_path,
            base_version,
            new,
            json,
        } => {
            let remote = remote_from(&config_path)?;
            let path: RemotePath = remote_path
                .parse()
                .map_err(|e| format!("{remote_path}: {e}"))?;
            let base = match (base_version, new) {
                (Some(version), _) => Base::Version(version),
                (None, true) => Base::New,
                (None, false) => Base::Latest,
            };
            let progress = Progress::new(!json);
            let report = transfer::upload(&remote, &local, &path, base, &progress)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            }
            match &report.conflict {
                Some(conflict) => {
                    eprintln!(
                        "cubby: conflict: {} is at version {} on the server; your bytes were saved as {}",
                        path, conflict.current_version, conflict.conflicted_copy
                    );
                    Ok(ExitCode::from(EXIT_CONFLICT))
                }
                None => {
                    if !json {
                        println!(
                            "{} -> {} version {} ({} bytes, {} of {} chunks sent, {} bytes sent)",
                            local.display(),
                            report.path,
                            report.version,
                            report.size,
                            report.chunks_sent,
                            report.chunks_total,
                            report.bytes_sent
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Download {
            remote: remote_path,
            local,
            version,
            json,
        } => {
            let remote = remote_from(&config_path)?;
            let path: RemotePath = remote_path
                .parse()
                .map_err(|e| format!("{remote_path}: {e}"))?;
            let progress = Progress::new(!json);
            let report = transfer::download(&remote, &path, version, &local, &progress)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "{} version {} -> {} ({} bytes)",
                    report.path,
                    report.version,
                    local.display(),
                    report.size
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
