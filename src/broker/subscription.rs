//! [`Subscription`]: one stream's cursors in its channels' rings, and how it takes events.
//!
//! A poll reads every cursor's ring up to the broker's watermark, joins what it took in order
//! (several events into one buffer, up to a byte bound: one write per batch, not per event),
//! and applies the [`LagPolicy`] to a cursor the ring has overtaken. During a drain it draws
//! the stream's [`Turn`] and, at its end, delivers what was published before it, a `retry:`
//! field, and ends.
//!
//! Read as a [`Stream`] it tells a lagging reader how many events it missed ([`RecvError`]),
//! as tokio's `broadcast` does; [`SseBody`](crate::SseBody) reads the same deliveries without
//! the `Stream` layer, and turns a lag into a comment.

use std::{
    collections::VecDeque,
    error::Error as StdError,
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::{
    builder::LagPolicy,
    drain::Turn,
    positions::Positions,
    resume::{Resume, Skip},
    ring::{Entry, Read, Ring},
    shared::Shared,
};
use crate::sync::Ordering;

/// The most bytes of waiting events one item of the [`Stream`] (or one
/// [`recv`](Subscription::recv)) joins, as the body's frames.
const MAX_BATCH: usize = 64 * 1024;

/// One stream's place in each of its channels, from [`Broker::subscribe`](crate::Broker::subscribe).
///
/// Read it with [`recv`](Subscription::recv), or as a [`Stream`] of
/// `Result<Bytes, RecvError>`, which also tells of a lag (see [`RecvError`]). Dropping it
/// unsubscribes at once, and removes a channel left without subscribers (unless it keeps
/// history).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use tower_sse::{Broker, Event};
/// let broker = Broker::builder().id_base(0).build();
/// let channels = broker.channel_rules().channels(["a"]).unwrap();
/// let mut subscription = broker.subscribe(&channels).await.unwrap();
/// broker.publish("a", Event::default().data("1")).await.unwrap();
/// broker.publish("a", Event::default().data("2")).await.unwrap();
/// // Events that are waiting come together.
/// assert_eq!(subscription.recv().await.unwrap(), "data: 1\nid: 1\n\ndata: 2\nid: 2\n\n");
/// # }
/// ```
pub struct Subscription {
    shared: Arc<Shared>,
    pub(super) cursors: Vec<Cursor>,
    /// Reused between polls: the entries taken, with the cursor each came from.
    scratch: Vec<(usize, Arc<Entry>)>,
    /// Events to send before the channels' own (a resume through the backend).
    pub(super) replay: VecDeque<Replayed>,
    /// Which ring entries were in the replay already.
    pub(super) skip: Option<Skip>,
    /// On a backend whose channels count each on its own, for a stream over several: its
    /// position in each, told after each batch (see `positions.rs`), and per channel what
    /// its start skips in place of `skip`.
    pub(super) positions: Option<Box<Positions>>,
    pub(super) resume: Resume,
    /// This stream's turn in a drain; drawn the first time it is polled after the drain
    /// started, so an idle stream costs one word until then.
    turn: Option<Box<Drawn>>,
    done: bool,
    /// The id of the event before the first this stream sends, when known.
    pub(super) preceding: Option<Box<str>>,
    /// The order number of the last event sent from the rings: an event published to several
    /// of this stream's channels is in each of their rings with one number, and is sent once.
    last_seq: u64,
}

/// A stream's turn in a drain, and the timer that wakes it then when it is read as a
/// [`Stream`] (a body has a timer of its own).
struct Drawn {
    turn: Turn,
    timer: Option<Pin<Box<Sleep>>>,
}

/// An event of a replay, and the cursor and position it moves the stream to (for
/// [`Positions`]).
pub(super) struct Replayed {
    pub(super) bytes: Bytes,
    pub(super) cursor: usize,
    pub(super) origin: u64,
}

/// A subscription's place in one channel.
pub(super) struct Cursor {
    pub(super) ring: Arc<Ring>,
    /// Ring position of the next event to deliver.
    pub(super) pos: u64,
    pub(super) slot: usize,
}

/// What one poll of a subscription yields.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Encoded events, several coalesced into one buffer when they were waiting together.
    Events(Bytes),
    /// The subscriber fell this many events behind; the [`LagPolicy`] was applied.
    Lagged(u64),
    /// The broker started draining and this stream drew its turn: it ends at
    /// [`Subscription::drain_end`], and must be polled again then (nothing wakes it).
    Drain,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field(
                "channels",
                &self
                    .cursors
                    .iter()
                    .map(|c| &**c.ring.name())
                    .collect::<Vec<_>>(),
            )
            .field("resume", &self.resume)
            .field("turn", &self.turn.as_ref().map(|drawn| &drawn.turn))
            .field("done", &self.done)
            .finish()
    }
}

