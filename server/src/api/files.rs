//! `POST /upload` (multipart, one shot) and `GET /download` (streamed, with `Range`).

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cubby_proto::api::UploadResponse;
use cubby_proto::{ErrorCode, RemotePath};
use futures_util::StreamExt;
use serde::Deserialize;

use super::ApiQuery;
use super::range::{self, RangeRequest};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::ingest::{IngestError, ingest};
use crate::meta::{CommitRequest, EntryId, Location, NewContent};

/// Chunks fetched ahead of the one being sent.
const DOWNLOAD_READ_AHEAD: usize = 2;

pub(super) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        "the upload is larger than the server allows",
    )
}

pub(super) fn multipart_error(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", error.body_text()))
    }
}

pub(super) async fn text_field(field: Field<'_>) -> Result<String, ApiError> {
    field.text().await.map_err(multipart_error)
}

/// `POST /upload`: multipart with `path` (or `file_id`, for a new version of an existing
/// file wherever it is), `file`, and optionally `base_version`.
///
/// Sending `path` before `file` lets a bad path be refused before any byte is stored.
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadResponse>, ApiError> {
    // Refuse a declared oversize body before reading any of it (a client that sent
    // `Expect: 100-continue` then never sends it).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.config.max_upload_bytes) {
        return Err(too_large());
    }
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::bad_request(format!(
            "expected a multipart body: {}",
            rejection.body_text()
        ))
    })?;
    let mut path: Option<RemotePath> = None;
    let mut file_id: Option<u64> = None;
    let mut base_version: Option<u64> = None;
    let mut content: Option<NewContent> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "path" => {
                let parsed: RemotePath = text_field(field).await?.parse()?;
                if parsed.is_root() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::IsADirectory,
                        "'/' is a directory",
                    ));
                }
                path = Some(parsed);
            }
            "file_id" => {
                let text = text_field(field).await?;
                file_id = Some(text.trim().parse().map_err(|_| {
                    ApiError::bad_request("file_id must be a non-negative integer")
                })?);
            }
            "base_version" => {
                let text = text_field(field).await?;
                base_version = Some(text.trim().parse().map_err(|_| {
                    ApiError::bad_request("base_version must be a non-negative integer")
                })?);
            }
            "file" if content.is_some() => {
                return Err(ApiError::bad_request("more than one 'file' part"));
            }
            "file" => {
                let mut created = Vec::new();
                let stored = ingest(state.blobs.as_ref(), field, &mut created).await;
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(error) => {
                        // What the refused (or broken-off) upload stored goes now.
                        let brought = created.len();
                        let deleted = crate::workers::gc::collect_now(&state, created).await;
                        if let IngestError::Blob(crate::blob::BlobError::Full) = error {
                            tracing::warn!(
                                user = user.id.0,
                                chunks_stored = brought,
                                chunks_deleted = deleted,
                                "storage is full: an upload was refused and what it stored deleted"
                            );
                        }
                        return Err(match error {
                            IngestError::Source(e) => multipart_error(e),
                            IngestError::Blob(e) => ApiError::from(e),
                            IngestError::Chunking(e) => ApiError::internal(e),
                        });
                    }
                };
                content = Some(stored);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected part '{other}': expected 'path', 'file_id', 'file', 'base_version'"
                )));
            }
        }
    }
    let location = match (path, file_id) {
        (Some(path), None) => Location::Path(path),
        (None, Some(id)) => Location::Entry(EntryId(id)),
        (None, None) => return Err(ApiError::bad_request("missing part 'path' (or 'file_id')")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give 'path' or 'file_id', not both"));
        }
    };
    let content = content.ok_or_else(|| ApiError::bad_request("missing part 'file'"))?;
    let (size, hash) = (content.size, content.hash);
    let entry = state
        .meta
        .commit(
            user.id,
            CommitRequest {
                location: location.clone(),
                base_version: super::base_version(&headers, base_version)?,
                create_parents: true,
                content,
                device: super::device(&headers),
                upload_id: None,
            },
            state.presence(),
        )
        .await?;
    tracing::debug!(
        user = user.id.0,
        ?location,
        file_id = entry.id,
        version = entry.version,
        size,
        "upload"
    );
    Ok(Json(UploadResponse {
        file_id: entry.id,
        version: entry.version,
        size,
        hash,
    }))
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    file_id: u64,
    version: Option<u64>,
}

/// `GET /download?file_id=..[&version=..]`: the bytes, streamed chunk by chunk.
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let content = state
        .meta
        .version_content(user.id, EntryId(query.file_id), query.version)
        .await?;
    let total = content.version.size;
    let etag = format!("\"{}\"", content.version.hash);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, first, end) = match range::parse(range_header, total) {
        RangeRequest::Full => (StatusCode::OK, 0, total),
        RangeRequest::Partial { first, last } => (StatusCode::PARTIAL_CONTENT, first, last + 1),
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                format!("the content is {total} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };

    // The slices of chunks that cover [first, end).
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for chunk in &content.chunks {
        let (chunk_start, chunk_end) = (offset, offset + u64::from(chunk.size));
        offset = chunk_end;
        if chunk_end <= first || chunk_start >= end {
            continue;
        }
        let from = first.saturating_sub(chunk_start) as usize;
        let to = (end.min(chunk_end) - chunk_start) as usize;
        parts.push((chunk.hash, from, to));
    }
    let blobs = state.blobs.clone();
    let file_id = query.file_id;
    let body = futures_util::stream::iter(parts)
        .map(move |(hash, from, to)| {
            let blobs = blobs.clone();
            async move {
                let data = blobs.get(hash).await.inspect_err(|error| {
                    tracing::error!(%error, file_id, "download failed part way");
                })?;
                Ok::<_, crate::blob::BlobError>(data.slice(from..to))
            }
        })
        .buffered(DOWNLOAD_READ_AHEAD);

    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - first));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, etag_value);
    headers.insert("x-cubby-version", HeaderValue::from(content.version.number));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{}/{total}", end - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}
