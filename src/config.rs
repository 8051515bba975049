//! The client's configuration: which server, and the tokens `cubby login` obtained.
//!
//! Stored as JSON at `$CUBBY_CONFIG` or `~/.config/cubby/config.json`, mode 0600 (it
//! holds a bearer token), written to a temporary file and renamed into place.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The server a client talks to when none is configured.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";

/// What `cubby login` saves.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Base URL of the server, without a trailing slash.
    pub server: String,
    pub username: String,
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Renews `token` when it expires (see `POST /auth/refresh`); each renewal saves
    /// the new token here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why the configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not logged in: run `cubby login` (no {0})")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// `$CUBBY_CONFIG`, else `~/.config/cubby/config.json`.
pub fn default_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CUBBY_CONFIG") {
        return PathBuf::from(path);
    }
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("cubby")
        .join("config.json")
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
