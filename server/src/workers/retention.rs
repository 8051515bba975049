//! Retention: drops versions past the policy, purges old trash and prunes the change
//! feed and the stored answers of keyed requests, on a timer.
//!
//! One pass is one metadata transaction, so it is atomic with respect to commits: a
//! version that a racing commit makes non-current is judged after that commit or not
//! at all, and the current version of a file is never removed. The chunks that only
//! removed versions listed become unreferenced and are collected by garbage collection
//! after its grace period. Purged entries are changes too, so a pass wakes the polls of
//! the change feed.

use crate::AppState;
use crate::meta::sqlite::now_ns;

/// How long the answer to a request with an idempotency key is kept: far longer than
/// any client takes to send a journaled change again (see `api::idempotency`).
const REPLIES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Runs passes forever, every `retention_interval`.
pub async fn run(state: AppState) {
    let mut ticker = tokio::time::interval(state.config.retention_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match state
            .meta
            .apply_retention(state.config.retention(), now_ns())
            .await
        {
            Ok(report) if report.versions_removed + report.entries_purged > 0 => {
                tracing::info!(?report, "retention pass");
                state.changes.notify();
            }
            Ok(report) => tracing::debug!(?report, "retention pass"),
            Err(error) => tracing::warn!(%error, "retention pass failed"),
        }
        let cutoff = now_ns().saturating_sub(state.config.changes_max_age.as_nanos() as i64);
        match state.meta.prune_changes(cutoff).await {
            Ok(pruned) => tracing::debug!(pruned, "change feed pruned"),
            Err(error) => tracing::warn!(%error, "pruning the change feed failed"),
        }
        let cutoff = now_ns().saturating_sub(REPLIES_MAX_AGE.as_nanos() as i64);
        match state.meta.prune_replies(cutoff).await {
            Ok(pruned) => tracing::debug!(pruned, "stored replies pruned"),
            Err(error) => tracing::warn!(%error, "pruning stored replies failed"),
        }
    }
}
