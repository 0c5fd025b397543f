//! A drain's plan ([`Broker::drain`](crate::Broker::drain)), each stream's [`Turn`] in it, and
//! the cheap random numbers that spread them.
//!
//! Nothing here costs an idle stream anything before a drain: the plan is one per broker, and
//! a stream draws its turn (one small allocation) the first time it is polled after the drain
//! started. The broker wakes every waiting stream once, at the start; from then on each stream
//! waits on its own timer (its body's keep-alive timer, see `src/body.rs`).

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// The shortest `retry:` sent to a drained stream.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// A broker's drain, set once by the first [`Broker::drain`](crate::Broker::drain).
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) start: Instant,
    pub(super) window: Duration,
    /// Notified when the last subscription is dropped during the drain.
    pub(super) emptied: Notify,
}

/// One stream's turn in a drain: when it ends, and the reconnection time it is sent first.
#[derive(Debug)]
pub(super) struct Turn {
    pub(super) end: Instant,
    /// The `retry:` field's value, in milliseconds.
    pub(super) retry_ms: u64,
    /// Set at `end`: the broker's watermark then. The stream delivers the events up to it
    /// (those published before its end), then the `retry:` field, then ends.
    pub(super) stop: Option<u64>,
}

impl Plan {
    pub(super) fn new(window: Duration) -> Plan {
        Plan {
            start: Instant::now(),
            window,
            emptied: Notify::new(),
        }
    }

    /// A new stream's turn: its end uniform in `[start, start + window)`, its `retry:` uniform
    /// in `[1 s, max(1 s, window)]` (whole milliseconds), independent of each other.
    pub(super) fn turn(&self) -> Turn {
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let end = self.start + Duration::from_nanos(below(window));
        let min = MIN_RETRY.as_millis() as u64;
        let max = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(min);
        Turn {
            end,
            retry_ms: min + below(max - min + 1),
            stop: None,
        }
    }

    /// The `Retry-After` for a subscription refused during the drain: whole seconds uniform in
    /// `1..=max(1, window in whole seconds)`.
    pub(super) fn retry_after(&self) -> Duration {
        Duration::from_secs(between(1, self.window.as_secs().max(1)))
    }
}

/// A uniform random number in `lo..=hi` (`lo <= hi`).
pub(crate) fn between(lo: u64, hi: u64) -> u64 {
    lo + below((hi - lo).saturating_add(1))
}

/// A uniform random number in `0..n` (0 for `n == 0`), by the multiply-shift method (no modulo
/// bias worth the name: at most `n / 2^64`).
fn below(n: u64) -> u64 {
    ((u128::from(random()) * u128::from(n)) >> 64) as u64
}

/// A random `u64`: a counter hashed with SipHash under keys std draws from the OS once per
/// process. Not for secrets; enough to spread thousands of streams, without a dependency.
fn random() -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    KEYS.get_or_init(RandomState::new)
        .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_stays_in_range_and_reaches_both_ends() {
        let drawn: Vec<u64> = (0..1000).map(|_| between(1, 3)).collect();
        assert!(drawn.iter().all(|n| (1..=3).contains(n)));
        for n in 1..=3 {
            assert!(drawn.contains(&n), "{n} never drawn");
        }
        assert_eq!(between(7, 7), 7);
        assert_eq!(below(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn turns_spread_over_the_window() {
        let plan = Plan::new(Duration::from_secs(10));
        let mut slots = [0; 10];
        for _ in 0..1000 {
            let turn = plan.turn();
            let offset = turn.end - plan.start;
            assert!(offset < plan.window);
            assert!((1000..=10_000).contains(&turn.retry_ms));
            slots[offset.as_secs() as usize] += 1;
        }
        // 100 expected per second of the window; 40 is more than 6 standard deviations off.
        assert!(slots.iter().all(|&n| n > 40), "{slots:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_window_still_waits_a_second() {
        let plan = Plan::new(Duration::from_millis(200));
        for _ in 0..100 {
            assert_eq!(plan.turn().retry_ms, 1000);
            assert_eq!(plan.retry_after(), Duration::from_secs(1));
        }
        let plan = Plan::new(Duration::ZERO);
        assert_eq!(plan.turn().end, plan.start);
    }
}
