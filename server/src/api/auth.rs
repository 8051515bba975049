//! Health, readiness, login and the renewal of login tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cubby_proto::ErrorCode;
use cubby_proto::api::{LoginRequest, LoginResponse, RefreshRequest};
use serde_json::{Value, json};

use super::ApiJson;
use crate::AppState;
use crate::auth::{hash_password, verify_password};
use crate::error::ApiError;
use crate::meta::UserId;
use crate::meta::sqlite::now_ns;

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
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(ApiError::internal)?;
    let refresh_token = hex::encode(secret);
    state
        .meta
        .add_session(
            user.id,
            *blake3::hash(refresh_token.as_bytes()).as_bytes(),
            refresh_expiry(&state),
        )
        .await?;
    tracing::info!(user = %user.name, "login");
    Ok(Json(LoginResponse {
        token,
        expires_at,
        refresh_token: Some(refresh_token),
    }))
}

/// When a session used now expires (Unix nanoseconds).
fn refresh_expiry(state: &AppState) -> i64 {
    now_ns().saturating_add(state.config.refresh_ttl.as_nanos().min(i64::MAX as u128) as i64)
}

/// `POST /auth/refresh`: a new login token for a login's refresh token, while that is
/// valid (each use moves its expiry on).
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let hash = *blake3::hash(request.refresh_token.as_bytes()).as_bytes();
    let user = state
        .meta
        .renew_session(hash, now_ns(), refresh_expiry(&state))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "unknown or expired refresh token: log in again",
            )
        })?;
    let (token, expires_at) = state.keys.issue(&user).map_err(ApiError::internal)?;
    tracing::debug!(user = %user.name, "token renewed");
    Ok(Json(LoginResponse {
        token,
        expires_at,
        refresh_token: None,
    }))
}

/// A hash to verify against when the user does not exist.
pub fn dummy_hash() -> String {
    hash_password("cubby-no-such-user").unwrap_or_default()
}
