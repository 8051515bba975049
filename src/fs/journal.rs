//! The namespace journal: creates, mkdirs, renames and deletes made while the server
//! could not take them, kept durable and in order until they are replayed.
//!
//! Each operation is one file `journal/<seq>.op` (JSON; written to a temp file,
//! fsynced, renamed, directory fsynced) and is removed once the server has applied it.
//! Entries created offline get a local id (at or above [`LOCAL_ID_BASE`]); when the
//! server creates them, the pair (local id, server id) is appended to `journal/ids`
//! (fsynced) so later operations, staged content and a restarted daemon all find the
//! server's id. A mount that starts loads what is left and replays it in order.
//!
//! Content is not journaled here: a written file waits as a staging file with a
//! pending record (see [`super::staging`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cubby_proto::api::Entry;
use serde::{Deserialize, Serialize};

/// Local ids start here; the server's ids never come near it.
pub const LOCAL_ID_BASE: u64 = 1 << 56;

/// Whether `id` was given out by this machine and may not be known to the server.
pub fn is_local(id: u64) -> bool {
    id >= LOCAL_ID_BASE
}

/// A namespace change waiting for the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A new empty file (its content follows as a staged commit).
    Create {
        entry: Entry,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// A new directory.
    Mkdir { entry: Entry },
    /// `entry` moved to its (new) `parent_id` and `name`; `replaced` is the entry that
    /// name held, which the move replaces.
    Rename { entry: Entry, replaced: Option<u64> },
    /// An entry removed (to the server's trash).
    Delete { id: u64 },
}

/// The ordered, durable list of operations not yet applied by the server.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    state: Mutex<JournalState>,
}

