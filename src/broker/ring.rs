//! One channel's ring of encoded events, and the wake-up slots of its subscribers.
//!
//! A subscriber is a position in the ring (a [`Cursor`](super::subscription) of its own), not
//! a queue: a publish pushes one shared [`Entry`] and wakes only the subscribers that wait.
//!
//! # The lock and wake protocol
//!
//! Each ring has one mutex over its events and wakers. A publisher pushes its entry, raises
//! the broker's watermark (the highest order number every ring holds up to) and takes the
//! wakers, all under the ring's lock, then wakes them after releasing it. A reader, under the
//! same lock, takes what is there up to the watermark it read first, and leaves its waker only
//! when it found nothing. So a publish either happens before the reader looks (and the reader
//! sees the entry) or after it left its waker (and the publisher wakes it): no wake-up is lost.
//! An entry above the watermark the reader read means a publish in flight on another ring; the
//! reader polls again instead of waiting, since that publisher may have taken the wakers
//! already. `src/broker/model.rs` checks this protocol under loom.

use std::{collections::VecDeque, sync::Arc, task::Waker};

use bytes::Bytes;
use slab::Slab;

use crate::sync::{AtomicU64, Mutex, Ordering, lock};

/// One published event, encoded once and shared by every subscriber.
#[derive(Debug)]
pub(crate) struct Entry {
    /// This broker's order number: events enter the rings in this order, and the watermark
    /// and floors count it.
    pub(crate) seq: u64,
    /// The sequence number the id comes from: `seq` in process, the backend's for events
    /// that came through a backend.
    pub(crate) origin: u64,
    /// The publisher's id; `None` when the id is `origin`.
    pub(crate) id: Option<Box<str>>,
    pub(crate) bytes: Bytes,
}

/// One channel: its ring and its subscribers' wake-up slots.
pub(crate) struct Ring {
    name: Arc<str>,
    state: Mutex<State>,
    /// The order number of the oldest entry (`u64::MAX` when empty), mirrored out of the lock
    /// so the byte budget's queue can tell its stale items without locking: it only grows.
    oldest: AtomicU64,
    /// [`crate::metrics::CHANNEL_SUBSCRIBERS`] for this channel.
    subscribers: Option<::metrics::Gauge>,
}

struct State {
    entries: VecDeque<Arc<Entry>>,
    /// How many entries the ring keeps.
    capacity: usize,
    /// The encoded bytes of `entries`, for the broker's byte budget.
    bytes: usize,
    /// Whether the broker counts the ring among its idle channels (no subscriber, history
    /// kept).
    idle: bool,
    /// Ring position of `entries[0]`; positions count every event the channel ever had.
    head: u64,
    /// One slot per subscriber: the waker to call on the next publish.
    wakers: Slab<Option<Waker>>,
    /// The slots that hold a waker, so a publish wakes the waiting subscribers without
    /// scanning the others. May name a slot twice or a freed one: taking is idempotent.
    waiting: Vec<usize>,
    /// Events of this channel with an order number up to this one may be gone (dropped from
    /// the ring, or published before the channel existed); all later ones are in the ring.
    floor: u64,
}

/// What one [`Ring::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Entries were taken.
    Taken,
    /// Nothing new; the waker was left in the slot.
    Waiting,
    /// An entry above the watermark: a publish is in flight, read again.
    Again,
    /// The cursor fell this many events behind the ring's start.
    Lagged(u64),
}

impl Ring {
    /// An empty ring keeping `capacity` entries; events up to order number `floor` are older
    /// than the channel. With `gauge`, it keeps the channel's subscriber gauge.
    pub(crate) fn new(name: Arc<str>, capacity: usize, floor: u64, gauge: bool) -> Ring {
        Ring {
            subscribers: gauge.then(|| crate::metrics::channel_subscribers(&name)),
            name,
            oldest: AtomicU64::new(u64::MAX),
            state: Mutex::new(State {
                entries: VecDeque::with_capacity(capacity.min(64)),
                capacity,
                bytes: 0,
                idle: false,
                head: 0,
                wakers: Slab::new(),
                waiting: Vec::new(),
                floor,
            }),
        }
    }

    /// Pushes `entry` (dropping the oldest when full), raises `watermark` to it and returns
    /// the wakers to wake once the caller has released its own locks, and the size of the
    /// entry dropped, if one was.
    pub(crate) fn push(
        &self,
        entry: Arc<Entry>,
        watermark: &AtomicU64,
    ) -> (Vec<Waker>, Option<usize>) {
        let mut state = lock(&self.state);
        let dropped = if state.entries.len() == state.capacity {
            state.pop_front()
        } else {
            None
        };
        let seq = entry.seq;
        state.bytes += entry.bytes.len();
        state.entries.push_back(entry);
        self.oldest.store(state.oldest(), Ordering::Relaxed);
        // Under the ring's lock: a reader that sees this entry also sees the watermark.
        watermark.fetch_max(seq, Ordering::Release);
        (state.take_wakers(), dropped)
    }

