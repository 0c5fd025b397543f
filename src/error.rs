//! One error per operation: [`PublishError`], [`SubscribeError`], [`ConnectError`].
//!
//! As in tokio's `sync::broadcast::error`, each operation has its own error type, so a caller
//! matches only what that operation can return: a publish is never refused for too many
//! subscribers, a subscribe never for a bad event. Each error knows the HTTP status a service
//! answers it with ([`PublishError::status`], [`SubscribeError::status`]), so every server
//! built on the crate maps them the same way.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use http::StatusCode;

use crate::{channel::ChannelError, event::EventError};

/// A boxed error from a backend (Redis unreachable, ...).
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// What a backend's publish fails with when it got no answer in time (or lost its connection
/// on the way): the event may or may not have been published. The broker answers it with
/// [`PublishError::Unknown`] rather than [`PublishError::Backend`]
/// ([`PublishError::from_backend`]). Here, beside the error it becomes, so that this module
/// names no backend.
#[derive(Debug)]
pub(crate) struct OutcomeUnknown(pub(crate) BoxError);

impl fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Transparent: says what went wrong, as the error it wraps.
impl StdError for OutcomeUnknown {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Why a publish failed. Nothing was published, except after [`PublishError::Unknown`].
///
/// ```
/// # use tower_sse::{Broker, Event, PublishError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// broker.close();
/// let err = broker.publish("sse", Event::default()).await.unwrap_err();
/// assert!(matches!(err, PublishError::Closed));
/// assert_eq!(err.to_string(), "broker is closed");
/// assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event can't be sent.
    Event(EventError),
    /// The channel name breaks the [`ChannelRules`](crate::ChannelRules).
    Channel(ChannelError),
    /// The publisher's id is longer than
    /// [`BrokerBuilder::max_id_len`](crate::BrokerBuilder::max_id_len): it could not come back
    /// as a `Last-Event-ID`.
    IdTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// [`Broker::close`](crate::Broker::close) was called.
    Closed,
    /// The event is larger than the backend carries: on flask-sse's Redis
    /// (`redis::flask_sse`, feature `redis`), a message over its limit, which every broker
    /// would drop. A service answers it with `413 Payload Too Large`.
    TooLarge {
        /// The limit, in bytes of the backend's message.
        limit: usize,
    },
    /// The backend could not take the event (Redis refused the connection or the command):
    /// it was surely not published. Worth a retry; a service answers it with
    /// `503 Service Unavailable`.
    Backend(Box<dyn StdError + Send + Sync>),
    /// The event was sent to the backend, but no answer came in time (Redis paused or
    /// partitioned, the connection lost on the way): it may have been published, now or once
    /// the backend comes back. A service answers it with `504 Gateway Timeout`.
    ///
    /// A retry with the same [`Event::id`](crate::Event::id) is safe on Redis: the same id and
    /// the same event on the same channel within 10 minutes are published once (see the
    /// `redis` module, feature `redis`). A retry of an event without an id may publish it
    /// twice.
    Unknown(Box<dyn StdError + Send + Sync>),
}

