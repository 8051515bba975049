//! Garbage collection: expired upload sessions and chunks nothing refers to.
//!
//! A chunk is deleted only when all of these hold, checked in one metadata
//! transaction that also performs the deletion:
//! - no version of any file (deleted files included) lists it;
//! - no live upload session lists it;
//! - it was last written (or re-put) longer ago than the grace period, checked again
//!   at its deletion (the pass's listing is older: a chunk put again since stays).
//!
//! Commits check, in their own transaction, that their chunks are present; the two
//! transactions are serialised, so a commit never refers to a chunk being deleted. The
//! grace period covers one-shot uploads, which store chunks before any metadata names
//! them: a chunk put a moment ago is never a candidate.
//!
//! A refused or abandoned upload (a full disk, a client gone mid-body) does not wait
//! for the grace: [`collect_now`] deletes, at once, the chunks it brought that nothing
//! refers to, by the same transaction. Those are the chunks a one-shot upload created
//! itself (not ones it found stored), or the chunks of a chunked session ended first;
//! the user can retry as soon as space is freed. The one race left, another one-shot
//! upload storing the same new chunk at that moment, costs that upload a clean
//! `chunks_missing` refusal (its commit checks presence), never data.

use std::time::{Duration, SystemTime};

use crate::AppState;
use crate::meta::sqlite::now_ns;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub expired_uploads: u64,
    pub candidates: u64,
    pub deleted_chunks: u64,
}

/// Runs passes forever, every `gc_interval`.
pub async fn run(state: AppState) {
    let mut ticker = tokio::time::interval(state.config.gc_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run_once(&state).await {
            Ok(report) if report.expired_uploads + report.deleted_chunks > 0 => {
                tracing::info!(?report, "gc pass");
            }
            Ok(report) => tracing::debug!(?report, "gc pass"),
            Err(error) => tracing::warn!(%error, "gc pass failed"),
        }
    }
}

/// One pass.
pub async fn run_once(state: &AppState) -> Result<GcReport, String> {
    let mut report = GcReport {
        expired_uploads: state
            .meta
            .expire_uploads(now_ns())
            .await
            .map_err(|e| e.to_string())?,
        ..GcReport::default()
    };
    let cutoff = SystemTime::now()
        .checked_sub(state.config.gc_grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let candidates = state
        .blobs
        .list_older_than(cutoff)
        .await
        .map_err(|e| e.to_string())?;
    report.candidates = candidates.len() as u64;
    let runtime = tokio::runtime::Handle::current();
    for hash in candidates {
        let blobs = state.blobs.clone();
        let runtime = runtime.clone();
        let delete = Box::new(move || {
            runtime
                .block_on(blobs.delete_if_older_than(hash, cutoff))
                .map_err(|e| e.to_string())
        });
        if state
            .meta
            .collect_chunk(hash, delete)
            .await
            .map_err(|e| e.to_string())?
        {
            report.deleted_chunks += 1;
        }
        // Let requests in: a long pass must not hold the metadata lock in one go.
        tokio::time::sleep(Duration::from_millis(0)).await;
    }
    Ok(report)
}

/// Deletes, now, those of `hashes` that no version and no live upload session refers
/// to (see the module's docs); returns how many went.
pub async fn collect_now(state: &AppState, hashes: Vec<cubby_proto::ContentHash>) -> u64 {
    let runtime = tokio::runtime::Handle::current();
    let mut deleted = 0;
    for hash in hashes {
        let blobs = state.blobs.clone();
        let runtime = runtime.clone();
        let delete = Box::new(move || {
            runtime
                .block_on(blobs.delete(hash))
                .map(|()| true)
                .map_err(|e| e.to_string())
        });
        match state.meta.collect_chunk(hash, delete).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%hash, %error, "could not delete a refused upload's chunk")
            }
        }
    }
    deleted
}
