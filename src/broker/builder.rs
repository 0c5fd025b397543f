//! [`BrokerBuilder`] and [`LagPolicy`]: a broker's settings, their defaults and why.
//!
//! The defaults are safe to expose to the internet (see the crate's Limits table): every
//! resource a client can take is bounded, and past a bound the answer is a clean refusal.
//! `build` and `connect_redis` are with the [`Broker`](crate::Broker) they make.

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
}
