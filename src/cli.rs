//! The command line: `login`, `mount`/`unmount`, `upload`/`download`, `versions`,
//! `restore`, `rm` and `trash`.
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
pub use crate::cli_error::{CliError, EXIT_CONFLICT};

/// A log filter (a level or RUST_LOG's syntax), refused here when it does not parse
/// rather than ignored later.
fn parse_log_filter(filter: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| e.to_string())
}

/// Cubby: a self-hosted, Dropbox-like file store.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (default: $CUBBY_CONFIG or ~/.config/cubby/config.json).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to log on stderr: a level (error, warn, info, debug, trace) or a filter in
    /// RUST_LOG's syntax (`cubby=debug,fuser=warn`). Without it RUST_LOG is used, and
    /// without that only warnings and errors.
    #[arg(long, global = true, value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<String>,
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
        /// The account to log in as.
        #[arg(long, env = "CUBBY_USER")]
        username: String,
        /// Read the password from the first line of stdin (else it is prompted for).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Upload a local file, sending only the chunks the server does not have.
    Upload {
        /// The local file to send.
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
    /// List the versions of a file, newest first.
    Versions {
        /// Absolute path of the file on the server.
        remote: String,
        /// Print the versions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an old version current again (as a new version; history is kept).
    Restore {
        /// Absolute path of the file on the server.
        remote: String,
        /// The version to bring back (see `cubby versions`).
        #[arg(long)]
        version: u64,
    },
    /// Move a file or folder to the trash.
    Rm {
        /// Absolute path on the server.
        remote: String,
        /// Folders with everything inside.
        #[arg(short, long)]
        recursive: bool,
    },
    /// List the trash, or restore from it.
    Trash {
        #[command(subcommand)]
        action: Option<TrashAction>,
        /// Print the listing as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mount the store as a folder (runs until unmounted).
    Mount {
        /// The folder to mount on (it must exist and be empty).
        dir: PathBuf,
        /// Where written files wait until committed (default: per mount point, under
        /// the user's data directory).
        #[arg(long)]
        staging_dir: Option<PathBuf>,
        /// The chunk cache (default: ~/.cache/cubby/chunks).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Most MiB the chunk cache holds (least recently used chunks go first).
        #[arg(long, default_value_t = 4096)]
        cache_mib: u64,
        /// MiB of the staging area's disk that writes leave free: a write that would
        /// take them fails with ENOSPC (0: none).
        #[arg(long, default_value_t = 512)]
        staging_reserve_mib: u64,
        /// Let other users (and root) use the mount; needs `user_allow_other` in
        /// /etc/fuse.conf unless run as root.
        #[arg(long)]
        allow_other: bool,
    },
    /// Unmount a mounted folder.
    Unmount {
        /// The mounted folder.
        dir: PathBuf,
    },
    /// What a mount has not sent yet: online or offline, pending uploads and changes,
    /// conflicts, the last error.
    Status {
        /// The mounted folder, or a folder inside it (default: the current directory).
        dir: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a file from the server.
    Download {
        /// Absolute path of the file on the server.
        remote: String,
        /// Where to write it (replaced once the whole file has arrived).
        local: PathBuf,
        /// An older version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        /// Print a JSON report instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrashAction {
    /// Bring back the most recently deleted entry that was at PATH.
    Restore {
        /// The path the entry was deleted from.
        remote: String,
        /// Put it here instead of where it was.
        #[arg(long)]
        to: Option<String>,
    },
}

fn parse_remote(text: &str) -> Result<RemotePath, String> {
    text.parse().map_err(|e| format!("{text}: {e}"))
}

fn format_time(ns: i64) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_seconds(when).to_string()
}

async fn file_id(remote: &Remote, path: &RemotePath) -> Result<u64, CliError> {
    match remote.stat(path).await? {
        Some(entry) => Ok(entry.id),
        None => Err(format!("{path}: no such file on the server").into()),
    }
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.command.json();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            error.report(json);
            ExitCode::from(error.exit)
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON (its errors are JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Upload { json, .. }
            | Command::Versions { json, .. }
            | Command::Trash { json, .. }
            | Command::Status { json, .. }
            | Command::Download { json, .. } => *json,
            _ => false,
        }
    }
}

fn print_json(value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn remote_from(config_path: &std::path::Path) -> Result<Remote, CliError> {
    let config = ClientConfig::load(config_path)?;
    let remote = Remote::new(&config.server, &config.token);
    Ok(match &config.refresh_token {
        Some(refresh) => remote.renewing(refresh, Some(config_path.to_owned())),
        None => remote,
    })
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

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let config_path = cli.config.unwrap_or_else(config::default_path);
    match cli.command {
        Command::Login {
            server,
            username,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let login = Remote::login(&server, &username, &password).await?;
            let config = ClientConfig {
                server: server.trim_end_matches('/').to_owned(),
                username: username.clone(),
                token: login.token,
                expires_at: login.expires_at,
                refresh_token: login.refresh_token,
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
            let report = transfer::upload(&remote, &local, &path, base, &progress).await?;
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
        Command::Mount {
            dir,
            staging_dir,
            cache_dir,
            cache_mib,
            staging_reserve_mib,
            allow_other,
        } => {
            let remote = remote_from(&config_path)?;
            let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut options = crate::mount::MountOptions::defaults_for(&dir);
            if let Some(staging) = staging_dir {
                options.staging_dir = staging;
            }
            if let Some(cache) = cache_dir {
                options.cache_dir = cache;
            }
            options.cache_bytes = cache_mib << 20;
            options.staging_reserve_bytes = staging_reserve_mib << 20;
            options.allow_other = allow_other;
            crate::mount::mount(remote, dir, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Unmount { dir } => {
            crate::mount::unmount(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { dir, json } => {
            let dir = match dir {
                Some(dir) => dir,
                None => std::env::current_dir().map_err(|e| e.to_string())?,
            };
            let (root, status) = crate::status::read(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", crate::status::describe(&root, &status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions {
            remote: remote_path,
            json,
        } => {
            let remote = remote_from(&config_path)?;
            let path = parse_remote(&remote_path)?;
            let id = file_id(&remote, &path).await?;
            let history = remote.versions(id).await?;
            if json {
                print_json(&history)?;
            } else {
                for v in &history.versions {
                    let mark = if v.number == history.current_version {
                        "*"
                    } else {
                        " "
                    };
                    let device = v
                        .device
                        .as_deref()
                        .map(|d| format!("@{d}"))
                        .unwrap_or_default();
                    println!(
                        "{mark}{:>5}  {:>12}  {}  {}{device}  {}",
                        v.number,
                        v.size,
                        format_time(v.created_ns),
                        v.author,
                        &v.hash.to_string()[..16]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            remote: remote_path,
            version,
        } => {
            let remote = remote_from(&config_path)?;
            let path = parse_remote(&remote_path)?;
            let id = file_id(&remote, &path).await?;
            let entry = remote.restore(id, version, None).await?;
            println!(
                "restored {path} version {version} as version {}",
                entry.version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm {
            remote: remote_path,
            recursive,
        } => {
            let remote = remote_from(&config_path)?;
            let path = parse_remote(&remote_path)?;
            let done = remote.delete(&path, recursive).await?;
            println!("moved {path} to the trash ({} entries)", done.deleted);
            Ok(ExitCode::SUCCESS)
        }
        Command::Trash { action: None, json } => {
            let remote = remote_from(&config_path)?;
            let trash = remote.trash().await?;
            if json {
                print_json(&trash)?;
            } else {
                for item in &trash.items {
                    println!(
                        "{}  {}  ({} entries)",
                        format_time(item.deleted_ns),
                        item.path,
                        item.entries
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trash {
            action:
                Some(TrashAction::Restore {
                    remote: remote_path,
                    to,
                }),
            ..
        } => {
            let remote = remote_from(&config_path)?;
            let path = parse_remote(&remote_path)?;
            let to = to.as_deref().map(parse_remote).transpose()?;
            let trash = remote.trash().await?;
            let item = trash
                .items
                .iter()
                .find(|item| item.path == path.to_string())
                .ok_or_else(|| format!("{path} is not in the trash"))?;
            let entry = remote.restore_trash(item.entry.id, to.as_ref()).await?;
            println!("restored {path} (id {})", entry.id);
            Ok(ExitCode::SUCCESS)
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
            let report = transfer::download(&remote, &path, version, &local, &progress).await?;
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

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_argument_and_option_has_a_description() {
        let missing = cubby_testkit::undescribed_arguments(&Cli::command(), "cubby");
        assert!(missing.is_empty(), "no description in --help: {missing:?}");
    }
}
