//! [`Broker`]: the registry of channels, publish and subscribe.
//!
//! The broker holds a [`DashMap`](dashmap::DashMap) from channel name to that channel's broadcaster. A
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
//! The numbers of one process start count up from a base taken from the clock (the start time
//! in milliseconds times a million, [`BrokerBuilder::id_base`]): ids keep growing across
//! restarts, and a `Last-Event-ID` from before a restart is known to be from another start, so
//! the client is told of the gap ([`Resume::Unknown`]) instead of silently missing the events
//! published before the restart. On Redis the ids are Redis's, shared by every instance; on
//! flask-sse's Redis (`redis::flask_sse`, which keeps no history) they are each broker's own,
//! as here.
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
//! # `Last-Event-ID`
//!
//! A resume replays the events after the id, at most [`history`](BrokerBuilder::history) per
//! channel (none with history 0), then goes on live; [`Subscription::resume`] says whether the
//! replay was complete. The buffer is for live subscribers only: it never lengthens a replay.
//!
//! # Memory
//!
//! Everything the rings keep, history and buffers, shares one byte budget
//! ([`BrokerBuilder::max_retained_bytes`], default 64 MiB), oldest events evicted first. A
//! channel's entry exists while it has subscribers, or while it keeps history; a channel with
//! no subscriber and no event goes at once, and the idle channels with history are bounded
//! ([`BrokerBuilder::history_channels`]), the one idle longest evicted first. So neither a churn
//! of made-up channel names nor large events can grow memory without bound.
//!
//! # Shutdown
//!
//! Either way a stream ends cleanly (the end of its response body), after the events
//! published before its end.
//!
//! - [`Broker::close`] ends every stream at once, and refuses further publishes and
//!   subscriptions.
//! - [`Broker::drain`] spreads the ends over a window `W`, so that thousands of browsers don't
//!   reconnect to the next instance in the same second:
//!   - new subscriptions are refused at once with [`SubscribeError::Draining`], which
//!     [`SseService`](crate::SseService) answers `503 Service Unavailable` with a
//!     `Retry-After` drawn for each response, uniform in `1..=max(1, W)` whole seconds;
//!   - publishes go on, so an open stream gets its events until its turn;
//!   - each open stream's end `e` is drawn uniformly in `[0, W)` after the drain's start. At
//!     its end the stream sends the events published until then, then a
//!     [`retry:`](https://html.spec.whatwg.org/multipage/server-sent-events.html#concept-event-stream-reconnection-time)
//!     field, then ends. The reconnection time is `W - e` + [`DRAIN_GRACE`] (1 s) + a spread
//!     drawn uniformly in `[0, W]`, in milliseconds rounded up (so between 1 s and `2W + 1 s`):
//!     an `EventSource` reconnects uniformly in `[W + 1 s, 2W + 1 s]` after the start, spread
//!     out, and after the drain is over. Not into the drain's `503`s: a response other than
//!     `200` [fails](https://html.spec.whatwg.org/multipage/server-sent-events.html#fail-the-connection)
//!     an `EventSource` for good, where a refused connection (this instance gone, the next
//!     one not up yet) makes it try again;
//!   - its future completes once every stream has ended, or [`DRAIN_GRACE`] after the window
//!     at the latest, and then closes the broker: publishes are refused from then on, and a
//!     stream still open (its client stopped reading, so its body is not polled) ends as after
//!     a close, with its `retry:` field, when it is next polled.
//!
//!   An idle stream costs nothing more until a drain: the broker wakes every waiting stream
//!   once, at the start, and each then draws its turn and waits on its own timer (the
//!   [`SseBody`](crate::SseBody)'s keep-alive timer; [`Subscription::recv`] sets one of its
//!   own).
//!
//! # Layout
//!
//! [`BrokerBuilder`] (`builder.rs`) holds the settings; each channel is a ring (`ring.rs`); a
//! [`Subscription`] (`subscription.rs`) is a cursor per channel, which `join.rs` places;
//! `resume.rs` reads ids and `Last-Event-ID`; `retention.rs` bounds what is kept; `drain.rs`
//! plans a drain; `shared.rs` holds what the handles and subscriptions share, and the publish
//! path. Where events travel beyond this process is the backend's business (`src/backend/`),
//! behind a seam this module does not look past: a backend's own connect step (such as
//! `redis::connect`, feature `redis`) builds the broker on it.

use std::{fmt, future::Future, sync::Arc, time::Duration};