impl PublishError {
    /// The status a service answers this error with: `400 Bad Request` for bad input (the
    /// event or the channel name), `413 Payload Too Large` for an event
    /// [too large](PublishError::TooLarge) for the backend, `504 Gateway Timeout` when the outcome is
    /// [unknown](PublishError::Unknown) (the event may have been published), `503 Service
    /// Unavailable` otherwise (closed, backend down: nothing was published, worth a retry).
    ///
    /// ```
    /// # use tower_sse::{EventError, PublishError};
    /// let err = PublishError::Event(EventError::Id);
    /// assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    /// let err = PublishError::Unknown("timed out".into());
    /// assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            PublishError::Event(_) | PublishError::Channel(_) | PublishError::IdTooLong { .. } => {
                StatusCode::BAD_REQUEST
            }
            PublishError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::Closed | PublishError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
            PublishError::Unknown(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The error for a backend's failed publish: the backend's own refusal when it is a
    /// `PublishError` ([`PublishError::TooLarge`]), [`PublishError::Unknown`] when the backend
    /// says the event may have been published ([`OutcomeUnknown`]), else
    /// [`PublishError::Backend`].
    pub(crate) fn from_backend(err: BoxError) -> PublishError {
        match err.downcast::<PublishError>() {
            Ok(refused) => *refused,
            Err(err) if err.is::<OutcomeUnknown>() => PublishError::Unknown(err),
            Err(err) => PublishError::Backend(err),
        }
    }

    /// The `reason` label of [`PUBLISH_ERRORS`](crate::metrics::PUBLISH_ERRORS).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PublishError::Event(_) => "event",
            PublishError::Channel(_) => "channel",
            PublishError::IdTooLong { .. } => "id",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::Closed => "closed",
            PublishError::Backend(_) => "backend",
            PublishError::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Event(err) => fmt::Display::fmt(err, f),
            PublishError::Channel(err) => fmt::Display::fmt(err, f),
            PublishError::IdTooLong { limit } => write!(f, "id longer than {limit} bytes"),
            PublishError::TooLarge { limit } => {
                write!(f, "event larger than the backend's {limit} bytes")
            }
            PublishError::Closed => f.write_str("broker is closed"),
            PublishError::Backend(err) => write!(f, "backend unavailable: {err}"),
            PublishError::Unknown(err) => {
                write!(
                    f,
                    "backend did not answer, the event may be published: {err}"
                )
            }
        }
    }
}

impl StdError for PublishError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PublishError::Event(err) => Some(err),
            PublishError::Channel(err) => Some(err),
            PublishError::IdTooLong { .. }
            | PublishError::TooLarge { .. }
            | PublishError::Closed => None,
            PublishError::Backend(err) | PublishError::Unknown(err) => Some(&**err),
        }
    }
}

impl From<EventError> for PublishError {
    fn from(err: EventError) -> Self {
        PublishError::Event(err)
    }
}

impl From<ChannelError> for SubscribeError {
    fn from(err: ChannelError) -> Self {
        SubscribeError::Channel(err)
    }
}

impl From<ChannelError> for PublishError {
    fn from(err: ChannelError) -> Self {
        PublishError::Channel(err)
    }
}

/// Why a subscription (or a resume) was refused. A bad channel name is a `400 Bad Request`;
/// every other variant is worth a retry later, and a service answers it with
/// `503 Service Unavailable` and `Retry-After`.
///
/// ```
/// # use tower_sse::{Broker, SubscribeError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::builder().max_subscribers(0).build();
/// let channels = broker.channel_rules().parse_query(None).unwrap();
/// let err = broker.subscribe(&channels).await.unwrap_err();
/// assert!(matches!(err, SubscribeError::TooManySubscribers { channel: None, limit: 0 }));
/// assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A channel name breaks the broker's [`ChannelRules`](crate::ChannelRules) (a list
    /// checked with other rules, by an [`AccessLayer`](crate::AccessLayer), is checked again).
    Channel(ChannelError),
    /// [`Broker::close`](crate::Broker::close) was called.
    Closed,
    /// The broker is [draining](crate::Broker::drain): its streams are ending, and a client
    /// should reconnect elsewhere, or here after `retry_after`, drawn for each refusal so the
    /// retries spread. A service answers it with that `Retry-After`.
    Draining {
        /// A whole number of seconds, uniform in `1..=max(1, window in whole seconds)`.
        retry_after: Duration,
    },
    /// Subscribing would pass [`BrokerBuilder::max_subscribers`] (no `channel`) or
    /// [`BrokerBuilder::max_subscribers_per_channel`] on `channel`. A service answers it with
    /// `Retry-After`.
    ///
    /// [`BrokerBuilder::max_subscribers`]: crate::BrokerBuilder::max_subscribers
    /// [`BrokerBuilder::max_subscribers_per_channel`]: crate::BrokerBuilder::max_subscribers_per_channel
    TooManySubscribers {
        /// The full channel, or `None` for the broker's total.
        channel: Option<Arc<str>>,
        /// The limit reached.
        limit: usize,
    },
    /// The backend could not set the subscription up (Redis unreachable, ...).
    Backend(Box<dyn StdError + Send + Sync>),
}