    /// Drops the oldest entry if its order number is `seq` (the byte budget's oldest); returns
    /// its size, and whether the ring is then empty with no subscriber.
    pub(crate) fn evict(&self, seq: u64) -> Option<(usize, bool)> {
        let mut state = lock(&self.state);
        if state.entries.front()?.seq != seq {
            return None;
        }
        let len = state.pop_front()?;
        self.oldest.store(state.oldest(), Ordering::Relaxed);
        Some((len, state.entries.is_empty() && state.wakers.is_empty()))
    }

    /// Whether the entry with order number `seq`, once pushed here, is still kept. Without a
    /// lock: the answer `false` is final.
    pub(crate) fn holds(&self, seq: u64) -> bool {
        seq >= self.oldest.load(Ordering::Relaxed)
    }

    /// Drops every entry (the ring left the channel map); returns their bytes and count.
    pub(crate) fn clear(&self) -> (usize, usize) {
        let mut state = lock(&self.state);
        let held = (state.bytes, state.entries.len());
        state.entries = VecDeque::new();
        state.bytes = 0;
        self.oldest.store(u64::MAX, Ordering::Relaxed);
        held
    }

    /// The channel's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether the ring holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).entries.is_empty()
    }

    /// Takes every waiting subscriber's waker (on close).
    pub(crate) fn take_wakers(&self) -> Vec<Waker> {
        lock(&self.state).take_wakers()
    }

    /// Takes a wake-up slot for a new subscriber, unless the ring has `max` already; returns
    /// the slot, the position of the next event, and whether the ring was idle (it is not
    /// any more).
    pub(crate) fn join(&self, max: usize) -> Option<(usize, u64, bool)> {
        let taken = {
            let mut state = lock(&self.state);
            (state.wakers.len() < max).then(|| {
                let pos = state.head + state.entries.len() as u64;
                let was_idle = std::mem::take(&mut state.idle);
                (state.wakers.insert(None), pos, was_idle)
            })
        };
        if let (Some(_), Some(gauge)) = (&taken, &self.subscribers) {
            gauge.increment(1.0);
        }
        taken
    }

    /// Frees a subscriber's slot; returns whether the ring has no subscriber left.
    pub(crate) fn leave(&self, slot: usize) -> bool {
        let mut state = lock(&self.state);
        let State {
            wakers, waiting, ..
        } = &mut *state;
        wakers.remove(slot);
        if let Some(gauge) = &self.subscribers {
            gauge.decrement(1.0);
        }
        // Without publishes, churn would leave stale slots in `waiting`: compact.
        if waiting.len() > 2 * wakers.len() + 64 {
            waiting.retain(|slot| wakers.get(*slot).is_some_and(Option::is_some));
            waiting.sort_unstable();
            waiting.dedup();
        }
        wakers.is_empty()
    }

    /// Marks the ring idle if it has no subscriber and holds events; returns whether it did.
    pub(crate) fn mark_idle(&self) -> bool {
        let mut state = lock(&self.state);
        let idle = state.wakers.is_empty() && !state.entries.is_empty() && !state.idle;
        state.idle |= idle;
        idle
    }

    /// Events of this channel up to order number `seq` may be gone: a resume from before it
    /// is incomplete.
    pub(crate) fn raise_floor(&self, seq: u64) {
        let mut state = lock(&self.state);
        state.floor = state.floor.max(seq);
    }

    /// Whether the ring is marked idle.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&self.state).idle
    }

    /// How many subscribers the ring has.
    pub(crate) fn subscriber_count(&self) -> usize {
        lock(&self.state).wakers.len()
    }

    /// The order number of the newest kept entry with the publisher's id `id`.
    pub(crate) fn find_id(&self, id: &str) -> Option<u64> {
        let state = lock(&self.state);
        let entry = state
            .entries
            .iter()
            .rev()
            .find(|e| e.id.as_deref() == Some(id))?;
        Some(entry.seq)
    }

    /// The order number and id of the entry just before position `pos`, if the ring still
    /// keeps it.
    pub(crate) fn before(&self, pos: u64) -> Option<(u64, Box<str>)> {
        let state = lock(&self.state);
        let index = pos.checked_sub(state.head)?.checked_sub(1)?;
        let entry = state.entries.get(usize::try_from(index).ok()?)?;
        let id = match &entry.id {
            Some(id) => id.clone(),
            None => entry.origin.to_string().into(),
        };
        Some((entry.seq, id))
    }

    /// Where a resume after order number `after` starts: the position of the first kept
    /// entry after it, but no more than `history` entries before the end; and whether that
    /// replays every event after `after` (nothing dropped by the ring, nor cut by `history`).
    pub(crate) fn resume_after(&self, after: u64, history: usize) -> (u64, bool) {
        let state = lock(&self.state);
        let kept = state.entries.partition_point(|e| e.seq <= after);
        let newest = state.entries.len().saturating_sub(history);
        let complete = state.floor <= after && kept >= newest;
        (state.head + kept.max(newest) as u64, complete)
    }

    /// Moves a position that fell behind the ring's start up to it.
    pub(crate) fn clamp(&self, pos: u64) -> u64 {
        pos.max(lock(&self.state).head)
    }

    /// Reads from position `*pos`: pushes `(index, entry)` to `out` for the entries up to
    /// `watermark` and `max_bytes` (at least one), moving `*pos` past those `skip` says were
    /// sent already. With nothing to take, leaves `waker` in `slot`.
    #[allow(clippy::too_many_arguments)] // one call site, in the subscription's poll
    #[inline]
    pub(crate) fn read(
        &self,
        pos: &mut u64,
        slot: usize,
        watermark: u64,
        max_bytes: usize,
        skip: impl Fn(&Entry) -> bool,
        (index, out): (usize, &mut Vec<(usize, Arc<Entry>)>),
        waker: &Waker,
    ) -> Read {
        let mut state = lock(&self.state);
        if *pos < state.head {
            return Read::Lagged(state.head - *pos);
        }
        let start = (*pos - state.head) as usize;
        let mut bytes = 0;
        let before = out.len();
        let mut again = false;
        for entry in state.entries.range(start..) {
            if skip(entry) {
                // Sent already (in a replay); these come first in the ring.
                *pos += 1;
                continue;
            }
            if entry.seq > watermark {
                // Published after the watermark was read: its publisher may have taken the
                // wakers already, so read again rather than wait.
                again = true;
                break;
            }
            if bytes >= max_bytes {
                break;
            }
            bytes += entry.bytes.len();
            out.push((index, entry.clone()));
        }
        if out.len() > before {
            return Read::Taken;
        }
        if again {
            return Read::Again;
        }
        let state = &mut *state;
        match &mut state.wakers[slot] {
            Some(old) if old.will_wake(waker) => {}
            Some(old) => old.clone_from(waker),
            empty @ None => {
                *empty = Some(waker.clone());
                state.waiting.push(slot);
            }
        }
        Read::Waiting
    }
}

