//! Journal replay in batches: the run of journaled changes at the head of the journal
//! that map one to one onto a server change (creates, mkdirs, plain moves, deletes,
//! attribute changes) goes in one `POST /batch`, one round trip and one transaction on
//! the server, instead of a request each.
//!
//! A batch is an accelerator for the replay of single changes, never a second set of
//! rules: each item carries its change's idempotency key, and is applied and answered
//! exactly as its own request would be; whatever needs a decision (a name taken by
//! another client, a parent gone, a rename over a file, a symlink) stops the batch there
//! and is replayed on its own by [`CubbyFs::replay`], which knows how to decide it.
//! Changes that never reach the server (attributes of content still waiting, which ride
//! with its commit) are replayed in their place in the batch's order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use cubby_proto::api::{BatchDone, BatchItem, BatchOp, BatchRef, BatchRequest, EntryKind};

use super::Applied;
use crate::fs::journal::{Op, is_local};
use crate::fs::{CubbyFs, FsError, FsResult, lock};

/// Most changes sent in one batch (the server takes up to
/// [`cubby_proto::api::MAX_BATCH_ITEMS`]).
const BATCH_ITEMS: usize = 256;

/// What a batch did.
pub(super) struct BatchRun {
    /// Journaled changes applied and retired.
    pub applied: usize,
    /// The change the batch stopped at (to be replayed on its own), if it did.
    pub stopped_at: Option<u64>,
}

/// One journaled change of a batch: sent as an item, or replayed in its place.
enum Step {
    Item,
    Local,
}

impl CubbyFs {
    /// Replays the changes at the head of the journal in one batch; `applied == 0` and
    /// no stop when the first change does not go in a batch (or the server takes no
    /// batches), so the caller replays it on its own.
    pub(super) fn replay_batch(&self) -> FsResult<BatchRun> {
        let nothing = BatchRun {
            applied: 0,
            stopped_at: None,
        };
        if self.sync.no_batches.load(Ordering::Relaxed) {
            return Ok(nothing);
        }
        let canon = |id| self.journal.canonical(id);
        let mut items = Vec::new();
        let mut plan = Vec::new();
        // Local ids of entries an earlier item creates, by that item's index.
        let mut made: HashMap<u64, usize> = HashMap::new();
        // Entries of changes replayed in their place: a later change of one of them may
        // not reach the server before it does.
        let mut held = Vec::new();
        for (seq, key, op) in self.journal.leading(BATCH_ITEMS) {
            if touched_by(&op).iter().any(|id| held.contains(&canon(*id))) {
                break;
            }
            let step = if self.rides_with_content(&op) {
                held.extend(touched_by(&op).iter().map(|id| canon(*id)));
                Step::Local
            } else {
                match self.batch_op(&op, &made) {
                    Some(item) => {
                        if let Op::Create { entry, .. } | Op::Mkdir { entry } = &op {
                            made.insert(canon(entry.id), items.len());
                        }
                        items.push(BatchItem {
                            key: key.clone(),
                            op: item,
                        });
                        Step::Item
                    }
                    None => break,
                }
            };
            plan.push((seq, key, op, step));
        }
        if items.is_empty() {
            return Ok(nothing);
        }
        let response = match self.call(self.remote.batch(&BatchRequest { items })) {
            Ok(response) => response,
            // A server that takes no batches (an older version): one change at a time.
            Err(error @ (FsError::NotFound | FsError::Invalid)) => {
                tracing::warn!(%error, "the server takes no batches; changes go one at a time");
                self.sync.no_batches.store(true, Ordering::Relaxed);
                return Ok(nothing);
            }
            Err(error) => return Err(error),
        };
        let mut done = response.done.into_iter();
        let mut run = BatchRun {
            applied: 0,
            stopped_at: None,
        };
        for (seq, key, op, step) in plan {
            let applied = match step {
                Step::Item => {
                    let Some(outcome) = done.next() else {
                        run.stopped_at = Some(seq);
                        break;
                    };
                    self.applied_item(&op, outcome)?
                }
                // Every item before it is applied: its place in the order has come.
                Step::Local => {
                    let replayed = super::super::replaying_with(key, || self.replay(&op));
                    self.settled(&op, replayed)?
                }
            };
            let mut overlay = lock(&self.overlay);
            self.note_applied(&overlay, applied);
            self.journal.done(seq);
            overlay.retire(&op, |id| self.journal.canonical(id));
            run.applied += 1;
        }
        if let Some(stop) = &response.stopped {
            tracing::debug!(index = stop.index, status = stop.status, message = %stop.error.error.message,
                "a batch stopped at a change that is replayed on its own");
        }
        Ok(run)
    }

