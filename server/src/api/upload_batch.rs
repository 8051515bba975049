//! `POST /upload/batch`: new versions of many small files in one request and one
//! transaction. A client syncing a tree of small files (an untar, a build) sends each
//! file's bytes and the attributes it waits with, and pays one round trip and one disk
//! flush of the metadata for all of them.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use cubby_proto::ContentHash;
use cubby_proto::api::{
    MAX_UPLOAD_BATCH_FILES, UploadBatchItem, UploadBatchResponse, UploadBatchResult,
};
use cubby_proto::chunking::MIN_CHUNK;
use futures_util::{StreamExt, TryStreamExt};

use super::files::{multipart_error, text_field};
use crate::AppState;
use crate::auth::AuthUser;
use crate::blob::PutOutcome;
use crate::error::ApiError;
use crate::meta::{AttrChange, ChunkRef, CommitRequest, EntryId, Location, NewContent};

/// Chunks stored at once (their fsyncs overlap in the disk's journal).
const PUTS_AT_ONCE: usize = 8;

/// `POST /upload/batch`: multipart of pairs, an `item` part
/// (`{"file_id", "base_version"?, "attrs"?}`) and then a `file` part with that file's
/// bytes (at most one chunk, 256 KiB), up to 256 pairs. Each file is committed as
/// `POST /upload` with `file_id` would commit it, then its attributes set, or refused
/// on its own (`results[i]` has the `status` and `error` its own request would get).
pub async fn upload_batch(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadBatchResponse>, ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::bad_request(format!(
            "expected a multipart body: {}",
            rejection.body_text()
        ))
    })?;
    let mut files: Vec<(UploadBatchItem, Bytes, ContentHash)> = Vec::new();
    let mut item: Option<UploadBatchItem> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match (field.name().unwrap_or_default(), item.take()) {
            ("item", None) => {
                if files.len() == MAX_UPLOAD_BATCH_FILES {
                    return Err(ApiError::bad_request(format!(
                        "a batch holds at most {MAX_UPLOAD_BATCH_FILES} files"
                    )));
                }
                let text = text_field(field).await?;
                item =
                    Some(serde_json::from_str(&text).map_err(|e| {
                        ApiError::bad_request(format!("item {}: {e}", files.len()))
                    })?);
            }
            ("file", Some(described)) => {
                let data = read_small(field, files.len()).await?;
                let hash = ContentHash::of(&data);
                files.push((described, data, hash));
            }
            (name, _) => {
                return Err(ApiError::bad_request(format!(
                    "part {} is '{name}': expected an 'item' part, then its 'file'",
                    files.len()
                )));
            }
        }
    }
    if item.is_some() {
        return Err(ApiError::bad_request("the last 'item' has no 'file' part"));
    }
    if files.is_empty() {
        return Err(ApiError::bad_request("a batch holds at least one file"));
    }
    let created = store_chunks(&state, &files).await?;
    let device = super::device(&headers);
    let commits = files
        .iter()
        .map(|(item, data, hash)| {
            let hash = *hash;
            let chunks = if data.is_empty() {
                Vec::new()
            } else {
                vec![ChunkRef {
                    hash,
                    size: data.len() as u32,
                }]
            };
            let request = CommitRequest {
                location: Location::Entry(EntryId(item.file_id)),
                base_version: item.base_version,
                create_parents: false,
                content: NewContent {
                    size: data.len() as u64,
                    hash,
                    chunks,
                },
                device: device.clone(),
                upload_id: None,
            };
            let attrs = item
                .attrs
                .as_ref()
                .map(AttrChange::from)
                .unwrap_or_default();
            (request, attrs)
        })
        .collect();
    let outcomes = match state
        .meta
        .commit_batch(user.id, commits, state.presence())
        .await
    {
        Ok(outcomes) => outcomes,
        Err(error) => {
            crate::workers::gc::collect_now(&state, created).await;
            return Err(error.into());
        }
    };
    let results = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(entry) => UploadBatchResult {
                entry: Some(entry),
                status: None,
                error: None,
            },
            Err(refused) => {
                let error = ApiError::from(refused);
                UploadBatchResult {
                    entry: None,
                    status: Some(error.status.as_u16()),
                    error: Some(error.into_body()),
                }
            }
        })
        .collect();
    tracing::debug!(user = user.id.0, files = files.len(), "upload batch");
    Ok(Json(UploadBatchResponse { results }))
}

/// The bytes of file `index`'s part, refused past one chunk.
async fn read_small(
    mut field: axum::extract::multipart::Field<'_>,
    index: usize,
) -> Result<Bytes, ApiError> {
    let mut data = BytesMut::new();
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        if data.len() + piece.len() > MIN_CHUNK as usize {
            return Err(ApiError::bad_request(format!(
                "file {index} is larger than {MIN_CHUNK} bytes: send it with POST /upload"
            )));
        }
        data.extend_from_slice(&piece);
    }
    Ok(data.freeze())
}

/// Stores each file's chunk (a few at once); the hashes of chunks that were new, which
/// go again if the commit fails. A chunk that fails to store fails the batch, and what
/// was stored for it goes at once.
async fn store_chunks(
    state: &AppState,
    files: &[(UploadBatchItem, Bytes, ContentHash)],
) -> Result<Vec<ContentHash>, ApiError> {
    // Owned, so the stream holds no borrow across its awaits.
    let chunks: Vec<(Bytes, ContentHash)> = files
        .iter()
        .filter(|(_, data, _)| !data.is_empty())
        .map(|(_, data, hash)| (data.clone(), *hash))
        .collect();
    let blobs = std::sync::Arc::clone(&state.blobs);
    let puts = futures_util::stream::iter(chunks)
        .map(move |(data, hash)| {
            let blobs = std::sync::Arc::clone(&blobs);
            async move {
                let outcome = blobs.put(hash, data).await?;
                Ok::<_, crate::blob::BlobError>((hash, outcome))
            }
        })
        .buffer_unordered(PUTS_AT_ONCE);
    let mut created = Vec::new();
    let mut puts = std::pin::pin!(puts);
    loop {
        match puts.try_next().await {
            Ok(Some((hash, PutOutcome::Created))) => created.push(hash),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(created),
            Err(error) => {
                // The puts still running finish before what they stored is collected.
                while let Some(finished) = puts.next().await {
                    if let Ok((hash, PutOutcome::Created)) = finished {
                        created.push(hash);
                    }
                }
                crate::workers::gc::collect_now(state, created).await;
                return Err(error.into());
            }
        }
    }
}
