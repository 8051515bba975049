//! The namespace journal: creates, mkdirs, attribute changes, renames and deletes,
//! applied to the local view at once and kept in order until the server has them.
//!
//! Operations are lines appended to one log file, `journal/log`: `op <seq> key=<key>
//! <json>` when journaled and `done <seq>` once the server applied it. The key is random,
//! one per operation, and goes with every request its replay makes (an idempotency key):
//! when the server applied an operation but the `done` line never made it to disk (a
//! crash, an answer lost), the replay after it gets the first answers again instead of
//! applying the change a second time over what other clients did since. Lines written
//! before keys existed (`op <seq> <json>`) replay without one. Appends are plain writes, so
//! they survive the daemon being killed; [`Journal::sync`] makes them survive the
//! machine too (`fsync` and `fsyncdir` call it when the server cannot take the changes).
//! The log is truncated whenever nothing is left in it, and rewritten without its `done`
//! lines when a daemon starts. (Version 1 kept one fsynced `<seq>.op` file per
//! operation; a daemon that finds such files moves them into the log.)
//!
//! Entries created here get a local id (at or above [`LOCAL_ID_BASE`]); when the server
//! creates them, the pair (local id, server id) is appended to `journal/ids` so later
//! operations, staged content and a restarted daemon all find the server's id.
//!
//! Content is not journaled here: a written file waits as a staging file with a
//! pending record (see [`super::staging`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cubby_proto::api::{AttrsRequest, Entry};
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
    /// An entry removed (to the server's trash) from `parent` (absent in version 1).
    Delete {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<u64>,
    },
    /// Attributes set on an entry whose content is not waiting (`entry` is how it looks
    /// with them).
    SetAttrs { entry: Entry, attrs: AttrsRequest },
}

/// The ordered list of operations not yet applied by the server.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    state: Mutex<JournalState>,
}

#[derive(Debug)]
struct JournalState {
    next_seq: u64,
    ops: BTreeMap<u64, Op>,
    /// Each operation's idempotency key (absent for lines of an older version).
    keys: HashMap<u64, String>,
    /// Local id -> server id, for entries the server has created.
    resolved: HashMap<u64, u64>,
    log: File,
    ids: Option<File>,
    /// Lines appended since the last [`Journal::sync`].
    unsynced: bool,
}

/// One line of the log.
enum Line {
    Op(u64, Option<String>, Box<Op>),
    Done(u64),
}

fn parse_line(line: &str) -> Option<Line> {
    let (kind, rest) = line.split_once(' ')?;
    match kind {
        "op" => {
            let (seq, rest) = rest.split_once(' ')?;
            let (key, json) = match rest.strip_prefix("key=") {
                Some(keyed) => {
                    let (key, json) = keyed.split_once(' ')?;
                    (Some(key.to_owned()), json)
                }
                None => (None, rest),
            };
            Some(Line::Op(
                seq.parse().ok()?,
                key,
                serde_json::from_str(json).ok()?,
            ))
        }
        "done" => Some(Line::Done(rest.trim().parse().ok()?)),
        _ => None,
    }
}

/// A new operation's idempotency key.
fn new_key() -> std::io::Result<String> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    Ok(hex::encode(random))
}