impl Subscription {
    /// An empty subscription of `broker`, for `channels` cursors.
    pub(super) fn new(shared: Arc<Shared>, channels: usize) -> Subscription {
        Subscription {
            shared,
            cursors: Vec::with_capacity(channels),
            scratch: Vec::new(),
            replay: VecDeque::new(),
            skip: None,
            positions: None,
            resume: Resume::Live,
            turn: None,
            done: false,
            preceding: None,
            last_seq: 0,
        }
    }

    /// How the `Last-Event-ID` was taken, see [`Broker::resume`](crate::Broker::resume).
    ///
    /// ```
    /// # use tower_sse::{broker::Resume, Broker};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let broker = Broker::new();
    /// # let channels = broker.channel_rules().parse_query(None).unwrap();
    /// assert_eq!(broker.subscribe(&channels).await.unwrap().resume(), Resume::Live);
    /// # }
    /// ```
    pub fn resume(&self) -> Resume {
        self.resume
    }

    /// The id of the event just before the first one this stream sends, when it is known:
    /// for a subscription with no `Last-Event-ID`, the newest event of its channels still in
    /// memory here (on Redis, only for a channel this instance already had subscribers of);
    /// for a [complete](Resume::Complete) resume, the id it resumed after. `None` otherwise
    /// (nothing kept, [`Resume::Gap`], [`Resume::Unknown`], [`Broker::resume_earliest`](crate::Broker::resume_earliest)).
    /// A client compares it with the id it asked for to tell a loss (Mercure sends it as the
    /// `Last-Event-ID` response header).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use tower_sse::{Broker, Event};
    /// let broker = Broker::builder().history(10).id_base(0).build();
    /// let channels = broker.channel_rules().parse_query(None).unwrap();
    /// assert_eq!(broker.subscribe(&channels).await.unwrap().last_event_id(), None);
    /// broker.publish("sse", Event::default().id("a")).await.unwrap();
    /// broker.publish("sse", Event::default()).await.unwrap();
    /// let live = broker.subscribe(&channels).await.unwrap();
    /// assert_eq!(live.last_event_id(), Some("2"));
    /// let resumed = broker.resume(&channels, "a").await.unwrap();
    /// assert_eq!(resumed.last_event_id(), Some("a"));
    /// # }
    /// ```
    pub fn last_event_id(&self) -> Option<&str> {
        self.preceding.as_deref()
    }