pub use self::drain::DRAIN_GRACE;
use self::resume::Start;
pub(crate) use self::subscription::Delivery;
pub use self::{
    builder::{BrokerBuilder, LagPolicy},
    resume::Resume,
    subscription::{RecvError, Subscription},
};
use self::{
    drain::Plan,
    join::{join, join_remote},
    ring::wake_all,
    shared::{Handle, Shared},
};
pub use crate::error::{PublishError, SubscribeError};
use crate::{
    backend::{Backend, Inbound},
    channel::{ChannelRules, Channels},
    event::Event,
    sync::{Ordering, lock},
};

mod builder;
mod drain;
mod join;
#[cfg(all(test, tower_sse_loom))]
mod model;
mod positions;
mod resume;
mod retention;
mod ring;
mod shared;
mod subscription;
#[cfg(all(test, not(tower_sse_loom)))]
mod tests;

/// The reader and writer of a stream's positions ids (a cluster's streams over several
/// channels), for the fuzz target `positions` alone: `cargo fuzz` builds with `--cfg fuzzing`
/// (fuzz/README.md).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    /// Each channel's position in a positions id of `names`, as a resume reads it.
    pub fn read_positions(id: &str, names: &[Arc<str>]) -> Option<Vec<u64>> {
        super::positions::parse(id, names)
    }

    /// The positions id of `names` at `positions` (one each), as a stream sends it.
    pub fn positions_id(names: &[Arc<str>], positions: Vec<u64>) -> String {
        let skips = vec![super::resume::Skip { until: 0, after: 0 }; positions.len()];
        super::positions::Positions::new(names, positions, skips).id()
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
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = Broker::new();
/// let channels = broker.channel_rules().channels(["news"]).unwrap();
/// let mut subscription = broker.subscribe(&channels).await?;
///
/// let id = broker.publish("news", Event::default().data("hi")).await?;
/// let sent = format!("data: hi\nid: {id}\n\n");
/// assert_eq!(subscription.recv().await.unwrap(), sent);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Shared>,
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
            .field("draining", &self.is_draining())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl BrokerBuilder {
    /// Builds an in-process broker.
    ///
    /// ```
    /// # use tower_sse::Broker;
    /// let broker = Broker::builder().build();
    /// assert_eq!(broker.channel_count(), 0);
    /// ```
    pub fn build(self) -> Broker {
        Broker {
            inner: Arc::new(Shared::new(self, None)),
        }
    }

    /// Builds a broker whose events travel through `backend`, and the handle through which
    /// the backend brings remote events back in (it does not keep the broker alive). For a
    /// backend's connect step, such as `redis::connect`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend uses it
    pub(crate) fn build_on(self, backend: Arc<dyn Backend>) -> (Broker, impl Inbound) {
        let broker = Broker {
            inner: Arc::new(Shared::new(self, Some(backend))),
        };
        let inbound = Handle::new(&broker.inner);
        (broker, inbound)
    }
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

    /// The longest publisher id taken ([`BrokerBuilder::max_id_len`]).
    pub(crate) fn max_id_len(&self) -> usize {
        self.inner.config.max_id_len
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
    /// sequence number assigned (see [`BrokerBuilder::id_base`] for where they start).
    ///
    /// The event is encoded once, here; every subscriber gets the same bytes. Publishing to a
    /// channel nobody listens to (and without history) delivers nothing and still succeeds, as
    /// with flask-sse.
    ///
    /// # Errors
    ///
    /// [`PublishError::Event`] for an invalid event, [`PublishError::Channel`] for an invalid
    /// channel name, [`PublishError::Closed`] after [`Broker::close`],
    /// [`PublishError::Backend`] when the backend can't take it. On error nothing is
    /// published.
    ///
    /// ```
    /// # use tower_sse::{Broker, Event, PublishError, EventError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Ids from 1 (by default they start from the clock, see `BrokerBuilder::id_base`).
    /// let broker = Broker::builder().id_base(0).build();
    /// assert_eq!(broker.publish("sse", Event::default().id("a")).await.unwrap(), "a");
    /// assert_eq!(broker.publish("sse", Event::default()).await.unwrap(), "2");
    /// assert!(matches!(
    ///     broker.publish("sse", Event::default().id("\n")).await,
    ///     Err(PublishError::Event(EventError::Id))
    /// ));
    /// # }
    /// ```
    pub async fn publish(&self, channel: &str, event: Event) -> Result<String, PublishError> {
        self.publish_each(&[channel], event).await
    }

    /// Publishes one `event` to every channel of `channels`, with one id: a stream on several
    /// of them sends it once, in its place among their events. What a topic with aliases
    /// needs (Mercure's alternate topics), or a notice for several audiences.
    ///
    /// The event is encoded once. On Redis it is stored in each channel's history and sent
    /// on each, in one step: published everywhere, or nowhere. On flask-sse's Redis
    /// (`redis::flask_sse`), whose messages name one channel each, more than one channel is
    /// refused ([`ChannelError::TooMany`](crate::ChannelError::TooMany) with a limit of 1).
    ///
    /// # Errors
    ///
    /// As [`Broker::publish`], for any of the channels: then nothing is published.
    ///
    /// ```
    /// # use tower_sse::{Broker, Event};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broker = Broker::builder().id_base(0).build();
    /// let both = broker.channel_rules().channels(["books", "books.1"]).unwrap();
    /// let mut stream = broker.subscribe(&both).await.unwrap();
    /// let one = broker.channel_rules().channels(["books.1"]).unwrap();
    /// let mut other = broker.subscribe(&one).await.unwrap();
    ///
    /// broker.publish_to(&both, Event::default().data("new edition")).await.unwrap();
    /// broker.publish("books", Event::default().data("next")).await.unwrap();
    /// // Once on the stream of both channels, and once on the other.
    /// let both_sent = "data: new edition\nid: 1\n\ndata: next\nid: 2\n\n";
    /// assert_eq!(stream.recv().await.unwrap(), both_sent);
    /// assert_eq!(other.recv().await.unwrap(), "data: new edition\nid: 1\n\n");
    /// # }
    /// ```
    pub async fn publish_to(
        &self,
        channels: &Channels,
        event: Event,
    ) -> Result<String, PublishError> {
        self.publish_each(&channels.iter().collect::<Vec<_>>(), event)
            .await
    }

    async fn publish_each(&self, channels: &[&str], event: Event) -> Result<String, PublishError> {
        let names = || channels.iter().copied();
        let published = match &self.inner.backend {
            None => self.inner.publish(names(), &event),
            Some(backend) => match self.inner.check(names(), &event) {
                Ok(()) => backend
                    .publish(channels, &event)
                    .await
                    .map_err(PublishError::from_backend),
                Err(err) => Err(err),
            },
        };
        match &published {
            Ok(_) => self.inner.metrics.published.increment(1),
            Err(err) => {
                tracing::debug!(?channels, %err, "publish refused");
                crate::metrics::publish_error(err.reason());
            }
        }
        published
    }

    /// Subscribes to `channels`, starting with the next event published.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] after [`Broker::close`], [`SubscribeError::Draining`] after
    /// [`Broker::drain`], [`SubscribeError::TooManySubscribers`] past a subscriber limit,
    /// [`SubscribeError::Backend`] when the backend can't set the subscription up.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let broker = tower_sse::Broker::new();
    /// let channels = broker.channel_rules().channels(["a", "b"]).unwrap();
    /// let subscription = broker.subscribe(&channels).await.unwrap();
    /// assert_eq!(broker.subscriber_count("a"), 1);
    /// drop(subscription);
    /// assert_eq!(broker.subscriber_count("a"), 0);
    /// # }
    /// ```
    pub async fn subscribe(&self, channels: &Channels) -> Result<Subscription, SubscribeError> {
        self.subscribe_after(channels, Start::Live).await
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
    ///   channels: the events after that event (again complete or gap). A publisher's id
    ///   that is also a sequence number of this broker is read as the sequence number, so
    ///   numeric ids are safe only outside that range (small numbers are);
    /// - otherwise ([`Resume::Unknown`]: a foreign id, an id from before a restart): live
    ///   events only.
    ///
    /// On a Redis Cluster, where each channel counts its own ids, a stream over several
    /// channels sends its position in each after each batch (an `id:` without data, which an
    /// `EventSource` keeps as its last event id), and resumes from those positions, each
    /// channel from its own history (see `redis::cluster`, feature `redis`).
    ///
    /// Events are kept by the [history](BrokerBuilder::history), and while a channel has
    /// subscribers, by its [buffer](BrokerBuilder::buffer).
    ///
    /// # Errors
    ///
    /// As [`Broker::subscribe`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_sse::{broker::Resume, Broker, Event};
    ///
    /// let broker = Broker::builder().history(100).id_base(0).build();
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
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_after(channels, Start::After(last_event_id))
            .await
    }

    /// Subscribes to `channels`, first replaying every event kept (at most the
    /// [history](BrokerBuilder::history) per channel), then live events: what a client asks
    /// for that has seen nothing yet and wants what it missed (Mercure's
    /// `Last-Event-ID: earliest`). [`Subscription::resume`] is [`Resume::Complete`] when no
    /// event of these channels was dropped, else [`Resume::Gap`].
    ///
    /// # Errors
    ///
    /// As [`Broker::subscribe`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_sse::{broker::Resume, Broker, Event};
    ///
    /// let broker = Broker::builder().history(2).id_base(0).build();
    /// for data in ["a", "b", "c"] {
    ///     broker.publish("sse", Event::default().data(data)).await.unwrap();
    /// }
    /// let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.resume_earliest(&channels).await.unwrap();
    /// // `a` was dropped: the history keeps 2.
    /// assert_eq!(subscription.resume(), Resume::Gap);
    /// assert_eq!(subscription.recv().await.unwrap(), "data: b\nid: 2\n\ndata: c\nid: 3\n\n");
    /// # }
    /// ```
    pub async fn resume_earliest(
        &self,
        channels: &Channels,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_after(channels, Start::Earliest).await
    }

    async fn subscribe_after(
        &self,
        channels: &Channels,
        start: Start<'_>,
    ) -> Result<Subscription, SubscribeError> {
        let subscribed = match &self.inner.backend {
            None => join(&self.inner, channels, start),
            Some(backend) => join_remote(&self.inner, &**backend, channels, start).await,
        };
        logged(channels, subscribed)
    }

    /// Subscribes at once when nothing needs to wait (no backend): what the service's response
    /// future does without a box. `None` with a backend; then [`Broker::subscribe`] or
    /// [`Broker::resume`], which wait for it.
    pub(crate) fn subscribe_now(
        &self,
        channels: &Channels,
        last_event_id: Option<&str>,
    ) -> Option<Result<Subscription, SubscribeError>> {
        if self.inner.backend.is_some() {
            return None;
        }
        let start = Start::from_id(last_event_id);
        Some(logged(channels, join(&self.inner, channels, start)))
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
        for ring in inner.channels.iter() {
            wake_all(ring.take_wakers());
        }
    }

    /// Drains the broker over `window`: refuses new subscriptions at once, and ends the open
    /// streams one by one at random times spread over the window, each after a random `retry:`
    /// field, while publishes go on; see [Shutdown](crate::broker#shutdown) for the numbers.
    /// Then closes the broker.
    ///
    /// The drain starts at this call, not when the future is first polled: call it from the
    /// shutdown signal's handler. The future completes once every stream has ended, or at
    /// `window` + [`DRAIN_GRACE`] at the latest, after [`Broker::close`]. Dropping it stops
    /// nothing (the streams end at their turns) but the close. A second call (or one after
    /// `close`) starts nothing: it waits for the first drain's end (or returns at once),
    /// whatever its `window`.
    ///
    /// With a server's graceful shutdown, drain before the server stops accepting, so that a
    /// new stream meanwhile gets its `503` (and a load balancer's health check sees the drain,
    /// [`Broker::is_draining`]), then let the server wait for its connections:
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use axum::Router;
    /// use tower_sse::{Broker, SseService};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let broker = Broker::new();
    /// let app = Router::new().route_service("/events", SseService::new(broker.clone()));
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///         broker.drain(Duration::from_secs(10)).await;
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// What a stream sees:
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sse::{Broker, Event, SubscribeError};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let broker = Broker::builder().id_base(0).build();
    /// let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.subscribe(&channels).await.unwrap();
    ///
    /// let drained = tokio::spawn(broker.drain(Duration::from_secs(10)));
    /// assert!(broker.is_draining());
    /// let refused = broker.subscribe(&channels).await.unwrap_err();
    /// assert!(matches!(refused, SubscribeError::Draining { .. }));
    ///
    /// // Events go on until the stream's turn, then a `retry:` field, then the end.
    /// broker.publish("sse", Event::default().data("x")).await.unwrap();
    /// assert_eq!(subscription.recv().await.unwrap(), "data: x\nid: 1\n\n");
    /// let retry = subscription.recv().await.unwrap();
    /// let ms: u64 = std::str::from_utf8(&retry).unwrap()
    ///     .strip_prefix("retry: ").unwrap()
    ///     .strip_suffix("\n\n").unwrap()
    ///     .parse().unwrap();
    /// // The rest of the 10 s window, 1 s of grace, up to 10 s of spread.
    /// assert!((1000..=21_000).contains(&ms));
    /// assert!(subscription.recv().await.is_none());
    ///
    /// drop(subscription);
    /// drained.await.unwrap();
    /// assert!(broker.is_closed());
    /// # }
    /// ```
    pub fn drain(&self, window: Duration) -> impl Future<Output = ()> + Send + 'static {
        let inner = &*self.inner;
        if inner.drain.set(Plan::new(window)).is_ok() {
            tracing::info!(
                target: "tower_sse::broker",
                ?window,
                streams = self.total_subscribers(),
                "draining"
            );
            // Once, now: every stream waiting for an event draws its turn (and then waits on
            // its own timer). A stream that registers its waker after this sees the plan (it
            // looks again after registering, as for a close).
            for ring in inner.channels.iter() {
                wake_all(ring.take_wakers());
            }
        }
        let broker = self.clone();
        async move {
            let inner = &*broker.inner;
            let plan = inner.drain.get().expect("set above");
            let deadline = tokio::time::sleep_until(plan.start + plan.window + DRAIN_GRACE);
            tokio::pin!(deadline);
            loop {
                // Made before the look at the count, so the last drop can't slip between.
                let emptied = plan.emptied.notified();
                if broker.total_subscribers() == 0 {
                    break;
                }
                tokio::select! {
                    () = emptied => {}
                    () = &mut deadline => {
                        tracing::info!(
                            target: "tower_sse::broker",
                            streams = broker.total_subscribers(),
                            "drain window over, closing"
                        );
                        break;
                    }
                }
            }
            broker.close();
        }
    }

    /// What the backend can't reach now, one line each: on Redis, `Redis` while its connection
    /// is down; on a Redis Cluster, each shard found down, by its slot and the channel that
    /// found it (`redis::cluster`). Empty in process, and while everything answers. For a
    /// readiness check's body, so an operator sees which part is down.
    ///
    /// ```
    /// assert!(tower_sse::Broker::new().unreachable().is_empty());
    /// ```
    pub fn unreachable(&self) -> Vec<String> {
        self.inner
            .backend
            .as_ref()
            .map(|backend| backend.unreachable())
            .unwrap_or_default()
    }

    /// Whether events travel beyond this process: the broker was built on a backend (such as
    /// `redis::connect`, feature `redis`), so other instances publish to its channels and
    /// read what it publishes. `false` for a broker in this process only.
    ///
    /// ```
    /// assert!(!tower_sse::Broker::new().is_shared());
    /// ```
    pub fn is_shared(&self) -> bool {
        self.inner.backend.is_some()
    }

    /// How many channels one event may go to ([`Broker::publish_to`]), when the backend
    /// limits it: `Some(1)` on a backend that carries each event on one channel (a Redis
    /// Cluster, whose channels live on several shards; flask-sse's Redis, whose messages name
    /// one); `None` when only the [channel rules](Broker::channel_rules) limit it. An app that
    /// would send one event to several channels (Mercure's URI templates, say) can then refuse
    /// what it can't serve up front, with a reason.
    ///
    /// ```
    /// assert_eq!(tower_sse::Broker::new().publish_limit(), None);
    /// ```
    pub fn publish_limit(&self) -> Option<usize> {
        self.inner
            .backend
            .as_ref()
            .and_then(|backend| backend.publish_limit())
    }

    /// Whether the broker should be sent new streams: not closed, not draining, and its
    /// backend (Redis) reachable now. What a readiness check (`/readyz`) answers, so that a
    /// load balancer takes the instance out of rotation while it can't serve new streams
    /// (a stream on a channel already subscribed goes on through a backend outage).
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert!(broker.is_ready());
    /// broker.close();
    /// assert!(!broker.is_ready());
    /// ```
    pub fn is_ready(&self) -> bool {
        let inner = &*self.inner;
        !self.is_closed()
            && !self.is_draining()
            && inner
                .backend
                .as_ref()
                .is_none_or(|backend| backend.reachable())
    }

    /// Whether [`Broker::drain`] was called (it stays so once the drain is over and the broker
    /// closed). A readiness check answers `503` then, so a load balancer stops sending
    /// clients here.
    ///
    /// ```
    /// let broker = tower_sse::Broker::new();
    /// assert!(!broker.is_draining());
    /// ```
    pub fn is_draining(&self) -> bool {
        self.inner.drain.get().is_some()
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
            .map_or(0, |ring| ring.subscriber_count())
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

/// A subscription's outcome, logged and (when refused) counted: every way in does the same.
fn logged(
    channels: &Channels,
    subscribed: Result<Subscription, SubscribeError>,
) -> Result<Subscription, SubscribeError> {
    match &subscribed {
        Ok(_) => tracing::debug!(channels = ?channels.names(), "subscribed"),
        Err(err) => {
            tracing::debug!(channels = ?channels.names(), %err, "subscription refused");
            crate::metrics::subscribe_error(err.reason());
        }
    }
    subscribed
}
