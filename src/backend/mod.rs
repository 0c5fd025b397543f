//! Where events travel between publishers and a broker's channels: the seam between the
//! [`Broker`](crate::Broker) and a backend.
//!
//! Without a backend, a publish puts the event straight into its channel's ring, in this
//! process. With one (Redis, feature `redis`), the broker hands the event to the
//! [`Backend`], which stores and spreads it; the backend then brings every instance's events
//! back into the local rings through an [`Inbound`] handle, which is all it ever sees of the
//! broker. So the broker names no backend, and a backend's side of the seam names nothing of
//! the broker: both speak in the plain types of this module. They meet in the backend's
//! connect step (`redis::connect`), which connects the backend, then builds the broker on it
//! from the application's [`BrokerBuilder`](crate::BrokerBuilder) and hands the backend its
//! [`Inbound`] handle.
//!
//! A backend that keeps history (Redis in tower-sse's own format) has its own sequence
//! numbers (one counter shared by every instance), and a resume reads its history
//! ([`Backend::replay`]); the broker gives each event it receives a local order number of its
//! own as well, so that streams over several channels stay in one order even when the
//! backend's numbers start again after a data loss. A backend that keeps none (flask-sse's
//! Redis pub/sub, [`Backend::keeps_history`] `false`) hands each event in as if it were
//! published here ([`Inbound::publish`]): the broker numbers it and keeps its history in its
//! own rings, and a resume reads them, as in process; the backend tells the broker when events
//! may have passed it by ([`Inbound::missed`]), so such a resume reports the gap.

// Without a backend feature nothing travels through the seam, so its far side is unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;

use crate::{
    error::{BoxError, PublishError},
    event::Event,
};

// There without the feature too, for `redis::url_from_env` alone.
pub mod redis;

// `redis::flask_sse` is in `redis/flask_sse/`: it shares the Redis backend's connection and
// subscription task.

/// A future a backend returns, boxed so that [`Backend`] can be a trait object.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a broker's events travel: publish, keep channels subscribed, replay history.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Stores and spreads `event` on each of `channels` (at least one) as one event, with one
    /// sequence number; returns its id (the publisher's, or the one the backend assigned).
    /// The event and the names have been validated. An error is an
    /// [`OutcomeUnknown`](crate::error::OutcomeUnknown) when the event may have been published
    /// all the same.
    fn publish<'a>(
        &'a self,
        channels: &'a [&'a str],
        event: &'a Event,
    ) -> BoxFuture<'a, Result<String, BoxError>>;

    /// Makes sure every event of these channels, from now on, comes back through the
    /// [`Inbound`] handle; answers once it is so.
    fn ensure<'a>(&'a self, channels: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), BoxError>>;

    /// `channel` lost its last local subscriber: its events are no longer needed here.
    fn release(&self, channel: Arc<str>);

    /// Whether the backend answers now (its connection is up), for readiness checks.
    fn reachable(&self) -> bool;

    /// How many channels one event may go to, when the backend limits it (see
    /// [`Broker::publish_limit`](crate::Broker::publish_limit)).
    fn publish_limit(&self) -> Option<usize> {
        None
    }

    /// What the backend can't reach now, each said in a line (a cluster's shards, by the
    /// channels that found them down); empty when all answers.
    fn unreachable(&self) -> Vec<String> {
        if self.reachable() {
            Vec::new()
        } else {
            vec!["Redis".to_owned()]
        }
    }

    /// Whether the backend numbers the events and keeps their history, so that a resume reads
    /// it ([`Backend::replay`]). When not, it brings events in with [`Inbound::publish`], the
    /// broker numbers them and keeps their history as in process, a resume reads the broker's
    /// rings, and `replay` is never called.
    fn keeps_history(&self) -> bool;

    /// The stored events of `channels` after `last_event_id` (read as the backend sequence
    /// number `seq` when it is one): on each channel at most the broker's
    /// [history](crate::BrokerBuilder::history), the newest, and `complete` only if none is
    /// left out.
    fn replay<'a>(
        &'a self,
        channels: &'a [Arc<str>],
        last_event_id: &'a str,
        seq: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay, BoxError>>;

    /// For a backend whose channels each count their own ids (a cluster, whose channels live
    /// on several shards): the last id of each of `channels` delivered here, once
    /// [ensured](Backend::ensure). `None` for a backend with one numbering for every channel.
    fn positions(&self, _channels: &[Arc<str>]) -> Option<Vec<u64>> {
        None
    }

    /// For such a backend: the replay of each of `channels` after its own position, `after`
    /// in the same order, within one resume's bounds in all. Called only when
    /// [`positions`](Backend::positions) is `Some`; a backend with one numbering has none to
    /// give.
    fn replay_each<'a>(
        &'a self,
        _channels: &'a [Arc<str>],
        _after: &'a [u64],
    ) -> BoxFuture<'a, Result<Vec<Replay>, BoxError>> {
        Box::pin(std::future::ready(Err(
            "this backend numbers every channel as one: no replay per channel".into(),
        )))
    }
}

/// One event as a backend carries it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend uses it
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The backend's sequence number; the id when the publisher gave none.
    pub(crate) seq: u64,
    /// The publisher's id; `None` when the id is `seq`.
    pub(crate) id: Option<Box<str>>,
    /// The encoded event, `id:` line included.
    pub(crate) bytes: Bytes,
    /// Whether `seq` is from one counter for every channel, so that messages of several
    /// channels with one `seq`, one after the other, are one event published to them all
    /// (`false` on a cluster, whose channels count each on its own).
    pub(crate) global: bool,
}

/// What a backend found for a resume.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The backend sequence number the resume starts after; `None` when the id is not one
    /// the backend knows.
    pub(crate) after: Option<u64>,
    /// Whether `events` holds every event after it.
    pub(crate) complete: bool,
    /// Every event up to this backend sequence number was stored when the replay was read.
    pub(crate) snapshot: u64,
    /// The encoded events to replay, in order, each with its backend sequence number.
    pub(crate) events: Vec<(u64, Bytes)>,
}

/// The broker was dropped: the backend's task can stop.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend uses it
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// The broker as a backend sees it: where remote events come back in.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend uses it
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Delivers `message` to the local subscribers of `channel`.
    fn deliver(&self, channel: &str, message: Message) -> Result<(), Gone>;

    /// The backend lost its data: the sequence numbers it gives from now on may be ones
    /// already seen.
    fn data_lost(&self) -> Result<(), Gone>;

    /// Whether `channel` has local subscribers now.
    fn has_channel(&self, channel: &str) -> Result<bool, Gone>;

    /// For a backend that keeps no history: publishes `event` (the backend has validated it)
    /// on `channel` here, as [`Broker::publish`](crate::Broker::publish) does in process: with
    /// the next local sequence number, which is its id when it has none of its own. Returns
    /// the id, or why the broker refused it (an id over
    /// [`max_id_len`](crate::BrokerBuilder::max_id_len), closed).
    fn publish(&self, channel: &str, event: &Event) -> Result<Result<String, PublishError>, Gone>;

    /// For a backend that keeps no history: events of `channels` may have been published
    /// without reaching this broker (the connection lost, a subscription just made), so a
    /// resume from an event delivered before now reports the gap.
    fn missed(&self, channels: &[Arc<str>]) -> Result<(), Gone>;
}
