//! How a subscription joins its channels: the broker's rules and limits, a slot in each ring,
//! the point a `Last-Event-ID` resumes from, and through a backend, the remote replay (or,
//! when the backend keeps no history, the same resume from the rings as in process).
//!
//! Functions of the broker's [`Shared`] state, not methods: `Shared`'s own methods (what the
//! handles and subscriptions share, and the publish path) are all in `shared.rs`.

use std::sync::Arc;

use super::{
    positions::{self, Positions},
    resume::{Resume, Skip, Start, find_after, parse_seq},
    shared::Shared,
    subscription::{Cursor, Replayed, Subscription},
};
use crate::{
    backend::Backend,
    channel::Channels,
    error::SubscribeError,
    sync::{Ordering, lock},
};

/// Joins the rings of `channels` here: the broker's rules and limits, a slot in each ring, and
/// for a `Last-Event-ID`, the cursors moved back to where the resume starts. Without a backend
/// this is the whole subscription; with one, [`join_remote`] starts with it.
pub(super) fn join(
    shared: &Arc<Shared>,
    channels: &Channels,
    start: Start<'_>,
) -> Result<Subscription, SubscribeError> {
    let inner = &**shared;
    if inner.closed.load(Ordering::Acquire) {
        return Err(SubscribeError::Closed);
    }
    if let Some(plan) = inner.drain.get() {
        return Err(SubscribeError::Draining {
            retry_after: plan.retry_after(),
        });
    }
    let config = &inner.config;
    // The broker's rules hold whoever read the list (an access layer may have had others).
    config.rules.check_list(channels)?;
    // Counted before anything else, and given back by the subscription's drop, also when
    // it fails halfway below.
    let total = inner.subscribers.fetch_add(1, Ordering::AcqRel);
    inner.metrics.subscribers.increment(1.0);
    let mut subscription = Subscription::new(shared.clone(), channels.len());
    if total >= config.max_subscribers {
        return Err(SubscribeError::TooManySubscribers {
            channel: None,
            limit: config.max_subscribers,
        });
    }
    for name in channels.names() {
        // The entry guard holds the shard lock while the slot is taken, so the channel
        // can't be removed in between (removal takes the same lock). A new channel's
        // floor is exact: a publish raises the watermark before it looks for the channel.
        let mut created = false;
        let entry = inner.channels.entry(name.clone()).or_insert_with(|| {
            created = true;
            inner.new_ring(name.clone(), inner.watermark.load(Ordering::Acquire))
        });
        let ring = entry.value().clone();
        let taken = ring.join(config.max_subscribers_per_channel);
        drop(entry);
        if created {
            inner.count_channels();
        }
        let Some((slot, pos, was_idle)) = taken else {
            return Err(SubscribeError::TooManySubscribers {
                channel: Some(name.clone()),
                limit: config.max_subscribers_per_channel,
            });
        };
        if was_idle {
            inner.idle.fetch_sub(1, Ordering::AcqRel);
        }
        subscription.cursors.push(Cursor { ring, pos, slot });
    }
    match start {
        Start::Live => {
            // The newest event before the slots were taken, of all the channels.
            subscription.preceding = subscription
                .cursors
                .iter()
                .filter_map(|cursor| cursor.ring.before(cursor.pos))
                .max_by_key(|(seq, _)| *seq)
                .map(|(_, id)| id);
        }
        _ => resume_here(inner, &mut subscription, start),
    }
    Ok(subscription)
}

/// Moves the cursors of `subscription` back to where a resume from `start` starts in the
/// rings: after an id, or after the first order number of this broker (the earliest kept).
fn resume_here(inner: &Shared, subscription: &mut Subscription, start: Start<'_>) {
    let rings = subscription.cursors.iter().map(|c| &*c.ring);
    let watermark = inner.watermark.load(Ordering::Acquire);
    let found = match start {
        Start::Live => return,
        Start::After(id) => find_after(rings, id, inner.base, watermark),
        Start::Earliest => Some(inner.base),
    };
    subscription.resume = match found {
        None => Resume::Unknown,
        Some(after) => {
            // At most the history, newest first; this only ever moves a cursor back
            // inside its ring, so the events published since the slot was taken are
            // still ahead of it.
            let mut complete = true;
            for cursor in &mut subscription.cursors {
                let (pos, all) = cursor.ring.resume_after(after, inner.config.history);
                cursor.pos = pos;
                complete &= all;
            }
            Resume::from_complete(complete)
        }
    };
    subscription.preceding = match (start, subscription.resume) {
        (Start::After(id), Resume::Complete) => Some(id.into()),
        _ => None,
    };
    tracing::debug!(?start, resume = ?subscription.resume, "resume");
}

