//! The staging area: written files wait here, durable on local disk, until the server
//! has committed them. It is separate from the chunk cache, which is disposable; a
//! staging file is removed only after its content is committed.
//!
//! One staging file per file being written (shared by every handle open on it), named
//! `<entry id>-<random>`. Before a commit is attempted, a record in the pending log
//! (see [`super::pending_log`]: the target entry and base version) says the file must
//! reach the server; the record is cleared once the server has committed. When a mount
//! starts, every file with a record is committed again (a stale base becomes a
//! conflicted copy) and staging files without one, clean copies of a daemon that
//! stopped, are removed. Lock order: the map of staged files,
//! then a file's commit lock, then its state; only the commit lock is held while
//! waiting on the network (it serialises commits of one file).
//!
//! A commit sends a state the file had at a close or an fsync, never a mix of two: each
//! write counts a generation inside a shared write gate, and a commit reads the file,
//! then checks (holding the gate alone for an instant, so no write is half done) that
//! no write came meanwhile. If one did, the read is thrown away, the bytes already sent
//! are kept as chunks, and the commit waits for the next close (or, for an fsync, reads
//! again, and in the end commits a copy taken under the gate). Writers never wait for
//! the network: only for the instant of that check, or a local copy.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::pending_log::{Loaded, PendingLog};

/// What a staged file is based on, and whether it has changes to commit.
#[derive(Debug)]
pub struct StagedState {
    /// The entry the next commit goes to (it moves to the conflicted copy after a
    /// conflict, so later writes never overwrite the winner).
    pub target_id: u64,
    /// The server version the content is based on.
    pub base_version: u64,
    /// Changes not yet committed.
    pub dirty: bool,
    /// When the content last changed locally (Unix nanoseconds), while not committed.
    pub modified_ns: Option<i64>,
    /// Attribute changes made while the content waited, applied after its commit.
    pub attrs: PendingAttrs,
    /// The file was deleted here while open: its handles still read and write this
    /// copy (as POSIX keeps an unlinked file's content for its open descriptors), and
    /// nothing of it is ever sent (a write-back after the delete, such as SQLite's
    /// `-shm` pages at close, would come back as a conflicted copy).
    pub unlinked: bool,
    /// The content's generation at the last close or fsync: the state a commit sends.
    pub closed_generation: u64,
}

/// Attribute changes (`chmod`, `chown`, `utimensat`) waiting for a staged file's
/// commit, so an extracting `tar` costs no round trip per file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
    /// When they were made (the change time they show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_ns: Option<i64>,
}

impl PendingAttrs {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.mtime_ns.is_none()
            && self.atime_ns.is_none()
    }
}

impl PendingAttrs {
    /// Drops the changes that `sent` carried to the server, keeping any made since.
    pub fn sent(&mut self, sent: &PendingAttrs) {
        fn clear<T: PartialEq>(field: &mut Option<T>, sent: &Option<T>) {
            if field == sent {
                *field = None;
            }
        }
        clear(&mut self.mode, &sent.mode);
        clear(&mut self.uid, &sent.uid);
        clear(&mut self.gid, &sent.gid);
        clear(&mut self.mtime_ns, &sent.mtime_ns);
        clear(&mut self.atime_ns, &sent.atime_ns);
        if self.is_empty() {
            self.changed_ns = None;
        }
    }
}

impl StagedState {
    /// Content or attributes wait to be sent.
    pub fn pending(&self) -> bool {
        !self.unlinked && (self.dirty || !self.attrs.is_empty())
    }
}

/// What a pending record holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingRecord {
    pub target_id: u64,
    pub base_version: u64,
    #[serde(default)]
    pub attrs: PendingAttrs,
}

/// A staged file a previous run could not commit.
#[derive(Debug)]
pub struct Pending {
    pub data: PathBuf,
    pub record: PendingRecord,
}

/// What a record file of an earlier release holds once nothing waits (see [`recover`]).
const CLEARED: &[u8] = b"cleared\n";

/// The staged files in `dir` that wait for the server, by the pending log's `loaded`
/// records; clean staging files (no record) are removed. Record files an earlier
/// release kept beside its staging files (`<name>.pending`) move into the log.
pub fn recover(dir: &Path, log: &PendingLog, loaded: Loaded) -> std::io::Result<Vec<Pending>> {
    let Loaded { mut records, torn } = loaded;
    let mut data_files = Vec::new();
    let mut unreadable = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pending") => {
                let data = path.with_extension("");
                let name = file_name(&data);
                let bytes = std::fs::read(&path).ok();
                if bytes.as_deref() == Some(CLEARED) {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                match bytes.and_then(|b| serde_json::from_slice::<PendingRecord>(&b).ok()) {
                    Some(record) if data.exists() => {
                        log.record(&name, &record, true)?;
                        let _ = std::fs::remove_file(&path);
                        records.insert(name, record);
                    }
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    // Kept, with its data: nothing is removed that may not be sent.
                    None => {
                        tracing::error!(
                            record = %path.display(),
                            "unreadable pending record; its staged data is kept for recovery by hand"
                        );
                        unreadable.insert(name);
                    }
                }
            }
            Some("tmp") => {
                let _ = std::fs::remove_file(&path);
            }
            _ => data_files.push(path),
        }
    }
    let mut pending = Vec::new();
    for data in data_files {
        let name = file_name(&data);
        match records.remove(&name) {
            Some(record) => pending.push(Pending { data, record }),
            None if torn || unreadable.contains(&name) => {}
            None => {
                let _ = std::fs::remove_file(&data);
            }
        }
    }
    // Records whose staging file is gone have nothing to send.
    for name in records.keys() {
        log.clear(name);
    }
    Ok(pending)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Emptied staging files kept for reuse: renaming one
