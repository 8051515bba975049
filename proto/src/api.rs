//! Request and response bodies of the HTTP API (docs/spec.md describes the endpoints).

use serde::{Deserialize, Serialize};

use crate::ContentHash;

/// The request header that makes a change safe to send again: a change sent twice with
/// the same key is applied once, and the second gets the first's answer (see
/// docs/spec.md, "Idempotency keys").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header that marks an answer given again from a stored one.
pub const REPLAYED: &str = "idempotent-replayed";

/// `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Answer to `POST /auth/login` and `POST /auth/refresh`: a bearer token and when it
/// stops working; from a login, also the refresh token that renews it.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// A long-lived secret for `POST /auth/refresh` (only from a login; it stays
    /// valid while it is used within the server's refresh lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `POST /auth/refresh`: a new bearer token for a refresh token.
#[derive(Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &"<redacted>")
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
    /// Named pipe (metadata only).
    Fifo,
    /// Character device (metadata only).
    CharDevice,
    /// Block device (metadata only).
    BlockDevice,
    /// Unix socket (metadata only).
    Socket,
}

impl EntryKind {
    /// Kinds that are only metadata: no content, no versions.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Self::Fifo | Self::CharDevice | Self::BlockDevice | Self::Socket
        )
    }
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
    /// Owner shown by mounts; absent means the user themself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Device number of device entries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// Access time (set explicitly; reads do not update it), Unix nanoseconds.
    #[serde(default)]
    pub atime_ns: i64,
    /// Change time (content, attributes or name changed), Unix nanoseconds.
    #[serde(default)]
    pub ctime_ns: i64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `POST /mknod`: a special entry (FIFO, device, socket): metadata only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MknodRequest {
    pub parent_id: u64,
    pub name: String,
    pub kind: EntryKind,
    #[serde(default)]
    pub mode: Option<u32>,
    #[serde(default)]
    pub rdev: u32,
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
    /// Absolute path of the new directory (or give `parent_id` and `name`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub parent_id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    /// Create missing parents, and succeed when the directory exists (like `mkdir -p`).
    #[serde(default)]
    pub parents: bool,
    #[serde(default)]
    pub mode: Option<u32>,
}

/// `POST /symlink`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SymlinkRequest {
    /// Absolute path of the new link (or give `parent_id` and `name`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub parent_id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    pub target: String,
    /// When the link was made (Unix nanoseconds, the client's clock): its times, if not
    /// ahead of the server's clock (as for `CreateRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<i64>,
}

/// `POST /move`: rename or move one entry; its id stays the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRequest {
    /// The entry to move, by id or by path (exactly one).
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub from: Option<String>,
    /// The new path (or give `to_parent_id` and `to_name`). Its parent must exist and
    /// be a directory.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub to_parent_id: Option<u64>,
    #[serde(default)]
    pub to_name: Option<String>,
    /// Replace what is at `to` (a file over a file, a directory over an empty
    /// directory). Without it an existing `to` is `already_exists`.
    #[serde(default)]
    pub replace: bool,
    /// The entry's version the move is based on (`If-Match` works too).
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// Answer to `DELETE /file/:id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// How many entries were removed (the entry and, when recursive, its descendants).
    pub deleted: u64,
}

/// One chunk of a file, in order: its BLAKE3 hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpec {
    pub hash: ContentHash,
    pub size: u32,
}

/// `POST /upload/begin`: announce a file by its chunk list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginUploadRequest {
    /// Where the file goes (exactly one of `path` and `file_id`).
    #[serde(default)]
    pub path: Option<String>,
    /// An existing file to give a new version, wherever it is now.
    #[serde(default)]
    pub file_id: Option<u64>,
    /// Or a name inside a directory given by id.
    #[serde(default)]
    pub parent_id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    /// The version the content is based on (none: create a new file).
    #[serde(default)]
    pub base_version: Option<u64>,
    pub size: u64,
    /// BLAKE3 of the whole content.
    pub hash: ContentHash,
    pub chunks: Vec<ChunkSpec>,
}

/// A chunk the server does not hold for this user, and where to `PUT` it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkUpload {
    pub hash: ContentHash,
    pub size: u32,
    /// A signed, expiring URL, relative to the server's base URL.
    pub url: String,
}

/// Answer to `POST /upload/begin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginUploadResponse {
    pub upload_id: String,
    /// Unix seconds after which the session and its URLs are void.
    pub expires_at: i64,
    /// Distinct chunks to send; every other chunk is already held by this user.
    pub missing: Vec<ChunkUpload>,
    /// Bytes of the file the server already holds for this user.
    pub reused_bytes: u64,
}

/// `POST /upload/complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteUploadRequest {
    pub upload_id: String,
}

/// One chunk of a version, where it sits in the file, and a signed URL to `GET` it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDownload {
    pub hash: ContentHash,
    pub size: u32,
    pub offset: u64,
    /// A signed, expiring URL, relative to the server's base URL.
    pub url: String,
}

/// Answer to `GET /file/{id}/chunks`: a version as a list of chunk URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileManifest {
    pub file_id: u64,
    pub version: u64,
    pub size: u64,
    pub hash: ContentHash,
    pub chunks: Vec<ChunkDownload>,
}

/// One version of a file in `GET /file/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub number: u64,
    pub size: u64,
    pub hash: ContentHash,
    /// Unix nanoseconds of the commit.
    pub created_ns: i64,
    /// Who committed it.
    pub author: String,
    /// The device the client named (`X-Cubby-Device`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Answer to `GET /file/{id}/versions`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionsResponse {
    pub file_id: u64,
    pub current_version: u64,
    pub versions: Vec<VersionInfo>,
}

