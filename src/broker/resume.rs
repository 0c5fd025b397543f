//! Ids, [`Resume`], and how a `Last-Event-ID` is resolved to a point in the rings.
//!
//! An id is the publisher's ([`Event::id`](crate::Event::id)) or, without one, the event's
//! sequence number in decimal (no sign, no leading zero). A reconnecting client's
//! `Last-Event-ID` is read as a sequence number when it is spelled like one and in this
//! broker's range, else looked up among the kept events' publisher ids (so a numeric id a
//! publisher gave, as flask-sse apps do, resumes too).

use super::ring::{Entry, Ring};

/// How a subscription's `Last-Event-ID` was taken; see [`Broker::resume`](crate::Broker::resume).
///
/// ```
/// # use tower_sse::{broker::Resume, Broker};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// let channels = broker.channel_rules().parse_query(None).unwrap();
/// let subscription = broker.resume(&channels, "no-such-id").await.unwrap();
/// assert_eq!(subscription.resume(), Resume::Unknown);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// Every event after the id is replayed, then live events.
    Complete,
    /// The events after the id are replayed as far as they are kept, but some are gone (the
    /// id is older than the history): the client should reload its state.
    Gap,
    /// The id is not one this broker knows: live events only.
    Unknown,
}

impl Resume {
    pub(crate) fn from_complete(complete: bool) -> Resume {
        if complete {
            Resume::Complete
        } else {
            Resume::Gap
        }
    }
}

/// Where a subscription starts: with the next event, after a `Last-Event-ID`, or with the
/// earliest event kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start<'a> {
    Live,
    After(&'a str),
    Earliest,
}

impl<'a> Start<'a> {
    pub(crate) fn from_id(last_event_id: Option<&'a str>) -> Start<'a> {
        last_event_id.map_or(Start::Live, Start::After)
    }
}

/// A sequence number written as the broker writes them: decimal digits, no sign, no leading
/// zero. Other spellings are other ids.
pub(crate) fn parse_seq(id: &str) -> Option<u64> {
    if id.starts_with(['+', '0']) {
        return None;
    }
    id.parse().ok()
}

/// Finds the order number a resume from `id` starts after: a sequence number of this broker
/// (after `base`, up to `watermark`, the newest given out), or else the newest kept event of
/// `rings` with that publisher's id. `None`: an id this broker does not know (a foreign one,
/// one from another process start).
pub(crate) fn find_after<'a>(
    mut rings: impl Iterator<Item = &'a Ring>,
    id: &str,
    base: u64,
    watermark: u64,
) -> Option<u64> {
    match parse_seq(id) {
        Some(n) if base < n && n <= watermark => Some(n),
        _ => rings.find_map(|ring| ring.find_id(id)),
    }
}

/// Ring entries up to a backend sequence number were in a resumed stream's replay: they are
/// skipped, unless the backend lost its data after the stream started (then the numbers were
/// given out again, to new events).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Skip {
    /// The backend's sequence number the replay went up to.
    pub(crate) until: u64,
    /// The local order number when the replay was read.
    pub(crate) after: u64,
}

impl Skip {
    /// Whether `entry` was in the replay, given the order number of the last data loss.
    pub(crate) fn skips(&self, entry: &Entry, data_lost_at: u64) -> bool {
        entry.origin <= self.until && !(data_lost_at > self.after && entry.seq > data_lost_at)
    }
}
