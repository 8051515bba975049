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
//! content; every handle of that file reads and writes it. `close` (FUSE flush) and
//! `fsync` commit it with the version it was based on and return only once the server
//! committed. A 409 keeps the local bytes as `NAME (conflicted copy HOST DATE).EXT`
//! beside the winner, and later writes through the same handles go to that copy.

mod error;
pub mod fuse;
mod staging;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cubby_proto::api::{AttrsRequest, Entry, EntryKind, FileManifest};
use cubby_proto::{ContentHash, ErrorCode};
use futures_util::future::try_join_all;
use moka::sync::Cache;

pub use error::FsError;
use staging::Staged;

use crate::cache::chunks::ChunkCache;
use crate::conflict::{conflicted_name, host_name};
use crate::remote::Remote;
use crate::transfer::{self, Target};

/// The result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 2;

/// The root directory's inode number (FUSE's).
pub const ROOT_INO: u64 = 1;

/// Settings of a mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Written files wait here until committed (durable; not a cache).
    pub staging_dir: PathBuf,
    /// The chunk cache (disposable).
    pub cache_dir: PathBuf,
    /// Most bytes the chunk cache holds.
    pub cache_bytes: u64,
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
    chunks: ChunkCache,
    /// Chunks being fetched ahead, so each is fetched once.
    prefetching: Arc<Mutex<std::collections::HashSet<ContentHash>>>,
    /// Staged files by entry id.
    staged: Mutex<HashMap<u64, Arc<Staged>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    /// The version whose pages the kernel may hold, per entry.
    cached_version: Mutex<HashMap<u64, u64>>,
}

impl std::fmt::Debug for CubbyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubbyFs")
            .field("root_id", &self.root_id)
            .finish()
    }
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

fn name_of(name: &OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(FsError::Invalid)?;
    if name.len() > cubby_proto::path::NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(name)
}

