//! [`ClusterBackend`]: the broker's side of the cluster backend (publish, ensure, release,
//! replay), over one cluster connection of the redis crate (RESP3, so that the sharded
//! messages come back on it as pushes).

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicBool},
    time::Duration,
};

use redis::Value;
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};

use super::{
    Command,
    keys::{channel_key, clock_key, history_key, ids_key, lost_key, repeat_key, seq_key, slot},
    lua::Lua,
    nodes::Nodes,
};
use crate::{
    backend::{
        Backend, BoxFuture, Replay,
        redis::{
            connection::{self, REQUEST_TIMEOUT},
            wire::read_replay,
        },
    },
    channel::ChannelError,
    error::{BoxError, PublishError},
    event::Event,
};

/// How long a channel's history is kept after its last publish (as on one node).
pub(super) const HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);
const CLOCK_STEP: Duration = Duration::from_secs(60);
const REPLAY_BYTES: usize = 4 << 20;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What the broker's side and the subscription task share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Who owns which slots, and which masters are down.
    pub(super) nodes: Nodes,
    /// Each channel subscribed here, and the last sequence number delivered on it.
    pub(super) marks: Mutex<HashMap<Arc<str>, u64>>,
    /// Each channel's epoch when this instance last looked: a shard that lost its data has
    /// a new one.
    pub(super) epochs: Mutex<HashMap<Arc<str>, String>>,
    /// Whether channels are being subscribed again after a lost connection.
    pub(super) recovering: AtomicBool,
    /// Whether another connection closed since the recovery last looked.
    pub(super) again: AtomicBool,
    /// Channels whose shard did not answer their last command, and what went wrong.
    pub(super) failing: Mutex<HashMap<Arc<str>, String>>,
}

impl Shared {
    pub(super) fn new(nodes: Nodes) -> Shared {
        Shared {
            nodes,
            marks: Mutex::default(),
            epochs: Mutex::default(),
            recovering: AtomicBool::default(),
            again: AtomicBool::default(),
            failing: Mutex::default(),
        }
    }

    /// Refuses a command for `channel` when its master is known to be down (see `nodes.rs`),
    /// noting it as failing.
    pub(super) fn refuse_if_down(&self, channel: &str) -> Result<(), String> {
        match self.nodes.down_for(channel) {
            Some(master) => {
                let err = format!("its Redis Cluster master {master} is down");
                self.answered(channel, Err(err.clone()));
                Err(err)
            }
            None => Ok(()),
        }
    }

    pub(super) fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn epochs(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, String>> {
        self.epochs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes how `channel`'s last command went: its shard answered, or not.
    pub(super) fn answered(&self, channel: &str, outcome: Result<(), String>) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                failing.remove(channel);
            }
            // Bounded: past it, one more failing channel tells nothing new.
            Err(_) if failing.len() >= MAX_FAILING && !failing.contains_key(channel) => {}
            Err(err) => {
                failing.insert(channel.into(), err);
            }
        }
    }

    /// The shards found down, by slot: one line each, with a channel that found it.
    pub(super) fn unreachable(&self) -> Vec<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut by_slot: std::collections::BTreeMap<u16, String> = Default::default();
        for (channel, err) in failing.iter() {
            by_slot
                .entry(slot(&channel_key(channel)))
                .or_insert_with(|| format!("channel {channel}: {err}"));
        }
        by_slot
            .into_iter()
            .map(|(slot, why)| format!("Redis Cluster slot {slot} ({why})"))
            .collect()
    }
}

/// Failing channels remembered at most.
const MAX_FAILING: usize = 64;

/// The broker's side of the cluster backend.
pub(crate) struct ClusterBackend {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) history: usize,
    publish: Lua,
    replay: Lua,
}

