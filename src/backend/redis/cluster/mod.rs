//! The Redis Cluster backend (feature `redis`): channels spread over the cluster's shards with
//! sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7), so that no one Redis node carries every
//! event, and one node down stops only the channels it owns.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::ConnectError> {
//! use tower_sse::{Broker, redis::cluster};
//!
//! let seeds = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
//! let broker = cluster::connect(Broker::builder().history(1000), &seeds).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where a channel lives
//!
//! Every key of a channel (its counter, history, id index, repeat marks) and its sharded
//! channel carry one hash tag, derived from the channel's name, so the one script that numbers
//! an event, appends it to the history and publishes it runs on the shard that owns the
//! channel: an event is stored and sent, or neither, as on one node. The tags are hashes, so
//! short or similar names spread over the shards as any keys do.
//!
//! Each instance holds one sharded subscription per channel with local subscribers, on the
//! shard that owns it, whatever the number of streams. When Redis confirms a subscription
//! again (after a lost connection, a failover, a slot moved to another shard), the channel is
//! backfilled from its history after the last event this instance delivered: within the
//! history, nothing is lost and nothing comes twice.
//!
//! # Ids and order
//!
//! Each channel counts its own ids (`1`, `2`, ...; its counter lives with it), so ids grow per
//! channel and a `Last-Event-ID` resumes one channel on any instance, as on one node. There
//! is no order across channels on different shards: a stream of several channels gets each
//! channel's events in order, and the channels' events interleaved as they arrive here.
//!
//! One event id can't say where such a stream is in each channel, so after each batch of
//! events it sends its positions, an `id:` with no data (`id: ~4f1c9a2b.12.0.57`: a tag of
//! the channel list, then the last id of each channel sent). An `EventSource` dispatches no
//! event for it and keeps it as its last event id, so its reconnect resumes every channel from
//! its own history, on any instance: nothing lost and nothing twice, within the history. A
//! live start sends its positions first, and [`Subscription::last_event_id`] gives them
//! (Mercure's `Last-Event-ID` response header). Any other id resumes such a stream live, with
//! the gap told ([`Resume::Unknown`]).
//!
//! An event is published to one channel: [`Broker::publish_to`] with several channels is
//! refused ([`ChannelError::TooMany`](crate::ChannelError::TooMany), limit 1), since they
//! may be on several shards, where no one script stores and sends it everywhere at once
//! (and an event stored on some of them only would be half-published).
//! [`Broker::publish_limit`](crate::Broker::publish_limit) says so, for an app to refuse up
//! front what would need it.
//!
//! [`Subscription::last_event_id`]: crate::Subscription::last_event_id
//! [`Resume::Unknown`]: crate::Resume::Unknown
//! [`Broker::publish_to`]: crate::Broker::publish_to
//!
//! # Faults
//!
//! Every step is bounded as on one node (2 s a command, 5 s a request). A publish to a channel
//! whose shard can't be reached answers `503` (surely not published) or `504` (the outcome
//! unknown; a retry with the same id publishes it at most once), while channels on the other
//! shards go on. Run the cluster with `cluster-require-full-coverage no`: else Redis refuses
//! every command while one shard is down.
//!
//! Only the sharded subscriptions go through the redis crate's cluster connection (their
//! messages come back on it); every other command goes over a connection to the channel's
//! master alone, by a map of the slots kept here. The crate holds back every command of a
//! cluster connection while it recovers from one that failed, so commands for the channels of
//! a master that is down held up those of the others: with 1,000 channels, events on the
//! other masters' channels stopped for over 30 s. Once a connection closes, this instance
//! probes the masters (`PING`, each on a connection of its own) before each round of
//! subscribing again; while one is down, no command is sent for its channels: a publish or a
//! new stream on one is refused at once, naming the master, and the rounds only probe it.
//!
//! URLs are `redis://[:password@]host:port` (`rediss://` for TLS with the feature
//! `redis-tls`); a password is never logged.

mod backend;
mod keys;
mod lua;
mod nodes;
mod task;

use std::sync::{Arc, atomic::AtomicBool};

use redis::{ProtocolVersion, cluster::ClusterClientBuilder};
use tokio::sync::{Notify, mpsc, oneshot};

use self::{
    backend::{ClusterBackend, Shared},
    task::{PUSHES, Pushes, push_sender},
};
use super::connection::TIMEOUT;
use crate::{
    broker::{Broker, BrokerBuilder},
    error::ConnectError,
};

/// What the broker's side asks of the subscription task.
pub(super) enum Command {
    /// Subscribe these channels, then answer.
    Ensure {
        names: Vec<Arc<str>>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// This channel lost its last local subscriber.
    Release(Arc<str>),
}

/// Subscription requests waiting for the task at most; past it, a new stream gets `503`.
const COMMANDS: usize = 1024;

/// Builds the broker on the Redis Cluster that `seeds` (one or more of its nodes) belong to.
///
/// # Errors
///
/// No seed is a valid URL, or none can be reached, or they are not a cluster; the error names
/// the first seed, its password masked.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::ConnectError> {
/// use tower_sse::{Broker, redis::cluster};
///
/// let broker = cluster::connect(Broker::builder(), &["redis://127.0.0.1:7000"]).await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(builder: BrokerBuilder, seeds: &[&str]) -> Result<Broker, ConnectError> {
    let first = seeds.first().copied().unwrap_or("");
    let failed = |err: redis::RedisError| ConnectError::new("Redis Cluster", first, err.into());
    #[cfg(feature = "redis-tls")]
    super::connection::install_crypto_provider();
    let (queue, receiver) = mpsc::channel(PUSHES);
    let dropped = Arc::new((AtomicBool::new(false), Notify::new()));
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .retries(2)
        .push_sender(push_sender(queue, dropped.clone()))
        .build()
        .map_err(failed)?;
    // The sharded subscriptions on the redis crate's cluster connection (the messages come
    // back on it); every other command over a connection to its master alone (see `nodes.rs`).
    let conns = task::Conns {
        pubsub: client.get_async_connection().await.map_err(failed)?,
    };
    let nodes = nodes::Nodes::new(seeds).map_err(failed)?;
    // The slots mapped from the start: a master found down later is known by its slots.
    nodes.refresh().await;
    let shared = Arc::new(Shared::new(nodes));
    let (commands, requests) = mpsc::channel(COMMANDS);
    let history = builder.get_history();
    let backend = ClusterBackend::new(shared.clone(), commands, history);
    let pushes = Pushes {
        queue: receiver,
        dropped,
    };
    let (broker, inbound) = builder.build_on(Arc::new(backend));
    tokio::spawn(task::run(conns, shared, requests, pushes, inbound));
    Ok(broker)
}
