//! The tree, for the SQLite engine: entries read from rows, paths walked, and the
//! writes every namespace change is made of (insert, commit a version, rename, delete
//! a subtree), each inside the caller's transaction.

use super::*;

pub(super) fn kind_str(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "dir",
        EntryKind::File => "file",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "char",
        EntryKind::BlockDevice => "block",
        EntryKind::Socket => "socket",
    }
}

pub(super) fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<Entry> {
    let kind: String = row.get(3)?;
    let kind = match kind.as_str() {
        "dir" => EntryKind::Dir,
        "file" => EntryKind::File,
        "symlink" => EntryKind::Symlink,
        "fifo" => EntryKind::Fifo,
        "char" => EntryKind::CharDevice,
        "block" => EntryKind::BlockDevice,
        "socket" => EntryKind::Socket,
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                3,
                format!("kind {other}"),
                rusqlite::types::Type::Text,
            ));
        }
    };
    let hash: Option<Vec<u8>> = row.get(8)?;
    Ok(Entry {
        id: row.get(0)?,
        parent_id: row.get(1)?,
        name: row.get(2)?,
        kind,
        mode: row.get(4)?,
        mtime_ns: row.get(5)?,
        size: row.get(6)?,
        version: row.get(7)?,
        hash: hash
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .map(ContentHash::from_bytes),
        target: row.get(9)?,
        uid: row.get(10)?,
        gid: row.get(11)?,
        rdev: row.get(12)?,
        atime_ns: row.get(13)?,
        ctime_ns: row.get(14)?,
    })
}

pub(super) fn hash_from_blob(blob: Vec<u8>) -> Result<ContentHash, MetaError> {
    <[u8; 32]>::try_from(blob)
        .map(ContentHash::from_bytes)
        .map_err(|_| MetaError::Backend("stored hash is not 32 bytes".into()))
}

pub(super) fn load_entry(tx: &Transaction<'_>, user: UserId, id: u64) -> Result<Entry, MetaError> {
    // The hottest query (every open and stat that reaches the server): parsed once.
    tx.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries
         WHERE id = ?1 AND user_id = ?2 AND deleted_ns IS NULL"
    ))?
    .query_row(params![id, user.0], entry_from_row)
    .optional()?
    .ok_or(MetaError::NotFound)
}

pub(super) fn root(tx: &Transaction<'_>, user: UserId) -> Result<Entry, MetaError> {
    tx.query_row(
        &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = ?1 AND parent_id IS NULL"),
        params![user.0],
        entry_from_row,
    )
    .optional()?
    .ok_or(MetaError::NotFound)
}

pub(super) fn child(
    tx: &Transaction<'_>,
    parent: u64,
    name: &str,
) -> Result<Option<Entry>, MetaError> {
    Ok(tx
        .query_row(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM entries
                 WHERE parent_id = ?1 AND name = ?2 AND deleted_ns IS NULL"
            ),
            params![parent, name],
            entry_from_row,
        )
        .optional()?)
}

pub(super) fn require_dir(entry: Entry) -> Result<Entry, MetaError> {
    match entry.kind {
        EntryKind::Dir => Ok(entry),
        EntryKind::File
        | EntryKind::Symlink
        | EntryKind::Fifo
        | EntryKind::CharDevice
        | EntryKind::BlockDevice
        | EntryKind::Socket => Err(MetaError::NotADirectory),
    }
}

/// Walks `names` from `start`; with `create`, missing directories are made.
pub(super) fn walk(
    tx: &Transaction<'_>,
    user: UserId,
    start: Entry,
    names: &[Name],
    create: bool,
) -> Result<Entry, MetaError> {
    let mut current = start;
    for name in names {
        let dir = require_dir(current)?;
        current = match child(tx, dir.id, name.as_str())? {
            Some(found) => found,
            None if create => insert_dir(tx, user, dir.id, name.as_str(), 0o755)?,
            None => return Err(MetaError::NotFound),
        };
    }
    Ok(current)
}

