//! Chunked-upload sessions, for the SQLite engine.

use cubby_proto::ContentHash;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{hash_from_blob, now_ns};
use crate::meta::{ChunkRef, EntryId, Location, MetaError, UploadSession, UploadState, UserId};

/// Whether `user` holds `hash`: a committed version of theirs lists it, or they
/// delivered it (hash-checked) in an upload session that is still live.
pub(super) fn holds_chunk(
    tx: &Transaction<'_>,
    user: UserId,
    hash: &ContentHash,
) -> Result<bool, MetaError> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM user_chunks WHERE user_id = ?1 AND hash = ?2)
                 OR EXISTS (SELECT 1 FROM upload_chunks c JOIN uploads u ON u.id = c.upload_id
                            WHERE u.user_id = ?1 AND c.hash = ?2 AND c.received = 1
                              AND u.expires_ns > ?3)",
        )?
        .query_row(params![user.0, hash.as_bytes(), now_ns()], |r| {
            r.get::<_, bool>(0)
        })?)
}

/// Records a session; returns, per chunk, whether the user holds it already.
pub(super) fn begin(
    tx: &Transaction<'_>,
    user: UserId,
    session: &UploadSession,
) -> Result<Vec<bool>, MetaError> {
    let (path, file_id, parent_id, name) = match &session.target {
        Location::Path(path) => (Some(path.to_string()), None, None, None),
        Location::Entry(id) => (None, Some(id.0), None, None),
        Location::Child { parent, name } => (None, None, Some(parent.0), Some(name.to_string())),
    };
    tx.execute(
        "INSERT INTO uploads (id, user_id, path, file_id, parent_id, name, base_version, size,
                              hash, created_ns, expires_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            session.id,
            user.0,
            path,
            file_id,
            parent_id,
            name,
            session.base_version,
            session.size,
            session.hash.as_bytes(),
            now_ns(),
            session.expires_ns
        ],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO upload_chunks (upload_id, seq, hash, size) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut held = Vec::with_capacity(session.chunks.len());
    for (seq, chunk) in session.chunks.iter().enumerate() {
        insert.execute(params![session.id, seq, chunk.hash.as_bytes(), chunk.size])?;
        held.push(holds_chunk(tx, user, &chunk.hash)?);
    }
    Ok(held)
}

/// The stored columns of a session row.
struct SessionRow {
    path: Option<String>,
    file_id: Option<u64>,
    parent_id: Option<u64>,
    name: Option<String>,
    base_version: Option<u64>,
    size: u64,
    hash: Vec<u8>,
    expires_ns: i64,
    committed: Option<(u64, u64)>,
}

fn stored(error: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(format!("stored upload target: {error}"))
}

/// The user's live session `id` with what has arrived.
pub(super) fn state(
    tx: &Transaction<'_>,
    user: UserId,
    id: &str,
) -> Result<UploadState, MetaError> {
    let row = tx
        .query_row(
            "SELECT path, file_id, parent_id, name, base_version, size, hash, expires_ns,
                    committed_file_id, committed_version
             FROM uploads WHERE id = ?1 AND user_id = ?2 AND expires_ns > ?3",
            params![id, user.0, now_ns()],
            |r| {
                let committed: (Option<u64>, Option<u64>) = (r.get(8)?, r.get(9)?);
                Ok(SessionRow {
                    path: r.get(0)?,
                    file_id: r.get(1)?,
                    parent_id: r.get(2)?,
                    name: r.get(3)?,
                    base_version: r.get(4)?,
                    size: r.get(5)?,
                    hash: r.get(6)?,
                    expires_ns: r.get(7)?,
                    committed: committed.0.zip(committed.1),
                })
            },
        )
        .optional()?
        .ok_or(MetaError::NotFound)?;
    let target = match (row.path, row.file_id, row.parent_id, row.name) {
        (Some(path), _, _, _) => Location::Path(path.parse().map_err(stored)?),
        (None, Some(id), _, _) => Location::Entry(EntryId(id)),
        (None, None, Some(parent), Some(name)) => Location::Child {
            parent: EntryId(parent),
            name: name.parse().map_err(stored)?,
        },
        _ => return Err(stored("none")),
    };
    let mut stmt = tx.prepare_cached(
        "SELECT hash, size, received FROM upload_chunks WHERE upload_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut chunks = Vec::with_capacity(rows.len());
    let mut available = Vec::with_capacity(rows.len());
    for (hash, size, received) in rows {
        let hash = hash_from_blob(hash)?;
        available.push(received || holds_chunk(tx, user, &hash)?);
        chunks.push(ChunkRef { hash, size });
    }
    Ok(UploadState {
        session: UploadSession {
            id: id.to_owned(),
            target,
            base_version: row.base_version,
            size: row.size,
            hash: hash_from_blob(row.hash)?,
            chunks,
            expires_ns: row.expires_ns,
        },
        available,
        committed: row.committed,
    })
}
