//! The Redis backend (feature `redis`): several instances share channels, ids and history.
//!
//! [`connect`] builds a [`Broker`](crate::Broker) on Redis; [`url_from_env`] reads the URL
//! where flask-sse does; [`flask_sse::connect`] builds one on the Redis a Flask app's
//! flask-sse publishes to, in its format; [`cluster::connect`] builds one on a Redis Cluster,
//! its channels spread over the shards with sharded pub/sub.
//!
//! Both read a URL as flask-sse (redis-py) does: `redis://[:password@]host[:port][/db]`, and
//! `rediss://` for TLS with the feature `redis-tls` (rustls with `ring`; the server's
//! certificate checked against the system's root certificates). A self-signed certificate
//! needs `#insecure` at the end, `rediss://host:6380/#insecure`, which skips the check (the
//! redis crate's syntax; redis-py's is `?ssl_cert_reqs=none`). Without `redis-tls`, a
//! `rediss://` URL fails to connect. Connecting installs rustls's `ring` provider as the
//! process's default `CryptoProvider` when none is installed yet (install yours first to use
//! another).
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::ConnectError> {
//! use tower_sse::{redis, Broker};
//!
//! let builder = Broker::builder().history(1000);
//! let broker = match redis::url_from_env() {
//!     Some(url) => redis::connect(builder, &url).await?,
//!     None => builder.build(),
//! };
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```
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
//! This module is the backend's face: [`connect`], the builder step, and [`url_from_env`];
//! `backend` is its side of the seam the broker sees (publish, ensure, release, replay);
//! `subscriber` holds the task with the one pub/sub connection, and `feed` what it does with
//! this format's messages (dedupe, restore, backfill); `wire` the key names and the message
//! format; `connection` the command connection and the time bounds; the Lua scripts sit beside
//! them as `.lua` files. [`flask_sse`], the backend for flask-sse's messages, shares
//! `connection` and `subscriber` with a feed and a face of its own.
//!
//! Without the feature only [`url_from_env`] is here.
//!
//! [`BrokerBuilder::history`]: crate::BrokerBuilder::history
//! [`PublishError::Backend`]: crate::PublishError::Backend
//! [`PublishError::Unknown`]: crate::PublishError::Unknown
//! [`SubscribeError::Backend`]: crate::SubscribeError::Backend

// The docs link `connect`, which is there with the feature only (docs.rs documents all
// features).
#![cfg_attr(not(feature = "redis"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "redis")]
mod backend;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod cluster;
#[cfg(feature = "redis")]
mod connection;
#[cfg(feature = "redis")]
mod feed;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod flask_sse;
#[cfg(feature = "redis")]
mod subscriber;
#[cfg(feature = "redis")]
mod wire;

/// The reader of tower-sse's messages as they come from Redis (pub/sub, histories, replays),
/// for the fuzz target `redis_message` alone: `cargo fuzz` builds with `--cfg fuzzing`
/// (fuzz/README.md).
#[cfg(all(feature = "redis", fuzzing))]
#[doc(hidden)]
pub mod fuzzing {
    /// A message `{seq}\n{g|a}{id}\n{head}` read: its sequence number, the publisher's id
    /// (`None`: the id is the number) and the encoded event; `None` when unreadable.
    pub fn read(message: &[u8]) -> Option<(u64, Option<String>, bytes::Bytes)> {
        let message = super::wire::parse_message(message)?;
        Some((message.seq, message.id.map(String::from), message.bytes))
    }
}

#[cfg(feature = "redis")]
use std::sync::Arc;

#[cfg(feature = "redis")]
use self::backend::RedisBackend;
#[cfg(feature = "redis")]
use crate::{
    broker::{Broker, BrokerBuilder},
    error::ConnectError,
};

/// The Redis URL from the environment: `SSE_REDIS_URL`, else `REDIS_URL` (the names
/// flask-sse reads); `None` when neither is set (or both are empty). There without the
/// `redis` feature too, so that a program built without Redis can refuse a URL there rather
/// than ignore it.
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

/// Builds the broker `builder` describes on Redis at `url`: every broker on the same Redis
/// shares channels, ids and history (see the [module docs](self)). Spawns the task that holds
/// the broker's Redis subscriptions, so call it within a Tokio runtime.
///
/// `url` is `redis://[:password@]host[:port][/db]`, or `rediss://` (TLS, feature `redis-tls`;
/// `#insecure` at the end for a self-signed certificate): see the [module docs](self).
///
/// # Errors
///
/// The URL is invalid or Redis can't be reached (over TLS: the certificate is not trusted,
/// or the server does not speak TLS); the error names the URL, with its password masked.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::ConnectError> {
/// use tower_sse::{redis, Broker};
///
/// let broker = redis::connect(Broker::builder().history(1000), "redis://127.0.0.1:6379/").await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub async fn connect(builder: BrokerBuilder, url: &str) -> Result<Broker, ConnectError> {
    let (backend, task) = RedisBackend::connect(url, builder.get_history()).await?;
    let (broker, inbound) = builder.build_on(Arc::new(backend));
    task.spawn(inbound);
    Ok(broker)
}
