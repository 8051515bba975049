//! The sync worker: sends what waits locally (journaled namespace changes, in order,
//! then staged content) to the server, and tells the mount whether it is online.
//!
//! One thread, woken when work arrives; it replays the journal in order, then uploads
//! queued files, a few at once on scoped threads of its own. A transport failure marks the mount offline;
//! the worker then retries with capped exponential backoff (250 ms doubling to 4 s), and
//! the first request that succeeds marks it online again. A change the server refuses
//! for good (its parent was deleted elsewhere, say) is logged as the last error and
//! dropped; content is never dropped: a stale or vanished target gets a conflicted copy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use cubby_proto::api::{AttrsRequest, CreateRequest, Entry, EntryKind};
use serde::{Deserialize, Serialize};

use super::journal::Op;
use super::{CubbyFs, FsError, FsResult, lock};
use crate::conflict::{ATTEMPTS, conflicted_name};

mod batch;

/// What a replayed change did to the server's state, for the caches.
enum Applied {
    /// The entry is now as given; `from` is the directory it left, when it moved.
    Placed { entry: Entry, from: Option<u64> },
    /// The entry left `parent`.
    Removed { id: u64, parent: Option<u64> },
    /// The caches were brought up to date already.
    Cached,
    /// Not known exactly: cached listings and entries go.
    Unknown,
}

/// Pending uploads listed by name in the status.
pub const LISTED_UPLOADS: usize = 100;

/// Files the sync worker uploads at once.
const UPLOADS_AT_ONCE: usize = 3;

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// What the mount knows about its connection and its queue.
#[derive(Debug)]
pub struct SyncState {
    /// Whether the server answers; FUSE calls waiting on it give up when it goes false.
    online: tokio::sync::watch::Sender<bool>,
    uploads: Mutex<VecDeque<u64>>,
    wake: Condvar,
    woken: Mutex<bool>,
    /// Failed attempts since the last pass that went through.
    retries: AtomicU64,
    retries_total: AtomicU64,
    /// Set once the mount is unmounted: the runtime goes away under requests in flight,
    /// which is no outage to report.
    stopping: std::sync::atomic::AtomicBool,
    /// Whether the sync worker's thread runs (it ends once `stopping` is set).
    worker_running: Arc<std::sync::atomic::AtomicBool>,
    last_error: Mutex<Option<ErrorNote>>,
    conflicts: Mutex<Vec<ConflictNote>>,
    conflicted: Mutex<HashSet<u64>>,
    /// Held while the journal is replayed.
    replaying: Mutex<()>,
    /// Entries this mount changed lately: their feed entries are echoes of our own.
    touched: Mutex<HashMap<u64, Instant>>,
    /// Whether the change feed is followed now: while it is, what the mount cached is
    /// kept until a change says otherwise (see [`super::CacheExpiry`]).
    pub(super) feed_live: Arc<std::sync::atomic::AtomicBool>,
    /// The server answered a batch as an unknown route: changes replay, and files
    /// upload, one at a time.
    pub(super) no_batches: std::sync::atomic::AtomicBool,
}

/// How long a change this mount made is taken to be the cause of feed entries about it.
const ECHO_WINDOW: Duration = Duration::from_secs(5);

