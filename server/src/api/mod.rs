//! The HTTP API: one module per resource, and the extractors they share.
//!
//! Invariant: handlers are thin. They parse the request, call the [`MetaStore`] and
//! [`BlobStore`], and shape the answer; every error leaves through [`ApiError`].
//!
//! [`MetaStore`]: crate::meta::MetaStore
//! [`BlobStore`]: crate::blob::BlobStore

pub mod auth;
mod batch;
mod changes;
mod chunks;
mod files;
mod history;
mod idempotency;
pub mod range;
mod tree;
mod upload_batch;
mod xattrs;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::{get, post};
use cubby_proto::ErrorCode;
use cubby_proto::chunking::MAX_CHUNK;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::AppState;
use crate::error::ApiError;

/// Room for the chunk list of the largest file (about 100 bytes of JSON per chunk).
const BEGIN_BODY_LIMIT: usize = 16 << 20;

/// Room for the largest batch of small files: each at most one chunk, with its item.
const UPLOAD_BATCH_BODY_LIMIT: usize =
    cubby_proto::api::MAX_UPLOAD_BATCH_FILES * (cubby_proto::chunking::MIN_CHUNK as usize + 1024);

/// Room for the largest batch of namespace changes (about 200 bytes of JSON per item).
const BATCH_BODY_LIMIT: usize = 1 << 20;

/// Requests served at once (the feed's long polls and `/healthz` aside). Each may hold
/// one of the runtime's 512 blocking threads waiting for the metadata store; bounded
/// well below that, a burst can never take every thread while the request holding the
/// metadata lock waits for one (a deadlock).
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let max_upload = usize::try_from(state.config.max_upload_bytes).unwrap_or(usize::MAX);
    let json_limit = state.config.max_json_bytes;
    // On each route that changes the tree (see `idempotency`).
    let once = axum::middleware::from_fn_with_state(state.clone(), idempotency::at_most_once);
    Router::new()
        .route("/readyz", get(auth::readyz))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route(
            "/upload",
            post(files::upload).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route(
            "/upload/batch",
            post(upload_batch::upload_batch).layer(DefaultBodyLimit::max(
                max_upload.min(UPLOAD_BATCH_BODY_LIMIT),
            )),
        )
        .route("/download", get(files::download))
        .route(
            "/upload/begin",
            post(chunks::begin).layer(DefaultBodyLimit::max(BEGIN_BODY_LIMIT)),
        )
        .route("/upload/complete", post(chunks::complete))
        .route(
            "/chunks/{hash}",
            get(chunks::get_chunk)
                .put(chunks::put_chunk)
                .layer(DefaultBodyLimit::max(MAX_CHUNK as usize + 1)),
        )
        .route("/file/{id}/chunks", get(chunks::manifest))
        .route("/file/{id}/versions", get(history::versions))
        .route(
            "/file/{id}/attrs",
            post(tree::set_attrs.layer(once.clone())),
        )
        .route("/file/{id}/xattrs", get(xattrs::names))
        .route(
            "/file/{id}/xattrs/{name}",
            get(xattrs::get)
                .put(xattrs::set.layer(once.clone()))
                .delete(xattrs::remove.layer(once.clone()))
                .layer(DefaultBodyLimit::max(xattrs::MAX_VALUE + 1)),
        )
        .route(
            "/file/{id}/restore",
            post(history::restore.layer(once.clone())),
        )
        .route("/trash", get(history::trash))
        .route(
            "/trash/restore",
            post(history::restore_trash.layer(once.clone())),
        )
        .route("/stat", get(tree::stat))
        .route("/list", get(tree::list))
        .route(
            "/file/{id}",
            get(tree::entry).delete(tree::remove.layer(once.clone())),
        )
        .route("/mkdir", post(tree::mkdir.layer(once.clone())))
        .route("/symlink", post(tree::symlink.layer(once.clone())))
        .route("/mknod", post(tree::mknod.layer(once.clone())))
        .route("/create", post(tree::create.layer(once.clone())))
        .route("/move", post(tree::rename.layer(once.clone())))
        .route("/delete", post(tree::remove_by_path.layer(once)))
        .route(
            "/batch",
            post(batch::batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        // Requests past the limit wait their turn here, holding no thread.
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        // Outside the limit: liveness must answer while the rest is busy (clients'
        // heartbeats), and long polls of the feed would hold slots for their whole wait.
        .route("/healthz", get(auth::healthz))
        .route("/changes", get(changes::changes))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            changes::notify_changes,
        ))
        .with_state(state)
}

/// `Json`, answering malformed bodies with the JSON error body.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query`, answering malformed query strings with the JSON error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path`, answering malformed path parameters with the JSON error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(status, ErrorCode::PayloadTooLarge, rejection.body_text());
        }
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, ErrorCode::BadRequest, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

/// The device a client names in `X-Cubby-Device` (printable, at most 128 bytes).
pub fn device(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("x-cubby-device")?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= 128 && !value.chars().any(char::is_control))
        .then(|| value.to_owned())
}

/// The base version of a write: the body's field, or `If-Match: "N"`; both must agree.
pub fn base_version(
    headers: &axum::http::HeaderMap,
    field: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    let header = match headers.get(axum::http::header::IF_MATCH) {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or_default().trim();
            let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
            Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request("If-Match must name a version number, like \"3\"")
            })?)
        }
    };
    match (field, header) {
        (Some(a), Some(b)) if a != b => {
            Err(ApiError::bad_request("base_version and If-Match disagree"))
        }
        (a, b) => Ok(a.or(b)),
    }
}

/// Where a request puts an entry: `path`, or `parent_id` and `name`.
pub fn location(
    path: Option<&str>,
    parent_id: Option<u64>,
    name: Option<&str>,
) -> Result<crate::meta::Location, ApiError> {
    use crate::meta::{EntryId, Location};
    match (path, parent_id, name) {
        (Some(path), None, None) => Ok(Location::Path(path.parse()?)),
        (None, Some(parent), Some(name)) => Ok(Location::Child {
            parent: EntryId(parent),
            name: name.parse()?,
        }),
        _ => Err(ApiError::bad_request(
            "give either 'path', or 'parent_id' and 'name'",
        )),
    }
}
