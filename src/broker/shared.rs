//! The state a broker's handles and subscriptions share: the channel map, the sequencer and
//! watermark, the counts; how an entry enters its ring; and the [`Handle`] a backend feeds
//! remote events through.

use std::{
    sync::{Arc, OnceLock, Weak},
    task::Waker,
};

use dashmap::DashMap;

use super::{
    builder::BrokerBuilder,
    drain::Plan,
    retention::{ChannelMap, Retention},
    ring::{Entry, Ring, wake_all},
};
use crate::{
    backend::{Backend, Gone, Inbound, Message},
    error::PublishError,
    event::{Event, finish},
    metrics::Metrics,
    sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering, lock},
};

/// What a broker's handles and subscriptions share.
pub(super) struct Shared {
    pub(super) channels: DashMap<Arc<str>, Arc<Ring>>,
    /// Held while an event is put in its ring, so events enter the rings in order.
    pub(super) sequencer: Mutex<Sequencer>,
    /// Every event up to this order number is in its ring. Readers take only those, which
    /// keeps streams over several channels in order.
    pub(super) watermark: AtomicU64,
    /// The order numbers of this broker start after this one (see
    /// [`BrokerBuilder::id_base`]); an id at or below it is from another start.
    pub(super) base: u64,
    /// Open subscriptions, for [`BrokerBuilder::max_subscribers`].
    pub(super) subscribers: AtomicUsize,
    /// Rings marked idle (no subscriber, history kept), for
    /// [`BrokerBuilder::history_channels`].
    pub(super) idle: AtomicUsize,
    /// The order number of the last event delivered before the backend last lost its data
    /// (0: never). See [`Inbound::data_lost`].
    pub(super) data_lost_at: AtomicU64,
    pub(super) closed: AtomicBool,
    /// Set by the first [`Broker::drain`](crate::Broker::drain).
    pub(super) drain: OnceLock<Plan>,
    /// How many entries each ring keeps.
    pub(super) capacity: usize,
    pub(super) metrics: Metrics,
    pub(super) config: BrokerBuilder,
    /// Where events travel; `None`: in this process only.
    pub(super) backend: Option<Arc<dyn Backend>>,
}

/// What the sequencer lock guards.
pub(super) struct Sequencer {
    /// The last order number given out.
    pub(super) last: u64,
    /// The backend's sequence number of the last event delivered through [`Handle`], when
    /// the last order number went to it: a message of several channels comes once per
    /// channel, one after the other, and takes one order number, so that a stream over
    /// several of them sends it once.
    pub(super) last_origin: Option<u64>,
    pub(super) retention: Retention,
}

impl Shared {
    pub(super) fn new(config: BrokerBuilder, backend: Option<Arc<dyn Backend>>) -> Shared {
        // The ring keeps the history (in process) and takes a whole backfill after a backend
        // reconnect (up to the history, what the backend keeps): a subscriber may fall behind
        // by that much before it lags.
        let capacity = config.buffer.max(config.history);
        // A backend with history numbers the events itself; then the numbers here only order
        // them.
        let base = if backend.as_ref().is_none_or(|b| !b.keeps_history()) {
            config.id_base.unwrap_or_else(clock_base)
        } else {
            0
        };
        Shared {
            channels: DashMap::new(),
            sequencer: Mutex::new(Sequencer {
                last: base,
                last_origin: None,
                retention: Retention::new(config.max_retained_bytes, config.history_channels),
            }),
            watermark: AtomicU64::new(base),
            base,
            subscribers: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            data_lost_at: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            drain: OnceLock::new(),
            capacity,
            metrics: Metrics::new(),
            config,
            backend,
        }
    }

