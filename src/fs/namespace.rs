//! Namespace and attribute changes: create, mkdir, symlink, mknod, unlink, rmdir,
//! rename (a save by rename over a file becomes its next version), and setattr,
//! checked against the local view and journaled (see [`super::journal`]).

use super::*;

impl CubbyFs {
    // ---- namespace changes ----
    //
    // Creates, mkdirs, renames, deletes and attribute changes are checked against the
    // local view, journaled, shown at once, and replayed in order by the sync worker
    // (online, within milliseconds). `fsync` and `fsyncdir` wait for the replay (or,
    // offline, make the journal durable locally). See docs/decisions.md.

    /// Operations the journal does not carry (special files, extended attributes) wait
    /// until it is replayed, so the server knows every entry they name and they land in
    /// order; offline they fail (EIO).
    pub(super) fn settle_journal(&self) -> FsResult<()> {
        if self.journal.is_empty() {
            return Ok(());
        }
        if !self.sync.is_online() {
            return Err(FsError::Offline);
        }
        self.replay_journal().map(|_| ())
    }

    /// Journals `op` and lays it over the local view (atomically for the sync worker).
    pub(super) fn journal_op(&self, op: Op) -> FsResult<()> {
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
    pub(super) fn touch_dir(&self, dir: Option<u64>, time: i64) {
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
    pub(super) fn local_entry(
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
        if self.has_child(parent, name)? {
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
    pub(super) fn label_created(&self, entry: Entry, owner: Owner) -> FsResult<Entry> {
        if self.owner_labels(owner) == (None, None) {
            return Ok(entry);
        }
        self.label(entry.id, None, owner)
    }

    /// Sets mode and owner labels (as needed) and returns the entry as stored.
    pub(super) fn label(&self, id: u64, mode: Option<u32>, owner: Owner) -> FsResult<Entry> {
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
    pub(super) fn owner_labels(&self, owner: Owner) -> (Option<u32>, Option<u32>) {
        (
            (owner.uid != self.config.uid).then_some(owner.uid),
            (owner.gid != self.config.gid).then_some(owner.gid),
        )
    }

    /// Removes an entry (to the server's trash).
    pub(super) fn remove(&self, entry: &Entry) -> FsResult<()> {
        if entry.kind == EntryKind::Dir && !self.is_empty_dir(entry.id)? {
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
    pub(super) fn drop_pending_content(&self, id: u64) {
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
                (EntryKind::Dir, EntryKind::Dir) if !self.is_empty_dir(target.id)? => {
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
    pub(super) fn save_over(&self, source: u64, target: u64) -> FsResult<()> {
        // The target's own waiting content came first: it becomes a version of its own.
        // Content commits are not the rename's changes: they carry no key of its.
        if let Some(staged) = self.staged_copy(target) {
            replaying_with(None, || {
                self.commit_staged(target, &staged, CommitPoint::Now)
            })?;
        }
        if let Some(staged) = self.staged_copy(source) {
            replaying_with(None, || {
                self.commit_staged(source, &staged, CommitPoint::Now)
            })?;
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
        self.staged_moves_over(source.id, target.id, done.version)?;
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

    /// After a save over `target`, a writer still open on `source` writes the file the
    /// name holds now (rustc renames its dep graph before its last writes, then closes
    /// it): the source's staged copy becomes the target's, based on the version the
    /// save made, so what it writes next is that file's next version, not a conflicted
    /// copy of a file gone. A staged copy nobody holds any more is dropped.
    fn staged_moves_over(&self, source: u64, target: u64, version: u64) -> FsResult<()> {
        let mut map = lock(&self.staged);
        let Some(staged) = map.remove(&source) else {
            return Ok(());
        };
        if Arc::strong_count(&staged) == 1 && !staged.lock().pending() {
            staged.discard(&self.spares);
            return Ok(());
        }
        {
            let mut state = staged.lock();
            state.target_id = target;
            state.base_version = version;
            if state.pending() {
                staged.record_pending(&state, false)?;
            }
        }
        // The target's own copy was committed before the save; handles still open on
        // it keep it, based on the version before, as for any stale writer.
        if let Some(replaced) = map.insert(target, staged)
            && Arc::strong_count(&replaced) == 1
            && !replaced.lock().pending()
        {
            replaced.discard(&self.spares);
        }
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
    pub(super) fn open_for_writing(&self, staged: &Arc<Staged>) -> bool {
        lock(&self.handles).values().any(|handle| {
            matches!(&**handle, Handle::Writer { staged: theirs, .. } if Arc::ptr_eq(theirs, staged))
        })
    }

    pub(super) fn truncate(&self, entry: &Entry, size: u64) -> FsResult<()> {
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
}
