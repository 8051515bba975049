//! Batches of namespace changes for the SQLite engine: every item inside the one write
//! transaction, each behind a savepoint so a refused item leaves nothing behind, and
//! the answer of each keyed item stored beside the change it made (one disk flush for
//! the whole batch, and no window where a change is applied but its answer is not kept).

use cubby_proto::api::BatchDone;

use super::*;
use crate::meta::{AttrChange, BatchChange, BatchChangeItem, BatchOutcome, ItemRef, NewContent};

/// Applies `items` in order (see [`crate::meta::MetaStore::apply_batch`]).
pub(super) fn apply(
    tx: &Transaction<'_>,
    user: UserId,
    device: Option<&str>,
    items: Vec<BatchChangeItem>,
) -> Result<BatchOutcome, MetaError> {
    let mut done: Vec<BatchDone> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let change = match resolved(item.change, &done) {
            Ok(change) => change,
            Err(refused) => {
                return Ok(BatchOutcome {
                    done,
                    stopped: Some((index, refused)),
                });
            }
        };
        let request_hash = item.key.as_deref().map(|key| fingerprint(key, &change));
        if let Some(hash) = &request_hash
            && let Some(reply) = replies::stored(tx, user, hash)?
            && let Ok(first) = serde_json::from_slice::<BatchDone>(&reply.body)
        {
            done.push(first);
            continue;
        }
        tx.execute_batch("SAVEPOINT batch_item")?;
        match apply_one(tx, user, device, &change) {
            Ok(outcome) => {
                tx.execute_batch("RELEASE batch_item")?;
                if let Some(hash) = &request_hash {
                    let body = serde_json::to_vec(&outcome)
                        .map_err(|e| MetaError::Backend(format!("batch answer: {e}")))?;
                    let reply = StoredReply { status: 200, body };
                    replies::store(tx, user, hash, &reply, now_ns())?;
                }
                done.push(outcome);
            }
            // The whole transaction goes: nothing of the batch is applied.
            Err(error @ MetaError::Backend(_)) => return Err(error),
            Err(refused) => {
                tx.execute_batch("ROLLBACK TO batch_item; RELEASE batch_item")?;
                return Ok(BatchOutcome {
                    done,
                    stopped: Some((index, refused)),
                });
            }
        }
    }
    Ok(BatchOutcome {
        done,
        stopped: None,
    })
}

/// `change` with every reference to an earlier item replaced by that item's entry id.
fn resolved(change: BatchChange, done: &[BatchDone]) -> Result<BatchChange, MetaError> {
    let fix = |reference: ItemRef| match reference {
        ItemRef::Id(id) => Ok(ItemRef::Id(id)),
        ItemRef::Earlier(item) => done
            .get(item)
            .and_then(|earlier| earlier.entry.as_ref())
            .map(|entry| ItemRef::Id(EntryId(entry.id)))
            // A deleted entry, or an item not before this one.
            .ok_or(MetaError::NotFound),
    };
    Ok(match change {
        BatchChange::Mkdir {
            parent,
            name,
            mode,
            attrs,
        } => BatchChange::Mkdir {
            parent: fix(parent)?,
            name,
            mode,
            attrs,
        },
        BatchChange::Create {
            parent,
            name,
            attrs,
        } => BatchChange::Create {
            parent: fix(parent)?,
            name,
            attrs,
        },
        BatchChange::Move {
            id,
            parent,
            name,
            replace,
        } => BatchChange::Move {
            id: fix(id)?,
            parent: fix(parent)?,
            name,
            replace,
        },
        BatchChange::Delete { id } => BatchChange::Delete { id: fix(id)? },
        BatchChange::SetAttrs { id, attrs } => BatchChange::SetAttrs {
            id: fix(id)?,
            attrs,
        },
    })
}

/// The id of a resolved reference.
fn id(reference: ItemRef) -> Result<EntryId, MetaError> {
    match reference {
        ItemRef::Id(id) => Ok(id),
        ItemRef::Earlier(_) => Err(MetaError::Backend("an unresolved batch reference".into())),
    }
}