/// into place costs ext4 far less than allocating an inode in a directory where
/// thousands were just freed (an untar otherwise spends most of its time there).
#[derive(Debug, Default)]
pub struct Spares {
    files: Mutex<Vec<PathBuf>>,
}

/// Most spare staging files kept.
const SPARES_MAX: usize = 4096;

impl Spares {
    fn take(&self) -> Option<PathBuf> {
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    }

    /// Keeps `path` (already emptied) under a spare name, if there is room.
    fn keep(&self, path: &Path) -> bool {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.len() >= SPARES_MAX {
            return false;
        }
        let Ok(spare) = random_name(path.parent().unwrap_or(Path::new(".")), "spare") else {
            return false;
        };
        if std::fs::rename(path, &spare).is_err() {
            return false;
        }
        files.push(spare);
        true
    }
}

fn random_name(dir: &Path, prefix: impl std::fmt::Display) -> std::io::Result<PathBuf> {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    Ok(dir.join(format!("{prefix}-{}", hex::encode(random))))
}

/// One file's staged content.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    /// The file's name in the staging directory: its key in the pending log.
    name: String,
    log: Arc<PendingLog>,
    pub file: File,
    pub state: Mutex<StagedState>,
    /// Held by one commit at a time, for as long as it takes (a batch of commits holds
    /// it through guards of their own, not through the staged copy).
    pub committing: Arc<parking_lot::Mutex<()>>,
    /// Writes hold it shared; a commit holds it alone for an instant (see the module
    /// docs).
    gate: RwLock<()>,
    /// Counts the writes and truncations of the content.
    generation: AtomicU64,
}

