//! The metadata store: users, the tree of entries, versions and their chunk lists.
//!
//! [`MetaStore`] is the boundary: the HTTP layer speaks only to this trait, and each
//! engine (SQLite embedded; PostgreSQL later) implements it. Every method is scoped to
//! one user: an id that belongs to another user is [`MetaError::NotFound`], exactly as
//! an id that does not exist, so ids leak nothing. Every mutating method is atomic: it
//! happens entirely or not at all.

pub mod sqlite;

use async_trait::async_trait;
use cubby_proto::api::{Change, Entry};
use cubby_proto::{ContentHash, Name, RemotePath};

pub use sqlite::SqliteMetaStore;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// An entry's id (stable across renames and versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId(pub u64);

/// A user as the auth layer needs it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub password_hash: String,
}

/// Where an operation creates or finds an entry.
#[derive(Debug, Clone)]
pub enum Location {
    /// An absolute path in the user's tree.
    Path(RemotePath),
    /// A name inside a directory given by id.
    Child { parent: EntryId, name: Name },
    /// An existing entry, wherever it is now.
    Entry(EntryId),
}

/// One chunk of a version, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub hash: ContentHash,
    pub size: u32,
}

/// The content of a version about to be committed. Every chunk must already be
/// durable in the blob store: metadata never points at a blob that is not.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub size: u64,
    pub hash: ContentHash,
    pub chunks: Vec<ChunkRef>,
}

/// One committed version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub file_id: EntryId,
    pub number: u64,
    pub size: u64,
    pub hash: ContentHash,
    /// Unix nanoseconds.
    pub created_ns: i64,
    /// The user who committed it.
    pub author: String,
    /// The device the client named when committing, if any.
    pub device: Option<String>,
}

/// Attributes to change (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub mtime_ns: Option<i64>,
    pub atime_ns: Option<i64>,
    /// Owner labels shown by mounts.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The change time to record (the server's clock when absent).
    pub ctime_ns: Option<i64>,
}

impl From<&cubby_proto::api::AttrsRequest> for AttrChange {
    /// A client's attribute change: permission bits only, the change time the server's.
    fn from(attrs: &cubby_proto::api::AttrsRequest) -> Self {
        Self {
            mode: attrs.mode.map(|m| m & 0o7777),
            mtime_ns: attrs.mtime_ns,
            atime_ns: attrs.atime_ns,
            uid: attrs.uid,
            gid: attrs.gid,
            ctime_ns: None,
        }
    }
}

/// How `set_xattr` treats an existing attribute (setxattr's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Any,
    /// Only create (XATTR_CREATE).
    Create,
    /// Only replace (XATTR_REPLACE).
    Replace,
}

/// A deleted entry the user can restore.
#[derive(Debug, Clone)]
pub struct TrashItem {
    pub entry: Entry,
    /// Where it was when deleted.
    pub path: String,
    /// Unix nanoseconds.
    pub deleted_ns: i64,
    /// Entries that come back with it (itself included).
    pub entries: u64,
}

/// What retention keeps: never a current version; otherwise versions younger than
/// `max_age` and among the `max_versions` newest of their file. Trash older than
/// `trash_max_age` is purged with its versions.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    pub max_age: std::time::Duration,
    pub max_versions: u32,
    pub trash_max_age: std::time::Duration,
}

/// What a retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub versions_removed: u64,
    pub entries_purged: u64,
}

/// What [`MetaStore::changes_since`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The user's changes after the cursor, oldest first, at most the limit asked for;
    /// empty when `reset`.
    pub changes: Vec<Change>,
    /// The user's newest change ([`MetaStore::latest_change`]).
    pub latest: u64,
    /// The cursor cannot be caught up from: changes after it were pruned, or it is newer
    /// than any change of the user's (a cursor from elsewhere). Carry on from `latest`.
    pub reset: bool,
}

/// A version and the chunks that make it up.
#[derive(Debug, Clone)]
pub struct VersionContent {
    pub version: VersionRecord,
    pub chunks: Vec<ChunkRef>,
}

/// How a file version is committed.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub location: Location,
    /// The version the writer based its content on: `None` to create a new file (a
    /// conflict when one exists), `Some(n)` to replace version `n` (a conflict unless
    /// `n` is current).
    pub base_version: Option<u64>,
    /// Create missing parent directories.
    pub create_parents: bool,
    pub content: NewContent,
    /// The device the client named (`X-Cubby-Device`), kept with the version.
    pub device: Option<String>,
    /// The chunked-upload session this commit completes, if any: it is marked committed
    /// in the same transaction, so a retried `complete` answers the same result.
    pub upload_id: Option<String>,
}

