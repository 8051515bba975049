//! The namespace: stat, list, mkdir, symlink, move and delete, by path or by id.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cubby_proto::RemotePath;
use cubby_proto::api::{
    DeleteResponse, Entry, ListResponse, MkdirRequest, MoveRequest, SymlinkRequest,
};
use serde::Deserialize;

use super::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::{EntryId, Location};

fn parse_path(text: &str) -> Result<RemotePath, ApiError> {
    Ok(text.parse::<RemotePath>()?)
}

/// An entry named by `?path=` or `?id=` (exactly one).
#[derive(Debug, Deserialize)]
pub struct Target {
    path: Option<String>,
    id: Option<u64>,
}

async fn find(state: &AppState, user: AuthUser, target: Target) -> Result<Entry, ApiError> {
    match (target.path, target.id) {
        (Some(path), None) => Ok(state
            .meta
            .resolve(user.id, &Location::Path(parse_path(&path)?))
            .await?),
        (None, Some(id)) => Ok(state.meta.entry(user.id, EntryId(id)).await?),
        _ => Err(ApiError::bad_request("give exactly one of 'path' and 'id'")),
    }
}

/// `GET /stat?path=..` or `?id=..`: one entry.
pub async fn stat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(target): ApiQuery<Target>,
) -> Result<Json<Entry>, ApiError> {
    Ok(Json(find(&state, user, target).await?))
}

/// `GET /file/{id}`: one entry.
pub async fn entry(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Entry>, ApiError> {
    Ok(Json(state.meta.entry(user.id, EntryId(id)).await?))
}

/// `GET /list?path=..` or `?id=..`: a directory and its children.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(target): ApiQuery<Target>,
) -> Result<Json<ListResponse>, ApiError> {
    let entry = find(&state, user, target).await?;
    let children = state.meta.children(user.id, EntryId(entry.id)).await?;
    Ok(Json(ListResponse { entry, children }))
}

/// `POST /mkdir`.
pub async fn mkdir(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<MkdirRequest>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let place = super::location(
        request.path.as_deref(),
        request.parent_id,
        request.name.as_deref(),
    )?;
    if matches!(&place, Location::Path(p) if p.is_root()) && !request.parents {
        return Err(crate::meta::MetaError::AlreadyExists.into());
    }
    let mode = request.mode.unwrap_or(0o755) & 0o7777;
    let entry = state
        .meta
        .mkdir(user.id, &place, request.parents, mode)
        .await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// `POST /symlink`.
pub async fn symlink(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<SymlinkRequest>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let place = super::location(
        request.path.as_deref(),
        request.parent_id,
        request.name.as_deref(),
    )?;
    if request.target.is_empty() || request.target.contains('\0') || request.target.len() > 4095 {
        return Err(ApiError::bad_request(
            "a link target is 1 to 4095 bytes without NUL",
        ));
    }
    let entry = state.meta.symlink(user.id, &place, &request.target).await?;
    // A link made earlier (journaled, or offline) keeps the time it was made.
    let entry = match request
        .time_ns
        .map(|time| time.min(crate::meta::sqlite::now_ns()))
    {
        Some(made) => {
            let times = crate::meta::AttrChange {
                mtime_ns: Some(made),
                atime_ns: Some(made),
                ctime_ns: Some(made),
                ..crate::meta::AttrChange::default()
            };
            state
                .meta
                .set_attrs(user.id, EntryId(entry.id), times)
                .await?
        }
        None => entry,
    };
    Ok((StatusCode::CREATED, Json(entry)))
}

/// `POST /move`: rename or move an entry, keeping its id.
pub async fn rename(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<MoveRequest>,
) -> Result<Json<Entry>, ApiError> {
    let base = super::base_version(&headers, request.base_version)?;
    let entry = find(
        &state,
        user,
        Target {
            path: request.from,
            id: request.id,
        },
    )
    .await?;
    let to = super::location(
        request.to.as_deref(),
        request.to_parent_id,
        request.to_name.as_deref(),
    )?;
    if matches!(&to, Location::Path(p) if p.is_root()) {
        return Err(ApiError::from(crate::meta::MetaError::InvalidMove));
    }
    let moved = state
        .meta
        .rename(user.id, EntryId(entry.id), &to, request.replace, base)
        .await?;
    Ok(Json(moved))
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    recursive: bool,
    base_version: Option<u64>,
}

/// `DELETE /file/{id}[?recursive=true][&base_version=N]`: to the trash.
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let base = super::base_version(&headers, query.base_version)?;
    let deleted = state
        .meta
        .delete(user.id, EntryId(id), query.recursive, base)
        .await?;
    Ok(Json(DeleteResponse { deleted }))
}