fn apply_one(
    tx: &Transaction<'_>,
    user: UserId,
    device: Option<&str>,
    change: &BatchChange,
) -> Result<BatchDone, MetaError> {
    let entry = match change {
        BatchChange::Mkdir {
            parent,
            name,
            mode,
            attrs,
        } => {
            let location = Location::Child {
                parent: id(*parent)?,
                name: name.clone(),
            };
            let made = mkdir_in(tx, user, &location, false, *mode)?;
            with_attrs(tx, user, made, attrs)?
        }
        BatchChange::Create {
            parent,
            name,
            attrs,
        } => {
            let request = CommitRequest {
                location: Location::Child {
                    parent: id(*parent)?,
                    name: name.clone(),
                },
                base_version: None,
                create_parents: false,
                content: NewContent {
                    size: 0,
                    hash: ContentHash::empty(),
                    chunks: Vec::new(),
                },
                device: device.map(str::to_owned),
                upload_id: None,
            };
            let made = match commit_in(tx, user, request, &NoChunks) {
                Err(MetaError::VersionConflict { .. }) => Err(MetaError::AlreadyExists),
                other => other,
            }?;
            with_attrs(tx, user, made, attrs)?
        }
        BatchChange::Move {
            id: moved,
            parent,
            name,
            replace,
        } => {
            let to = Location::Child {
                parent: id(*parent)?,
                name: name.clone(),
            };
            rename_in(tx, user, id(*moved)?, &to, *replace, None)?
        }
        BatchChange::Delete { id: deleted } => {
            let count = delete_in(tx, user, id(*deleted)?, false, None)?;
            return Ok(BatchDone {
                entry: None,
                deleted: Some(count),
            });
        }
        BatchChange::SetAttrs { id: changed, attrs } => {
            set_attrs_in(tx, user, id(*changed)?, attrs)?
        }
    };
    Ok(BatchDone {
        entry: Some(entry),
        deleted: None,
    })
}

/// Commits `items` in order, each behind a savepoint (see
/// [`crate::meta::MetaStore::commit_batch`]).
pub(super) fn commit_all(
    tx: &Transaction<'_>,
    user: UserId,
    items: Vec<(CommitRequest, AttrChange)>,
    presence: &dyn ChunkPresence,
) -> Result<Vec<Result<Entry, MetaError>>, MetaError> {
    let mut results = Vec::with_capacity(items.len());
    for (request, attrs) in items {
        tx.execute_batch("SAVEPOINT batch_commit")?;
        match commit_in(tx, user, request, presence).and_then(|e| with_attrs(tx, user, e, &attrs)) {
            Ok(entry) => {
                tx.execute_batch("RELEASE batch_commit")?;
                results.push(Ok(entry));
            }
            Err(error @ MetaError::Backend(_)) => return Err(error),
            Err(refused) => {
                tx.execute_batch("ROLLBACK TO batch_commit; RELEASE batch_commit")?;
                results.push(Err(refused));
            }
        }
    }
    Ok(results)
}

/// `entry` with `attrs` set, when they set anything.
fn with_attrs(
    tx: &Transaction<'_>,
    user: UserId,
    entry: Entry,
    attrs: &AttrChange,
) -> Result<Entry, MetaError> {
    let sets_any = attrs.mode.is_some()
        || attrs.uid.is_some()
        || attrs.gid.is_some()
        || attrs.mtime_ns.is_some()
        || attrs.atime_ns.is_some()
        || attrs.ctime_ns.is_some();
    if sets_any {
        set_attrs_in(tx, user, EntryId(entry.id), attrs)
    } else {
        Ok(entry)
    }
}

/// A create commits no chunks.
struct NoChunks;

impl ChunkPresence for NoChunks {
    fn all_present(&self, chunks: &[ChunkRef]) -> Result<bool, String> {
        Ok(chunks.is_empty())
    }
}

/// What identifies a keyed item's request: its key with the change, references
/// resolved (so the same change answers the same whether it named an entry by id or
/// by the earlier item that made it).
fn fingerprint(key: &str, change: &BatchChange) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"cubby batch item 1");
    field(key.as_bytes());
    let reference = |r: &ItemRef| match r {
        ItemRef::Id(id) => id.0.to_le_bytes(),
        ItemRef::Earlier(item) => (u64::MAX - *item as u64).to_le_bytes(),
    };
    let number =
        |value: Option<i64>| value.map_or_else(|| b"-".to_vec(), |v| v.to_le_bytes().to_vec());
    let attrs_fields = |attrs: &AttrChange| {
        [
            number(attrs.mode.map(i64::from)),
            number(attrs.mtime_ns),
            number(attrs.atime_ns),
            number(attrs.uid.map(i64::from)),
            number(attrs.gid.map(i64::from)),
            number(attrs.ctime_ns),
        ]
    };
    match change {
        BatchChange::Mkdir {
            parent,
            name,
            mode,
            attrs,
        } => {
            field(b"mkdir");
            field(&reference(parent));
            field(name.as_str().as_bytes());
            field(&mode.to_le_bytes());
            for part in attrs_fields(attrs) {
                field(&part);
            }
        }
        BatchChange::Create {
            parent,
            name,
            attrs,
        } => {
            field(b"create");
            field(&reference(parent));
            field(name.as_str().as_bytes());
            for part in attrs_fields(attrs) {
                field(&part);
            }
        }
        BatchChange::Move {
            id,
            parent,
            name,
            replace,
        } => {
            field(b"move");
            field(&reference(id));
            field(&reference(parent));
            field(name.as_str().as_bytes());
            field(&[u8::from(*replace)]);
        }
        BatchChange::Delete { id } => {
            field(b"delete");
            field(&reference(id));
        }
        BatchChange::SetAttrs { id, attrs } => {
            field(b"attrs");
            field(&reference(id));
            for part in attrs_fields(attrs) {
                field(&part);
            }
        }
    }
    hasher.finalize().into()
}