    /// Waits for the next events and returns them encoded, as a stream would send them; `None`
    /// when the stream is over (broker closed, or this subscriber lagged with
    /// [`LagPolicy::Disconnect`]). During a [drain](crate::Broker::drain), at the stream's turn:
    /// the events published before it, then `retry: <ms>\n\n`, then `None`.
    ///
    /// A lag is passed over in silence: with [`LagPolicy::Skip`] the next events come as if
    /// nothing happened. Read the subscription as a [`Stream`] to be told.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use tower_sse::{Broker, Event};
    /// # let broker = Broker::builder().id_base(0).build();
    /// # let channels = broker.channel_rules().parse_query(None).unwrap();
    /// let mut subscription = broker.subscribe(&channels).await.unwrap();
    /// broker.publish("sse", Event::default().data("x")).await.unwrap();
    /// assert_eq!(subscription.recv().await.unwrap(), "data: x\nid: 1\n\n");
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await? {
                Ok(bytes) => return Some(bytes),
                Err(RecvError::Lagged(_)) => continue,
            }
        }
    }

    /// The `retry:` this stream sends at its turn in a drain, if it drew one.
    #[cfg(test)]
    pub(crate) fn drain_retry_ms(&self) -> Option<u64> {
        Some(self.turn.as_ref()?.turn.retry_ms)
    }

    /// When this stream's turn in a drain comes, if it drew one and it has not come yet.
    pub(crate) fn drain_end(&self) -> Option<Instant> {
        self.turn
            .as_ref()
            .filter(|drawn| drawn.turn.stop.is_none())
            .map(|drawn| drawn.turn.end)
    }

    /// Polls for the next delivery, coalescing up to `max_bytes` of waiting events (at least
    /// one event, whatever its size).
    pub(crate) fn poll_delivery(
        &mut self,
        cx: &mut Context<'_>,
        max_bytes: usize,
    ) -> Poll<Option<Delivery>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.replay.is_empty() {
            return Poll::Ready(Some(Delivery::Events(self.take_replay(max_bytes))));
        }
        if let Some(positions) = self.positions.as_mut().filter(|p| !p.told) {
            // Where the stream starts, so that a reconnect before its first event resumes.
            let mut buf = BytesMut::with_capacity(positions.frame_len());
            positions.write_frame(&mut buf);
            return Poll::Ready(Some(Delivery::Events(buf.freeze())));
        }
        let inner = &*self.shared;
        let data_lost_at = inner.data_lost_at.load(Ordering::Acquire);
        loop {
            let closed = inner.closed.load(Ordering::Acquire);
            let watermark = inner.watermark.load(Ordering::Acquire);
            if self.turn.is_none() {
                if let Some(plan) = inner.drain.get() {
                    self.turn = Some(Box::new(Drawn {
                        turn: plan.turn(),
                        timer: None,
                    }));
                    return Poll::Ready(Some(Delivery::Drain));
                }
            }
            // At its turn, the stream takes what is published up to now and no more.
            let stop = self.turn.as_mut().and_then(|drawn| {
                let turn = &mut drawn.turn;
                if turn.stop.is_none() && Instant::now() >= turn.end {
                    turn.stop = Some(watermark);
                }
                turn.stop
            });
            let limit = stop.unwrap_or(watermark);
            let mut again = false;
            let mut taken = std::mem::take(&mut self.scratch);
            for (index, cursor) in self.cursors.iter_mut().enumerate() {
                let skip = match &self.positions {
                    Some(positions) => Some(positions.skips[index]),
                    None => self.skip,
                };
                let skips =
                    |entry: &Entry| skip.is_some_and(|skip| skip.skips(entry, data_lost_at));
                let read = cursor.ring.read(
                    &mut cursor.pos,
                    cursor.slot,
                    limit,
                    max_bytes,
                    skips,
                    (index, &mut taken),
                    cx.waker(),
                );
                match read {
                    Read::Lagged(_) => {
                        taken.clear();
                        self.scratch = taken;
                        return Poll::Ready(Some(self.lagged()));
                    }
                    Read::Again => again = true,
                    Read::Taken | Read::Waiting => {}
                }
            }
            if !taken.is_empty() {
                let bytes = coalesce(
                    &mut self.cursors,
                    &mut self.last_seq,
                    inner,
                    (&mut taken, self.positions.as_deref_mut()),
                    max_bytes,
                );
                self.scratch = taken;
                if bytes.is_empty() {
                    // Each was sent already, from another channel: read on.
                    continue;
                }
                return Poll::Ready(Some(Delivery::Events(bytes)));
            }
            self.scratch = taken;
            if stop.is_some() {
                // Nothing is left up to the stop: what is above it (`again`) is after this
                // stream's end.
                return Poll::Ready(self.finish());
            }
            if again {
                continue;
            }
            if closed {
                return Poll::Ready(self.finish());
            }
            // Registered above; a close or a drain that raced with us took the wakers before
            // we put ours, so look once more.
            if inner.closed.load(Ordering::Acquire)
                || (self.turn.is_none() && inner.drain.get().is_some())
            {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Ends the stream: after a drain's turn (or a close that ended the drain), with the
    /// `retry:` field.
    fn finish(&mut self) -> Option<Delivery> {
        self.done = true;
        let turn = &self.turn.as_ref()?.turn;
        let field = format!("retry: {}\n\n", turn.retry_ms);
        Some(Delivery::Events(Bytes::from(field)))
    }

    /// The next replayed events, up to `max_bytes` (at least one), and the positions after
    /// them.
    fn take_replay(&mut self, max_bytes: usize) -> Bytes {
        let mut buf = BytesMut::new();
        while let Some(item) = self.replay.front() {
            if !buf.is_empty() && buf.len() + item.bytes.len() > max_bytes {
                break;
            }
            buf.extend_from_slice(&item.bytes);
            if let Some(positions) = &mut self.positions {
                positions.origins[item.cursor] = item.origin;
            }
            self.replay.pop_front();
            self.shared.metrics.delivered.increment(1);
        }
        if let Some(positions) = &mut self.positions {
            positions.write_frame(&mut buf);
        }
        buf.freeze()
    }

    /// A cursor fell behind its ring: counts what every cursor missed (all of them, so the
    /// count covers every channel; an event of several counts for each) and applies the
    /// [`LagPolicy`].
    fn lagged(&mut self) -> Delivery {
        let inner = &*self.shared;
        let skip = inner.config.lag_policy == LagPolicy::Skip;
        let mut missed = 0;
        for cursor in &mut self.cursors {
            let start = cursor.ring.clamp(cursor.pos);
            missed += start - cursor.pos;
            if skip {
                cursor.pos = start;
            }
        }
        if !skip {
            self.done = true;
        }
        inner.metrics.lagged.increment(1);
        inner.metrics.dropped.increment(missed);
        tracing::debug!(target: "tower_sse::broker", missed, policy = ?inner.config.lag_policy, "subscriber lagged");
        Delivery::Lagged(missed)
    }
}

/// Each item is the events that were waiting, encoded as a stream sends them (several joined
/// into one `Bytes`, up to 64 KiB, when several were waiting), or an [`Err`] telling of a lag.
/// The stream ends (`None`) as [`recv`](Subscription::recv) returns `None`: the broker closed,
/// the stream's turn in a drain came (after its `retry:` field), or a lag under
/// [`LagPolicy::Disconnect`] (right after its `Err`).
///
/// # Lagging
///
/// A subscriber that falls more than the [buffer](crate::BrokerBuilder::buffer) behind reads
/// [`RecvError::Lagged(n)`](RecvError::Lagged), `n` the number of events of its channels that
/// were dropped before it read them (summed over its channels: an event
/// [published to several](crate::Broker::publish_to) of them counts once for each). Then, with
/// [`LagPolicy::Skip`], it reads on from the oldest events still kept; with
/// [`LagPolicy::Disconnect`] (the default), the stream ends.
///
/// ```
/// use futures_util::StreamExt;
/// use tower_sse::{broker::RecvError, Broker, Event, LagPolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::builder().id_base(0).buffer(2).lag_policy(LagPolicy::Skip).build();
/// let channels = broker.channel_rules().channels(["a"]).unwrap();
/// let mut subscription = broker.subscribe(&channels).await.unwrap();
/// for data in ["1", "2", "3", "4", "5"] {
///     broker.publish("a", Event::default().data(data)).await.unwrap();
/// }
/// // The buffer kept the last 2 of 5: 3 were missed.
/// assert_eq!(subscription.next().await, Some(Err(RecvError::Lagged(3))));
/// let kept = subscription.next().await.unwrap().unwrap();
/// assert_eq!(kept, "data: 4\nid: 4\n\ndata: 5\nid: 5\n\n");
/// # }
/// ```
impl Stream for Subscription {
    type Item = Result<Bytes, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.poll_delivery(cx, MAX_BATCH) {
                Poll::Ready(Some(Delivery::Events(bytes))) => return Poll::Ready(Some(Ok(bytes))),
                Poll::Ready(Some(Delivery::Lagged(missed))) => {
                    return Poll::Ready(Some(Err(RecvError::Lagged(missed))));
                }
                // It drew its turn: the timer below is armed for it.
                Poll::Ready(Some(Delivery::Drain)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            // Nothing but a timer wakes a stream at its turn in a drain.
            let Some(drawn) = this.turn.as_mut().filter(|d| d.turn.stop.is_none()) else {
                return Poll::Pending;
            };
            let end = drawn.turn.end;
            let timer = drawn
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
            ready!(timer.as_mut().poll(cx));
            // Its turn: the next poll delivers what was published until now, and ends.
        }
    }
}

/// What reading a [`Subscription`] as a [`Stream`] tells besides events.
///
/// ```
/// use tower_sse::broker::RecvError;
///
/// let err = RecvError::Lagged(3);
/// assert_eq!(err.to_string(), "lagged by 3 events");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber fell behind its channels' buffers: this many events were dropped before
    /// it read them. See [Lagging](Subscription#lagging) for what comes next.
    Lagged(u64),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Lagged(missed) => write!(f, "lagged by {missed} events"),
        }
    }
}

