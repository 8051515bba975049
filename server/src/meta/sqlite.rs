//! The embedded metadata engine: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a commit that returned is on disk (the one exception: a stored reply of an
//! idempotent request, see [`Durability::WithNextSynced`]).
//!
//! One writing connection behind a mutex, used from blocking threads (`spawn_blocking`):
//! every change is one `BEGIN IMMEDIATE` transaction, so changes are serialised and each
//! is atomic. The mutex is never held across an `.await`. Reads go to a few read-only
//! connections of their own (WAL lets them read beside the writer, each transaction a
//! snapshot of the last commit), so a burst of reads never queues behind a commit.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cubby_proto::api::{Entry, EntryKind};
use cubby_proto::{ContentHash, Name};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{
    AttrChange, ChangeBatch, ChunkPresence, ChunkRef, CommitRequest, EntryId, Location, MetaError,
    MetaStore, RetentionPolicy, RetentionReport, StoredReply, TrashItem, UploadSession,
    UploadState, UserId, UserRecord, VersionContent, VersionRecord,
};

mod batch;
mod changes;
mod history;
mod replies;
mod tree;
mod uploads;

use tree::*;

/// Numbered migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_uploads.sql"),
    include_str!("migrations/0003_history.sql"),
    include_str!("migrations/0004_xattrs.sql"),
    include_str!("migrations/0005_changes.sql"),
    include_str!("migrations/0006_sessions.sql"),
    include_str!("migrations/0007_replies.sql"),
    include_str!("migrations/0008_change_origins.sql"),
];

const ENTRY_COLUMNS: &str =
    "id, parent_id, name, kind, mode, mtime_ns, size, version, hash, target, uid, gid, rdev,
     COALESCE(atime_ns, mtime_ns), COALESCE(ctime_ns, mtime_ns)";

const DEFAULT_FILE_MODE: u32 = 0o644;

/// The columns [`user_record`] reads, in its order.
const USER_COLUMNS: &str = "id, name, password_hash";

fn user_record(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(row.get(0)?),
        name: row.get(1)?,
        password_hash: row.get(2)?,
    })
}

/// The SQLite [`MetaStore`].
#[derive(Debug, Clone)]
pub struct SqliteMetaStore {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    /// The origin of the write under way (see [`crate::origin`]), which the change
    /// feed's triggers read through the SQL function `cubby_write_origin()`.
    origin: Arc<Mutex<Option<String>>>,
}

/// When a write's commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before the write returns (the WAL is fsynced at commit: `synchronous=FULL`).
    Synced,
    /// With the next synced commit (`synchronous=NORMAL` for this one): a crash of the
    /// process keeps it, a power loss before the next synced commit may not. For what
    /// can be lost at no cost but a repeat, such as a stored reply.
    WithNextSynced,
}

/// Read-only connections, each used by one read at a time.
#[derive(Debug)]
struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

/// Reads served at once; more wait for a connection.
const READERS: usize = 4;

