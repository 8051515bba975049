//! `POST /batch`: a run of namespace changes in one request and one transaction, each
//! item doing what its own route does (mkdir, create, move, delete, attrs) and carrying
//! the idempotency key its own request would. A client replaying a journal sends many
//! changes for the cost of one round trip and one disk flush.

use axum::Json;
use axum::extract::State;
use cubby_proto::Name;
use cubby_proto::api::{
    BatchOp, BatchRef, BatchRequest, BatchResponse, BatchStop, MAX_BATCH_ITEMS,
};

use super::ApiJson;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::meta::{AttrChange, BatchChange, BatchChangeItem, EntryId, ItemRef};

/// Longest idempotency key taken (as for the header).
const MAX_KEY: usize = 128;

/// `POST /batch {"items": [{"op": "mkdir", "parent": 1, "name": "a", "key": "..."},
/// {"op": "create", "parent": {"item": 0}, "name": "f"}, ...]}`: the items in order.
/// The answer lists what each applied item did; a refused item (or a name that is not
/// valid) stops the batch there, reported as `stopped` with the error its own route
/// would answer.
pub async fn batch(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if request.items.is_empty() || request.items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH_ITEMS} items"
        )));
    }
    let mut items = Vec::with_capacity(request.items.len());
    let mut invalid = None;
    for (index, item) in request.items.into_iter().enumerate() {
        if let Some(key) = &item.key
            && (key.is_empty() || key.len() > MAX_KEY)
        {
            return Err(ApiError::bad_request(format!(
                "item {index}: a key is 1 to {MAX_KEY} characters"
            )));
        }
        match change(index, item.op)? {
            Ok(change) => items.push(BatchChangeItem {
                key: item.key,
                change,
            }),
            // Applied up to here, as if this item were refused by the store.
            Err(error) => {
                invalid = Some((index, error));
                break;
            }
        }
    }
    let outcome = state
        .meta
        .apply_batch(user.id, super::device(&headers), items)
        .await?;
    let stopped = match outcome.stopped {
        Some((index, error)) => Some(stop(index, ApiError::from(error))),
        None => invalid.map(|(index, error)| stop(index, error)),
    };
    Ok(Json(BatchResponse {
        done: outcome.done,
        stopped,
    }))
}

fn stop(index: usize, error: ApiError) -> BatchStop {
    BatchStop {
        index,
        status: error.status.as_u16(),
        error: error.into_body(),
    }
}

/// Item `index` as a change for the store: `Err` for a malformed request (the whole
/// batch is refused), `Ok(Err)` for a name that is not valid (the batch stops there).
fn change(index: usize, op: BatchOp) -> Result<Result<BatchChange, ApiError>, ApiError> {
    let reference = |r: BatchRef| match r {
        BatchRef::Id(id) => Ok(ItemRef::Id(EntryId(id))),
        BatchRef::Item { item } if item < index => Ok(ItemRef::Earlier(item)),
        BatchRef::Item { item } => Err(ApiError::bad_request(format!(
            "item {index} refers to item {item}, which is not before it"
        ))),
    };
    let name = |name: &str| name.parse::<Name>().map_err(ApiError::from);
    let now = crate::meta::sqlite::now_ns();
    Ok(match op {
        BatchOp::Mkdir {
            parent,
            name: dir,
            mode,
            uid,
            gid,
        } => {
            let parent = reference(parent)?;
            name(&dir).map(|name| BatchChange::Mkdir {
                parent,
                name,
                mode: mode.unwrap_or(0o755) & 0o7777,
                attrs: AttrChange {
                    uid,
                    gid,
                    ..AttrChange::default()
                },
            })
        }
        BatchOp::Create {
            parent,
            name: file,
            mode,
            uid,
            gid,
            time_ns,
        } => {
            let parent = reference(parent)?;
            // A create made earlier (offline, or journaled) keeps the time it was made.
            let made = time_ns.map(|time| time.min(now));
            name(&file).map(|name| BatchChange::Create {
                parent,
                name,
                attrs: AttrChange {
                    mode: mode.map(|m| m & 0o7777),
                    uid,
                    gid,
                    mtime_ns: made,
                    atime_ns: made,
                    ctime_ns: made,
                },
            })
        }
        BatchOp::Move {
            id,
            parent,
            name: to,
            replace,
        } => {
            let (id, parent) = (reference(id)?, reference(parent)?);
            name(&to).map(|name| BatchChange::Move {
                id,
                parent,
                name,
                replace,
            })
        }
        BatchOp::Delete { id } => Ok(BatchChange::Delete { id: reference(id)? }),
        BatchOp::Attrs { id, attrs } => Ok(BatchChange::SetAttrs {
            id: reference(id)?,
            attrs: AttrChange::from(&attrs),
        }),
    })
}