impl StdError for RecvError {}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The names are only collected when the event is enabled. The broker's log target, as
        // for subscribe: operators filter on it.
        tracing::debug!(
            target: "tower_sse::broker",
            channels = ?self.cursors.iter().map(|c| &**c.ring.name()).collect::<Vec<_>>(),
            "unsubscribed"
        );
        let inner = &*self.shared;
        for cursor in self.cursors.drain(..) {
            if cursor.ring.leave(cursor.slot) {
                inner.channel_left(&cursor.ring);
            }
        }
        let before = inner.subscribers.fetch_sub(1, Ordering::AcqRel);
        inner.metrics.subscribers.decrement(1.0);
        if before == 1 {
            if let Some(plan) = inner.drain.get() {
                // Every drain future waiting, also one between its look at the count and
                // its first poll (`notify_waiters` reaches a `Notified` from its creation).
                plan.emptied.notify_waiters();
            }
        }
    }
}

/// Joins the taken entries in order, up to `max_bytes` (at least one), and moves the cursors
/// past the ones sent, and past those sent already from another channel (an empty result when
/// that is all there was); with [`Positions`], moves them too and tells them after the events.
fn coalesce(
    cursors: &mut [Cursor],
    last_seq: &mut u64,
    shared: &Shared,
    (taken, positions): (&mut Vec<(usize, Arc<Entry>)>, Option<&mut Positions>),
    max_bytes: usize,
) -> Bytes {
    if cursors.len() > 1 {
        taken.sort_by_key(|(_, entry)| entry.seq);
        // An event sent already, from another of its channels, or twice in this batch: the
        // copy is passed over.
        let mut last = *last_seq;
        taken.retain(|(index, entry)| {
            if entry.seq <= last {
                cursors[*index].pos += 1;
                return false;
            }
            last = entry.seq;
            true
        });
    }
    let mut count = 0;
    let mut len = 0;
    for (_, entry) in taken.iter() {
        if count > 0 && len + entry.bytes.len() > max_bytes {
            break;
        }
        count += 1;
        len += entry.bytes.len();
    }
    let bytes = match (count, positions) {
        (0, _) => Bytes::new(),
        (1, None) => taken[0].1.bytes.clone(),
        (_, mut positions) => {
            let frame = positions.as_ref().map_or(0, |p| p.frame_len());
            let mut buf = BytesMut::with_capacity(len + frame);
            for (index, entry) in &taken[..count] {
                buf.extend_from_slice(&entry.bytes);
                if let Some(positions) = positions.as_deref_mut() {
                    positions.origins[*index] = entry.origin;
                }
            }
            if let Some(positions) = positions {
                positions.write_frame(&mut buf);
            }
            buf.freeze()
        }
    };
    if let Some((_, entry)) = count.checked_sub(1).map(|i| &taken[i]) {
        *last_seq = entry.seq;
    }
    for (index, _) in taken.drain(..).take(count) {
        cursors[index].pos += 1;
    }
    shared.metrics.delivered.increment(count as u64);
    taken.clear();
    bytes
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_test::{assert_pending, assert_ready_eq, task};

    use super::*;
    use crate::{Broker, ChannelRules, Event};

    fn subscribe(broker: &Broker, names: &[&str]) -> Subscription {
        let channels = ChannelRules::default().channels(names).unwrap();
        broker.subscribe_now(&channels, None).unwrap().unwrap()
    }

    fn publish(broker: &Broker, channel: &str, data: &str) {
        let published = task::spawn(broker.publish(channel, Event::default().data(data))).poll();
        assert!(matches!(published, Poll::Ready(Ok(_))));
    }

    fn next(
        t: &mut task::Spawn<()>,
        sub: &mut Subscription,
    ) -> Poll<Option<Result<Bytes, RecvError>>> {
        t.enter(|cx, _| Pin::new(&mut *sub).poll_next(cx))
    }

    #[test]
    fn a_laggard_is_told_how_many_it_missed_then_skips() {
        let broker = Broker::builder()
            .id_base(0)
            .buffer(2)
            .lag_policy(LagPolicy::Skip)
            .build();
        let mut sub = subscribe(&broker, &["a"]);
        let mut t = task::spawn(());
        for i in 1..=5 {
            publish(&broker, "a", &i.to_string());
        }
        assert_ready_eq!(next(&mut t, &mut sub), Some(Err(RecvError::Lagged(3))));
        assert_ready_eq!(
            next(&mut t, &mut sub),
            Some(Ok(Bytes::from("data: 4\nid: 4\n\ndata: 5\nid: 5\n\n")))
        );
        assert_pending!(next(&mut t, &mut sub));
        publish(&broker, "a", "6");
        assert!(t.is_woken());
        assert_ready_eq!(
            next(&mut t, &mut sub),
            Some(Ok(Bytes::from("data: 6\nid: 6\n\n")))
        );
    }

    /// On several channels the count is what every channel dropped, not the first one's.
    #[test]
    fn the_count_is_over_all_channels() {
        let broker = Broker::builder()
            .id_base(0)
            .buffer(2)
            .lag_policy(LagPolicy::Skip)
            .build();
        let mut sub = subscribe(&broker, &["a", "b"]);
        let mut t = task::spawn(());
        // a: 4 published, 2 dropped; b: 5 published, 3 dropped.
        for _ in 0..4 {
            publish(&broker, "a", "a");
            publish(&broker, "b", "b");
        }
        publish(&broker, "b", "b");
        assert_ready_eq!(next(&mut t, &mut sub), Some(Err(RecvError::Lagged(5))));
        assert_ready_eq!(
            next(&mut t, &mut sub),
            Some(Ok(Bytes::from(
                "data: a\nid: 5\n\ndata: a\nid: 7\n\ndata: b\nid: 8\n\ndata: b\nid: 9\n\n"
            )))
        );
    }

    #[test]
    fn a_laggard_is_told_then_disconnected() {
        let broker = Broker::builder().id_base(0).buffer(2).build();
        let mut sub = subscribe(&broker, &["a"]);
        let mut t = task::spawn(());
        for i in 1..=5 {
            publish(&broker, "a", &i.to_string());
        }
        assert_ready_eq!(next(&mut t, &mut sub), Some(Err(RecvError::Lagged(3))));
        assert_ready_eq!(next(&mut t, &mut sub), None);
        publish(&broker, "a", "6");
        assert_ready_eq!(next(&mut t, &mut sub), None);
    }

    /// `recv` passes over the lag.
    #[test]
    fn recv_is_silent_about_a_lag() {
        let broker = Broker::builder()
            .id_base(0)
            .buffer(1)
            .lag_policy(LagPolicy::Skip)
            .build();
        let mut sub = subscribe(&broker, &["a"]);
        publish(&broker, "a", "1");
        publish(&broker, "a", "2");
        let got = task::spawn(sub.recv()).poll();
        assert_ready_eq!(got, Some(Bytes::from("data: 2\nid: 2\n\n")));
    }

    /// Read as a stream, a subscription is woken at its turn in a drain by a timer of its own.
    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_at_its_turn_in_a_drain() {
        let broker = Broker::builder().id_base(0).build();
        let mut sub = subscribe(&broker, &["a"]);
        let mut t = task::spawn(());
        assert_pending!(next(&mut t, &mut sub));
        let window = Duration::from_secs(10);
        let _drained = broker.drain(window);
        assert!(t.is_woken());
        assert_pending!(next(&mut t, &mut sub));
        let end = sub.drain_end().unwrap();
        publish(&broker, "a", "x");
        assert_ready_eq!(
            next(&mut t, &mut sub),
            Some(Ok(Bytes::from("data: x\nid: 1\n\n")))
        );
        assert_pending!(next(&mut t, &mut sub));
        // Timers tick in whole milliseconds, rounded up.
        let ms = Duration::from_millis(1);
        if let Some(before) = (end - Instant::now()).checked_sub(ms) {
            tokio::time::advance(before).await;
            assert!(!t.is_woken());
            assert_pending!(next(&mut t, &mut sub));
        }
        tokio::time::advance(end + ms - Instant::now()).await;
        assert!(t.is_woken(), "its timer wakes it at its turn");
        let retry = format!("retry: {}\n\n", sub.drain_retry_ms().unwrap());
        assert_ready_eq!(next(&mut t, &mut sub), Some(Ok(Bytes::from(retry))));
        assert_ready_eq!(next(&mut t, &mut sub), None);
    }

    #[test]
    fn send_sync_unpin() {
        fn assert_stream<T: Stream + Send + Sync + Unpin>() {}
        assert_stream::<Subscription>();
    }
}