    /// Checks a publish: the channel names, the event, the id's length, closed.
    pub(super) fn check<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a str>,
        event: &Event,
    ) -> Result<(), PublishError> {
        let config = &self.config;
        for channel in channels {
            config.rules.check_name(channel)?;
        }
        event.validate()?;
        if event
            .get_id()
            .is_some_and(|id| id.len() > config.max_id_len)
        {
            return Err(PublishError::IdTooLong {
                limit: config.max_id_len,
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        Ok(())
    }

    /// Publishes in this process, one event with one order number in each of `channels`' rings
    /// (so a stream over several of them sends it once). The event is encoded before the
    /// sequencer is taken, all but the `id:` line when the id is the sequence number, so a
    /// large event holds up no other publisher.
    pub(super) fn publish<'a, I>(&self, channels: I, event: &Event) -> Result<String, PublishError>
    where
        I: IntoIterator<Item = &'a str> + Clone,
    {
        self.check(channels.clone(), event)?;
        let inner = self;
        let given = event.get_id();
        let encoded = match given {
            Some(id) => Ok(event.encode(Some(id))),
            // Room for the longest `id: {u64}` line.
            None => Err(event.encode_head(30)),
        };
        let mut wakers = Vec::new();
        let id;
        {
            let mut sequencer = lock(&inner.sequencer);
            if inner.closed.load(Ordering::Acquire) {
                return Err(PublishError::Closed);
            }
            let seq = sequencer.last + 1;
            let bytes = match encoded {
                Ok(bytes) => {
                    id = given.unwrap_or_default().to_owned();
                    bytes
                }
                Err(head) => {
                    id = seq.to_string();
                    finish(head, Some(&id))
                }
            };
            let entry = Arc::new(Entry {
                seq,
                origin: seq,
                bytes,
                id: given.map(Into::into),
            });
            for channel in channels {
                wakers.extend(inner.deliver(&mut sequencer, channel, entry.clone()));
            }
            sequencer.last = seq;
            // Not a backend's number: the next delivery takes an order number of its own.
            sequencer.last_origin = None;
        }
        wake_all(wakers);
        Ok(id)
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

    fn map(&self) -> ChannelMap<'_> {
        ChannelMap {
            map: &self.channels,
            idle: &self.idle,
        }
    }

    /// A new ring for channel `name`: events up to `floor` are older than it.
    pub(super) fn new_ring(&self, name: Arc<str>, floor: u64) -> Arc<Ring> {
        let gauge = self.config.channel_metrics;
        Arc::new(Ring::new(name, self.capacity, floor, gauge))
    }

    /// The last subscriber of `ring` left: remove it, or count it idle if it keeps history.
    pub(super) fn channel_left(&self, ring: &Arc<Ring>) {
        let (removed, changed) = {
            let mut sequencer = lock(&self.sequencer);
            let retention = &mut sequencer.retention;
            let before = retention.removed();
            if self.keeps_idle_channels() {
                retention.idle(&self.map(), ring);
            } else {
                retention.remove(&self.map(), ring);
            }
            (retention.take_removed(), retention.removed() != before)
        };
        self.release(removed);
        if changed {
            self.count_channels();
        }
    }

    /// The channels `removed` left the map: the backend no longer needs to bring their events.
    fn release(&self, removed: Vec<Arc<str>>) {
        if let Some(backend) = &self.backend {
            for name in removed {
                backend.release(name);
            }
        }
    }

    /// Puts `entry` in channel `name`'s ring and advances the watermark, under the sequencer
    /// (so entries arrive in order); returns the wakers to wake after releasing it.
    pub(super) fn deliver(
        &self,
        sequencer: &mut MutexGuard<'_, Sequencer>,
        name: &str,
        entry: Arc<Entry>,
    ) -> Vec<Waker> {
        let seq = entry.seq;
        let len = entry.bytes.len();
        // Raised first: a subscriber creating this channel from now on takes the watermark
        // as its ring's floor, so this event is older than its ring or goes into it. Readers
        // meanwhile see no entry above it in any ring (the sequencer is ours).
        self.watermark.fetch_max(seq, Ordering::Release);
        // Rings are removed only under the sequencer, so this one stays while we push.
        let found = self.channels.get(name).map(|ring| ring.clone());
        let (ring, created) = match found {
            Some(ring) => (ring, false),
            None if self.keeps_idle_channels() => {
                let mut created = false;
                let ring = self
                    .channels
                    .entry(Arc::from(name))
                    .or_insert_with(|| {
                        created = true;
                        self.new_ring(Arc::from(name), seq - 1)
                    })
                    .clone();
                (ring, created)
            }
            None => return Vec::new(),
        };
        let (wakers, dropped) = ring.push(entry, &self.watermark);
        let map = self.map();
        let before = sequencer.retention.removed();
        sequencer.retention.pushed(&map, &ring, seq, len, dropped);
        if created {
            // Born without subscribers: idle from the start.
            sequencer.retention.idle(&map, &ring);
        }
        if created || sequencer.retention.removed() != before {
            self.count_channels();
        }
        // Evicted for the byte budget: a channel whose last subscriber was leaving may go here
        // rather than in `channel_left`, and its backend subscription with it.
        self.release(sequencer.retention.take_removed());
        self.metrics
            .retained
            .set(sequencer.retention.bytes() as f64);
        wakers
    }
}

/// The default [`BrokerBuilder::id_base`]: the start time in milliseconds since the Unix epoch,
/// times one million. Ids of a later start are then all greater than those of an earlier one
/// (unless a run published a million events per millisecond of its life, or the clock went
/// back), and an id from before a restart reads as from another start.
fn clock_base() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    u64::try_from(ms)
        .unwrap_or(u64::MAX / 1_000_000)
        .saturating_mul(1_000_000)
}

/// A broker handle that does not keep it alive: the [`Inbound`] a backend's task holds
/// (unused without a backend feature).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) struct Handle(Weak<Shared>);

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Handle {
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
            let mut sequencer = lock(&inner.sequencer);
            if !message.global || sequencer.last_origin != Some(message.seq) {
                sequencer.last += 1;
                sequencer.last_origin = message.global.then_some(message.seq);
            }
            let entry = Entry {
                seq: sequencer.last,
                origin: message.seq,
                id: message.id,
                bytes: message.bytes,
            };
            inner.deliver(&mut sequencer, channel, Arc::new(entry))
        };
        wake_all(wakers);
        Ok(())
    }

    /// The events delivered from now on may reuse sequence numbers that resumed streams
    /// already had in their replay, so those streams must not skip them.
    fn data_lost(&self) -> Result<(), Gone> {
        let inner = self.inner()?;
        // An order number of its own, so it is after every replay read before it.
        let mut sequencer = lock(&inner.sequencer);
        sequencer.last += 1;
        sequencer.last_origin = None;
        inner.data_lost_at.store(sequencer.last, Ordering::Release);
        Ok(())
    }

    fn has_channel(&self, channel: &str) -> Result<bool, Gone> {
        Ok(self.inner()?.channels.contains_key(channel))
    }

    fn publish(&self, channel: &str, event: &Event) -> Result<Result<String, PublishError>, Gone> {
        Ok(self.inner()?.publish([channel], event))
    }

    /// Raises the floor of each channel's ring to the next order number, so that a resume
    /// after any event delivered before now is incomplete (and one after the next, complete).
    fn missed(&self, channels: &[Arc<str>]) -> Result<(), Gone> {
        let inner = self.inner()?;
        // Under the sequencer: no event is numbered meanwhile.
        let sequencer = lock(&inner.sequencer);
        for name in channels {
            if let Some(ring) = inner.channels.get(&**name) {
                ring.raise_floor(sequencer.last + 1);
            }
        }
        Ok(())
    }
}