impl SubscribeError {
    /// The status a service answers this error with: `400 Bad Request` for a bad channel
    /// name, else `503 Service Unavailable`, since a later retry may succeed.
    ///
    /// ```
    /// # use tower_sse::SubscribeError;
    /// assert_eq!(SubscribeError::Closed.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            SubscribeError::Channel(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` label of [`SUBSCRIBE_ERRORS`](crate::metrics::SUBSCRIBE_ERRORS).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SubscribeError::Channel(_) => "channel",
            // Shutting down, as `closed`: the metric's labels stay as documented.
            SubscribeError::Closed | SubscribeError::Draining { .. } => "closed",
            SubscribeError::TooManySubscribers { .. } => "too_many",
            SubscribeError::Backend(_) => "backend",
        }
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::Channel(err) => fmt::Display::fmt(err, f),
            SubscribeError::Closed => f.write_str("broker is closed"),
            SubscribeError::Draining { .. } => f.write_str("broker is draining"),
            SubscribeError::TooManySubscribers {
                channel: Some(channel),
                limit,
            } => write!(
                f,
                "too many subscribers on channel {channel} (limit {limit})"
            ),
            SubscribeError::TooManySubscribers {
                channel: None,
                limit,
            } => write!(f, "too many subscribers (limit {limit})"),
            SubscribeError::Backend(err) => write!(f, "backend unavailable: {err}"),
        }
    }
}

impl StdError for SubscribeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SubscribeError::Channel(err) => Some(err),
            SubscribeError::Closed
            | SubscribeError::Draining { .. }
            | SubscribeError::TooManySubscribers { .. } => None,
            SubscribeError::Backend(err) => Some(&**err),
        }
    }
}

/// Why a broker could not connect to its backend (feature `redis`): the URL is invalid, or
/// the server can't be reached. Names the server and its URL, with any password masked.
///
/// ```
/// # use tower_sse::ConnectError;
/// let err = ConnectError::new("Redis", "redis://:secret@127.0.0.1:1/", "Connection refused".into());
/// assert_eq!(
///     err.to_string(),
///     "can't connect to Redis at redis://:***@127.0.0.1:1/: Connection refused"
/// );
/// ```
#[derive(Debug)]
pub struct ConnectError {
    server: &'static str,
    url: String,
    source: Box<dyn StdError + Send + Sync>,
}

impl ConnectError {
    /// An error connecting to `server` (its product name) at `url`, for `source`. The
    /// password in `url`, if any, is masked.
    ///
    /// ```
    /// # use tower_sse::ConnectError;
    /// let err = ConnectError::new("Redis", "redis://u:pw@h/", "timed out".into());
    /// assert_eq!(err.url(), "redis://u:***@h/");
    /// ```
    pub fn new(
        server: &'static str,
        url: &str,
        source: Box<dyn StdError + Send + Sync>,
    ) -> ConnectError {
        ConnectError {
            server,
            url: mask_password(url),
            source,
        }
    }

    /// The URL, with its password masked.
    ///
    /// ```
    /// # use tower_sse::ConnectError;
    /// let err = ConnectError::new("Redis", "redis://h/", "timed out".into());
    /// assert_eq!(err.url(), "redis://h/");
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "can't connect to {} at {}: {}",
            self.server, self.url, self.source
        )
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// `scheme://user:password@host` -> `scheme://user:***@host`; anything else unchanged.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        for (url, masked) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("rediss://user:p@ss@h/", "rediss://user:***@h/"),
            ("redis://user@h/", "redis://user@h/"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(mask_password(url), masked, "{url}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            PublishError::Channel(ChannelError::Empty).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            PublishError::Backend("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let unknown = PublishError::from_backend(Box::new(OutcomeUnknown("timed out".into())));
        assert!(matches!(unknown, PublishError::Unknown(_)));
        assert_eq!(unknown.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            unknown.to_string(),
            "backend did not answer, the event may be published: timed out"
        );
        let refused = PublishError::from_backend("connection refused".into());
        assert!(matches!(refused, PublishError::Backend(_)));
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let full = SubscribeError::TooManySubscribers {
            channel: None,
            limit: 1,
        };
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
