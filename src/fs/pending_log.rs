//! The pending records of staged files, as lines of one append-only log,
//! `<staging>/pending/log`: `rec <staging file name> <json>` says that file's content
//! must reach the server (the JSON is a [`PendingRecord`]), `clr <name>` that it has.
//! The last line about a name holds.
//!
//! One log rather than a record file beside each staging file: a file per record cost
//! an inode allocation per close, which on a busy staging directory is most of what a
//! close costs (ext4 walks the inodes freed lately before it gives out a new one). An
//! append is one `write`, so it survives the daemon being killed; a durable record
//! (`fsync`, a failed commit) is also `fdatasync`ed, with the staging directory, so it
//! survives the machine. A line torn by a machine crash is one of a close that promised
//! nothing; the loader skips it, and then keeps every staging file without a record,
//! rather than guess.
//!
//! The log is emptied whenever no record is live, and rewritten with only the live
//! ones (to a temp file, fsynced, renamed) when it has grown far past them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::journal::sync_dir;
use super::staging::PendingRecord;

/// Lines past which the log is rewritten, when few of them are live.
const COMPACT_AFTER_LINES: usize = 4096;

/// The log of pending records.
#[derive(Debug)]
pub struct PendingLog {
    staging_dir: PathBuf,
    path: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    file: File,
    /// Each live record's line, by staging file name.
    live: HashMap<String, Vec<u8>>,
    /// Lines in the file.
    lines: usize,
}

/// What the log held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: HashMap<String, PendingRecord>,
    /// Some line could not be read (a crash tore it): staging files with no record are
    /// kept, since one of them may be its file.
    pub torn: bool,
}

fn record_line(name: &str, record: &PendingRecord) -> std::io::Result<Vec<u8>> {
    let mut line = format!("rec {name} ").into_bytes();
    serde_json::to_writer(&mut line, record)?;
    line.push(b'\n');
    Ok(line)
}

impl PendingLog {
    /// Opens (or starts) the log in `staging_dir`, with what it holds.
    pub fn open(staging_dir: &Path) -> std::io::Result<(Self, Loaded)> {
        let dir = staging_dir.join("pending");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("log");
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let mut loaded = Loaded::default();
        let mut live = HashMap::new();
        let mut lines = 0;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            let line = String::from_utf8_lossy(line);
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("clr"), Some(name), None) => {
                    loaded.records.remove(name);
                    live.remove(name);
                }
                (Some("rec"), Some(name), Some(json)) => {
                    match serde_json::from_str::<PendingRecord>(json) {
                        Ok(record) => {
                            live.insert(name.to_owned(), format!("{line}\n").into_bytes());
                            loaded.records.insert(name.to_owned(), record);
                        }
                        Err(_) => loaded.torn = true,
                    }
                }
                _ => loaded.torn = true,
            }
        }
        if loaded.torn {
            tracing::warn!(
                log = %path.display(),
                "a pending record could not be read; staged files without one are kept"
            );
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.sync_all()?;
        sync_dir(&dir)?;
        sync_dir(staging_dir)?;
        let log = Self {
            staging_dir: staging_dir.to_owned(),
            path,
            state: Mutex::new(LogState { file, live, lines }),
        };
        Ok((log, loaded))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that staging file `name` must reach the server as `record`. With
    /// `durable`, the record (and the staging file's name) survive a crash of the
    /// machine; without, they survive the daemon.
    pub fn record(&self, name: &str, record: &PendingRecord, durable: bool) -> std::io::Result<()> {
        let line = record_line(name, record)?;
        let mut state = self.lock();
        state.file.write_all(&line)?;
        state.lines += 1;
        state.live.insert(name.to_owned(), line);
        if durable {
            state.file.sync_data()?;
            drop(state);
            sync_dir(&self.staging_dir)?;
        } else {
            self.compact_if_due(&mut state);
        }
        Ok(())
    }

    /// Staging file `name` has nothing left to send.
    pub fn clear(&self, name: &str) {
        let mut state = self.lock();
        if state.live.remove(name).is_none() {
            return;
        }
        let written = if state.live.is_empty() {
            state.lines = 0;
            state.file.set_len(0)
        } else {
            state.lines += 1;
            state.file.write_all(format!("clr {name}\n").as_bytes())
        };
        if let Err(error) = written {
            tracing::error!(%error, "pending log: could not record a sent file");
        }
        self.compact_if_due(&mut state);
    }

    /// Whether staging file `name` has a live record.
    #[cfg(test)]
    pub fn is_recorded(&self, name: &str) -> bool {
        self.lock().live.contains_key(name)
    }

    /// Rewrites the log with only its live records, once it has grown far past them.
    fn compact_if_due(&self, state: &mut LogState) {
        if state.lines < COMPACT_AFTER_LINES || state.lines < 4 * state.live.len() {
            return;
        }
        match self.rewrite(state) {
            Ok(file) => {
                state.file = file;
                state.lines = state.live.len();
            }
            Err(error) => tracing::warn!(%error, "pending log: could not compact"),
        }
    }

    fn rewrite(&self, state: &LogState) -> std::io::Result<File> {
        let tmp = self.path.with_extension("tmp");
        let mut out = File::create(&tmp)?;
        for line in state.live.values() {
            out.write_all(line)?;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        OpenOptions::new().append(true).open(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target_id: u64) -> PendingRecord {
        PendingRecord {
            target_id,
            base_version: 3,
            attrs: Default::default(),
        }
    }

    #[test]
    fn the_last_line_about_a_name_holds_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, loaded) = PendingLog::open(dir.path()).unwrap();
            assert!(loaded.records.is_empty() && !loaded.torn);
            log.record("7-aa", &record(7), false).unwrap();
            log.record("8-bb", &record(8), false).unwrap();
            log.record("7-aa", &record(9), true).unwrap();
            log.clear("8-bb");
        }
        let (log, loaded) = PendingLog::open(dir.path()).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records["7-aa"].target_id, 9);
        assert!(log.is_recorded("7-aa") && !log.is_recorded("8-bb"));
        log.clear("7-aa");
        // Nothing live: the log starts over.
        assert_eq!(
            std::fs::metadata(dir.path().join("pending/log"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_torn_line_is_skipped_and_said() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = PendingLog::open(dir.path()).unwrap();
            log.record("7-aa", &record(7), false).unwrap();
        }
        let path = dir.path().join("pending/log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"rec 8-bb {\"target_id\":8,\"ba");
        std::fs::write(&path, bytes).unwrap();
        let (_, loaded) = PendingLog::open(dir.path()).unwrap();
        assert!(loaded.torn);
        assert_eq!(loaded.records.len(), 1);
        assert!(loaded.records.contains_key("7-aa"));
    }

    #[test]
    fn a_long_log_is_rewritten_with_only_its_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PendingLog::open(dir.path()).unwrap();
        log.record("keep", &record(1), false).unwrap();
        for i in 0..COMPACT_AFTER_LINES {
            let name = format!("n{i}");
            log.record(&name, &record(2), false).unwrap();
            log.clear(&name);
        }
        let text = std::fs::read_to_string(dir.path().join("pending/log")).unwrap();
        assert!(text.lines().count() < 100, "{} lines", text.lines().count());
        drop(log);
        let (_, loaded) = PendingLog::open(dir.path()).unwrap();
        assert_eq!(loaded.records.keys().collect::<Vec<_>>(), ["keep"]);
    }
}