impl Readers {
    fn open(path: &Path) -> Result<Self, MetaError> {
        let connections = (0..READERS)
            .map(|_| {
                let conn = Connection::open(path)?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, MetaError>>()?;
        Ok(Self {
            connections,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// An idle connection, or (all busy) the next one in turn once it is free.
    fn take(&self) -> std::sync::MutexGuard<'_, Connection> {
        let count = self.connections.len();
        let first = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..count)
            .find_map(|i| self.connections[(first + i) % count].try_lock().ok())
            .unwrap_or_else(|| {
                self.connections[first % count]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            })
    }
}

impl From<rusqlite::Error> for MetaError {
    fn from(error: rusqlite::Error) -> Self {
        MetaError::Backend(error.to_string())
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl SqliteMetaStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let origin = Arc::new(Mutex::new(None::<String>));
        let current = Arc::clone(&origin);
        conn.create_scalar_function(
            "cubby_write_origin",
            0,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            move |_| {
                Ok(current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone())
            },
        )?;
        migrate(&mut conn)?;
        let readers = Readers::open(path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
            origin,
        })
    }

    /// Runs `f` in one immediate transaction on a blocking thread; commits on `Ok`, and
    /// the commit is on disk when this returns.
    async fn write<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        self.write_as(Durability::Synced, f).await
    }

    /// Like [`Self::write`], with the commit made durable as `durability` says.
    async fn write_as<T, F>(&self, durability: Durability, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let origin = Arc::clone(&self.origin);
        let request_origin = crate::origin::current();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| MetaError::Backend("poisoned".into()))?;
            // Held with the connection: no other write runs until this one ends.
            *origin.lock().unwrap_or_else(|p| p.into_inner()) = request_origin;
            if durability == Durability::WithNextSynced {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            let outcome = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })();
            if durability == Durability::WithNextSynced {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            outcome
        })
        .await
        .map_err(|e| MetaError::Backend(format!("metadata task failed: {e}")))?
    }

    /// Like [`Self::write`], for reads: a deferred transaction on a read-only
    /// connection (a snapshot of the last commit).
    async fn read<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let mut conn = readers.take();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&tx)
        })
        .await
        .map_err(|e| MetaError::Backend(format!("metadata task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(MetaError::Backend(format!(
            "database schema {applied} is newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, MetaError> {
        let (name, password_hash) = (name.to_owned(), password_hash.to_owned());
        self.write(move |tx| {
            let exists = tx
                .query_row("SELECT 1 FROM users WHERE name = ?1", params![name], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if exists {
                return Err(MetaError::UserExists);
            }
            let now = now_ns();
            tx.execute(
                "INSERT INTO users (name, password_hash, created_ns) VALUES (?1, ?2, ?3)",
                params![name, password_hash, now],
            )?;
            let user = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO entries (user_id, parent_id, name, kind, mode, mtime_ns)
                 VALUES (?1, NULL, '', 'dir', ?2, ?3)",
                params![user, 0o755, now],
            )?;
            Ok(UserId(user))
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, MetaError> {
        let name = name.to_owned();
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                    params![name],
                    user_record,
                )
                .optional()?)
        })
        .await
    }

    async fn add_session(
        &self,
        user: UserId,
        secret_hash: [u8; 32],
        expires_ns: i64,
    ) -> Result<(), MetaError> {
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND expires_ns <= ?2",
                params![user.0, now_ns()],
            )?;
            tx.execute(
                "INSERT INTO sessions (secret_hash, user_id, created_ns, expires_ns)
                 VALUES (?1, ?2, ?3, ?4)",
                params![&secret_hash[..], user.0, now_ns(), expires_ns],
            )?;
            Ok(())
        })
        .await
    }

    async fn renew_session(
        &self,
        secret_hash: [u8; 32],
        now_ns: i64,
        expires_ns: i64,
    ) -> Result<Option<UserRecord>, MetaError> {
        self.write(move |tx| {
            let user: Option<i64> = tx
                .query_row(
                    "SELECT user_id FROM sessions WHERE secret_hash = ?1 AND expires_ns > ?2",
                    params![&secret_hash[..], now_ns],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(user) = user else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE sessions SET expires_ns = ?2 WHERE secret_hash = ?1",
                params![&secret_hash[..], expires_ns],
            )?;
            Ok(tx
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                    params![user],
                    user_record,
                )
                .optional()?)
        })
        .await
    }

    async fn user_exists(&self, user: UserId) -> Result<bool, MetaError> {
        self.read(move |tx| {
            // Every authenticated request asks: parsed once.
            Ok(tx
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                .query_row(params![user.0], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn entry(&self, user: UserId, id: EntryId) -> Result<Entry, MetaError> {
        self.read(move |tx| load_entry(tx, user, id.0)).await
    }

    async fn resolve(&self, user: UserId, location: &Location) -> Result<Entry, MetaError> {
        let location = location.clone();
        self.read(move |tx| resolve(tx, user, &location)).await
    }

    async fn children(&self, user: UserId, dir: EntryId) -> Result<Vec<Entry>, MetaError> {
        self.read(move |tx| {
            let dir = require_dir(load_entry(tx, user, dir.0)?)?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries
                 WHERE parent_id = ?1 AND deleted_ns IS NULL ORDER BY name"
            ))?;
            let rows = stmt.query_map(params![dir.id], entry_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn mkdir(
        &self,
        user: UserId,
        location: &Location,
        parents: bool,
        mode: u32,
    ) -> Result<Entry, MetaError> {
        let location = location.clone();
        self.write(move |tx| {
            if parents
                && let Location::Path(path) = &location
                && path.is_root()
            {
                return root(tx, user);
            }
            mkdir_in(tx, user, &location, parents, mode)
        })
        .await
    }

    async fn symlink(
        &self,
        user: UserId,
        location: &Location,
        target: &str,
    ) -> Result<Entry, MetaError> {
        let (location, target) = (location.clone(), target.to_owned());
        self.write(move |tx| {
            let (dir, name) = resolve_parent(tx, user, &location, false)?;
            if child(tx, dir.id, name.as_str())?.is_some() {
                return Err(MetaError::AlreadyExists);
            }
            insert_entry(
                tx,
                user,
                dir.id,
                name.as_str(),
                EntryKind::Symlink,
                0o777,
                Some(&target),
            )
        })
        .await
    }

    async fn commit(
        &self,
        user: UserId,
        request: CommitRequest,
        presence: Arc<dyn ChunkPresence>,
    ) -> Result<Entry, MetaError> {
        self.write(move |tx| commit_in(tx, user, request, presence.as_ref()))
            .await
    }

    async fn begin_upload(
        &self,
        user: UserId,
        session: UploadSession,
    ) -> Result<Vec<bool>, MetaError> {
        self.write(move |tx| uploads::begin(tx, user, &session))
            .await
    }

    async fn upload_state(&self, user: UserId, id: &str) -> Result<UploadState, MetaError> {
        let id = id.to_owned();
        self.read(move |tx| uploads::state(tx, user, &id)).await
    }

    async fn mark_received(&self, id: &str, hash: ContentHash) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let updated = tx.execute(
                "UPDATE upload_chunks SET received = 1
                 WHERE upload_id = ?1 AND hash = ?2 AND upload_id IN (
                     SELECT id FROM uploads
                     WHERE id = ?1 AND expires_ns > ?3 AND committed_version IS NULL)",
                params![id, hash.as_bytes(), now_ns()],
            )?;
            if updated == 0 {
                Err(MetaError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn abort_upload(&self, id: &str) -> Result<Vec<ContentHash>, MetaError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let open = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM uploads WHERE id = ?1 AND committed_version IS NULL)",
                params![id],
                |r| r.get::<_, bool>(0),
            )?;
            if !open {
                return Ok(Vec::new());
            }
            let hashes = {
                let mut statement =
                    tx.prepare("SELECT DISTINCT hash FROM upload_chunks WHERE upload_id = ?1")?;
                let rows = statement.query_map(params![id], |r| r.get::<_, Vec<u8>>(0))?;
                let mut hashes = Vec::new();
                for row in rows {
                    hashes.push(hash_from_blob(row?)?);
                }
                hashes
            };
            tx.execute("DELETE FROM uploads WHERE id = ?1", params![id])?;
            Ok(hashes)
        })
        .await
    }

    async fn expire_uploads(&self, now_ns: i64) -> Result<u64, MetaError> {
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM uploads WHERE expires_ns <= ?1",
                params![now_ns],
            )? as u64)
        })
        .await
    }

    async fn collect_chunk(
        &self,
        hash: ContentHash,
        delete: Box<dyn FnOnce() -> Result<bool, String> + Send>,
    ) -> Result<bool, MetaError> {
        self.write(move |tx| {
            let referenced = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM version_chunks WHERE hash = ?1)
                         OR EXISTS (SELECT 1 FROM upload_chunks c JOIN uploads u
                                    ON u.id = c.upload_id
                                    WHERE c.hash = ?1 AND u.expires_ns > ?2)",
                params![hash.as_bytes(), now_ns()],
                |r| r.get::<_, bool>(0),
            )?;
            if referenced {
                return Ok(false);
            }
            // Undone (to the savepoint) when the blob turns out young again.
            tx.execute_batch("SAVEPOINT collect")?;
            tx.execute(
                "DELETE FROM user_chunks WHERE hash = ?1",
                params![hash.as_bytes()],
            )?;
            let deleted = delete().map_err(MetaError::Backend)?;
            if !deleted {
                tx.execute_batch("ROLLBACK TO collect")?;
            }
            tx.execute_batch("RELEASE collect")?;
            Ok(deleted)
        })
        .await
    }

    async fn version_content(
        &self,
        user: UserId,
        file: EntryId,
        version: Option<u64>,
    ) -> Result<VersionContent, MetaError> {
        self.read(move |tx| {
            let entry = load_entry(tx, user, file.0)?;
            match entry.kind {
                EntryKind::File => {}
                EntryKind::Dir => return Err(MetaError::IsADirectory),
                EntryKind::Symlink
                | EntryKind::Fifo
                | EntryKind::CharDevice
                | EntryKind::BlockDevice
                | EntryKind::Socket => return Err(MetaError::NotFound),
            }
            let number = version.unwrap_or(entry.version);
            let version = history::load_version(tx, file, number)?;
            let mut stmt = tx.prepare_cached(
                "SELECT hash, size FROM version_chunks WHERE file_id = ?1 AND number = ?2 ORDER BY seq",
            )?;
            let chunks = stmt
                .query_map(params![entry.id, number], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?))
                })?
                .map(|row| {
                    let (hash, size) = row?;
                    Ok(ChunkRef { hash: hash_from_blob(hash)?, size })
                })
                .collect::<Result<Vec<_>, MetaError>>()?;
            Ok(VersionContent {
                version,
                chunks,
            })
        })
        .await
    }

    async fn rename(
        &self,
        user: UserId,
        id: EntryId,
        to: &Location,
        replace: bool,
        base_version: Option<u64>,
    ) -> Result<Entry, MetaError> {
        let to = to.clone();
        self.write(move |tx| rename_in(tx, user, id, &to, replace, base_version))
            .await
    }

    async fn delete(
        &self,
        user: UserId,
        id: EntryId,
        recursive: bool,
        base_version: Option<u64>,
    ) -> Result<u64, MetaError> {
        self.write(move |tx| delete_in(tx, user, id, recursive, base_version))
            .await
    }

    async fn versions(&self, user: UserId, file: EntryId) -> Result<Vec<VersionRecord>, MetaError> {
        self.read(move |tx| history::versions(tx, user, file)).await
    }

    async fn restore_version(
        &self,
        user: UserId,
        file: EntryId,
        version: u64,
        base_version: Option<u64>,
        device: Option<String>,
    ) -> Result<Entry, MetaError> {
        self.write(move |tx| {
            history::restore_version(tx, user, file, version, base_version, device)
        })
        .await
    }

    async fn trash(&self, user: UserId) -> Result<Vec<TrashItem>, MetaError> {
        self.read(move |tx| history::trash(tx, user)).await
    }

    async fn restore_trash(
        &self,
        user: UserId,
        id: EntryId,
        to: Option<Location>,
    ) -> Result<Entry, MetaError> {
        self.write(move |tx| history::restore_trash(tx, user, id, to))
            .await
    }

    async fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ns: i64,
    ) -> Result<RetentionReport, MetaError> {
        self.write(move |tx| history::apply_retention(tx, policy, now_ns))
            .await
    }

    async fn changes_since(
        &self,
        user: UserId,
        cursor: u64,
        limit: u32,
    ) -> Result<ChangeBatch, MetaError> {
        self.read(move |tx| changes::since(tx, user, cursor, limit))
            .await
    }

    async fn latest_change(&self, user: UserId) -> Result<u64, MetaError> {
        self.read(move |tx| changes::latest(tx, user)).await
    }

    async fn prune_changes(&self, before_ns: i64) -> Result<u64, MetaError> {
        self.write(move |tx| changes::prune(tx, before_ns)).await
    }

    async fn stored_reply(
        &self,
        user: UserId,
        request_hash: [u8; 32],
    ) -> Result<Option<StoredReply>, MetaError> {
        self.read(move |tx| replies::stored(tx, user, &request_hash))
            .await
    }

    async fn store_reply(
        &self,
        user: UserId,
        request_hash: [u8; 32],
        reply: StoredReply,
    ) -> Result<(), MetaError> {
        // Kept as the change it answers was applied, without a second fsync: a reply
        // lost to a power cut before the next synced commit is the window the
        // idempotency module already names (a server stopping between the two).
        self.write_as(Durability::WithNextSynced, move |tx| {
            replies::store(tx, user, &request_hash, &reply, now_ns())
        })
        .await
    }

    async fn prune_replies(&self, before_ns: i64) -> Result<u64, MetaError> {
        self.write(move |tx| replies::prune(tx, before_ns)).await
    }

    async fn apply_batch(
        &self,
        user: UserId,
        device: Option<String>,
        items: Vec<super::BatchChangeItem>,
    ) -> Result<super::BatchOutcome, MetaError> {
        self.write(move |tx| batch::apply(tx, user, device.as_deref(), items))
            .await
    }

    async fn commit_batch(
        &self,
        user: UserId,
        items: Vec<(CommitRequest, AttrChange)>,
        presence: Arc<dyn ChunkPresence>,
    ) -> Result<Vec<Result<Entry, MetaError>>, MetaError> {
        self.write(move |tx| batch::commit_all(tx, user, items, presence.as_ref()))
            .await
    }

    async fn set_attrs(
        &self,
        user: UserId,
        id: EntryId,
        attrs: super::AttrChange,
    ) -> Result<Entry, MetaError> {
        self.write(move |tx| set_attrs_in(tx, user, id, &attrs))
            .await
    }

    async fn mknod(
        &self,
        user: UserId,
        location: &Location,
        kind: EntryKind,
        mode: u32,
        rdev: u32,
    ) -> Result<Entry, MetaError> {
        if !kind.is_special() {
            return Err(MetaError::Backend(
                "mknod makes special entries only".into(),
            ));
        }
        let location = location.clone();
        self.write(move |tx| {
            let (dir, name) = resolve_parent(tx, user, &location, false)?;
            if child(tx, dir.id, name.as_str())?.is_some() {
                return Err(MetaError::AlreadyExists);
            }
            let entry = insert_entry(tx, user, dir.id, name.as_str(), kind, mode, None)?;
            tx.execute(
                "UPDATE entries SET rdev = ?2 WHERE id = ?1",
                params![entry.id, rdev],
            )?;
            load_entry(tx, user, entry.id)
        })
        .await
    }

    async fn set_xattr(
        &self,
        user: UserId,
        id: EntryId,
        name: &str,
        value: &[u8],
        mode: super::XattrMode,
    ) -> Result<(), MetaError> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.write(move |tx| {
            let entry = load_entry(tx, user, id.0)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM xattrs WHERE entry_id = ?1 AND name = ?2",
                    params![entry.id, name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            match mode {
                super::XattrMode::Create if exists => return Err(MetaError::AlreadyExists),
                super::XattrMode::Replace if !exists => return Err(MetaError::NotFound),
                _ => {}
            }
            tx.execute(
                "INSERT OR REPLACE INTO xattrs (entry_id, name, value) VALUES (?1, ?2, ?3)",
                params![entry.id, name, value],
            )?;
            tx.execute(
                "UPDATE entries SET ctime_ns = ?2 WHERE id = ?1",
                params![entry.id, now_ns()],
            )?;
            Ok(())
        })
        .await
    }

    async fn xattr(&self, user: UserId, id: EntryId, name: &str) -> Result<Vec<u8>, MetaError> {
        let name = name.to_owned();
        self.read(move |tx| {
            let entry = load_entry(tx, user, id.0)?;
            tx.query_row(
                "SELECT value FROM xattrs WHERE entry_id = ?1 AND name = ?2",
                params![entry.id, name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(MetaError::NotFound)
        })
        .await
    }

    async fn xattr_names(&self, user: UserId, id: EntryId) -> Result<Vec<String>, MetaError> {
        self.read(move |tx| {
            let entry = load_entry(tx, user, id.0)?;
            let mut stmt =
                tx.prepare_cached("SELECT name FROM xattrs WHERE entry_id = ?1 ORDER BY name")?;
            let names = stmt.query_map(params![entry.id], |r| r.get(0))?;
            Ok(names.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn remove_xattr(&self, user: UserId, id: EntryId, name: &str) -> Result<(), MetaError> {
        let name = name.to_owned();
        self.write(move |tx| {
            let entry = load_entry(tx, user, id.0)?;
            let removed = tx.execute(
                "DELETE FROM xattrs WHERE entry_id = ?1 AND name = ?2",
                params![entry.id, name],
            )?;
            if removed == 0 {
                return Err(MetaError::NotFound);
            }
            tx.execute(
                "UPDATE entries SET ctime_ns = ?2 WHERE id = ?1",
                params![entry.id, now_ns()],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(store: &SqliteMetaStore) -> i64 {
        store
            .conn
            .lock()
            .unwrap()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_reply_kept_without_its_own_fsync_leaves_later_commits_synced() {
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(&dir.path().join("meta.db")).unwrap();
        assert_eq!(synchronous(&store), FULL);
        let user = store.create_user("alice", "hash").await.unwrap();
        let reply = StoredReply {
            status: 200,
            body: b"{}".to_vec(),
        };
        store.store_reply(user, [7; 32], reply).await.unwrap();
        assert_eq!(synchronous(&store), FULL);
        let kept = store.stored_reply(user, [7; 32]).await.unwrap().unwrap();
        assert_eq!((kept.status, kept.body.as_slice()), (200, &b"{}"[..]));
    }
}
