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
//! When the subscription connection drops, open streams stay open (keep-alives go on). The
//! instance reconnects with backoff (100 ms doubling to 5 s), subscribes its channels again and
//! fills the gap from the histories, so its clients lose nothing published meanwhile (with
//! history off, what was published during the outage is lost). A publish while Redis is
//! unreachable fails with [`PublishError::Backend`]; it is never silently dropped. A new
//! stream on a channel this instance has no subscription for yet fails with
//! [`SubscribeError::Backend`].
//!
//! If Redis comes back without its data (a restart without persistence), each instance notices
//! on reconnect (the `epoch` key is gone) and takes the histories from their start, so its
//! clients still get every event published since. The history from before is gone. Every
//! publish and reconnect raises the counter to the highest id its instance has seen, so ids go
//! on growing and a `Last-Event-ID` from before the loss is not read as a newer event; only
//! events published before any such instance is back, by one that had seen fewer ids (a fresh
//! process), reuse old ids.
//!
//! # Keys
//!
//! With the default prefix `tower-sse`: `tower-sse:seq` (the id counter), `tower-sse:epoch` (a
//! random token, lost with the data), `tower-sse:history:{channel}` (streams, entry id =
//! sequence number) and the pub/sub channels `tower-sse:channel:{channel}`. Needs Redis 7.0 or
//! later (`XSETID ... MAXDELETEDID`).
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
//! [`SubscribeError::Backend`]: crate::SubscribeError::Backend

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{aio::ConnectionManager, Client, Script, Value};
use tokio::sync::{mpsc, oneshot};

use self::{
    subscriber::{Control, Subscriber},
    wire::{channel_key, history_key, parse_message, seq_key},
};
use crate::{
    backend::{Backend, BoxFuture, Replay},
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
    let (control, requests) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicU64::new(0));
    let backend = RedisBackend {
        conn: conn.clone(),
        control,
        history,
        seen: seen.clone(),
        publish: Script::new(include_str!("publish.lua")),
        replay: Script::new(include_str!("replay.lua")),
    };
    Ok((backend, Subscriber::new(client, conn, requests, seen)))
}

/// The broker's side of the backend: publish, ensure subscriptions, replay.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    control: mpsc::UnboundedSender<Control>,
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

impl RedisBackend {
    async fn publish(&self, channel: &str, event: &Event) -> Result<String, BoxError> {
        let head = event.encode_head(0);
        let (flag, id) = match event.get_id() {
            Some(id) => ("g", id),
            None => ("a", ""),
        };
        let mut conn = self.conn.clone();
        let (id, seq): (String, u64) = self
            .publish
            .key(seq_key())
            .key(history_key(channel))
            .key(channel_key(channel))
            .arg(&head[..])
            .arg(id)
            .arg(flag)
            .arg(self.history)
            .arg(self.seen.load(Ordering::Relaxed))
            .invoke_async(&mut conn)
            .await
            .inspect_err(|err| tracing::warn!(%err, channel, "publish to Redis failed"))?;
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(id)
    }

    async fn ensure(&self, channels: &[Arc<str>]) -> Result<(), BoxError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Ensure(channels.to_vec(), reply))
            .map_err(|_| "Redis subscriber stopped")?;
        match answer.await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err("Redis subscriber stopped".into()),
        }
    }

    async fn replay(
        &self,
        channels: &[Arc<str>],
        last_event_id: &str,
        seq: Option<u64>,
    ) -> Result<Replay, BoxError> {
        let mut invocation = self.replay.key(seq_key());
        for name in channels {
            invocation.key(history_key(name));
        }
        invocation
            .arg(last_event_id)
            .arg(if seq.is_some() { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
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
        // Without history nothing was kept: complete only if nothing was published since.
        let complete = complete == 1 && (self.history > 0 || after >= snapshot);
        Ok(Replay {
            after: Some(after),
            complete,
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
        // The subscriber task is gone only when the broker is.
        let _ = self.control.send(Control::Release(channel));
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
