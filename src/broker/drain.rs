//! A drain's plan ([`Broker::drain`](crate::Broker::drain)) and each stream's [`Turn`] in it,
//! drawn at random (`src/random.rs`) so that the ends and reconnects spread out.
//!
//! Nothing here costs an idle stream anything before a drain: the plan is one per broker, and
//! a stream draws its turn (one small allocation) the first time it is polled after the drain
//! started. The broker wakes every waiting stream once, at the start; from then on each stream
//! waits on its own timer (its body's keep-alive timer, see `src/body.rs`).

use std::time::Duration;

use tokio::{sync::Notify, time::Instant};

use crate::random::{below, between};

/// How long after its window a [`Broker::drain`](crate::Broker::drain) waits at most for the
/// last streams to end before it closes the broker: 1 s.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(tower_sse::broker::DRAIN_GRACE, Duration::from_secs(1));
/// ```
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

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

    /// A new stream's turn: its end `e` uniform in `[0, W)` after the start (`W` the window);
    /// its `retry:` the rest of the window (`W - e`), the grace, and a spread uniform in
    /// `[0, W]`, in milliseconds rounded up. So its client reconnects uniformly in
    /// `[W + grace, 2W + grace]` after the start: once the drain is over, never into this
    /// instance's `503`s, which would end an `EventSource` for good (WHATWG: a response other
    /// than 200 "fails the connection"); a network error instead makes it retry.
    pub(super) fn turn(&self) -> Turn {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let offset = Duration::from_nanos(below(nanos(self.window)));
        let rest = nanos(self.window - offset + DRAIN_GRACE).div_ceil(1_000_000);
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        Turn {
            end: self.start + offset,
            retry_ms: rest.saturating_add(below(window_ms.saturating_add(1))),
            stop: None,
        }
    }

    /// The `Retry-After` for a subscription refused during the drain: whole seconds uniform in
    /// `1..=max(1, window in whole seconds)`.
    pub(super) fn retry_after(&self) -> Duration {
        Duration::from_secs(between(1, self.window.as_secs().max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends spread over the window, reconnects over the window after it and the grace.
    #[tokio::test(start_paused = true)]
    async fn turns_and_reconnects_spread_over_a_window_each() {
        let plan = Plan::new(Duration::from_secs(10));
        let (mut ends, mut reconnects) = ([0; 10], [0; 10]);
        for _ in 0..1000 {
            let turn = plan.turn();
            let end = turn.end - plan.start;
            assert!(end < plan.window);
            ends[end.as_secs() as usize] += 1;
            let reconnect = end + Duration::from_millis(turn.retry_ms);
            let after = reconnect
                .checked_sub(plan.window + DRAIN_GRACE)
                .unwrap_or_else(|| panic!("reconnect at {reconnect:?}"));
            // Rounded up to the millisecond, so at most 1 ms past 2W + grace.
            assert!(after <= plan.window + Duration::from_millis(1), "{after:?}");
            reconnects[(after.as_secs() as usize).min(9)] += 1;
        }
        // 100 expected per second of the window; 40 is more than 6 standard deviations off.
        assert!(ends.iter().all(|&n| n > 40), "{ends:?}");
        assert!(reconnects.iter().all(|&n| n > 40), "{reconnects:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_still_waits_the_grace() {
        let plan = Plan::new(Duration::ZERO);
        for _ in 0..100 {
            let turn = plan.turn();
            assert_eq!(turn.end, plan.start);
            assert_eq!(turn.retry_ms, 1000);
            assert_eq!(plan.retry_after(), Duration::from_secs(1));
        }
    }
}
