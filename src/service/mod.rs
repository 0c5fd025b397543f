//! [`SseService`]: the Tower service that answers a request with an event stream.
//!
//! For every request it reads the channel list (from the [`AccessLayer`](crate::AccessLayer)'s
//! checked list when there is one, else from the query with [`ChannelRules`]), subscribes to
//! those channels and answers at once with `200 OK` and a streaming [`SseBody`]:
//!
//! ```text
//! content-type: text/event-stream
//! cache-control: no-cache
//! x-accel-buffering: no
//! ```
//!
//! `x-accel-buffering: no` stops nginx from buffering the stream. `text/event-stream` is also
//! a content type tower-http's `CompressionLayer` skips by default: compressing would not hold
//! events back (the encoder flushes whenever the body has nothing more to give), but every
//! open stream would keep a compressor's state (hundreds of KiB for deflate) for its whole life
//! to save a few bytes per event.
//!
//! The subscription exists before the response is returned, so a client that has the response
//! headers misses no event published after that. With the in-process broker it is made in
//! [`call`](tower::Service::call) itself, and the response future is ready at once.
//!
//! A [`Deadline`] in the request's extensions ends the stream then, cleanly: an
//! [`AccessPolicy`](crate::access::AccessPolicy) puts one there with
//! [`Grant::until`](crate::access::Grant::until) (a token's expiry), or any layer of your own.
//!
//! # Refusals
//!
//! A subscription the broker refuses for a while is a `503 Service Unavailable` with the reason
//! and a `Retry-After` drawn for each response, so that the clients refused together don't all
//! come back together: while the broker [drains](crate::Broker::drain) over a window `W`,
//! uniform in `1..=max(1, W)` whole seconds ([`SubscribeError::Draining`]); otherwise (too many
//! subscribers, backend down, closed) uniform in `1..=10`. `EventSource` ignores it (it retries
//! after its own reconnection time), other clients read it.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode};

mod future;

pub use self::future::ResponseFuture;
use self::future::State;
use crate::{
    body::{Deadline, SseBody},
    broker::{Broker, Resume, Subscription},
    channel::{ChannelRules, Channels, form_decode, query_pairs},
    error::SubscribeError,
    event::Event,
    rate_limited::RateLimited,
    response::plain,
};

/// Refused subscriptions are logged at most once a second, with how many were refused since:
/// a storm of refusals (a limit reached, the backend down) must not flood the log. Each is
/// counted in [`SUBSCRIBE_ERRORS`](crate::metrics::SUBSCRIBE_ERRORS) anyway.
static REFUSALS: RateLimited = RateLimited::new(Duration::from_secs(1));

/// A [`tower::Service`] that streams server-sent events from a [`Broker`]'s channels.
///
/// Clients choose channels with `?channel=` (repeatable, or comma-separated; default `sse`).
/// Cheap to clone: a clone shares the broker. Never fails (`Error = Infallible`): a bad channel
/// list is a `400 Bad Request` with the reason, a closed or draining broker a `503 Service
/// Unavailable`, and so are [too many subscribers](SubscribeError::TooManySubscribers), with a
/// random `Retry-After` (see [Refusals](crate::service#refusals)).
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{Broker, SseService};
///
/// let broker = Broker::new();
/// let service = SseService::new(broker.clone()).keep_alive(Some(Duration::from_secs(30)));
/// ```
///
/// Served with axum:
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_sse::{Broker, SseService};
///
/// let broker = Broker::new();
/// let app: Router = Router::new()
///     .route_service("/stream", SseService::new(broker.clone()))
///     .route("/", get(|| async { "hello" }));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SseService {
    broker: Broker,
    keep_alive: Option<Duration>,
    rules: ChannelRules,
    gap_event: Option<Event>,
    max_last_event_id: usize,
}

impl SseService {
    /// A service streaming from `broker`, with a keep-alive comment after 15 s of silence and
    /// the broker's channel rules.
    ///
    /// ```
    /// let service = tower_sse::SseService::new(tower_sse::Broker::new());
    /// ```
    pub fn new(broker: Broker) -> SseService {
        let rules = broker.channel_rules().clone();
        let max_last_event_id = broker.max_id_len();
        SseService {
            broker,
            keep_alive: Some(Duration::from_secs(15)),
            rules,
            gap_event: Some(Event::default().event("gap")),
            max_last_event_id,
        }
    }

    /// The event sent first on a resumed stream whose replay is incomplete
    /// ([`Resume::Gap`]) or whose id is unknown
    /// ([`Resume::Unknown`]), so the page knows to reload its state
    /// (default: an event of type `gap` whose data is `gap` or `unknown`; `None` sends nothing).
    /// Its data is replaced by the reason; it is sent without an id, so the client's
    /// `Last-Event-ID` stays where it was.
    ///
    /// ```
    /// # use tower_sse::Event;
    /// # let service = tower_sse::SseService::new(tower_sse::Broker::new());
    /// let service = service.gap_event(Some(Event::default().event("reload")));
    /// ```
    pub fn gap_event(mut self, event: Option<Event>) -> Self {
        self.gap_event = event;
        self
    }

    /// The longest `Last-Event-ID` accepted, in bytes (default: the broker's
    /// [`max_id_len`](crate::BrokerBuilder::max_id_len), 1,024 unless set, so that every id
    /// the broker takes comes back); a longer one is a `400 Bad Request`. Keep it at least the
    /// broker's.
    ///
    /// ```
    /// # let service = tower_sse::SseService::new(tower_sse::Broker::new());
    /// let service = service.max_last_event_id(128);
    /// ```
    pub fn max_last_event_id(mut self, bytes: usize) -> Self {
        self.max_last_event_id = bytes;
        self
    }

