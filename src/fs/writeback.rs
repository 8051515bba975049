//! Write-back: a staged file's content and attribute changes, sent to the server.
//!
//! A close records the file's state as the one to send (its generation, see
//! [`staging`](super::staging)) and queues it; the sync worker commits it with the
//! version it was based on. `fsync` and a rename over the file commit at once. A commit
//! never sends a mix of two states: it reads the file, and if a write came while it
//! read, that read is thrown away ([`FsError::Overtaken`]). The sync worker then leaves
//! the file to the writer's own close; an fsync reads again, and after
//! [`READS_BEFORE_COPY`] tries commits a copy taken while no write goes on. A commit
//! holds only the file's commit lock while it waits on the server: writes, `getattr`
//! and attribute changes go on meanwhile and are sent by the next commit.
//!
//! A stale base version keeps the local bytes as `NAME (conflicted copy HOST DATE).EXT`
//! beside the winner, and later writes through the same handles go to that copy.

use std::path::Path;
use std::time::SystemTime;

use cubby_proto::api::{AttrsRequest, Entry};
use cubby_proto::{ContentHash, ErrorCode, chunking};

use super::staging::{self, Snapshot, Staged};
use super::{CubbyFs, FsError, FsResult, is_local, lock};
use crate::conflict::conflicted_names;
use crate::transfer::{self, Target};

mod batch;
pub(super) use batch::BATCH_FILES;

/// Which state of a staged file a commit sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitPoint {
    /// The state at its last close (the sync worker's uploads). If a write came since,
    /// nothing is sent now: the writer's own close queues the next commit.
    LastClose,
    /// The state now (`fsync`, a rename over the file), which holds everything written
    /// before the call.
    Now,
}

/// How many times a commit at [`CommitPoint::Now`] reads a file that writes keep
/// changing before it commits a copy taken under the write gate.
const READS_BEFORE_COPY: usize = 3;

/// What one commit sends: the file's pending state when it began.
struct Sending {
    target_id: u64,
    base_version: u64,
    dirty: bool,
    modified_ns: Option<i64>,
    attrs: staging::PendingAttrs,
    /// The content's generation that is sent.
    generation: u64,
}

impl CubbyFs {
    /// A writer closed: changes wait for upload, recorded so a restart sends them.
    pub(super) fn closed(&self, id: u64, staged: &Staged) -> FsResult<()> {
        let mut state = staged.lock();
        if !state.pending() {
            return Ok(());
        }
        staged.mark_closed(&mut state);
        staged.record_pending(&state, false)?;
        drop(state);
        self.sync.queue_upload(self.staged_home(id));
        Ok(())
    }

    /// The id file `id`'s staged copy is kept under: its own, or the file's it was
    /// saved over while open (see `staged_moves_over`).
    pub(super) fn staged_home(&self, id: u64) -> u64 {
        let id = self.journal.canonical(id);
        if lock(&self.staged).contains_key(&id) {
            return id;
        }
        let ino = self.ino_of(id);
        lock(&self.aliases).get(&ino).copied().unwrap_or(id)
    }

    /// Drops a staged copy nobody has open and nothing needs committing.
    pub(super) fn unstage_if_idle(&self, id: u64) {
        let id = self.journal.canonical(id);
        let mut map = lock(&self.staged);
        if let Some(staged) = map.get(&id)
            && std::sync::Arc::strong_count(staged) == 1
            && !staged.lock().pending()
        {
            staged.discard(&self.spares);
            map.remove(&id);
        }
    }

    /// Uploads the staged changes of file `id`, if any (the sync worker's step).
    pub(super) fn upload(&self, id: u64) -> FsResult<()> {
        let id = self.journal.canonical(id);
        let Some(staged) = self.staged_copy(id) else {
            return Ok(());
        };
        let result = self.commit_staged(id, &staged, CommitPoint::LastClose);
        drop(staged);
        self.unstage_if_idle(id);
        result
    }

