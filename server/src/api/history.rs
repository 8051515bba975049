//! Version history, restore, and the trash.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use cubby_proto::RemotePath;
use cubby_proto::api::{
    Entry, RestoreRequest, TrashEntry, TrashResponse, TrashRestoreRequest, VersionInfo,
    VersionsResponse,
};

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::{EntryId, Location};

/// `GET /file/{id}/versions`: every version, newest first.
pub async fn versions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<VersionsResponse>, ApiError> {
    let entry = state.meta.entry(user.id, EntryId(id)).await?;
    let versions = state.meta.versions(user.id, EntryId(id)).await?;
    Ok(Json(VersionsResponse {
        file_id: id,
        current_version: entry.version,
        versions: versions
            .into_iter()
            .map(|v| VersionInfo {
                number: v.number,
                size: v.size,
                hash: v.hash,
                created_ns: v.created_ns,
                author: v.author,
                device: v.device,
            })
            .collect(),
    }))
}

/// `POST /file/{id}/restore {"version", "base_version"?}`: an old version becomes
/// current again, as a new version.
pub async fn restore(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<u64>,
    ApiJson(request): ApiJson<RestoreRequest>,
) -> Result<Json<Entry>, ApiError> {
    let base = super::base_version(&headers, request.base_version)?;
    let device = super::device(&headers);
    let entry = state
        .meta
        .restore_version(user.id, EntryId(id), request.version, base, device)
        .await?;
    tracing::debug!(
        user = user.id.0,
        file_id = id,
        from = request.version,
        version = entry.version,
        "restore"
    );
    Ok(Json(entry))
}

/// `GET /trash`.
pub async fn trash(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<TrashResponse>, ApiError> {
    let items = state.meta.trash(user.id).await?;
    Ok(Json(TrashResponse {
        items: items
            .into_iter()
            .map(|item| TrashEntry {
                entry: item.entry,
                path: item.path,
                deleted_ns: item.deleted_ns,
                entries: item.entries,
            })
            .collect(),
    }))
}

/// `POST /trash/restore {"id", "to"?}`.
pub async fn restore_trash(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<TrashRestoreRequest>,
) -> Result<Json<Entry>, ApiError> {
    let to = match request.to {
        Some(path) => Some(Location::Path(path.parse::<RemotePath>()?)),
        None => None,
    };
    Ok(Json(
        state
            .meta
            .restore_trash(user.id, EntryId(request.id), to)
            .await?,
    ))
}
