//! Cheap random numbers, for spreading things out in time: a drain's turns and reconnection
//! times, the `Retry-After` of a refusal.
//!
//! Not for secrets. A counter hashed with SipHash under keys std draws from the OS once per
//! process is enough to spread thousands of streams, without a dependency.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// A uniform random number in `lo..=hi` (`lo <= hi`).
pub(crate) fn between(lo: u64, hi: u64) -> u64 {
    lo + below((hi - lo).saturating_add(1))
}

/// A uniform random number in `0..n` (0 for `n == 0`), by the multiply-shift method (no modulo
/// bias worth the name: at most `n / 2^64`).
pub(crate) fn below(n: u64) -> u64 {
    ((u128::from(random()) * u128::from(n)) >> 64) as u64
}

/// A random `u64`: the next value of a process-wide counter, hashed.
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
        // The widest ranges don't overflow.
        assert_eq!(between(u64::MAX, u64::MAX), u64::MAX);
        let _ = between(0, u64::MAX);
    }

    #[test]
    fn below_stays_below_and_zero_is_zero() {
        assert_eq!(below(0), 0);
        assert_eq!(below(1), 0);
        let drawn: Vec<u64> = (0..1000).map(|_| below(4)).collect();
        assert!(drawn.iter().all(|&n| n < 4));
        for n in 0..4 {
            assert!(drawn.contains(&n), "{n} never drawn");
        }
    }
}
