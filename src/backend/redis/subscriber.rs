//! The task that holds an instance's one Redis pub/sub connection.
//!
//! It subscribes a channel when its first local subscriber arrives ([`Ensure`]) and
//! unsubscribes it when the last leaves ([`Registry::release`]), feeds every message into the
//! broker through its [`Inbound`] handle, and after a lost connection reconnects with backoff,
//! subscribes again and backfills from the histories what was published meanwhile.
//!
//! # Nothing waits on Redis for ever
//!
//! - Every await on Redis is bounded by [`TIMEOUT`]. A command without an answer in time
//!   ends the connection as if it had dropped: it is replaced, its channels subscribed again
//!   and backfilled. So a command stuck on a paused Redis costs its caller [`TIMEOUT`] (a new
//!   channel takes two steps: SUBSCRIBE, then reading the counter), and holds up the
//!   requests behind it no longer than that.
//! - After [`HEALTH_INTERVAL`] without a message the task sends a PING; no answer within
//!   [`TIMEOUT`] and the connection is replaced, as above: a paused Redis or a partition
//!   (TCP up, nothing answers) is found within `HEALTH_INTERVAL + HEALTH_TICK + TIMEOUT`,
//!   8 s.
//! - The queue of [`Ensure`] requests is bounded ([`QUEUE`](super::backend::QUEUE) requests); when
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
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, TryFutureExt, future::try_join_all};
use redis::{
    AsyncCommands, Client, RedisResult, Script, Value,
    aio::{ConnectionManager, PubSubSink},
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval_at, timeout},
};

use super::{
    backend::TIMEOUT,
    wire::{channel_key, channel_name, epoch_key, history_key, parse_message, seq_key, token},
};
use crate::backend::{Gone, Inbound, Message};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the pub/sub connection may be silent before a PING checks it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How often the task looks whether [`HEALTH_INTERVAL`] has passed.
const HEALTH_TICK: Duration = Duration::from_secs(1);

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

/// One entry of an `XRANGE` reply: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// The subscription task's state; [`Subscriber::spawn`] starts it.
pub(crate) struct Subscriber {
    client: Client,
    conn: ConnectionManager,
    requests: mpsc::Receiver<Ensure>,
    registry: Arc<Registry>,
    /// Channels subscribed in Redis, with the last sequence number delivered on each.
    active: HashMap<Arc<str>, u64>,
    /// The highest sequence number this instance has seen, shared with the backend.
    seen: Arc<AtomicU64>,
    /// The `epoch` key's value at the last connect.
    epoch: Option<String>,
    restore: Script,
}

/// Why a session with Redis ended.
enum Ended {
    BrokerGone,
    Disconnected(String),
}

impl From<Gone> for Ended {
    fn from(Gone: Gone) -> Self {
        Ended::BrokerGone
    }
}

/// Awaits one Redis step, for at most [`TIMEOUT`].
async fn bounded<T>(what: &str, step: impl Future<Output = RedisResult<T>>) -> Result<T, String> {
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
async fn setup<T>(what: &str, step: impl Future<Output = RedisResult<T>>) -> Result<T, Ended> {
    bounded(what, step).await.map_err(Ended::Disconnected)
}

impl Subscriber {
    pub(super) fn new(
        client: Client,
        conn: ConnectionManager,
        requests: mpsc::Receiver<Ensure>,
        registry: Arc<Registry>,
        seen: Arc<AtomicU64>,
    ) -> Subscriber {
        Subscriber {
            client,
            conn,
            requests,
            registry,
            active: HashMap::new(),
            seen,
            epoch: None,
            restore: Script::new(include_str!("restore.lua")),
        }
    }

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
            let keys: Vec<String> = self.active.keys().map(|n| channel_key(n)).collect();
            setup("SUBSCRIBE", each(&sink, true, keys)).await?;
        }
        // After subscribing, so what is published from now on is either in the backfill or
        // in the subscription (or both: `active` drops the second copy).
        if self.restore().await? {
            inbound.data_lost()?;
        }
        if !self.active.is_empty() {
            self.backfill(inbound).await?;
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
                        let keys = gone.iter().map(|n| channel_key(n));
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
            let subscribed = match self.subscribe(sink, &new).await {
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

    /// Subscribes `names`; returns the counter read once Redis confirmed it.
    async fn subscribe(&self, sink: &PubSubSink, names: &[Arc<str>]) -> Result<u64, String> {
        bounded(
            "SUBSCRIBE",
            each(sink, true, names.iter().map(|n| channel_key(n))),
        )
        .await?;
        // Events up to the counter read now were published before this subscription was
        // answered, so before any local subscriber of these channels got its response.
        let mut conn = self.conn.clone();
        let seq: Option<u64> = bounded("GET", conn.get(seq_key())).await?;
        let seq = seq.unwrap_or(0);
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
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

    /// Checks whether Redis lost its data since the last connect, and if so makes the backfill
    /// take the histories from their start: they hold only events published since the loss,
    /// with sequence numbers that may be lower than the ones seen before it. Returns whether
    /// it did.
    async fn restore(&mut self) -> Result<bool, Ended> {
        let script = self.restore.clone();
        let seen = self.seen.load(Ordering::Relaxed);
        let mut conn = self.conn.clone();
        let epoch: String = setup("restore", async move {
            script
                .key(seq_key())
                .key(epoch_key())
                .arg(seen)
                .arg(token())
                .invoke_async(&mut conn)
                .await
        })
        .await?;
        let lost = self.epoch.as_ref().is_some_and(|old| *old != epoch);
        if lost {
            tracing::warn!("Redis lost its data; replaying the histories from their start");
            for last in self.active.values_mut() {
                *last = 0;
            }
        }
        self.epoch = Some(epoch);
        Ok(lost)
    }

    fn on_message(&mut self, message: &redis::Msg, inbound: &impl Inbound) -> Result<(), Gone> {
        let Some(name) = channel_name(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(parsed) = parse_message(message.get_payload_bytes()) else {
            tracing::warn!(channel = name, "unreadable message from Redis");
            return Ok(());
        };
        self.deliver(name, parsed, inbound)
    }

    /// Delivers an event of an active channel unless it was delivered already (by the
    /// subscription or a backfill: both may carry it).
    fn deliver(
        &mut self,
        name: &str,
        message: Message,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        let Some(last) = self.active.get_mut(name) else {
            return Ok(()); // unsubscribed meanwhile
        };
        if message.seq <= *last {
            return Ok(());
        }
        *last = message.seq;
        self.seen.fetch_max(message.seq, Ordering::Relaxed);
        inbound.deliver(name, message)
    }

    /// After a reconnect: delivers, in sequence order, what every active channel missed.
    async fn backfill(&mut self, inbound: &impl Inbound) -> Result<(), Ended> {
        let names: Vec<Arc<str>> = self.active.keys().cloned().collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in &names {
            let from = format!("{}-0", self.active[name] + 1);
            pipe.cmd("XRANGE").arg(history_key(name)).arg(from).arg("+");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<StreamEntry>> =
            setup("backfill", async move { pipe.query_async(&mut conn).await }).await?;
        let mut missed: Vec<(Arc<str>, Message)> = Vec::new();
        for (name, entries) in names.iter().zip(replies) {
            for (_, fields) in entries {
                if let Some(message) = fields.get("m").and_then(|m| parse_message(m)) {
                    missed.push((name.clone(), message));
                }
            }
        }
        missed.sort_by_key(|(_, m)| m.seq);
        tracing::info!(events = missed.len(), "backfilled from Redis history");
        for (name, message) in missed {
            self.deliver(&name, message, inbound)?;
        }
        Ok(())
    }
}
