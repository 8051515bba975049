//! The change feed: `GET /changes`, a long poll over the caller's changes, and the
//! middleware that wakes waiting polls after writes.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use cubby_proto::api::ChangesResponse;
use serde::Deserialize;
use tokio::time::Instant;

use super::ApiQuery;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

/// The most changes one answer carries; a client with more to read asks again.
pub const MAX_CHANGES: u32 = 1000;
/// How long a poll waits when the client does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 25;
/// The longest a poll waits, whatever the client says.
pub const MAX_TIMEOUT_SECS: u64 = 60;
/// How often a waiting poll reads the feed again without a wake-up.
const RECHECK: Duration = Duration::from_secs(1);

/// `?cursor=N&timeout_secs=S`.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    cursor: Option<u64>,
    timeout_secs: Option<u64>,
}

/// `GET /changes`: without a cursor, the current cursor and no changes (a client starts
/// from now). With one, the changes after it at once if there are any; else waits up to
/// `timeout_secs` for one, then answers with none and the same cursor.
pub async fn changes(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<ChangesResponse>, ApiError> {
    let Some(cursor) = query.cursor else {
        return Ok(Json(ChangesResponse {
            cursor: state.meta.latest_change(user.id).await?,
            changes: Vec::new(),
            reset: false,
        }));
    };
    let timeout = query
        .timeout_secs
        .unwrap_or(DEFAULT_TIMEOUT_SECS)
        .min(MAX_TIMEOUT_SECS);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut waiter = state.changes.subscribe();
    loop {
        let batch = state
            .meta
            .changes_since(user.id, cursor, MAX_CHANGES)
            .await?;
        if batch.reset {
            return Ok(Json(ChangesResponse {
                cursor: batch.latest,
                changes: Vec::new(),
                reset: true,
            }));
        }
        if let Some(last) = batch.changes.last().map(|c| c.seq) {
            return Ok(Json(ChangesResponse {
                cursor: last,
                changes: batch.changes,
                reset: false,
            }));
        }
        let now = Instant::now();
        if now >= deadline || waiter.closing() {
            return Ok(Json(ChangesResponse {
                cursor,
                changes: Vec::new(),
                reset: false,
            }));
        }
        waiter.wait((deadline - now).min(RECHECK)).await;
    }
}

/// Middleware: after any request but a GET or HEAD (which never write), wakes the
/// waiting polls. It runs once the answer exists, so the write has committed.
pub async fn notify_changes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let may_write = !matches!(*request.method(), Method::GET | Method::HEAD);
    let response = next.run(request).await;
    if may_write {
        state.changes.notify();
    }
    response
}