/// `POST /file/{id}/restore`: make an old version current again, as a new version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub version: u64,
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// One item of the trash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrashEntry {
    pub entry: Entry,
    /// Where it was when deleted.
    pub path: String,
    /// Unix nanoseconds.
    pub deleted_ns: i64,
    /// How many entries come back with it (itself included).
    pub entries: u64,
}

/// Answer to `GET /trash`: newest deletion first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrashResponse {
    pub items: Vec<TrashEntry>,
}

/// `POST /trash/restore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrashRestoreRequest {
    /// The trashed entry (`TrashEntry.entry.id`).
    pub id: u64,
    /// Somewhere else to put it (default: where it was).
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /file/{id}/attrs`: change the mode or modification time of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrsRequest {
    /// Permission bits (07777).
    #[serde(default)]
    pub mode: Option<u32>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: Option<i64>,
    #[serde(default)]
    pub atime_ns: Option<i64>,
    /// Owner labels (see `Entry::uid`).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// `POST /create`: a new, empty file in one request (what `creat(2)` needs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    pub parent_id: u64,
    pub name: String,
    #[serde(default)]
    pub mode: Option<u32>,
    /// Owner labels (see `Entry::uid`).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// When the file was created (Unix nanoseconds, the client's clock; a change made
    /// offline is sent later): its times, if not ahead of the server's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<i64>,
}

// Batches of namespace changes.

/// Where a batched change finds an entry: an id, or the entry an earlier item of the
/// same batch made or changed (`{"item": 0}`: the first item's entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchRef {
    Id(u64),
    Item { item: usize },
}

/// One namespace change of a batch; each does what its own route does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BatchOp {
    /// As `POST /mkdir` with `parent_id` and `name`, then its owner labels.
    Mkdir {
        parent: BatchRef,
        name: String,
        #[serde(default)]
        mode: Option<u32>,
        #[serde(default)]
        uid: Option<u32>,
        #[serde(default)]
        gid: Option<u32>,
    },
    /// As `POST /create`.
    Create {
        parent: BatchRef,
        name: String,
        #[serde(default)]
        mode: Option<u32>,
        #[serde(default)]
        uid: Option<u32>,
        #[serde(default)]
        gid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ns: Option<i64>,
    },
    /// As `POST /move` with `id`, `to_parent_id` and `to_name`.
    Move {
        id: BatchRef,
        parent: BatchRef,
        name: String,
        #[serde(default)]
        replace: bool,
    },
    /// As `DELETE /file/{id}` (not recursive).
    Delete { id: BatchRef },
    /// As `POST /file/{id}/attrs`.
    Attrs {
        id: BatchRef,
        #[serde(flatten)]
        attrs: AttrsRequest,
    },
}

/// One item of `POST /batch`: a change with the idempotency key of the change it
/// replays (as the `Idempotency-Key` header of its own route would carry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(flatten)]
    pub op: BatchOp,
}

/// `POST /batch`: changes applied in order, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub items: Vec<BatchItem>,
}

/// What one applied item did: the entry it left (every op but delete), or how many
/// entries a delete removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
}

/// The item that stopped a batch, and why (the answer its own route would give).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStop {
    pub index: usize,
    pub status: u16,
    #[serde(flatten)]
    pub error: crate::error::ErrorBody,
}

/// The answer of `POST /batch`: one result per item applied, in order. A batch stops
/// at the first item refused (a name taken, an entry gone): the items before it are
/// applied, it and those after are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub done: Vec<BatchDone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<BatchStop>,
}

/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 512;

/// One file of `POST /upload/batch` (the `item` part; the file's bytes are the `file`
/// part after it): its next version on `base_version`, with `attrs` set after the
/// commit in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBatchItem {
    pub file_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<AttrsRequest>,
}

/// What became of one file of `POST /upload/batch`: the entry it left, or the error
/// its own `POST /upload` would have answered (a stale base is `409` with
/// `current_version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBatchResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorBody>,
}

/// The answer of `POST /upload/batch`: one result per file, in order. Each file is
/// committed or refused on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBatchResponse {
    pub results: Vec<UploadBatchResult>,
}

/// Most files in one `POST /upload/batch`; each is at most one chunk
/// ([`crate::chunking::MIN_CHUNK`] bytes).
pub const MAX_UPLOAD_BATCH_FILES: usize = 256;

// The change feed.

/// One change to a user's tree, as `GET /changes` reports it. Any change to an entry
/// appears: creation, a new version, a move or rename, deletion to the trash, restore
/// from the trash, attributes and extended attributes. A change names the entry, not
/// what happened: a client that caches the entry, its parent's listing, or (for a
/// move) the old parent's listing drops them and asks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the feed: increasing, not dense (other users' changes take numbers).
    pub seq: u64,
    pub entry_id: u64,
    /// The entry's directory after the change (`None` only for the root).
    pub parent_id: Option<u64>,
    /// The entry's name after the change.
    pub name: String,
    /// On a move or rename: the directory it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_parent_id: Option<u64>,
    /// On a move or rename: the name it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_name: Option<String>,
    /// The `X-Cubby-Origin` of the request that made the change, if it named one: a
    /// mount knows its own changes by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Answer to `GET /changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesResponse {
    /// The cursor to ask from next time.
    pub cursor: u64,
    /// Changes after the cursor asked from, oldest first (a bounded batch: when it is
    /// not empty, ask again at once for more).
    pub changes: Vec<Change>,
    /// The cursor asked from is too old (its changes were pruned) or unknown: drop
    /// every cache and carry on from `cursor`.
    #[serde(default)]
    pub reset: bool,
}
