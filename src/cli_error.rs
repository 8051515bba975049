//! What the CLI says when a command fails: a stable code, a message that names what
//! failed, and what to try; the same as JSON on stdout with `--json`; and the exit
//! codes (documented in the README):
//!
//! | code | when |
//! |---|---|
//! | 0 | done |
//! | 1 | failed (the message says why) |
//! | 2 | the command line is wrong |
//! | 3 | a conflict: the file changed on the server; your bytes were kept as a copy |
//! | 4 | the server could not be reached |
//! | 5 | not logged in, or the login was refused |

use serde::Serialize;

use crate::config::ConfigError;
use crate::remote::{RemoteError, server_of};
use crate::transfer::{DownloadError, UploadError};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFLICT: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;
pub const EXIT_LOGIN: u8 = 5;

/// A failed command, as a person and a script each read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CliError {
    /// Stable: `unreachable`, `not_logged_in`, `failed`, `protocol`, or the server's
    /// own error code (`version_conflict`, `not_found`, `invalid_credentials`, ...).
    pub code: String,
    pub message: String,
    /// What to try, when there is something to try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip)]
    pub exit: u8,
}

impl CliError {
    fn new(code: &str, message: impl Into<String>, exit: u8) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            hint: None,
            exit,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Writes the error: `{"error": {...}}` on stdout with `--json`, else on stderr.
    pub fn report(&self, json: bool) {
        if json {
            let body = serde_json::json!({ "error": self });
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            return;
        }
        eprintln!("cubby: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("  try: {hint}");
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self::new("failed", message, EXIT_FAILURE)
    }
}

fn is_loopback(error: &reqwest::Error) -> bool {
    error
        .url()
        .and_then(|url| url.host_str())
        .is_some_and(|host| matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1"))
}

impl From<RemoteError> for CliError {
    fn from(error: RemoteError) -> Self {
        match &error {
            RemoteError::Transport(transport) => {
                let server = server_of(transport);
                let failed = Self::new("unreachable", error.to_string(), EXIT_UNREACHABLE);
                if is_loopback(transport) {
                    failed.hint(
                        "is the local server running? `./mount.sh DIR` (in Cubby's folder) \
                         starts it again, `./mount.sh --status DIR` says what runs",
                    )
                } else {
                    failed.hint(format!(
                        "check that {server} is up and reachable from here, or log in to \
                         another server: cubby login --server URL --username NAME"
                    ))
                }
            }
            RemoteError::Api { body, .. } => {
                let code = serde_json::to_value(body.error.code)
                    .ok()
                    .and_then(|code| code.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "failed".to_owned());
                use cubby_proto::ErrorCode;
                let message = format!("the server refused: {}", body.error.message);
                match body.error.code {
                    ErrorCode::InvalidCredentials => Self::new(&code, message, EXIT_LOGIN).hint(
                        "check the username and password (for the local server of \
                               ./mount.sh, the password is in ~/.local/state/cubby/local-password)",
                    ),
                    ErrorCode::Unauthorized => Self::new(&code, message, EXIT_LOGIN)
                        .hint("log in again: cubby login --server URL --username NAME"),
                    ErrorCode::VersionConflict => Self::new(&code, message, EXIT_CONFLICT).hint(
                        "see the file's versions (cubby versions PATH) and upload again \
                         with --base-version",
                    ),
                    ErrorCode::InsufficientStorage => Self::new(&code, message, EXIT_FAILURE)
                        .hint("the server's disk is full: free space there, then try again"),
                    _ => Self::new(&code, message, EXIT_FAILURE),
                }
            }
            RemoteError::Protocol(_) => Self::new("protocol", error.to_string(), EXIT_FAILURE)
                .hint("is this address a Cubby server? cubby login --server URL points to one"),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Missing(path) => Self::new(
                "not_logged_in",
                format!("not logged in (no {})", path.display()),
                EXIT_LOGIN,
            )
            .hint("cubby login --server URL --username NAME (./mount.sh DIR logs in to a local server for you)"),
            other => Self::from(other.to_string()),
        }
    }
}

impl From<UploadError> for CliError {
    fn from(error: UploadError) -> Self {
        match error {
            UploadError::Remote(remote) => remote.into(),
            other => Self::from(other.to_string()),
        }
    }
}

impl From<DownloadError> for CliError {
    fn from(error: DownloadError) -> Self {
        match error {
            DownloadError::Remote(remote) => remote.into(),
            DownloadError::NotFound(path) => Self::new(
                "not_found",
                format!("{path}: no such file on the server"),
                EXIT_FAILURE,
            ),
            other => Self::from(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_become_stable_strings_and_exit_codes() {
        let refused = |code| RemoteError::Api {
            status: reqwest::StatusCode::CONFLICT,
            body: cubby_proto::ErrorBody {
                error: cubby_proto::ErrorDetail {
                    code,
                    message: "stale".into(),
                },
                current_version: None,
            },
        };
        let conflict = CliError::from(refused(cubby_proto::ErrorCode::VersionConflict));
        assert_eq!(
            (conflict.code.as_str(), conflict.exit),
            ("version_conflict", 3)
        );
        let login = CliError::from(refused(cubby_proto::ErrorCode::InvalidCredentials));
        assert_eq!(
            (login.code.as_str(), login.exit),
            ("invalid_credentials", 5)
        );
        assert!(login.hint.is_some());
        let missing = CliError::from(ConfigError::Missing("/nowhere/config.json".into()));
        assert_eq!((missing.code.as_str(), missing.exit), ("not_logged_in", 5));
    }
}
