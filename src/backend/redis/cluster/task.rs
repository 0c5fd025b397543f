//! The task that keeps an instance's sharded subscriptions: one per channel with local
//! subscribers, each on the shard that owns it (the redis crate routes `SSUBSCRIBE` by the
//! channel's slot, and subscribes again after a lost connection, a failover or a slot that
//! moved). It feeds the sharded messages into the broker, and whenever Redis confirms a
//! subscription (the first time, or again after any of those) it backfills the channel from
//! its history after the last event delivered here, and whenever a message's number is not
//! the next of its channel: within the history, nothing is lost and nothing comes twice.
//!
//! Subscribing and unsubscribing go through this one task, in order, so that a release and a
//! new subscription of the same channel can't cross. Pushes come through a bounded queue; when
//! it is full (this task far behind), they are dropped and every channel is backfilled.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
};

use redis::{PushInfo, PushKind, Value, cluster_async::ClusterConnection};
use tokio::{
    sync::{Notify, mpsc},
    time::timeout,
};

use super::{
    Command,
    backend::{HISTORY_TTL, Shared},
    keys::{channel_key, channel_name, epoch_key, history_key, lost_key, seq_key},
    lua::Lua,
};
use crate::backend::{
    Gone, Inbound, Message,
    redis::{
        connection::TIMEOUT,
        wire::{parse_message, token},
    },
};

/// Pushes waiting for the task at most.
pub(super) const PUSHES: usize = 16 * 1024;

/// Between the first rounds of subscribing again after a lost connection; doubled each round
/// up to [`PROBE_MAX`] (a failover takes a few seconds: `cluster-node-timeout` and the
/// election; a node down takes as long as it takes).
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Between two rounds at most.
const PROBE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// One entry of an `XRANGE` reply: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// The receiving end of the pushes, and what tells of the ones dropped.
pub(super) struct Pushes {
    pub(super) queue: mpsc::Receiver<PushInfo>,
    pub(super) dropped: Arc<(AtomicBool, Notify)>,
}

/// The push sender given to the redis crate: never blocks its connection; a full queue drops
/// the push and marks it, for a backfill.
pub(super) fn push_sender(
    queue: mpsc::Sender<PushInfo>,
    dropped: Arc<(AtomicBool, Notify)>,
) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |push| match queue.try_send(push) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.0.store(true, Ordering::Release);
            dropped.1.notify_one();
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

/// The task's cluster connection, for `SSUBSCRIBE` and `SUNSUBSCRIBE` (the sharded messages
/// come back on it). The channels' data (counters, epochs, histories) go through
/// [`Nodes::query`](super::nodes::Nodes::query), a connection to each master alone.
#[derive(Clone)]
pub(super) struct Conns {
    pub(super) pubsub: ClusterConnection,
}

/// Runs until the broker is gone.
pub(super) async fn run(
    mut conns: Conns,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    mut pushes: Pushes,
    inbound: impl Inbound,
) {
    loop {
        let step = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => handle(&mut conns, &shared, command, &inbound).await,
                None => Err(Gone),
            },
            push = pushes.queue.recv() => match push {
                Some(push) => pushed(&mut conns, &shared, push, &inbound).await,
                None => Err(Gone),
            },
            () = pushes.dropped.1.notified() => {
                pushes.dropped.0.store(false, Ordering::Release);
                tracing::warn!("Redis Cluster pushes dropped; backfilling every channel");
                let names: Vec<Arc<str>> = shared.marks().keys().cloned().collect();
                backfill(&shared, &names, &inbound).await
            }
        };
        if step.is_err() {
            return;
        }
    }
}

async fn handle(
    conns: &mut Conns,
    shared: &Shared,
    command: Command,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    match command {
        Command::Ensure { names, reply } => {
            let subscribed = subscribe(conns, shared, &names).await;
            let _ = reply.send(subscribed.clone());
            if subscribed.is_ok() {
                backfill(shared, &names, inbound).await?;
            }
        }
        Command::Release(name) => {
            // Still wanted: the broker subscribed it again since (a new ring).
            if inbound.has_channel(&name)? {
                return Ok(());
            }
            let subscribed = shared.marks().remove(&name).is_some();
            shared.epochs().remove(&name);
            shared.answered(&name, Ok(()));
            // Never subscribed (refused), or its master is down and took the subscription
            // with it: no command, which would hold up the others (see `nodes.rs`).
            if !subscribed || shared.nodes.down_for(&name).is_some() {
                return Ok(());
            }
            let unsubscribe = conns.pubsub.sunsubscribe(channel_key(&name));
            if let Err(err) = bounded(unsubscribe).await {
                tracing::debug!(%err, channel = &*name, "SUNSUBSCRIBE failed");
            }
        }
    }
    Ok(())
}

