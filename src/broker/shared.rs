//! The state a broker's handles and subscriptions share: the channel map, the sequencer and
//! watermark, the counts; how an entry enters its ring; and the [`Handle`] a backend feeds
//! remote events through.

use std::{
    sync::{Arc, Weak},
    task::Waker,
};

use dashmap::DashMap;

use super::{
    builder::BrokerBuilder,
    ring::{wake_all, Entry, Ring},
};
use crate::{
    backend::{Backend, Gone, Inbound, Message},
    metrics::Metrics,
    sync::{lock, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering},
};

/// What a broker's handles and subscriptions share.
pub(super) struct Shared {
    pub(super) channels: DashMap<Arc<str>, Arc<Ring>>,
    /// The last order number given out. Held while an event is put in its ring, so events
    /// enter the rings in order.
    pub(super) sequencer: Mutex<u64>,
    /// Every event up to this order number is in its ring. Readers take only those, which
    /// keeps streams over several channels in order.
    pub(super) watermark: AtomicU64,
    /// Open subscriptions, for [`BrokerBuilder::max_subscribers`].
    pub(super) subscribers: AtomicUsize,
    /// The order number of the last event delivered before the backend last lost its data
    /// (0: never). See [`Inbound::data_lost`].
    pub(super) data_lost_at: AtomicU64,
    pub(super) closed: AtomicBool,
    /// How many entries each ring keeps.
    pub(super) capacity: usize,
    pub(super) metrics: Metrics,
    pub(super) config: BrokerBuilder,
    /// Where events travel; `None`: in this process only.
    pub(super) backend: Option<Arc<dyn Backend>>,
}

impl Shared {
    pub(super) fn new(config: BrokerBuilder, backend: Option<Arc<dyn Backend>>) -> Shared {
        // The ring keeps the history (in process) and takes a whole backfill after a backend
        // reconnect (up to the history, what the backend keeps): a subscriber may fall behind
        // by that much before it lags.
        let capacity = config.buffer.max(config.history);
        Shared {
            channels: DashMap::new(),
            sequencer: Mutex::new(0),
            watermark: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            data_lost_at: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity,
            metrics: Metrics::new(),
            config,
            backend,
        }
    }
    /// Whether channels stay after their last subscriber, for their history.
    pub(super) fn keeps_idle_channels(&self) -> bool {
        self.backend.is_none() && self.config.history > 0
    }

    /// Sets the channels gauge; called when an entry was added or removed, never per event or
    /// stream otherwise, since counting takes every shard's lock (so never with an entry held).
    pub(super) fn count_channels(&self) {
        self.metrics.channels.set(self.channels.len() as f64);
    }

    /// The last subscriber of `name` left: remove the channel, unless it keeps history.
    pub(super) fn channel_left(&self, name: &Arc<str>) {
        if self.keeps_idle_channels() {
            return;
        }
        // Checked again under the shard lock: a subscriber may have come meanwhile.
        let removed = self
            .channels
            .remove_if(name, |_, ring| ring.subscriber_count() == 0);
        if removed.is_some() {
            self.count_channels();
            if let Some(backend) = &self.backend {
                backend.release(name.clone());
            }
        }
    }

    /// Puts `entry` in its channel's ring and advances the watermark. The caller holds the
    /// sequencer, so entries arrive in order; it wakes the returned wakers after releasing it.
    pub(super) fn deliver(&self, name: &str, entry: Entry) -> Vec<Waker> {
        let seq = entry.seq;
        if self.keeps_idle_channels() {
            let new = !self.channels.contains_key(name);
            if new {
                self.evict_idle_history();
            }
            let wakers = self
                .channels
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(Ring::new(name, self.capacity, seq - 1)))
                .push(entry, &self.watermark);
            if new {
                self.count_channels();
            }
            wakers
        } else {
            match self.channels.get(name) {
                Some(ring) => ring.push(entry, &self.watermark),
                None => {
                    // Under the shard's read lock, so a subscriber creating this channel next
                    // sees this event as older than the channel.
                    self.watermark.fetch_max(seq, Ordering::Release);
                    Vec::new()
                }
            }
        }
    }

    /// Keeps idle channels with history under the configured count.
    pub(super) fn evict_idle_history(&self) {
        if self.channels.len() < self.config.history_channels {
            return;
        }
        let idle = self
            .channels
            .iter()
            .filter(|c| c.subscriber_count() == 0)
            .count();
        if idle >= self.config.history_channels {
            self.channels.retain(|_, ring| ring.subscriber_count() > 0);
        }
    }
}

/// A broker handle that does not keep it alive: the [`Inbound`] a backend's task holds.
pub(super) struct Handle(Weak<Shared>);

impl Handle {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn new(shared: &Arc<Shared>) -> Handle {
        Handle(Arc::downgrade(shared))
    }

    fn inner(&self) -> Result<Arc<Shared>, Gone> {
        self.0.upgrade().ok_or(Gone)
    }
}

impl Inbound for Handle {
    /// Delivers with the next local order number: the backend's sequence numbers may start
    /// again lower after it lost its data, and the watermark must still order streams over
    /// several channels.
    fn deliver(&self, channel: &str, message: Message) -> Result<(), Gone> {
        let inner = self.inner()?;
        let wakers = {
            let mut last = lock(&inner.sequencer);
            *last += 1;
            let entry = Entry {
                seq: *last,
                origin: message.seq,
                id: message.id,
                bytes: message.bytes,
            };
            inner.deliver(channel, entry)
        };
        wake_all(wakers);
        Ok(())
    }

    /// The events delivered from now on may reuse sequence numbers that resumed streams
    /// already had in their replay, so those streams must not skip them.
    fn data_lost(&self) -> Result<(), Gone> {
        let inner = self.inner()?;
        // An order number of its own, so it is after every replay read before it.
        let mut last = lock(&inner.sequencer);
        *last += 1;
        inner.data_lost_at.store(*last, Ordering::Release);
        Ok(())
    }

    fn has_channel(&self, channel: &str) -> Result<bool, Gone> {
        Ok(self.inner()?.channels.contains_key(channel))
    }
}