pub(super) fn resolve(
    tx: &Transaction<'_>,
    user: UserId,
    location: &Location,
) -> Result<Entry, MetaError> {
    match location {
        Location::Path(path) => walk(tx, user, root(tx, user)?, path.components(), false),
        Location::Child { parent, name } => {
            let dir = require_dir(load_entry(tx, user, parent.0)?)?;
            child(tx, dir.id, name.as_str())?.ok_or(MetaError::NotFound)
        }
        Location::Entry(id) => load_entry(tx, user, id.0),
    }
}

/// The directory that holds `location`, and the name inside it.
pub(super) fn resolve_parent(
    tx: &Transaction<'_>,
    user: UserId,
    location: &Location,
    create_parents: bool,
) -> Result<(Entry, Name), MetaError> {
    match location {
        Location::Path(path) => {
            let (parent, name) = path.split_last().ok_or(MetaError::AlreadyExists)?;
            let dir = walk(
                tx,
                user,
                root(tx, user)?,
                parent.components(),
                create_parents,
            )?;
            Ok((require_dir(dir)?, name.clone()))
        }
        Location::Child { parent, name } => {
            Ok((require_dir(load_entry(tx, user, parent.0)?)?, name.clone()))
        }
        Location::Entry(id) => {
            let entry = load_entry(tx, user, id.0)?;
            let parent = entry.parent_id.ok_or(MetaError::IsADirectory)?;
            let name = entry
                .name
                .parse()
                .map_err(|e| MetaError::Backend(format!("{e}")))?;
            Ok((require_dir(load_entry(tx, user, parent)?)?, name))
        }
    }
}