impl CubbyFs {
    /// Connects to the server (the root must be reachable) and opens the local stores.
    pub fn new(
        remote: Remote,
        runtime: tokio::runtime::Handle,
        config: FsConfig,
    ) -> FsResult<Self> {
        std::fs::create_dir_all(&config.staging_dir)?;
        let root = runtime.block_on(remote.root())?;
        let chunks = ChunkCache::open(&config.cache_dir, config.cache_bytes)?;
        let ttl = config.metadata_ttl;
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
            chunks,
            prefetching: Arc::new(Mutex::new(std::collections::HashSet::new())),
            staged: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            cached_version: Mutex::new(HashMap::new()),
            config,
        };
        fs.recover_pending()?;
        Ok(fs)
    }

    /// Commits what a previous run staged but could not commit (see [`staging`]).
    fn recover_pending(&self) -> FsResult<()> {
        for pending in staging::recover(&self.config.staging_dir)? {
            let staging::PendingRecord {
                target_id,
                base_version,
            } = pending.record;
            let committed = self.block_on(transfer::commit_local(
                &self.remote,
                &pending.data,
                &Target::File(target_id),
                Some(base_version),
            ));
            let outcome = match committed {
                Ok(report) => Ok(report),
                Err(transfer::UploadError::Remote(error))
                    if error.code() == Some(ErrorCode::VersionConflict) =>
                {
                    self.keep_conflicted_copy(target_id, &pending.data)
                }
                Err(error) => Err(error.into()),
            };
            match outcome {
                Ok(report) => {
                    tracing::info!(
                        file = target_id,
                        version = report.version,
                        "recovered a staged write"
                    );
                    staging::finish(&pending);
                }
                // Kept on disk: the next mount tries again. Nothing is dropped.
                Err(error) => {
                    tracing::warn!(file = target_id, %error, "a staged write is still pending")
                }
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    // ---- inodes and metadata ----

    /// The entry id an inode names.
    pub fn id_of(&self, ino: u64) -> u64 {
        if let Some(id) = lock(&self.aliases).get(&ino) {
            return *id;
        }
        if ino == ROOT_INO {
            self.root_id
        } else if ino == self.root_id {
            ROOT_INO
        } else {
            ino
        }
    }

    /// The inode number of an entry id.
    pub fn ino_of(&self, id: u64) -> u64 {
        if id == self.root_id {
            ROOT_INO
        } else if id == ROOT_INO {
            self.root_id
        } else {
            id
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn remember(&self, entry: &Entry) {
        self.entries.insert(entry.id, entry.clone());
    }

    /// Forgets what is cached about an entry and the directory holding it.
    fn forget(&self, id: u64, parent: Option<u64>) {
        self.entries.invalidate(&id);
        if let Some(parent) = parent {
            self.listings.invalidate(&parent);
            self.entries.invalidate(&parent);
        }
    }

    fn fetch_entry(&self, id: u64) -> FsResult<Entry> {
        let entry = self.block_on(self.remote.entry(id))?;
        self.remember(&entry);
        Ok(entry)
    }

    fn entry(&self, id: u64) -> FsResult<Entry> {
        match self.entries.get(&id) {
            Some(entry) => Ok(entry),
            None => self.fetch_entry(id),
        }
    }

    fn children(&self, dir: u64) -> FsResult<Arc<Vec<Entry>>> {
        if let Some(listing) = self.listings.get(&dir) {
            return Ok(listing);
        }
        let children = Arc::new(self.block_on(self.remote.children(dir))?);
        for child in children.iter() {
            self.remember(child);
        }
        self.listings.insert(dir, Arc::clone(&children));
        Ok(children)
    }

    fn child(&self, parent_ino: u64, name: &OsStr) -> FsResult<Entry> {
        let name = name_of(name)?;
        let parent = self.id_of(parent_ino);
        self.children(parent)?
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    /// The entry with what local staging knows on top (size of unsaved writes).
    fn with_local_state(&self, mut entry: Entry) -> Entry {
        if let Some(staged) = lock(&self.staged).get(&entry.id).cloned()
            && let Ok(len) = staged.len()
        {
            entry.size = len;
            if let Some(modified) = staged.lock().modified_ns {
                entry.mtime_ns = modified;
                entry.ctime_ns = modified;
            }
        }
        entry
    }

    pub fn lookup(&self, parent_ino: u64, name: &OsStr) -> FsResult<Entry> {
        let entry = self.child(parent_ino, name)?;
        Ok(self.with_local_state(entry))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        let entry = self.entry(self.id_of(ino))?;
        Ok(self.with_local_state(entry))
    }

    pub fn readdir(&self, ino: u64) -> FsResult<(Entry, Arc<Vec<Entry>>)> {
        let id = self.id_of(ino);
        let dir = self.entry(id)?;
        if dir.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok((dir, self.children(id)?))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let entry = self.entry(self.id_of(ino))?;
        entry.target.ok_or(FsError::Invalid)
    }

    // ---- namespace changes ----

    pub fn mkdir(&self, parent_ino: u64, name: &OsStr, mode: u32, owner: Owner) -> FsResult<Entry> {
        let parent = self.id_of(parent_ino);
        let entry = self.block_on(self.remote.mkdir_in(parent, name_of(name)?, mode & 0o7777))?;
        let entry = self.label_created(entry, owner)?;
        self.forget(entry.id, Some(parent));
        self.remember(&entry);
        Ok(entry)
    }

    pub fn symlink(
        &self,
        parent_ino: u64,
        name: &OsStr,
        target: &str,
        owner: Owner,
    ) -> FsResult<Entry> {
        let parent = self.id_of(parent_ino);
        let entry = self.block_on(self.remote.symlink_in(parent, name_of(name)?, target))?;
        let entry = self.label_created(entry, owner)?;
        self.forget(entry.id, Some(parent));
        self.remember(&entry);
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
        let parent = self.id_of(parent_ino);
        let request = cubby_proto::api::MknodRequest {
            parent_id: parent,
            name: name_of(name)?.to_owned(),
            kind,
            mode: Some(mode & 0o7777),
            rdev,
        };
        let entry = self.block_on(self.remote.mknod(&request))?;
        let entry = self.label_created(entry, owner)?;
        self.forget(entry.id, Some(parent));
        self.remember(&entry);
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
        Ok(self.block_on(self.remote.set_attrs(id, &attrs))?)
    }

    /// The labels to store for `owner`: none for the mounting user's own ids.
    fn owner_labels(&self, owner: Owner) -> (Option<u32>, Option<u32>) {
        (
            (owner.uid != self.config.uid).then_some(owner.uid),
            (owner.gid != self.config.gid).then_some(owner.gid),
        )
    }

    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> FsResult<()> {
        let entry = self.child(parent_ino, name)?;
        if entry.kind == EntryKind::Dir {
            return Err(FsError::IsDir);
        }
        self.block_on(self.remote.delete_id(entry.id, false))?;
        self.forget(entry.id, entry.parent_id);
        Ok(())
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> FsResult<()> {
        let entry = self.child(parent_ino, name)?;
        if entry.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        self.block_on(self.remote.delete_id(entry.id, false))?;
        self.forget(entry.id, entry.parent_id);
        Ok(())
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
        let source = self.child(parent_ino, name)?;
        let new_parent = self.id_of(new_parent_ino);
        let new_name_str = name_of(new_name)?;
        let existing = match self.child(new_parent_ino, new_name) {
            Ok(entry) => Some(entry),
            Err(FsError::NotFound) => None,
            Err(error) => return Err(error),
        };
        match existing {
            Some(target) if target.id == source.id => return Ok(()),
            Some(_) if no_replace => return Err(FsError::Exists),
            Some(target) if source.kind == EntryKind::File && target.kind == EntryKind::File => {
                self.save_over(&source, &target)?;
            }
            _ => {
                let moved = self.block_on(self.remote.move_to(
                    source.id,
                    new_parent,
                    new_name_str,
                    !no_replace,
                ))?;
                self.remember(&moved);
            }
        }
        self.forget(source.id, source.parent_id);
        self.forget(source.id, Some(new_parent));
        Ok(())
    }

    /// Commits `source`'s content as the next version of `target`, then removes `source`.
    fn save_over(&self, source: &Entry, target: &Entry) -> FsResult<()> {
        if let Some(staged) = lock(&self.staged).get(&source.id).cloned() {
            self.commit_staged(source.id, &staged)?;
        }
        let source = self.fetch_entry(source.id)?;
        let target = self.fetch_entry(target.id)?;
        let manifest = self.block_on(self.remote.manifest(source.id, None))?;
        let done = self.block_on(transfer::recommit(
            &self.remote,
            &manifest,
            &Target::File(target.id),
            Some(target.version),
        ))?;
        if source.mode != target.mode {
            let attrs = AttrsRequest {
                mode: Some(source.mode),
                ..AttrsRequest::default()
            };
            self.block_on(self.remote.set_attrs(target.id, &attrs))?;
        }
        self.block_on(self.remote.delete_id(source.id, false))?;
        lock(&self.aliases).insert(self.ino_of(source.id), target.id);
        lock(&self.cached_version).remove(&target.id);
        self.forget(target.id, target.parent_id);
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
        if mode.is_some() || mtime.is_some() || atime.is_some() || uid.is_some() || gid.is_some() {
            let attrs = AttrsRequest {
                mode: mode.map(|m| m & 0o7777),
                mtime_ns: mtime.map(unix_ns),
                atime_ns: atime.map(unix_ns),
                uid,
                gid,
            };
            let updated = self.block_on(self.remote.set_attrs(id, &attrs))?;
            self.remember(&updated);
        } else {
            self.entries.invalidate(&id);
        }
        self.getattr(ino)
    }

    fn truncate(&self, entry: &Entry, size: u64) -> FsResult<()> {
        let open = lock(&self.staged).get(&entry.id).cloned();
        match open {
            // Open for writing: the change is committed with the rest at close.
            Some(staged) => Ok(staged.truncate(size)?),
            None if size == entry.size => Ok(()),
            None => {
                let staged = self.stage(entry, size == 0)?;
                staged.truncate(size)?;
                let result = self.commit_staged(entry.id, &staged);
                self.unstage_if_idle(entry.id);
                result
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
        if let Some(staged) = lock(&self.staged).get(&entry.id).cloned() {
            return Ok(staged);
        }
        let staged = Arc::new(Staged::create(
            &self.config.staging_dir,
            entry.id,
            entry.version,
        )?);
        if !empty && entry.size > 0 {
            let manifest = self.block_on(self.remote.manifest(entry.id, Some(entry.version)))?;
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
        // Close-to-open: what is current on the server now.
        let entry = self.fetch_entry(id)?;
        match entry.kind {
            EntryKind::File => {}
            EntryKind::Dir => return Err(FsError::IsDir),
            EntryKind::Symlink
            | EntryKind::Fifo
            | EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Socket => return Err(FsError::Invalid),
        }
        let staged = lock(&self.staged).get(&id).cloned();
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
        let handle = Handle::Reader {
            id,
            version: entry.version,
            manifest: Mutex::new(None),
        };
        Ok((self.new_handle(handle), keep_cache))
    }

    /// Creates an empty file (committed at once, so it has an id) and opens it.
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
        let mode = mode & 0o7777;
        let request = cubby_proto::api::CreateRequest {
            parent_id: parent,
            name: name.to_owned(),
            mode: (mode != 0o644).then_some(mode),
            uid,
            gid,
        };
        let mut entry = self.block_on(self.remote.create(&request))?;
        self.forget(entry.id, Some(parent));
        self.remember(&entry);
        let staged = Arc::new(Staged::create(
            &self.config.staging_dir,
            entry.id,
            entry.version,
        )?);
        lock(&self.staged).insert(entry.id, Arc::clone(&staged));
        let fh = self.new_handle(Handle::Writer {
            id: entry.id,
            staged,
        });
        entry.size = 0;
        Ok((entry, fh))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Writer { staged, .. } => Ok(staged.read_at(offset, size as usize)?),
            Handle::Reader {
                id,
                version,
                manifest,
            } => {
                let fetch = || -> FsResult<Arc<FileManifest>> {
                    let fetched =
                        Arc::new(self.block_on(self.remote.manifest(*id, Some(*version)))?);
                    *lock(manifest) = Some(Arc::clone(&fetched));
                    Ok(fetched)
                };
                let cached = lock(manifest).clone();
                let current = match cached {
                    Some(m) => m,
                    None => fetch()?,
                };
                match self.read_chunks(&current, offset, size as u64) {
                    // Signed chunk URLs expire (an hour): a long-open handle gets new ones.
                    Err(FsError::AccessDenied) => {
                        let renewed = fetch()?;
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
        let fetched: Vec<Bytes> = self.block_on(try_join_all(needed.iter().map(|chunk| {
            let chunk = (*chunk).clone();
            async move {
                if let Some(data) = self.chunks.get(&chunk.hash) {
                    return Ok(data);
                }
                self.fetch_chunk(&chunk.hash, &chunk.url).await
            }
        })))?;
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
        let data = self.remote.get_chunk(url).await?;
        if ContentHash::of(&data) != *hash {
            return Err(FsError::Io(format!("chunk {hash} arrived corrupted")));
        }
        self.chunks.put(hash, &data);
        Ok(data)
    }

    fn chunk(&self, hash: ContentHash, url: &str) -> FsResult<Bytes> {
        match self.chunks.get(&hash) {
            Some(data) => Ok(data),
            None => self.block_on(self.fetch_chunk(&hash, url)),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        match &*self.handle(fh)? {
            Handle::Writer { staged, .. } => {
                staged.write_at(offset, data)?;
                Ok(data.len() as u32)
            }
            Handle::Reader { .. } => Err(FsError::BadHandle),
        }
    }

    /// `close` (FUSE flush) and `fsync`: commit staged changes, waiting for the server.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        match &*self.handle(fh)? {
            Handle::Writer { id, staged } => self.commit_staged(*id, staged),
            Handle::Reader { .. } => Ok(()),
        }
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        let result = self.flush_handle(&handle);
        let writer_of = match &*handle {
            Handle::Writer { id, .. } => Some(*id),
            Handle::Reader { .. } => None,
        };
        drop(handle);
        if let Some(id) = writer_of {
            self.unstage_if_idle(id);
        }
        result
    }

    fn flush_handle(&self, handle: &Handle) -> FsResult<()> {
        match handle {
            Handle::Writer { id, staged } => self.commit_staged(*id, staged),
            Handle::Reader { .. } => Ok(()),
        }
    }

    /// Drops a staged copy nobody has open and nothing needs committing.
    fn unstage_if_idle(&self, id: u64) {
        let mut map = lock(&self.staged);
        if let Some(staged) = map.get(&id)
            && Arc::strong_count(staged) == 1
            && !staged.lock().dirty
        {
            staged.discard();
            map.remove(&id);
        }
    }

    /// Commits a staged file if it has changes; on a stale base, keeps the bytes as a
    /// conflicted copy and sends later commits there.
    fn commit_staged(&self, id: u64, staged: &Staged) -> FsResult<()> {
        let mut state = staged.lock();
        if !state.dirty {
            return Ok(());
        }
        staged.file.sync_all()?;
        staged.record_pending(&state)?;
        let target = Target::File(state.target_id);
        let committed = self.block_on(transfer::commit_local(
            &self.remote,
            &staged.path,
            &target,
            Some(state.base_version),
        ));
        let report = match committed {
            Ok(report) => report,
            Err(transfer::UploadError::Remote(error))
                if error.code() == Some(ErrorCode::VersionConflict) =>
            {
                let copy = self.keep_conflicted_copy(state.target_id, &staged.path)?;
                tracing::warn!(
                    file = id,
                    copy = copy.file_id,
                    "conflict: kept a conflicted copy"
                );
                state.target_id = copy.file_id;
                copy
            }
            Err(error) => return Err(error.into()),
        };
        staged.clear_pending();
        state.base_version = report.version;
        state.dirty = false;
        state.modified_ns = None;
        let parent = self.entries.get(&report.file_id).and_then(|e| e.parent_id);
        self.forget(report.file_id, parent);
        lock(&self.cached_version).insert(id, report.version);
        Ok(())
    }

    fn keep_conflicted_copy(
        &self,
        id: u64,
        content: &std::path::Path,
    ) -> FsResult<transfer::UploadReport> {
        let current = self.fetch_entry(id)?;
        let parent = current.parent_id.ok_or(FsError::Invalid)?;
        let now = SystemTime::now();
        for attempt in 1..=20 {
            let name = conflicted_name(&current.name, &self.host, now, attempt);
            let target = Target::Child { parent, name };
            match self.block_on(transfer::commit_local(&self.remote, content, &target, None)) {
                Ok(report) => {
                    self.forget(report.file_id, Some(parent));
                    return Ok(report);
                }
                Err(transfer::UploadError::Remote(error))
                    if matches!(
                        error.code(),
                        Some(ErrorCode::VersionConflict | ErrorCode::AlreadyExists)
                    ) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(FsError::Io("no free name for a conflicted copy".into()))
    }

    // ---- extended attributes ----

    /// An extended attribute: the read-only `user.cubby.*` ones, other `user.*` ones from
    /// the server; other namespaces are not supported.
    pub fn xattr(&self, ino: u64, name: &str) -> FsResult<Option<Vec<u8>>> {
        let entry = self.getattr(ino)?;
        if let Some(key) = name.strip_prefix("user.cubby.") {
            let pending = lock(&self.staged)
                .get(&entry.id)
                .is_some_and(|s| s.lock().dirty);
            return Ok(match key {
                "version" => Some(entry.version.to_string().into_bytes()),
                "hash" => entry.hash.map(|h| h.to_hex().into_bytes()),
                "status" if entry.kind == EntryKind::File => Some(if pending {
                    b"pending".to_vec()
                } else {
                    b"synced".to_vec()
                }),
                _ => None,
            });
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        Ok(self
            .block_on(self.remote.xattr(entry.id, name))?
            .map(|v| v.to_vec()))
    }

    pub fn xattr_names(&self, ino: u64) -> FsResult<Vec<String>> {
        let entry = self.getattr(ino)?;
        let mut names = vec!["user.cubby.version".to_owned()];
        if entry.kind == EntryKind::File {
            names.extend(["user.cubby.hash".to_owned(), "user.cubby.status".to_owned()]);
        }
        names.extend(self.block_on(self.remote.xattr_names(entry.id))?);
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
        let mode = match (create, replace) {
            (true, _) => "create",
            (false, true) => "replace",
            (false, false) => "any",
        };
        match self.block_on(self.remote.set_xattr(id, name, value, mode)) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NotFound) && replace => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove_xattr(&self, ino: u64, name: &str) -> FsResult<()> {
        let id = self.id_of(ino);
        if name.starts_with("user.cubby.") {
            return Err(FsError::NotPermitted);
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        match self.block_on(self.remote.remove_xattr(id, name)) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }
}
