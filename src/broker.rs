//! [`Broker`]: the registry of channels, publish and subscribe.
//!
//! The broker holds a [`DashMap`] from channel name to that channel's broadcaster. A
//! broadcaster is one ring of the channel's latest encoded events plus a wake-up slot per
//! subscriber; a subscriber is just a position in the ring. So one publish costs one encoding,
//! one push and one wake-up per waiting subscriber, whatever the number of subscribers, and a
//! subscriber costs a few words, not a queue.
//!
//! # Ids and ordering
//!
//! Every published event gets a sequence number from one counter per broker, so "newer than"
//! means the same thing on every channel. The id a client sees is the publisher's
//! ([`Event::id`]) or, without one, the sequence number in decimal. A stream over several
//! channels delivers their events in sequence order, and never delivers an event before all
//! older events of its channels: so the last id a client saw is a clean point to resume from.
//!
//! # Slow subscribers
//!
//! Each channel keeps its last `max(buffer, history)` events ([`BrokerBuilder::buffer`], default
//! 256; [`BrokerBuilder::history`], default 0). A subscriber that falls further behind than that
//! never holds up the publisher or anyone else: the events it missed are simply gone from the
//! ring. What happens to it is the [`LagPolicy`]: by default it is disconnected (its stream ends
//! after a `: lagged` comment, and an `EventSource` reconnects with `Last-Event-ID`); with
//! [`LagPolicy::Skip`] it jumps to the oldest event still kept and goes on.
//!
//! # Memory
//!
//! A channel's entry exists while it has subscribers, or while it keeps history (then the
//! [history limit](BrokerBuilder::history_channels) bounds how many idle channels stay). With
//! history off, the entry goes when its last subscriber leaves, so a churn of channel names
//! can't grow memory.
//!
//! # Shutdown
//!
//! [`Broker::close`] refuses further publishes and ends every stream once it has delivered the
//! events already published.

use std::{
    collections::VecDeque,
    error::Error as StdError,
    fmt,
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use slab::Slab;

use crate::{
    channel::{ChannelError, ChannelRules, Channels},
    event::{Event, EventError},
    metrics::Metrics,
};

/// What happens to a subscriber that falls more than the buffer behind.
///
/// ```
/// use tower_sse::{Broker, LagPolicy};
///
/// let broker = Broker::builder().lag_policy(LagPolicy::Skip).build();
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// End its stream, after a `: lagged by N events` comment (the default, as flask-queue-sse
    /// drops a listener whose queue is full). A browser reconnects and, with history on,
    /// resumes from its `Last-Event-ID`.
    #[default]
    Disconnect,
    /// Skip to the oldest event still kept, after a `: lagged by N events` comment, and go on.
    Skip,
}

/// Settings of a [`Broker`]; from [`Broker::builder`].
///
/// ```
/// use tower_sse::Broker;
///
/// let broker = Broker::builder().buffer(1024).history(100).build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BrokerBuilder {
    buffer: usize,
    history: usize,
    history_channels: usize,
    lag_policy: LagPolicy,
    rules: ChannelRules,
    max_subscribers: usize,
    max_subscribers_per_channel: usize,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        BrokerBuilder {
            buffer: 256,
            history: 0,
            history_channels: 10_000,
            lag_policy: LagPolicy::Disconnect,
            rules: ChannelRules::default(),
            max_subscribers: 100_000,
            max_subscribers_per_channel: 20_000,
        }
    }
}

impl BrokerBuilder {
    /// How many events a subscriber may fall behind before the [`LagPolicy`] applies (default
    /// 256, at least 1), or the [history](BrokerBuilder::history) if that is larger: those
    /// events are kept anyway. The events are shared by all subscribers of a channel, so this
    /// costs memory per channel, not per subscriber. With Redis it also bounds what a backfill
    /// after a reconnect can deliver at once without lagging subscribers.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().buffer(16).build();
    /// ```
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// How many past events each channel keeps for resuming with `Last-Event-ID` (default 0:
    /// off). A channel with history stays after its last subscriber leaves.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().history(1000).build();
    /// ```
    pub fn history(mut self, events: usize) -> Self {
        self.history = events;
        self
    }

    /// With history on, how many channels without subscribers may keep their history
    /// (default 10,000). Past it, publishing to a new channel with no subscribers forgets the
    /// history of idle channels, so a churn of channel names can't grow memory without bound.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().history(100).history_channels(500).build();
    /// ```
    pub fn history_channels(mut self, channels: usize) -> Self {
        self.history_channels = channels;
        self
    }

    /// What happens to a subscriber that falls behind (default [`LagPolicy::Disconnect`]).
    ///
    /// ```
    /// # use tower_sse::{Broker, LagPolicy};
    /// let broker = Broker::builder().lag_policy(LagPolicy::Skip).build();
    /// ```
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// How many subscriptions the broker takes in all (default 100,000); past it, subscribing
    /// fails with [`PublishError::TooManySubscribers`] and [`SseService`](crate::SseService)
    /// answers `503 Service Unavailable` with `Retry-After`. An idle stream costs a socket and
    /// about a kilobyte here, and its connection's buffers in the server: 100,000 is what a
    /// server with the default `ulimit -n` raised (and a few GiB of memory) holds, so the limit
    /// turns an exhausted machine into clean, retryable refusals.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().max_subscribers(10_000).build();
    /// ```
    pub fn max_subscribers(mut self, subscribers: usize) -> Self {
        self.max_subscribers = subscribers;
        self
    }

    /// How many subscribers one channel takes (default 20,000), so one popular or hostile
    /// channel can't take every slot of [`max_subscribers`](BrokerBuilder::max_subscribers).
    /// Past it, subscribing fails with [`PublishError::TooManySubscribers`].
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().max_subscribers_per_channel(1_000).build();
    /// ```
    pub fn max_subscribers_per_channel(mut self, subscribers: usize) -> Self {
        self.max_subscribers_per_channel = subscribers;
        self
    }

    /// The rules channel names must follow, checked on publish (default
    /// [`ChannelRules::default`]).
    ///
    /// ```
    /// # use tower_sse::{Broker, ChannelRules};
    /// let broker = Broker::builder().channel_rules(ChannelRules::default().max_len(64)).build();
    /// ```
    pub fn channel_rules(mut self, rules: ChannelRules) -> Self {
        self.rules = rules;
        self
    }

    /// Builds an in-process broker.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().build();
    /// assert_eq!(broker.channel_count(), 0);
    /// ```
    pub fn build(self) -> Broker {
        Broker {
            inner: Arc::new(self.into_inner(Backend::Local)),
        }
    }