    /// Commits a staged file if it has changes, waiting for the server. Once the server
    /// has committed, the content is durable there; if it could not, the content and
    /// its pending record are made durable here before the error returns, so a failure
    /// loses nothing.
    pub(super) fn commit_staged(
        &self,
        id: u64,
        staged: &Staged,
        point: CommitPoint,
    ) -> FsResult<()> {
        let _one_at_a_time = staged.committing.lock();
        let mut snapshot = None;
        let mut reads = 0;
        loop {
            let tried = self.commit_once(id, staged, point, snapshot.as_ref());
            let tried = match tried {
                Err(FsError::Overtaken) if point == CommitPoint::Now => {
                    reads += 1;
                    if reads < READS_BEFORE_COPY {
                        continue;
                    }
                    tracing::debug!(file = id, "writes keep coming: a copy is committed");
                    match staged.snapshot() {
                        Ok(copy) => {
                            snapshot = Some(copy);
                            continue;
                        }
                        Err(error) => Err(error.into()),
                    }
                }
                other => other,
            };
            match tried {
                // The writer's close sends the state it leaves.
                Err(FsError::Overtaken) => return Ok(()),
                Err(error) => {
                    staged.file.sync_all()?;
                    staged.record_pending(&staged.lock(), true)?;
                    return Err(error);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One try at committing what `staged` waits with (from `snapshot` when there is
    /// one).
    fn commit_once(
        &self,
        id: u64,
        staged: &Staged,
        point: CommitPoint,
        snapshot: Option<&Snapshot>,
    ) -> FsResult<()> {
        let Some(sending) = self.what_to_send(staged, point, snapshot)? else {
            return Ok(());
        };
        let mut target_id = sending.target_id;
        if sending.dirty {
            let source = snapshot.map_or(staged.path.as_path(), |s| s.path.as_path());
            // Whether what was read of `source` is the state being sent.
            let unchanged =
                || snapshot.is_some() || staged.settled_generation() == sending.generation;
            let Some(report) = self.send_content(staged, &sending, source, &unchanged)? else {
                // Deleted here meanwhile: nothing of it is sent.
                return Ok(());
            };
            target_id = report.file_id;
            self.content_committed(id, staged, &sending, &report)?;
        }
        if !sending.attrs.is_empty() {
            let attrs = attrs_request(&sending.attrs);
            let updated = self.call(self.remote.set_attrs(target_id, &attrs))?;
            self.attrs_committed(staged, &sending, &updated);
        }
        self.commit_finished(id, staged)
    }

    /// The server committed `report`, the content `sending` read of `staged` (file
    /// `id`): the file is clean unless written since, and the caches know the version.
    fn content_committed(
        &self,
        id: u64,
        staged: &Staged,
        sending: &Sending,
        report: &transfer::UploadReport,
    ) -> FsResult<()> {
        // Under the state lock, as before a commit's end is visible: whoever finds
        // the file clean finds the caches knowing the version it became.
        let mut state = staged.lock();
        let clean = staged.generation() == sending.generation;
        let modified = if clean {
            state.modified_ns
        } else {
            sending.modified_ns
        };
        self.committed(id, staged, report, modified);
        state.target_id = report.file_id;
        state.base_version = report.version;
        if clean {
            state.dirty = false;
            state.modified_ns = None;
        }
        if state.pending() {
            // A restart now bases what is left on the version just made.
            staged.record_pending(&state, false)?;
        }
        drop(state);
        if report.file_id != sending.target_id {
            // A conflicted copy: the name holds another client's version, not the
            // one this mount and its kernel answered with while the change waited.
            self.entries.invalidate(&sending.target_id);
            if let Some(kernel) = self.kernel.get() {
                kernel.forget_attributes_now(self.ino_of(id));
            }
        }
        Ok(())
    }

    /// The server set the attributes `sending` carried: `updated` is the entry now.
    fn attrs_committed(&self, staged: &Staged, sending: &Sending, updated: &Entry) {
        self.placed(updated);
        staged.lock().attrs.sent(&sending.attrs);
    }

    /// The end of a commit of `staged` (file `id`): what changed meanwhile is recorded
    /// and queued, or nothing waits any more.
    fn commit_finished(&self, id: u64, staged: &Staged) -> FsResult<()> {
        let state = staged.lock();
        if state.pending() {
            // Changed meanwhile: the record holds the new base, and what waits is sent
            // next (a close during the commit queued it already).
            staged.record_pending(&state, false)?;
            if !state.dirty || staged.generation() == state.closed_generation {
                self.sync.queue_upload(self.journal.canonical(id));
            }
        } else {
            staged.clear_pending();
        }
        Ok(())
    }

    /// What a commit starting now sends, recorded as pending; `None` when nothing
    /// waits, or when the state to send is gone (written since its last close).
    fn what_to_send(
        &self,
        staged: &Staged,
        point: CommitPoint,
        snapshot: Option<&Snapshot>,
    ) -> FsResult<Option<Sending>> {
        let mut state = staged.lock();
        if !state.pending() {
            return Ok(None);
        }
        let target_id = self.journal.canonical(state.target_id);
        if is_local(target_id) {
            // Its creation is still journaled: the sync worker replays that first.
            return Err(FsError::Offline);
        }
        state.target_id = target_id;
        if point == CommitPoint::Now && snapshot.is_none() {
            staged.mark_closed(&mut state);
        }
        let generation = snapshot.map_or(state.closed_generation, |s| s.generation);
        // Written since its last close: that state is gone, and the writer's close
        // sends the next. (At `Now` a write since the mark is found by the read's check,
        // which reads again.)
        if point == CommitPoint::LastClose && state.dirty && staged.generation() != generation {
            return Ok(None);
        }
        staged.record_pending(&state, false)?;
        Ok(Some(Sending {
            target_id,
            base_version: state.base_version,
            dirty: state.dirty,
            modified_ns: state.modified_ns,
            attrs: state.attrs.clone(),
            generation,
        }))
    }

    /// Commits the content read from `source` as the next version of the file, or as
    /// a conflicted copy beside it when its base is stale. `None`: the file was
    /// deleted here meanwhile.
    fn send_content(
        &self,
        staged: &Staged,
        sending: &Sending,
        source: &Path,
        unchanged: &(dyn Fn() -> bool + Sync),
    ) -> FsResult<Option<transfer::UploadReport>> {
        let target_id = sending.target_id;
        let base = match sending.base_version {
            0 => self.created_base(target_id)?,
            base => Some(base),
        };
        let committed = match base {
            Some(base) => match self
                .until_offline(transfer::commit_local(
                    &self.remote,
                    source,
                    &Target::File(target_id),
                    Some(base),
                    unchanged,
                ))
                .ok_or(FsError::Offline)?
            {
                Ok(report) => Some(report),
                Err(transfer::UploadError::Remote(error))
                    if error.code() == Some(ErrorCode::VersionConflict) =>
                {
                    self.committed_already(target_id, source, unchanged)?
                }
                Err(transfer::UploadError::Remote(error))
                    if error.code() == Some(ErrorCode::NotFound) =>
                {
                    if staged.lock().unlinked {
                        return Ok(None);
                    }
                    None
                }
                Err(transfer::UploadError::Remote(error)) => {
                    return Err(self.remote_failed(error));
                }
                Err(error) => return Err(error.into()),
            },
            None => None,
        };
        if let Some(report) = committed {
            return Ok(Some(report));
        }
        let copy = self.keep_conflicted_copy(target_id, source, unchanged)?;
        tracing::warn!(
            file = target_id,
            copy = copy.file_id,
            "conflict: kept a conflicted copy"
        );
        self.sync.conflict(target_id, copy.file_id);
        Ok(Some(copy))
    }

    /// The server holds `report`'s version of what `staged` (file `id`) waited with.
    fn committed(
        &self,
        id: u64,
        staged: &Staged,
        report: &transfer::UploadReport,
        modified: Option<i64>,
    ) {
        self.committed_versions
            .insert(report.file_id, report.version);
        self.cache_small_content(staged, report);
        let parent = self.entries.get(&report.file_id).and_then(|e| e.parent_id);
        self.forget(report.file_id, parent);
        lock(&self.cached_version).insert(id, report.version);
        // What offline reads go by (the server's own times come with the next fetch).
        if let Some(mut known) = self.known_entries.get(&report.file_id) {
            known.size = report.size;
            known.version = report.version;
            known.hash = Some(report.hash);
            known.mtime_ns = modified.unwrap_or(known.mtime_ns);
            // What the file's attributes answer offline.
            self.known_entries.insert(known.id, known);
            self.known_changed();
        }
    }

    /// The base for the first commit to a file created here: its empty first version,
    /// unless someone else wrote it meanwhile (`None`: a conflict).
    fn created_base(&self, id: u64) -> FsResult<Option<u64>> {
        match self.call(self.remote.entry(id)) {
            Ok(entry) => Ok((entry.size == 0 && entry.version <= 1).then_some(entry.version)),
            Err(FsError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Content of at most one chunk that was just committed joins the chunk cache, so
    /// reading it back (on this mount, later, or offline) asks the server for nothing.
    /// Only if the staged bytes still hash to what the server committed.
    fn cache_small_content(&self, staged: &Staged, report: &transfer::UploadReport) {
        if report.size == 0 || report.size > u64::from(chunking::MIN_CHUNK) {
            return;
        }
        if let Ok(data) = staged.read_at(0, report.size as usize)
            && ContentHash::of(&data) == report.hash
        {
            self.chunks.put(&report.hash, &bytes::Bytes::from(data));
        }
    }

    /// After a stale-version refusal: the server's current version of file `id`, when
    /// it already holds exactly `content`. A commit whose answer was lost (the server
    /// went silent, the connection broke) is found here on its retry, and never
    /// conflicts with itself.
    fn committed_already(
        &self,
        id: u64,
        content: &Path,
        unchanged: &(dyn Fn() -> bool + Sync),
    ) -> FsResult<Option<transfer::UploadReport>> {
        let current = self.call(self.remote.entry(id))?;
        let Some(current_hash) = current.hash else {
            return Ok(None);
        };
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(content)?)?;
        if !unchanged() {
            return Err(FsError::Overtaken);
        }
        if ContentHash::from(hasher.finalize()) != current_hash {
            return Ok(None);
        }
        tracing::info!(
            file = id,
            version = current.version,
            "the server already holds this content (an earlier commit's answer was lost)"
        );
        self.remember(&current);
        Ok(Some(transfer::UploadReport {
            path: current.name.clone(),
            file_id: current.id,
            version: current.version,
            size: current.size,
            hash: current_hash,
            chunks_total: 0,
            chunks_sent: 0,
            bytes_sent: 0,
            bytes_reused: current.size,
            conflict: None,
        }))
    }

    /// Commits `content` as a conflicted copy beside file `id` (in the root if `id`
    /// is gone).
    fn keep_conflicted_copy(
        &self,
        id: u64,
        content: &Path,
        unchanged: &(dyn Fn() -> bool + Sync),
    ) -> FsResult<transfer::UploadReport> {
        let (parent, name) = match self.call(self.remote.entry(id)) {
            Ok(current) => (current.parent_id.ok_or(FsError::Invalid)?, current.name),
            Err(FsError::NotFound) => {
                let name = self
                    .known_entries
                    .get(&id)
                    .map_or_else(|| format!("recovered-{id}"), |e| e.name);
                (self.root_id, name)
            }
            Err(error) => return Err(error),
        };
        let now = SystemTime::now();
        for name in conflicted_names(&name, &self.host, now) {
            let target = Target::Child { parent, name };
            let committed = self
                .until_offline(transfer::commit_local(
                    &self.remote,
                    content,
                    &target,
                    None,
                    unchanged,
                ))
                .ok_or(FsError::Offline)?;
            match committed {
                Ok(report) => {
                    self.forget(report.file_id, Some(parent));
                    return Ok(report);
                }
                Err(transfer::UploadError::Remote(error))
                    if matches!(
                        error.code(),
                        Some(ErrorCode::VersionConflict | ErrorCode::AlreadyExists)
                    ) => {}
                Err(transfer::UploadError::Remote(error)) => return Err(self.remote_failed(error)),
                Err(error) => return Err(error.into()),
            }
        }
        Err(FsError::Io("no free name for a conflicted copy".into()))
    }
}

/// The request that sets attributes waiting with a file's content.
fn attrs_request(pending: &staging::PendingAttrs) -> AttrsRequest {
    AttrsRequest {
        mode: pending.mode,
        uid: pending.uid,
        gid: pending.gid,
        mtime_ns: pending.mtime_ns,
        atime_ns: pending.atime_ns,
    }
}
