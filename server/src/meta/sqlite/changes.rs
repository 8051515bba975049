//! The change feed, for the SQLite engine. Triggers on `entries` and `xattrs`
//! (migration 0005) record every change in `changes`; this module reads and prunes it.

use cubby_proto::api::Change;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::meta::{ChangeBatch, MetaError, UserId};

/// The newest change of the user's that pruning removed (0: none).
fn pruned(tx: &Transaction<'_>, user: UserId) -> Result<u64, MetaError> {
    Ok(tx
        .query_row(
            "SELECT seq FROM changes_pruned WHERE user_id = ?1",
            params![user.0],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

pub(super) fn latest(tx: &Transaction<'_>, user: UserId) -> Result<u64, MetaError> {
    let recorded: Option<u64> = tx.query_row(
        "SELECT MAX(seq) FROM changes WHERE user_id = ?1",
        params![user.0],
        |r| r.get(0),
    )?;
    Ok(recorded.unwrap_or(0).max(pruned(tx, user)?))
}

pub(super) fn since(
    tx: &Transaction<'_>,
    user: UserId,
    cursor: u64,
    limit: u32,
) -> Result<ChangeBatch, MetaError> {
    let latest = latest(tx, user)?;
    if cursor > latest || cursor < pruned(tx, user)? {
        return Ok(ChangeBatch {
            changes: Vec::new(),
            latest,
            reset: true,
        });
    }
    let mut stmt = tx.prepare_cached(
        "SELECT seq, entry_id, parent_id, name, old_parent_id, old_name, origin FROM changes
         WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let changes = stmt
        .query_map(params![user.0, cursor, limit], |r| {
            Ok(Change {
                seq: r.get(0)?,
                entry_id: r.get(1)?,
                parent_id: r.get(2)?,
                name: r.get(3)?,
                old_parent_id: r.get(4)?,
                old_name: r.get(5)?,
                origin: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChangeBatch {
        changes,
        latest,
        reset: false,
    })
}

/// Removes, per user, every change up to the newest one recorded before `before_ns`
/// (a prefix of the user's feed, even if the clock went back), and remembers where
/// that prefix ends.
pub(super) fn prune(tx: &Transaction<'_>, before_ns: i64) -> Result<u64, MetaError> {
    let horizons: Vec<(i64, u64)> = tx
        .prepare("SELECT user_id, MAX(seq) FROM changes WHERE created_ns < ?1 GROUP BY user_id")?
        .query_map(params![before_ns], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut removed = 0;
    for (user, seq) in horizons {
        tx.execute(
            "INSERT INTO changes_pruned (user_id, seq) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![user, seq],
        )?;
        removed += tx.execute(
            "DELETE FROM changes WHERE user_id = ?1 AND seq <= ?2",
            params![user, seq],
        )? as u64;
    }
    Ok(removed)
}