    fn into_inner(self, backend: Backend) -> Inner {
        // The ring keeps the history (in process) and takes a whole backfill after a Redis
        // reconnect (up to the history, what Redis keeps): a subscriber may fall behind by
        // that much before it lags.
        let capacity = self.buffer.max(self.history);
        Inner {
            channels: DashMap::new(),
            sequencer: Mutex::new(0),
            watermark: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            #[cfg(feature = "redis")]
            data_lost_at: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity,
            metrics: Metrics::new(),
            config: self,
            backend,
        }
    }

    /// Builds a broker on Redis (feature `redis`): every broker on the same Redis shares
    /// channels, ids and history. See the [`redis`](crate::redis) module.
    ///
    /// # Errors
    ///
    /// The URL is invalid or Redis can't be reached.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sse::PublishError> {
    /// let broker = tower_sse::Broker::builder()
    ///     .history(1000)
    ///     .connect_redis("redis://127.0.0.1:6379/")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn connect_redis(self, url: &str) -> Result<Broker, PublishError> {
        let (backend, task) = crate::redis::RedisBackend::connect(url, &self)
            .await
            .map_err(PublishError::backend)?;
        let broker = Broker {
            inner: Arc::new(self.into_inner(Backend::Redis(backend))),
        };
        task.spawn(WeakBroker(Arc::downgrade(&broker.inner)));
        Ok(broker)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn history_len(&self) -> usize {
        self.history
    }
}

/// The channel registry: publish events to channels, subscribe streams to them.
///
/// Cheap to clone (an `Arc`); every clone is the same broker. See the [module
/// docs](crate::broker) for ordering, slow subscribers and memory.
///
/// ```
/// use tower_sse::{Broker, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::PublishError> {
/// let broker = Broker::new();
/// let channels = broker.channel_rules().parse_query(Some("channel=news")).unwrap();
/// let mut subscription = broker.subscribe(&channels).await?;
///
/// let id = broker.publish("news", Event::default().data("hi")).await?;
/// assert_eq!(id, "1");
/// assert_eq!(subscription.recv().await.unwrap(), "data: hi\nid: 1\n\n");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// A broker handle that does not keep it alive: what the Redis task holds.
#[cfg(feature = "redis")]
#[derive(Clone)]
pub(crate) struct WeakBroker(std::sync::Weak<Inner>);

#[cfg(feature = "redis")]
impl WeakBroker {
    pub(crate) fn upgrade(&self) -> Option<Broker> {
        self.0.upgrade().map(|inner| Broker { inner })
    }
}

struct Inner {
    channels: DashMap<Arc<str>, Arc<Channel>>,
    /// The last sequence number given out. Held while an event is put in its ring, so events
    /// enter the rings in sequence order.
    sequencer: Mutex<u64>,
    /// Every event up to this sequence number is in its ring. Readers take only those, which
    /// keeps streams over several channels in sequence order.
    watermark: AtomicU64,
    /// Open subscriptions, for [`BrokerBuilder::max_subscribers`].
    subscribers: AtomicUsize,
    /// The order number of the last event delivered before the backend last lost its data
    /// (0: never). See [`Broker::data_lost`].
    #[cfg(feature = "redis")]
    data_lost_at: AtomicU64,
    closed: AtomicBool,
    capacity: usize,
    metrics: Metrics,
    config: BrokerBuilder,
    backend: Backend,
}

/// Where events travel between publishers and this broker's channels.
pub(crate) enum Backend {
    /// In this process: publish puts the event straight into its channel.
    Local,
    /// Through Redis: publish goes to Redis, and one subscription per channel brings every
    /// instance's events back into its channels.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisBackend),
}

struct Channel {
    state: Mutex<ChannelState>,
    /// [`crate::metrics::CHANNEL_SUBSCRIBERS`] for this channel.
    subscribers: ::metrics::Gauge,
}

struct ChannelState {
    ring: VecDeque<Arc<Entry>>,
    /// Ring position of `ring[0]`; positions count every event the channel ever had.
    head: u64,
    /// One slot per subscriber: the waker to call on the next publish.
    wakers: Slab<Option<Waker>>,
    /// The slots that hold a waker, so a publish wakes the waiting subscribers without
    /// scanning the others. May name a slot twice or a freed one: taking is idempotent.
    waiting: Vec<usize>,
    /// Events of this channel with a sequence number up to this one may be gone (dropped from
    /// the ring, or published before the channel existed); all later ones are in the ring.
    floor: u64,
}

/// One published event, encoded once and shared by every subscriber.
#[derive(Debug)]
pub(crate) struct Entry {
    /// This broker's order number: events enter the rings in this order, and the watermark
    /// and floors count it.
    pub(crate) seq: u64,
    /// The sequence number the id comes from: `seq` in process, the Redis counter's value
    /// for events that came through Redis.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) origin: u64,
    /// The publisher's id; `None` when the id is `seq`.
    pub(crate) id: Option<Box<str>>,
    pub(crate) bytes: Bytes,
}

impl Entry {
    fn has_id(&self, id: &str) -> bool {
        self.id.as_deref() == Some(id)
    }
}

/// A sequence number written as the broker writes them: decimal digits, no sign, no leading
/// zero. Other spellings are other ids.
pub(crate) fn parse_seq(id: &str) -> Option<u64> {
    if id.starts_with(['+', '0']) {
        return None;
    }
    id.parse().ok()
}