/// Subscribes each channel on its shard, marked first at its counter: events after it come
/// by the subscription or by the backfill that follows.
async fn subscribe(conns: &mut Conns, shared: &Shared, names: &[Arc<str>]) -> Result<(), String> {
    for name in names {
        if shared.marks().contains_key(name) {
            continue;
        }
        shared.refuse_if_down(name)?;
        let mut get = redis::cmd("GET");
        get.arg(seq_key(name));
        let counter: Option<u64> = bounded(shared.nodes.query(name, &get)).await?;
        shared.marks().insert(name.clone(), counter.unwrap_or(0));
        let epoch = restore(shared, name, counter.unwrap_or(0)).await?;
        shared.epochs().insert(name.clone(), epoch);
        if let Err(err) = bounded(conns.pubsub.ssubscribe(channel_key(name))).await {
            // Which master, for the refusal and `/readyz`.
            let err = match shared.nodes.owner(name) {
                Some((host, port)) => format!("master {host}:{port}: {err}"),
                None => err,
            };
            shared.marks().remove(name);
            shared.answered(name, Err(err.clone()));
            return Err(err);
        }
        shared.answered(name, Ok(()));
    }
    Ok(())
}

async fn pushed(
    conns: &mut Conns,
    shared: &Arc<Shared>,
    push: PushInfo,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    let name = |value: Option<&Value>| match value {
        Some(Value::BulkString(key)) => std::str::from_utf8(key)
            .ok()
            .and_then(channel_name)
            .map(Arc::<str>::from),
        _ => None,
    };
    match push.kind {
        PushKind::SMessage => {
            let (Some(channel), Some(Value::BulkString(payload))) =
                (name(push.data.first()), push.data.get(1))
            else {
                return Ok(());
            };
            match parse_message(payload) {
                Some(message) => {
                    // A channel's numbers follow each other: one further on than the next
                    // means events were missed (a subscription made again late, a backfill
                    // that failed). The history has them.
                    let mark = shared.marks().get(&channel).copied();
                    if mark.is_some_and(|mark| message.seq > mark + 1) {
                        let channel = std::slice::from_ref(&channel);
                        backfill(shared, channel, inbound).await?;
                    }
                    deliver(shared, &channel, message, inbound)
                }
                None => {
                    tracing::warn!(channel = &*channel, "unreadable message from Redis Cluster");
                    Ok(())
                }
            }
        }
        // Subscribed, or subscribed again after a lost connection, a failover or a moved
        // slot: what was published meanwhile is in the history.
        PushKind::SSubscribe => {
            let Some(channel) = name(push.data.first()) else {
                return Ok(());
            };
            lost(conns, shared, &channel, inbound).await?;
            backfill(shared, &[channel], inbound).await
        }
        // A node's connection closed (the node died, or a failover is under way). The redis
        // crate learns the new owners only when a command fails on the old one: probe each
        // channel until they answer, then subscribe each again where it now is (the crate's
        // own resubscription sends every sharded channel in one `SSUBSCRIBE`, which a cluster
        // refuses when they are on several slots).
        PushKind::Disconnection => {
            tracing::debug!("a Redis Cluster connection closed");
            start_recovery(&conns.pubsub, shared);
            Ok(())
        }
        // The slot moved to another shard (a reshard): subscribe it there.
        PushKind::SUnsubscribe => match name(push.data.first()) {
            Some(channel) if shared.marks().contains_key(&channel) => {
                resubscribe(&mut conns.pubsub, shared, &[channel]).await;
                Ok(())
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Whether the shard that owns `channel` lost its data since this instance last looked (a
/// master back empty, a replica promoted before it had the channel): its epoch changed. Then
/// the history holds only events published since, with numbers that may be ones delivered
/// already: the channel's mark starts again from 0, so that each is delivered, and the broker
/// is told (a resume does not skip them). The counter is raised back to the old mark, so that
/// ids go on upward from there.
async fn lost(
    conns: &mut Conns,
    shared: &Arc<Shared>,
    channel: &Arc<str>,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    let Some(mark) = shared.marks().get(channel).copied() else {
        return Ok(());
    };
    let epoch = match restore(shared, channel, mark).await {
        Ok(epoch) => epoch,
        Err(err) => {
            // Not known whether the shard lost its data: subscribe again (its confirmation
            // brings this check back) until it answers.
            tracing::warn!(%err, channel = &**channel, "reading the epoch failed");
            start_recovery(&conns.pubsub, shared);
            return Ok(());
        }
    };
    let before = shared.epochs().insert(channel.clone(), epoch.clone());
    if before.is_some_and(|before| before != epoch) {
        tracing::warn!(
            channel = &**channel,
            "its shard lost its data; delivering its history from the start"
        );
        if let Some(mark) = shared.marks().get_mut(channel) {
            *mark = 0;
        }
        // A resume from before the loss is told of the gap (its events are gone, and the
        // numbers since may repeat theirs).
        let mut floor = redis::cmd("SET");
        floor
            .arg(lost_key(channel))
            .arg(mark)
            .arg("PX")
            .arg(u64::try_from(HISTORY_TTL.as_millis()).unwrap_or(u64::MAX));
        if let Err(err) = bounded(shared.nodes.query::<()>(channel, &floor)).await {
            tracing::warn!(%err, channel = &**channel, "could not record the loss");
        }
        inbound.data_lost()?;
    }
    Ok(())
}

/// Runs `restore.lua` on the channel's shard: sets its epoch if it has none, raises its
/// counter to `seen`; returns the epoch.
async fn restore(shared: &Shared, channel: &str, seen: u64) -> Result<String, String> {
    static RESTORE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../restore.lua")));
    let mut invocation = RESTORE.key(seq_key(channel));
    invocation.key(epoch_key(channel)).arg(seen).arg(token());
    bounded(invocation.invoke(&shared.nodes, channel)).await
}

/// Subscribes `names` again, each on its own (so each goes to the shard that owns it now); the
/// confirmations backfill them.
async fn resubscribe(conn: &mut ClusterConnection, shared: &Shared, names: &[Arc<str>]) {
    for name in names {
        let subscribed = bounded(conn.ssubscribe(channel_key(name))).await;
        if let Err(err) = &subscribed {
            tracing::warn!(%err, channel = &**name, "SSUBSCRIBE again failed");
        }
        shared.answered(name, subscribed);
    }
}

/// Starts [`recover`], or makes the one under way go one more round.
fn start_recovery(conn: &ClusterConnection, shared: &Arc<Shared>) {
    shared.again.store(true, Ordering::Release);
    if !shared.recovering.swap(true, Ordering::AcqRel) {
        // Probed at once, so that commands for the channels of a master that is down stop
        // before the first round.
        let probing = shared.clone();
        tokio::spawn(async move { probing.nodes.refresh().await });
        tokio::spawn(recover(conn.clone(), shared.clone()));
    }
}

/// After a node's connection closed: subscribes every channel again, each on its own and
/// where it lives now, in rounds (a failed command makes the redis crate refresh its map of
/// the slots, which may replace the connections of other nodes too, and their subscriptions
/// with them, without a word), until a round subscribes every channel with no connection
/// closed meanwhile. Redis's confirmations backfill the channels. Between rounds it waits
/// [`PROBE_EVERY`], doubling up to [`PROBE_MAX`]. A round sends [`ROUND_WIDTH`] subscriptions
/// at once, so that the channels of a node that is down, each waiting for its command to
/// fail, don't hold up those of the nodes that are up. Its own task, so that the channels'
/// events are not held up meanwhile; it ends with the broker.
async fn recover(conn: ClusterConnection, shared: Arc<Shared>) {
    use futures_util::StreamExt;
    let mut wait = PROBE_EVERY;
    // What the next round subscribes: every channel, or those the last round could not.
    let mut todo: Option<Vec<Arc<str>>> = None;
    // The broker's side and the main task hold it too, while the broker lives.
    while Arc::strong_count(&shared) > 1 {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PROBE_MAX);
        // A connection closed since the last round: its subscriptions are gone, and the redis
        // crate may have replaced others with them; every channel again.
        if shared.again.swap(false, Ordering::AcqRel) {
            todo = None;
        }
        let down = shared.nodes.refresh().await;
        let full = todo.is_none();
        let names: Vec<Arc<str>> = match todo.take() {
            Some(names) => names,
            None => shared.marks().keys().cloned().collect(),
        };
        // By master: one channel first, and the others once it is subscribed, so that a
        // master that is not ready yet (just back, still in its failover) gets one command a
        // round, not one per channel (see `nodes.rs`); the masters at once.
        let mut by_master: std::collections::HashMap<_, Vec<Arc<str>>> = Default::default();
        for name in names {
            if shared.marks().contains_key(&name) {
                by_master
                    .entry(shared.nodes.owner(&name))
                    .or_default()
                    .push(name);
            }
        }
        let rounds = by_master.into_values().map(|names| {
            let (conn, shared) = (conn.clone(), &shared);
            async move {
                // `Err`: the channel, and why it failed.
                let subscribe = |name: Arc<str>| {
                    let mut conn = conn.clone();
                    async move {
                        // No command for a channel whose master is down.
                        shared
                            .refuse_if_down(&name)
                            .map_err(|err| (name.clone(), err))?;
                        let subscribed = bounded(conn.ssubscribe(channel_key(&name))).await;
                        shared.answered(&name, subscribed.clone());
                        subscribed.map_err(|err| (name, err))
                    }
                };
                let mut names = names.into_iter();
                let Some(first) = names.next() else {
                    return Vec::new();
                };
                if let Err((first, why)) = subscribe(first).await {
                    // The others are as failing as the first, for `/readyz` too.
                    let rest: Vec<Arc<str>> = names.collect();
                    for name in &rest {
                        shared.answered(name, Err(why.clone()));
                    }
                    return std::iter::once(first).chain(rest).collect();
                }
                futures_util::stream::iter(names)
                    .map(subscribe)
                    .buffer_unordered(ROUND_WIDTH)
                    .filter_map(|done| std::future::ready(done.err().map(|(name, _)| name)))
                    .collect::<Vec<_>>()
                    .await
            }
        });
        let failed: Vec<Arc<str>> = futures_util::future::join_all(rounds)
            .await
            .into_iter()
            .flatten()
            .collect();
        tracing::debug!(
            failed = failed.len(),
            masters_down = down,
            "Redis Cluster recovery round"
        );
        // While a master is down, the rounds go on (they only probe it then), so that what
        // is known of it is never stale: its channels are refused only while it is down. The
        // rounds between take only the channels that failed; the last one takes them all
        // again, since the redis crate may have replaced a connection meanwhile, taking its
        // subscriptions without a word (a failover does).
        if failed.is_empty() && down == 0 && !shared.again.load(Ordering::Acquire) {
            if full {
                break;
            }
            todo = None;
        } else {
            todo = Some(failed);
        }
    }
    shared.recovering.store(false, Ordering::Release);
}

/// Subscriptions a recovery round sends at once.
const ROUND_WIDTH: usize = 64;

/// Delivers a message unless it was delivered already (at or below its channel's mark), or
/// its channel is not subscribed here.
fn deliver(
    shared: &Shared,
    channel: &Arc<str>,
    mut message: Message,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    {
        let mut marks = shared.marks();
        let Some(mark) = marks.get_mut(channel) else {
            return Ok(());
        };
        if message.seq <= *mark {
            return Ok(());
        }
        *mark = message.seq;
    }
    // Each channel counts on its own: equal numbers of two channels are two events.
    message.global = false;
    inbound.deliver(channel, message)
}

/// Delivers what `names` have in their histories after their marks, in order per channel.
async fn backfill(shared: &Shared, names: &[Arc<str>], inbound: &impl Inbound) -> Result<(), Gone> {
    for name in names {
        let Some(mark) = shared.marks().get(name).copied() else {
            continue;
        };
        let mut range = redis::cmd("XRANGE");
        range
            .arg(history_key(name))
            .arg(format!("{}-0", mark + 1))
            .arg("+");
        let entries = match bounded(shared.nodes.query::<Vec<StreamEntry>>(name, &range)).await {
            Ok(entries) => entries,
            Err(err) => {
                // Told again when Redis confirms the subscription anew.
                tracing::warn!(%err, channel = &**name, "backfill from Redis Cluster failed");
                continue;
            }
        };
        for (_, fields) in entries {
            if let Some(message) = fields.get("m").and_then(|m| parse_message(m)) {
                deliver(shared, name, message, inbound)?;
            }
        }
    }
    Ok(())
}

/// One command, bounded by [`TIMEOUT`].
async fn bounded<T>(
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match timeout(TIMEOUT, command).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer from Redis Cluster within {TIMEOUT:?}")),
    }
}
