//! Open files: handles, staging a file for writing, reads (through the chunk cache,
//! in parallel, with read-ahead), writes into the staging file, and the close, fsync
//! and release that hand the content to write-back (see [`super::writeback`]).

use super::*;

/// Room below which every growing write asks the filesystem for its free space.
const ROOM_MARGIN: u64 = 64 << 20;

impl CubbyFs {
    /// A new, empty staging file for `entry` at its version.
    fn new_staged(&self, entry: &Entry) -> FsResult<Arc<Staged>> {
        Ok(Arc::new(Staged::create(
            &self.config.staging_dir,
            entry.id,
            entry.version,
            &self.spares,
            &self.pending_log,
        )?))
    }

    // ---- open files ----

    pub(super) fn new_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// The staging copy of `entry`, created (and filled, unless `empty`) when absent.
    pub(super) fn stage(&self, entry: &Entry, empty: bool) -> FsResult<Arc<Staged>> {
        if let Some(staged) = self.staged_copy(entry.id) {
            return Ok(staged);
        }
        let staged = self.new_staged(entry)?;
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
        let staged = self.new_staged(&entry)?;
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
    pub(super) fn manifest(&self, id: u64, version: u64) -> FsResult<Arc<FileManifest>> {
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
    pub(super) fn read_chunks(
        &self,
        manifest: &FileManifest,
        offset: u64,
        size: u64,
    ) -> FsResult<Vec<u8>> {
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

    pub(super) fn chunk(&self, hash: ContentHash, url: &str) -> FsResult<Bytes> {
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
    /// less free than the configured reserve. The filesystem is asked again only once
    /// writes since the last answer may have taken all but [`ROOM_MARGIN`] of the room
    /// it found, so an appending writer costs no `statvfs` per write.
    pub(super) fn room_to_grow(&self, growth: u64) -> FsResult<()> {
        let reserve = self.config.staging_reserve_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let left = self.staging_room.load(Ordering::Relaxed);
        if left > growth.saturating_add(ROOM_MARGIN) {
            self.staging_room.fetch_sub(growth, Ordering::Relaxed);
            return Ok(());
        }
        let stats = nix::sys::statvfs::statvfs(&self.config.staging_dir)
            .map_err(|errno| FsError::from(std::io::Error::from(errno)))?;
        let free = stats.blocks_available() * stats.fragment_size();
        // Asked again after a quarter of the room is used, others' use of the disk
        // included in the next answer.
        let room = free.saturating_sub(reserve);
        self.staging_room
            .store((room / 4).saturating_sub(growth), Ordering::Relaxed);
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

    pub(super) fn fsync_namespace(&self) -> FsResult<()> {
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
            self.unstage_if_idle(self.staged_home(id));
        }
        result
    }

    /// The hash of `entry`'s content when it is one chunk (so the chunk's hash is the
    /// content's), for an entry as the server has it, not as journaled changes left it.
    pub(super) fn single_chunk(&self, entry: &Entry) -> Option<ContentHash> {
        let one_chunk = entry.size > 0 && entry.size <= u64::from(chunking::MIN_CHUNK);
        entry
            .hash
            .filter(|_| one_chunk && matches!(self.overlaid(entry.id).1, Overlaid::Untouched))
    }
}