impl fmt::Debug for ClusterBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBackend")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl ClusterBackend {
    pub(super) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Sender<Command>,
        history: usize,
    ) -> ClusterBackend {
        ClusterBackend {
            shared,
            commands,
            history,
            publish: Lua::new(include_str!("../publish.lua")),
            replay: Lua::new(include_str!("../replay.lua")),
        }
    }

    /// One channel's script on the shard that owns it: the channel's own counter, clock,
    /// history, id index and sharded channel.
    async fn publish(&self, channels: &[&str], event: &Event) -> Result<String, BoxError> {
        // The channels of one event would be on several shards: no one script stores and
        // sends it everywhere at once.
        let [channel] = channels else {
            return Err(Box::new(PublishError::Channel(ChannelError::TooMany(1))));
        };
        let head = event.encode_head(0);
        let (flag, id) = match event.get_id() {
            Some(id) => ("g", id),
            None => ("a", ""),
        };
        // Surely not published: nothing was sent.
        self.shared.refuse_if_down(channel)?;
        let seen = self.shared.marks().get(*channel).copied().unwrap_or(0);
        let mut invocation = self.publish.key(seq_key(channel));
        invocation
            .key(clock_key(channel))
            .key(repeat_key(channel, id))
            .key(history_key(channel))
            .key(channel_key(channel))
            .key(ids_key(channel))
            .arg(&head[..])
            .arg(id)
            .arg(flag)
            .arg(self.history)
            .arg(seen)
            .arg(millis(HISTORY_TTL))
            .arg(millis(REPEAT_WINDOW))
            .arg(millis(CLOCK_STEP))
            .arg("SPUBLISH");
        let published = connection::publish(invocation.invoke(&self.shared.nodes, channel)).await;
        let outcome = published.as_ref().map(drop).map_err(ToString::to_string);
        self.shared.answered(channel, outcome);
        let (id, _seq, _repeat): (String, u64, u8) = published
            .inspect_err(|err| tracing::warn!(%err, channel, "publish to Redis Cluster failed"))?;
        Ok(id)
    }

    /// A resume of one channel, from its own history. Several channels are on several shards,
    /// each with its own numbers: one event id can't say where each resumes, so the resume is
    /// told as unknown (live events only, and the client told of the gap). A stream over
    /// several resumes from its positions instead ([`ClusterBackend::replay_each`]).
    async fn replay(
        &self,
        channels: &[Arc<str>],
        last_event_id: &str,
        seq: Option<u64>,
        budget: usize,
    ) -> Result<Replay, BoxError> {
        let [channel] = channels else {
            return Ok(Replay::default());
        };
        let mut invocation = self.replay.key(seq_key(channel));
        invocation
            .key(clock_key(channel))
            .key(history_key(channel))
            .key(ids_key(channel))
            .arg(last_event_id)
            .arg(if seq.is_some() { "1" } else { "0" })
            .arg(self.history)
            .arg(budget)
            .arg(millis(HISTORY_TTL));
        let nodes = &self.shared.nodes;
        let reply: Vec<Value> = timeout(REQUEST_TIMEOUT, invocation.invoke(nodes, channel))
            .await
            .map_err(|_| format!("no answer from Redis Cluster within {REQUEST_TIMEOUT:?}"))??;
        let (_, mut replay) = read_replay(&reply, "Redis Cluster")?;
        let Some(after) = replay.after else {
            return Ok(replay);
        };
        // From before a loss of the shard's data: the events after it are gone.
        let mut get = redis::cmd("GET");
        get.arg(lost_key(channel));
        let lost: Option<u64> = timeout(REQUEST_TIMEOUT, nodes.query(channel, &get))
            .await
            .map_err(|_| format!("no answer from Redis Cluster within {REQUEST_TIMEOUT:?}"))??;
        replay.complete &= lost.is_none_or(|floor| after > floor);
        Ok(replay)
    }

    async fn ensure(&self, channels: &[Arc<str>]) -> Result<(), BoxError> {
        let missing: Vec<Arc<str>> = {
            let marks = self.shared.marks();
            channels
                .iter()
                .filter(|name| !marks.contains_key(*name))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .try_send(Command::Ensure {
                names: missing,
                reply,
            })
            .map_err(|_| "the cluster subscription task is busy or gone")?;
        match timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(done)) => done.map_err(Into::into),
            Ok(Err(_)) => Err("the cluster subscription task is gone".into()),
            Err(_) => {
                Err(format!("no subscription from Redis Cluster within {REQUEST_TIMEOUT:?}").into())
            }
        }
    }
}

impl Backend for ClusterBackend {
    fn publish<'a>(
        &'a self,
        channels: &'a [&'a str],
        event: &'a Event,
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(ClusterBackend::publish(self, channels, event))
    }

    fn ensure<'a>(&'a self, channels: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(ClusterBackend::ensure(self, channels))
    }

    fn release(&self, channel: Arc<str>) {
        // Full queue: the subscription stays until the channel is released again (a leak of
        // one subscription, not of an event).
        let _ = self.commands.try_send(Command::Release(channel));
    }

    /// The channels of one event would be on several shards (see `publish`).
    fn publish_limit(&self) -> Option<usize> {
        Some(1)
    }

    /// Some shard answers: one down stops only its own channels, so the instance stays in
    /// rotation (every instance would be out otherwise), and [`Backend::unreachable`] says
    /// which. Not when every channel subscribed here found its shard down.
    fn reachable(&self) -> bool {
        let marks = self.shared.marks().len();
        let failing = self
            .shared
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        marks == 0 || failing < marks
    }

    fn unreachable(&self) -> Vec<String> {
        self.shared.unreachable()
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
        let replay = ClusterBackend::replay(self, channels, last_event_id, seq, REPLAY_BYTES);
        Box::pin(replay)
    }

    /// Each channel counts its own ids: where this instance is in each is its mark.
    fn positions(&self, channels: &[Arc<str>]) -> Option<Vec<u64>> {
        let marks = self.shared.marks();
        Some(
            channels
                .iter()
                .map(|name| marks.get(name).copied().unwrap_or(0))
                .collect(),
        )
    }

    /// The channels' replays at once, each from its own shard: a resume waits for the slowest
    /// shard, not for their sum. They share one resume's byte budget, as the channels of one
    /// node's replay do: one request never holds more.
    fn replay_each<'a>(
        &'a self,
        channels: &'a [Arc<str>],
        after: &'a [u64],
    ) -> BoxFuture<'a, Result<Vec<Replay>, BoxError>> {
        let budget = REPLAY_BYTES / channels.len().max(1);
        Box::pin(futures_util::future::try_join_all(
            channels
                .iter()
                .zip(after)
                .map(move |(channel, after)| async move {
                    let one = std::slice::from_ref(channel);
                    ClusterBackend::replay(self, one, &after.to_string(), Some(*after), budget)
                        .await
                }),
        ))
    }
}
