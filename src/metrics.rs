//! Counters and gauges, through the [`metrics`] facade.
//!
//! tower-sse records them with whatever recorder the application installs
//! (`metrics-exporter-prometheus`, StatsD, ...), and costs next to nothing without one. The
//! [`Broker`](crate::Broker) takes its handles when it is built, so **install the recorder
//! before building the broker**; per-channel gauges are taken when a channel is created.
//!
//! | name | kind | labels | what |
//! |------|------|--------|------|
//! | [`SUBSCRIBERS`] | gauge | | open subscriptions (a stream on several channels counts once) |
//! | [`CHANNEL_SUBSCRIBERS`] | gauge | `channel` | subscribers of one channel (opt-in: [`channel_metrics`](crate::BrokerBuilder::channel_metrics)) |
//! | [`CHANNELS`] | gauge | | channels with an entry (subscribers or history) |
//! | [`RETAINED_BYTES`] | gauge | | encoded bytes the channels keep (see [`max_retained_bytes`](crate::BrokerBuilder::max_retained_bytes)) |
//! | [`PUBLISHED`] | counter | | events published |
//! | [`DELIVERED`] | counter | | events handed to streams (one per subscriber and event) |
//! | [`LAGGED`] | counter | | times a subscriber fell behind its buffer |
//! | [`DROPPED`] | counter | | events lagging subscribers did not get |
//! | [`PUBLISH_ERRORS`] | counter | `reason` | publishes refused: `event`, `channel`, `id`, `closed`, `backend`, `unknown` (no answer: may be published) |
//! | [`SUBSCRIBE_ERRORS`] | counter | `reason` | subscriptions refused: `channel`, `too_many`, `closed`, `backend` |
//! | [`DENIED`] | counter | `status` | requests an [`AccessLayer`](crate::AccessLayer) denied |
//! | [`FLASK_SSE_DROPPED`] | counter | `reason` | messages on flask-sse's Redis dropped (`redis::flask_sse`, feature `redis`): `too_large`, `json`, `data`, `type`, `id`, `retry` |
//!
//! The `channel` label is off by default: it would take a value per channel name any client
//! makes up, and a recorder keeps a series after its channel is gone. With
//! [`channel_metrics`](crate::BrokerBuilder::channel_metrics) on, bound the names, or let the
//! recorder forget idle series (metrics-exporter-prometheus: `idle_timeout`).
//!
//! ```
//! use tower_sse::{metrics, Broker};
//!
//! // Install a recorder first (here none: everything is a no-op), then build the broker.
//! let broker = Broker::new();
//! assert_eq!(metrics::SUBSCRIBERS, "sse_subscribers");
//! ```

use ::metrics::{Counter, Gauge};

/// Gauge: open subscriptions.
pub const SUBSCRIBERS: &str = "sse_subscribers";
/// Gauge, label `channel`: subscribers of that channel.
pub const CHANNEL_SUBSCRIBERS: &str = "sse_channel_subscribers";
/// Gauge: channels with an entry.
pub const CHANNELS: &str = "sse_channels";
/// Gauge: encoded bytes the channels keep.
pub const RETAINED_BYTES: &str = "sse_retained_bytes";
/// Counter: events published.
pub const PUBLISHED: &str = "sse_events_published_total";
/// Counter: events handed to streams, one per subscriber and event.
pub const DELIVERED: &str = "sse_events_delivered_total";
/// Counter: times a subscriber fell behind its buffer.
pub const LAGGED: &str = "sse_subscribers_lagged_total";
/// Counter: events lagging subscribers did not get.
pub const DROPPED: &str = "sse_events_dropped_total";
/// Counter, label `reason`: publishes refused.
pub const PUBLISH_ERRORS: &str = "sse_publish_errors_total";
/// Counter, label `reason`: subscriptions refused.
pub const SUBSCRIBE_ERRORS: &str = "sse_subscribe_errors_total";
/// Counter, label `status`: requests an access layer denied.
pub const DENIED: &str = "sse_access_denied_total";
/// Counter, label `reason`: messages on flask-sse's Redis that could not be served, dropped.
pub const FLASK_SSE_DROPPED: &str = "sse_flask_sse_dropped_total";

/// A broker's handles, taken once so that the hot paths only add to atomics.
pub(crate) struct Metrics {
    pub(crate) subscribers: Gauge,
    pub(crate) channels: Gauge,
    pub(crate) retained: Gauge,
    pub(crate) published: Counter,
    pub(crate) delivered: Counter,
    pub(crate) lagged: Counter,
    pub(crate) dropped: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            subscribers: ::metrics::gauge!(SUBSCRIBERS),
            channels: ::metrics::gauge!(CHANNELS),
            retained: ::metrics::gauge!(RETAINED_BYTES),
            published: ::metrics::counter!(PUBLISHED),
            delivered: ::metrics::counter!(DELIVERED),
            lagged: ::metrics::counter!(LAGGED),
            dropped: ::metrics::counter!(DROPPED),
        }
    }
}

/// The gauge of one channel's subscribers.
pub(crate) fn channel_subscribers(name: &str) -> Gauge {
    ::metrics::gauge!(CHANNEL_SUBSCRIBERS, "channel" => name.to_owned())
}

/// Counts a refused publish; `reason` is the error's label.
pub(crate) fn publish_error(reason: &'static str) {
    ::metrics::counter!(PUBLISH_ERRORS, "reason" => reason).increment(1);
}

/// Counts a refused subscription; `reason` is the error's label.
pub(crate) fn subscribe_error(reason: &'static str) {
    ::metrics::counter!(SUBSCRIBE_ERRORS, "reason" => reason).increment(1);
}

pub(crate) fn denied(status: http::StatusCode) {
    ::metrics::counter!(DENIED, "status" => status.as_str().to_owned()).increment(1);
}

/// Counts a dropped flask-sse message; `reason` is its label.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the flask-sse backend uses it
pub(crate) fn flask_sse_dropped(reason: &'static str) {
    ::metrics::counter!(FLASK_SSE_DROPPED, "reason" => reason).increment(1);
}