impl Default for SyncState {
    fn default() -> Self {
        Self {
            online: tokio::sync::watch::Sender::new(true),
            uploads: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            woken: Mutex::new(false),
            retries: AtomicU64::new(0),
            retries_total: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            worker_running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            last_error: Mutex::new(None),
            conflicts: Mutex::new(Vec::new()),
            feed_live: Arc::default(),
            conflicted: Mutex::new(HashSet::new()),
            replaying: Mutex::new(()),
            touched: Mutex::new(HashMap::new()),
            no_batches: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl SyncState {
    pub fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    /// Follows the connection state (see [`CubbyFs::until_offline`]).
    pub fn watch_online(&self) -> tokio::sync::watch::Receiver<bool> {
        self.online.subscribe()
    }

    /// The mount was unmounted: what fails from now on is the shutdown's doing. Calls
    /// waiting on the server give up (as when it goes offline) and the worker ends.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.online.send_replace(false);
        self.kick();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn went_offline(&self, why: &str) {
        if self.stopping.load(Ordering::Relaxed) {
            tracing::debug!(error = why, "request failed while unmounting");
            self.online.send_replace(false);
            return;
        }
        if self.online.send_replace(false) {
            tracing::warn!(error = why, "server unreachable: working offline");
        }
        self.note_error(why);
        self.kick();
    }

    /// Something failed now: it is the status's current error, with its time.
    pub fn note_error(&self, message: impl Into<String>) {
        *lock(&self.last_error) = Some(ErrorNote {
            message: message.into(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            current: true,
        });
    }

    fn failed_attempt(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.retries_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A pass of the worker went through with nothing failing: the last error is past,
    /// and the count of retries starts again.
    fn went_through(&self) {
        self.retries.store(0, Ordering::Relaxed);
        if let Some(note) = lock(&self.last_error).as_mut() {
            note.current = false;
        }
    }

    fn came_online(&self) {
        if !self.online.send_replace(true) {
            tracing::info!("server reachable again");
        }
    }

    /// Wakes the worker.
    pub fn kick(&self) {
        *lock(&self.woken) = true;
        self.wake.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let woken = lock(&self.woken);
        let (mut woken, _) = self
            .wake
            .wait_timeout_while(woken, timeout, |woken| !*woken)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *woken = false;
    }

    /// Queues file `id`'s staged content for upload.
    pub fn queue_upload(&self, id: u64) {
        let mut uploads = lock(&self.uploads);
        if !uploads.contains(&id) {
            uploads.push_back(id);
        }
        drop(uploads);
        self.kick();
    }

    /// Puts `ids` back at the head of the upload queue, in their order (each once).
    fn requeue_first(&self, ids: Vec<u64>) {
        let mut uploads = lock(&self.uploads);
        for id in ids.into_iter().rev() {
            if !uploads.contains(&id) {
                uploads.push_front(id);
            }
        }
    }

    /// File `id` no longer needs uploading.
    pub fn unqueue_upload(&self, id: u64) {
        lock(&self.uploads).retain(|queued| *queued != id);
    }

    pub fn conflict(&self, file: u64, copy: u64) {
        lock(&self.conflicted).extend([file, copy]);
        lock(&self.conflicts).push(ConflictNote { file, copy });
    }

    /// This mount just changed entry `id`.
    pub fn touched(&self, id: u64) {
        let mut touched = lock(&self.touched);
        let now = Instant::now();
        if touched.len() > 10_000 {
            touched.retain(|_, when| now.duration_since(*when) < ECHO_WINDOW);
        }
        touched.insert(id, now);
    }

    fn touched_lately(&self, id: u64) -> bool {
        lock(&self.touched)
            .get(&id)
            .is_some_and(|when| when.elapsed() < ECHO_WINDOW)
    }

    pub fn is_conflicted(&self, id: u64) -> bool {
        lock(&self.conflicted).contains(&id)
    }
}

/// An error the worker met, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorNote {
    pub message: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// Whether it still holds: false once a later pass went through.
    pub current: bool,
}

/// A write that lost a race: its bytes are in `copy`, beside `file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConflictNote {
    pub file: u64,
    pub copy: u64,
}

/// A staged file waiting for upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingUpload {
    pub id: u64,
    pub name: String,
    pub bytes: u64,
}

/// What `cubby status` shows (the root's `user.cubby.sync` attribute, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    pub online: bool,
    /// Journaled namespace changes plus files waiting for upload.
    pub queue_depth: usize,
    pub pending_operations: usize,
    /// Files waiting for upload (or being uploaded).
    #[serde(default)]
    pub pending_upload_count: usize,
    /// The first [`LISTED_UPLOADS`] of them (the status must fit in an attribute).
    pub pending_uploads: Vec<PendingUpload>,
    pub pending_bytes: u64,
    /// Failed attempts since the last pass that went through (0 once sync works).
    pub retries: u64,
    /// Failed attempts since the mount started.
    #[serde(default)]
    pub retries_total: u64,
    pub conflicts: Vec<ConflictNote>,
    /// The error that holds now (`None` once a later pass went through).
    pub last_error: Option<String>,
    /// The last error met, current or past, with its time.
    #[serde(default)]
    pub last_error_note: Option<ErrorNote>,
}

/// How long one poll of the change feed waits on the server (under the client's read
/// timeout).
const FEED_WAIT: Duration = Duration::from_secs(15);

/// The pause after a batch of changes before asking for more (well inside the 2 s in
/// which another mount's change must show).
const FEED_BATCHING: Duration = Duration::from_millis(250);

/// Starts the sync worker and the change-feed follower of `fs`; they stop when the
/// filesystem is dropped.
pub fn start(fs: &Arc<CubbyFs>) {
    let weak = Arc::downgrade(fs);
    let _ = fs.this.set(weak.clone());
    fs.sync.worker_running.store(true, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("cubby-sync".into())
        .spawn(move || run(weak))
        .expect("the sync thread starts");
    fs.runtime.spawn(follow(Arc::downgrade(fs)));
    fs.runtime.spawn(super::heartbeat::beat(Arc::downgrade(fs)));
}

/// Follows the server's change feed: every change drops what the mount and the
/// kernel cached about the entry and the directories it was and is in.
async fn follow(fs: Weak<CubbyFs>) {
    let mut cursor = None;
    loop {
        let Some(strong) = fs.upgrade() else { return };
        let remote = strong.remote.clone();
        drop(strong);
        match remote.changes(cursor, FEED_WAIT).await {
            Ok(batch) => {
                let Some(fs) = fs.upgrade() else { return };
                if batch.reset {
                    fs.forget_everything();
                } else {
                    for change in &batch.changes {
                        fs.changed(change);
                    }
                }
                cursor = Some(batch.cursor);
                fs.sync.feed_live.store(true, Ordering::SeqCst);
                if !batch.changes.is_empty() {
                    // Changes come in bursts (an untar): take them a few times a second
                    // rather than once per change.
                    tokio::time::sleep(FEED_BATCHING).await;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "change feed unavailable");
                if let Some(fs) = fs.upgrade()
                    && fs.sync.feed_live.swap(false, Ordering::SeqCst)
                {
                    // What was cached on the feed's word is kept no longer.
                    fs.forget_everything();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Says the worker has ended when dropped (also when it panics).
struct WorkerEnds(Arc<std::sync::atomic::AtomicBool>);

impl Drop for WorkerEnds {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn run(fs: Weak<CubbyFs>) {
    let Some(strong) = fs.upgrade() else { return };
    let _ends = WorkerEnds(Arc::clone(&strong.sync.worker_running));
    drop(strong);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let Some(fs) = fs.upgrade() else { return };
        if fs.sync.is_stopping() {
            return;
        }
        fs.save_known(false);
        match fs.sync_step() {
            Ok(true) => {
                backoff = BACKOFF_FIRST;
                fs.sync.went_through();
            }
            Ok(false) => {
                backoff = BACKOFF_FIRST;
                fs.sync.went_through();
                let sync = Arc::clone(&fs);
                drop(fs);
                sync.sync.wait(Duration::from_secs(1));
            }
            Err(()) => {
                fs.sync.failed_attempt();
                let sync = Arc::clone(&fs);
                drop(fs);
                let until = Instant::now() + backoff;
                while Instant::now() < until && !sync.sync.is_stopping() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

impl CubbyFs {
    /// The mount was unmounted: requests that fail from now on are not an outage, and
    /// the sync worker ends before the runtime it calls through goes away (what it has
    /// not sent stays staged and journaled for the next mount).
    pub fn unmounted(&self) {
        self.sync.stopping();
        let until = Instant::now() + Duration::from_secs(10);
        while self.sync.worker_running.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl CubbyFs {
    /// One pass of the worker: `Ok(true)` when it sent something, `Ok(false)` when
    /// there was nothing to send, `Err` when the server could not be reached.
    fn sync_step(&self) -> Result<bool, ()> {
        if !self.sync.is_online() {
            match self.block_on(self.remote.root()) {
                // The account this mount started with (offline, from what it knew).
                Ok(root) if root.id != self.root_id => {
                    self.sync.note_error(format!(
                        "the server's root is entry {}, not {} as this folder knew it: \
                         another account? Unmount and mount again",
                        root.id, self.root_id
                    ));
                    return Err(());
                }
                Ok(_) => self.sync.came_online(),
                Err(error) => {
                    // Unreachable (offline), or an answer to show (a refused login).
                    if let error @ (FsError::AccessDenied
                    | FsError::Io(_)
                    | FsError::Unavailable(_)) = self.remote_failed(error)
                    {
                        self.sync.note_error(error.to_string());
                    }
                    return Err(());
                }
            }
        }
        let mut worked = match self.replay_journal() {
            Ok(replayed) => replayed,
            Err(_) => return Err(()),
        };
        worked |= self.upload_batches()?;
        // Each queued file once per pass: one that keeps failing waits its turn again
        // behind the others instead of holding them up. Several files go at once (each
        // file's commits are one at a time by its own lock): a small file's upload is a
        // few round trips and a synced commit, so one at a time leaves the server and
        // the disk idle between them.
        let queued = lock(&self.sync.uploads).len();
        let taken = AtomicU64::new(0);
        let uploaded = std::sync::atomic::AtomicBool::new(false);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let offline = std::sync::atomic::AtomicBool::new(false);
        let uploader = || {
            while !offline.load(Ordering::Relaxed)
                && (taken.fetch_add(1, Ordering::Relaxed) as usize) < queued
            {
                let Some(id) = lock(&self.sync.uploads).pop_front() else {
                    break;
                };
                match self.upload(id) {
                    Ok(()) => uploaded.store(true, Ordering::Relaxed),
                    Err(FsError::Offline) => {
                        lock(&self.sync.uploads).push_front(id);
                        offline.store(true, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::warn!(file = id, %error, "upload failed; will retry");
                        self.sync.note_error(error.to_string());
                        lock(&self.sync.uploads).push_back(id);
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..UPLOADS_AT_ONCE.min(queued) {
                scope.spawn(uploader);
            }
            uploader();
        });
        worked |= uploaded.into_inner();
        if offline.into_inner() || failed.into_inner() {
            Err(())
        } else {
            Ok(worked)
        }
    }

    /// Sends the small files of the queue in batches; what a batch does not take stays
    /// first in the queue, for the uploads of one file. `Ok(true)` when it sent
    /// something.
    fn upload_batches(&self) -> Result<bool, ()> {
        if self.sync.no_batches.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut worked = false;
        let mut one_by_one = Vec::new();
        let queued = lock(&self.sync.uploads).len();
        let mut offered = 0;
        while offered < queued {
            let ids: Vec<u64> = {
                let mut uploads = lock(&self.sync.uploads);
                let count = uploads
                    .len()
                    .min(super::writeback::BATCH_FILES)
                    .min(queued - offered);
                uploads.drain(..count).collect()
            };
            if ids.is_empty() {
                break;
            }
            offered += ids.len();
            match self.upload_batch(&ids) {
                Ok(outcome) => {
                    worked |= outcome.done > 0;
                    one_by_one.extend(outcome.one_by_one);
                }
                Err(error) => {
                    if !matches!(error, FsError::Offline) {
                        tracing::warn!(%error, "a batch of uploads failed; will retry");
                        self.sync.note_error(error.to_string());
                    }
                    one_by_one.extend(ids);
                    self.sync.requeue_first(one_by_one);
                    return Err(());
                }
            }
        }
        self.sync.requeue_first(one_by_one);
        Ok(worked)
    }

    /// Replays the journal in order (one replayer at a time: the sync worker, or an
    /// operation that needs the server to know every entry first). `Ok(true)` when it
    /// applied something; an error when the server could not take the next change, which
    /// stays first in line.
    pub(super) fn replay_journal(&self) -> FsResult<bool> {
        let _one_at_a_time = lock(&self.sync.replaying);
        let mut worked = false;
        // A change a batch stopped at is replayed on its own, which decides it.
        let mut alone = None;
        while let Some((seq, key, op)) = self.journal.first() {
            // No listing fetch straddles the change: one fetched before it is edited below.
            let _gate = self
                .namespace_gate
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if alone != Some(seq) {
                let run = self
                    .replay_batch()
                    .map_err(|error| self.replay_failed(error))?;
                worked |= run.applied > 0;
                alone = run.stopped_at;
                if run.applied > 0 || alone.is_some() {
                    continue;
                }
            }
            // Its requests carry its key: applied once, however often it is replayed.
            let replayed = super::replaying_with(key, || self.replay(&op));
            let applied = self.settled(&op, replayed)?;
            {
                // Listings show the change before the overlay stops showing it.
                let mut overlay = lock(&self.overlay);
                self.note_applied(&overlay, applied);
                self.journal.done(seq);
                overlay.retire(&op, |id| self.journal.canonical(id));
            }
            worked = true;
        }
        Ok(worked)
    }

    /// The outcome of replaying `op`: a change the server refused for good is dropped,
    /// loudly, and the local view goes back to the server's (`Applied::Unknown`); one it
    /// could not take for now stays first in line (the error).
    fn settled(&self, op: &Op, replayed: FsResult<Applied>) -> FsResult<Applied> {
        match replayed {
            Ok(applied) => Ok(applied),
            Err(
                error @ (FsError::Invalid
                | FsError::NotDir
                | FsError::IsDir
                | FsError::NotEmpty
                | FsError::Exists
                | FsError::NameTooLong
                | FsError::NotFound
                | FsError::NotPermitted),
            ) => {
                tracing::error!(?op, %error, "the server refused a journaled change; dropped");
                self.sync.note_error(format!("{op:?}: {error}"));
                Ok(Applied::Unknown)
            }
            Err(error) => Err(self.replay_failed(error)),
        }
    }

    /// Unreachable, or refused for now (a 5xx, an expired token): later, with the error
    /// shown unless it is only the mount being offline.
    fn replay_failed(&self, error: FsError) -> FsError {
        if !matches!(error, FsError::Offline) {
            self.sync.note_error(error.to_string());
        }
        error
    }

    /// Brings cached server state up to date with a change the server applied.
    fn note_applied(&self, overlay: &super::overlay::Overlay, applied: Applied) {
        match applied {
            Applied::Placed { entry, from } => {
                // A directory keeps the times that changes still waiting gave it.
                let entry = overlay.with_times(entry);
                if from.is_some() && from != entry.parent_id {
                    self.known_gone(entry.id, from);
                }
                self.created(&entry);
            }
            Applied::Removed { id, parent } => {
                self.sync.touched(id);
                self.entries.invalidate(&id);
                match parent {
                    Some(parent) => {
                        self.sync.touched(parent);
                        self.entries.invalidate(&parent);
                        self.known_gone(id, Some(parent));
                    }
                    None => self.listings.invalidate_all(),
                }
            }
            Applied::Cached => {}
            Applied::Unknown => {
                self.entries.invalidate_all();
                self.listings.invalidate_all();
            }
        }
    }

    /// Another client changed an entry: what this mount and the kernel cached about it
    /// and the directories it left and entered goes. Only names that went away are
    /// dropped from the kernel (dropping a live directory's name would cut off a
    /// process working in it); a new name shows within the kernel's 1 s entry TTL.
    fn changed(&self, change: &cubby_proto::api::Change) {
        // An echo of this mount's own change, which already edited what it cached. Only
        // a change made by this mount's requests counts: another client's change to an
        // entry touched here a moment ago is news.
        let ours = change.origin.as_deref() == Some(self.remote.origin());
        if ours && self.sync.touched_lately(change.entry_id) {
            return;
        }
        self.entries.invalidate(&change.entry_id);
        self.listings.invalidate(&change.entry_id);
        let kernel = self.kernel.get();
        if let Some(kernel) = kernel {
            kernel.forget_attributes(self.ino_of(change.entry_id));
        }
        let places = [
            (change.parent_id, None),
            (change.old_parent_id, change.old_name.as_deref()),
        ];
        for (parent, name) in places {
            let Some(parent) = parent else { continue };
            self.listings.invalidate(&parent);
            self.entries.invalidate(&parent);
            if let (Some(kernel), Some(name)) = (kernel, name) {
                kernel.forget_name(self.ino_of(parent), name);
                kernel.forget_attributes(self.ino_of(parent));
            }
        }
    }

    /// The feed's history is gone: nothing cached can be trusted.
    fn forget_everything(&self) {
        self.entries.invalidate_all();
        self.listings.invalidate_all();
    }

    /// Applies one journaled operation on the server.
    fn replay(&self, op: &Op) -> FsResult<Applied> {
        let canon = |id| self.journal.canonical(id);
        match op {
            // Already created (the daemon stopped before the journal said so).
            Op::Create { entry, .. } | Op::Mkdir { entry }
                if !super::journal::is_local(canon(entry.id)) =>
            {
                Ok(Applied::Unknown)
            }
            Op::Create { entry, uid, gid } if entry.kind == EntryKind::Symlink => {
                let parent = canon(entry.parent_id.ok_or(FsError::Invalid)?);
                let target = entry.target.as_deref().ok_or(FsError::Invalid)?;
                let link = |parent: u64, name: &str| {
                    let made = Some(entry.ctime_ns);
                    self.call(self.remote.symlink_in(parent, name, target, made))
                };
                let adopt = |existing: &Entry| {
                    existing.kind == EntryKind::Symlink
                        && existing.target.as_deref() == Some(target)
                };
                let mut created = self.create_or_place(parent, &entry.name, link, adopt)?;
                if uid.is_some() || gid.is_some() {
                    let attrs = AttrsRequest {
                        uid: *uid,
                        gid: *gid,
                        ..AttrsRequest::default()
                    };
                    created = self.call(self.remote.set_attrs(created.id, &attrs))?;
                }
                self.resolved(entry.id, &created)?;
                Ok(Applied::Placed {
                    entry: created,
                    from: None,
                })
            }
            Op::Create { entry, uid, gid } => {
                let parent = canon(entry.parent_id.ok_or(FsError::Invalid)?);
                let create = |parent: u64, name: &str| {
                    let request = CreateRequest {
                        parent_id: parent,
                        name: name.to_owned(),
                        mode: (entry.mode != 0o644).then_some(entry.mode),
                        uid: *uid,
                        gid: *gid,
                        time_ns: Some(entry.ctime_ns),
                    };
                    self.call(self.remote.create(&request))
                };
                let adopt =
                    |existing: &Entry| existing.kind == EntryKind::File && existing.size == 0;
                let created = self.create_or_place(parent, &entry.name, create, adopt)?;
                self.resolved(entry.id, &created)?;
                Ok(Applied::Placed {
                    entry: created,
                    from: None,
                })
            }
            Op::Mkdir { entry } => {
                let parent = canon(entry.parent_id.ok_or(FsError::Invalid)?);
                let made = std::cell::Cell::new(None);
                let mkdir = |parent: u64, name: &str| {
                    let created = self.call(self.remote.mkdir_in(parent, name, entry.mode))?;
                    made.set(Some(created.id));
                    Ok(created)
                };
                let adopt = |existing: &Entry| existing.kind == EntryKind::Dir;
                let created = self.create_or_place(parent, &entry.name, mkdir, adopt)?;
                if made.get() == Some(created.id) {
                    // Made just now, so empty: lookups in it (an untar's or rsync's next
                    // names) need no listing from the server. Cached before the id
                    // resolves, so no lookup finds the server's id without it.
                    self.made_empty(created.id);
                }
                if entry.uid.is_some() || entry.gid.is_some() {
                    let attrs = AttrsRequest {
                        uid: entry.uid,
                        gid: entry.gid,
                        ..AttrsRequest::default()
                    };
                    self.call(self.remote.set_attrs(created.id, &attrs))?;
                }
                self.resolved(entry.id, &created)?;
                Ok(Applied::Placed {
                    entry: created,
                    from: None,
                })
            }
            Op::Rename { entry, replaced } => {
                let id = canon(entry.id);
                let parent = canon(entry.parent_id.ok_or(FsError::Invalid)?);
                let from = self
                    .known_entries
                    .get(&id)
                    .and_then(|known| known.parent_id);
                let placed = |moved: Entry| match from {
                    Some(_) => Applied::Placed { entry: moved, from },
                    None => Applied::Unknown,
                };
                if let Some(replaced) = replaced {
                    let target = canon(*replaced);
                    let target_entry = match self.call(self.remote.entry(target)) {
                        Ok(found) => Some(found),
                        Err(FsError::NotFound) => None,
                        Err(error) => return Err(error),
                    };
                    let still_there = target_entry.as_ref().is_some_and(|found| {
                        found.parent_id == Some(parent) && found.name == entry.name
                    });
                    if let Some(target_entry) = target_entry
                        && still_there
                        && target_entry.kind == EntryKind::File
                        && entry.kind == EntryKind::File
                    {
                        // Cached state of both files is dropped by the save.
                        return self.save_over(id, target).map(|()| Applied::Cached);
                    }
                    if !still_there {
                        // Someone else's entry holds the name now: never replace it.
                        return self.move_placed(id, parent, &entry.name, false).map(placed);
                    }
                }
                self.move_placed(id, parent, &entry.name, replaced.is_some())
                    .map(placed)
            }
            Op::Delete { id, parent } => {
                match self.call(self.remote.delete_id(canon(*id), false)) {
                    Ok(_) | Err(FsError::NotFound) => Ok(Applied::Removed {
                        id: canon(*id),
                        parent: parent.map(canon),
                    }),
                    Err(error) => Err(error),
                }
            }
            Op::SetAttrs { entry, attrs } => {
                let id = canon(entry.id);
                let staged = self.staged_copy(id);
                let mut uploaded = staged.as_ref().map(|staged| staged.lock());
                // Content still waiting (or being sent) would be committed after this,
                // with the commit's time: the change rides with it instead, as one made
                // now would.
                if let (Some(staged), Some(state)) = (&staged, uploaded.as_mut())
                    && state.dirty
                    && state.pending()
                {
                    let mut attrs = attrs.clone();
                    if state
                        .modified_ns
                        .is_some_and(|written| written > entry.ctime_ns)
                    {
                        // Written after the change: the write's time stands.
                        attrs.mtime_ns = None;
                    }
                    let pending = &mut state.attrs;
                    // What was set on the waiting content after this change was made
                    // is newer (rsync's fchmod 0600 is journaled, its chmod 0644 not).
                    let ours_newer = pending
                        .changed_ns
                        .is_some_and(|changed| changed > entry.ctime_ns);
                    fn newer<T>(ours_newer: bool, theirs: Option<T>, ours: Option<T>) -> Option<T> {
                        if ours_newer {
                            ours.or(theirs)
                        } else {
                            theirs.or(ours)
                        }
                    }
                    pending.mode = newer(ours_newer, attrs.mode, pending.mode);
                    pending.uid = newer(ours_newer, attrs.uid, pending.uid);
                    pending.gid = newer(ours_newer, attrs.gid, pending.gid);
                    pending.mtime_ns = newer(ours_newer, attrs.mtime_ns, pending.mtime_ns);
                    pending.atime_ns = newer(ours_newer, attrs.atime_ns, pending.atime_ns);
                    pending.changed_ns = Some(pending.changed_ns.unwrap_or(0).max(entry.ctime_ns));
                    staged.record_pending(state, false)?;
                    return Ok(Applied::Cached);
                }
                drop(uploaded);
                let updated = self.call(self.remote.set_attrs(id, attrs))?;
                Ok(Applied::Placed {
                    from: updated.parent_id,
                    entry: updated,
                })
            }
        }
    }

    /// Moves `id` to `name` in `parent`, or to a conflicted name when that is taken.
    fn move_placed(&self, id: u64, parent: u64, name: &str, replace: bool) -> FsResult<Entry> {
        let mut attempt = 0;
        loop {
            let candidate = match attempt {
                0 => name.to_owned(),
                n => conflicted_name(name, &self.host, SystemTime::now(), n),
            };
            let replace = replace && attempt == 0;
            match self.call(self.remote.move_to(id, parent, &candidate, replace)) {
                Ok(moved) => return Ok(moved),
                Err(FsError::Exists | FsError::NotEmpty) if attempt < ATTEMPTS => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    /// Creates `name` in `parent` with `make`; when the name is taken, adopts what is
    /// there if `adopt` says so (a retried create), else uses a conflicted name. A
    /// vanished parent puts the entry in the root.
    fn create_or_place(
        &self,
        parent: u64,
        name: &str,
        make: impl Fn(u64, &str) -> FsResult<Entry>,
        adopt: impl Fn(&Entry) -> bool,
    ) -> FsResult<Entry> {
        let mut parent = parent;
        let mut attempt = 0;
        loop {
            let candidate = match attempt {
                0 => name.to_owned(),
                n => conflicted_name(name, &self.host, SystemTime::now(), n),
            };
            match make(parent, &candidate) {
                Ok(entry) => return Ok(entry),
                Err(FsError::Exists) if attempt == 0 => {
                    let children = self.call(self.remote.children(parent))?;
                    if let Some(existing) = children.iter().find(|e| e.name == candidate)
                        && adopt(existing)
                    {
                        return Ok(existing.clone());
                    }
                    attempt += 1;
                }
                Err(FsError::Exists) if attempt < ATTEMPTS => attempt += 1,
                Err(FsError::NotFound) if parent != self.root_id => {
                    parent = self.root_id;
                    attempt = attempt.max(1);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The server created local entry `local` as `created`: later operations, staged
    /// content and the inode all follow.
    fn resolved(&self, local: u64, created: &Entry) -> FsResult<()> {
        // The inode the kernel knows first, so no lookup shows the entry under another.
        lock(&self.local_inos).insert(created.id, local);
        let staged = {
            // One step for every lookup: the id maps to the server's exactly when the
            // overlay and the staged copy are found under it.
            let mut overlay = lock(&self.overlay);
            let mut map = lock(&self.staged);
            self.journal.resolve(local, created.id)?;
            overlay.rekey(local, created.id);
            let staged = map.remove(&local);
            if let Some(staged) = &staged {
                map.entry(created.id).or_insert_with(|| Arc::clone(staged));
            }
            staged
        };
        self.remember(created);
        if let Some(staged) = staged {
            let mut state = staged.lock();
            if super::journal::is_local(state.target_id) {
                state.target_id = created.id;
            }
            if state.pending() {
                staged.record_pending(&state, false)?;
            }
        }
        let mut uploads = lock(&self.sync.uploads);
        for queued in uploads.iter_mut() {
            if *queued == local {
                *queued = created.id;
            }
        }
        Ok(())
    }

    /// The mount's sync state, for `cubby status`.
    pub fn status(&self) -> SyncStatus {
        let staged: Vec<_> = lock(&self.staged)
            .iter()
            .map(|(id, staged)| (*id, Arc::clone(staged)))
            .collect();
        // One being uploaded (its state locked meanwhile) is still waiting.
        let waiting: Vec<_> = staged
            .into_iter()
            .filter(|(_, staged)| match staged.state.try_lock() {
                Ok(state) => state.pending(),
                Err(std::sync::TryLockError::WouldBlock) => true,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner().pending(),
            })
            .collect();
        let pending_upload_count = waiting.len();
        let pending_bytes = waiting.iter().map(|(_, s)| s.len().unwrap_or(0)).sum();
        let pending_uploads: Vec<PendingUpload> = waiting
            .into_iter()
            .take(LISTED_UPLOADS)
            .map(|(id, staged)| PendingUpload {
                id,
                name: self
                    .known_entries
                    .get(&id)
                    .map(|e| e.name)
                    .or_else(|| match self.overlaid(id).1 {
                        super::Overlaid::Present(entry) => Some(entry.name),
                        _ => None,
                    })
                    .unwrap_or_default(),
                bytes: staged.len().unwrap_or(0),
            })
            .collect();
        let pending_operations = self.journal.len();
        let note = lock(&self.sync.last_error).clone();
        SyncStatus {
            online: self.sync.is_online(),
            queue_depth: pending_operations + pending_upload_count,
            pending_operations,
            pending_upload_count,
            pending_bytes,
            pending_uploads,
            retries: self.sync.retries.load(Ordering::Relaxed),
            retries_total: self.sync.retries_total.load(Ordering::Relaxed),
            conflicts: lock(&self.sync.conflicts).clone(),
            last_error: note
                .as_ref()
                .filter(|note| note.current)
                .map(|note| note.message.clone()),
            last_error_note: note,
        }
    }
}
