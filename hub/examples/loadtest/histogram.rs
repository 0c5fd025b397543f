//! Publish-to-receive latencies.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Buckets: exact below 1,024 µs, then 64 per power of two up to 2^64 µs.
const BUCKETS: usize = 1024 + 54 * 64;

/// Latencies in microseconds: exact below 1 ms, then 64 buckets per power of two (under 1.6%
/// error). Atomic, shared by all subscribers.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < 1024 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as usize; // >= 10
        (1024 + (exp - 10) * 64 + ((us >> (exp - 6)) & 63) as usize).min(BUCKETS - 1)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 1024 {
            return index as u64;
        }
        let (exp, sub) = ((index - 1024) / 64 + 10, (index - 1024) % 64);
        (64 + sub as u64) << (exp - 6)
    }

    pub fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    pub fn reset(&self) {
        self.buckets.iter().for_each(|b| b.store(0, Relaxed));
        self.max.store(0, Relaxed);
    }

    /// The largest latency recorded since the last [`Histogram::reset`].
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The lower bound of the bucket holding quantile `q` (0 to 1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        0
    }
}
