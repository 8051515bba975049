//! Health, readiness and login.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cubby_proto::ErrorCode;
use cubby_proto::api::{LoginRequest, LoginResponse};
use serde_json::{Value, json};

use super::ApiJson;
use crate::AppState;
use crate::auth::{hash_password, verify_password};
use crate::error::ApiError;
use crate::meta::UserId;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the metadata store answers and the blob store is present.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let meta = state.meta.user_exists(UserId(0)).await;
    let blobs = state
        .blobs
        .contains(cubby_proto::ContentHash::empty())
        .await;
    if let (Ok(_), Ok(_)) = (&meta, &blobs) {
        return Ok(Json(json!({"status": "ready"})));
    }
    tracing::warn!(?meta, ?blobs, "not ready");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "not ready",
    ))
}

/// `POST /auth/login`: a token for a username and password.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let user = state.meta.user_by_name(&request.username).await?;
    // Unknown users cost the same hash as known ones, so timing tells nothing.
    let stored = match &user {
        Some(user) => user.password_hash.clone(),
        None => state.dummy_hash.clone(),
    };
    let password = request.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(&stored, &password))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            ));
        }
    };
    let (token, expires_at) = state.keys.issue(&user).map_err(ApiError::internal)?;
    tracing::info!(user = %user.name, "login");
    Ok(Json(LoginResponse { token, expires_at }))
}

/// A hash to verify against when the user does not exist.
pub fn dummy_hash() -> String {
    hash_password("cubby-no-such-user").unwrap_or_default()
}