fn op_line(seq: u64, key: Option<&str>, op: &Op) -> std::io::Result<Vec<u8>> {
    let mut line = match key {
        Some(key) => format!("op {seq} key={key} "),
        None => format!("op {seq} "),
    }
    .into_bytes();
    serde_json::to_writer(&mut line, op)?;
    line.push(b'\n');
    Ok(line)
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a previous run left.
struct Loaded {
    ops: BTreeMap<u64, Op>,
    keys: HashMap<u64, String>,
    /// Version 1's per-operation files, to remove once the log holds them.
    old_files: Vec<PathBuf>,
}

/// Operations left by a previous run: the log, then version 1's per-operation files.
fn load_ops(dir: &Path) -> std::io::Result<Loaded> {
    let mut ops = BTreeMap::new();
    let mut keys = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("log")) {
        for line in text.lines() {
            match parse_line(line) {
                Some(Line::Op(seq, key, op)) => {
                    ops.insert(seq, *op);
                    if let Some(key) = key {
                        keys.insert(seq, key);
                    }
                }
                Some(Line::Done(seq)) => {
                    ops.remove(&seq);
                    keys.remove(&seq);
                }
                // A line cut short by a crash: it was never acknowledged as durable.
                None => tracing::error!(line, "unreadable journal line skipped"),
            }
        }
    }
    let mut old_files = Vec::new();
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
                        ops.entry(seq).or_insert(op);
                    }
                    Err(error) => {
                        tracing::error!(op = %path.display(), %error, "unreadable journal entry")
                    }
                }
                old_files.push(path);
            }
            (Some("tmp"), _) => old_files.push(path),
            _ => {}
        }
    }
    Ok(Loaded {
        ops,
        keys,
        old_files,
    })
}

