//! The task that holds an instance's one Redis pub/sub connection, for both Redis backends.
//!
//! It subscribes a channel when its first local subscriber arrives ([`Ensure`]) and
//! unsubscribes it when the last leaves ([`Registry::release`]), feeds every message into the
//! broker through its [`Inbound`] handle, and after a lost connection reconnects with backoff
//! and subscribes again. What differs between the backends is a [`Feed`]: the channels' names
//! in Redis, what a message means, and what a new connection must catch up on (tower-sse's own
//! format backfills from the histories, `feed.rs`; flask-sse keeps nothing,
//! `flask_sse/feed.rs`). The broker's side holds [`Subscriptions`].
//!
//! # Nothing waits on Redis for ever
//!
//! - Every await on Redis is bounded by [`TIMEOUT`]. A command without an answer in time
//!   ends the connection as if it had dropped: it is replaced, its channels subscribed again
//!   (and, by the feed, backfilled). So a command stuck on a paused Redis costs its caller
//!   [`TIMEOUT`] per step (a new channel of tower-sse's format takes two steps: SUBSCRIBE,
//!   then reading the counter), and holds up the requests behind it no longer than that.
//! - After [`HEALTH_INTERVAL`] without a message the task sends a PING; no answer within
//!   [`TIMEOUT`] and the connection is replaced, as above: a paused Redis or a partition
//!   (TCP up, nothing answers) is found within `HEALTH_INTERVAL + HEALTH_TICK + TIMEOUT`,
//!   8 s.
//! - The queue of [`Ensure`] requests is bounded ([`QUEUE`] requests); when
//!   full, an ensure fails at once. While the task waits to reconnect, requests are answered
//!   at once; while it connects, they wait for it (each step bounded as above).
//! - Releases don't go through the queue, which could be full: they go into a set of names
//!   ([`Registry`]) that the task takes whole, so none is lost, and a name released many
//!   times between two takes is one entry. The set holds at most the names released since
//!   the task last looked, which it does within [`TIMEOUT`].

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, TryFutureExt, future::try_join_all};
use redis::{Client, RedisResult, Value, aio::PubSubSink};
use tokio::{
    sync::{
        Notify,
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::{Instant, MissedTickBehavior, interval_at, timeout},
};

use super::connection::{REQUEST_TIMEOUT, TIMEOUT};
use crate::{
    backend::{Gone, Inbound},
    error::BoxError,
};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the pub/sub connection may be silent before a PING checks it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How often the task looks whether [`HEALTH_INTERVAL`] has passed.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// How many ensure requests may wait for the subscription task.
const QUEUE: usize = 1024;

/// How many queued [`Ensure`] requests the task takes at once: their new channels are
/// subscribed together, in one round trip.
const BATCH: usize = 256;

/// A request from the broker's side: make sure these channels have a Redis subscription,
/// then answer.
pub(super) struct Ensure {
    pub(super) names: Vec<Arc<str>>,
    pub(super) reply: oneshot::Sender<Result<(), String>>,
}

/// What the broker's side and the task share, besides the queue.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// The channels subscribed in Redis (the keys of [`Subscriber::active`]): an ensure of
    /// these answers at once, without the queue.
    subscribed: Mutex<HashSet<Arc<str>>>,
    /// Channels that lost their last local subscriber, for the task to unsubscribe.
    released: Mutex<HashSet<Arc<str>>>,
    /// Wakes the task when `released` gets a name.
    wake: Notify,
    /// Whether the pub/sub connection is up and its channels subscribed (for readiness).
    reachable: AtomicBool,
}

impl Registry {
    /// Whether the pub/sub connection is up.
    pub(super) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Whether every channel of `names` is subscribed in Redis already.
    pub(super) fn all_subscribed(&self, names: &[Arc<str>]) -> bool {
        let subscribed = lock(&self.subscribed);
        names.iter().all(|name| subscribed.contains(name))
    }

