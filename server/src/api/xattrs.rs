//! Extended attributes of entries, in the `user.*` namespace.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cubby_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::{EntryId, XattrMode};

/// Largest attribute value, in bytes (Linux's limit for one value is 64 KiB).
pub const MAX_VALUE: usize = 64 * 1024;

fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = name.starts_with("user.")
        && name.len() > "user.".len()
        && name.len() <= 255
        && !name.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
            "an attribute name is user.<name>, at most 255 bytes",
        ))
    }
}

/// `GET /file/{id}/xattrs`: `{"names": [...]}`.
pub async fn names(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let names = state.meta.xattr_names(user.id, EntryId(id)).await?;
    Ok(Json(json!({ "names": names })))
}

/// `GET /file/{id}/xattrs/{name}`: the raw value.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, name)): ApiPath<(u64, String)>,
) -> Result<impl IntoResponse, ApiError> {
    check_name(&name)?;
    let value = state.meta.xattr(user.id, EntryId(id), &name).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], value))
}

#[derive(Debug, Deserialize)]
pub struct SetQuery {
    #[serde(default)]
    mode: XattrMode,
}

/// `PUT /file/{id}/xattrs/{name}[?mode=create|replace]`: the raw value in the body.
pub async fn set(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, name)): ApiPath<(u64, String)>,
    ApiQuery(query): ApiQuery<SetQuery>,
    value: Bytes,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    if value.len() > MAX_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("an attribute value is at most {MAX_VALUE} bytes"),
        ));
    }
    state
        .meta
        .set_xattr(user.id, EntryId(id), &name, &value, query.mode)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /file/{id}/xattrs/{name}`.
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, name)): ApiPath<(u64, String)>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    state.meta.remove_xattr(user.id, EntryId(id), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
