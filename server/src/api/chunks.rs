//! The chunked protocol: `POST /upload/begin`, `PUT /chunks/{hash}` (signed),
//! `POST /upload/complete`, `GET /file/{id}/chunks` and `GET /chunks/{hash}` (signed).
//! docs/PROTOCOL.md describes the flow.

use std::collections::HashSet;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cubby_proto::api::{
    BeginUploadRequest, BeginUploadResponse, ChunkDownload, ChunkUpload, CompleteUploadRequest,
    EntryKind, FileManifest, UploadResponse,
};
use cubby_proto::chunking::{MAX_CHUNK, MIN_CHUNK};
use cubby_proto::{ContentHash, ErrorCode, RemotePath};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::{
    ChunkRef, CommitRequest, EntryId, Location, MetaError, NewContent, UploadSession,
};
use crate::signing::UrlError;

/// Chunks read ahead while `complete` re-hashes the whole content.
const VERIFY_READ_AHEAD: usize = 4;

fn unix_now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn forbidden(error: UrlError) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        error.to_string(),
    )
}

fn upload_expired() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UploadExpired,
        "no such upload, or it expired",
    )
}

fn chunks_missing(missing: &[ContentHash]) -> ApiError {
    let listed: Vec<String> = missing.iter().take(8).map(|h| h.to_string()).collect();
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::ChunksMissing,
        format!(
            "{} chunk(s) were not uploaded: {}",
            missing.len(),
            listed.join(", ")
        ),
    )
}

fn hash_mismatch(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::HashMismatch,
        message,
    )
}

fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(hex::encode(bytes))
}

/// Checks the chunk list against the declared size and the protocol's bounds.
fn validate_chunks(request: &BeginUploadRequest, max_bytes: u64) -> Result<(), ApiError> {
    if request.size > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the file is larger than the server allows",
        ));
    }
    if request
        .chunks
        .iter()
        .any(|c| c.size == 0 || c.size > MAX_CHUNK)
    {
        return Err(ApiError::bad_request(format!(
            "a chunk is 1 to {MAX_CHUNK} bytes"
        )));
    }
    let total: u64 = request.chunks.iter().map(|c| u64::from(c.size)).sum();
    if total != request.size {
        return Err(ApiError::bad_request(format!(
            "the chunks add up to {total} bytes, not {}",
            request.size
        )));
    }
    if request.chunks.len() as u64 > request.size / u64::from(MIN_CHUNK) + 1 {
        return Err(ApiError::bad_request(
            "more chunks than the chunking parameters allow",
        ));
    }
    if request.size == 0 && request.hash != ContentHash::empty() {
        return Err(hash_mismatch(
            "an empty file has the hash of the empty string",
        ));
    }
    Ok(())
}

/// Where the upload goes, and an early (advisory) base-version check; `complete`
/// checks again, atomically.
async fn target(
    state: &AppState,
    user: AuthUser,
    request: &BeginUploadRequest,
) -> Result<Location, ApiError> {
    let location = match (
        &request.path,
        request.file_id,
        request.parent_id,
        &request.name,
    ) {
        (Some(path), None, None, None) => {
            let path: RemotePath = path.parse()?;
            if path.is_root() {
                return Err(MetaError::IsADirectory.into());
            }
            Location::Path(path)
        }
        (None, Some(id), None, None) => Location::Entry(EntryId(id)),
        (None, None, Some(parent), Some(name)) => Location::Child {
            parent: EntryId(parent),
            name: name.parse()?,
        },
        _ => {
            return Err(ApiError::bad_request(
                "give one of 'path', 'file_id', or 'parent_id' and 'name'",
            ));
        }
    };
    let current = match state.meta.resolve(user.id, &location).await {
        Ok(entry) => Some(entry),
        Err(MetaError::NotFound) if !matches!(location, Location::Entry(_)) => None,
        Err(error) => return Err(error.into()),
    };
    match current {
        Some(entry) if entry.kind == EntryKind::Dir => Err(MetaError::IsADirectory.into()),
        Some(entry) if entry.kind == EntryKind::Symlink => Err(MetaError::AlreadyExists.into()),
        Some(entry) if request.base_version != Some(entry.version) => {
            Err(MetaError::VersionConflict {
                current: entry.version,
            }
            .into())
        }
        None if request.base_version.is_some_and(|v| v != 0) => {
            Err(MetaError::VersionConflict { current: 0 }.into())
        }
        _ => Ok(location),
    }
}

