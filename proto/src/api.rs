//! Request and response bodies of the HTTP API (docs/spec.md describes the endpoints).

use serde::{Deserialize, Serialize};

use crate::ContentHash;

/// `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Answer to `POST /auth/login`: a bearer token and when it stops working.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Answer to `POST /upload`: the file's stable id and the version just committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    pub file_id: u64,
    pub version: u64,
    pub size: u64,
    pub hash: ContentHash,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// One node of a user's tree. Ids are stable for the life of the entry, across renames
/// and new versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// `None` only for the user's root directory.
    pub parent_id: Option<u64>,
    /// Empty only for the root directory.
    pub name: String,
    pub kind: EntryKind,
    /// Permission bits (07777).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Bytes of the current version (files), target length (symlinks), 0 (directories).
    pub size: u64,
    /// Files: the current version, from 1. Directories and symlinks: 0.
    pub version: u64,
    /// Files: BLAKE3 of the current version's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<ContentHash>,
    /// Symlinks: the target, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Answer to `GET /list`: the directory itself and its children, sorted by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListResponse {
    pub entry: Entry,
    pub children: Vec<Entry>,
}

/// `POST /mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MkdirRequest {
    /// Absolute path of the new directory.
    pub path: String,
    /// Create missing parents, and succeed when the directory exists (like `mkdir -p`).
    #[serde(default)]
    pub parents: bool,
    #[serde(default)]
    pub mode: Option<u32>,
}

/// `POST /symlink`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SymlinkRequest {
    /// Absolute path of the new link.
    pub path: String,
    pub target: String,
}

/// `POST /move`: rename or move one entry; its id stays the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRequest {
    /// The entry to move, by id or by path (exactly one).
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub from: Option<String>,
    /// The new path. Its parent must exist and be a directory.
    pub to: String,
    /// Replace what is at `to` (a file over a file, a directory over an empty
    /// directory). Without it an existing `to` is `already_exists`.
    #[serde(default)]
    pub replace: bool,
}

/// Answer to `DELETE /file/:id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// How many entries were removed (the entry and, when recursive, its descendants).
    pub deleted: u64,
}