/// Checks, from inside the metadata transaction, that chunks are in the blob store.
/// Garbage collection deletes blobs inside a metadata transaction too, so a commit and
/// a collection of the same chunk are serialised: a commit never refers to a blob that
/// is being deleted.
pub trait ChunkPresence: Send + Sync {
    /// Whether every chunk is present. Called on a blocking thread.
    fn all_present(&self, chunks: &[ChunkRef]) -> Result<bool, String>;
}

/// A chunked-upload session.
#[derive(Debug, Clone)]
pub struct UploadSession {
    pub id: String,
    pub target: Location,
    pub base_version: Option<u64>,
    pub size: u64,
    pub hash: ContentHash,
    pub chunks: Vec<ChunkRef>,
    /// Unix nanoseconds.
    pub expires_ns: i64,
}

/// A session as stored, with what has arrived.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub session: UploadSession,
    /// Per chunk (in order): received in this session, or already held by the user.
    pub available: Vec<bool>,
    /// `(file_id, version)` once committed.
    pub committed: Option<(u64, u64)>,
}

/// An answer kept for a request with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where a batched change finds its entry: by id, or the entry an earlier item of the
/// same batch left (by its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemRef {
    Id(EntryId),
    Earlier(usize),
}

/// One change of a batch ([`MetaStore::apply_batch`]); each does what its own method
/// does.
#[derive(Debug, Clone)]
pub enum BatchChange {
    /// [`MetaStore::mkdir`] of a name in a directory, then `attrs`.
    Mkdir {
        parent: ItemRef,
        name: Name,
        mode: u32,
        attrs: AttrChange,
    },
    /// A new empty file (a commit with no base), then `attrs`.
    Create {
        parent: ItemRef,
        name: Name,
        attrs: AttrChange,
    },
    /// [`MetaStore::rename`] without a base version.
    Move {
        id: ItemRef,
        parent: ItemRef,
        name: Name,
        replace: bool,
    },
    /// [`MetaStore::delete`], not recursive, without a base version.
    Delete { id: ItemRef },
    /// [`MetaStore::set_attrs`].
    SetAttrs { id: ItemRef, attrs: AttrChange },
}

/// A batched change with the idempotency key it carries (if any): a change whose key
/// was applied before (in a batch) is answered as it was then, not applied again.
#[derive(Debug, Clone)]
pub struct BatchChangeItem {
    pub key: Option<String>,
    pub change: BatchChange,
}

/// What [`MetaStore::apply_batch`] did: a result per item applied, in order, and the
/// item that stopped the batch, if one did (it and those after it are not applied).
#[derive(Debug)]
pub struct BatchOutcome {
    pub done: Vec<cubby_proto::api::BatchDone>,
    pub stopped: Option<(usize, MetaError)>,
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not found")]
    NotFound,
    #[error("an entry already exists there")]
    AlreadyExists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    DirectoryNotEmpty,
    #[error("a directory cannot move into itself, and the root cannot move")]
    InvalidMove,
    #[error("version conflict: current version is {current}")]
    VersionConflict { current: u64 },
    #[error("a user of that name exists")]
    UserExists,
    #[error("chunks are missing from the blob store")]
    ChunksMissing,
    #[error("metadata backend: {0}")]
    Backend(String),
}

