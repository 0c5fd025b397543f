//! [`Subscription`]: one stream's cursors in its channels' rings, and how it takes events.
//!
//! A poll reads every cursor's ring up to the broker's watermark, joins what it took in order
//! (several events into one buffer, up to a byte bound: one write per batch, not per event),
//! and applies the [`LagPolicy`] to a cursor the ring has overtaken. During a drain it draws
//! the stream's [`Turn`] and, at its end, delivers what was published before it, a `retry:`
//! field, and ends.

use std::{
    collections::VecDeque,
    fmt,
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{
    builder::LagPolicy,
    drain::Turn,
    resume::{Resume, Skip},
    ring::{Entry, Read, Ring},
    shared::Shared,
};
use crate::sync::Ordering;

/// One stream's place in each of its channels, from [`Broker::subscribe`](crate::Broker::subscribe).
///
/// Dropping it unsubscribes at once, and removes a channel left without subscribers (unless it
/// keeps history).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use tower_sse::{Broker, Event};
/// let broker = Broker::builder().id_base(0).build();
/// let channels = broker.channel_rules().parse_query(Some("channel=a")).unwrap();
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
    pub(super) replay: VecDeque<Bytes>,
    /// Which ring entries were in the replay already.
    pub(super) skip: Option<Skip>,
    pub(super) resume: Resume,
    /// This stream's turn in a drain; drawn the first time it is polled after the drain
    /// started, so an idle stream costs one word until then.
    turn: Option<Box<Turn>>,
    done: bool,
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
            .field("turn", &self.turn)
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
            resume: Resume::Live,
            turn: None,
            done: false,
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

    /// Waits for the next events and returns them encoded, as a stream would send them; `None`
    /// when the stream is over (broker closed, or this subscriber lagged with
    /// [`LagPolicy::Disconnect`]). During a [drain](crate::Broker::drain), at the stream's turn:
    /// the events published before it, then `retry: <ms>\n\n`, then `None`.
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
            let delivery = match self.drain_end() {
                None => poll_fn(|cx| self.poll_delivery(cx, 64 * 1024)).await,
                Some(end) => {
                    let poll = poll_fn(|cx| self.poll_delivery(cx, 64 * 1024));
                    match tokio::time::timeout_at(end, poll).await {
                        Ok(delivery) => delivery,
                        // Its turn: the next poll ends the stream.
                        Err(_) => continue,
                    }
                }
            };
            match delivery? {
                Delivery::Events(bytes) => return Some(bytes),
                Delivery::Lagged(_) | Delivery::Drain => continue,
            }
        }
    }

    /// The `retry:` this stream sends at its turn in a drain, if it drew one.
    #[cfg(test)]
    pub(crate) fn drain_retry_ms(&self) -> Option<u64> {
        Some(self.turn.as_ref()?.retry_ms)
    }

    /// When this stream's turn in a drain comes, if it drew one and it has not come yet.
    pub(crate) fn drain_end(&self) -> Option<Instant> {
        self.turn
            .as_ref()
            .filter(|turn| turn.stop.is_none())
            .map(|turn| turn.end)
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
        let inner = &*self.shared;
        let data_lost_at = inner.data_lost_at.load(Ordering::Acquire);
        let skip = self.skip;
        let skips = |entry: &Entry| skip.is_some_and(|skip| skip.skips(entry, data_lost_at));
        loop {
            let closed = inner.closed.load(Ordering::Acquire);
            let watermark = inner.watermark.load(Ordering::Acquire);
            if self.turn.is_none() {
                if let Some(plan) = inner.drain.get() {
                    self.turn = Some(Box::new(plan.turn()));
                    return Poll::Ready(Some(Delivery::Drain));
                }
            }
            // At its turn, the stream takes what is published up to now and no more.
            let stop = self.turn.as_mut().and_then(|turn| {
                if turn.stop.is_none() && Instant::now() >= turn.end {
                    turn.stop = Some(watermark);
                }
                turn.stop
            });
            let limit = stop.unwrap_or(watermark);
            let mut again = false;
            let mut taken = std::mem::take(&mut self.scratch);
            for (index, cursor) in self.cursors.iter_mut().enumerate() {
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
                    Read::Lagged(missed) => {
                        taken.clear();
                        self.scratch = taken;
                        return Poll::Ready(Some(self.lagged(missed)));
                    }
                    Read::Again => again = true,
                    Read::Taken | Read::Waiting => {}
                }
            }
            if !taken.is_empty() {
                let bytes = self.coalesce(&mut taken, max_bytes);
                self.scratch = taken;
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

    /// Joins the taken entries in order, up to `max_bytes`, and moves the cursors past the
    /// ones sent.
    fn coalesce(&mut self, taken: &mut Vec<(usize, Arc<Entry>)>, max_bytes: usize) -> Bytes {
        if self.cursors.len() > 1 {
            taken.sort_by_key(|(_, entry)| entry.seq);
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
        let bytes = if count == 1 {
            taken[0].1.bytes.clone()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for (_, entry) in &taken[..count] {
                buf.extend_from_slice(&entry.bytes);
            }
            buf.freeze()
        };
        for (index, _) in taken.drain(..).take(count) {
            self.cursors[index].pos += 1;
        }
        self.shared.metrics.delivered.increment(count as u64);
        taken.clear();
        bytes
    }

    /// Ends the stream: after a drain's turn (or a close that ended the drain), with the
    /// `retry:` field.
    fn finish(&mut self) -> Option<Delivery> {
        self.done = true;
        let turn = self.turn.as_ref()?;
        let field = format!("retry: {}\n\n", turn.retry_ms);
        Some(Delivery::Events(Bytes::from(field)))
    }

    fn take_replay(&mut self, max_bytes: usize) -> Bytes {
        let mut buf = BytesMut::new();
        while let Some(bytes) = self.replay.front() {
            if !buf.is_empty() && buf.len() + bytes.len() > max_bytes {
                break;
            }
            buf.extend_from_slice(bytes);
            self.replay.pop_front();
            self.shared.metrics.delivered.increment(1);
        }
        buf.freeze()
    }

    fn lagged(&mut self, missed: u64) -> Delivery {
        let inner = &*self.shared;
        match inner.config.lag_policy {
            LagPolicy::Disconnect => self.done = true,
            LagPolicy::Skip => {
                for cursor in &mut self.cursors {
                    cursor.pos = cursor.ring.clamp(cursor.pos);
                }
            }
        }
        inner.metrics.lagged.increment(1);
        inner.metrics.dropped.increment(missed);
        tracing::debug!(target: "tower_sse::broker", missed, policy = ?inner.config.lag_policy, "subscriber lagged");
        Delivery::Lagged(missed)
    }
}

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
