//! `cubby status`: a mount's sync state, read from the `user.cubby.sync` attribute of
//! its root directory (the daemon answers it; nothing else is needed to find it).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;

use crate::fs::sync::SyncStatus;

/// The attribute of a mount's root that holds its [`SyncStatus`] as JSON.
pub const SYNC_ATTRIBUTE: &str = "user.cubby.sync";

/// The status of the mount holding `dir` (the mount's root, and its status).
pub fn read(dir: &Path) -> Result<(PathBuf, SyncStatus), String> {
    let start = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for candidate in start.ancestors() {
        if let Ok(Some(bytes)) = xattr::get(candidate, SYNC_ATTRIBUTE) {
            let status = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: unreadable status: {e}", candidate.display()))?;
            return Ok((candidate.to_owned(), status));
        }
    }
    Err(format!("{}: not inside a Cubby mount", start.display()))
}

/// The status in a few lines for a person.
pub fn describe(root: &Path, status: &SyncStatus) -> String {
    let mut out = String::new();
    let state = if status.online { "online" } else { "offline" };
    let _ = writeln!(out, "{}: {state}", root.display());
    if status.queue_depth == 0 {
        let _ = writeln!(out, "everything is synced");
    } else {
        let _ = writeln!(
            out,
            "pending: {} upload(s), {}; {} change(s) to files and folders",
            status.pending_upload_count,
            HumanBytes(status.pending_bytes),
            status.pending_operations
        );
        for upload in &status.pending_uploads {
            let _ = writeln!(out, "  {} ({})", upload.name, HumanBytes(upload.bytes));
        }
        if status.pending_upload_count > status.pending_uploads.len() {
            let more = status.pending_upload_count - status.pending_uploads.len();
            let _ = writeln!(out, "  and {more} more");
        }
    }
    if status.retries > 0 {
        let _ = writeln!(
            out,
            "retries since sync last went through: {}",
            status.retries
        );
    }
    for conflict in &status.conflicts {
        let _ = writeln!(
            out,
            "conflict: file {} changed elsewhere; these bytes were kept as file {}",
            conflict.file, conflict.copy
        );
    }
    match &status.last_error_note {
        Some(note) if note.current => {
            let _ = writeln!(out, "last error ({}): {}", note.at, note.message);
        }
        Some(note) => {
            let _ = writeln!(
                out,
                "earlier error ({}; sync has gone through since): {}",
                note.at, note.message
            );
        }
        // A daemon from before errors had times.
        None => {
            if let Some(error) = &status.last_error {
                let _ = writeln!(out, "last error: {error}");
            }
        }
    }
    out
}
