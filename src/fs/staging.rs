//! The staging area: written files wait here, durable on local disk, until the server
//! has committed them. It is separate from the chunk cache, which is disposable; a
//! staging file is removed only after its content is committed.
//!
//! One staging file per file being written (shared by every handle open on it), named
//! `<entry id>-<random>`. Before a commit is attempted, the staged file is fsynced and a
//! record `<name>.pending` (JSON: the target entry and base version, written to a temp
//! file, fsynced, renamed) says it must reach the server; the record goes once the
//! server has committed. When a mount starts, every pending record is committed again
//! (a stale base becomes a conflicted copy) and staging files without a record, clean
//! copies of a daemon that stopped, are removed. Lock order: the map of staged files,
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
use std::sync::{Mutex, RwLock};

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

/// What a record holds once nothing waits. Anything else that does not parse (an
/// empty file from an interrupted first write, say) keeps its data.
const CLEARED: &[u8] = b"cleared\n";

fn record_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".pending");
    PathBuf::from(name)
}

/// The pending records in `dir`; clean staging files (no record) are removed.
pub fn recover(dir: &Path) -> std::io::Result<Vec<Pending>> {
    let mut pending = Vec::new();
    let mut data_files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pending") => {
                let data = path.with_extension("");
                let bytes = std::fs::read(&path).ok();
                if bytes.as_deref() == Some(CLEARED) {
                    // Nothing waits (see `clear_pending`).
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                match bytes.and_then(|b| serde_json::from_slice(&b).ok()) {
                    Some(record) if data.exists() => pending.push(Pending { data, record }),
                    // Kept, with its data: nothing is removed that may not be sent.
                    _ => tracing::error!(
                        record = %path.display(),
                        "unreadable pending record; its staged data is kept for recovery by hand"
                    ),
                }
            }
            Some("tmp") => {
                let _ = std::fs::remove_file(&path);
            }
            _ => data_files.push(path),
        }
    }
    for data in data_files {
        if !record_path(&data).exists() {
            let _ = std::fs::remove_file(&data);
        }
    }
    Ok(pending)
}

/// Emptied staging files (with their emptied records) kept for reuse: renaming one
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
        let record = record_path(path);
        if record.exists() {
            let _ = std::fs::rename(&record, record_path(&spare));
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
    pub file: File,
    pub state: Mutex<StagedState>,
    /// Held by one commit at a time, for as long as it takes.
    pub committing: Mutex<()>,
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
    ) -> std::io::Result<Self> {
        let path = random_name(dir, id)?;
        let reused = spares.take().and_then(|spare| {
            std::fs::rename(&spare, &path).ok()?;
            let record = record_path(&spare);
            if record.exists() {
                let _ = std::fs::rename(&record, record_path(&path));
            }
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
            path,
            file,
            committing: Mutex::default(),
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
    pub fn adopt(pending: Pending) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pending.data)?;
        Ok(Self {
            path: pending.data,
            file,
            committing: Mutex::default(),
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
    /// `durable`, the record and the content survive a crash of the machine; without,
    /// they survive the daemon (a close, which makes no durability promise).
    pub fn record_pending(&self, state: &StagedState, durable: bool) -> std::io::Result<()> {
        let record = PendingRecord {
            target_id: state.target_id,
            base_version: state.base_version,
            attrs: state.attrs.clone(),
        };
        let bytes = serde_json::to_vec(&record)?;
        let path = record_path(&self.path);
        if !durable {
            // In place: a new file (inode) per update makes ext4's inode allocator
            // crawl through a busy staging directory. A record torn by a crash is kept
            // with its data, never taken for an absent one (see `recover`).
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            file.write_all_at(&bytes, 0)?;
            file.set_len(bytes.len() as u64)?;
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The server has the content: the record says so (see [`CLEARED`]), and the
    /// file stays for the next record.
    pub fn clear_pending(&self) {
        if let Ok(record) = std::fs::OpenOptions::new()
            .write(true)
            .open(record_path(&self.path))
        {
            let _ = record
                .write_all_at(CLEARED, 0)
                .and_then(|()| record.set_len(CLEARED.len() as u64));
        }
    }

    /// Removes the staging file (after its content is committed), keeping it as a
    /// spare when there is room.
    pub fn discard(&self, spares: &Spares) {
        self.clear_pending();
        if self.file.set_len(0).is_ok() && spares.keep(&self.path) {
            return;
        }
        let _ = std::fs::remove_file(record_path(&self.path));
        let _ = std::fs::remove_file(&self.path);
    }
}