    /// How long a stream may be silent before a keep-alive comment is sent (default 15 s;
    /// `None` sends none).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let service = tower_sse::SseService::new(tower_sse::Broker::new());
    /// let service = service.keep_alive(Some(Duration::from_secs(5)));
    /// ```
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        self.keep_alive = every;
        self
    }

    /// The rules for the `channel` parameters (default: the broker's). Give an
    /// [`AccessLayer`](crate::AccessLayer) in front the same rules.
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// # let service = tower_sse::SseService::new(tower_sse::Broker::new());
    /// let service = service.channel_rules(ChannelRules::default().default_channel("news"));
    /// ```
    pub fn channel_rules(mut self, rules: ChannelRules) -> Self {
        self.rules = rules;
        self
    }

    /// The broker this service streams from.
    ///
    /// ```
    /// # let broker = tower_sse::Broker::new();
    /// let service = tower_sse::SseService::new(broker.clone());
    /// assert_eq!(service.broker().channel_count(), broker.channel_count());
    /// ```
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Reads the request and subscribes: at once in process, in the response future through
    /// a backend (which may wait for it).
    fn respond<B>(&self, req: &Request<B>) -> State {
        let parsed;
        let channels = match req.extensions().get::<Channels>() {
            Some(checked) => checked,
            None => match self.rules.parse_query(req.uri().query()) {
                Ok(channels) => {
                    parsed = channels;
                    &parsed
                }
                Err(err) => return State::ready(plain(StatusCode::BAD_REQUEST, err.to_string())),
            },
        };
        let last_event_id = match last_event_id(req, self.max_last_event_id) {
            Ok(id) => id,
            Err(reason) => return State::ready(plain(StatusCode::BAD_REQUEST, reason)),
        };
        let stream = StreamSettings {
            keep_alive: self.keep_alive,
            deadline: req.extensions().get::<Deadline>().copied(),
        };
        match self
            .broker
            .subscribe_now(channels, last_event_id.as_deref())
        {
            Some(subscribed) => {
                State::ready(self.answer(subscribed, channels, last_event_id.as_deref(), stream))
            }
            None => {
                let service = self.clone();
                let channels = channels.clone();
                State::Subscribing {
                    future: Box::pin(async move {
                        let subscribed = match &last_event_id {
                            Some(id) => service.broker.resume(&channels, id).await,
                            None => service.broker.subscribe(&channels).await,
                        };
                        service.answer(subscribed, &channels, last_event_id.as_deref(), stream)
                    }),
                }
            }
        }
    }

    /// The response to a subscription, or to its refusal.
    fn answer(
        &self,
        subscribed: Result<Subscription, SubscribeError>,
        channels: &Channels,
        last_event_id: Option<&str>,
        stream: StreamSettings,
    ) -> Response<SseBody> {
        let subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(err) => {
                if let Some(suppressed) = REFUSALS.due() {
                    tracing::warn!(%err, suppressed, "subscribe refused");
                }
                return SseBody::refused(&err);
            }
        };
        tracing::debug!(channels = ?channels.iter().collect::<Vec<_>>(), ?last_event_id, "subscribe");
        let first = match (subscription.resume(), &self.gap_event) {
            (Resume::Gap, Some(event)) => Some(event.clone().data("gap").encode(None)),
            (Resume::Unknown, Some(event)) => Some(event.clone().data("unknown").encode(None)),
            _ => None,
        };
        SseBody::stream(subscription, stream.keep_alive, first, stream.deadline).into_response()
    }
}

/// What a stream's body is given besides its subscription.
#[derive(Clone, Copy)]
struct StreamSettings {
    keep_alive: Option<Duration>,
    deadline: Option<Deadline>,
}

/// The `Last-Event-ID` header, or else the `lastEventId` query parameter (for clients that
/// can't set headers). An empty one is none, as the spec's `EventSource` sends none then.
fn last_event_id<B>(req: &Request<B>, max: usize) -> Result<Option<String>, String> {
    let id = match req.headers().get("last-event-id") {
        Some(value) => {
            if value.len() > max {
                return Err(format!("Last-Event-ID longer than {max} bytes"));
            }
            // Browsers send the id as they got it, in UTF-8 (the spec's `lastEventId`), so
            // any id the broker sent comes back.
            std::str::from_utf8(value.as_bytes())
                .map_err(|_| "Last-Event-ID is not UTF-8".to_owned())?
                .to_owned()
        }
        None => {
            let query = req.uri().query().unwrap_or("");
            let Some((_, value)) = query_pairs(query).find(|(key, _)| *key == "lastEventId") else {
                return Ok(None);
            };
            if value.len() > 3 * max {
                return Err(format!("lastEventId longer than {max} bytes"));
            }
            let id = form_decode(value).map_err(|err| err.to_string())?;
            if id.len() > max {
                return Err(format!("lastEventId longer than {max} bytes"));
            }
            id
        }
    };
    Ok((!id.is_empty()).then_some(id))
}

impl<B> tower::Service<Request<B>> for SseService {
    type Response = Response<SseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture::new(self.respond(&req))
    }
}

#[cfg(test)]
mod tests;