#[derive(Debug, Deserialize)]
pub struct RemoveByPath {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    base_version: Option<u64>,
}

/// `POST /delete {"path", "recursive"?, "base_version"?}`: to the trash.
pub async fn remove_by_path(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RemoveByPath>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let base = super::base_version(&headers, request.base_version)?;
    let path = parse_path(&request.path)?;
    let entry = state.meta.resolve(user.id, &Location::Path(path)).await?;
    let deleted = state
        .meta
        .delete(user.id, EntryId(entry.id), request.recursive, base)
        .await?;
    Ok(Json(DeleteResponse { deleted }))
}

/// `POST /file/{id}/attrs {"mode"?, "mtime_ns"?}`: permission bits and modification time.
pub async fn set_attrs(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<u64>,
    ApiJson(request): ApiJson<cubby_proto::api::AttrsRequest>,
) -> Result<Json<Entry>, ApiError> {
    let attrs = crate::meta::AttrChange {
        mode: request.mode.map(|m| m & 0o7777),
        mtime_ns: request.mtime_ns,
        atime_ns: request.atime_ns,
        uid: request.uid,
        gid: request.gid,
        ctime_ns: None,
    };
    Ok(Json(
        state.meta.set_attrs(user.id, EntryId(id), attrs).await?,
    ))
}

/// `POST /create {"parent_id", "name", "mode"?, "uid"?, "gid"?, "time_ns"?}`: an empty
/// file at version 1, in one request, with its times at `time_ns` (when the client made
/// it, unless ahead of the server's clock). An existing entry of that name is
/// `already_exists`.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<cubby_proto::api::CreateRequest>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let place = super::location(None, Some(request.parent_id), Some(&request.name))?;
    let empty = crate::meta::NewContent {
        size: 0,
        hash: cubby_proto::ContentHash::empty(),
        chunks: Vec::new(),
    };
    let commit = crate::meta::CommitRequest {
        location: place,
        base_version: None,
        create_parents: false,
        content: empty,
        device: super::device(&headers),
        upload_id: None,
    };
    let entry = match state.meta.commit(user.id, commit, state.presence()).await {
        Ok(entry) => entry,
        Err(crate::meta::MetaError::VersionConflict { .. }) => {
            return Err(crate::meta::MetaError::AlreadyExists.into());
        }
        Err(error) => return Err(error.into()),
    };
    // A create made earlier (offline, or journaled) keeps the time it was made.
    let made = request
        .time_ns
        .map(|time| time.min(crate::meta::sqlite::now_ns()));
    let attrs = crate::meta::AttrChange {
        mode: request.mode.map(|m| m & 0o7777),
        uid: request.uid,
        gid: request.gid,
        mtime_ns: made,
        atime_ns: made,
        ctime_ns: made,
    };
    let entry =
        if attrs.mode.is_some() || attrs.uid.is_some() || attrs.gid.is_some() || made.is_some() {
            state
                .meta
                .set_attrs(user.id, EntryId(entry.id), attrs)
                .await?
        } else {
            entry
        };
    Ok((StatusCode::CREATED, Json(entry)))
}

/// `POST /mknod {"parent_id", "name", "kind", "mode"?, "rdev"?}`: a FIFO, device or
/// socket entry (metadata only).
pub async fn mknod(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<cubby_proto::api::MknodRequest>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    if !request.kind.is_special() {
        return Err(ApiError::bad_request(
            "mknod makes fifo, char_device, block_device or socket entries",
        ));
    }
    let place = super::location(None, Some(request.parent_id), Some(&request.name))?;
    let mode = request.mode.unwrap_or(0o644) & 0o7777;
    let entry = state
        .meta
        .mknod(user.id, &place, request.kind, mode, request.rdev)
        .await?;
    Ok((StatusCode::CREATED, Json(entry)))
}
