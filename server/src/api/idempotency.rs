//! Idempotency keys: a change sent again with the key it was first sent with gets the
//! first answer, and is not applied twice.
//!
//! A client that journals changes replays them until it has recorded that the server
//! applied them; between the server's answer and that record (a crash, a lost answer)
//! a change would otherwise be applied again, and undo what another client did since
//! (a rename moved back, a mode set again). The key names one journaled change; the
//! answer is stored per request (the key with the method, path and body hashed
//! together), so each request a replay makes is answered as it was the first time.
//!
//! Answers of 5xx, 401, 408 and 429 are not stored: a request that failed for now runs
//! again. What this does not cover: the same request arriving twice at once (both run),
//! and a server that stops between applying a change and storing its answer.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cubby_proto::api::{IDEMPOTENCY_KEY, REPLAYED};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::StoredReply;

/// Longest key taken.
const MAX_KEY: usize = 128;

/// Largest request body read (the routes' own limits apply after).
const MAX_BODY: usize = 1 << 20;

/// Largest answer stored (every answer of the routes it covers is small JSON).
const MAX_REPLY: usize = 1 << 20;

/// Middleware for the routes that change the tree.
pub async fn at_most_once(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(next.run(request).await);
    };
    if request.method().is_safe() {
        return Ok(next.run(request).await);
    }
    let key = key
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY} visible characters"
            ))
        })?
        .to_owned();
    let (mut parts, body) = request.into_parts();
    let user = AuthUser::from_request_parts(&mut parts, &state).await?;
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::bad_request("request body too large or cut short"))?;
    let mut hasher = blake3::Hasher::new();
    for part in [
        key.as_bytes(),
        parts.method.as_str().as_bytes(),
        parts.uri.to_string().as_bytes(),
        &body,
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let request_hash: [u8; 32] = hasher.finalize().into();
    if let Some(reply) = state.meta.stored_reply(user.id, request_hash).await? {
        tracing::debug!(%key, status = reply.status, "answered again from the stored reply");
        return Ok(replayed(reply));
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = response.status();
    if !worth_keeping(status) {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_REPLY)
        .await
        .map_err(ApiError::internal)?;
    let reply = StoredReply {
        status: status.as_u16(),
        body: body.to_vec(),
    };
    if let Err(error) = state.meta.store_reply(user.id, request_hash, reply).await {
        // The change is applied: its answer goes out; a replay would apply it again.
        tracing::warn!(%error, %key, "could not keep the answer of a keyed request");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Whether an answer is the request's outcome for good (not a failure for now).
fn worth_keeping(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
        ))
}

fn replayed(reply: StoredReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let reply_has_body = !reply.body.is_empty();
    let mut response = (status, Bytes::from(reply.body)).into_response();
    let headers = response.headers_mut();
    if reply_has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
