//! [`RateLimited`]: a log line at most once per interval, with the count of those left out.
//!
//! Refusals and dropped messages come in storms (a limit reached, a backend down, a publisher
//! sending garbage): each is counted in the metrics anyway, and the log must not flood. Used by
//! the service's refused subscriptions and the flask-sse backend's dropped messages.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Lets one log line through per interval; a `static`, one per kind of line.
pub(crate) struct RateLimited {
    interval: Duration,
    /// Milliseconds since [`RateLimited::epoch`] of the last log, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimited {
    pub(crate) const fn new(interval: Duration) -> RateLimited {
        RateLimited {
            interval,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// `Some(n)` when the caller should log now, `n` the lines left out since the last one;
    /// `None` (and counted) when one was logged less than an interval ago.
    pub(crate) fn due(&self) -> Option<u64> {
        let now = Self::epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval.as_millis() as u64;
        let won = due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if won {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_most_once_an_interval_and_counts_the_rest() {
        let limit = RateLimited::new(Duration::from_secs(3600));
        let logged: Vec<u64> = (0..1000).filter_map(|_| limit.due()).collect();
        assert_eq!(logged, [0]);
        assert_eq!(limit.suppressed.load(Ordering::Relaxed), 999);
    }

    #[test]
    fn the_next_line_after_the_interval_reports_the_count() {
        let slow = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(slow.due(), Some(0));
        assert_eq!(slow.due(), None);
        // As if the interval had passed: the next line says one was left out.
        slow.last.store(0, Ordering::Relaxed);
        assert_eq!(slow.due(), Some(1));
    }
}
