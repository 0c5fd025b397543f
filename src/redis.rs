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
//! stream on a channel this instance has no subscription for yet fails the same way.
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
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::PublishError> {
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

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{aio::ConnectionManager, AsyncCommands, Client, Script, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{
    broker::{BrokerBuilder, Entry, Resume, WeakBroker},
    channel::Channels,
    event::Event,
    PublishError,
};

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

const PREFIX: &str = "tower-sse";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS: counter, history stream, pub/sub channel. ARGV: the encoded event without its `id:`
/// line and final blank line, the publisher's id, `g` (given) or `a` (assign), history length,
/// the highest sequence number this instance has seen (see [`RESTORE`]).
/// The message is `{seq}\n{g|a}{id}\n{bytes}`, stored and published as one. Returns
/// `{id, seq}`.
///
/// Trimming with `MAXLEN` does not move the stream's `max-deleted-entry-id` (Redis 7.0), which
/// [`REPLAY`] reads to tell a gap: so trim by hand and record the last entry dropped.
const PUBLISH: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[5])
end
local seq = redis.call('INCR', KEYS[1])
local sid = string.format('%d', seq)
local id = ARGV[2]
if ARGV[3] == 'a' then id = sid end
local msg = sid .. '\n' .. ARGV[3] .. id .. '\n' .. ARGV[1] .. 'id: ' .. id .. '\n\n'
local n = tonumber(ARGV[4])
if n > 0 then
  redis.call('XADD', KEYS[2], sid .. '-0', 'm', msg, 'i', id)
  local len = redis.call('XLEN', KEYS[2])
  if len > n then
    local dropped = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', len - n)
    redis.call('XTRIM', KEYS[2], 'MAXLEN', n)
    redis.call('XSETID', KEYS[2], sid .. '-0', 'MAXDELETEDID', dropped[#dropped][1])
  end
end
redis.call('PUBLISH', KEYS[3], msg)
return {id, seq}
";

/// Run by the subscription task on every (re)connect. KEYS: counter, epoch. ARGV: the highest
/// sequence number this instance has seen, a fresh random token. Returns the epoch.
///
/// Without persistence a restarted Redis has lost the counter and the histories. The epoch key
/// goes with them, so a changed epoch tells the task to take the histories from the start. And
/// the counter is raised back to what this instance has seen, so that ids keep growing: a
/// browser's `Last-Event-ID` from before the loss is not mistaken for a newer event, and events
/// are not dropped as already seen.
const RESTORE: &str = r"
redis.call('SET', KEYS[2], ARGV[2], 'NX')
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('GET', KEYS[2])
";

/// KEYS: counter, then the history streams. ARGV: the last event id, `1` if it is a sequence
/// number. Returns `{snapshot, complete, after, messages...}`; `after` is -1 for an unknown id.
const REPLAY: &str = r"
local snapshot = tonumber(redis.call('GET', KEYS[1]) or '0')
local id = ARGV[1]
local after = -1
if ARGV[2] == '1' then
  local n = tonumber(id)
  if n <= snapshot then after = n end
else
  for i = 2, #KEYS do
    for _, e in ipairs(redis.call('XREVRANGE', KEYS[i], '+', '-')) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'i' and f[j + 1] == id then
          local seq = tonumber(string.match(e[1], '^(%d+)'))
          if seq > after then after = seq end
        end
      end
    end
  end
end
if after < 0 then return {snapshot, 0, -1} end
local out = {snapshot, 1, after}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then
        if tonumber(string.match(info[j + 1], '^(%d+)')) > after then out[2] = 0 end
      end
    end
    for _, e in ipairs(redis.call('XRANGE', KEYS[i], string.format('%d', after + 1) .. '-0', '+')) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'm' then table.insert(out, f[j + 1]) end
      end
    end
  end
end
return out
";

fn seq_key() -> String {
    format!("{PREFIX}:seq")
}

fn epoch_key() -> String {
    format!("{PREFIX}:epoch")
}

fn history_key(channel: &str) -> String {
    format!("{PREFIX}:history:{channel}")
}

fn channel_key(channel: &str) -> String {
    format!("{PREFIX}:channel:{channel}")
}

/// Reads `{seq}\n{g|a}{id}\n{bytes}`.
fn parse_message(message: &[u8]) -> Option<Entry> {
    let (seq, rest) = split_line(message)?;
    let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
    let (id, bytes) = split_line(rest)?;
    let id = match id.split_first()? {
        (b'g', id) => Some(std::str::from_utf8(id).ok()?.into()),
        (b'a', _) => None,
        _ => return None,
    };
    Some(Entry {
        seq,
        origin: seq,
        id,
        bytes: Bytes::copy_from_slice(bytes),
    })
}

/// A value no other instance's connect picks: random keys (per process and per call), the
/// time and the process id.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    format!("{:016x}{:08x}", hasher.finish(), std::process::id())
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
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

enum Control {
    /// Make sure these channels have a Redis subscription, then answer.
    Ensure(Vec<Arc<str>>, oneshot::Sender<Result<(), String>>),
    /// This channel lost its last local subscriber.
    Release(Arc<str>),
}

/// The events to replay on a resume, and from where the live events take over.
pub(crate) struct Replay {
    pub(crate) resume: Resume,
    /// Everything up to this sequence number was in Redis when the replay was read.
    pub(crate) snapshot: u64,
    pub(crate) entries: Vec<Arc<Entry>>,
}

impl RedisBackend {
    pub(crate) async fn connect(
        url: &str,
        config: &BrokerBuilder,
    ) -> Result<(RedisBackend, Subscriber), redis::RedisError> {
        let client = Client::open(url)?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1);
        let conn = client.get_connection_manager_with_config(manager).await?;
        let (control, requests) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicU64::new(0));
        let backend = RedisBackend {
            conn: conn.clone(),
            control,
            history: config.history_len(),
            seen: seen.clone(),
            publish: Script::new(PUBLISH),
            replay: Script::new(REPLAY),
        };
        let subscriber = Subscriber {
            client,
            conn,
            requests,
            active: HashMap::new(),
            seen,
            epoch: None,
            restore: Script::new(RESTORE),
        };
        Ok((backend, subscriber))
    }

    pub(crate) async fn publish(
        &self,
        channel: &str,
        event: &Event,
    ) -> Result<String, PublishError> {
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
            .map_err(|err| {
                tracing::warn!(%err, channel, "publish to Redis failed");
                PublishError::backend(err)
            })?;
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(id)
    }

    pub(crate) async fn ensure(&self, channels: &Channels) -> Result<(), PublishError> {
        let (reply, answer) = oneshot::channel();
        let names = channels.names().to_vec();
        self.control
            .send(Control::Ensure(names, reply))
            .map_err(|_| PublishError::backend("Redis subscriber stopped"))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(PublishError::backend(err)),
            Err(_) => Err(PublishError::backend("Redis subscriber stopped")),
        }
    }

    pub(crate) fn release(&self, channel: Arc<str>) {
        // The subscriber task is gone only when the broker is.
        let _ = self.control.send(Control::Release(channel));
    }

    pub(crate) async fn replay(
        &self,
        channels: &Channels,
        last_event_id: &str,
    ) -> Result<Replay, PublishError> {
        let numeric = crate::broker::parse_seq(last_event_id).is_some();
        let mut invocation = self.replay.key(seq_key());
        for name in channels.iter() {
            invocation.key(history_key(name));
        }
        invocation
            .arg(last_event_id)
            .arg(if numeric { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(PublishError::backend)?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let (Some(snapshot), Some(complete), Some(after)) =
            (int(reply.first()), int(reply.get(1)), int(reply.get(2)))
        else {
            return Err(PublishError::backend("unexpected replay reply from Redis"));
        };
        let snapshot = u64::try_from(snapshot).unwrap_or(0);
        self.seen.fetch_max(snapshot, Ordering::Relaxed);
        if after < 0 {
            return Ok(Replay {
                resume: Resume::Unknown,
                snapshot: 0,
                entries: Vec::new(),
            });
        }
        let mut entries: Vec<Arc<Entry>> = reply[3..]
            .iter()
            .filter_map(|v| match v {
                Value::BulkString(bytes) => parse_message(bytes).map(Arc::new),
                _ => None,
            })
            .collect();
        entries.sort_by_key(|e| e.seq);
        // Without history nothing was kept: complete only if nothing was published since.
        let complete = complete == 1 && (self.history > 0 || after as u64 >= snapshot);
        Ok(Replay {
            resume: if complete {
                Resume::Complete
            } else {
                Resume::Gap
            },
            snapshot,
            entries,
        })
    }
}

/// One entry of an `XRANGE` reply: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// The task that holds this instance's one Redis subscription connection.
pub(crate) struct Subscriber {
    client: Client,
    conn: ConnectionManager,
    requests: mpsc::UnboundedReceiver<Control>,
    /// Channels subscribed in Redis, with the last sequence number delivered on each.
    active: HashMap<Arc<str>, u64>,
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

impl Subscriber {
    pub(crate) fn spawn(self, broker: WeakBroker) {
        tokio::spawn(self.run(broker));
    }

    async fn run(mut self, broker: WeakBroker) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let connected = match self.session(&broker, &mut backoff).await {
                Ended::BrokerGone => return,
                Ended::Disconnected(err) => err,
            };
            tracing::warn!(err = %connected, retry_in = ?backoff, "Redis subscription lost");
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => match request {
                        None => return,
                        Some(request) => self.offline(request, &broker),
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// While disconnected: channels already subscribed stay (they are resubscribed on
    /// reconnect); new ones are refused, so their clients get a 503 and retry.
    fn offline(&mut self, request: Control, broker: &WeakBroker) {
        match request {
            Control::Ensure(names, reply) => {
                let known = names.iter().all(|n| self.active.contains_key(n));
                let _ = reply.send(if known {
                    Ok(())
                } else {
                    Err("Redis is unreachable".to_owned())
                });
            }
            Control::Release(name) => {
                if !broker.upgrade().is_some_and(|b| b.has_channel(&name)) {
                    self.active.remove(&name);
                }
            }
        }
    }

    async fn session(&mut self, broker: &WeakBroker, backoff: &mut Duration) -> Ended {
        let pubsub = match tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => return Ended::Disconnected(err.to_string()),
            Err(_) => return Ended::Disconnected("connect timed out".to_owned()),
        };
        let (mut sink, mut stream) = pubsub.split();
        if !self.active.is_empty() {
            let keys: Vec<String> = self.active.keys().map(|n| channel_key(n)).collect();
            if let Err(err) = sink.subscribe(&keys).await {
                return Ended::Disconnected(err.to_string());
            }
        }
        // After subscribing, so what is published from now on is either in the backfill or
        // in the subscription (or both: `active` drops the second copy).
        match self.restore().await {
            Ok(true) => {
                if let Some(broker) = broker.upgrade() {
                    broker.data_lost();
                }
            }
            Ok(false) => {}
            Err(err) => return Ended::Disconnected(err.to_string()),
        }
        if !self.active.is_empty() {
            if let Err(err) = self.backfill(broker).await {
                return Ended::Disconnected(err.to_string());
            }
            tracing::info!(channels = self.active.len(), "Redis subscription restored");
        }
        *backoff = MIN_BACKOFF;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        let Some(broker) = broker.upgrade() else { return Ended::BrokerGone };
                        self.on_message(&message, &broker);
                    }
                    None => return Ended::Disconnected("connection closed".to_owned()),
                },
                request = self.requests.recv() => match request {
                    None => return Ended::BrokerGone,
                    Some(Control::Ensure(names, reply)) => {
                        let result = self.subscribe(&mut sink, names).await;
                        let failed = result.as_ref().err().map(|e| e.to_string());
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                        if let Some(err) = failed {
                            return Ended::Disconnected(err);
                        }
                    }
                    Some(Control::Release(name)) => {
                        if broker.upgrade().is_some_and(|b| b.has_channel(&name)) {
                            continue; // a subscriber came back meanwhile
                        }
                        if self.active.remove(&name).is_some() {
                            if let Err(err) = sink.unsubscribe(channel_key(&name)).await {
                                return Ended::Disconnected(err.to_string());
                            }
                        }
                    }
                },
            }
        }
    }

    async fn subscribe(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        names: Vec<Arc<str>>,
    ) -> redis::RedisResult<()> {
        let new: Vec<Arc<str>> = names
            .into_iter()
            .filter(|n| !self.active.contains_key(n))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = new.iter().map(|n| channel_key(n)).collect();
        sink.subscribe(&keys).await?;
        // Events up to the counter read now were published before this subscription was
        // answered, so before any local subscriber of these channels got its response.
        let mut conn = self.conn.clone();
        let seq: u64 = conn.get::<_, Option<u64>>(seq_key()).await?.unwrap_or(0);
        self.seen.fetch_max(seq, Ordering::Relaxed);
        for name in new {
            self.active.insert(name, seq);
        }
        Ok(())
    }

    /// Checks whether Redis lost its data since the last connect, and if so makes the backfill
    /// take the histories from their start: they hold only events published since the loss,
    /// with sequence numbers that may be lower than the ones seen before it. Returns whether
    /// it did.
    async fn restore(&mut self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let epoch: String = self
            .restore
            .key(seq_key())
            .key(epoch_key())
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(token())
            .invoke_async(&mut conn)
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

    fn on_message(&mut self, message: &redis::Msg, broker: &crate::Broker) {
        let Some(name) = message
            .get_channel_name()
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_prefix(":channel:"))
        else {
            return;
        };
        let Some(entry) = parse_message(message.get_payload_bytes()) else {
            tracing::warn!(channel = name, "unreadable message from Redis");
            return;
        };
        self.deliver(name, entry, broker);
    }

    /// Delivers an event of an active channel unless it was delivered already (by the
    /// subscription or a backfill: both may carry it).
    fn deliver(&mut self, name: &str, entry: Entry, broker: &crate::Broker) {
        let Some(last) = self.active.get_mut(name) else {
            return; // unsubscribed meanwhile
        };
        if entry.seq <= *last {
            return;
        }
        *last = entry.seq;
        self.seen.fetch_max(entry.seq, Ordering::Relaxed);
        broker.deliver_remote(name, entry);
    }

    /// After a reconnect: delivers, in sequence order, what every active channel missed.
    async fn backfill(&mut self, broker: &WeakBroker) -> redis::RedisResult<()> {
        let names: Vec<Arc<str>> = self.active.keys().cloned().collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in &names {
            let from = format!("{}-0", self.active[name] + 1);
            pipe.cmd("XRANGE").arg(history_key(name)).arg(from).arg("+");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<StreamEntry>> = pipe.query_async(&mut conn).await?;
        let mut missed: Vec<(Arc<str>, Entry)> = Vec::new();
        for (name, entries) in names.iter().zip(replies) {
            for (_, fields) in entries {
                if let Some(entry) = fields.get("m").and_then(|m| parse_message(m)) {
                    missed.push((name.clone(), entry));
                }
            }
        }
        missed.sort_by_key(|(_, e)| e.seq);
        let Some(broker) = broker.upgrade() else {
            return Ok(());
        };
        tracing::info!(events = missed.len(), "backfilled from Redis history");
        for (name, entry) in missed {
            self.deliver(&name, entry, &broker);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let entry = parse_message(b"12\ngabc\ndata: x\nid: abc\n\n").unwrap();
        assert_eq!(entry.seq, 12);
        assert_eq!(entry.id.as_deref(), Some("abc"));
        assert_eq!(entry.bytes, "data: x\nid: abc\n\n");
        let entry = parse_message(b"7\na7\ndata: \nid: 7\n\n").unwrap();
        assert_eq!((entry.seq, entry.id), (7, None));
        assert!(parse_message(b"x\na\n").is_none());
        assert!(parse_message(b"1\nz\n").is_none());
        assert!(parse_message(b"1").is_none());
    }
}