/// How a subscription's `Last-Event-ID` was taken; see [`Broker::resume`].
///
/// ```
/// # use tower_sse::{broker::Resume, Broker};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// let channels = broker.channel_rules().parse_query(None).unwrap();
/// let subscription = broker.resume(&channels, "no-such-id").await.unwrap();
/// assert_eq!(subscription.resume(), Resume::Unknown);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// Every event after the id is replayed, then live events.
    Complete,
    /// The events after the id are replayed as far as they are kept, but some are gone (the
    /// id is older than the history): the client should reload its state.
    Gap,
    /// The id is not one this broker knows: live events only.
    Unknown,
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new()
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("channels", &self.inner.channels.len())
            .field("closed", &self.is_closed())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Inner {
    /// Whether channels stay after their last subscriber, for their history.
    fn keeps_idle_channels(&self) -> bool {
        matches!(self.backend, Backend::Local) && self.config.history > 0
    }

    /// Sets the channels gauge; called when an entry was added or removed, never per event or
    /// stream otherwise, since counting takes every shard's lock (so never with an entry held).
    fn count_channels(&self) {
        self.metrics.channels.set(self.channels.len() as f64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something ever did, the data is still
    // consistent (every update is a single push or remove), so go on.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// An in-process broker with the default settings (buffer 256, no history, disconnect
    /// laggards).
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// ```
    pub fn new() -> Broker {
        Broker::builder().build()
    }

    /// A builder to change the settings.
    ///
    /// ```
    /// let broker = tower_sse::Broker::builder().buffer(64).build();
    /// ```
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The channel rules this broker checks names against.
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert!(broker.channel_rules().check_name("news").is_ok());
    /// ```
    pub fn channel_rules(&self) -> &ChannelRules {
        &self.inner.config.rules
    }

    /// Publishes `event` to `channel` and returns the event's id: the publisher's, or the
    /// sequence number assigned.
    ///
    /// The event is encoded once, here; every subscriber gets the same bytes. Publishing to a
    /// channel nobody listens to (and without history) delivers nothing and still succeeds, as
    /// with flask-sse.
    ///
    /// # Errors
    ///
    /// [`PublishError::Event`] for an invalid event, [`PublishError::Channel`] for an invalid
    /// channel name, [`PublishError::Closed`] after [`Broker::close`]. On error nothing is
    /// published.
    ///
    /// ```
    /// # use tower_sse::{Broker, Event, PublishError, EventError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broker = Broker::new();
    /// assert_eq!(broker.publish("sse", Event::default().id("a")).await.unwrap(), "a");
    /// assert_eq!(broker.publish("sse", Event::default()).await.unwrap(), "2");
    /// assert!(matches!(
    ///     broker.publish("sse", Event::default().id("\n")).await,
    ///     Err(PublishError::Event(EventError::Id))
    /// ));
    /// # }
    /// ```
    pub async fn publish(&self, channel: &str, event: Event) -> Result<String, PublishError> {
        let published = match &self.inner.backend {
            Backend::Local => self.publish_local(channel, &event),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => match self.check(channel, &event) {
                Ok(()) => redis.publish(channel, &event).await,
                Err(err) => Err(err),
            },
        };
        match &published {
            Ok(_) => self.inner.metrics.published.increment(1),
            Err(err) => {
                tracing::debug!(channel, %err, "publish refused");
                crate::metrics::publish_error(err);
            }
        }
        published
    }

    fn check(&self, channel: &str, event: &Event) -> Result<(), PublishError> {
        self.inner.config.rules.check_name(channel)?;
        event.validate()?;
        if self.is_closed() {
            return Err(PublishError::Closed);
        }
        Ok(())
    }

    fn publish_local(&self, channel: &str, event: &Event) -> Result<String, PublishError> {
        self.check(channel, event)?;
        let inner = &*self.inner;
        let wakers;
        let id;
        {
            let mut last = lock(&inner.sequencer);
            if inner.closed.load(Ordering::Acquire) {
                return Err(PublishError::Closed);
            }
            let seq = *last + 1;
            let entry = match event.get_id() {
                Some(given) => {
                    id = given.to_owned();
                    Entry {
                        seq,
                        origin: seq,
                        bytes: event.encode(Some(given)),
                        id: Some(given.into()),
                    }
                }
                None => {
                    id = seq.to_string();
                    Entry {
                        seq,
                        origin: seq,
                        bytes: event.encode(Some(&id)),
                        id: None,
                    }
                }
            };
            wakers = self.deliver(channel, entry);
            *last = seq;
        }
        wake_all(wakers);
        Ok(id)
    }

    /// Puts `entry` in its channel's ring and advances the watermark. The caller holds the
    /// sequencer, so entries arrive in sequence order; it wakes the returned wakers after
    /// releasing it.
    fn deliver(&self, name: &str, entry: Entry) -> Vec<Waker> {
        let inner = &*self.inner;
        let seq = entry.seq;
        let wakers = if inner.keeps_idle_channels() {
            let new = !inner.channels.contains_key(name);
            if new {
                self.evict_idle_history();
            }
            let wakers = inner
                .channels
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(Channel::new(name, inner.capacity, seq - 1)))
                .push(entry, inner.capacity, &inner.watermark);
            if new {
                inner.count_channels();
            }
            wakers
        } else {
            match inner.channels.get(name) {
                Some(channel) => channel.push(entry, inner.capacity, &inner.watermark),
                None => {
                    // Under the shard's read lock, so a subscriber creating this channel next
                    // sees this event as older than the channel.
                    inner.watermark.fetch_max(seq, Ordering::Release);
                    Vec::new()
                }
            }
        };
        wakers
    }

    /// Delivers an event that came through the backend, with the next local order number:
    /// the backend's sequence numbers may start again lower after Redis lost its data, and the
    /// watermark must still order streams over several channels.
    #[cfg(feature = "redis")]
    pub(crate) fn deliver_remote(&self, name: &str, mut entry: Entry) {
        let wakers = {
            let mut last = lock(&self.inner.sequencer);
            *last += 1;
            entry.seq = *last;
            self.deliver(name, entry)
        };
        wake_all(wakers);
    }

    /// The backend lost its data (Redis restarted empty): the events it delivers from now on
    /// may reuse sequence numbers that resumed streams already had in their replay, so those
    /// streams must not skip them.
    #[cfg(feature = "redis")]
    pub(crate) fn data_lost(&self) {
        // An order number of its own, so it is after every replay read before it.
        let mut last = lock(&self.inner.sequencer);
        *last += 1;
        self.inner.data_lost_at.store(*last, Ordering::Release);
    }

    /// Whether a channel with this name exists here now.
    #[cfg(feature = "redis")]
    pub(crate) fn has_channel(&self, name: &str) -> bool {
        self.inner.channels.contains_key(name)
    }

    /// Keeps idle channels with history under the configured count.
    fn evict_idle_history(&self) {
        let inner = &*self.inner;
        if inner.channels.len() < inner.config.history_channels {
            return;
        }
        let idle = inner
            .channels
            .iter()
            .filter(|c| lock(&c.state).wakers.is_empty())
            .count();
        if idle >= inner.config.history_channels {
            inner
                .channels
                .retain(|_, channel| !lock(&channel.state).wakers.is_empty());
        }
    }

    /// Subscribes to `channels`, starting with the next event published.
    ///
    /// # Errors
    ///
    /// [`PublishError::Closed`] after [`Broker::close`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let broker = tower_sse::Broker::new();
    /// let channels = broker.channel_rules().parse_query(Some("channel=a,b")).unwrap();
    /// let subscription = broker.subscribe(&channels).await.unwrap();
    /// assert_eq!(broker.subscriber_count("a"), 1);
    /// drop(subscription);
    /// assert_eq!(broker.subscriber_count("a"), 0);
    /// # }
    /// ```
    pub async fn subscribe(&self, channels: &Channels) -> Result<Subscription, PublishError> {
        self.subscribe_after(channels, None).await
    }

    /// Subscribes to `channels`, first replaying the kept events newer than `last_event_id`
    /// (what a reconnecting `EventSource` sends in `Last-Event-ID`), then live events: no
    /// event is missed or sent twice between the two, on one channel or several.
    ///
    /// How the id is read, and what [`Subscription::resume`] then says:
    ///
    /// - a sequence number as the broker writes them (decimal, no sign, no leading zero) no
    ///   greater than the last one: the events after it ([`Resume::Complete`], or
    ///   [`Resume::Gap`] if some channel has already dropped events newer than it). So an id
    ///   older than the history replays everything kept and reports the gap, as Mercure does;
    /// - otherwise, a publisher's id ([`Event::id`]) of an event still kept on one of the
    ///   channels: the events after that event (again complete or gap). Publisher ids that
    ///   look like sequence numbers are read as sequence numbers, so give non-numeric ids;
    /// - otherwise ([`Resume::Unknown`]: a foreign id, an id from before a restart): live
    ///   events only.
    ///
    /// Events are kept by the [history](BrokerBuilder::history), and while a channel has
    /// subscribers, by its [buffer](BrokerBuilder::buffer).
    ///
    /// # Errors
    ///
    /// [`PublishError::Closed`] after [`Broker::close`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_sse::{broker::Resume, Broker, Event};
    ///
    /// let broker = Broker::builder().history(100).build();
    /// for data in ["a", "b", "c"] {
    ///     broker.publish("sse", Event::default().data(data)).await.unwrap();
    /// }
    /// let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.resume(&channels, "1").await.unwrap();
    /// assert_eq!(subscription.resume(), Resume::Complete);
    /// assert_eq!(subscription.recv().await.unwrap(), "data: b\nid: 2\n\ndata: c\nid: 3\n\n");
    /// # }
    /// ```
    pub async fn resume(
        &self,
        channels: &Channels,
        last_event_id: &str,
    ) -> Result<Subscription, PublishError> {
        self.subscribe_after(channels, Some(last_event_id)).await
    }

    async fn subscribe_after(
        &self,
        channels: &Channels,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, PublishError> {
        let subscribed = self.subscribe_backend(channels, last_event_id).await;
        match &subscribed {
            Ok(_) => tracing::debug!(channels = ?channels.names(), "subscribed"),
            Err(err) => {
                tracing::debug!(channels = ?channels.names(), %err, "subscription refused");
                crate::metrics::subscribe_error(err);
            }
        }
        subscribed
    }

    async fn subscribe_backend(
        &self,
        channels: &Channels,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, PublishError> {
        match &self.inner.backend {
            Backend::Local => self.subscribe_local(channels, last_event_id),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => {
                // Registered here first, then subscribed in Redis: a release of the same
                // channel queued before us then sees our subscriber and keeps the subscription.
                let mut subscription = self.subscribe_local(channels, None)?;
                redis.ensure(channels).await?;
                if let Some(id) = last_event_id {
                    // Read before the replay: a data loss noticed from now on may have
                    // happened before the replay was read, so don't skip what follows it
                    // (a duplicate at worst, never a lost event).
                    let after = *lock(&self.inner.sequencer);
                    let replay = redis.replay(channels, id).await?;
                    tracing::debug!(last_event_id = id, resume = ?replay.resume, "resume");
                    subscription.resume = replay.resume;
                    subscription.skip = Some(Skip {
                        until: replay.snapshot,
                        after,
                    });
                    subscription.replay = replay.entries.into();
                }
                Ok(subscription)
            }
        }
    }

    fn subscribe_local(
        &self,
        channels: &Channels,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, PublishError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        let config = &inner.config;
        // Counted before anything else, and given back by the subscription's drop, also when
        // it fails halfway below.
        let total = inner.subscribers.fetch_add(1, Ordering::AcqRel);
        inner.metrics.subscribers.increment(1.0);
        let mut subscription = Subscription {
            broker: self.clone(),
            cursors: Vec::with_capacity(channels.len()),
            scratch: Vec::new(),
            replay: VecDeque::new(),
            #[cfg(feature = "redis")]
            skip: None,
            resume: Resume::Live,
            done: false,
        };
        if total >= config.max_subscribers {
            return Err(PublishError::TooManySubscribers {
                channel: None,
                limit: config.max_subscribers,
            });
        }
        for name in channels.names() {
            // The entry guard holds the shard lock while the slot is taken, so the channel
            // can't be removed in between (removal takes the same lock). For the same reason
            // a new channel's floor is exact: a publish that found no channel has already
            // moved the watermark.
            let mut created = false;
            let entry = inner.channels.entry(name.clone()).or_insert_with(|| {
                created = true;
                Arc::new(Channel::new(
                    name,
                    inner.capacity,
                    inner.watermark.load(Ordering::Acquire),
                ))
            });
            let channel = entry.value().clone();
            let taken = {
                let mut state = lock(&channel.state);
                (state.wakers.len() < config.max_subscribers_per_channel).then(|| {
                    (
                        state.wakers.insert(None),
                        state.head + state.ring.len() as u64,
                    )
                })
            };
            drop(entry);
            if created {
                inner.count_channels();
            }
            if taken.is_some() {
                channel.subscribers.increment(1.0);
            }
            let Some((slot, pos)) = taken else {
                return Err(PublishError::TooManySubscribers {
                    channel: Some(name.clone()),
                    limit: config.max_subscribers_per_channel,
                });
            };
            subscription.cursors.push(Cursor {
                name: name.clone(),
                channel,
                pos,
                slot,
            });
        }
        let resume = match last_event_id {
            None => Resume::Live,
            Some(id) => {
                let (resume, after) = self.resolve(&subscription.cursors, id);
                if let Some(after) = after {
                    // Only ever moves back inside the ring, so the events published since
                    // the slots were taken are still ahead of the cursor.
                    for cursor in &mut subscription.cursors {
                        let state = lock(&cursor.channel.state);
                        let kept = state.ring.partition_point(|e| e.seq <= after);
                        cursor.pos = state.head + kept as u64;
                    }
                }
                tracing::debug!(last_event_id = id, ?resume, "resume");
                resume
            }
        };
        subscription.resume = resume;
        Ok(subscription)
    }

    /// Finds the sequence number to resume after, and whether the replay is complete.
    fn resolve(&self, cursors: &[Cursor], id: &str) -> (Resume, Option<u64>) {
        let after = match parse_seq(id) {
            Some(n) if n <= self.inner.watermark.load(Ordering::Acquire) => Some(n),
            Some(_) => None,
            None => cursors.iter().find_map(|cursor| {
                let state = lock(&cursor.channel.state);
                let entry = state.ring.iter().rev().find(|e| e.has_id(id))?;
                Some(entry.seq)
            }),
        };
        let Some(after) = after else {
            return (Resume::Unknown, None);
        };
        let complete = cursors
            .iter()
            .all(|cursor| lock(&cursor.channel.state).floor <= after);
        let resume = if complete {
            Resume::Complete
        } else {
            Resume::Gap
        };
        (resume, Some(after))
    }

    /// Ends every stream, once it has delivered the events already published, and refuses
    /// new publishes and subscriptions. Call it on graceful shutdown.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let broker = tower_sse::Broker::new();
    /// let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.subscribe(&channels).await.unwrap();
    /// broker.close();
    /// assert!(subscription.recv().await.is_none());
    /// # }
    /// ```
    pub fn close(&self) {
        let inner = &*self.inner;
        {
            // Under the sequencer, so no publish is half done.
            let _last = lock(&inner.sequencer);
            inner.closed.store(true, Ordering::Release);
        }
        for channel in inner.channels.iter() {
            let wakers = channel.take_wakers();
            wake_all(wakers);
        }
    }

    /// Whether [`Broker::close`] was called.
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert!(!broker.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// How many subscribers `channel` has now.
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert_eq!(broker.subscriber_count("sse"), 0);
    /// ```
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.inner
            .channels
            .get(channel)
            .map_or(0, |c| lock(&c.state).wakers.len())
    }

    /// How many subscriptions are open now, over all channels (a stream on several channels
    /// counts once).
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert_eq!(broker.total_subscribers(), 0);
    /// ```
    pub fn total_subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Acquire)
    }

    /// How many channels have an entry now (subscribers or history).
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert_eq!(broker.channel_count(), 0);
    /// ```
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }
}

