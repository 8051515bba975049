//! The filesystem core: Cubby's tree as POSIX operations, independent of the kernel
//! interface (`fuse.rs` is the thin adapter), so it can be tested without a mount.
//!
//! `CubbyFs` is one type whose methods live in rooms of one job each: this file holds
//! its state, inode numbers, the caches and the server calls every room makes;
//! `view` answers lookups and listings, `namespace` changes the tree, `handles` serves
//! open files (reads and writes), `writeback` commits staged content, `xattrs` extended
//! attributes, `known` saves what the mount knows, and [`sync`] runs the worker that
//! replays the journal and uploads.
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
//! directory listings are cached (moka): for [`FsConfig::metadata_ttl`], or while the
//! change feed is followed until a change drops them (at most [`LIVE_METADATA_TTL`];
//! see [`CacheExpiry`]). The kernel keeps attributes and entries for the TTL.
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
mod handles;
mod heartbeat;
mod journal;
mod known;
mod listing;
mod namespace;
mod overlay;
mod pending_log;
mod staging;
pub mod sync;
mod view;
mod writeback;
mod xattrs;

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
    listings: Cache<u64, listing::Listing>,
    /// Held while a cached listing is edited or replaced (after the overlay's lock).
    listing_edits: Mutex<()>,
    chunks: ChunkCache,
    /// Chunks being fetched ahead, so each is fetched once.
    prefetching: Arc<Mutex<std::collections::HashSet<ContentHash>>>,
    /// Staged files by entry id.
    staged: Mutex<HashMap<u64, Arc<Staged>>>,
    spares: staging::Spares,
    pending_log: Arc<pending_log::PendingLog>,
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
    known_listings: Cache<u64, listing::Listing>,
    /// Whether what the mount knows changed since it was saved (see [`known`]).
    known_dirty: std::sync::atomic::AtomicBool,
    /// When it was last saved.
    known_saved: Mutex<Option<std::time::Instant>>,
    /// Bytes writes may still add to the staging area before its filesystem is asked
    /// for its free space again (see `room_to_grow`).
    staging_room: AtomicU64,
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

/// How long a cached entry or listing is kept without the server being asked again:
/// [`FsConfig::metadata_ttl`] when the change feed is not followed, and
/// [`LIVE_METADATA_TTL`] when it is, since every change another client makes then
/// drops what it touches (and this mount's own changes edit what it cached). When the
/// feed stops, what was cached on its word goes (see `sync::follow`).
struct CacheExpiry {
    ttl: Duration,
    feed_live: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a cached entry or listing is kept while the change feed is followed: a
/// bound on what a change the feed never told (a lost echo, say) can leave stale.
pub const LIVE_METADATA_TTL: Duration = Duration::from_secs(30);

impl CacheExpiry {
    fn new(ttl: Duration, sync: &sync::SyncState) -> Self {
        Self {
            ttl,
            feed_live: Arc::clone(&sync.feed_live),
        }
    }

    fn now(&self) -> Duration {
        if self.feed_live.load(Ordering::SeqCst) {
            LIVE_METADATA_TTL.max(self.ttl)
        } else {
            self.ttl
        }
    }
}

impl<K, V> moka::Expiry<K, V> for CacheExpiry {
    fn expire_after_create(&self, _: &K, _: &V, _: std::time::Instant) -> Option<Duration> {
        Some(self.now())
    }

    fn expire_after_update(
        &self,
        _: &K,
        _: &V,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.now())
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
            // Only an unreachable server: an answer (a refused login, say) is the answer.
            Ok(Err(error)) if !matches!(error, RemoteError::Transport(_)) => {
                return Err(error.into());
            }
            failed => match known::load(&config.staging_dir, remote.server()) {
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
        let (pending_log, pending_loaded) = pending_log::PendingLog::open(&config.staging_dir)?;
        let ttl = config.metadata_ttl;
        let sync = sync::SyncState::default();
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
                .expire_after(CacheExpiry::new(ttl, &sync))
                .build(),
            listings: Cache::builder()
                .max_capacity(10_000)
                .expire_after(CacheExpiry::new(ttl, &sync))
                .build(),
            listing_edits: Mutex::new(()),
            chunks,
            prefetching: Arc::new(Mutex::new(std::collections::HashSet::new())),
            staged: Mutex::new(HashMap::new()),
            spares: staging::Spares::default(),
            pending_log: Arc::new(pending_log),
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
            sync,
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
            staging_room: AtomicU64::new(0),
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
        fs.load_pending(pending_loaded)?;
        Ok(fs)
    }

    /// Loads what a previous run left to send: journaled operations (laid over the
    /// tree) and staged content with a pending record (shown as the file's content and
    /// queued for upload).
    fn load_pending(&self, loaded: pending_log::Loaded) -> FsResult<()> {
        {
            let mut overlay = lock(&self.overlay);
            for op in self.journal.all() {
                overlay.apply(&op, |id| self.journal.canonical(id));
            }
        }
        for pending in staging::recover(&self.config.staging_dir, &self.pending_log, loaded)? {
            let staged = Staged::adopt(pending, &self.pending_log)?;
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
    fn edit_listings(&self, parent: u64, edit: impl Fn(&mut listing::Listing)) {
        // One edit at a time: two edits of one listing (a replayed delete, a sibling's
        // new times) each copying it would lose one (an `rm -rf` saw a deleted
        // directory come back, and failed with "Directory not empty").
        let _one_at_a_time = lock(&self.listing_edits);
        for cache in [&self.listings, &self.known_listings] {
            if let Some(mut listing) = cache.get(&parent) {
                edit(&mut listing);
                cache.insert(parent, listing);
            }
        }
        self.known_changed();
    }

    /// This mount made directory `id` on the server a moment ago: its listing is known
    /// (empty) without asking.
    fn made_empty(&self, id: u64) {
        let _one_at_a_time = lock(&self.listing_edits);
        for cache in [&self.listings, &self.known_listings] {
            cache.insert(id, listing::Listing::default());
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
            self.edit_listings(parent, |listing| listing.put(entry.clone()));
        }
    }

    /// A change this mount made: the entry left `parent`.
    fn known_gone(&self, id: u64, parent: Option<u64>) {
        if let Some(parent) = parent {
            self.edit_listings(parent, |listing| {
                listing.remove_id(id);
            });
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

    /// Remembers what the kernel is told of a file with no local change waiting (no
    /// staged copy, no journaled change), so `open` can drop the kernel's attributes
    /// when it finds another version. A file with local changes is answered from them,
    /// and the kernel's own writes keep its size; what it was told is dropped when a
    /// commit becomes a conflicted copy instead.
    pub fn told_kernel(&self, ino: u64, entry: &Entry) {
        if entry.kind != EntryKind::File {
            return;
        }
        let settled = self.staged_copy(entry.id).is_none()
            && matches!(self.overlaid(entry.id).1, Overlaid::Untouched);
        if settled {
            self.kernel_attrs.insert(ino, (entry.version, entry.size));
        } else {
            self.kernel_attrs.invalidate(&ino);
        }
    }
}
