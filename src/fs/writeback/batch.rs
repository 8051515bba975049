//! Small files committed in batches: the sync worker sends the queued files of at most
//! one chunk, with the attributes each waits with, in one `POST /upload/batch` (one
//! round trip and one metadata transaction for all of them) instead of an upload and
//! an attribute change each.
//!
//! A batch is an accelerator for the commit of one file, never a second set of rules:
//! each file is taken exactly as [`CubbyFs::commit_staged`] would take it (its commit
//! lock held, its state at its last close, nothing sent that a write overtook), and the
//! server's answer is recorded by the same steps. A file the server refuses (a stale
//! base, a file gone) goes back in the queue for the commit of one file, which knows
//! how to decide it (a conflicted copy); nothing of it was committed.

use std::sync::Arc;

use cubby_proto::api::{UploadBatchItem, UploadBatchResult};
use cubby_proto::{ContentHash, chunking};

use super::{CommitPoint, Sending, attrs_request};
use crate::fs::staging::Staged;
use crate::fs::{CubbyFs, FsError, FsResult};
use crate::transfer::UploadReport;

/// Most files sent in one batch (the server takes up to
/// [`cubby_proto::api::MAX_UPLOAD_BATCH_FILES`]).
pub(in crate::fs) const BATCH_FILES: usize = 128;

/// What became of the files offered to a batch.
#[derive(Debug, Default)]
pub(in crate::fs) struct BatchUploads {
    /// Files committed (or with nothing left to send).
    pub done: usize,
    /// Files for the commit of one file: too large, busy, or refused by the server.
    pub one_by_one: Vec<u64>,
}

/// One file of a batch: its staged copy, what is sent, and the bytes read.
struct Taken {
    id: u64,
    staged: Arc<Staged>,
    sending: Sending,
    data: Vec<u8>,
}

impl CubbyFs {
    /// Commits what of `ids` (queued files) fits a batch; the rest is handed back for
    /// the commit of one file. An error when the server could not be reached: the files
    /// are then durable here, as a failed commit leaves them.
    pub(in crate::fs) fn upload_batch(&self, ids: &[u64]) -> FsResult<BatchUploads> {
        let mut outcome = BatchUploads::default();
        // Only what is sent is held during the request: a staged copy held here could
        // not be dropped when an open finds it stale, and the open would read it.
        let mut locks = Vec::with_capacity(ids.len());
        let mut taken = Vec::with_capacity(ids.len());
        for &id in ids {
            let id = self.journal.canonical(id);
            let staged = match self.staged_copy(id) {
                Some(staged) if small(&staged) => staged,
                Some(_) => {
                    outcome.one_by_one.push(id);
                    continue;
                }
                // Sent, deleted or unstaged meanwhile: nothing to do.
                None => {
                    outcome.done += 1;
                    continue;
                }
            };
            // A file an fsync or a save commits now is left to it.
            let Some(lock) = staged.committing.try_lock_arc() else {
                outcome.one_by_one.push(id);
                continue;
            };
            match self.take(id, &staged)? {
                Took::Send(file) => {
                    locks.push(lock);
                    taken.push(file);
                }
                Took::Nothing => outcome.done += 1,
                Took::OneByOne => outcome.one_by_one.push(id),
            }
        }
        if taken.is_empty() {
            return Ok(outcome);
        }
        let files = taken
            .iter()
            .map(|file| (item(file), file.data.clone()))
            .collect();
        let results = match self.call(self.remote.upload_batch(files)) {
            Ok(response) if response.results.len() == taken.len() => response.results,
            Ok(response) => {
                return Err(FsError::Io(format!(
                    "the server answered {} results for {} files",
                    response.results.len(),
                    taken.len()
                )));
            }
            // A server without batches (an older version): one by one from now on.
            Err(FsError::NotFound) => {
                tracing::warn!("the server takes no batches; files go one at a time");
                self.sync
                    .no_batches
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                outcome.one_by_one.extend(taken.iter().map(|file| file.id));
                return Ok(outcome);
            }
            Err(error) => {
                for file in &taken {
                    file.staged.file.sync_all()?;
                    file.staged.record_pending(&file.staged.lock(), true)?;
                }
                return Err(error);
            }
        };
        for (file, result) in taken.iter().zip(results) {
            match self.batch_committed(file, result) {
                Ok(true) => outcome.done += 1,
                Ok(false) => outcome.one_by_one.push(file.id),
                Err(error) => {
                    tracing::warn!(file = file.id, %error, "recording a batched commit failed");
                    outcome.one_by_one.push(file.id);
                }
            }
        }
        // Unstaged once nothing here holds them (a staged copy is dropped only when
        // its map holds the last reference).
        let finished: Vec<u64> = taken.iter().map(|file| file.id).collect();
        drop(locks);
        drop(taken);
        for id in finished {
            self.unstage_if_idle(id);
        }
        Ok(outcome)
    }