impl Channel {
    fn new(name: &str, capacity: usize, floor: u64) -> Channel {
        Channel {
            subscribers: crate::metrics::channel_subscribers(name),
            state: Mutex::new(ChannelState {
                ring: VecDeque::with_capacity(capacity.min(64)),
                head: 0,
                wakers: Slab::new(),
                waiting: Vec::new(),
                floor,
            }),
        }
    }

    fn push(&self, entry: Entry, capacity: usize, watermark: &AtomicU64) -> Vec<Waker> {
        let mut state = lock(&self.state);
        if state.ring.len() == capacity {
            if let Some(dropped) = state.ring.pop_front() {
                state.floor = dropped.seq;
            }
            state.head += 1;
        }
        let seq = entry.seq;
        state.ring.push_back(Arc::new(entry));
        // Under the channel lock: a reader that sees this entry also sees the watermark.
        watermark.fetch_max(seq, Ordering::Release);
        take_wakers(&mut state)
    }

    fn take_wakers(&self) -> Vec<Waker> {
        take_wakers(&mut lock(&self.state))
    }
}

fn take_wakers(state: &mut ChannelState) -> Vec<Waker> {
    let ChannelState {
        wakers, waiting, ..
    } = state;
    waiting
        .drain(..)
        .filter_map(|slot| wakers.get_mut(slot)?.take())
        .collect()
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// One stream's place in each of its channels, from [`Broker::subscribe`].
///
/// Dropping it unsubscribes at once, and removes a channel left without subscribers (unless it
/// keeps history).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use tower_sse::{Broker, Event};
/// let broker = Broker::new();
/// let channels = broker.channel_rules().parse_query(Some("channel=a")).unwrap();
/// let mut subscription = broker.subscribe(&channels).await.unwrap();
/// broker.publish("a", Event::default().data("1")).await.unwrap();
/// broker.publish("a", Event::default().data("2")).await.unwrap();
/// // Events that are waiting come together.
/// assert_eq!(subscription.recv().await.unwrap(), "data: 1\nid: 1\n\ndata: 2\nid: 2\n\n");
/// # }
/// ```
pub struct Subscription {
    broker: Broker,
    cursors: Vec<Cursor>,
    /// Reused between polls: the entries taken, with the cursor each came from.
    scratch: Vec<(usize, Arc<Entry>)>,
    /// Events to send before the channels' own (a resume through the backend).
    replay: VecDeque<Arc<Entry>>,
    /// Which ring entries were in the replay already.
    #[cfg(feature = "redis")]
    skip: Option<Skip>,
    resume: Resume,
    done: bool,
}

/// Ring entries up to a backend sequence number were in a resumed stream's replay: they are
/// skipped, unless the backend lost its data after the stream started (then the numbers were
/// given out again, to new events).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy)]
struct Skip {
    until: u64,
    /// The local order number when the replay was read.
    after: u64,
}

#[cfg(feature = "redis")]
impl Skip {
    fn skips(&self, entry: &Entry, data_lost_at: u64) -> bool {
        entry.origin <= self.until && !(data_lost_at > self.after && entry.seq > data_lost_at)
    }
}

struct Cursor {
    name: Arc<str>,
    channel: Arc<Channel>,
    /// Ring position of the next event to deliver.
    pos: u64,
    slot: usize,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field(
                "channels",
                &self.cursors.iter().map(|c| &*c.name).collect::<Vec<_>>(),
            )
            .field("resume", &self.resume)
            .field("done", &self.done)
            .finish()
    }
}