/// A staged file's content as it was at one generation, copied aside for a commit.
#[derive(Debug)]
pub struct Snapshot {
    pub path: PathBuf,
    pub generation: u64,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Staged {
    /// A new, empty staging file for entry `id` at `base_version` (a spare, renamed,
    /// when there is one).
    pub fn create(
        dir: &Path,
        id: u64,
        base_version: u64,
        spares: &Spares,
        log: &Arc<PendingLog>,
    ) -> std::io::Result<Self> {
        let path = random_name(dir, id)?;
        let reused = spares.take().and_then(|spare| {
            std::fs::rename(&spare, &path).ok()?;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .ok()
        });
        let file = match reused {
            Some(file) => file,
            None => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?,
        };
        Ok(Self {
            name: file_name(&path),
            log: Arc::clone(log),
            path,
            file,
            committing: Arc::default(),
            gate: RwLock::default(),
            generation: AtomicU64::new(0),
            state: Mutex::new(StagedState {
                target_id: id,
                base_version,
                dirty: false,
                modified_ns: None,
                attrs: PendingAttrs::default(),
                unlinked: false,
                closed_generation: 0,
            }),
        })
    }

    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn read_at(&self, offset: u64, size: usize) -> std::io::Result<Vec<u8>> {
        let len = self.len()?;
        if offset >= len {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; size.min((len - offset) as usize)];
        let mut filled = 0;
        while filled < out.len() {
            let n = self
                .file
                .read_at(&mut out[filled..], offset + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        out.truncate(filled);
        Ok(out)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let _writing = self.gate.read().unwrap_or_else(|p| p.into_inner());
        self.file.write_all_at(data, offset)?;
        self.changed();
        Ok(())
    }

    pub fn truncate(&self, size: u64) -> std::io::Result<()> {
        let _writing = self.gate.read().unwrap_or_else(|p| p.into_inner());
        self.file.set_len(size)?;
        self.changed();
        Ok(())
    }

    /// The content's generation now; writes under way may still move it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The content's generation with no write under way: if it equals what
    /// [`generation`](Self::generation) said before a read of the file, that read saw
    /// one state of it.
    pub fn settled_generation(&self) -> u64 {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.generation()
    }

    /// The current content is the one to send (a close or an fsync).
    pub fn mark_closed(&self, state: &mut StagedState) {
        state.closed_generation = self.generation();
    }

    /// A copy of the content as it is now, taken while no write goes on.
    pub fn snapshot(&self) -> std::io::Result<Snapshot> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut name = self.path.as_os_str().to_owned();
        name.push(".snapshot");
        let path = PathBuf::from(name);
        if let Err(error) = std::fs::copy(&self.path, &path) {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        Ok(Snapshot {
            path,
            generation: self.generation(),
        })
    }

    /// Marks the content changed now.
    pub fn changed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        state.dirty = true;
        state.modified_ns = Some(now);
        // A write after `utimensat` moves the modification time on.
        state.attrs.mtime_ns = None;
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, StagedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A staged file a previous run left pending: its content waits for upload.
    pub fn adopt(pending: Pending, log: &Arc<PendingLog>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pending.data)?;
        Ok(Self {
            name: file_name(&pending.data),
            log: Arc::clone(log),
            path: pending.data,
            file,
            committing: Arc::default(),
            gate: RwLock::default(),
            generation: AtomicU64::new(0),
            state: Mutex::new(StagedState {
                target_id: pending.record.target_id,
                base_version: pending.record.base_version,
                dirty: true,
                modified_ns: None,
                attrs: pending.record.attrs,
                unlinked: false,
                // What a crash left is the state to send.
                closed_generation: 0,
            }),
        })
    }

    /// Records that this content must reach the server (see the module docs). With
    /// `durable`, the record and the content's name survive a crash of the machine
    /// (the content itself is the caller's to sync); without, they survive the daemon
    /// (a close, which makes no durability promise).
    pub fn record_pending(&self, state: &StagedState, durable: bool) -> std::io::Result<()> {
        let record = PendingRecord {
            target_id: state.target_id,
            base_version: state.base_version,
            attrs: state.attrs.clone(),
        };
        self.log.record(&self.name, &record, durable)
    }

    /// The server has the content; the file stays for the next record.
    pub fn clear_pending(&self) {
        self.log.clear(&self.name);
    }

    /// Removes the staging file (after its content is committed), keeping it as a
    /// spare when there is room.
    pub fn discard(&self, spares: &Spares) {
        self.clear_pending();
        if self.file.set_len(0).is_ok() && spares.keep(&self.path) {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target_id: u64) -> PendingRecord {
        PendingRecord {
            target_id,
            base_version: 2,
            attrs: PendingAttrs::default(),
        }
    }

    #[test]
    fn recovery_keeps_recorded_files_and_removes_clean_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PendingLog::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("5-aa"), b"waits").unwrap();
        std::fs::write(dir.path().join("6-bb"), b"sent").unwrap();
        log.record("5-aa", &record(5), false).unwrap();
        log.record("7-cc", &record(7), false).unwrap();
        drop(log);
        let (log, loaded) = PendingLog::open(dir.path()).unwrap();
        let pending = recover(dir.path(), &log, loaded).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].data, dir.path().join("5-aa"));
        assert_eq!(pending[0].record.target_id, 5);
        assert!(!dir.path().join("6-bb").exists(), "a clean copy is removed");
        // A record whose file is gone has nothing to send: it is cleared.
        drop(log);
        let (_, loaded) = PendingLog::open(dir.path()).unwrap();
        assert_eq!(loaded.records.keys().collect::<Vec<_>>(), ["5-aa"]);
    }

    #[test]
    fn record_files_of_an_earlier_release_move_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("5-aa"), b"waits").unwrap();
        let json = serde_json::to_vec(&record(5)).unwrap();
        std::fs::write(dir.path().join("5-aa.pending"), json).unwrap();
        std::fs::write(dir.path().join("6-bb"), b"sent").unwrap();
        std::fs::write(dir.path().join("6-bb.pending"), CLEARED).unwrap();
        std::fs::write(dir.path().join("7-cc"), b"kept by hand").unwrap();
        std::fs::write(dir.path().join("7-cc.pending"), b"{torn").unwrap();
        let (log, loaded) = PendingLog::open(dir.path()).unwrap();
        let pending = recover(dir.path(), &log, loaded).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].record.target_id, 5);
        assert!(!dir.path().join("5-aa.pending").exists());
        assert!(!dir.path().join("6-bb").exists() && !dir.path().join("6-bb.pending").exists());
        // An unreadable record keeps its data.
        assert!(dir.path().join("7-cc").exists() && dir.path().join("7-cc.pending").exists());
        drop(log);
        let (_, loaded) = PendingLog::open(dir.path()).unwrap();
        assert_eq!(
            loaded.records["5-aa"].target_id, 5,
            "moved into the log, durably"
        );
    }

    #[test]
    fn a_torn_log_keeps_every_unrecorded_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pending")).unwrap();
        std::fs::write(dir.path().join("pending/log"), b"rec 5-aa {\"targ").unwrap();
        std::fs::write(dir.path().join("5-aa"), b"maybe waits").unwrap();
        let (log, loaded) = PendingLog::open(dir.path()).unwrap();
        assert!(recover(dir.path(), &log, loaded).unwrap().is_empty());
        assert!(dir.path().join("5-aa").exists());
    }
}
