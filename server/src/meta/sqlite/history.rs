//! Version history, restore, the trash and retention, for the SQLite engine.

use cubby_proto::api::Entry;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    ENTRY_COLUMNS, child, commit_in, entry_from_row, hash_from_blob, load_entry, require_dir,
    resolve_parent,
};
use crate::meta::{
    ChunkPresence, ChunkRef, CommitRequest, EntryId, Location, MetaError, NewContent,
    RetentionPolicy, RetentionReport, TrashItem, UserId, VersionRecord,
};

/// Presence for commits whose chunks an existing version already lists: referenced
/// chunks are never collected, so there is nothing to check.
struct AlreadyReferenced;

impl ChunkPresence for AlreadyReferenced {
    fn all_present(&self, _: &[ChunkRef]) -> Result<bool, String> {
        Ok(true)
    }
}

/// One version's record (`NotFound` if the file has no such version).
pub(super) fn load_version(
    tx: &Transaction<'_>,
    file: EntryId,
    number: u64,
) -> Result<VersionRecord, MetaError> {
    let row = tx
        .query_row(
            "SELECT v.size, v.hash, v.created_ns, COALESCE(u.name, ''), v.device
             FROM versions v LEFT JOIN users u ON u.id = v.author_id
             WHERE v.file_id = ?1 AND v.number = ?2",
            params![file.0, number],
            |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()?
        .ok_or(MetaError::NotFound)?;
    Ok(VersionRecord {
        file_id: file,
        number,
        size: row.0,
        hash: hash_from_blob(row.1)?,
        created_ns: row.2,
        author: row.3,
        device: row.4,
    })
}

pub(super) fn versions(
    tx: &Transaction<'_>,
    user: UserId,
    file: EntryId,
) -> Result<Vec<VersionRecord>, MetaError> {
    let entry = load_entry(tx, user, file.0)?;
    let numbers: Vec<u64> = tx
        .prepare_cached("SELECT number FROM versions WHERE file_id = ?1 ORDER BY number DESC")?
        .query_map(params![entry.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    numbers
        .into_iter()
        .map(|n| load_version(tx, file, n))
        .collect()
}

pub(super) fn version_chunks(
    tx: &Transaction<'_>,
    file: EntryId,
    number: u64,
) -> Result<Vec<ChunkRef>, MetaError> {
    let mut stmt = tx.prepare_cached(
        "SELECT hash, size FROM version_chunks WHERE file_id = ?1 AND number = ?2 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![file.0, number], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(hash, size)| {
            Ok(ChunkRef {
                hash: hash_from_blob(hash)?,
                size,
            })
        })
        .collect()
}

pub(super) fn restore_version(
    tx: &Transaction<'_>,
    user: UserId,
    file: EntryId,
    number: u64,
    base_version: Option<u64>,
    device: Option<String>,
) -> Result<Entry, MetaError> {
    let entry = load_entry(tx, user, file.0)?;
    let old = load_version(tx, file, number)?;
    let chunks = version_chunks(tx, file, number)?;
    let request = CommitRequest {
        location: Location::Entry(file),
        base_version: Some(base_version.unwrap_or(entry.version)),
        create_parents: false,
        content: NewContent {
            size: old.size,
            hash: old.hash,
            chunks,
        },
        device,
        upload_id: None,
    };
    commit_in(tx, user, request, &AlreadyReferenced)
}

/// A deleted entry of the user's, by id.
fn load_trashed(tx: &Transaction<'_>, user: UserId, id: u64) -> Result<(Entry, i64), MetaError> {
    tx.query_row(
        &format!(
            "SELECT {ENTRY_COLUMNS}, deleted_ns FROM entries
             WHERE id = ?1 AND user_id = ?2 AND deleted_ns IS NOT NULL AND trash_root_id = id"
        ),
        params![id, user.0],
        |r| Ok((entry_from_row(r)?, r.get::<_, i64>(15)?)),
    )
    .optional()?
    .ok_or(MetaError::NotFound)
}

/// The path an entry had, following parents whether or not they are deleted.
fn original_path(tx: &Transaction<'_>, entry: &Entry) -> Result<String, MetaError> {
    let mut names = vec![entry.name.clone()];
    let mut parent = entry.parent_id;
    while let Some(id) = parent {
        let (name, next): (String, Option<u64>) = tx.query_row(
            "SELECT name, parent_id FROM entries WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if next.is_some() {
            names.push(name);
        }
        parent = next;
    }
    names.reverse();
    Ok(format!("/{}", names.join("/")))
}

pub(super) fn trash(tx: &Transaction<'_>, user: UserId) -> Result<Vec<TrashItem>, MetaError> {
    let ids: Vec<u64> = tx
        .prepare_cached(
            "SELECT id FROM entries
             WHERE user_id = ?1 AND deleted_ns IS NOT NULL AND trash_root_id = id
             ORDER BY deleted_ns DESC, id DESC",
        )?
        .query_map(params![user.0], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.into_iter()
        .map(|id| {
            let (entry, deleted_ns) = load_trashed(tx, user, id)?;
            let entries = tx.query_row(
                "SELECT COUNT(*) FROM entries WHERE trash_root_id = ?1 AND deleted_ns IS NOT NULL",
                params![id],
                |r| r.get(0),
            )?;
            Ok(TrashItem {
                path: original_path(tx, &entry)?,
                entry,
                deleted_ns,
                entries,
            })
        })
        .collect()
}

pub(super) fn restore_trash(
    tx: &Transaction<'_>,
    user: UserId,
    id: EntryId,
    to: Option<Location>,
) -> Result<Entry, MetaError> {
    let (entry, _) = load_trashed(tx, user, id.0)?;
    let (dir, name) = match to {
        Some(location) => {
            let (dir, name) = resolve_parent(tx, user, &location, false)?;
            (dir, name.into_string())
        }
        None => {
            let parent = entry.parent_id.ok_or(MetaError::InvalidMove)?;
            // NotFound when the old folder is itself deleted: restore that first.
            (
                require_dir(load_entry(tx, user, parent)?)?,
                entry.name.clone(),
            )
        }
    };
    if child(tx, dir.id, &name)?.is_some() {
        return Err(MetaError::AlreadyExists);
    }
    // Move first (still deleted, so the name index ignores it), then revive.
    tx.execute(
        "UPDATE entries SET parent_id = ?2, name = ?3 WHERE id = ?1",
        params![entry.id, dir.id, name],
    )?;
    tx.execute(
        "UPDATE entries SET deleted_ns = NULL, trash_root_id = NULL
         WHERE trash_root_id = ?1 AND deleted_ns IS NOT NULL",
        params![entry.id],
    )?;
    load_entry(tx, user, entry.id)
}

/// Removes the listed versions and forgets their chunks in their users' held sets
/// where no other version of that user lists them.
fn remove_versions(tx: &Transaction<'_>, doomed: &[(u64, u64)]) -> Result<(), MetaError> {
    for (file, number) in doomed {
        let hashes: Vec<Vec<u8>> = tx
            .prepare_cached(
                "SELECT DISTINCT hash FROM version_chunks WHERE file_id = ?1 AND number = ?2",
            )?
            .query_map(params![file, number], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "DELETE FROM version_chunks WHERE file_id = ?1 AND number = ?2",
            params![file, number],
        )?;
        tx.execute(
            "DELETE FROM versions WHERE file_id = ?1 AND number = ?2",
            params![file, number],
        )?;
        let user: i64 = tx.query_row(
            "SELECT user_id FROM entries WHERE id = ?1",
            params![file],
            |r| r.get(0),
        )?;
        for hash in hashes {
            tx.execute(
                "DELETE FROM user_chunks WHERE user_id = ?1 AND hash = ?2 AND NOT EXISTS (
                     SELECT 1 FROM version_chunks vc JOIN entries e ON e.id = vc.file_id
                     WHERE e.user_id = ?1 AND vc.hash = ?2)",
                params![user, hash],
            )?;
        }
    }
    Ok(())
}

pub(super) fn apply_retention(
    tx: &Transaction<'_>,
    policy: RetentionPolicy,
    now_ns: i64,
) -> Result<RetentionReport, MetaError> {
    let version_cutoff = now_ns.saturating_sub(policy.max_age.as_nanos() as i64);
    let trash_cutoff = now_ns.saturating_sub(policy.trash_max_age.as_nanos() as i64);
    // Old or surplus versions of live and trashed files alike; never the current one.
    let doomed: Vec<(u64, u64)> = tx
        .prepare(
            "SELECT file_id, number FROM (
                 SELECT v.file_id, v.number, v.created_ns, e.version AS current,
                        ROW_NUMBER() OVER (PARTITION BY v.file_id ORDER BY v.number DESC) AS rank
                 FROM versions v JOIN entries e ON e.id = v.file_id)
             WHERE number <> current AND (created_ns < ?1 OR rank > ?2)",
        )?
        .query_map(params![version_cutoff, policy.max_versions], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    remove_versions(tx, &doomed)?;
    // Trash past its time goes entirely: its entries and every version of them.
    let purged_roots: Vec<u64> = tx
        .prepare(
            "SELECT id FROM entries
             WHERE deleted_ns IS NOT NULL AND trash_root_id = id AND deleted_ns < ?1",
        )?
        .query_map(params![trash_cutoff], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut entries_purged = 0;
    for root in purged_roots {
        let versions: Vec<(u64, u64)> = tx
            .prepare_cached(
                "SELECT v.file_id, v.number FROM versions v JOIN entries e ON e.id = v.file_id
                 WHERE e.trash_root_id = ?1 AND e.deleted_ns IS NOT NULL",
            )?
            .query_map(params![root], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        remove_versions(tx, &versions)?;
        entries_purged += tx.execute(
            "DELETE FROM entries WHERE trash_root_id = ?1 AND deleted_ns IS NOT NULL",
            params![root],
        )? as u64;
    }
    Ok(RetentionReport {
        versions_removed: doomed.len() as u64,
        entries_purged,
    })
}