pub(super) fn touch(tx: &Transaction<'_>, id: u64, now: i64) -> Result<(), MetaError> {
    tx.execute(
        "UPDATE entries SET mtime_ns = ?2, ctime_ns = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

pub(super) fn insert_entry(
    tx: &Transaction<'_>,
    user: UserId,
    parent: u64,
    name: &str,
    kind: EntryKind,
    mode: u32,
    target: Option<&str>,
) -> Result<Entry, MetaError> {
    let now = now_ns();
    let size = target.map_or(0, |t| t.len() as u64);
    tx.execute(
        "INSERT INTO entries (user_id, parent_id, name, kind, mode, mtime_ns, size, target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            user.0,
            parent,
            name,
            kind_str(kind),
            mode & 0o7777,
            now,
            size,
            target
        ],
    )?;
    let id = tx.last_insert_rowid() as u64;
    touch(tx, parent, now)?;
    load_entry(tx, user, id)
}

pub(super) fn insert_dir(
    tx: &Transaction<'_>,
    user: UserId,
    parent: u64,
    name: &str,
    mode: u32,
) -> Result<Entry, MetaError> {
    insert_entry(tx, user, parent, name, EntryKind::Dir, mode, None)
}

pub(super) fn has_children(tx: &Transaction<'_>, dir: u64) -> Result<bool, MetaError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM entries WHERE parent_id = ?1 AND deleted_ns IS NULL LIMIT 1",
            params![dir],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Moves `id` and everything below it to the trash; returns how many entries that was.
pub(super) fn delete_subtree(tx: &Transaction<'_>, id: u64, now: i64) -> Result<u64, MetaError> {
    let count = tx.execute(
        "WITH RECURSIVE sub(id) AS (
             SELECT ?1
             UNION ALL
             SELECT e.id FROM entries e JOIN sub ON e.parent_id = sub.id
             WHERE e.deleted_ns IS NULL
         )
         UPDATE entries SET deleted_ns = ?2, trash_root_id = ?1 WHERE id IN (SELECT id FROM sub)",
        params![id, now],
    )?;
    Ok(count as u64)
}

pub(super) fn commit_in(
    tx: &Transaction<'_>,
    user: UserId,
    request: CommitRequest,
    presence: &dyn ChunkPresence,
) -> Result<Entry, MetaError> {
    let (dir, name) = resolve_parent(tx, user, &request.location, request.create_parents)?;
    let existing = child(tx, dir.id, name.as_str())?;
    let (file_id, number) = match existing {
        None => match request.base_version {
            None | Some(0) => {
                let entry = insert_entry(
                    tx,
                    user,
                    dir.id,
                    name.as_str(),
                    EntryKind::File,
                    DEFAULT_FILE_MODE,
                    None,
                )?;
                (entry.id, 1)
            }
            Some(_) => return Err(MetaError::VersionConflict { current: 0 }),
        },
        Some(entry) => match entry.kind {
            EntryKind::Dir => return Err(MetaError::IsADirectory),
            EntryKind::Symlink
            | EntryKind::Fifo
            | EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Socket => return Err(MetaError::AlreadyExists),
            EntryKind::File if request.base_version != Some(entry.version) => {
                return Err(MetaError::VersionConflict {
                    current: entry.version,
                });
            }
            EntryKind::File => (entry.id, entry.version + 1),
        },
    };
    if !presence
        .all_present(&request.content.chunks)
        .map_err(MetaError::Backend)?
    {
        return Err(MetaError::ChunksMissing);
    }
    let now = now_ns();
    let content = &request.content;
    tx.execute(
        "INSERT INTO versions (file_id, number, size, hash, created_ns, author_id, device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            file_id,
            number,
            content.size,
            content.hash.as_bytes(),
            now,
            user.0,
            request.device
        ],
    )?;
    {
        let mut insert_chunk = tx.prepare_cached(
            "INSERT INTO version_chunks (file_id, number, seq, hash, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut insert_owned = tx.prepare_cached(
            "INSERT OR IGNORE INTO user_chunks (user_id, hash, size) VALUES (?1, ?2, ?3)",
        )?;
        for (seq, chunk) in content.chunks.iter().enumerate() {
            insert_chunk.execute(params![
                file_id,
                number,
                seq,
                chunk.hash.as_bytes(),
                chunk.size
            ])?;
            insert_owned.execute(params![user.0, chunk.hash.as_bytes(), chunk.size])?;
        }
    }
    if number == 2 {
        // A create and its first content are one version in the history: the empty
        // version 1 a create made goes when the same device and user commit content on
        // it (numbers go on from 2, so no cache takes the content for version 1).
        tx.execute(
            "DELETE FROM versions WHERE file_id = ?1 AND number = 1 AND size = 0
               AND author_id = ?2 AND device IS ?3
               AND NOT EXISTS (SELECT 1 FROM version_chunks WHERE file_id = ?1 AND number = 1)",
            params![file_id, user.0, request.device],
        )?;
    }
    tx.execute(
        "UPDATE entries SET version = ?2, size = ?3, hash = ?4, mtime_ns = ?5, ctime_ns = ?5
         WHERE id = ?1",
        params![file_id, number, content.size, content.hash.as_bytes(), now],
    )?;
    if let Some(upload) = &request.upload_id {
        tx.execute(
            "UPDATE uploads SET committed_file_id = ?2, committed_version = ?3 WHERE id = ?1",
            params![upload, file_id, number],
        )?;
    }
    load_entry(tx, user, file_id)
}

/// `VersionConflict` unless `base` is absent or the entry's current version.
pub(super) fn check_base(entry: &Entry, base: Option<u64>) -> Result<(), MetaError> {
    match base {
        Some(base) if base != entry.version => Err(MetaError::VersionConflict {
            current: entry.version,
        }),
        _ => Ok(()),
    }
}