/// What one poll of a subscription yields.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Encoded events, several coalesced into one buffer when they were waiting together.
    Events(Bytes),
    /// The subscriber fell this many events behind; the [`LagPolicy`] was applied.
    Lagged(u64),
}

impl Subscription {
    /// How the `Last-Event-ID` was taken, see [`Broker::resume`].
    ///
    /// ```
    /// # use tower_sse::{broker::Resume, Broker};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let broker = Broker::new();
    /// # let channels = broker.channel_rules().parse_query(None).unwrap();
    /// assert_eq!(broker.subscribe(&channels).await.unwrap().resume(), Resume::Live);
    /// # }
    /// ```
    pub fn resume(&self) -> Resume {
        self.resume
    }

    /// Waits for the next events and returns them encoded, as a stream would send them; `None`
    /// when the stream is over (broker closed, or this subscriber lagged with
    /// [`LagPolicy::Disconnect`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use tower_sse::{Broker, Event};
    /// # let broker = Broker::new();
    /// # let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.subscribe(&channels).await.unwrap();
    /// broker.publish("sse", Event::default().data("x")).await.unwrap();
    /// assert_eq!(subscription.recv().await.unwrap(), "data: x\nid: 1\n\n");
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match poll_fn(|cx| self.poll_delivery(cx, 64 * 1024)).await? {
                Delivery::Events(bytes) => return Some(bytes),
                Delivery::Lagged(_) => continue,
            }
        }
    }

    /// Polls for the next delivery, coalescing up to `max_bytes` of waiting events (at least
    /// one event, whatever its size).
    pub(crate) fn poll_delivery(
        &mut self,
        cx: &mut Context<'_>,
        max_bytes: usize,
    ) -> Poll<Option<Delivery>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.replay.is_empty() {
            return Poll::Ready(Some(Delivery::Events(self.take_replay(max_bytes))));
        }
        let inner = &*self.broker.inner;
        #[cfg(feature = "redis")]
        let data_lost_at = inner.data_lost_at.load(Ordering::Acquire);
        loop {
            let closed = inner.closed.load(Ordering::Acquire);
            let watermark = inner.watermark.load(Ordering::Acquire);
            let mut again = false;
            let mut taken = std::mem::take(&mut self.scratch);
            for (index, cursor) in self.cursors.iter_mut().enumerate() {
                let mut state = lock(&cursor.channel.state);
                if cursor.pos < state.head {
                    let missed = state.head - cursor.pos;
                    drop(state);
                    self.scratch = taken;
                    return Poll::Ready(Some(self.lagged(missed)));
                }
                let start = (cursor.pos - state.head) as usize;
                let mut bytes = 0;
                let before = taken.len();
                for entry in state.ring.range(start..) {
                    #[cfg(feature = "redis")]
                    if self
                        .skip
                        .is_some_and(|skip| skip.skips(entry, data_lost_at))
                    {
                        // Already sent in the replay; these come first in the ring.
                        cursor.pos += 1;
                        continue;
                    }
                    if entry.seq > watermark {
                        // Published after we read the watermark: its publisher has already
                        // taken the wakers, so poll again rather than wait.
                        again = true;
                        break;
                    }
                    if bytes >= max_bytes {
                        break;
                    }
                    bytes += entry.bytes.len();
                    taken.push((index, entry.clone()));
                }
                if taken.len() == before && !again {
                    let state = &mut *state;
                    match &mut state.wakers[cursor.slot] {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        Some(waker) => waker.clone_from(cx.waker()),
                        slot @ None => {
                            *slot = Some(cx.waker().clone());
                            state.waiting.push(cursor.slot);
                        }
                    }
                }
            }
            if !taken.is_empty() {
                let bytes = self.coalesce(&mut taken, max_bytes);
                self.scratch = taken;
                return Poll::Ready(Some(Delivery::Events(bytes)));
            }
            self.scratch = taken;
            if again {
                continue;
            }
            if closed {
                self.done = true;
                return Poll::Ready(None);
            }
            // Registered above; a close that raced with us took the wakers before we put ours,
            // so look once more.
            if inner.closed.load(Ordering::Acquire) {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Joins the taken entries in sequence order, up to `max_bytes`, and moves the cursors past
    /// the ones sent.
    fn coalesce(&mut self, taken: &mut Vec<(usize, Arc<Entry>)>, max_bytes: usize) -> Bytes {
        if self.cursors.len() > 1 {
            taken.sort_by_key(|(_, entry)| entry.seq);
        }
        let mut count = 0;
        let mut len = 0;
        for (_, entry) in taken.iter() {
            if count > 0 && len + entry.bytes.len() > max_bytes {
                break;
            }
            count += 1;
            len += entry.bytes.len();
        }
        let bytes = if count == 1 {
            taken[0].1.bytes.clone()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for (_, entry) in &taken[..count] {
                buf.extend_from_slice(&entry.bytes);
            }
            buf.freeze()
        };
        for (index, _) in taken.drain(..).take(count) {
            self.cursors[index].pos += 1;
        }
        self.broker.inner.metrics.delivered.increment(count as u64);
        taken.clear();
        bytes
    }

    fn take_replay(&mut self, max_bytes: usize) -> Bytes {
        let mut buf = BytesMut::new();
        while let Some(entry) = self.replay.front() {
            if !buf.is_empty() && buf.len() + entry.bytes.len() > max_bytes {
                break;
            }
            buf.extend_from_slice(&entry.bytes);
            self.replay.pop_front();
            self.broker.inner.metrics.delivered.increment(1);
        }
        buf.freeze()
    }

    fn lagged(&mut self, missed: u64) -> Delivery {
        match self.broker.inner.config.lag_policy {
            LagPolicy::Disconnect => self.done = true,
            LagPolicy::Skip => {
                for cursor in &mut self.cursors {
                    let state = lock(&cursor.channel.state);
                    cursor.pos = cursor.pos.max(state.head);
                }
            }
        }
        let inner = &*self.broker.inner;
        inner.metrics.lagged.increment(1);
        inner.metrics.dropped.increment(missed);
        tracing::debug!(missed, policy = ?inner.config.lag_policy, "subscriber lagged");
        Delivery::Lagged(missed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The names are only collected when the event is enabled.
        tracing::debug!(
            channels = ?self.cursors.iter().map(|c| &*c.name).collect::<Vec<_>>(),
            "unsubscribed"
        );
        let inner = &*self.broker.inner;
        for cursor in self.cursors.drain(..) {
            let empty = {
                let mut state = lock(&cursor.channel.state);
                let ChannelState {
                    wakers, waiting, ..
                } = &mut *state;
                wakers.remove(cursor.slot);
                cursor.channel.subscribers.decrement(1.0);
                // Without publishes, churn would leave stale slots in `waiting`: compact.
                if waiting.len() > 2 * wakers.len() + 64 {
                    waiting.retain(|slot| wakers.get(*slot).is_some_and(Option::is_some));
                    waiting.sort_unstable();
                    waiting.dedup();
                }
                wakers.is_empty()
            };
            if empty && !inner.keeps_idle_channels() {
                // Checked again under the shard lock: a subscriber may have come meanwhile.
                let removed = inner
                    .channels
                    .remove_if(&cursor.name, |_, c| lock(&c.state).wakers.is_empty());
                if removed.is_some() {
                    inner.count_channels();
                    #[cfg(feature = "redis")]
                    if let Backend::Redis(redis) = &inner.backend {
                        redis.release(cursor.name.clone());
                    }
                }
            }
        }
        inner.subscribers.fetch_sub(1, Ordering::AcqRel);
        inner.metrics.subscribers.decrement(1.0);
    }
}

/// Why a publish (or subscribe) failed. Nothing was published.
///
/// ```
/// # use tower_sse::{Broker, Event, PublishError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// broker.close();
/// let err = broker.publish("sse", Event::default()).await.unwrap_err();
/// assert!(matches!(err, PublishError::Closed));
/// assert_eq!(err.to_string(), "broker is closed");
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event can't be sent.
    Event(EventError),
    /// The channel name breaks the [`ChannelRules`].
    Channel(ChannelError),
    /// [`Broker::close`] was called.
    Closed,
    /// Subscribing would pass [`BrokerBuilder::max_subscribers`] (no `channel`) or
    /// [`BrokerBuilder::max_subscribers_per_channel`] on `channel`. Worth a retry later; a
    /// service answers it with `503 Service Unavailable` and `Retry-After`.
    TooManySubscribers {
        /// The full channel, or `None` for the broker's total.
        channel: Option<Arc<str>>,
        /// The limit reached.
        limit: usize,
    },
    /// The backend could not take the event (Redis unreachable, ...). Worth a retry; a
    /// service answers it with `503 Service Unavailable`.
    Backend(Box<dyn StdError + Send + Sync>),
}

impl PublishError {
    #[cfg(feature = "redis")]
    pub(crate) fn backend(err: impl Into<Box<dyn StdError + Send + Sync>>) -> PublishError {
        PublishError::Backend(err.into())
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Event(err) => fmt::Display::fmt(err, f),
            PublishError::Channel(err) => fmt::Display::fmt(err, f),
            PublishError::Closed => f.write_str("broker is closed"),
            PublishError::TooManySubscribers {
                channel: Some(channel),
                limit,
            } => write!(
                f,
                "too many subscribers on channel {channel} (limit {limit})"
            ),
            PublishError::TooManySubscribers {
                channel: None,
                limit,
            } => write!(f, "too many subscribers (limit {limit})"),
            PublishError::Backend(err) => write!(f, "backend unavailable: {err}"),
        }
    }
}