    /// What of staged file `id` a batch sends, as a commit at its last close would.
    fn take(&self, id: u64, staged: &Arc<Staged>) -> FsResult<Took> {
        let sending = match self.what_to_send(staged, CommitPoint::LastClose, None) {
            Ok(Some(sending)) => sending,
            Ok(None) => return Ok(Took::Nothing),
            // Its creation is still journaled.
            Err(FsError::Offline) => return Ok(Took::OneByOne),
            Err(error) => return Err(error),
        };
        // Attributes alone go with the commit of one file (one request either way).
        if !sending.dirty {
            return Ok(Took::OneByOne);
        }
        let data = std::fs::read(&staged.path)?;
        if data.len() > chunking::MIN_CHUNK as usize {
            return Ok(Took::OneByOne);
        }
        if staged.settled_generation() != sending.generation {
            // Written while read: the writer's close sends the state it leaves.
            return Ok(Took::Nothing);
        }
        Ok(Took::Send(Taken {
            id,
            staged: Arc::clone(staged),
            sending,
            data,
        }))
    }

    /// Records the server's answer for one file of a batch; `false` when it was refused
    /// and goes to the commit of one file.
    fn batch_committed(&self, file: &Taken, result: UploadBatchResult) -> FsResult<bool> {
        let Some(entry) = result.entry else {
            tracing::debug!(file = file.id, status = ?result.status, "a batched commit was refused");
            return Ok(false);
        };
        let report = UploadReport {
            path: format!("file {}", entry.id),
            file_id: entry.id,
            version: entry.version,
            size: entry.size,
            hash: entry.hash.unwrap_or_else(ContentHash::empty),
            chunks_total: usize::from(entry.size > 0),
            chunks_sent: usize::from(entry.size > 0),
            bytes_sent: file.data.len() as u64,
            bytes_reused: 0,
            conflict: None,
        };
        self.content_committed(file.id, &file.staged, &file.sending, &report)?;
        if !file.sending.attrs.is_empty() {
            self.attrs_committed(&file.staged, &file.sending, &entry);
        }
        self.commit_finished(file.id, &file.staged)?;
        Ok(true)
    }
}

/// What [`CubbyFs::take`] found.
enum Took {
    Send(Taken),
    /// Nothing to send now.
    Nothing,
    OneByOne,
}

/// Whether a staged file is small enough for a batch (it is read again once taken).
fn small(staged: &Staged) -> bool {
    staged
        .len()
        .is_ok_and(|len| len <= u64::from(chunking::MIN_CHUNK))
}

/// The batch item of a taken file: its base is the version it was based on, or for a
/// file created here, the empty version 1 its create made (a file someone else wrote
/// meanwhile is at 2 or later, and refused).
fn item(file: &Taken) -> UploadBatchItem {
    let attrs = &file.sending.attrs;
    UploadBatchItem {
        file_id: file.sending.target_id,
        base_version: Some(file.sending.base_version.max(1)),
        attrs: (!attrs.is_empty()).then(|| attrs_request(attrs)),
    }
}