    /// `name` lost its last local subscriber.
    pub(super) fn release(&self, name: Arc<str>) {
        lock(&self.released).insert(name);
        self.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a backend's pub/sub connection carries: the names of its channels in Redis, what a
/// message means, and what a subscription or a new connection must catch up on. The
/// [`Subscriber`] does the rest. Each active channel has a mark (a `u64`) the feed keeps in
/// it, such as the last sequence number delivered.
pub(super) trait Feed: Send + 'static {
    /// The Redis pub/sub channel of channel `name`.
    fn key(&self, name: &str) -> String;

    /// The channel name of the Redis pub/sub channel `key`, if it is one of ours.
    fn name<'k>(&self, key: &'k str) -> Option<&'k str>;

    /// Redis confirmed the subscription of the new channels `names`; no message of theirs has
    /// been read yet. Returns their mark. Each Redis step bounded by [`TIMEOUT`].
    fn subscribed<I: Inbound>(
        &mut self,
        names: &[Arc<str>],
        inbound: &I,
    ) -> impl Future<Output = Result<u64, String>> + Send;

    /// A new connection subscribed the channels of `active` again (none on the first): catch
    /// up on what it missed. Each Redis step bounded by [`TIMEOUT`].
    fn connected<I: Inbound>(
        &mut self,
        active: &mut HashMap<Arc<str>, u64>,
        inbound: &I,
    ) -> impl Future<Output = Result<(), Ended>> + Send;

    /// The connection to Redis was lost: what is published until the next
    /// [`connected`](Feed::connected) does not reach the channels of `active`.
    fn disconnected(
        &mut self,
        active: &HashMap<Arc<str>, u64>,
        inbound: &impl Inbound,
    ) -> Result<(), Gone>;

    /// A message on the active channel `name`, whose mark is `mark`.
    fn message(
        &mut self,
        name: &str,
        payload: &[u8],
        mark: &mut u64,
        inbound: &impl Inbound,
    ) -> Result<(), Gone>;
}

/// The broker's side of the subscription task: ensure a channel's subscription (a request to
/// the task), release it, and whether the connection is up.
#[derive(Debug)]
pub(super) struct Subscriptions {
    control: mpsc::Sender<Ensure>,
    registry: Arc<Registry>,
}

impl Subscriptions {
    /// The handle, and the task for `feed` on `client`'s pub/sub connection, to spawn with the
    /// broker's [`Inbound`] handle.
    pub(super) fn new<F: Feed>(client: Client, feed: F) -> (Subscriptions, Subscriber<F>) {
        let (control, requests) = mpsc::channel(QUEUE);
        let registry = Arc::new(Registry::default());
        let task = Subscriber {
            client,
            requests,
            registry: registry.clone(),
            active: HashMap::new(),
            feed,
        };
        (Subscriptions { control, registry }, task)
    }

    /// Makes sure `channels` are subscribed in Redis; answers at once when they are.
    pub(super) async fn ensure(&self, channels: &[Arc<str>]) -> Result<(), BoxError> {
        if self.registry.all_subscribed(channels) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let request = Ensure {
            names: channels.to_vec(),
            reply,
        };
        self.control.try_send(request).map_err(|err| match err {
            TrySendError::Full(_) => "too many Redis subscriptions under way",
            TrySendError::Closed(_) => "Redis subscriber stopped",
        })?;
        match timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(result)) => result.map_err(Into::into),
            Ok(Err(_)) => Err("Redis subscriber stopped".into()),
            Err(_) => Err(format!("no answer from Redis within {REQUEST_TIMEOUT:?}").into()),
        }
    }

    /// `name` lost its last local subscriber.
    pub(super) fn release(&self, name: Arc<str>) {
        self.registry.release(name);
    }

    /// Whether the pub/sub connection is up.
    pub(super) fn reachable(&self) -> bool {
        self.registry.reachable()
    }
}

/// The subscription task's state; [`Subscriber::spawn`] starts it.
pub(crate) struct Subscriber<F> {
    client: Client,
    requests: mpsc::Receiver<Ensure>,
    registry: Arc<Registry>,
    /// Channels subscribed in Redis, with the feed's mark of each.
    active: HashMap<Arc<str>, u64>,
    feed: F,
}

/// Why a session with Redis ended.
pub(super) enum Ended {
    /// The broker was dropped: the task stops.
    BrokerGone,
    /// The connection failed, for this reason: the task reconnects.
    Disconnected(String),
}

