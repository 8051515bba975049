//! The local view: entries, listings and lookups, as the server has them with what
//! this mount changed laid over (the overlay of journaled changes, staged content and
//! its attributes), answered from the caches while they are fresh, and offline from
//! what was last seen.

use super::listing::Listing;
use super::*;

impl CubbyFs {
    /// The kind of entry `id` (which never changes), from any cache before the server:
    /// creating file after file in a directory asks nothing about the directory.
    pub(super) fn kind_of(&self, id: u64) -> FsResult<EntryKind> {
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

    pub(super) fn entry(&self, id: u64) -> FsResult<Entry> {
        let (id, overlaid) = self.overlaid(id);
        if let Overlaid::Untouched = overlaid
            && let Some(entry) = self.entries.get(&id)
        {
            return Ok(self.with_pending_times(entry));
        }
        self.fetch_entry(id)
    }

    /// Reads directory `dir`'s listing: `read` is given the server's listing (offline,
    /// as last seen) with the overlay of journaled changes to lay over it. A cached
    /// listing is read under the overlay's lock, which the replay of a change also holds
    /// while it edits listings and retires the change, so the two always agree.
    fn in_listing<R>(
        &self,
        dir: u64,
        read: impl FnOnce(&Overlay, u64, &Listing) -> R,
    ) -> FsResult<R> {
        let dir = {
            // Resolved under the overlay's lock (see `overlaid`): a directory created a
            // moment ago never lists as empty.
            let overlay = lock(&self.overlay);
            let dir = self.journal.canonical(dir);
            if is_local(dir) {
                return Ok(read(&overlay, dir, &Listing::default()));
            }
            if let Some(listing) = self.listings.get(&dir) {
                return Ok(read(&overlay, dir, &listing));
            }
            if !self.sync.is_online() {
                let known = self.known_listings.get(&dir).ok_or(FsError::Offline)?;
                return Ok(read(&overlay, dir, &known));
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
            Ok(children) => children,
            Err(FsError::Offline) => {
                let known = self.known_listings.get(&dir).ok_or(FsError::Offline)?;
                return Ok(read(&overlay, dir, &known));
            }
            Err(error) => return Err(error),
        };
        for child in &children {
            self.remember(child);
        }
        let listing = Listing::from_entries(children);
        let _no_edit = lock(&self.listing_edits);
        self.listings.insert(dir, listing.clone());
        self.known_listings.insert(dir, listing.clone());
        self.known_changed();
        Ok(read(&overlay, dir, &listing))
    }

    /// The children of a directory: the server's listing (offline, as last seen) with
    /// journaled changes applied.
    pub(super) fn children(&self, dir: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.in_listing(dir, |overlay, dir, server| {
            Arc::new(if overlay.is_empty() {
                server.to_vec()
            } else {
                overlay.children(dir, server)
            })
        })
    }

    /// Child `name` of directory `dir` as [`children`](Self::children) lists it.
    fn listed_child(&self, dir: u64, name: &str) -> FsResult<Option<Entry>> {
        self.in_listing(dir, |overlay, dir, server| {
            if overlay.is_empty() {
                server.get(name).cloned()
            } else {
                overlay.child(dir, server, name)
            }
        })
    }

    /// Whether directory `dir` has a child named `name`.
    pub(super) fn has_child(&self, dir: u64, name: &str) -> FsResult<bool> {
        Ok(self.listed_child(dir, name)?.is_some())
    }

    /// Whether directory `dir` has no children.
    pub(super) fn is_empty_dir(&self, dir: u64) -> FsResult<bool> {
        self.in_listing(dir, |overlay, dir, server| {
            if overlay.is_empty() {
                server.is_empty()
            } else {
                !overlay.has_children(dir, server)
            }
        })
    }

    /// Fetches the listings of the subdirectories in `listing` not cached yet, on a few
    /// blocking threads of the runtime: a directory that is read, its subdirectories are
    /// read next by `ls -R`, `find`, `du` and file managers (a round trip each otherwise).
    pub(super) fn prefetch_listings(&self, listing: &[Entry]) {
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

    pub(super) fn child(&self, parent_ino: u64, name: &OsStr) -> FsResult<Entry> {
        let name = name_of(name)?;
        let parent = self.id_of(parent_ino);
        self.listed_child(parent, name)?
            .map(|e| self.freshest(&e))
            .ok_or(FsError::NotFound)
    }

    /// The entry with what local staging knows on top: size and times of writes, and
    /// attribute changes, not yet committed.
    pub(super) fn with_local_state(&self, mut entry: Entry) -> Entry {
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
        let committed = state.base_version;
        drop(state);
        if !dirty && entry.version < committed {
            // Its content was committed while `entry` was read (only its attributes
            // wait): the entry the commit left, not the version before it.
            if let Ok(current) = self.entry(entry.id) {
                entry = current;
            }
        }
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
    pub(super) fn deleted_but_open(&self, id: u64) -> Option<Entry> {
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
        // Listings carry attributes (readdirplus), which the kernel keeps: a file being
        // written here is listed with its local size and times.
        if children.iter().any(|e| self.staged_copy(e.id).is_some()) {
            children = Arc::new(
                children
                    .iter()
                    .map(|e| self.with_local_state(e.clone()))
                    .collect(),
            );
        }
        self.prefetch_listings(&children);
        Ok((dir, children))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let entry = self.entry(self.id_of(ino))?;
        entry.target.ok_or(FsError::Invalid)
    }
}
