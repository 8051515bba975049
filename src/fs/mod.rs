//! The filesystem core: Cubby's tree as POSIX operations, independent of the kernel
//! interface (`fuse.rs` is the thin adapter), so it can be tested without a mount.
//!
//! ## Inodes
//! An inode number is the entry's id on the server, except that the user's root
//! directory is inode 1 (and entry id 1, if it is the user's, takes the root's number).
//! Ids are stable across renames and versions, so inodes are too. When a file is renamed
//! over another (an editor's save), its content becomes a new version of the replaced
//! file and the renamed inode becomes an alias of that file.
//!
//! ## Consistency
//! Close-to-open: `open` fetches the entry fresh from the server; the kernel keeps its
//! page cache only when the version is the one it cached. Between opens, entries and
//! directory listings are cached for [`FsConfig::metadata_ttl`] (moka), as are the
//! kernel's attributes and entries.
//!
//! ## Reads
//! A read handle pins the version current at open and reads its chunks through the disk
//! chunk cache, fetching the chunks a read needs in parallel and the next chunk ahead.
//!
//! ## Writes
//! The first writer of a file gets a staging file (see [`staging`]) holding its whole
//! content; every handle of that file reads and writes it. `close` (FUSE flush) queues
//! it for the sync worker; `fsync` commits it at once (see [`writeback`]).

mod error;
pub mod fuse;
mod heartbeat;
mod journal;
mod known;
mod overlay;
mod staging;
pub mod sync;
mod writeback;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cubby_proto::api::{AttrsRequest, Entry, EntryKind, FileManifest};
use cubby_proto::{ContentHash, chunking};
use futures_util::future::try_join_all;
use journal::{Journal, Op, is_local};
use moka::sync::Cache;
use overlay::{Overlaid, Overlay};
use writeback::CommitPoint;

pub use error::FsError;
use staging::Staged;

use crate::cache::chunks::ChunkCache;
use crate::conflict::host_name;
use crate::remote::{Remote, RemoteError};
use crate::transfer::{self, Target};

/// The result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 2;

/// The root directory's inode number (FUSE's).
pub const ROOT_INO: u64 = 1;

/// The kernel's caches of names and attributes, which the change feed invalidates
/// (implemented by the FUSE adapter; absent without a kernel).
pub trait KernelCache: Send + Sync {
    /// The kernel forgets `name` in directory `parent` (inode numbers).
    fn forget_name(&self, parent: u64, name: &str);
    /// The kernel forgets the attributes of inode `ino`.
    fn forget_attributes(&self, ino: u64);
    /// The same, done before this returns (safe while answering a request: dropping
    /// attributes takes no lock the kernel may hold).
    fn forget_attributes_now(&self, ino: u64);
}

/// Settings of a mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Written files wait here until committed (durable; not a cache).
    pub staging_dir: PathBuf,
    /// The chunk cache (disposable).
    pub cache_dir: PathBuf,
    /// Most bytes the chunk cache holds.
    pub cache_bytes: u64,
    /// Space a write never takes from the staging area's filesystem: a write that would
    /// leave less free is refused with ENOSPC (0: none). The user's disk is never
    /// filled to the last byte by what waits for upload.
    pub staging_reserve_bytes: u64,
    /// How long entries and listings are trusted without asking the server.
    pub metadata_ttl: Duration,
    /// Owner reported for every file.
    pub uid: u32,
    pub gid: u32,
}

/// Who asked for a new entry (the calling process's ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What an open handle reads and writes.
#[derive(Debug)]
enum Handle {
    /// Reads of the version current at open, chunk by chunk.
    Reader {
        id: u64,
        version: u64,
        manifest: Mutex<Option<Arc<FileManifest>>>,
        /// The content's hash when it is one chunk (so a cached chunk needs no manifest).
        single_chunk: Option<ContentHash>,
    },
    /// Reads and writes of the file's staging copy.
    Writer { id: u64, staged: Arc<Staged> },
}

/// The filesystem.
pub struct CubbyFs {
    remote: Remote,
    runtime: tokio::runtime::Handle,
    config: FsConfig,
    root_id: u64,
    host: String,
    /// Renamed-over inodes, now naming another entry.
    aliases: Mutex<HashMap<u64, u64>>,
    entries: Cache<u64, Entry>,
    listings: Cache<u64, Arc<Vec<Entry>>>,
    /// Held while a cached listing is edited or replaced (after the overlay's lock).
    listing_edits: Mutex<()>,
    chunks: ChunkCache,
    /// Chunks being fetched ahead, so each is fetched once.
    prefetching: Arc<Mutex<std::collections::HashSet<ContentHash>>>,
    /// Staged files by entry id.
    staged: Mutex<HashMap<u64, Arc<Staged>>>,
    spares: staging::Spares,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    /// The version whose pages the kernel may hold, per entry.
    cached_version: Mutex<HashMap<u64, u64>>,
    /// Namespace changes waiting for the server, in order.
    journal: Journal,
    /// The tree as the journaled changes leave it.
    overlay: Mutex<Overlay>,
    /// Listing fetches (shared) against the replay of a journaled change (exclusive),
    /// so no listing fetched before the server applied a change is cached after it.
    namespace_gate: std::sync::RwLock<()>,
    /// Server ids of entries created here, to the local inode number they were given.
    local_inos: Mutex<HashMap<u64, u64>>,
    next_local: AtomicU64,
    /// The last entries, listings and manifests seen, with no expiry: what the mount
    /// shows while the server is unreachable.
    known_entries: Cache<u64, Entry>,
    known_listings: Cache<u64, Arc<Vec<Entry>>>,
    /// Whether what the mount knows changed since it was saved (see [`known`]).
    known_dirty: std::sync::atomic::AtomicBool,
    /// When it was last saved.
    known_saved: Mutex<Option<std::time::Instant>>,
    manifests: Cache<(u64, u64), Arc<FileManifest>>,
    sync: sync::SyncState,
    kernel: std::sync::OnceLock<Box<dyn KernelCache>>,
    /// The filesystem itself, for work it hands to other threads (listing prefetch).
    this: std::sync::OnceLock<std::sync::Weak<CubbyFs>>,
    /// Directories whose listings are being fetched ahead.
    prefetching_listings: Arc<Mutex<std::collections::HashSet<u64>>>,
    /// (version, size) of the file attributes the kernel was told it may keep, by
    /// inode, for as long as it may keep them.
    kernel_attrs: Cache<u64, (u64, u64)>,
    /// The version each file was last committed at by this mount, for longer than
    /// anything fetched before the commit may be cached: no entry older than that is
    /// cached or answered (a listing fetched while a just-written file was committed
    /// would give its empty first version, and `fstat` size 0).
    committed_versions: Cache<u64, u64>,
}

/// The longest symlink target the server keeps, in bytes (PATH_MAX less its NUL).
const SYMLINK_MAX: usize = 4095;

/// Subdirectories of one listing fetched ahead, at most, and by how many threads.
const PREFETCH_MAX: usize = 64;
const PREFETCH_THREADS: usize = 4;

impl std::fmt::Debug for CubbyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubbyFs")
            .field("root_id", &self.root_id)
            .finish()
    }
}

