//! Answers kept for requests with an idempotency key (migration 0007), for the SQLite
//! engine.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::meta::{MetaError, StoredReply, UserId};

pub(super) fn stored(
    tx: &Transaction<'_>,
    user: UserId,
    request_hash: &[u8; 32],
) -> Result<Option<StoredReply>, MetaError> {
    Ok(tx
        .query_row(
            "SELECT status, body FROM replies WHERE user_id = ?1 AND request_hash = ?2",
            params![user.0, &request_hash[..]],
            |r| {
                Ok(StoredReply {
                    status: r.get(0)?,
                    body: r.get(1)?,
                })
            },
        )
        .optional()?)
}

pub(super) fn store(
    tx: &Transaction<'_>,
    user: UserId,
    request_hash: &[u8; 32],
    reply: &StoredReply,
    now_ns: i64,
) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO replies (user_id, request_hash, status, body, created_ns)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, request_hash) DO NOTHING",
        params![user.0, &request_hash[..], reply.status, reply.body, now_ns],
    )?;
    Ok(())
}

pub(super) fn prune(tx: &Transaction<'_>, before_ns: i64) -> Result<u64, MetaError> {
    Ok(tx.execute(
        "DELETE FROM replies WHERE created_ns < ?1",
        params![before_ns],
    )? as u64)
}