/// Subscribes through the backend: registered here first, then subscribed in the backend,
/// so a release of the same channel queued before us sees our subscriber and keeps the
/// subscription. A resume then reads the backend's history, or when it keeps none, the rings
/// (once subscribed, so that the backend has marked what the new subscription missed).
pub(super) async fn join_remote(
    shared: &Arc<Shared>,
    backend: &dyn Backend,
    channels: &Channels,
    start: Start<'_>,
) -> Result<Subscription, SubscribeError> {
    let mut subscription = join(shared, channels, Start::Live)?;
    backend
        .ensure(channels.names())
        .await
        .map_err(SubscribeError::Backend)?;
    let names = channels.names();
    if names.len() > 1 && positions::fits(names.len(), shared.config.max_id_len) {
        // Read before the positions, as `after` below.
        let after = lock(&shared.sequencer).last;
        if let Some(here) = backend.positions(names) {
            let start = Positioned { here, after, start };
            join_positions(backend, &mut subscription, names, start).await?;
            return Ok(subscription);
        }
    }
    let (id, seq) = match start {
        Start::Live => return Ok(subscription),
        _ if !backend.keeps_history() => {
            resume_here(shared, &mut subscription, start);
            return Ok(subscription);
        }
        // The backend's numbers start at 1: after 0 is all it keeps.
        Start::Earliest => ("0", Some(0)),
        Start::After(id) => (id, parse_seq(id)),
    };
    // Read before the replay: a data loss noticed from now on may have happened
    // before the replay was read, so don't skip what follows it (a duplicate at
    // worst, never a lost event).
    let after = lock(&shared.sequencer).last;
    let replay = backend
        .replay(channels.names(), id, seq)
        .await
        .map_err(SubscribeError::Backend)?;
    subscription.resume = match replay.after {
        None => Resume::Unknown,
        Some(_) => Resume::from_complete(replay.complete),
    };
    subscription.preceding = match (start, subscription.resume) {
        (Start::After(id), Resume::Complete) => Some(id.into()),
        _ => None,
    };
    tracing::debug!(last_event_id = id, resume = ?subscription.resume, "resume");
    subscription.skip = Some(Skip {
        until: replay.snapshot,
        after,
    });
    subscription.replay = replay
        .events
        .into_iter()
        .map(|(origin, bytes)| Replayed {
            bytes,
            cursor: 0,
            origin,
        })
        .collect();
    Ok(subscription)
}

/// Where a stream with [`Positions`] starts from.
struct Positioned<'a> {
    /// The position here of each channel (the last id delivered here).
    here: Vec<u64>,
    /// The local order number when `here` was read.
    after: u64,
    start: Start<'a>,
}

/// For a backend whose channels count each on its own, a stream over several: starts it at
/// its positions (live, from here; or each channel replayed from its own history after the
/// position a positions id gives), and tells them (see `positions.rs`).
async fn join_positions(
    backend: &dyn Backend,
    subscription: &mut Subscription,
    names: &[std::sync::Arc<str>],
    Positioned { here, after, start }: Positioned<'_>,
) -> Result<(), SubscribeError> {
    // Ring entries at or before a channel's start were published before it: skipped.
    let mut skips: Vec<Skip> = here.iter().map(|&until| Skip { until, after }).collect();
    let mut origins = here;
    let from = match start {
        Start::Live => None,
        Start::Earliest => Some(vec![0; names.len()]),
        Start::After(id) => {
            let from = positions::parse(id, names);
            if from.is_none() {
                subscription.resume = Resume::Unknown;
            }
            from
        }
    };
    if let Some(from) = from {
        let replays = backend
            .replay_each(names, &from)
            .await
            .map_err(SubscribeError::Backend)?;
        let (mut known, mut complete) = (0, true);
        for (cursor, (replay, from)) in replays.into_iter().zip(from).enumerate() {
            if replay.after.is_none() {
                // A position this channel never had (its shard lost its data since): live,
                // from here, and the gap told.
                complete = false;
                continue;
            }
            known += 1;
            complete &= replay.complete;
            let snapshot = replay.snapshot;
            skips[cursor] = Skip {
                until: snapshot,
                after,
            };
            // Up to the counter read with the replay: what is not in it is gone (and told).
            origins[cursor] = if replay.events.is_empty() {
                from.max(snapshot)
            } else {
                from
            };
            let last = replay.events.len();
            subscription
                .replay
                .extend(
                    replay
                        .events
                        .into_iter()
                        .enumerate()
                        .map(|(k, (seq, bytes))| Replayed {
                            bytes,
                            cursor,
                            origin: if k + 1 == last {
                                seq.max(snapshot)
                            } else {
                                seq
                            },
                        }),
                );
        }
        subscription.resume = match known {
            0 => Resume::Unknown,
            _ => Resume::from_complete(complete),
        };
    }
    let positions = Positions::new(names, origins, skips);
    subscription.preceding = match (start, subscription.resume) {
        (Start::Live, _) => Some(positions.id().into()),
        (Start::After(id), Resume::Complete) => Some(id.into()),
        _ => None,
    };
    tracing::debug!(?start, resume = ?subscription.resume, "resume from positions");
    subscription.positions = Some(Box::new(positions));
    Ok(())
}
