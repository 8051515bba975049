//! `cubby-server`: Cubby's source of truth for every byte and every version.
//!
//! Entry points take their dependencies as arguments: [`open`] builds an [`AppState`]
//! from a [`ServerConfig`], [`app`] turns a state into a router, and [`serve`] runs a
//! router on a listener until a shutdown future resolves, so tests bind port 0 and
//! the binary's `main` only parses arguments. docs/ARCHITECTURE.md has the code map.

pub mod api;
pub mod auth;
pub mod blob;
pub mod config;
pub mod error;
pub mod ingest;
pub mod meta;
pub mod notify;
pub mod origin;
pub mod request_log;
pub mod signing;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use config::ServerConfig;

use crate::auth::AuthKeys;
use crate::blob::{BlobStore, LocalBlobStore};
use crate::meta::{ChunkPresence, ChunkRef, MetaStore, SqliteMetaStore};
use crate::notify::ChangeNotifier;
use crate::signing::UrlSigner;

/// Everything a request handler may use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub keys: Arc<AuthKeys>,
    pub signer: Arc<UrlSigner>,
    pub config: Arc<ServerConfig>,
    /// Wakes long polls of the change feed after writes.
    pub changes: Arc<ChangeNotifier>,
    /// A password hash that matches nothing, so logins of unknown users take as long
    /// as logins of known ones.
    pub dummy_hash: String,
    /// Accounts found since the server started. Accounts are never removed while it
    /// runs, so a token's account is read from the database once, not per request (a
    /// command that removes accounts must clear this).
    pub accounts_found: Arc<std::sync::RwLock<std::collections::HashSet<meta::UserId>>>,
    /// Requests since the last summary line (see [`request_log`]).
    pub requests: Arc<request_log::RequestTally>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("metadata store: {0}")]
    Meta(#[from] meta::MetaError),
    #[error("blob store: {0}")]
    Blob(#[from] blob::BlobError),
    #[error("signing secret: {0}")]
    Secret(std::io::Error),
}

/// Opens the embedded engines (SQLite metadata, local-disk blobs) under the config's
/// data directory, creating what is missing.
pub fn open(config: ServerConfig) -> Result<AppState, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let meta = SqliteMetaStore::open(&config.meta_path())?;
    let blobs = LocalBlobStore::open(&config.blob_root())?;
    let secret = auth::load_or_create_secret(&config.secret_path()).map_err(StartError::Secret)?;
    Ok(AppState {
        meta: Arc::new(meta),
        blobs: Arc::new(blobs),
        keys: Arc::new(AuthKeys::from_secret(&secret, config.token_ttl)),
        signer: Arc::new(UrlSigner::new(&secret)),
        config: Arc::new(config),
        changes: Arc::new(ChangeNotifier::new()),
        dummy_hash: api::auth::dummy_hash(),
        accounts_found: Arc::default(),
        requests: Arc::default(),
    })
}

impl AppState {
    /// The check a commit runs, inside its transaction, that its chunks are stored.
    pub fn presence(&self) -> Arc<dyn ChunkPresence> {
        Arc::new(BlobPresence {
            blobs: Arc::clone(&self.blobs),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

/// [`ChunkPresence`] over a [`BlobStore`], for use on the metadata's blocking thread.
struct BlobPresence {
    blobs: Arc<dyn BlobStore>,
    runtime: tokio::runtime::Handle,
}

impl ChunkPresence for BlobPresence {
    fn all_present(&self, chunks: &[ChunkRef]) -> Result<bool, String> {
        for chunk in chunks {
            if !self
                .runtime
                .block_on(self.blobs.contains(chunk.hash))
                .map_err(|e| e.to_string())?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The HTTP application.
pub fn app(state: AppState) -> Router {
    let tally = Arc::clone(&state.requests);
    api::router(state)
        .layer(axum::middleware::from_fn(origin::within_origin))
        .layer(axum::middleware::from_fn_with_state(
            tally,
            request_log::log_request,
        ))
}

/// Serves `state` on `listener`, with the background workers, until `shutdown`
/// resolves; then finishes the requests in flight (waiting change polls answer at once).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let workers = [
        tokio::spawn(workers::gc::run(state.clone())),
        tokio::spawn(workers::retention::run(state.clone())),
        tokio::spawn(request_log::summarize(Arc::clone(&state.requests))),
    ];
    let changes = Arc::clone(&state.changes);
    let shutdown = async move {
        shutdown.await;
        changes.close();
    };
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    for worker in workers {
        worker.abort();
    }
    served
}
