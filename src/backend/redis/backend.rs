//! [`RedisBackend`]: the broker's side of the Redis backend, what the [`Backend`] seam asks
//! of it: publish (one Lua script), ensure a channel's subscription (a request to the
//! [`Subscriber`] task, through [`Subscriptions`]), release, replay (one Lua script).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{Script, Value, aio::ConnectionManager};
use tokio::time::timeout;

use super::{
    connection::{self, REQUEST_TIMEOUT},
    feed::Numbered,
    subscriber::{Subscriber, Subscriptions},
    wire::{channel_key, clock_key, history_key, ids_key, read_replay, repeat_key, seq_key},
};
use crate::{
    backend::{Backend, BoxFuture, Replay},
    error::{BoxError, ConnectError},
    event::Event,
};

/// How long a channel's history is kept after its last publish.
const HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a publish with an id is remembered, so a repeat of it is not published.
const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How often the clock samples the counter, at most.
const CLOCK_STEP: Duration = Duration::from_secs(60);

/// How many bytes of events one resume replays at most.
const REPLAY_BYTES: usize = 4 << 20;

/// The broker's side of the backend: publish, ensure subscriptions, replay.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    subscriptions: Subscriptions,
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBackend {
    /// Connects to Redis at `url`; the returned task must be spawned with the broker's
    /// [`Inbound`](crate::backend::Inbound) handle. `history` is how many events each
    /// channel's stream keeps.
    pub(super) async fn connect(
        url: &str,
        history: usize,
    ) -> Result<(RedisBackend, Subscriber<Numbered>), ConnectError> {
        let (client, conn) = connection::open(url).await?;
        let seen = Arc::new(AtomicU64::new(0));
        let feed = Numbered::new(conn.clone(), seen.clone());
        let (subscriptions, task) = Subscriptions::new(client, feed);
        let backend = RedisBackend {
            conn,
            subscriptions,
            history,
            seen,
            publish: Script::new(include_str!("publish.lua")),
            replay: Script::new(include_str!("replay.lua")),
        };
        Ok((backend, task))
    }

    async fn publish(&self, channels: &[&str], event: &Event) -> Result<String, BoxError> {
        let head = event.encode_head(0);
        let (flag, id) = match event.get_id() {
            Some(id) => ("g", id),
            None => ("a", ""),
        };
        let mut conn = self.conn.clone();
        // A repeat is told by the first channel: the same id and event to the same channels.
        let first = channels.first().copied().unwrap_or_default();
        let mut invocation = self.publish.key(seq_key());
        invocation.key(clock_key()).key(repeat_key(first, id));
        for channel in channels {
            invocation
                .key(history_key(channel))
                .key(channel_key(channel))
                .key(ids_key(channel));
        }
        invocation
            .arg(&head[..])
            .arg(id)
            .arg(flag)
            .arg(self.history)
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(millis(HISTORY_TTL))
            .arg(millis(REPEAT_WINDOW))
            .arg(millis(CLOCK_STEP));
        let published = connection::publish(invocation.invoke_async(&mut conn)).await;
        let (id, seq, repeat): (String, u64, u8) = published
            .inspect_err(|err| tracing::warn!(%err, ?channels, "publish to Redis failed"))?;
        if repeat == 1 {
            tracing::debug!(?channels, id, "a repeat, not published again");
        }
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(id)
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
        let (snapshot, replay) = read_replay(&reply, "Redis")?;
        self.seen.fetch_max(snapshot, Ordering::Relaxed);
        Ok(replay)
    }
}

impl Backend for RedisBackend {
    fn publish<'a>(
        &'a self,
        channels: &'a [&'a str],
        event: &'a Event,
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(RedisBackend::publish(self, channels, event))
    }

    fn ensure<'a>(&'a self, channels: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(self.subscriptions.ensure(channels))
    }

    fn release(&self, channel: Arc<str>) {
        self.subscriptions.release(channel);
    }

    fn reachable(&self) -> bool {
        self.subscriptions.reachable()
    }

    fn keeps_history(&self) -> bool {
        true
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
