//! The Redis backend (feature `redis`): several instances share channels, ids and history.
//!
//! flask-sse needs Redis to scale past one process, and opens one Redis subscription per
//! connected browser. Here fan-out stays local:
//!
//! - **publish** runs one Lua script that takes the next id from one Redis counter, appends the
//!   event to the channel's history (a stream capped at [`BrokerBuilder::history`] entries) and
//!   publishes it, atomically: an event is stored and delivered, or neither;
//! - each instance holds **one** Redis subscription per channel that has local subscribers
//!   (taken when the first arrives, dropped when the last leaves), all on one connection, and
//!   feeds its in-process channels from it: Redis sees O(instances × channels) subscriptions,
//!   never O(clients);
//! - **resume** (`Last-Event-ID`) reads the histories in Redis, so a client can reconnect to
//!   any instance and get exactly the events it missed.
//!
//! # Faults
//!
//! Nothing on a request's path waits on Redis for more than 5 s: each command has 2 s for
//! its answer, and a publish, a new subscription or a resume that gets none fails:
//!
//! | Redis | publish | new stream on a channel this instance has no subscription for |
//! |---|---|---|
//! | refuses the connection, or the command | [`PublishError::Backend`], `503`: nothing was published | [`SubscribeError::Backend`], `503` |
//! | does not answer in time (paused, partitioned) | [`PublishError::Unknown`], `504`: the event may be published, now or when Redis is back | [`SubscribeError::Backend`], `503` |
//!
//! A publish is never silently dropped, and a retry after either is safe when the event has
//! an id (see [Repeats](#repeats)). Streams already open stay open (keep-alives go on), and so
//! does subscribing to a channel this instance holds a subscription for.
//!
//! The subscription connection is checked: a PING after 5 s without a message, and a
//! command on it without an answer within 2 s, replace it as if it had dropped. The instance
//! reconnects with backoff (100 ms doubling to 5 s), subscribes its channels again and fills
//! the gap from the histories, so its clients lose nothing published meanwhile (with history
//! off, what was published during the outage is lost).
//!
//! If Redis comes back without its data (a restart without persistence), each instance notices
//! on reconnect (the `epoch` key is gone) and takes the histories from their start, so its
//! clients still get every event published since. The history from before is gone. Every
//! publish and reconnect raises the counter to the highest id its instance has seen, so ids go
//! on growing and a `Last-Event-ID` from before the loss is not read as a newer event; only
//! events published before any such instance is back, by one that had seen fewer ids (a fresh
//! process), reuse old ids.
//!
//! # Repeats
//!
//! A publish with an id ([`Event::id`](crate::Event::id)) that repeats the last one published
//! with that id on the same channel, byte for byte, within 10 minutes, is not published again:
//! it answers the same id, as the first did. So a publisher that did not get an answer
//! (`504`) retries with the same id without sending the event twice. An event with the same
//! id and other content is a new event, published as usual. Events without an id are never
//! taken for repeats.
//!
//! # Expiry
//!
//! A channel's history (and its index of publishers' ids) expires 1 day after the channel's
//! last publish, so Redis does not grow with every channel name ever used. The marks for
//! repeats expire after their 10 minutes. What remains per instance is two keys (`seq` and
//! `epoch`) and a clock of one entry per minute of publishing, for 1 day. A resume that would
//! have needed an expired history gets the gap: the clock tells which ids are older than it.
//! Under `maxmemory` pressure, a `volatile-*` eviction policy may take these keys earlier.
//!
//! # Resume
//!
//! A resume replays, on each channel, at most [`BrokerBuilder::history`] events (of this
//! instance's setting, whatever another instance keeps), and in all at most 4 MiB: the newest
//! events first, as far as both allow, and [`Resume::Gap`](crate::Resume::Gap) when
//! any event after the id is left out. With history 0 nothing is replayed. So a resume holds
//! at most 4 MiB until its client has read the replay, plus what Redis sends for it meanwhile
//! (the same bound). A publisher's id is found through each channel's index, never by reading
//! the histories.
//!
//! # Keys
//!
//! With the default prefix `tower-sse`: `tower-sse:seq` (the id counter), `tower-sse:epoch` (a
//! random token, lost with the data), `tower-sse:history:{channel}` (streams, entry id =
//! sequence number), `tower-sse:ids:{channel}` (publisher id -> sequence number),
//! `tower-sse:clock` (a stream of counter samples), `tower-sse:pubid:{channel} {id}` (repeat
//! marks) and the pub/sub channels `tower-sse:channel:{channel}`. Needs Redis 7.0 or later
//! (`XSETID ... MAXDELETEDID`).
//!
//! # Layout
//!
//! This module is the backend's face to the broker (publish, ensure, release, replay);
//! `subscriber` holds the task with the one pub/sub connection; `wire` the key names and the
//! message format; the Lua scripts sit beside them as `.lua` files.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::ConnectError> {
//! use tower_sse::{redis::url_from_env, Broker};
//!
//! let broker = match url_from_env() {
//!     Some(url) => Broker::builder().history(1000).connect_redis(&url).await?,
//!     None => Broker::builder().history(1000).build(),
//! };
//! # Ok(())
//! # }
//! ```
//!
//! [`BrokerBuilder::history`]: crate::BrokerBuilder::history
//! [`PublishError::Backend`]: crate::PublishError::Backend
//! [`PublishError::Unknown`]: crate::PublishError::Unknown
//! [`SubscribeError::Backend`]: crate::SubscribeError::Backend

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{Client, RedisError, Script, Value, aio::ConnectionManager};
use tokio::{
    sync::{
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::timeout,
};

use self::{
    subscriber::{Ensure, Registry, Subscriber},
    wire::{channel_key, clock_key, history_key, ids_key, parse_message, repeat_key, seq_key},
};
use crate::{
    backend::{Backend, BoxFuture, OutcomeUnknown, Replay},
    error::{BoxError, ConnectError},
    event::Event,
};

mod subscriber;
mod wire;

/// The Redis URL from the environment: `SSE_REDIS_URL`, else `REDIS_URL` (the names
/// flask-sse reads); `None` when neither is set (or both are empty).
///
/// ```
/// let url: Option<String> = tower_sse::redis::url_from_env();
/// ```
pub fn url_from_env() -> Option<String> {
    ["SSE_REDIS_URL", "REDIS_URL"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|url| !url.is_empty())
}

/// How long one Redis command may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish, an ensure or a replay may take in all, reconnecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ensure requests may wait for the subscription task.
const QUEUE: usize = 1024;

/// How long a channel's history is kept after its last publish.
const HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a publish with an id is remembered, so a repeat of it is not published.
const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How often the clock samples the counter, at most.
const CLOCK_STEP: Duration = Duration::from_secs(60);

/// How many bytes of events one resume replays at most.
const REPLAY_BYTES: usize = 4 << 20;

/// Connects to Redis at `url`; the returned task must be spawned with the broker's
/// [`Inbound`](crate::backend::Inbound) handle. `history` is how many events each channel's
/// stream keeps.
pub(crate) async fn connect(
    url: &str,
    history: usize,
) -> Result<(RedisBackend, Subscriber), ConnectError> {
    let failed = |err: redis::RedisError| ConnectError::new("Redis", url, err.into());
    let client = Client::open(url).map_err(failed)?;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(TIMEOUT)
        .set_response_timeout(TIMEOUT)
        .set_number_of_retries(1);
    let conn = client
        .get_connection_manager_with_config(manager)
        .await
        .map_err(failed)?;
    let (control, requests) = mpsc::channel(QUEUE);
    let registry = Arc::new(Registry::default());
    let seen = Arc::new(AtomicU64::new(0));
    let backend = RedisBackend {
        conn: conn.clone(),
        control,
        registry: registry.clone(),
        history,
        seen: seen.clone(),
        publish: Script::new(include_str!("publish.lua")),
        replay: Script::new(include_str!("replay.lua")),
    };
    let task = Subscriber::new(client, conn, requests, registry, seen);
    Ok((backend, task))
}

/// The broker's side of the backend: publish, ensure subscriptions, replay.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    control: mpsc::Sender<Ensure>,
    registry: Arc<Registry>,
    history: usize,
    /// The highest sequence number this instance has seen, shared with its [`Subscriber`].
    seen: Arc<AtomicU64>,
    publish: Script,
    replay: Script,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// A failed publish: [`OutcomeUnknown`] when the command may have reached Redis (no answer
/// in time, or the connection lost on the way), the plain error when Redis surely did not
/// run it (connection refused, an error reply).
fn publish_error(err: RedisError) -> BoxError {
    if err.is_timeout() || err.is_connection_dropped() {
        Box::new(OutcomeUnknown(err.into()))
    } else {
        err.into()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBackend {
    async fn publish(&self, channel: &str, event: &Event) -> Result<String, BoxError> {
        let head = event.encode_head(0);
        let (flag, id) = match event.get_id() {
            Some(id) => ("g", id),
            None => ("a", ""),
        };
        let mut conn = self.conn.clone();
        let mut invocation = self.publish.key(seq_key());
        invocation
            .key(history_key(channel))
            .key(channel_key(channel))
            .key(ids_key(channel))
            .key(repeat_key(channel, id))
            .key(clock_key())
            .arg(&head[..])
            .arg(id)
            .arg(flag)
            .arg(self.history)
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(millis(HISTORY_TTL))
            .arg(millis(REPEAT_WINDOW))
            .arg(millis(CLOCK_STEP));
        let published = match timeout(REQUEST_TIMEOUT, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(err)) => Err(publish_error(err)),
            Err(_) => Err(Box::new(OutcomeUnknown(
                format!("no answer from Redis within {REQUEST_TIMEOUT:?}").into(),
            )) as BoxError),
        };
        let (id, seq, repeat): (String, u64, u8) = published
            .inspect_err(|err| tracing::warn!(%err, channel, "publish to Redis failed"))?;
        if repeat == 1 {
            tracing::debug!(channel, id, "a repeat, not published again");
        }
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(id)
    }

    async fn ensure(&self, channels: &[Arc<str>]) -> Result<(), BoxError> {
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

    async fn replay(
        &self,
        channels: &[Arc<str>],
        last_event_id: &str,
        seq: Option<u64>,
    ) -> Result<Replay, BoxError> {
        let mut invocation = self.replay.key(seq_key());
        invocation.key(clock_key());
        for name in channels {
            invocation.key(history_key(name)).key(ids_key(name));
        }
        invocation
            .arg(last_event_id)
            .arg(if seq.is_some() { "1" } else { "0" })
            .arg(self.history)
            .arg(REPLAY_BYTES)
            .arg(millis(HISTORY_TTL));
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = timeout(REQUEST_TIMEOUT, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| format!("no answer from Redis within {REQUEST_TIMEOUT:?}"))??;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let (Some(snapshot), Some(complete), Some(after)) =
            (int(reply.first()), int(reply.get(1)), int(reply.get(2)))
        else {
            return Err("unexpected replay reply from Redis".into());
        };
        let snapshot = u64::try_from(snapshot).unwrap_or(0);
        self.seen.fetch_max(snapshot, Ordering::Relaxed);
        let Ok(after) = u64::try_from(after) else {
            return Ok(Replay::default());
        };
        let mut messages: Vec<_> = reply[3..]
            .iter()
            .filter_map(|v| match v {
                Value::BulkString(bytes) => parse_message(bytes),
                _ => None,
            })
            .collect();
        messages.sort_by_key(|m| m.seq);
        Ok(Replay {
            after: Some(after),
            complete: complete == 1,
            snapshot,
            events: messages.into_iter().map(|m| m.bytes).collect(),
        })
    }
}

impl Backend for RedisBackend {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(RedisBackend::publish(self, channel, event))
    }

    fn ensure<'a>(&'a self, channels: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(RedisBackend::ensure(self, channels))
    }

    fn release(&self, channel: Arc<str>) {
        self.registry.release(channel);
    }

    fn reachable(&self) -> bool {
        self.registry.reachable()
    }

    fn replay<'a>(
        &'a self,
        channels: &'a [Arc<str>],
        last_event_id: &'a str,
        seq: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay, BoxError>> {
        Box::pin(RedisBackend::replay(self, channels, last_event_id, seq))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_publish_sent_without_an_answer_has_an_unknown_outcome() {
        let io = |kind: ErrorKind| RedisError::from(Error::from(kind));
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
        ] {
            assert!(publish_error(io(kind)).is::<OutcomeUnknown>(), "{kind:?}");
        }
        let refused = publish_error(io(ErrorKind::ConnectionRefused));
        assert!(!refused.is::<OutcomeUnknown>());
        let reply = RedisError::from((redis::ErrorKind::ResponseError, "ERR", "bad".to_owned()));
        assert!(!publish_error(reply).is::<OutcomeUnknown>());
    }
}
