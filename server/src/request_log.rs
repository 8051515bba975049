//! What the server says about requests: each one at DEBUG, a failure of its own (a
//! 5xx) at WARN, and at INFO one line a minute with the counts, so a day of normal use
//! reads as a few hundred lines rather than hundreds of thousands.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// How often the summary line is written.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Requests counted since the last summary.
#[derive(Debug, Default)]
pub struct RequestTally {
    total: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    slowest_us: AtomicU64,
}

/// One summary's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total: u64,
    /// Answered 4xx: the client's request was refused (conflicts, bad input, auth).
    pub refused: u64,
    /// Answered 5xx: the server could not do what it should have.
    pub failed: u64,
    pub slowest: Duration,
}

impl RequestTally {
    pub fn count(&self, status: u16, took: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.refused.fetch_add(1, Ordering::Relaxed),
            500.. => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.slowest_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The counts since the last call, which start again from zero.
    pub fn take(&self) -> Summary {
        Summary {
            total: self.total.swap(0, Ordering::Relaxed),
            refused: self.refused.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            slowest: Duration::from_micros(self.slowest_us.swap(0, Ordering::Relaxed)),
        }
    }
}

/// The middleware: method, path, status and latency of every request.
pub async fn log_request(
    State(tally): State<Arc<RequestTally>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    tally.count(status, took);
    let ms = took.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, path, status, ms, "request failed");
    } else {
        tracing::debug!(%method, path, status, ms, "request");
    }
    response
}

/// Writes the summary line every [`SUMMARY_EVERY`] while there were requests.
pub async fn summarize(tally: Arc<RequestTally>) {
    let mut ticker = tokio::time::interval(SUMMARY_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let summary = tally.take();
        if summary.total > 0 {
            tracing::info!(
                requests = summary.total,
                refused = summary.refused,
                failed = summary.failed,
                slowest_ms = summary.slowest.as_millis() as u64,
                "requests in the last minute"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_by_class_and_starts_again() {
        let tally = RequestTally::default();
        tally.count(200, Duration::from_millis(3));
        tally.count(409, Duration::from_millis(40));
        tally.count(507, Duration::from_millis(1));
        tally.count(204, Duration::from_millis(2));
        assert_eq!(
            tally.take(),
            Summary {
                total: 4,
                refused: 1,
                failed: 1,
                slowest: Duration::from_millis(40)
            }
        );
        assert_eq!(tally.take().total, 0);
    }
}
