//! The heartbeat: a server that stops answering (a stopped process, a partition that
//! drops packets) is noticed within [`NOTICED_WITHIN`], and the mount goes offline at
//! once. Every request made for a FUSE call gives up the moment the mount goes offline
//! ([`CubbyFs::until_offline`]), so no FUSE call waits longer than that on a silent
//! server: it is answered from what the mount knows, as offline.
//!
//! Only an online mount beats; an offline one is brought back by the sync worker's
//! probe. `/healthz` needs no authentication and touches no store, so a server that is
//! merely busy still answers it.

use std::sync::Weak;
use std::time::Duration;

use super::CubbyFs;

/// Time between two heartbeats.
const EVERY: Duration = Duration::from_millis(500);

/// How long a heartbeat waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

/// The longest a silent server goes unnoticed.
pub const NOTICED_WITHIN: Duration = Duration::from_millis(2000);

const _: () = assert!(EVERY.as_millis() + ANSWER_WITHIN.as_millis() <= NOTICED_WITHIN.as_millis());

/// Beats until the filesystem is dropped.
pub(super) async fn beat(fs: Weak<CubbyFs>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(strong) = fs.upgrade() else { return };
        if !strong.sync.is_online() {
            continue;
        }
        let remote = strong.remote.clone();
        drop(strong);
        if let Err(error) = remote.alive(ANSWER_WITHIN).await {
            let Some(fs) = fs.upgrade() else { return };
            fs.sync
                .went_offline(&format!("no answer to the heartbeat: {error}"));
        }
    }
}