/// `POST /upload/begin`.
pub async fn begin(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<BeginUploadRequest>,
) -> Result<Json<BeginUploadResponse>, ApiError> {
    request.base_version = super::base_version(&headers, request.base_version)?;
    validate_chunks(&request, state.config.max_upload_bytes)?;
    let location = target(&state, user, &request).await?;
    let id = random_id()?;
    // Rounded up to the second: a session lives at least its TTL, also one begun at
    // the end of a second.
    let expires_ns = crate::meta::sqlite::now_ns() + state.config.upload_ttl.as_nanos() as i64;
    let expires_at = (expires_ns as u64).div_ceil(1_000_000_000) as i64;
    let chunks: Vec<ChunkRef> = request
        .chunks
        .iter()
        .map(|c| ChunkRef {
            hash: c.hash,
            size: c.size,
        })
        .collect();
    let session = UploadSession {
        id: id.clone(),
        target: location,
        base_version: request.base_version,
        size: request.size,
        hash: request.hash,
        chunks: chunks.clone(),
        expires_ns: expires_at * 1_000_000_000,
    };
    let held = state.meta.begin_upload(user.id, session).await?;
    let mut requested = HashSet::new();
    let mut missing = Vec::new();
    let mut reused_bytes = 0u64;
    for (chunk, held) in chunks.iter().zip(held) {
        if held {
            reused_bytes += u64::from(chunk.size);
        } else if requested.insert(chunk.hash) {
            let url = state
                .signer
                .put_url(&chunk.hash, chunk.size, &id, expires_at);
            missing.push(ChunkUpload {
                hash: chunk.hash,
                size: chunk.size,
                url,
            });
        }
    }
    tracing::debug!(
        user = user.id.0,
        upload = %id,
        chunks = chunks.len(),
        missing = missing.len(),
        reused_bytes,
        "upload begun"
    );
    Ok(Json(BeginUploadResponse {
        upload_id: id,
        expires_at,
        missing,
        reused_bytes,
    }))
}

#[derive(Debug, Deserialize)]
pub struct PutQuery {
    upload: String,
    size: u32,
    expires: i64,
    sig: String,
}

fn parse_hash(text: &str) -> Result<ContentHash, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("a chunk hash is 64 hex digits"))
}

/// `PUT /chunks/{hash}?upload=..&size=..&expires=..&sig=..`: one chunk, verified.
pub async fn put_chunk(
    State(state): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    ApiQuery(query): ApiQuery<PutQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let hash = parse_hash(&hash)?;
    state
        .signer
        .check_put(
            &hash,
            query.size,
            &query.upload,
            query.expires,
            &query.sig,
            unix_now(),
        )
        .map_err(forbidden)?;
    let limit = query.size as usize;
    let data: Bytes = axum::body::to_bytes(body, limit + 1).await.map_err(|_| {
        hash_mismatch(format!(
            "the body is larger than the signed size of {limit} bytes"
        ))
    })?;
    if data.len() != limit {
        return Err(hash_mismatch(format!(
            "the body is {} bytes; the signed size is {limit}",
            data.len()
        )));
    }
    match state.blobs.put(hash, data).await {
        Ok(_) => {}
        Err(crate::blob::BlobError::Full) => {
            // The session is refused: it ends now, and the chunks only it held go at
            // once, so the user can retry as soon as space is freed.
            let held = state.meta.abort_upload(&query.upload).await?;
            let (held_count, deleted) = (
                held.len(),
                crate::workers::gc::collect_now(&state, held).await,
            );
            tracing::warn!(
                upload = %query.upload,
                session_chunks = held_count,
                chunks_deleted = deleted,
                "storage is full: an upload session was refused and what only it held deleted"
            );
            return Err(crate::blob::BlobError::Full.into());
        }
        Err(error) => return Err(error.into()),
    }
    match state.meta.mark_received(&query.upload, hash).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(MetaError::NotFound) => Err(upload_expired()),
        Err(error) => Err(error.into()),
    }
}