impl From<Gone> for Ended {
    fn from(Gone: Gone) -> Self {
        Ended::BrokerGone
    }
}

/// Awaits one Redis step, for at most [`TIMEOUT`].
pub(super) async fn bounded<T>(
    what: &str,
    step: impl Future<Output = RedisResult<T>>,
) -> Result<T, String> {
    match timeout(TIMEOUT, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Err(_) => Err(format!("{what}: no answer within {TIMEOUT:?}")),
    }
}

/// SUBSCRIBE or UNSUBSCRIBE `keys`, one command per channel: the sink matches replies to
/// commands one to one, and a command naming n channels gets n replies, which would answer
/// the commands sent after it. Sent together, so one round trip.
fn each(
    sink: &PubSubSink,
    subscribe: bool,
    keys: impl IntoIterator<Item = String>,
) -> impl Future<Output = RedisResult<()>> + 'static {
    try_join_all(keys.into_iter().map(|key| {
        let mut sink = sink.clone();
        async move {
            if subscribe {
                sink.subscribe(key).await
            } else {
                sink.unsubscribe(key).await
            }
        }
    }))
    .map_ok(|_| ())
}

/// One step of setting a connection up, bounded. Ensure requests wait in the queue meanwhile:
/// answered at once, the first connect would refuse every new channel.
pub(super) async fn setup<T>(
    what: &str,
    step: impl Future<Output = RedisResult<T>>,
) -> Result<T, Ended> {
    bounded(what, step).await.map_err(Ended::Disconnected)
}

impl<F: Feed> Subscriber<F> {
    /// Runs the task until the broker behind `inbound` is gone.
    pub(crate) fn spawn(self, inbound: impl Inbound) {
        tokio::spawn(self.run(inbound));
    }