/// The metadata store. See the module docs for the promises every engine keeps.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a user with an empty root directory. `UserExists` if the name is taken.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, MetaError>;

    /// The user of that name, if any.
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, MetaError>;

    /// Records a login session: the hash of its secret, valid until `expires_ns`.
    async fn add_session(
        &self,
        user: UserId,
        secret_hash: [u8; 32],
        expires_ns: i64,
    ) -> Result<(), MetaError>;

    /// The user of the session whose secret hashes to `secret_hash`, if it is still valid
    /// at `now_ns`; its expiry moves on to `expires_ns`.
    async fn renew_session(
        &self,
        secret_hash: [u8; 32],
        now_ns: i64,
        expires_ns: i64,
    ) -> Result<Option<UserRecord>, MetaError>;

    /// Whether the user exists (tokens of deleted users stop working).
    async fn user_exists(&self, user: UserId) -> Result<bool, MetaError>;

    /// The entry with that id, if it is the user's and not deleted.
    async fn entry(&self, user: UserId, id: EntryId) -> Result<Entry, MetaError>;

    /// The entry at a location (`NotADirectory` when a parent is a file).
    async fn resolve(&self, user: UserId, location: &Location) -> Result<Entry, MetaError>;

    /// The children of a directory, sorted by name.
    async fn children(&self, user: UserId, dir: EntryId) -> Result<Vec<Entry>, MetaError>;

    /// Creates a directory. With `parents`, missing parents are created too and an
    /// existing directory at the location is returned as it is.
    async fn mkdir(
        &self,
        user: UserId,
        location: &Location,
        parents: bool,
        mode: u32,
    ) -> Result<Entry, MetaError>;

    /// Creates a symbolic link holding `target` verbatim.
    async fn symlink(
        &self,
        user: UserId,
        location: &Location,
        target: &str,
    ) -> Result<Entry, MetaError>;

    /// Commits a new version of a file, atomically: checks the base version, then asks
    /// `presence` (inside the transaction) whether every chunk is in the blob store
    /// (else `ChunksMissing`), then writes the version, its chunk list and the entry.
    async fn commit(
        &self,
        user: UserId,
        request: CommitRequest,
        presence: std::sync::Arc<dyn ChunkPresence>,
    ) -> Result<Entry, MetaError>;

    /// A version of a file (`None`: the current one) with its chunk list.
    async fn version_content(
        &self,
        user: UserId,
        file: EntryId,
        version: Option<u64>,
    ) -> Result<VersionContent, MetaError>;

    /// Moves an entry to `to`; its id stays. With `replace`, a file replaces a file and a
    /// directory replaces an empty directory; without it an existing target is
    /// `AlreadyExists`. Moving a directory under itself is `InvalidMove`.
    /// With `base_version`, the entry's version (0 for directories and links) must equal
    /// it, else `VersionConflict`.
    async fn rename(
        &self,
        user: UserId,
        id: EntryId,
        to: &Location,
        replace: bool,
        base_version: Option<u64>,
    ) -> Result<Entry, MetaError>;

    /// Moves an entry to the trash; a non-empty directory only with `recursive` (its
    /// subtree goes with it). Returns how many entries were removed. The root cannot be
    /// deleted (`InvalidMove`). `base_version` as for [`MetaStore::rename`]. Versions stay
    /// until retention purges the trash.
    async fn delete(
        &self,
        user: UserId,
        id: EntryId,
        recursive: bool,
        base_version: Option<u64>,
    ) -> Result<u64, MetaError>;

    /// Applies `items` in order in one transaction, each as its own method would. A
    /// refusal (a name taken, an entry gone: anything but a backend failure) stops the
    /// batch at that item, which is left undone with the items after it; the items before
    /// stay applied. A backend failure applies nothing. An item with a key stores its
    /// answer in the same transaction, so a batch sent again (its answer lost) answers
    /// the items applied before from what they did then. A create's empty first version
    /// is `device`'s (see [`CommitRequest::device`]).
    async fn apply_batch(
        &self,
        user: UserId,
        device: Option<String>,
        items: Vec<BatchChangeItem>,
    ) -> Result<BatchOutcome, MetaError>;

    /// Commits each of `items` in one transaction, each as [`MetaStore::commit`] would,
    /// with its attributes set after it (when it sets any). Each is committed or refused
    /// on its own: a refused one (a stale base, a file gone) leaves nothing of itself and
    /// does not stop the others. A backend failure commits nothing.
    async fn commit_batch(
        &self,
        user: UserId,
        items: Vec<(CommitRequest, AttrChange)>,
        presence: std::sync::Arc<dyn ChunkPresence>,
    ) -> Result<Vec<Result<Entry, MetaError>>, MetaError>;

    /// Changes the given attributes of an entry; the others stay.
    async fn set_attrs(
        &self,
        user: UserId,
        id: EntryId,
        attrs: AttrChange,
    ) -> Result<Entry, MetaError>;

    /// Creates a special entry (FIFO, device, socket): metadata only, no content.
    async fn mknod(
        &self,
        user: UserId,
        location: &Location,
        kind: cubby_proto::api::EntryKind,
        mode: u32,
        rdev: u32,
    ) -> Result<Entry, MetaError>;

    /// Sets extended attribute `name` (validated by the caller) of an entry. With
    /// `XattrMode::Create` an existing one is `AlreadyExists`; with `Replace` a missing
    /// one is `NotFound`.
    async fn set_xattr(
        &self,
        user: UserId,
        id: EntryId,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> Result<(), MetaError>;

    /// The value of extended attribute `name` (`NotFound` when absent).
    async fn xattr(&self, user: UserId, id: EntryId, name: &str) -> Result<Vec<u8>, MetaError>;

    /// The names of an entry's extended attributes, sorted.
    async fn xattr_names(&self, user: UserId, id: EntryId) -> Result<Vec<String>, MetaError>;

    /// Removes extended attribute `name` (`NotFound` when absent).
    async fn remove_xattr(&self, user: UserId, id: EntryId, name: &str) -> Result<(), MetaError>;

    /// Every version of a file, newest first.
    async fn versions(&self, user: UserId, file: EntryId) -> Result<Vec<VersionRecord>, MetaError>;

    /// Makes version `version` current again, as a new version (same chunks). With
    /// `base_version`, the current version must equal it.
    async fn restore_version(
        &self,
        user: UserId,
        file: EntryId,
        version: u64,
        base_version: Option<u64>,
        device: Option<String>,
    ) -> Result<Entry, MetaError>;

    /// The user's trash, newest first.
    async fn trash(&self, user: UserId) -> Result<Vec<TrashItem>, MetaError>;

    /// Brings a trashed entry (and its subtree) back, where it was or at `to`.
    /// `AlreadyExists` if the name is taken; `NotFound` if its old folder is gone.
    async fn restore_trash(
        &self,
        user: UserId,
        id: EntryId,
        to: Option<Location>,
    ) -> Result<Entry, MetaError>;

    /// Applies `policy` to every user at time `now_ns`, in one transaction.
    async fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ns: i64,
    ) -> Result<RetentionReport, MetaError>;

    /// The user's changes after `cursor` (at most `limit`). Every change to one of the
    /// user's entries (or their extended attributes) is recorded, with a number that
    /// increases across the whole store.
    async fn changes_since(
        &self,
        user: UserId,
        cursor: u64,
        limit: u32,
    ) -> Result<ChangeBatch, MetaError>;

    /// The number of the user's newest change (0 if none was ever recorded): the cursor
    /// of a client that starts from now. It never decreases, pruning included.
    async fn latest_change(&self, user: UserId) -> Result<u64, MetaError>;

    /// Forgets changes recorded before `before_ns`; returns how many. A cursor older
    /// than a forgotten change of its user is then answered with `reset`.
    async fn prune_changes(&self, before_ns: i64) -> Result<u64, MetaError>;

    /// The answer stored for the user's request `request_hash` (an idempotency key with
    /// the request it came with), if it was answered before.
    async fn stored_reply(
        &self,
        user: UserId,
        request_hash: [u8; 32],
    ) -> Result<Option<StoredReply>, MetaError>;

    /// Stores the answer to the user's request `request_hash` (the first one stays).
    async fn store_reply(
        &self,
        user: UserId,
        request_hash: [u8; 32],
        reply: StoredReply,
    ) -> Result<(), MetaError>;

    /// Forgets answers stored before `before_ns`; returns how many.
    async fn prune_replies(&self, before_ns: i64) -> Result<u64, MetaError>;

    /// Records a new upload session; returns, per chunk, whether the user already holds
    /// it (references it from a committed version). Dedup is scoped to the user: a chunk
    /// held only by others counts as not held.
    async fn begin_upload(
        &self,
        user: UserId,
        session: UploadSession,
    ) -> Result<Vec<bool>, MetaError>;

    /// The user's session `id`, unless unknown or expired (`NotFound`).
    async fn upload_state(&self, user: UserId, id: &str) -> Result<UploadState, MetaError>;

    /// Marks chunk `hash` received in session `id` (the caller checked the URL's
    /// signature). `NotFound` if the session is unknown, expired, or lacks the chunk.
    async fn mark_received(&self, id: &str, hash: ContentHash) -> Result<(), MetaError>;

    /// Ends session `id` before its time (refused or abandoned), unless it committed:
    /// returns the hashes of its chunks (empty when there was no such open session).
    async fn abort_upload(&self, id: &str) -> Result<Vec<ContentHash>, MetaError>;

    /// Deletes sessions that expired before `now_ns`; returns how many.
    async fn expire_uploads(&self, now_ns: i64) -> Result<u64, MetaError>;

    /// Deletes chunk `hash` if nothing refers to it (no version, no live upload session):
    /// forgets it in every user's held set and calls `delete` (which removes the blob,
    /// unless it says it is young again: then nothing changes) inside the same
    /// transaction. Returns whether it was deleted.
    async fn collect_chunk(
        &self,
        hash: ContentHash,
        delete: Box<dyn FnOnce() -> Result<bool, String> + Send>,
    ) -> Result<bool, MetaError>;
}