thread_local! {
    /// The idempotency key of the journaled operation this thread is replaying, which
    /// every change it sends carries (see [`journal`]).
    static REPLAYING: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `replay` with the server requests it makes on this thread carrying `key`.
fn replaying_with<T>(key: Option<String>, replay: impl FnOnce() -> T) -> T {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            REPLAYING.with(|key| *key.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(REPLAYING.with(|current| current.replace(key)));
    replay()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Nanoseconds since the Unix epoch (negative before it).
fn unix_ns(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i64,
        Err(before) => -(before.duration().as_nanos() as i64),
    }
}

/// `entry` with attribute changes that wait for its content.
fn with_attrs(mut entry: Entry, attrs: &staging::PendingAttrs) -> Entry {
    entry.mode = attrs.mode.unwrap_or(entry.mode);
    entry.uid = attrs.uid.or(entry.uid);
    entry.gid = attrs.gid.or(entry.gid);
    entry.mtime_ns = attrs.mtime_ns.unwrap_or(entry.mtime_ns);
    entry.atime_ns = attrs.atime_ns.unwrap_or(entry.atime_ns);
    if let Some(changed) = attrs.changed_ns {
        entry.ctime_ns = entry.ctime_ns.max(changed);
    }
    entry
}

fn name_of(name: &OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(FsError::Invalid)?;
    if name.len() > cubby_proto::path::NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(name)
}

impl CubbyFs {
    /// Connects to the server and opens the local stores: the chunk cache, the staging
    /// area and the journal, whose pending work is loaded (and shown) at once and sent
    /// by [`sync::start`]. When the server does not answer within
    /// [`known::START_WAIT`], the mount starts offline from what an earlier run knew of
    /// the tree (see [`known`]), if it saved anything.
    pub fn new(
        remote: Remote,
        runtime: tokio::runtime::Handle,
        config: FsConfig,
    ) -> FsResult<Self> {
        std::fs::create_dir_all(&config.staging_dir)?;
        let reached = runtime
            .block_on(async { tokio::time::timeout(known::START_WAIT, remote.root()).await });
        let (root, known) = match reached {
            Ok(Ok(root)) => (root, None),
            Ok(Err(error)) if error.code().is_some() => return Err(error.into()),
            failed => match known::load(&config.staging_dir) {
                Some(known) => {
                    let why = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {:?}", known::START_WAIT),
                    };
                    tracing::warn!(%why, "the server cannot be reached: starting offline");
                    (known.root.clone(), Some((known, why)))
                }
                // Nothing to start from: the server's own answer (or its error).
                None => (runtime.block_on(remote.root())?, None),
            },
        };
        let chunks = ChunkCache::open(&config.cache_dir, config.cache_bytes)?;
        let journal = Journal::open(&config.staging_dir.join("journal"))?;
        let ttl = config.metadata_ttl;
        // Never an id the journal still names, even if the clock went back.
        let first_local = (journal::LOCAL_ID_BASE
            + SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64))
        .max(journal.highest_local_id() + 1);
        let fs = Self {
            remote,
            runtime,
            root_id: root.id,
            host: host_name(),
            aliases: Mutex::new(HashMap::new()),
            entries: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            listings: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            listing_edits: Mutex::new(()),
            chunks,
            prefetching: Arc::new(Mutex::new(std::collections::HashSet::new())),
            staged: Mutex::new(HashMap::new()),
            spares: staging::Spares::default(),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            cached_version: Mutex::new(HashMap::new()),
            journal,
            overlay: Mutex::new(Overlay::default()),
            namespace_gate: std::sync::RwLock::new(()),
            local_inos: Mutex::new(HashMap::new()),
            next_local: AtomicU64::new(first_local),
            known_entries: Cache::builder().max_capacity(200_000).build(),
            known_listings: Cache::builder().max_capacity(20_000).build(),
            manifests: Cache::builder().max_capacity(10_000).build(),
            sync: sync::SyncState::default(),
            kernel: std::sync::OnceLock::new(),
            this: std::sync::OnceLock::new(),
            prefetching_listings: Arc::default(),
            // Outlives the kernel's own second, whose clock starts a little later.
            kernel_attrs: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl * 2)
                .build(),
            committed_versions: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl * 4 + Duration::from_secs(30))
                .build(),
            known_dirty: std::sync::atomic::AtomicBool::new(false),
            known_saved: Mutex::new(None),
            config,
        };
        match known {
            Some((known, why)) => {
                fs.take_in(known);
                fs.known_entries.insert(root.id, root);
                fs.sync.went_offline(&why);
            }
            None => fs.remember(&root),
        }
        fs.load_pending()?;
        Ok(fs)
    }

    /// Loads what a previous run left to send: journaled operations (laid over the
    /// tree) and staged content with a pending record (shown as the file's content and
    /// queued for upload).
    fn load_pending(&self) -> FsResult<()> {
        {
            let mut overlay = lock(&self.overlay);
            for op in self.journal.all() {
                overlay.apply(&op, |id| self.journal.canonical(id));
            }
        }
        for pending in staging::recover(&self.config.staging_dir)? {
            let staged = Staged::adopt(pending)?;
            let id = self.journal.canonical(staged.lock().target_id);
            staged.lock().target_id = id;
            tracing::info!(
                file = id,
                "a staged write from an earlier run waits for upload"
            );
            lock(&self.staged).insert(id, Arc::new(staged));
            self.sync.queue_upload(id);
        }
        let local_left = lock(&self.staged).keys().any(|id| is_local(*id));
        if !local_left {
            self.journal.forget_resolutions();
        }
        for (local, server) in self.journal.resolutions() {
            lock(&self.local_inos).insert(server, local);
        }
        Ok(())
    }

    /// Lets the change feed invalidate the kernel's caches.
    pub fn set_kernel_cache(&self, kernel: Box<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    // ---- inodes and metadata ----

    /// The entry id an inode names (the server's id once a local entry is created).
    pub fn id_of(&self, ino: u64) -> u64 {
        if let Some(id) = lock(&self.aliases).get(&ino) {
            return *id;
        }
        if ino == ROOT_INO {
            self.root_id
        } else if ino == self.root_id {
            ROOT_INO
        } else {
            self.journal.canonical(ino)
        }
    }

    /// The inode number of an entry id.
    pub fn ino_of(&self, id: u64) -> u64 {
        if id == self.root_id {
            ROOT_INO
        } else if id == ROOT_INO {
            self.root_id
        } else if let Some(local) = lock(&self.local_inos).get(&id) {
            *local
        } else {
            id
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs a request to the server, abandoned (`None`) the moment the mount goes
    /// offline: a server that stops answering holds no caller for longer than the
    /// heartbeat takes to notice it (see [`heartbeat`]).
    fn until_offline<F: std::future::Future>(&self, request: F) -> Option<F::Output> {
        let mut online = self.sync.watch_online();
        let key = REPLAYING.with(|key| key.borrow().clone());
        self.block_on(async move {
            let request = crate::remote::with_idempotency_key(key, request);
            tokio::select! {
                biased;
                output = request => Some(output),
                _ = online.wait_for(|online| !*online) => None,
            }
        })
    }

    /// A server request; a transport failure marks the mount offline, and going offline
    /// (the heartbeat found the server silent) abandons it.
    fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> FsResult<T> {
        self.until_offline(request)
            .ok_or(FsError::Offline)?
            .map_err(|error| self.remote_failed(error))
    }

    fn remote_failed(&self, error: RemoteError) -> FsError {
        if matches!(error, RemoteError::Transport(_)) {
            self.sync.went_offline(&error.to_string());
            FsError::Offline
        } else {
            error.into()
        }
    }

    fn remember(&self, entry: &Entry) {
        // A fetch that began before a commit never replaces what the commit left.
        if self.older_than_committed(entry)
            || self
                .entries
                .get(&entry.id)
                .is_some_and(|cached| cached.version > entry.version)
        {
            return;
        }
        self.entries.insert(entry.id, entry.clone());
        self.known_entries.insert(entry.id, entry.clone());
        self.known_changed();
    }

    /// Whether `entry` is a version older than this mount last committed.
    fn older_than_committed(&self, entry: &Entry) -> bool {
        entry.kind == EntryKind::File
            && self
                .committed_versions
                .get(&entry.id)
                .is_some_and(|committed| committed > entry.version)
    }

    /// A listed entry, or its current state when the listing was fetched before this
    /// mount committed a newer version.
    fn freshest(&self, listed: &Entry) -> Entry {
        if self.older_than_committed(listed) {
            match self.entries.get(&listed.id) {
                Some(cached) if cached.version >= listed.version => return cached,
                _ => {
                    if let Ok(fetched) = self.fetch_entry(listed.id) {
                        return fetched;
                    }
                }
            }
        }
        listed.clone()
    }

    /// Forgets what is cached about an entry and the directory holding it.
    fn forget(&self, id: u64, parent: Option<u64>) {
        self.sync.touched(id);
        if let Some(parent) = parent {
            self.sync.touched(parent);
        }
        self.entries.invalidate(&id);
        if let Some(parent) = parent {
            self.listings.invalidate(&parent);
            self.entries.invalidate(&parent);
        }
    }

    /// The staged copy of entry `id` (a local id or the server's), looked up in one
    /// step with the id's resolution, which re-keys the staged map under the same lock.
    fn staged_copy(&self, id: u64) -> Option<Arc<Staged>> {
        let map = lock(&self.staged);
        map.get(&self.journal.canonical(id)).cloned()
    }

    /// Edits the cached listings of `parent`, if held: the current one (lookups) and
    /// the last seen (offline lookups).
    fn edit_listings(&self, parent: u64, edit: impl Fn(&mut Vec<Entry>)) {
        // One edit at a time: two edits of one listing (a replayed delete, a sibling's
        // new times) each copying it would lose one (an `rm -rf` saw a deleted
        // directory come back, and failed with "Directory not empty").
        let _one_at_a_time = lock(&self.listing_edits);
        for cache in [&self.listings, &self.known_listings] {
            if let Some(listing) = cache.get(&parent) {
                let mut listing = (*listing).clone();
                edit(&mut listing);
                cache.insert(parent, Arc::new(listing));
            }
        }
        self.known_changed();
    }

    /// This mount created `entry`: it joins the cached listing of its directory (kept
    /// rather than fetched again, which would cost a round trip per file of an untar).
    fn created(&self, entry: &Entry) {
        self.sync.touched(entry.id);
        if let Some(parent) = entry.parent_id {
            self.sync.touched(parent);
            self.entries.invalidate(&parent);
        }
        self.placed(entry);
    }

    /// A change this mount made: the entry is now as given, in its parent, in every
    /// cache that holds it (so a lookup never answers with the attributes it had).
    fn placed(&self, entry: &Entry) {
        self.remember(entry);
        if let Some(parent) = entry.parent_id {
            self.edit_listings(parent, |listing| {
                listing.retain(|e| e.id != entry.id && e.name != entry.name);
                listing.push(entry.clone());
            });
        }
    }

    /// A change this mount made: the entry left `parent`.
    fn known_gone(&self, id: u64, parent: Option<u64>) {
        if let Some(parent) = parent {
            self.edit_listings(parent, |listing| listing.retain(|e| e.id != id));
        }
    }

    /// What the journaled changes say about entry `id`, with the id it goes by now. A
    /// local id is resolved under the overlay's lock, which the replay holds while it
    /// maps the id and re-keys the overlay, so the two always agree (resolved before,
    /// an entry created a moment ago would look gone).
    fn overlaid(&self, id: u64) -> (u64, Overlaid) {
        let overlay = lock(&self.overlay);
        let id = self.journal.canonical(id);
        if overlay.is_empty() {
            return (id, Overlaid::Untouched);
        }
        (id, overlay.get(id))
    }

    /// The entry as the server has it now (or, offline, as last seen).
    fn fetch_entry(&self, id: u64) -> FsResult<Entry> {
        let (id, overlaid) = self.overlaid(id);
        match overlaid {
            Overlaid::Removed => return Err(FsError::NotFound),
            Overlaid::Present(entry) => return Ok(self.with_server_content(entry)),
            Overlaid::Untouched if is_local(id) => return Err(FsError::NotFound),
            Overlaid::Untouched => {}
        }
        if !self.sync.is_online() {
            return self.known_entries.get(&id).ok_or(FsError::Offline);
        }
        match self.call(self.remote.entry(id)) {
            Ok(entry) => {
                let entry = self.with_pending_times(entry);
                self.remember(&entry);
                Ok(entry)
            }
            Err(FsError::Offline) => self.known_entries.get(&id).ok_or(FsError::Offline),
            Err(error) => Err(error),
        }
    }

    /// A directory with the times its pending changes gave it (only directories have
    /// such times: a file's entry skips the overlay's lock).
    fn with_pending_times(&self, entry: Entry) -> Entry {
        if entry.kind == EntryKind::Dir {
            lock(&self.overlay).with_times(entry)
        } else {
            entry
        }
    }

    /// A journaled change holds a file's entry as it was when the change was made; its
    /// content (size, version, hash) may have been committed since. The server's is
    /// taken for those.
    fn with_server_content(&self, mut entry: Entry) -> Entry {
        if is_local(entry.id) || entry.kind != EntryKind::File {
            return entry;
        }
        let server = match self.entries.get(&entry.id) {
            Some(server) => Some(server),
            None if self.sync.is_online() => match self.call(self.remote.entry(entry.id)) {
                Ok(server) => {
                    self.remember(&server);
                    Some(server)
                }
                Err(_) => self.known_entries.get(&entry.id),
            },
            None => self.known_entries.get(&entry.id),
        };
        if let Some(server) = server {
            entry.size = server.size;
            entry.version = server.version;
            entry.hash = server.hash;
        }
        entry
    }

    /// Whether the kernel may keep `entry`'s attributes (for the kernel's TTL): a
    /// directory, or a file with no local change waiting (no staged copy, no journaled
    /// change), whose attributes are then remembered so `open` can drop them when it
    /// finds another version.
    pub fn kernel_may_keep(&self, ino: u64, entry: &Entry) -> bool {
        if entry.kind != EntryKind::File {
            return true;
        }
        let settled = self.staged_copy(entry.id).is_none()
            && matches!(self.overlaid(entry.id).1, Overlaid::Untouched);
        if settled {
            self.kernel_attrs.insert(ino, (entry.version, entry.size));
        } else {
            self.kernel_attrs.invalidate(&ino);
        }
        settled
    }

    /// The kind of entry `id` (which never changes), from any cache before the server:
    /// creating file after file in a directory asks nothing about the directory.
    fn kind_of(&self, id: u64) -> FsResult<EntryKind> {
        let (id, overlaid) = self.overlaid(id);
        match overlaid {
            Overlaid::Removed => return Err(FsError::NotFound),
            Overlaid::Present(entry) => return Ok(entry.kind),
            Overlaid::Untouched => {}
        }
        match self
            .entries
            .get(&id)
            .or_else(|| self.known_entries.get(&id))
        {
            Some(entry) => Ok(entry.kind),
            None => Ok(self.entry(id)?.kind),
        }
    }

    fn entry(&self, id: u64) -> FsResult<Entry> {
        let (id, overlaid) = self.overlaid(id);
        if let Overlaid::Untouched = overlaid
            && let Some(entry) = self.entries.get(&id)
        {
            return Ok(self.with_pending_times(entry));
        }
        self.fetch_entry(id)
    }

    /// The children of a directory: the server's listing (offline, as last seen) with
    /// journaled changes applied. A cached listing is read under the overlay's lock,
    /// which the replay of a change also holds while it edits listings and retires the
    /// change, so the two always agree.
    fn children(&self, dir: u64) -> FsResult<Arc<Vec<Entry>>> {
        let merged = |overlay: &Overlay, dir: u64, server: Arc<Vec<Entry>>| {
            if overlay.is_empty() {
                server
            } else {
                Arc::new(overlay.children(dir, &server))
            }
        };
        let dir = {
            // Resolved under the overlay's lock (see `overlaid`): a directory created a
            // moment ago never lists as empty.
            let overlay = lock(&self.overlay);
            let dir = self.journal.canonical(dir);
            if is_local(dir) {
                return Ok(merged(&overlay, dir, Arc::new(Vec::new())));
            }
            if let Some(listing) = self.listings.get(&dir) {
                return Ok(merged(&overlay, dir, listing));
            }
            if !self.sync.is_online() {
                let known = self.known_listings.get(&dir).ok_or(FsError::Offline)?;
                return Ok(merged(&overlay, dir, known));
            }
            dir
        };
        let _no_replay = self
            .namespace_gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fetched = self.call(self.remote.children(dir));
        let overlay = lock(&self.overlay);
        let children = match fetched {
            Ok(children) => Arc::new(children),
            Err(FsError::Offline) => {
                let known = self.known_listings.get(&dir).ok_or(FsError::Offline)?;
                return Ok(merged(&overlay, dir, known));
            }
            Err(error) => return Err(error),
        };
        for child in children.iter() {
            self.remember(child);
        }
        let _no_edit = lock(&self.listing_edits);
        self.listings.insert(dir, Arc::clone(&children));
        self.known_listings.insert(dir, Arc::clone(&children));
        self.known_changed();
        Ok(merged(&overlay, dir, children))
    }

    /// Fetches the listings of the subdirectories in `listing` not cached yet, on a few
    /// blocking threads of the runtime: a directory that is read, its subdirectories are
    /// read next by `ls -R`, `find`, `du` and file managers (a round trip each otherwise).
    fn prefetch_listings(&self, listing: &[Entry]) {
        let Some(fs) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if !self.sync.is_online() {
            return;
        }
        let dirs: Vec<u64> = {
            let mut in_flight = lock(&self.prefetching_listings);
            listing
                .iter()
                .filter(|e| {
                    e.kind == EntryKind::Dir
                        && !is_local(e.id)
                        && !self.listings.contains_key(&e.id)
                })
                .map(|e| e.id)
                .filter(|id| in_flight.insert(*id))
                .take(PREFETCH_MAX)
                .collect()
        };
        if dirs.is_empty() {
            return;
        }
        let per_thread = dirs.len().div_ceil(PREFETCH_THREADS);
        for group in dirs.chunks(per_thread) {
            let (fs, group) = (Arc::clone(&fs), group.to_vec());
            self.runtime.spawn_blocking(move || {
                for dir in group {
                    if fs.sync.is_online() && !fs.listings.contains_key(&dir) {
                        let _ = fs.children(dir);
                    }
                    lock(&fs.prefetching_listings).remove(&dir);
                }
            });
        }
    }

    fn child(&self, parent_ino: u64, name: &OsStr) -> FsResult<Entry> {
        let name = name_of(name)?;
        let parent = self.id_of(parent_ino);
        self.children(parent)?
            .iter()
            .find(|e| e.name == name)
            .map(|e| self.freshest(e))
            .ok_or(FsError::NotFound)
    }

    /// The entry with what local staging knows on top: size and times of writes, and
    /// attribute changes, not yet committed.
    fn with_local_state(&self, mut entry: Entry) -> Entry {
        let Some(staged) = self.staged_copy(entry.id) else {
            return entry;
        };
        let state = staged.lock();
        if !state.pending() {
            let committed = state.base_version;
            drop(state);
            // A commit may have finished while `entry` was read: the entry cached now
            // is the committed one, unless a fetch that began before the commit cached
            // what it found after it.
            return match self.entry(entry.id) {
                Ok(cached) if cached.version < committed => {
                    self.fetch_entry(entry.id).unwrap_or(cached)
                }
                Ok(cached) => cached,
                Err(_) => entry,
            };
        }
        let (dirty, modified, attrs) = (state.dirty, state.modified_ns, state.attrs.clone());
        drop(state);
        if dirty && let Ok(len) = staged.len() {
            entry.size = len;
        }
        if let Some(modified) = modified {
            entry.mtime_ns = modified;
            entry.ctime_ns = modified;
        }
        with_attrs(entry, &attrs)
    }

    pub fn lookup(&self, parent_ino: u64, name: &OsStr) -> FsResult<Entry> {
        let entry = self.child(parent_ino, name)?;
        Ok(self.with_local_state(entry))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        let id = self.id_of(ino);
        match self.entry(id) {
            Ok(entry) => Ok(self.with_local_state(entry)),
            Err(FsError::NotFound) => self.deleted_but_open(id).ok_or(FsError::NotFound),
            Err(error) => Err(error),
        }
    }

    /// A file deleted here while a handle still has it open: as last seen, with its
    /// staged copy's size (the kernel asks for attributes before it reads).
    fn deleted_but_open(&self, id: u64) -> Option<Entry> {
        let staged = self.staged_copy(id)?;
        if !staged.lock().unlinked {
            return None;
        }
        let mut entry = self.known_entries.get(&self.journal.canonical(id))?;
        entry.size = staged.len().ok()?;
        Some(entry)
    }

    pub fn readdir(&self, ino: u64) -> FsResult<(Entry, Arc<Vec<Entry>>)> {
        let id = self.id_of(ino);
        let dir = self.entry(id)?;
        if dir.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        let mut children = self.children(id)?;
        if children.iter().any(|e| self.older_than_committed(e)) {
            children = Arc::new(children.iter().map(|e| self.freshest(e)).collect());
        }
        self.prefetch_listings(&children);
        Ok((dir, children))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let entry = self.entry(self.id_of(ino))?;
        entry.target.ok_or(FsError::Invalid)
    }

    // ---- namespace changes ----
    //
    // Creates, mkdirs, renames, deletes and attribute changes are checked against the
    // local view, journaled, shown at once, and replayed in order by the sync worker
    // (online, within milliseconds). `fsync` and `fsyncdir` wait for the replay (or,
    // offline, make the journal durable locally). See docs/decisions.md.

    /// Operations the journal does not carry (special files, extended attributes) wait
    /// until it is replayed, so the server knows every entry they name and they land in
    /// order; offline they fail (EIO).
    fn settle_journal(&self) -> FsResult<()> {
        if self.journal.is_empty() {
            return Ok(());
        }
        if !self.sync.is_online() {
            return Err(FsError::Offline);
        }
        self.replay_journal().map(|_| ())
    }

    /// Journals `op` and lays it over the local view (atomically for the sync worker).
    fn journal_op(&self, op: Op) -> FsResult<()> {
        {
            let mut overlay = lock(&self.overlay);
            self.journal.push(&op)?;
            overlay.apply(&op, |id| self.journal.canonical(id));
        }
        self.sync.kick();
        Ok(())
    }

    /// A journaled change to directory `dir`'s content made at `time`: the directory
    /// shows new times at once, as the server will once it applies the change.
    fn touch_dir(&self, dir: Option<u64>, time: i64) {
        let Some(dir) = dir.map(|dir| self.journal.canonical(dir)) else {
            return;
        };
        lock(&self.overlay).touch(dir, time);
        if let Some(mut entry) = self.entries.get(&dir) {
            entry.mtime_ns = time;
            entry.ctime_ns = time;
            self.placed(&entry);
        }
    }

    /// A new entry made here, checked against the local view, with a local id.
    fn local_entry(
        &self,
        parent: u64,
        name: &str,
        kind: EntryKind,
        mode: u32,
        owner: Owner,
    ) -> FsResult<Entry> {
        if self.kind_of(parent)? != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        if self.children(parent)?.iter().any(|e| e.name == name) {
            return Err(FsError::Exists);
        }
        let now = unix_ns(SystemTime::now());
        let (uid, gid) = self.owner_labels(owner);
        Ok(Entry {
            id: self.next_local.fetch_add(1, Ordering::Relaxed),
            parent_id: Some(parent),
            name: name.to_owned(),
            kind,
            mode: mode & 0o7777,
            mtime_ns: now,
            size: 0,
            version: 0,
            hash: None,
            target: None,
            uid,
            gid,
            rdev: 0,
            atime_ns: now,
            ctime_ns: now,
        })
    }

    pub fn mkdir(&self, parent_ino: u64, name: &OsStr, mode: u32, owner: Owner) -> FsResult<Entry> {
        let parent = self.id_of(parent_ino);
        let name = name_of(name)?;
        let entry = self.local_entry(parent, name, EntryKind::Dir, mode, owner)?;
        self.journal_op(Op::Mkdir {
            entry: entry.clone(),
        })?;
        self.touch_dir(Some(parent), entry.ctime_ns);
        Ok(entry)
    }

    /// A symbolic link: journaled like a new file (an `Op::Create` of a symlink entry),
    /// so it costs no round trip and waits for nothing.
    pub fn symlink(
        &self,
        parent_ino: u64,
        name: &OsStr,
        target: &str,
        owner: Owner,
    ) -> FsResult<Entry> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        let parent = self.id_of(parent_ino);
        let name = name_of(name)?;
        let (uid, gid) = self.owner_labels(owner);
        let mut entry = self.local_entry(parent, name, EntryKind::Symlink, 0o777, owner)?;
        entry.size = target.len() as u64;
        entry.target = Some(target.to_owned());
        self.journal_op(Op::Create {
            entry: entry.clone(),
            uid,
            gid,
        })?;
        self.touch_dir(Some(parent), entry.ctime_ns);
        Ok(entry)
    }

    /// A FIFO, device or socket: metadata only.
    pub fn mknod(
        &self,
        parent_ino: u64,
        name: &OsStr,
        kind: EntryKind,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<Entry> {
        self.settle_journal()?;
        let parent = self.id_of(parent_ino);
        let request = cubby_proto::api::MknodRequest {
            parent_id: parent,
            name: name_of(name)?.to_owned(),
            kind,
            mode: Some(mode & 0o7777),
            rdev,
        };
        let entry = self.call(self.remote.mknod(&request))?;
        let entry = self.label_created(entry, owner)?;
        self.created(&entry);
        Ok(entry)
    }

    /// Labels a new entry with its creator when that is not the mounting user.
    fn label_created(&self, entry: Entry, owner: Owner) -> FsResult<Entry> {
        if self.owner_labels(owner) == (None, None) {
            return Ok(entry);
        }
        self.label(entry.id, None, owner)
    }

    /// Sets mode and owner labels (as needed) and returns the entry as stored.
    fn label(&self, id: u64, mode: Option<u32>, owner: Owner) -> FsResult<Entry> {
        let (uid, gid) = self.owner_labels(owner);
        if mode.is_none() && uid.is_none() && gid.is_none() {
            return self.fetch_entry(id);
        }
        let attrs = AttrsRequest {
            mode,
            uid,
            gid,
            ..AttrsRequest::default()
        };
        self.call(self.remote.set_attrs(id, &attrs))
    }

    /// The labels to store for `owner`: none for the mounting user's own ids.
    fn owner_labels(&self, owner: Owner) -> (Option<u32>, Option<u32>) {
        (
            (owner.uid != self.config.uid).then_some(owner.uid),
            (owner.gid != self.config.gid).then_some(owner.gid),
        )
    }

    /// Removes an entry (to the server's trash).
    fn remove(&self, entry: &Entry) -> FsResult<()> {
        if entry.kind == EntryKind::Dir && !self.children(entry.id)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.journal_op(Op::Delete {
            id: entry.id,
            parent: entry.parent_id,
        })?;
        self.touch_dir(entry.parent_id, unix_ns(SystemTime::now()));
        self.drop_pending_content(entry.id);
        Ok(())
    }

    /// A deleted file's waiting content is not sent (it would come back as a
    /// conflicted copy), nor is anything written through handles still open on it.
    fn drop_pending_content(&self, id: u64) {
        let id = self.journal.canonical(id);
        let staged = self.staged_copy(id);
        if let Some(staged) = staged {
            let mut state = staged.lock();
            state.dirty = false;
            state.modified_ns = None;
            state.attrs = staging::PendingAttrs::default();
            state.unlinked = true;
            staged.clear_pending();
        }
        self.sync.unqueue_upload(id);
        self.unstage_if_idle(id);
    }

    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> FsResult<()> {
        let entry = self.child(parent_ino, name)?;
        if entry.kind == EntryKind::Dir {
            return Err(FsError::IsDir);
        }
        self.remove(&entry)
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> FsResult<()> {
        let entry = self.child(parent_ino, name)?;
        if entry.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        self.remove(&entry)
    }

    /// `rename(2)`. Over an existing file, the moved file's content becomes a new version
    /// of the replaced file (so an editor's save keeps the file's id and history).
    pub fn rename(
        &self,
        parent_ino: u64,
        name: &OsStr,
        new_parent_ino: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        // As it looks now, with attributes waiting for its content: the journaled move
        // shows the entry as it holds it until the server has applied it.
        let source = self.lookup(parent_ino, name)?;
        let new_parent = self.id_of(new_parent_ino);
        let new_name_str = name_of(new_name)?;
        if source.kind == EntryKind::Dir {
            // Never into itself or below it.
            let mut at = Some(self.journal.canonical(new_parent));
            while let Some(dir) = at {
                if dir == self.journal.canonical(source.id) {
                    return Err(FsError::Invalid);
                }
                at = self
                    .entry(dir)?
                    .parent_id
                    .map(|p| self.journal.canonical(p));
            }
        }
        let existing = match self.child(new_parent_ino, new_name) {
            Ok(entry) => Some(entry),
            Err(FsError::NotFound) => None,
            Err(error) => return Err(error),
        };
        match &existing {
            Some(target) if target.id == source.id => return Ok(()),
            Some(_) if no_replace => return Err(FsError::Exists),
            _ => {}
        }
        // A file saved over another (an editor's save, git's lock files) keeps the
        // target's id and history: online, that happens now, after what is journaled.
        if let Some(target) = &existing
            && source.kind == EntryKind::File
            && target.kind == EntryKind::File
            && self.settle_journal().is_ok()
        {
            let source_id = self.journal.canonical(source.id);
            let target_id = self.journal.canonical(target.id);
            match self.save_over(source_id, target_id) {
                Ok(()) => {
                    self.forget(source_id, source.parent_id);
                    self.forget(source_id, Some(new_parent));
                    return Ok(());
                }
                // Journaled instead, for the sync worker.
                Err(FsError::Offline | FsError::Unavailable(_)) => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(target) = &existing {
            match (source.kind, target.kind) {
                (EntryKind::Dir, EntryKind::Dir) if !self.children(target.id)?.is_empty() => {
                    return Err(FsError::NotEmpty);
                }
                (EntryKind::Dir, EntryKind::Dir) => {}
                (_, EntryKind::Dir) => return Err(FsError::IsDir),
                (EntryKind::Dir, _) => return Err(FsError::NotDir),
                _ => {}
            }
        }
        let mut moved = source.clone();
        moved.parent_id = Some(new_parent);
        moved.name = new_name_str.to_owned();
        moved.ctime_ns = unix_ns(SystemTime::now());
        let time = moved.ctime_ns;
        self.journal_op(Op::Rename {
            entry: moved,
            replaced: existing.map(|target| target.id),
        })?;
        self.touch_dir(source.parent_id, time);
        self.touch_dir(Some(new_parent), time);
        Ok(())
    }

    /// Commits file `source`'s content as the next version of file `target`, then
    /// removes `source`, whose inode becomes an alias of `target`.
    fn save_over(&self, source: u64, target: u64) -> FsResult<()> {
        // The target's own waiting content came first: it becomes a version of its own.
        if let Some(staged) = self.staged_copy(target) {
            self.commit_staged(target, &staged, CommitPoint::Now)?;
        }
        if let Some(staged) = self.staged_copy(source) {
            self.commit_staged(source, &staged, CommitPoint::Now)?;
        }
        let source = self.call(self.remote.entry(source))?;
        let target = self.call(self.remote.entry(target))?;
        let manifest = self.call(self.remote.manifest(source.id, None))?;
        let done = self
            .until_offline(transfer::recommit(
                &self.remote,
                &manifest,
                &Target::File(target.id),
                Some(target.version),
            ))
            .ok_or(FsError::Offline)?
            .map_err(|error| match error {
                transfer::UploadError::Remote(remote) => self.remote_failed(remote),
                other => other.into(),
            })?;
        if source.mode != target.mode {
            let attrs = AttrsRequest {
                mode: Some(source.mode),
                ..AttrsRequest::default()
            };
            self.call(self.remote.set_attrs(target.id, &attrs))?;
        }
        self.call(self.remote.delete_id(source.id, false))?;
        self.committed_versions.insert(target.id, done.version);
        lock(&self.aliases).insert(self.ino_of(source.id), target.id);
        lock(&self.cached_version).remove(&target.id);
        self.forget(target.id, target.parent_id);
        self.forget(source.id, source.parent_id);
        self.known_gone(source.id, source.parent_id);
        tracing::debug!(
            from = source.id,
            to = target.id,
            version = done.version,
            "saved over"
        );
        Ok(())
    }

    // ---- attributes ----

    /// `setattr`: permission bits, size (truncate) and modification time.
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        (uid, gid): (Option<u32>, Option<u32>),
        size: Option<u64>,
        (atime, mtime): (Option<SystemTime>, Option<SystemTime>),
    ) -> FsResult<Entry> {
        let id = self.id_of(ino);
        let entry = self.entry(id)?;
        if let Some(size) = size {
            if entry.kind == EntryKind::Dir {
                return Err(FsError::IsDir);
            }
            self.truncate(&entry, size)?;
        }
        let any =
            mode.is_some() || mtime.is_some() || atime.is_some() || uid.is_some() || gid.is_some();
        // A file whose content waits for upload (or is being uploaded) takes its
        // attributes along: the commit sends them, or the next one does.
        let staged = self.staged_copy(entry.id);
        if any && let Some(staged) = staged {
            let mut state = staged.lock();
            if state.pending() {
                let attrs = &mut state.attrs;
                attrs.mode = mode.map(|m| m & 0o7777).or(attrs.mode);
                attrs.uid = uid.or(attrs.uid);
                attrs.gid = gid.or(attrs.gid);
                attrs.mtime_ns = mtime.map(unix_ns).or(attrs.mtime_ns);
                attrs.atime_ns = atime.map(unix_ns).or(attrs.atime_ns);
                attrs.changed_ns = Some(unix_ns(SystemTime::now()));
                // With a writer's handle open, its close records them (tar's fchown and
                // fchmod come before its close).
                if !self.open_for_writing(&staged) {
                    staged.record_pending(&state, false)?;
                }
                drop(state);
                return self.getattr(ino);
            }
        }
        if any {
            let attrs = AttrsRequest {
                mode: mode.map(|m| m & 0o7777),
                mtime_ns: mtime.map(unix_ns),
                atime_ns: atime.map(unix_ns),
                uid,
                gid,
            };
            let mut changed = self.entry(id)?;
            changed.mode = attrs.mode.unwrap_or(changed.mode);
            changed.uid = uid.or(changed.uid);
            changed.gid = gid.or(changed.gid);
            changed.mtime_ns = attrs.mtime_ns.unwrap_or(changed.mtime_ns);
            changed.atime_ns = attrs.atime_ns.unwrap_or(changed.atime_ns);
            changed.ctime_ns = unix_ns(SystemTime::now());
            self.journal_op(Op::SetAttrs {
                entry: changed,
                attrs,
            })?;
        } else {
            self.entries.invalidate(&id);
        }
        self.getattr(ino)
    }

    /// Whether a writer's handle is open on `staged` (its close will record it).
    fn open_for_writing(&self, staged: &Arc<Staged>) -> bool {
        lock(&self.handles).values().any(|handle| {
            matches!(&**handle, Handle::Writer { staged: theirs, .. } if Arc::ptr_eq(theirs, staged))
        })
    }

    fn truncate(&self, entry: &Entry, size: u64) -> FsResult<()> {
        let open = self.staged_copy(entry.id);
        match open {
            // Staged already. With no handle open on it (a path truncate while the
            // upload waits), it is queued like a close; an open writer's close queues it.
            Some(staged) => {
                staged.truncate(size)?;
                if !self.open_for_writing(&staged) {
                    self.closed(entry.id, &staged)?;
                }
                Ok(())
            }
            None if size == entry.size => Ok(()),
            None => {
                // Fresh: a commit may have finished since `entry` was read.
                let entry = &self.fetch_entry(entry.id)?;
                let staged = self.stage(entry, size == 0)?;
                staged.truncate(size)?;
                self.closed(entry.id, &staged)
            }
        }
    }

    // ---- open files ----

    fn new_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// The staging copy of `entry`, created (and filled, unless `empty`) when absent.
    fn stage(&self, entry: &Entry, empty: bool) -> FsResult<Arc<Staged>> {
        if let Some(staged) = self.staged_copy(entry.id) {
            return Ok(staged);
        }
        let staged = Arc::new(Staged::create(
            &self.config.staging_dir,
            entry.id,
            entry.version,
            &self.spares,
        )?);
        let single_chunk = self
            .single_chunk(entry)
            .and_then(|hash| self.chunks.get(&hash));
        if let (false, Some(data)) = (empty, single_chunk) {
            std::os::unix::fs::FileExt::write_all_at(&staged.file, &data, 0)?;
        } else if !empty && entry.size > 0 {
            let manifest = self.manifest(entry.id, entry.version)?;
            for chunk in &manifest.chunks {
                let data = self.chunk(chunk.hash, &chunk.url)?;
                std::os::unix::fs::FileExt::write_all_at(&staged.file, &data, chunk.offset)?;
            }
        }
        if empty && entry.size > 0 {
            staged.changed();
        }
        let mut map = lock(&self.staged);
        Ok(Arc::clone(map.entry(entry.id).or_insert(staged)))
    }

    /// Opens a file. Returns the handle and whether the kernel may keep its page cache.
    pub fn open(&self, ino: u64, write: bool, truncate: bool) -> FsResult<(u64, bool)> {
        let id = self.id_of(ino);
        // The staged copy first: one that is gone by now was committed before the
        // entry below is fetched, so that entry is at least the committed version.
        let mut staged = self.staged_copy(id);
        // Close-to-open: what is current on the server now.
        let entry = self.fetch_entry(id)?;
        // The kernel keeps a file's attributes for a second and cuts reads at the size
        // it holds: attributes of another version are dropped before the first read.
        if let Some(told) = self.kernel_attrs.get(&ino)
            && told != (entry.version, entry.size)
            && let Some(kernel) = self.kernel.get()
        {
            kernel.forget_attributes_now(ino);
            self.kernel_attrs.invalidate(&ino);
        }
        match entry.kind {
            EntryKind::File => {}
            EntryKind::Dir => return Err(FsError::IsDir),
            EntryKind::Symlink
            | EntryKind::Fifo
            | EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Socket => return Err(FsError::Invalid),
        }
        // A clean copy of an older version (left by a handle released meanwhile) is
        // not the file any more.
        if let Some(copy) = &staged {
            let state = copy.lock();
            let stale = !state.pending() && state.base_version < entry.version;
            drop(state);
            if stale {
                drop(staged.take());
                self.unstage_if_idle(id);
                // Still open through another handle: those handles share it.
                staged = self.staged_copy(id);
            }
        }
        if write || staged.is_some() {
            let staged = match staged {
                Some(staged) => {
                    if truncate {
                        staged.truncate(0)?;
                    }
                    staged
                }
                None => self.stage(&entry, truncate)?,
            };
            let fh = self.new_handle(Handle::Writer { id, staged });
            return Ok((fh, false));
        }
        let keep_cache = lock(&self.cached_version).get(&id) == Some(&entry.version);
        lock(&self.cached_version).insert(id, entry.version);
        let single_chunk = self.single_chunk(&entry);
        let handle = Handle::Reader {
            id,
            version: entry.version,
            manifest: Mutex::new(None),
            single_chunk,
        };
        Ok((self.new_handle(handle), keep_cache))
    }

    /// Creates an empty file (journaled, with a local id until the server has it) and
    /// opens it.
    pub fn create(
        &self,
        parent_ino: u64,
        name: &OsStr,
        mode: u32,
        owner: Owner,
    ) -> FsResult<(Entry, u64)> {
        let parent = self.id_of(parent_ino);
        let name = name_of(name)?;
        let (uid, gid) = self.owner_labels(owner);
        let mut entry = self.local_entry(parent, name, EntryKind::File, mode, owner)?;
        // Staged before it is journaled: the replay of the create (on the sync worker,
        // at once) re-keys the staged copy to the server's id, so it must find it there.
        // Staged after, it stayed under the local id, where no upload or open looked
        // for it: the content never left, and the next open saw the empty file.
        let staged = Arc::new(Staged::create(
            &self.config.staging_dir,
            entry.id,
            entry.version,
            &self.spares,
        )?);
        lock(&self.staged).insert(entry.id, Arc::clone(&staged));
        if let Err(error) = self.journal_op(Op::Create {
            entry: entry.clone(),
            uid,
            gid,
        }) {
            lock(&self.staged).remove(&entry.id);
            staged.discard(&self.spares);
            return Err(error);
        }
        self.touch_dir(Some(parent), entry.ctime_ns);
        let fh = self.new_handle(Handle::Writer {
            id: entry.id,
            staged,
        });
        entry.size = 0;
        Ok((entry, fh))
    }

    /// The chunk list of a version (immutable, so kept; offline, what was seen).
    fn manifest(&self, id: u64, version: u64) -> FsResult<Arc<FileManifest>> {
        if let Some(manifest) = self.manifests.get(&(id, version)) {
            return Ok(manifest);
        }
        if !self.sync.is_online() {
            return Err(FsError::Offline);
        }
        let manifest = Arc::new(self.call(self.remote.manifest(id, Some(version)))?);
        self.manifests.insert((id, version), Arc::clone(&manifest));
        self.known_changed();
        Ok(manifest)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Writer { staged, .. } => Ok(staged.read_at(offset, size as usize)?),
            Handle::Reader {
                id,
                version,
                manifest,
                single_chunk,
            } => {
                if let Some(data) = single_chunk.and_then(|hash| self.chunks.get(&hash)) {
                    let start = (offset as usize).min(data.len());
                    let end = (start + size as usize).min(data.len());
                    return Ok(data[start..end].to_vec());
                }
                let cached = lock(manifest).clone();
                let current = match cached {
                    Some(m) => m,
                    None => {
                        let fetched = self.manifest(*id, *version)?;
                        *lock(manifest) = Some(Arc::clone(&fetched));
                        fetched
                    }
                };
                match self.read_chunks(&current, offset, size as u64) {
                    // Signed chunk URLs expire (an hour): a long-open handle gets new ones.
                    Err(FsError::AccessDenied) => {
                        self.manifests.invalidate(&(*id, *version));
                        let renewed = self.manifest(*id, *version)?;
                        *lock(manifest) = Some(Arc::clone(&renewed));
                        self.read_chunks(&renewed, offset, size as u64)
                    }
                    other => other,
                }
            }
        }
    }

    /// The bytes `[offset, offset+size)` of a version, from cached or fetched chunks.
    fn read_chunks(&self, manifest: &FileManifest, offset: u64, size: u64) -> FsResult<Vec<u8>> {
        let end = (offset + size).min(manifest.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = manifest
            .chunks
            .partition_point(|c| c.offset + u64::from(c.size) <= offset);
        let needed: Vec<_> = manifest.chunks[first..]
            .iter()
            .take_while(|c| c.offset < end)
            .collect();
        let fetched: Vec<Bytes> = self
            .until_offline(try_join_all(needed.iter().map(|chunk| {
                let chunk = (*chunk).clone();
                async move {
                    if let Some(data) = self.chunks.get(&chunk.hash) {
                        return Ok(data);
                    }
                    self.fetch_chunk(&chunk.hash, &chunk.url).await
                }
            })))
            .ok_or(FsError::Offline)??;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (chunk, data) in needed.iter().zip(&fetched) {
            let from = offset.saturating_sub(chunk.offset) as usize;
            let to = ((end - chunk.offset) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        // Read ahead: the next chunks after the last one read, in the background.
        let after = first + needed.len();
        for next in manifest.chunks.iter().skip(after).take(READ_AHEAD_CHUNKS) {
            if self.chunks.get(&next.hash).is_some() || !lock(&self.prefetching).insert(next.hash) {
                continue;
            }
            let (remote, cache, next) = (self.remote.clone(), self.chunks.clone(), next.clone());
            let prefetching = Arc::clone(&self.prefetching);
            self.runtime.spawn(async move {
                if let Ok(data) = remote.get_chunk(&next.url).await
                    && ContentHash::of(&data) == next.hash
                {
                    cache.put(&next.hash, &data);
                }
                lock(&prefetching).remove(&next.hash);
            });
        }
        Ok(out)
    }

    async fn fetch_chunk(&self, hash: &ContentHash, url: &str) -> FsResult<Bytes> {
        if !self.sync.is_online() {
            tracing::warn!(chunk = %hash, "offline: a chunk that is not cached cannot be read");
            return Err(FsError::Offline);
        }
        let data = self
            .remote
            .get_chunk(url)
            .await
            .map_err(|error| self.remote_failed(error))?;
        if ContentHash::of(&data) != *hash {
            return Err(FsError::Io(format!("chunk {hash} arrived corrupted")));
        }
        self.chunks.put(hash, &data);
        Ok(data)
    }

    fn chunk(&self, hash: ContentHash, url: &str) -> FsResult<Bytes> {
        match self.chunks.get(&hash) {
            Some(data) => Ok(data),
            None => self
                .until_offline(self.fetch_chunk(&hash, url))
                .ok_or(FsError::Offline)?,
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        match &*self.handle(fh)? {
            Handle::Writer { staged, .. } => {
                let end = offset + data.len() as u64;
                let len = staged.len()?;
                if end > len {
                    self.room_to_grow(end - len)?;
                }
                staged.write_at(offset, data)?;
                Ok(data.len() as u32)
            }
            Handle::Reader { .. } => Err(FsError::BadHandle),
        }
    }

    /// ENOSPC when `growth` more bytes in the staging area would leave its filesystem
    /// less free than the configured reserve.
    fn room_to_grow(&self, growth: u64) -> FsResult<()> {
        let reserve = self.config.staging_reserve_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let stats = nix::sys::statvfs::statvfs(&self.config.staging_dir)
            .map_err(|errno| FsError::from(std::io::Error::from(errno)))?;
        let free = stats.blocks_available() * stats.fragment_size();
        if free < reserve.saturating_add(growth) {
            tracing::warn!(
                free,
                reserve,
                "the staging area's disk is nearly full: write refused"
            );
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// `close` (FUSE flush): the staged changes are recorded as pending (they survive
    /// the daemon) and queued for the sync worker to upload; this does not wait for it.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        match &*self.handle(fh)? {
            Handle::Writer { id, staged } => self.closed(*id, staged),
            Handle::Reader { .. } => Ok(()),
        }
    }

    /// `fsync`: the staged changes are durable on local disk and, unless the server is
    /// unreachable, committed by the server when this returns.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        // The server learns of the file (and of every earlier namespace change) first.
        self.fsync_namespace()?;
        match &*self.handle(fh)? {
            Handle::Writer { id, staged } => {
                match self.commit_staged(*id, staged, CommitPoint::Now) {
                    // Durable in the staging area (a failed commit makes it so before it
                    // returns); the sync worker sends it when it can.
                    Err(FsError::Offline | FsError::Unavailable(_)) => {
                        self.sync.queue_upload(self.journal.canonical(*id));
                        Ok(())
                    }
                    other => other,
                }
            }
            Handle::Reader { .. } => Ok(()),
        }
    }

    /// `fsync` of a directory: its namespace changes reach the server, or (when it
    /// cannot take them) the local disk.
    pub fn fsyncdir(&self) -> FsResult<()> {
        self.fsync_namespace()
    }

    fn fsync_namespace(&self) -> FsResult<()> {
        if let Err(error) = self.settle_journal() {
            tracing::debug!(%error, "fsync: the journal waits; kept durably here");
            self.journal.sync()?;
        }
        Ok(())
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        let (result, writer_of) = match &*handle {
            Handle::Writer { id, staged } => (self.closed(*id, staged), Some(*id)),
            Handle::Reader { .. } => (Ok(()), None),
        };
        drop(handle);
        if let Some(id) = writer_of {
            self.unstage_if_idle(id);
        }
        result
    }

    /// The hash of `entry`'s content when it is one chunk (so the chunk's hash is the
    /// content's), for an entry as the server has it, not as journaled changes left it.
    fn single_chunk(&self, entry: &Entry) -> Option<ContentHash> {
        let one_chunk = entry.size > 0 && entry.size <= u64::from(chunking::MIN_CHUNK);
        entry
            .hash
            .filter(|_| one_chunk && matches!(self.overlaid(entry.id).1, Overlaid::Untouched))
    }

    // ---- extended attributes ----

    /// An extended attribute: the read-only `user.cubby.*` ones, other `user.*` ones from
    /// the server; other namespaces are not supported.
    pub fn xattr(&self, ino: u64, name: &str) -> FsResult<Option<Vec<u8>>> {
        let entry = self.getattr(ino)?;
        if let Some(key) = name.strip_prefix("user.cubby.") {
            if key == "sync" && ino == ROOT_INO {
                let status = serde_json::to_vec_pretty(&self.status())
                    .map_err(|e| FsError::Io(e.to_string()))?;
                return Ok(Some(status));
            }
            let staged = self.staged_copy(entry.id);
            let pending = is_local(entry.id) || staged.is_some_and(|s| s.lock().pending());
            return Ok(match key {
                "version" => Some(entry.version.to_string().into_bytes()),
                "hash" => entry.hash.map(|h| h.to_hex().into_bytes()),
                "status" if entry.kind == EntryKind::File => {
                    Some(if self.sync.is_conflicted(entry.id) {
                        b"conflict".to_vec()
                    } else if pending {
                        b"pending".to_vec()
                    } else {
                        b"synced".to_vec()
                    })
                }
                _ => None,
            });
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(entry.id);
        Ok(self.call(self.remote.xattr(id, name))?.map(|v| v.to_vec()))
    }

    pub fn xattr_names(&self, ino: u64) -> FsResult<Vec<String>> {
        let entry = self.getattr(ino)?;
        let mut names = vec!["user.cubby.version".to_owned()];
        if ino == ROOT_INO {
            names.push("user.cubby.sync".to_owned());
        }
        if entry.kind == EntryKind::File {
            names.extend(["user.cubby.hash".to_owned(), "user.cubby.status".to_owned()]);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(entry.id);
        names.extend(self.call(self.remote.xattr_names(id))?);
        Ok(names)
    }

    /// Sets a `user.*` attribute; `create` / `replace` as setxattr's flags.
    pub fn set_xattr(
        &self,
        ino: u64,
        name: &str,
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> FsResult<()> {
        let id = self.id_of(ino);
        if name.starts_with("user.cubby.") {
            return Err(FsError::NotPermitted);
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(id);
        let mode = match (create, replace) {
            (true, _) => "create",
            (false, true) => "replace",
            (false, false) => "any",
        };
        match self.call(self.remote.set_xattr(id, name, value, mode)) {
            Ok(()) => Ok(()),
            Err(FsError::NotFound) if replace => Err(FsError::NoAttribute),
            Err(e) => Err(e),
        }
    }

    pub fn remove_xattr(&self, ino: u64, name: &str) -> FsResult<()> {
        if name.starts_with("user.cubby.") {
            return Err(FsError::NotPermitted);
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.id_of(ino);
        match self.call(self.remote.remove_xattr(id, name)) {
            Ok(()) => Ok(()),
            Err(FsError::NotFound) => Err(FsError::NoAttribute),
            Err(e) => Err(e),
        }
    }
}