    async fn run(mut self, inbound: impl Inbound) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let err = match self.session(&inbound, &mut backoff).await {
                Ok(never) => match never {},
                Err(Ended::BrokerGone) => return,
                Err(Ended::Disconnected(err)) => err,
            };
            self.registry.reachable.store(false, Ordering::Release);
            tracing::warn!(%err, retry_in = ?backoff, "Redis subscription lost");
            if self.feed.disconnected(&self.active, &inbound).is_err() {
                return;
            }
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => match request {
                        None => return,
                        Some(request) => self.offline(request),
                    },
                    () = self.registry.wake.notified() => {
                        // Nothing to unsubscribe: the connection is gone.
                        if self.forget_released(&inbound).is_err() {
                            return;
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// While disconnected: channels already subscribed stay (they are
    /// resubscribed on reconnect); new ones are refused, so their clients get a 503 and retry.
    fn offline(&self, request: Ensure) {
        let known = request.names.iter().all(|n| self.active.contains_key(n));
        let _ = request.reply.send(if known {
            Ok(())
        } else {
            Err("Redis is unreachable".to_owned())
        });
    }

    /// One connection to Redis, until it fails.
    async fn session(
        &mut self,
        inbound: &impl Inbound,
        backoff: &mut Duration,
    ) -> Result<Infallible, Ended> {
        let client = self.client.clone();
        let pubsub = setup("connect", async move { client.get_async_pubsub().await }).await?;
        let (sink, mut stream) = pubsub.split();
        if !self.active.is_empty() {
            let keys: Vec<String> = self.active.keys().map(|n| self.feed.key(n)).collect();
            setup("SUBSCRIBE", each(&sink, true, keys)).await?;
        }
        // After subscribing, so what is published from now on is either caught up on or in
        // the subscription.
        self.feed.connected(&mut self.active, inbound).await?;
        if !self.active.is_empty() {
            tracing::info!(channels = self.active.len(), "Redis subscription restored");
        }
        *backoff = MIN_BACKOFF;
        self.registry.reachable.store(true, Ordering::Release);
        // Looks every second whether the connection has been silent for the interval.
        let mut health = interval_at(Instant::now() + HEALTH_TICK, HEALTH_TICK);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        heard = Instant::now();
                        self.on_message(&message, inbound)?;
                    }
                    None => return Err(Ended::Disconnected("connection closed".to_owned())),
                },
                request = self.requests.recv() => {
                    let Some(first) = request else {
                        return Err(Ended::BrokerGone);
                    };
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match self.requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    self.ensure(&sink, batch, inbound).await?;
                }
                () = self.registry.wake.notified() => {
                    let gone = self.forget_released(inbound)?;
                    if !gone.is_empty() {
                        let keys = gone.iter().map(|n| self.feed.key(n));
                        bounded("UNSUBSCRIBE", each(&sink, false, keys))
                            .await
                            .map_err(Ended::Disconnected)?;
                    }
                }
                _ = health.tick() => {
                    if heard.elapsed() >= HEALTH_INTERVAL {
                        bounded("PING", sink.clone().ping::<Value>())
                            .await
                            .map_err(Ended::Disconnected)?;
                        heard = Instant::now();
                    }
                }
            }
        }
    }

    /// Subscribes the new channels of `batch`, then answers each request. A failure answers
    /// every request with it and ends the connection.
    async fn ensure(
        &mut self,
        sink: &PubSubSink,
        batch: Vec<Ensure>,
        inbound: &impl Inbound,
    ) -> Result<(), Ended> {
        // A caller that stopped waiting has released its channels, perhaps before they were
        // subscribed here: subscribing them now would keep them for nobody.
        let batch: Vec<Ensure> = batch.into_iter().filter(|r| !r.reply.is_closed()).collect();
        let mut new: Vec<Arc<str>> = Vec::new();
        let mut seen = HashSet::new();
        for name in batch.iter().flat_map(|r| &r.names) {
            if !self.active.contains_key(name) && seen.insert(name) {
                new.push(name.clone());
            }
        }
        if !new.is_empty() {
            let subscribed = match self.subscribe(sink, &new, inbound).await {
                Ok(seq) => seq,
                Err(err) => {
                    for request in batch {
                        let _ = request.reply.send(Err(err.clone()));
                    }
                    return Err(Ended::Disconnected(err));
                }
            };
            let mut registry = lock(&self.registry.subscribed);
            for name in &new {
                self.active.insert(name.clone(), subscribed);
                registry.insert(name.clone());
            }
            drop(registry);
            // The same, for a caller that gave up while the subscription was under way.
            for name in new {
                if !inbound.has_channel(&name)? {
                    self.registry.release(name);
                }
            }
        }
        for request in batch {
            let _ = request.reply.send(Ok(()));
        }
        Ok(())
    }

    /// Subscribes `names`; returns their mark, from the feed.
    async fn subscribe(
        &mut self,
        sink: &PubSubSink,
        names: &[Arc<str>],
        inbound: &impl Inbound,
    ) -> Result<u64, String> {
        let keys: Vec<String> = names.iter().map(|n| self.feed.key(n)).collect();
        bounded("SUBSCRIBE", each(sink, true, keys)).await?;
        self.feed.subscribed(names, inbound).await
    }

    /// Takes the released names and forgets those that still have no local subscriber;
    /// returns them, for the caller to unsubscribe.
    fn forget_released(&mut self, inbound: &impl Inbound) -> Result<Vec<Arc<str>>, Gone> {
        let released = std::mem::take(&mut *lock(&self.registry.released));
        let mut gone = Vec::new();
        for name in released {
            if !self.active.contains_key(&name) {
                continue;
            }
            // Out of `subscribed` before looking: a subscriber that found it there had its
            // channel in the broker already, so it is seen below.
            lock(&self.registry.subscribed).remove(&name);
            if inbound.has_channel(&name)? {
                // A subscriber came back meanwhile.
                lock(&self.registry.subscribed).insert(name);
            } else {
                self.active.remove(&name);
                gone.push(name);
            }
        }
        Ok(gone)
    }

    fn on_message(&mut self, message: &redis::Msg, inbound: &impl Inbound) -> Result<(), Gone> {
        let Some(name) = self.feed.name(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(mark) = self.active.get_mut(name) else {
            return Ok(()); // unsubscribed meanwhile
        };
        self.feed
            .message(name, message.get_payload_bytes(), mark, inbound)
    }
}