    /// Whether `op` is an attribute change that waits with its file's content (the
    /// replay of a single change keeps it with the staged file, asking nothing).
    fn rides_with_content(&self, op: &Op) -> bool {
        let Op::SetAttrs { entry, .. } = op else {
            return false;
        };
        self.staged_copy(entry.id).is_some_and(|staged| {
            let state = staged.lock();
            state.dirty && state.pending()
        })
    }

    /// `op` as a batch item, if it maps onto one server change with nothing to decide;
    /// entries not yet on the server are named by the earlier item that makes them.
    fn batch_op(&self, op: &Op, made: &HashMap<u64, usize>) -> Option<BatchOp> {
        let reference = |id: u64| {
            let id = self.journal.canonical(id);
            if is_local(id) {
                made.get(&id).map(|&item| BatchRef::Item { item })
            } else {
                Some(BatchRef::Id(id))
            }
        };
        let fresh = |id: u64| is_local(self.journal.canonical(id));
        match op {
            Op::Create { entry, uid, gid }
                if entry.kind != EntryKind::Symlink && fresh(entry.id) =>
            {
                Some(BatchOp::Create {
                    parent: reference(entry.parent_id?)?,
                    name: entry.name.clone(),
                    mode: (entry.mode != 0o644).then_some(entry.mode),
                    uid: *uid,
                    gid: *gid,
                    time_ns: Some(entry.ctime_ns),
                })
            }
            Op::Mkdir { entry } if fresh(entry.id) => Some(BatchOp::Mkdir {
                parent: reference(entry.parent_id?)?,
                name: entry.name.clone(),
                mode: Some(entry.mode),
                uid: entry.uid,
                gid: entry.gid,
            }),
            Op::Rename {
                entry,
                replaced: None,
            } => Some(BatchOp::Move {
                id: reference(entry.id)?,
                parent: reference(entry.parent_id?)?,
                name: entry.name.clone(),
                replace: false,
            }),
            Op::Delete { id, .. } => Some(BatchOp::Delete {
                id: reference(*id)?,
            }),
            Op::SetAttrs { entry, attrs } => Some(BatchOp::Attrs {
                id: reference(entry.id)?,
                attrs: attrs.clone(),
            }),
            _ => None,
        }
    }

    /// Records what the server did for batched change `op`, as its single replay would.
    fn applied_item(&self, op: &Op, outcome: BatchDone) -> FsResult<Applied> {
        let canon = |id| self.journal.canonical(id);
        let entry = match (op, outcome.entry) {
            (Op::Delete { id, parent }, _) => {
                return Ok(Applied::Removed {
                    id: canon(*id),
                    parent: parent.map(canon),
                });
            }
            (_, Some(entry)) => entry,
            (_, None) => return Ok(Applied::Unknown),
        };
        Ok(match op {
            Op::Create { entry: local, .. } => {
                self.resolved(local.id, &entry)?;
                Applied::Placed { entry, from: None }
            }
            Op::Mkdir { entry: local } => {
                // Made just now, so empty (see the single replay).
                self.made_empty(entry.id);
                self.resolved(local.id, &entry)?;
                Applied::Placed { entry, from: None }
            }
            Op::Rename { entry: local, .. } => {
                let from = self
                    .known_entries
                    .get(&canon(local.id))
                    .and_then(|known| known.parent_id);
                match from {
                    Some(_) => Applied::Placed { entry, from },
                    None => Applied::Unknown,
                }
            }
            _ => Applied::Placed {
                from: entry.parent_id,
                entry,
            },
        })
    }
}

/// The entries a journaled change names (itself, and the directory it goes to).
fn touched_by(op: &Op) -> Vec<u64> {
    match op {
        Op::Create { entry, .. } | Op::Mkdir { entry } | Op::Rename { entry, .. } => {
            let mut ids = vec![entry.id];
            ids.extend(entry.parent_id);
            ids
        }
        Op::Delete { id, .. } => vec![*id],
        Op::SetAttrs { entry, .. } => vec![entry.id],
    }
}
