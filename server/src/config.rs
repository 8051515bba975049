//! The server's configuration: one struct, every field with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `cubby-server serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Root of the server's state: `meta.sqlite3`, `jwt.secret`, and `blobs/` unless
    /// `blob_dir` says otherwise. Default: `$XDG_DATA_HOME/cubby-server`.
    pub data_dir: PathBuf,
    /// Where chunk blobs live. Default: `DATA_DIR/blobs`.
    pub blob_dir: Option<PathBuf>,
    /// Address to listen on. Default: 127.0.0.1:8420.
    pub listen: SocketAddr,
    /// Largest body `POST /upload` accepts, in bytes (larger: 413). Default: 16 GiB.
    pub max_upload_bytes: u64,
    /// Largest JSON body, in bytes. Default: 64 KiB.
    pub max_json_bytes: usize,
    /// How long a login token is valid. Default: 24 hours.
    pub token_ttl: Duration,
    /// How long a refresh token stays valid unused (each use moves it on). 90 days.
    pub refresh_ttl: Duration,
    /// How long a chunked-upload session (and its signed PUT URLs) lives. Default: 24 h.
    pub upload_ttl: Duration,
    /// How long a signed chunk GET URL is valid. Default: 1 hour.
    pub download_url_ttl: Duration,
    /// How often garbage collection runs. Default: 10 minutes.
    pub gc_interval: Duration,
    /// A chunk is collected only if unreferenced and last written longer ago than this.
    /// Default: 1 hour.
    pub gc_grace: Duration,
    /// Versions younger than this are kept (the current version always is). 30 days.
    pub retention_max_age: Duration,
    /// At most this many versions per file are kept. Default: 100.
    pub retention_max_versions: u32,
    /// Trashed entries are purged, with their versions, after this long. 30 days.
    pub trash_max_age: Duration,
    /// How often retention runs. Default: 1 hour.
    pub retention_interval: Duration,
    /// Changes stay in the change feed this long; a client whose cursor is older is
    /// told to reset. Default: 7 days.
    pub changes_max_age: Duration,
}

/// 127.0.0.1:8420, the address the client assumes when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";

impl ServerConfig {
    /// The retention policy these settings describe.
    pub fn retention(&self) -> crate::meta::RetentionPolicy {
        crate::meta::RetentionPolicy {
            max_age: self.retention_max_age,
            max_versions: self.retention_max_versions,
            trash_max_age: self.trash_max_age,
        }
    }

    /// The defaults, with state under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            blob_dir: None,
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            max_upload_bytes: 16 << 30,
            max_json_bytes: 64 << 10,
            token_ttl: Duration::from_secs(24 * 3600),
            refresh_ttl: Duration::from_secs(90 * 86400),
            upload_ttl: Duration::from_secs(24 * 3600),
            download_url_ttl: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
            retention_max_age: Duration::from_secs(30 * 86400),
            retention_max_versions: 100,
            trash_max_age: Duration::from_secs(30 * 86400),
            retention_interval: Duration::from_secs(3600),
            changes_max_age: Duration::from_secs(7 * 86400),
        }
    }

    /// `$XDG_DATA_HOME/cubby-server` (usually `~/.local/share/cubby-server`).
    pub fn default_data_dir() -> PathBuf {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cubby-server")
    }

    pub fn meta_path(&self) -> PathBuf {
        self.data_dir.join("meta.sqlite3")
    }

    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join("jwt.secret")
    }

    pub fn blob_root(&self) -> PathBuf {
        self.blob_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }
}