impl Journal {
    /// Opens the journal in `dir` (created if needed), loading what a previous run left.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let Loaded {
            ops,
            keys,
            old_files,
        } = load_ops(dir)?;
        // What is left, rewritten alone (and durably: it may be all a crash left).
        let mut compact = Vec::new();
        for (seq, op) in &ops {
            compact.extend(op_line(*seq, keys.get(seq).map(String::as_str), op)?);
        }
        let tmp = dir.join("log.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&compact)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join("log"))?;
        sync_dir(dir)?;
        for old in old_files {
            let _ = std::fs::remove_file(old);
        }
        let log = OpenOptions::new().append(true).open(dir.join("log"))?;
        let mut resolved = HashMap::new();
        if let Ok(ids) = std::fs::read_to_string(dir.join("ids")) {
            for line in ids.lines() {
                let mut parts = line.split_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(local)), Some(Ok(server))) = (parts.next(), parts.next()) {
                    resolved.insert(local, server);
                }
            }
        }
        let next_seq = ops.keys().next_back().map_or(1, |last| last + 1);
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(JournalState {
                next_seq,
                ops,
                keys,
                resolved,
                log,
                ids: None,
                unsynced: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an operation. It survives the daemon being killed when this returns,
    /// and the machine crashing after the next [`Journal::sync`].
    pub fn push(&self, op: &Op) -> std::io::Result<u64> {
        let key = new_key()?;
        let mut state = self.lock();
        let seq = state.next_seq;
        state.log.write_all(&op_line(seq, Some(&key), op)?)?;
        state.unsynced = true;
        state.next_seq += 1;
        state.ops.insert(seq, op.clone());
        state.keys.insert(seq, key);
        Ok(seq)
    }

    /// Makes every operation and id journaled so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        if !state.unsynced {
            return Ok(());
        }
        state.log.sync_data()?;
        if let Some(ids) = &state.ids {
            ids.sync_data()?;
        }
        sync_dir(&self.dir)?;
        state.unsynced = false;
        Ok(())
    }

    /// The oldest operation not yet applied, with its idempotency key.
    pub fn first(&self) -> Option<(u64, Option<String>, Op)> {
        let state = self.lock();
        let (seq, op) = state.ops.iter().next()?;
        Some((*seq, state.keys.get(seq).cloned(), op.clone()))
    }

    /// The oldest `count` operations not yet applied, with their idempotency keys.
    pub fn leading(&self, count: usize) -> Vec<(u64, Option<String>, Op)> {
        let state = self.lock();
        state
            .ops
            .iter()
            .take(count)
            .map(|(seq, op)| (*seq, state.keys.get(seq).cloned(), op.clone()))
            .collect()
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
        if state.ops.remove(&seq).is_none() {
            return;
        }
        state.keys.remove(&seq);
        let written = if state.ops.is_empty() {
            // Nothing left: the log starts over (sequence numbers carry on).
            state.log.set_len(0)
        } else {
            state.log.write_all(format!("done {seq}\n").as_bytes())
        };
        if let Err(error) = written {
            tracing::error!(%error, "journal: could not record an applied operation");
        }
    }

    /// Records that the server created local entry `local` as `server`.
    pub fn resolve(&self, local: u64, server: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.ids.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("ids"))?;
            state.ids = Some(file);
        }
        if let Some(ids) = state.ids.as_mut() {
            writeln!(ids, "{local} {server}")?;
        }
        state.unsynced = true;
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
            Op::Delete { id, parent } => vec![*id, parent.unwrap_or(0)],
            Op::SetAttrs { entry, .. } => vec![entry.id, entry.parent_id.unwrap_or(0)],
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
            state.ids = None;
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
        journal
            .push(&Op::Delete {
                id: 42,
                parent: None,
            })
            .unwrap();
        journal.resolve(a, 7).unwrap();
        let key_before = journal.first().unwrap().1.unwrap();
        drop(journal);

        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.len(), 2);
        assert_eq!(journal.canonical(a), 7);
        let (first, key, op) = journal.first().unwrap();
        assert!(matches!(op, Op::Mkdir { entry } if entry.name == "a"));
        // The key stays with its operation across restarts, one of its own each.
        assert_eq!(key.as_deref(), Some(key_before.as_str()));
        journal.done(first);
        let (second, second_key, op) = journal.first().unwrap();
        assert!(second_key.is_some() && second_key != key);
        assert!(second > first);
        assert!(matches!(op, Op::Delete { id: 42, .. }));
        journal
            .push(&Op::Delete {
                id: 43,
                parent: None,
            })
            .unwrap();
        drop(journal);

        let journal = Journal::open(dir.path()).unwrap();
        let ops = journal.all();
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[1], Op::Delete { id: 43, .. }));
        // Resolutions stay while anything is journaled, and can go after.
        journal.forget_resolutions();
        assert_eq!(journal.canonical(a), 7);
        while let Some((seq, _, _)) = journal.first() {
            journal.done(seq);
        }
        journal.forget_resolutions();
        assert_eq!(journal.canonical(a), a);
        assert!(!dir.path().join("ids").exists());
        // Emptied, the log starts over.
        assert_eq!(std::fs::metadata(dir.path().join("log")).unwrap().len(), 0);
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_version_1_files_are_moved_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let first = journal
            .push(&Op::Delete {
                id: 7,
                parent: None,
            })
            .unwrap();
        journal
            .push(&Op::Delete {
                id: 8,
                parent: None,
            })
            .unwrap();
        journal.done(first);
        drop(journal);
        // A crash in the middle of an append, and an operation from version 1.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("log"))
            .unwrap();
        log.write_all(b"op 3 {\"op\":\"del").unwrap();
        let old = serde_json::to_vec(&Op::Delete {
            id: 9,
            parent: None,
        })
        .unwrap();
        std::fs::write(dir.path().join(format!("{:020}.op", 10)), old).unwrap();

        let journal = Journal::open(dir.path()).unwrap();
        let ids: Vec<u64> = journal
            .all()
            .iter()
            .map(|op| match op {
                Op::Delete { id, .. } => *id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, [8, 9]);
        assert!(!dir.path().join(format!("{:020}.op", 10)).exists());
        let next = journal
            .push(&Op::Delete {
                id: 11,
                parent: None,
            })
            .unwrap();
        assert!(next > 10, "sequence numbers carry on: {next}");
        drop(journal);
        assert_eq!(Journal::open(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn a_line_of_the_version_before_keys_replays_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let op = serde_json::to_string(&Op::Delete {
            id: 5,
            parent: None,
        })
        .unwrap();
        std::fs::write(dir.path().join("log"), format!("op 4 {op}\n")).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let (seq, key, op) = journal.first().unwrap();
        assert_eq!((seq, key), (4, None));
        assert!(matches!(op, Op::Delete { id: 5, .. }));
        drop(journal);
        // Rewritten at the start, it stays without a key.
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.first().unwrap().1, None);
    }
}