impl StdError for PublishError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PublishError::Event(err) => Some(err),
            PublishError::Channel(err) => Some(err),
            PublishError::Closed | PublishError::TooManySubscribers { .. } => None,
            PublishError::Backend(err) => Some(&**err),
        }
    }
}

impl From<EventError> for PublishError {
    fn from(err: EventError) -> Self {
        PublishError::Event(err)
    }
}

impl From<ChannelError> for PublishError {
    fn from(err: ChannelError) -> Self {
        PublishError::Channel(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, task};

    fn channels(broker: &Broker, q: &str) -> Channels {
        broker.channel_rules().parse_query(Some(q)).unwrap()
    }

    // The in-process broker subscribes without waiting.
    impl Broker {
        fn sub(&self, channels: &Channels) -> Result<Subscription, PublishError> {
            self.subscribe_local(channels, None)
        }

        fn res(&self, channels: &Channels, id: &str) -> Result<Subscription, PublishError> {
            self.subscribe_local(channels, Some(id))
        }
    }

    fn publish(broker: &Broker, channel: &str, data: &str) -> String {
        broker
            .publish_local(channel, &Event::default().data(data))
            .unwrap()
    }

    #[test]
    fn send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Broker>();
        assert_send_sync::<Subscription>();
    }

    #[test]
    fn subscriber_limits_refuse_cleanly_and_free_on_drop() {
        let broker = Broker::builder()
            .max_subscribers(3)
            .max_subscribers_per_channel(2)
            .build();
        let a = broker.sub(&channels(&broker, "channel=a")).unwrap();
        let _b = broker.sub(&channels(&broker, "channel=b,a")).unwrap();
        // `c` is taken first, then `a` is full: `c` must not stay behind.
        let err = broker.sub(&channels(&broker, "channel=c,a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many subscribers on channel a (limit 2)"
        );
        assert_eq!(broker.subscriber_count("c"), 0);
        assert!(!broker.inner.channels.contains_key("c"));
        assert_eq!(broker.total_subscribers(), 2);
        let _c = broker.sub(&channels(&broker, "channel=c")).unwrap();
        let err = broker.sub(&channels(&broker, "channel=d")).unwrap_err();
        assert_eq!(err.to_string(), "too many subscribers (limit 3)");
        assert_eq!(broker.total_subscribers(), 3);
        drop(a);
        assert_eq!(broker.total_subscribers(), 2);
        broker.sub(&channels(&broker, "channel=a")).unwrap();
    }

    #[test]
    fn publish_wakes_a_waiting_subscriber() {
        let broker = Broker::new();
        let mut sub = broker.sub(&channels(&broker, "channel=a")).unwrap();
        let mut recv = task::spawn(sub.recv());
        assert_pending!(recv.poll());
        publish(&broker, "a", "x");
        assert!(recv.is_woken());
        assert_eq!(assert_ready!(recv.poll()).unwrap(), "data: x\nid: 1\n\n");
    }

    #[test]
    fn several_channels_in_sequence_order() {
        let broker = Broker::new();
        let mut sub = broker.sub(&channels(&broker, "channel=a,b")).unwrap();
        publish(&broker, "b", "1");
        publish(&broker, "c", "not mine");
        publish(&broker, "a", "2");
        publish(&broker, "b", "3");
        let bytes = task::spawn(sub.recv()).poll();
        assert_eq!(
            assert_ready!(bytes).unwrap(),
            "data: 1\nid: 1\n\ndata: 2\nid: 3\n\ndata: 3\nid: 4\n\n"
        );
    }

    #[test]
    fn coalescing_stops_at_max_bytes() {
        let broker = Broker::new();
        let mut sub = broker.sub(&channels(&broker, "channel=a")).unwrap();
        for _ in 0..3 {
            publish(&broker, "a", "0123456789");
        }
        let mut t = task::spawn(());
        let first = t.enter(|cx, _| sub.poll_delivery(cx, 50));
        match first {
            Poll::Ready(Some(Delivery::Events(b))) => assert_eq!(b.len(), 2 * 24),
            other => panic!("{other:?}"),
        }
        let second = t.enter(|cx, _| sub.poll_delivery(cx, 50));
        match second {
            Poll::Ready(Some(Delivery::Events(b))) => assert_eq!(b, "data: 0123456789\nid: 3\n\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn laggard_is_disconnected_without_holding_up_others() {
        let broker = Broker::builder().buffer(2).build();
        let mut slow = broker.sub(&channels(&broker, "channel=a")).unwrap();
        let mut fast = broker.sub(&channels(&broker, "channel=a")).unwrap();
        for i in 0..5 {
            publish(&broker, "a", &i.to_string());
            assert!(assert_ready!(task::spawn(fast.recv()).poll()).is_some());
        }
        let mut t = task::spawn(());
        match t.enter(|cx, _| slow.poll_delivery(cx, 1024)) {
            Poll::Ready(Some(Delivery::Lagged(3))) => {}
            other => panic!("{other:?}"),
        }
        assert!(assert_ready!(t.enter(|cx, _| slow.poll_delivery(cx, 1024))).is_none());
    }

    #[test]
    fn laggard_skips_with_skip_policy() {
        let broker = Broker::builder()
            .buffer(2)
            .lag_policy(LagPolicy::Skip)
            .build();
        let mut slow = broker.sub(&channels(&broker, "channel=a")).unwrap();
        for i in 0..5 {
            publish(&broker, "a", &i.to_string());
        }
        // Lagged by 3, then the two kept.
        assert_eq!(
            assert_ready!(task::spawn(slow.recv()).poll()).unwrap(),
            "data: 3\nid: 4\n\ndata: 4\nid: 5\n\n"
        );
    }

    #[test]
    fn last_subscriber_leaving_removes_the_channel() {
        let broker = Broker::new();
        let a1 = broker.sub(&channels(&broker, "channel=a,b")).unwrap();
        let a2 = broker.sub(&channels(&broker, "channel=a")).unwrap();
        assert_eq!(broker.channel_count(), 2);
        drop(a1);
        assert_eq!(broker.channel_count(), 1);
        assert_eq!(broker.subscriber_count("a"), 1);
        drop(a2);
        assert_eq!(broker.channel_count(), 0);
        // Publishing to nobody creates nothing.
        publish(&broker, "a", "x");
        assert_eq!(broker.channel_count(), 0);
    }

    fn recv_now(sub: &mut Subscription) -> String {
        let bytes = assert_ready!(task::spawn(sub.recv()).poll()).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn resume_replays_kept_events_then_live_without_gap_or_duplicate() {
        let broker = Broker::builder().history(10).build();
        for i in 1..=5 {
            publish(&broker, if i % 2 == 0 { "a" } else { "b" }, &i.to_string());
        }
        let mut sub = broker.res(&channels(&broker, "channel=a,b"), "2").unwrap();
        assert_eq!(sub.resume(), Resume::Complete);
        publish(&broker, "a", "6");
        assert_eq!(
            recv_now(&mut sub),
            "data: 3\nid: 3\n\ndata: 4\nid: 4\n\ndata: 5\nid: 5\n\ndata: 6\nid: 6\n\n"
        );
        // Only channel a: the events of a after 2.
        let mut sub = broker.res(&channels(&broker, "channel=a"), "2").unwrap();
        assert_eq!(recv_now(&mut sub), "data: 4\nid: 4\n\ndata: 6\nid: 6\n\n");
    }

    #[test]
    fn resume_after_a_publisher_id() {
        let broker = Broker::builder().history(10).build();
        publish(&broker, "a", "1");
        broker
            .publish_local("a", &Event::default().id("x").data("2"))
            .unwrap();
        publish(&broker, "a", "3");
        let mut sub = broker.res(&channels(&broker, "channel=a"), "x").unwrap();
        assert_eq!(sub.resume(), Resume::Complete);
        assert_eq!(recv_now(&mut sub), "data: 3\nid: 3\n\n");
    }

    #[test]
    fn resume_from_an_id_older_than_history_replays_all_kept_and_says_gap() {
        let broker = Broker::builder().buffer(1).history(2).build();
        for i in 1..=5 {
            publish(&broker, "a", &i.to_string());
        }
        let mut sub = broker.res(&channels(&broker, "channel=a"), "1").unwrap();
        assert_eq!(sub.resume(), Resume::Gap);
        assert_eq!(recv_now(&mut sub), "data: 4\nid: 4\n\ndata: 5\nid: 5\n\n");
        // The last kept event's predecessor is still complete.
        let sub = broker.res(&channels(&broker, "channel=a"), "3").unwrap();
        assert_eq!(sub.resume(), Resume::Complete);
    }

    #[test]
    fn resume_from_unknown_ids_is_live_only() {
        let broker = Broker::builder().history(10).build();
        publish(&broker, "a", "1");
        for id in ["zzz", "99", "01", "+1", ""] {
            let mut sub = broker.res(&channels(&broker, "channel=a"), id).unwrap();
            assert_eq!(sub.resume(), Resume::Unknown, "{id:?}");
            assert_pending!(task::spawn(sub.recv()).poll());
        }
    }

    #[test]
    fn resume_on_a_channel_that_did_not_exist_is_a_gap() {
        // Without history the channel is gone when its subscriber leaves.
        let broker = Broker::new();
        let sub = broker.sub(&channels(&broker, "channel=a")).unwrap();
        publish(&broker, "a", "1");
        drop(sub);
        publish(&broker, "a", "2");
        let sub = broker.res(&channels(&broker, "channel=a"), "1").unwrap();
        assert_eq!(sub.resume(), Resume::Gap);
    }

    #[test]
    fn idle_history_channels_are_bounded() {
        let broker = Broker::builder().history(4).history_channels(10).build();
        for i in 0..1000 {
            publish(&broker, &format!("c{i}"), "x");
        }
        assert!(broker.channel_count() <= 10, "{}", broker.channel_count());
    }

    #[test]
    fn close_delivers_what_was_published_then_ends() {
        let broker = Broker::new();
        let mut sub = broker.sub(&channels(&broker, "channel=a")).unwrap();
        let mut waiting = broker.sub(&channels(&broker, "channel=a")).unwrap();
        let mut wait = task::spawn(async {
            let mut n = 0;
            while waiting.recv().await.is_some() {
                n += 1;
            }
            n
        });
        assert_pending!(wait.poll());
        publish(&broker, "a", "last");
        broker.close();
        assert!(matches!(
            broker.publish_local("a", &Event::default()),
            Err(PublishError::Closed)
        ));
        assert_eq!(assert_ready!(wait.poll()), 1);
        assert!(assert_ready!(task::spawn(sub.recv()).poll()).is_some());
        assert!(assert_ready!(task::spawn(sub.recv()).poll()).is_none());
        assert!(broker.sub(&channels(&broker, "channel=a")).is_err());
    }

    #[test]
    fn invalid_input_publishes_nothing() {
        let broker = Broker::new();
        let mut sub = broker.sub(&channels(&broker, "channel=a")).unwrap();
        assert!(broker
            .publish_local("a", &Event::default().event("x\ny"))
            .is_err());
        assert!(broker.publish_local("", &Event::default()).is_err());
        assert!(broker.publish_local("a b", &Event::default()).is_err());
        assert_pending!(task::spawn(sub.recv()).poll());
        // And the failed ones used no id.
        assert_eq!(publish(&broker, "a", "ok"), "1");
    }
}
