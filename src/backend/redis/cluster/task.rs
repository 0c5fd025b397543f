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

use redis::{AsyncCommands, PushInfo, PushKind, Script, Value, cluster_async::ClusterConnection};
use tokio::{
    sync::{Notify, mpsc},
    time::timeout,
};

use super::{
    Command,
    backend::{HISTORY_TTL, Shared},
    keys::{channel_key, channel_name, epoch_key, history_key, lost_key, seq_key},
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

/// Runs until the broker is gone.
pub(super) async fn run(
    mut conn: ClusterConnection,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    mut pushes: Pushes,
    inbound: impl Inbound,
) {
    loop {
        let step = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => handle(&mut conn, &shared, command, &inbound).await,
                None => Err(Gone),
            },
            push = pushes.queue.recv() => match push {
                Some(push) => pushed(&mut conn, &shared, push, &inbound).await,
                None => Err(Gone),
            },
            () = pushes.dropped.1.notified() => {
                pushes.dropped.0.store(false, Ordering::Release);
                tracing::warn!("Redis Cluster pushes dropped; backfilling every channel");
                let names: Vec<Arc<str>> = shared.marks().keys().cloned().collect();
                backfill(&mut conn, &shared, &names, &inbound).await
            }
        };
        if step.is_err() {
            return;
        }
    }
}

async fn handle(
    conn: &mut ClusterConnection,
    shared: &Shared,
    command: Command,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    match command {
        Command::Ensure { names, reply } => {
            let subscribed = subscribe(conn, shared, &names).await;
            let _ = reply.send(subscribed.clone());
            if subscribed.is_ok() {
                backfill(conn, shared, &names, inbound).await?;
            }
        }
        Command::Release(name) => {
            // Still wanted: the broker subscribed it again since (a new ring).
            if inbound.has_channel(&name)? {
                return Ok(());
            }
            shared.marks().remove(&name);
            shared.epochs().remove(&name);
            shared.answered(&name, Ok(()));
            let unsubscribe = conn.sunsubscribe(channel_key(&name));
            if let Err(err) = bounded(unsubscribe).await {
                tracing::debug!(%err, channel = &*name, "SUNSUBSCRIBE failed");
            }
        }
    }
    Ok(())
}

/// Subscribes each channel on its shard, marked first at its counter: events after it come
/// by the subscription or by the backfill that follows.
async fn subscribe(
    conn: &mut ClusterConnection,
    shared: &Shared,
    names: &[Arc<str>],
) -> Result<(), String> {
    for name in names {
        if shared.marks().contains_key(name) {
            continue;
        }
        let counter: Option<u64> = bounded(conn.get(seq_key(name))).await?;
        shared.marks().insert(name.clone(), counter.unwrap_or(0));
        let epoch = restore(conn, name, counter.unwrap_or(0)).await?;
        shared.epochs().insert(name.clone(), epoch);
        if let Err(err) = bounded(conn.ssubscribe(channel_key(name))).await {
            shared.marks().remove(name);
            shared.answered(name, Err(err.clone()));
            return Err(err);
        }
        shared.answered(name, Ok(()));
    }
    Ok(())
}

async fn pushed(
    conn: &mut ClusterConnection,
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
                        backfill(conn, shared, std::slice::from_ref(&channel), inbound).await?;
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
            lost(conn, shared, &channel, inbound).await?;
            backfill(conn, shared, &[channel], inbound).await
        }
        // A node's connection closed (the node died, or a failover is under way). The redis
        // crate learns the new owners only when a command fails on the old one: probe each
        // channel until they answer, then subscribe each again where it now is (the crate's
        // own resubscription sends every sharded channel in one `SSUBSCRIBE`, which a cluster
        // refuses when they are on several slots).
        PushKind::Disconnection => {
            start_recovery(conn, shared);
            Ok(())
        }
        // The slot moved to another shard (a reshard): subscribe it there.
        PushKind::SUnsubscribe => match name(push.data.first()) {
            Some(channel) if shared.marks().contains_key(&channel) => {
                resubscribe(conn, shared, &[channel]).await;
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
    conn: &mut ClusterConnection,
    shared: &Arc<Shared>,
    channel: &Arc<str>,
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    let Some(mark) = shared.marks().get(channel).copied() else {
        return Ok(());
    };
    let epoch = match restore(conn, channel, mark).await {
        Ok(epoch) => epoch,
        Err(err) => {
            // Not known whether the shard lost its data: subscribe again (its confirmation
            // brings this check back) until it answers.
            tracing::warn!(%err, channel = &**channel, "reading the epoch failed");
            start_recovery(conn, shared);
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
        if let Err(err) = bounded(floor.exec_async(conn)).await {
            tracing::warn!(%err, channel = &**channel, "could not record the loss");
        }
        inbound.data_lost()?;
    }
    Ok(())
}

/// Runs `restore.lua` on the channel's shard: sets its epoch if it has none, raises its
/// counter to `seen`; returns the epoch.
async fn restore(conn: &mut ClusterConnection, channel: &str, seen: u64) -> Result<String, String> {
    static RESTORE: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("../restore.lua")));
    let mut invocation = RESTORE.key(seq_key(channel));
    invocation.key(epoch_key(channel)).arg(seen).arg(token());
    bounded(invocation.invoke_async(conn)).await
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
        tokio::spawn(recover(conn.clone(), shared.clone()));
    }
}

/// After a node's connection closed: subscribes every channel again, each on its own and
/// where it lives now, in rounds (a failed command makes the redis crate refresh its map of
/// the slots, which may replace the connections of other nodes too, and their subscriptions
/// with them), until a round subscribes every channel with no connection closed meanwhile.
/// Redis's confirmations backfill the channels. Between rounds it waits [`PROBE_EVERY`],
/// doubling up to [`PROBE_MAX`]. Its own task, so that the channels of the other shards are
/// not held up meanwhile; it ends with the broker.
async fn recover(mut conn: ClusterConnection, shared: Arc<Shared>) {
    let mut wait = PROBE_EVERY;
    // The broker's side and the main task hold it too, while the broker lives.
    while Arc::strong_count(&shared) > 1 {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PROBE_MAX);
        shared.again.store(false, Ordering::Release);
        let names: Vec<Arc<str>> = shared.marks().keys().cloned().collect();
        let mut done = true;
        for name in &names {
            if shared.marks().contains_key(name) {
                let subscribed = bounded(conn.ssubscribe(channel_key(name))).await;
                done &= subscribed.is_ok();
                shared.answered(name, subscribed);
            }
        }
        if done && !shared.again.load(Ordering::Acquire) {
            break;
        }
    }
    shared.recovering.store(false, Ordering::Release);
}

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
async fn backfill(
    conn: &mut ClusterConnection,
    shared: &Shared,
    names: &[Arc<str>],
    inbound: &impl Inbound,
) -> Result<(), Gone> {
    for name in names {
        let Some(mark) = shared.marks().get(name).copied() else {
            continue;
        };
        let range = conn.xrange::<_, _, _, Vec<StreamEntry>>(
            history_key(name),
            format!("{}-0", mark + 1),
            "+",
        );
        let entries = match bounded(range).await {
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
