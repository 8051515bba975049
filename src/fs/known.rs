//! What the mount knows of the tree, kept on disk so that a mount can start while the
//! server cannot be reached: the entries and listings last seen, and the chunk lists
//! of the versions read (whose chunks the chunk cache may hold).
//!
//! The sync worker saves it at most every [`SAVE_EVERY`] while it changes, and the
//! mount once more at unmount, to `STAGING/known/tree.json` (a temporary file renamed over
//! the last; it is a cache, so never fsynced: a file lost or torn by a crash is
//! ignored, and the mount then needs the server to start). Offline, everything answered
//! from it is as last seen (see docs/SEMANTICS.md, "Offline").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cubby_proto::api::{Entry, FileManifest};
use serde::{Deserialize, Serialize};

use super::listing::Listing;
use super::{CubbyFs, lock};

/// Least time between two saves.
pub(super) const SAVE_EVERY: Duration = Duration::from_secs(10);

/// How long a starting mount waits for the server before it starts from what it knows.
pub(super) const START_WAIT: Duration = Duration::from_secs(2);

/// What is saved.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Known {
    /// The server it was known from: a folder mounted from another server since is
    /// not started from it.
    pub server: String,
    pub root: Entry,
    pub entries: Vec<Entry>,
    pub listings: Vec<(u64, Vec<Entry>)>,
    pub manifests: Vec<FileManifest>,
}

fn path(staging_dir: &Path) -> PathBuf {
    // A folder of its own: the staging area's recovery takes every file there for a
    // staged one.
    staging_dir.join("known").join("tree.json")
}

/// What an earlier run saved in `staging_dir` from `server`, if it can be read.
pub(super) fn load(staging_dir: &Path, server: &str) -> Option<Known> {
    let bytes = std::fs::read(path(staging_dir)).ok()?;
    match serde_json::from_slice::<Known>(&bytes) {
        Ok(known) if known.server == server => Some(known),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, "what the last run knew of the tree is unreadable; ignored");
            None
        }
    }
}

impl CubbyFs {
    /// Something the mount knows changed (to save).
    pub(super) fn known_changed(&self) {
        self.known_dirty.store(true, Ordering::Relaxed);
    }

    /// Takes in what an earlier run knew (at a start without the server).
    pub(super) fn take_in(&self, known: Known) {
        for entry in known.entries {
            self.known_entries.insert(entry.id, entry);
        }
        for (dir, listing) in known.listings {
            self.known_listings
                .insert(dir, Listing::from_entries(listing));
        }
        for manifest in known.manifests {
            self.manifests
                .insert((manifest.file_id, manifest.version), Arc::new(manifest));
        }
    }

    /// Saves what the mount knows if it changed and the last save is old enough (the
    /// sync worker's step); `force` saves it if it changed at all (at unmount).
    pub fn save_known(&self, force: bool) {
        let mut last = lock(&self.known_saved);
        if !force && last.is_some_and(|at: Instant| at.elapsed() < SAVE_EVERY) {
            return;
        }
        if !self.known_dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        *last = Some(Instant::now());
        let Some(root) = self.known_entries.get(&self.root_id) else {
            return;
        };
        let known = Known {
            server: self.remote.server().to_owned(),
            root,
            entries: self.known_entries.iter().map(|(_, entry)| entry).collect(),
            listings: self
                .known_listings
                .iter()
                .map(|(dir, listing)| (*dir, listing.to_vec()))
                .collect(),
            manifests: self
                .manifests
                .iter()
                .map(|(_, manifest)| (*manifest).clone())
                .collect(),
        };
        let target = path(&self.config.staging_dir);
        let tmp = target.with_extension("json.tmp");
        let saved = serde_json::to_vec(&known)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))?;
                std::fs::write(&tmp, bytes)
            })
            .and_then(|()| std::fs::rename(&tmp, &target));
        if let Err(error) = saved {
            // Saved again at the next change.
            self.known_dirty.store(true, Ordering::Relaxed);
            tracing::warn!(%error, "could not save what the mount knows of the tree");
        }
    }
}
