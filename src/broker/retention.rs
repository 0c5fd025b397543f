//! What a broker retains, and what it evicts first: one byte budget over every ring, and a
//! bound on the idle channels that keep history.
//!
//! Both are kept oldest first, in queues the publish path only pushes to and pops from the
//! front of, so a publish never scans the channels:
//!
//! - every entry put in a ring is queued with its order number; past the byte budget the
//!   oldest entries go, whatever their channel (a subscriber whose cursor was on one lags; a
//!   resume from before it gets the gap);
//! - a channel that keeps history is queued when it becomes idle (its last subscriber left, or
//!   a publish created it); past [`BrokerBuilder::history_channels`] the channel idle longest
//!   goes, with its history.
//!
//! An entry a ring dropped by itself (its capacity), a channel removed, or one that got a
//! subscriber again, leaves a stale item in its queue, skipped when reached; each queue is
//! compacted when stale items outnumber live ones, so both stay bounded by what is live.
//!
//! The queues are guarded by the broker's sequencer lock: pushes happen in order, and the lock
//! order is always sequencer, then channel map, then ring.
//!
//! [`BrokerBuilder::history_channels`]: crate::BrokerBuilder::history_channels

use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
};

use dashmap::DashMap;

use super::ring::Ring;
use crate::sync::{AtomicUsize, Ordering};

/// The byte budget and the idle-channel bound, with what they track.
pub(super) struct Retention {
    /// The most encoded bytes the rings hold together.
    budget: usize,
    /// The encoded bytes the rings hold now.
    bytes: usize,
    /// Every entry in the rings, oldest first, as (order number, ring); some are stale. A
    /// removed ring is cleared, so holding it here holds only its shell until its items go.
    entries: VecDeque<(u64, Arc<Ring>)>,
    /// How many items of `entries` are still in their ring.
    live: usize,
    /// Idle channels that keep history, idle longest first; some are stale.
    idle: VecDeque<Weak<Ring>>,
    /// The most idle channels with history.
    max_idle: usize,
    /// Channels removed so far, so that callers recount the channels only when it moved.
    removed: u64,
}

/// The channel map and the idle count, which eviction updates.
pub(super) struct ChannelMap<'a> {
    pub(super) map: &'a DashMap<Arc<str>, Arc<Ring>>,
    /// Rings marked idle; a subscriber joining one takes it off without the sequencer.
    pub(super) idle: &'a AtomicUsize,
}

impl Retention {
    pub(super) fn new(budget: usize, max_idle: usize) -> Retention {
        Retention {
            budget,
            bytes: 0,
            entries: VecDeque::new(),
            live: 0,
            idle: VecDeque::new(),
            max_idle,
            removed: 0,
        }
    }

    /// How many channels eviction has removed so far.
    pub(super) fn removed(&self) -> u64 {
        self.removed
    }

    /// The encoded bytes retained now.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// An entry of `len` bytes with order number `seq` went into `ring`, which dropped one of
    /// `dropped` bytes to make room; evicts the oldest entries past the budget (never the one
    /// just pushed).
    pub(super) fn pushed(
        &mut self,
        channels: &ChannelMap<'_>,
        ring: &Arc<Ring>,
        seq: u64,
        len: usize,
        dropped: Option<usize>,
    ) {
        self.bytes += len;
        self.live += 1;
        self.entries.push_back((seq, ring.clone()));
        if let Some(dropped) = dropped {
            self.bytes -= dropped;
            self.live -= 1;
        }
        while self.bytes > self.budget && self.entries.len() > 1 {
            let Some((seq, ring)) = self.entries.pop_front() else {
                break;
            };
            if let Some((len, empty)) = ring.evict(seq) {
                self.bytes -= len;
                self.live -= 1;
                if empty {
                    self.remove_empty(channels, &ring);
                }
            }
        }
        // Stale items (dropped by their ring for its capacity, or of a removed ring) go from
        // the front at once, which is where a busy channel's are; behind a live item of a
        // quieter channel they pile up until a pass over all, kept rare.
        while self
            .entries
            .front()
            .is_some_and(|(seq, ring)| !ring.holds(*seq))
        {
            self.entries.pop_front();
        }
        if self.entries.len() > 2 * self.live + 1024 {
            self.entries.retain(|(seq, ring)| ring.holds(*seq));
        }
    }

    /// `ring` has no subscriber and its channel keeps history: counts it idle, or removes it
    /// at once if it retains nothing; then evicts the channels idle longest past the bound.
    pub(super) fn idle(&mut self, channels: &ChannelMap<'_>, ring: &Arc<Ring>) {
        if ring.mark_idle() {
            channels.idle.fetch_add(1, Ordering::AcqRel);
            self.idle.push_back(Arc::downgrade(ring));
        } else {
            self.remove_empty(channels, ring);
        }
        while channels.idle.load(Ordering::Acquire) > self.max_idle {
            let Some(ring) = self.idle.pop_front() else {
                break;
            };
            if let Some(ring) = ring.upgrade().filter(|ring| ring.is_idle()) {
                self.remove(channels, &ring);
            }
        }
        let idle = channels.idle.load(Ordering::Acquire);
        if self.idle.len() > 2 * idle + 64 {
            self.idle
                .retain(|ring| ring.upgrade().is_some_and(|ring| ring.is_idle()));
        }
    }

    /// Removes `ring` from the map if it is still its channel's and has no subscriber; gives
    /// back what it held.
    pub(super) fn remove(&mut self, channels: &ChannelMap<'_>, ring: &Arc<Ring>) -> bool {
        let removed = channels
            .map
            .remove_if(ring.name(), |_, current| {
                Arc::ptr_eq(current, ring) && current.subscriber_count() == 0
            })
            .is_some();
        if removed {
            self.removed += 1;
            let (bytes, entries) = ring.clear();
            self.bytes -= bytes;
            self.live -= entries;
            if ring.is_idle() {
                channels.idle.fetch_sub(1, Ordering::AcqRel);
            }
        }
        removed
    }

    /// Removes `ring` if it holds nothing and has no subscriber.
    fn remove_empty(&mut self, channels: &ChannelMap<'_>, ring: &Arc<Ring>) {
        if ring.is_empty() {
            self.remove(channels, ring);
        }
    }
}
