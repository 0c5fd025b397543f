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
//! compacted when stale items outnumber live ones, so both stay bounded by what is live. A
//! channel that goes idle again (a client reconnecting to it, then leaving) is queued again at
//! the back, with a new stamp: its earlier item is stale, so it holds one live item, and
//! counts as idle since it last went idle.
//!
//! The queues are guarded by the broker's sequencer lock: pushes happen in order, and the lock
//! order is always sequencer, then channel map, then ring.
//!
//! [`BrokerBuilder::history_channels`]: crate::BrokerBuilder::history_channels

use std::{
    collections::{HashMap, VecDeque},
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
    /// Idle channels that keep history, idle longest first, each with the stamp it was queued
    /// with; some are stale.
    idle: VecDeque<Idle>,
    /// The stamp of each ring's newest item in `idle`, by the ring's address; an item with
    /// another stamp, or none, is stale. An entry goes with its item (or its ring's removal),
    /// and that item's `Weak` keeps the allocation, so no other ring has the address meanwhile.
    stamps: HashMap<usize, u64>,
    /// The last stamp given out.
    stamp: u64,
    /// The most idle channels with history.
    max_idle: usize,
    /// Channels removed so far, so that callers recount the channels only when it moved.
    removed: u64,
    /// The names of the channels removed since the last [`Retention::take_removed`], so that a
    /// backend can drop their subscriptions.
    gone: Vec<Arc<str>>,
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
            stamps: HashMap::new(),
            stamp: 0,
            max_idle,
            removed: 0,
            gone: Vec::new(),
        }
    }

    /// How many channels eviction has removed so far.
    pub(super) fn removed(&self) -> u64 {
        self.removed
    }

    /// The names of the channels removed since the last call.
    pub(super) fn take_removed(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.gone)
    }

    /// The encoded bytes retained now.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many items the idle queue holds, stale ones included.
    #[cfg(test)]
    pub(super) fn idle_queued(&self) -> usize {
        self.idle.len()
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
            self.stamp += 1;
            // Replaces the stamp of the ring's earlier item, if one is still queued.
            self.stamps.insert(address(ring), self.stamp);
            self.idle.push_back(Idle {
                stamp: self.stamp,
                ring: Arc::downgrade(ring),
            });
        } else {
            self.remove_empty(channels, ring);
        }
        while channels.idle.load(Ordering::Acquire) > self.max_idle {
            let Some(item) = self.idle.pop_front() else {
                break;
            };
            let live = item.live(&self.stamps);
            item.forget(&mut self.stamps);
            if let Some(ring) = live {
                self.remove(channels, &ring);
            }
        }
        // Live items are at most one per idle ring, so a pass keeps at most half: amortised
        // O(1) per item queued.
        let idle = channels.idle.load(Ordering::Acquire);
        if self.idle.len() > 2 * idle {
            let stamps = &mut self.stamps;
            self.idle.retain(|item| {
                let live = item.live(stamps).is_some();
                if !live {
                    item.forget(stamps);
                }
                live
            });
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
            self.gone.push(ring.name().clone());
            self.stamps.remove(&address(ring));
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

/// An item of the idle queue.
struct Idle {
    stamp: u64,
    ring: Weak<Ring>,
}

impl Idle {
    /// The ring, if this is its newest item and it is still idle.
    fn live(&self, stamps: &HashMap<usize, u64>) -> Option<Arc<Ring>> {
        if stamps.get(&self.ring.as_ptr().addr()) != Some(&self.stamp) {
            return None;
        }
        self.ring.upgrade().filter(|ring| ring.is_idle())
    }

    /// The item leaves the queue: forgets its ring's stamp if it is this one's.
    fn forget(&self, stamps: &mut HashMap<usize, u64>) {
        let key = self.ring.as_ptr().addr();
        if stamps.get(&key) == Some(&self.stamp) {
            stamps.remove(&key);
        }
    }
}

/// The key of `ring` in [`Retention::stamps`].
fn address(ring: &Arc<Ring>) -> usize {
    Arc::as_ptr(ring).addr()
}
