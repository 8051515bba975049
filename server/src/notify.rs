//! Wake-ups for long polls of the change feed (`GET /changes`): a counter bumped after
//! anything that may have changed a tree, and a flag raised at shutdown so that waiting
//! polls answer at once instead of holding the server open.
//!
//! A wake-up carries no data: a woken poll reads the feed again. Polls also read it
//! again every second without one, so a write this process did not see (another
//! process on the same database, a request whose client hung up before the answer)
//! costs at most that delay.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    generation: u64,
    closing: bool,
}

/// The sending side, one per server (in [`crate::AppState`]).
#[derive(Debug)]
pub struct ChangeNotifier {
    sender: watch::Sender<Signal>,
}

impl Default for ChangeNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeNotifier {
    pub fn new() -> Self {
        Self {
            sender: watch::Sender::new(Signal::default()),
        }
    }

    /// Something may have changed: every waiting poll wakes and reads the feed.
    pub fn notify(&self) {
        self.sender
            .send_modify(|s| s.generation = s.generation.wrapping_add(1));
    }

    /// The server is stopping: waiting polls wake, and no poll waits any more.
    pub fn close(&self) {
        self.sender.send_modify(|s| s.closing = true);
    }

    /// A waiter that sees every notification from now on. Subscribe before reading the
    /// feed, so that a change committed between the read and the wait is not missed.
    pub fn subscribe(&self) -> ChangeWaiter {
        ChangeWaiter {
            receiver: self.sender.subscribe(),
        }
    }
}

/// The receiving side, one per waiting poll.
#[derive(Debug)]
pub struct ChangeWaiter {
    receiver: watch::Receiver<Signal>,
}

impl ChangeWaiter {
    /// Whether the server is stopping.
    pub fn closing(&self) -> bool {
        self.receiver.borrow().closing
    }

    /// Returns on the first notification since the last wait (or the subscription), or
    /// after `limit`, whichever comes first.
    pub async fn wait(&mut self, limit: Duration) {
        if let Ok(Err(_)) = tokio::time::timeout(limit, self.receiver.changed()).await {
            // The notifier is gone: nothing will wake us, so just wait out the limit.
            tokio::time::sleep(limit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notification_after_subscribing_is_not_missed() {
        let notifier = ChangeNotifier::new();
        let mut waiter = notifier.subscribe();
        notifier.notify();
        let started = tokio::time::Instant::now();
        waiter.wait(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        // Seen: the next wait waits.
        let started = tokio::time::Instant::now();
        waiter.wait(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn closing_wakes_waiters() {
        let notifier = ChangeNotifier::new();
        let mut waiter = notifier.subscribe();
        assert!(!waiter.closing());
        notifier.close();
        waiter.wait(Duration::from_secs(10)).await;
        assert!(waiter.closing());
    }
}
