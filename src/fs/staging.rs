//! The staging area: written files wait here, durable on local disk, until the server
//! has committed them. It is separate from the chunk cache, which is disposable; a
//! staging file is removed only after its content is committed.
//!
//! One staging file per file being written (shared by every handle open on it), named
//! `<entry id>-<random>`. Lock order: the map of staged files, then one file's state;
//! neither is held while waiting on the network except a file's own state during its
//! commit, which serialises commits of that file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

/// One file's staged content.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    pub file: File,
    pub state: Mutex<StagedState>,
}

impl Staged {
    /// A new, empty staging file for entry `id` at `base_version`.
    pub fn create(dir: &Path, id: u64, base_version: u64) -> std::io::Result<Self> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{id}-{suffix}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            state: Mutex::new(StagedState {
                target_id: id,
                base_version,
                dirty: false,
                modified_ns: None,
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
        self.file.write_all_at(data, offset)?;
        self.changed();
        Ok(())
    }

    pub fn truncate(&self, size: u64) -> std::io::Result<()> {
        self.file.set_len(size)?;
        self.changed();
        Ok(())
    }

    /// Marks the content changed now.
    pub fn changed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut state = self.lock();
        state.dirty = true;
        state.modified_ns = Some(now);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, StagedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the staging file (after its content is committed).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