/// `POST /upload/complete`: check, verify and commit. Retrying a completed upload
/// answers the same result.
pub async fn complete(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CompleteUploadRequest>,
) -> Result<Json<UploadResponse>, ApiError> {
    let upload = match state.meta.upload_state(user.id, &request.upload_id).await {
        Ok(upload) => upload,
        Err(MetaError::NotFound) => return Err(upload_expired()),
        Err(error) => return Err(error.into()),
    };
    let session = upload.session;
    if let Some((file_id, version)) = upload.committed {
        return Ok(Json(UploadResponse {
            file_id,
            version,
            size: session.size,
            hash: session.hash,
        }));
    }
    let missing: Vec<ContentHash> = session
        .chunks
        .iter()
        .zip(&upload.available)
        .filter(|(_, available)| !**available)
        .map(|(chunk, _)| chunk.hash)
        .collect();
    if !missing.is_empty() {
        return Err(chunks_missing(&missing));
    }
    // The whole content must hash to what the client declared.
    let mut hasher = blake3::Hasher::new();
    let blobs = state.blobs.clone();
    let mut reads = futures_util::stream::iter(session.chunks.clone())
        .map(|chunk| {
            let blobs = blobs.clone();
            async move { (chunk.hash, blobs.get(chunk.hash).await) }
        })
        .buffered(VERIFY_READ_AHEAD);
    while let Some((hash, read)) = reads.next().await {
        match read {
            Ok(data) => {
                hasher.update(&data);
            }
            Err(crate::blob::BlobError::NotFound(_)) => return Err(chunks_missing(&[hash])),
            Err(error) => return Err(error.into()),
        }
    }
    let actual: ContentHash = hasher.finalize().into();
    if actual != session.hash {
        return Err(hash_mismatch(format!(
            "the chunks hash to {actual}, not the declared {}",
            session.hash
        )));
    }
    let commit = CommitRequest {
        location: session.target,
        base_version: session.base_version,
        create_parents: true,
        content: NewContent {
            size: session.size,
            hash: session.hash,
            chunks: session.chunks,
        },
        device: super::device(&headers),
        upload_id: Some(session.id.clone()),
    };
    let entry = match state.meta.commit(user.id, commit, state.presence()).await {
        Ok(entry) => entry,
        Err(MetaError::ChunksMissing) => return Err(chunks_missing(&[])),
        Err(error) => return Err(error.into()),
    };
    tracing::debug!(user = user.id.0, upload = %session.id, file_id = entry.id, version = entry.version, "upload complete");
    Ok(Json(UploadResponse {
        file_id: entry.id,
        version: entry.version,
        size: session.size,
        hash: session.hash,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ManifestQuery {
    version: Option<u64>,
}

/// `GET /file/{id}/chunks[?version=N]`: a version as signed chunk URLs.
pub async fn manifest(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(query): ApiQuery<ManifestQuery>,
) -> Result<Json<FileManifest>, ApiError> {
    let content = state
        .meta
        .version_content(user.id, EntryId(id), query.version)
        .await?;
    let expires = unix_now() + state.config.download_url_ttl.as_secs() as i64;
    let mut offset = 0u64;
    let chunks = content
        .chunks
        .iter()
        .map(|chunk| {
            let url = state.signer.get_url(&chunk.hash, expires);
            let item = ChunkDownload {
                hash: chunk.hash,
                size: chunk.size,
                offset,
                url,
            };
            offset += u64::from(chunk.size);
            item
        })
        .collect();
    Ok(Json(FileManifest {
        file_id: id,
        version: content.version.number,
        size: content.version.size,
        hash: content.version.hash,
        chunks,
    }))
}

#[derive(Debug, Deserialize)]
pub struct GetQuery {
    expires: i64,
    sig: String,
}

/// `GET /chunks/{hash}?expires=..&sig=..`: one chunk, immutable and cacheable.
pub async fn get_chunk(
    State(state): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    ApiQuery(query): ApiQuery<GetQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    state
        .signer
        .check_get(&hash, query.expires, &query.sig, unix_now())
        .map_err(forbidden)?;
    let etag = HeaderValue::from_str(&format!("\"{hash}\"")).map_err(ApiError::internal)?;
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v == etag)
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let data = match state.blobs.get(hash).await {
        Ok(data) => data,
        Err(crate::blob::BlobError::NotFound(_)) => {
            return Err(ApiError::not_found("no such chunk"));
        }
        Err(error) => return Err(error.into()),
    };
    Ok((
        [
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
        data,
    )
        .into_response())
}