pub(super) fn rename_in(
    tx: &Transaction<'_>,
    user: UserId,
    id: EntryId,
    to: &Location,
    replace: bool,
    base_version: Option<u64>,
) -> Result<Entry, MetaError> {
    let entry = load_entry(tx, user, id.0)?;
    check_base(&entry, base_version)?;
    let old_parent = entry.parent_id.ok_or(MetaError::InvalidMove)?;
    let (dir, name) = resolve_parent(tx, user, to, false)?;
    if entry.kind == EntryKind::Dir {
        // The new parent must not be the entry or lie below it.
        let mut cursor = Some(dir.id);
        while let Some(ancestor) = cursor {
            if ancestor == entry.id {
                return Err(MetaError::InvalidMove);
            }
            cursor = tx.query_row(
                "SELECT parent_id FROM entries WHERE id = ?1",
                params![ancestor],
                |r| r.get(0),
            )?;
        }
    }
    if let Some(existing) = child(tx, dir.id, name.as_str())? {
        if existing.id == entry.id {
            return Ok(entry);
        }
        if !replace {
            return Err(MetaError::AlreadyExists);
        }
        match (entry.kind, existing.kind) {
            (EntryKind::Dir, EntryKind::Dir) if has_children(tx, existing.id)? => {
                return Err(MetaError::DirectoryNotEmpty);
            }
            (EntryKind::Dir, EntryKind::Dir) => {}
            (EntryKind::Dir, _) => return Err(MetaError::NotADirectory),
            (_, EntryKind::Dir) => return Err(MetaError::IsADirectory),
            _ => {}
        }
        delete_subtree(tx, existing.id, now_ns())?;
    }
    let now = now_ns();
    tx.execute(
        "UPDATE entries SET parent_id = ?2, name = ?3, ctime_ns = ?4 WHERE id = ?1",
        params![entry.id, dir.id, name.as_str(), now],
    )?;
    touch(tx, old_parent, now)?;
    touch(tx, dir.id, now)?;
    load_entry(tx, user, entry.id)
}

/// Makes directory `location` (see [`crate::meta::MetaStore::mkdir`]).
pub(super) fn mkdir_in(
    tx: &Transaction<'_>,
    user: UserId,
    location: &Location,
    parents: bool,
    mode: u32,
) -> Result<Entry, MetaError> {
    let (dir, name) = resolve_parent(tx, user, location, parents)?;
    match child(tx, dir.id, name.as_str())? {
        Some(existing) if parents && existing.kind == EntryKind::Dir => Ok(existing),
        Some(_) => Err(MetaError::AlreadyExists),
        None => insert_dir(tx, user, dir.id, name.as_str(), mode),
    }
}

/// Moves entry `id` to the trash (see [`crate::meta::MetaStore::delete`]).
pub(super) fn delete_in(
    tx: &Transaction<'_>,
    user: UserId,
    id: EntryId,
    recursive: bool,
    base_version: Option<u64>,
) -> Result<u64, MetaError> {
    let entry = load_entry(tx, user, id.0)?;
    check_base(&entry, base_version)?;
    let parent = entry.parent_id.ok_or(MetaError::InvalidMove)?;
    if entry.kind == EntryKind::Dir && !recursive && has_children(tx, entry.id)? {
        return Err(MetaError::DirectoryNotEmpty);
    }
    let now = now_ns();
    let count = delete_subtree(tx, entry.id, now)?;
    touch(tx, parent, now)?;
    Ok(count)
}

/// Changes the given attributes of entry `id` (see
/// [`crate::meta::MetaStore::set_attrs`]).
pub(super) fn set_attrs_in(
    tx: &Transaction<'_>,
    user: UserId,
    id: EntryId,
    attrs: &AttrChange,
) -> Result<Entry, MetaError> {
    let entry = load_entry(tx, user, id.0)?;
    tx.execute(
        "UPDATE entries SET mode = COALESCE(?2, mode), mtime_ns = COALESCE(?3, mtime_ns),
                            uid = COALESCE(?4, uid), gid = COALESCE(?5, gid),
                            atime_ns = COALESCE(?6, atime_ns, mtime_ns), ctime_ns = ?7
         WHERE id = ?1",
        params![
            entry.id,
            attrs.mode.map(|m| m & 0o7777),
            attrs.mtime_ns,
            attrs.uid,
            attrs.gid,
            attrs.atime_ns,
            attrs.ctime_ns.unwrap_or_else(now_ns)
        ],
    )?;
    load_entry(tx, user, entry.id)
}