#[derive(Debug, Default)]
struct JournalState {
    next_seq: u64,
    ops: BTreeMap<u64, Op>,
    /// Local id -> server id, for entries the server has created.
    resolved: HashMap<u64, u64>,
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Journal {
    /// Opens the journal in `dir` (created if needed), loading what a previous run left.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut state = JournalState::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let seq = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok());
            match (path.extension().and_then(|e| e.to_str()), seq) {
                (Some("op"), Some(seq)) => {
                    match serde_json::from_slice::<Op>(&std::fs::read(&path)?) {
                        Ok(op) => {
                            state.ops.insert(seq, op);
                        }
                        Err(error) => {
                            tracing::error!(op = %path.display(), %error, "unreadable journal entry")
                        }
                    }
                }
                (Some("tmp"), _) => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        if let Ok(ids) = std::fs::read_to_string(dir.join("ids")) {
            for line in ids.lines() {
                let mut parts = line.split_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(local)), Some(Ok(server))) = (parts.next(), parts.next()) {
                    state.resolved.insert(local, server);
                }
            }
        }
        state.next_seq = state.ops.keys().next_back().map_or(1, |last| last + 1);
        let journal = Self {
            dir: dir.to_owned(),
            state: Mutex::new(state),
        };
        Ok(journal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an operation; it is durable when this returns.
    pub fn push(&self, op: &Op) -> std::io::Result<u64> {
        let mut state = self.lock();
        let seq = state.next_seq;
        write_durably(
            &self.dir.join(format!("{seq:020}.op")),
            &serde_json::to_vec(op)?,
        )?;
        state.next_seq += 1;
        state.ops.insert(seq, op.clone());
        Ok(seq)
    }

    /// The oldest operation not yet applied.
    pub fn first(&self) -> Option<(u64, Op)> {
        self.lock()
            .ops
            .iter()
            .next()
            .map(|(seq, op)| (*seq, op.clone()))
    }

    /// Every operation not yet applied, oldest first.
    pub fn all(&self) -> Vec<Op> {
        self.lock().ops.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().ops.is_empty()
    }

    /// The server applied operation `seq`.
    pub fn done(&self, seq: u64) {
        let mut state = self.lock();
        state.ops.remove(&seq);
        let _ = std::fs::remove_file(self.dir.join(format!("{seq:020}.op")));
    }

    /// Records, durably, that the server created local entry `local` as `server`.
    pub fn resolve(&self, local: u64, server: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ids"))?;
        writeln!(file, "{local} {server}")?;
        file.sync_all()?;
        state.resolved.insert(local, server);
        Ok(())
    }

    /// The server's id for `id` (itself unless it is a resolved local id).
    pub fn canonical(&self, id: u64) -> u64 {
        if !is_local(id) {
            return id;
        }
        self.lock().resolved.get(&id).copied().unwrap_or(id)
    }

    /// The highest local id the journal names (in an operation or a resolution).
    pub fn highest_local_id(&self) -> u64 {
        let state = self.lock();
        let in_ops = state.ops.values().flat_map(|op| match op {
            Op::Create { entry, .. } | Op::Mkdir { entry } | Op::Rename { entry, .. } => {
                vec![entry.id, entry.parent_id.unwrap_or(0)]
            }
            Op::Delete { id } => vec![*id],
        });
        in_ops
            .chain(state.resolved.keys().copied())
            .filter(|id| is_local(*id))
            .max()
            .unwrap_or(0)
    }

    /// Every (local id, server id) pair known.
    pub fn resolutions(&self) -> Vec<(u64, u64)> {
        self.lock()
            .resolved
            .iter()
            .map(|(local, server)| (*local, *server))
            .collect()
    }

    /// Drops every (local id, server id) pair: for a mount that starts with nothing
    /// journaled and no staged content naming a local id (the kernel knows no local
    /// inode yet), so the id file does not grow forever.
    pub fn forget_resolutions(&self) {
        let mut state = self.lock();
        if state.ops.is_empty() {
            state.resolved.clear();
            let _ = std::fs::remove_file(self.dir.join("ids"));
        }
    }
}

/// An entry for unit tests of the journal and the overlay.
#[cfg(test)]
pub(super) fn test_entry(
    id: u64,
    parent: u64,
    name: &str,
    kind: cubby_proto::api::EntryKind,
) -> Entry {
    Entry {
        id,
        parent_id: Some(parent),
        name: name.into(),
        kind,
        mode: 0o755,
        size: 0,
        version: 0,
        mtime_ns: 0,
        hash: None,
        target: None,
        uid: None,
        gid: None,
        rdev: 0,
        atime_ns: 0,
        ctime_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cubby_proto::api::EntryKind;

    fn entry(id: u64, parent: u64, name: &str) -> Entry {
        test_entry(id, parent, name, EntryKind::Dir)
    }

    #[test]
    fn operations_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let a = LOCAL_ID_BASE + 1;
        journal
            .push(&Op::Mkdir {
                entry: entry(a, 1, "a"),
            })
            .unwrap();
        journal.push(&Op::Delete { id: 42 }).unwrap();
        journal.resolve(a, 7).unwrap();
        drop(journal);

        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.len(), 2);
        assert_eq!(journal.canonical(a), 7);
        let (first, op) = journal.first().unwrap();
        assert!(matches!(op, Op::Mkdir { entry } if entry.name == "a"));
        journal.done(first);
        let (second, op) = journal.first().unwrap();
        assert!(second > first);
        assert!(matches!(op, Op::Delete { id: 42 }));
        journal.push(&Op::Delete { id: 43 }).unwrap();
        drop(journal);

        let journal = Journal::open(dir.path()).unwrap();
        let ops = journal.all();
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[1], Op::Delete { id: 43 }));
        // Resolutions stay while anything is journaled, and can go after.
        journal.forget_resolutions();
        assert_eq!(journal.canonical(a), 7);
        while let Some((seq, _)) = journal.first() {
            journal.done(seq);
        }
        journal.forget_resolutions();
        assert_eq!(journal.canonical(a), a);
        assert!(!dir.path().join("ids").exists());
    }
}
