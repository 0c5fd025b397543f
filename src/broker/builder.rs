//! [`BrokerBuilder`] and [`LagPolicy`]: a broker's settings, their defaults and why.
//!
//! The defaults are safe to expose to the internet (see the crate's Limits table): every
//! resource a client can take is bounded, and past a bound the answer is a clean refusal.
//! `build` is with the [`Broker`](crate::Broker) it makes; a backend's connect step (such as
//! `redis::connect`, feature `redis`) is with its backend.

use crate::channel::ChannelRules;

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

/// Settings of a [`Broker`](crate::Broker); from [`Broker::builder`](crate::Broker::builder).
///
/// ```
/// use tower_sse::Broker;
///
/// let broker = Broker::builder().buffer(1024).history(100).build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BrokerBuilder {
    pub(super) buffer: usize,
    pub(super) history: usize,
    pub(super) history_channels: usize,
    pub(super) lag_policy: LagPolicy,
    pub(super) rules: ChannelRules,
    pub(super) max_subscribers: usize,
    pub(super) max_subscribers_per_channel: usize,
    pub(super) max_retained_bytes: usize,
    pub(super) max_id_len: usize,
    pub(super) channel_metrics: bool,
    pub(super) id_base: Option<u64>,
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
            max_retained_bytes: 64 * 1024 * 1024,
            max_id_len: 1024,
            channel_metrics: false,
            id_base: None,
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

    /// How many past events a resume with `Last-Event-ID` replays at most, per channel
    /// (default 0: none, a resume gets only live events, after the gap event if it missed
    /// some). A channel with history stays after its last subscriber leaves, within the
    /// [idle channel](BrokerBuilder::history_channels) and [byte](BrokerBuilder::max_retained_bytes)
    /// bounds. The same on Redis: the history is what Redis keeps per channel. On flask-sse's
    /// Redis (which keeps nothing) it is what this broker delivered, kept here while the
    /// channel has subscribers.
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
    /// (default 10,000). Past it, the channel idle longest goes, with its history, so a churn
    /// of channel names can't grow memory without bound. A channel with no subscriber and no
    /// event kept goes at once.
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
    /// fails with [`SubscribeError::TooManySubscribers`](crate::SubscribeError::TooManySubscribers) and [`SseService`](crate::SseService)
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
    /// Past it, subscribing fails with [`SubscribeError::TooManySubscribers`](crate::SubscribeError::TooManySubscribers).
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().max_subscribers_per_channel(1_000).build();
    /// ```
    pub fn max_subscribers_per_channel(mut self, subscribers: usize) -> Self {
        self.max_subscribers_per_channel = subscribers;
        self
    }

    /// The most encoded bytes all channels keep together, history and buffers (default
    /// 64 MiB). Past it the oldest events go first, whatever their channel: a subscriber that
    /// had not read one lags (the [`LagPolicy`] applies), and a resume from before it gets
    /// the gap. The newest event is always kept, whatever its size.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().history(100).max_retained_bytes(16 << 20).build();
    /// ```
    pub fn max_retained_bytes(mut self, bytes: usize) -> Self {
        self.max_retained_bytes = bytes;
        self
    }

    /// The longest id a publisher may give, in bytes (default 1,024): a browser sends the id
    /// back as `Last-Event-ID`, which [`SseService`](crate::SseService) accepts up to the same
    /// length, so every id published can resume. Longer ids are refused with
    /// [`PublishError::IdTooLong`](crate::PublishError::IdTooLong).
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().max_id_len(128).build();
    /// ```
    pub fn max_id_len(mut self, bytes: usize) -> Self {
        self.max_id_len = bytes;
        self
    }

    /// Whether each channel gets its own [`CHANNEL_SUBSCRIBERS`](crate::metrics::CHANNEL_SUBSCRIBERS)
    /// gauge (default `false`). A label per channel name lets anyone who opens a stream add a
    /// series to the metrics, and a recorder keeps a series after the channel is gone: turn it
    /// on only with a bounded set of channel names, or a recorder that forgets idle series.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().channel_metrics(true).build();
    /// ```
    pub fn channel_metrics(mut self, on: bool) -> Self {
        self.channel_metrics = on;
        self
    }

    /// The sequence numbers of events published without an id start after `base`: the first
    /// id is `base + 1`. By default `base` is the start time in milliseconds since the Unix
    /// epoch times one million, so ids grow across restarts and a `Last-Event-ID` from an
    /// earlier start resolves to [`Resume::Unknown`](crate::Resume::Unknown) (the client is
    /// told of the gap), instead of being taken for an id of this start. Set it for
    /// predictable ids (tests, a store of one's own that numbers events). Brokers on Redis
    /// take their ids from Redis and ignore it (not on flask-sse's Redis, which numbers
    /// nothing: there each broker numbers the events it receives, from here, and two brokers
    /// started in the same millisecond would share a base and take each other's numbers for
    /// their own: start them apart, or give each a base of its own).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use tower_sse::{Broker, Event};
    /// let broker = Broker::builder().id_base(0).build();
    /// assert_eq!(broker.publish("sse", Event::default()).await.unwrap(), "1");
    /// # }
    /// ```
    pub fn id_base(mut self, base: u64) -> Self {
        self.id_base = Some(base);
        self
    }

    /// The rules channel names must follow, checked on publish and on subscribe (default
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

    /// The [history](BrokerBuilder::history) set: a backend keeps as much per channel.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend uses it
    pub(crate) fn get_history(&self) -> usize {
        self.history
    }
}