impl State {
    fn oldest(&self) -> u64 {
        self.entries.front().map_or(u64::MAX, |entry| entry.seq)
    }

    /// Drops the oldest entry; returns its size.
    fn pop_front(&mut self) -> Option<usize> {
        let dropped = self.entries.pop_front()?;
        // Never lowered: `raise_floor` may have put it above every entry.
        self.floor = self.floor.max(dropped.seq);
        self.head += 1;
        self.bytes -= dropped.bytes.len();
        Some(dropped.bytes.len())
    }

    fn take_wakers(&mut self) -> Vec<Waker> {
        let State {
            wakers, waiting, ..
        } = self;
        waiting
            .drain(..)
            .filter_map(|slot| wakers.get_mut(slot)?.take())
            .collect()
    }
}

/// Wakes what [`Ring::push`] or [`Ring::take_wakers`] returned.
pub(crate) fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

#[cfg(all(test, not(tower_sse_loom)))]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            origin: seq,
            id: None,
            bytes: Bytes::from(format!("data: {seq}\n\n")),
        }
    }

    #[test]
    fn a_raised_floor_stays_when_older_entries_drop() {
        let watermark = AtomicU64::new(0);
        let ring = Ring::new("a".into(), 2, 0, false);
        ring.push(Arc::new(entry(1)), &watermark);
        ring.push(Arc::new(entry(2)), &watermark);
        assert_eq!(ring.resume_after(1, 10), (1, true));
        // Events after 2 may have passed this broker by (a lost backend connection).
        ring.raise_floor(3);
        assert_eq!(ring.resume_after(2, 10), (2, false));
        // Dropping entry 1 for room must not lower the floor back to 1.
        ring.push(Arc::new(entry(3)), &watermark);
        assert_eq!(ring.resume_after(2, 10), (2, false));
        assert_eq!(ring.resume_after(3, 10), (3, true));
    }
}
