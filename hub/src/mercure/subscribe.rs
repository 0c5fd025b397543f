//! `GET /.well-known/mercure?topic=S&topic=T`: the event stream of every update whose topics
//! match a topic selector, private ones only as the subscriber's token allows.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, request::Parts};
use http_body::{Frame, SizeHint};
use tower_sse::{
    SseBody, SubscribeError,
    access::jwt::{Claims, Selector},
    broker::Resume,
    channel::{form_decode, query_pairs},
};

use super::{
    Mercure,
    layout::{Route, RouteKey, is_exact, private},
    registry::Held,
};

/// What the query asks for.
#[derive(Debug, Default, PartialEq)]
struct Query {
    topics: Vec<String>,
    last_event_id: Option<String>,
}

impl Query {
    /// `topic` (repeatable, at least one) and `lastEventID`; other parameters (the token's
    /// `authorization`) are not this one's.
    fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query::default();
        for (key, value) in query_pairs(query) {
            let decode = |s| form_decode(s).map_err(|err| err.to_string());
            match &*decode(key)? {
                "topic" => parsed.topics.push(decode(value)?),
                // Taken in the guard; a second one is refused.
                "lastEventID" if parsed.last_event_id.replace(decode(value)?).is_some() => {
                    return Err("lastEventID given twice".into());
                }
                _ => {}
            }
        }
        if parsed.topics.is_empty() {
            return Err("missing \"topic\" parameter".into());
        }
        Ok(parsed)
    }
}

pub(super) async fn subscribe(State(mercure): State<Mercure>, req: Request) -> Response {
    mercure.registry.start();
    let (parts, _) = req.into_parts();
    match try_subscribe(&mercure, &parts).await {
        Ok(res) => res,
        Err(res) => res,
    }
}

async fn try_subscribe(mercure: &Mercure, parts: &Parts) -> Result<Response, Response> {
    let query = Query::parse(parts.uri.query().unwrap_or("")).map_err(bad_request)?;
    // An invalid token is refused, never taken as anonymous.
    let claims = match &mercure.hub.rights {
        Some(rights) => rights
            .subscriber_claims(parts)
            .map_err(|denied| denied.into_response())?,
        None => None,
    };
    let broker = &mercure.hub.broker;
    // A selector that is not a topic needs its route's channel to get each matching update
    // too: one event on several channels, which such a backend can't carry. Refused here, so
    // that no stream makes the publishes of its matches fail.
    if broker.publish_limit().is_some() {
        if let Some(selector) = query.topics.iter().find(|topic| !is_exact(topic)) {
            return Err(bad_request(format!(
                "topic {selector:?}: URI templates and \"*\" are not served by this hub, whose \
                 backend (a Redis Cluster, or flask-sse's Redis) carries each update on one \
                 channel; subscribe to exact topics"
            )));
        }
    }
    let (names, routes) = plan(&query.topics, claims.as_ref()).map_err(bad_request)?;
    let channels = broker
        .channel_rules()
        .channels(
            names
                .iter()
                .map(String::as_str)
                .chain(routes.iter().map(|r| &*r.channel)),
        )
        .map_err(|err| bad_request(format!("{err} (topics and their private channels)")))?;
    let held = mercure.registry.hold(routes).await.map_err(|_| {
        SseBody::refused(&SubscribeError::TooManySubscribers {
            channel: None,
            limit: super::registry::MAX_ROUTES,
        })
        .map(Body::new)
    })?;
    let last_event_id = match parts.headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| bad_request("Last-Event-ID is not text"))?
                .to_owned(),
        ),
        None => query.last_event_id,
    };
    let subscribed = match last_event_id.as_deref() {
        None | Some("") => broker.subscribe(&channels).await,
        Some("earliest") => broker.resume_earliest(&channels).await,
        Some(id) => broker.resume(&channels, id).await,
    };
    let subscription = subscribed.map_err(|err| SseBody::refused(&err).map(Body::new))?;
    // The id of the event before the first one sent; else `earliest`: a subscriber that asked
    // for another id sees the loss.
    let preceding = match subscription.resume() {
        Resume::Live | Resume::Complete => subscription.last_event_id().unwrap_or("earliest"),
        _ => "earliest",
    };
    let preceding =
        HeaderValue::from_str(preceding).unwrap_or_else(|_| HeaderValue::from_static("earliest"));
    let mut body = SseBody::new(subscription).keep_alive(mercure.keep_alive);
    if let Some(deadline) = claims.as_ref().and_then(Claims::deadline) {
        body = body.deadline(deadline);
    }
    let mut res = body.into_response();
    res.headers_mut().insert("last-event-id", preceding);
    Ok(res.map(|body| Body::new(Holding { body, _held: held })))
}

/// The channels of `topics` and the routes they need: exact topics by their channel, other
/// selectors by a route; with a token's `subscribe` claim, the private channels and routes it
/// allows.
fn plan(topics: &[String], claims: Option<&Claims>) -> Result<(Vec<String>, Vec<Route>), String> {
    let mut names = Vec::new();
    let mut keys = Vec::new();
    let selectors = topics
        .iter()
        .map(|s| Selector::parse(s).map_err(|err| format!("topic {s:?}: {err}")))
        .collect::<Result<Vec<_>, _>>()?;
    // The claims that compile: a malformed one allows nothing.
    let allowed: Vec<(&String, Selector)> = claims
        .and_then(Claims::subscribe)
        .unwrap_or_default()
        .iter()
        .filter_map(|claim| Some((claim, Selector::parse(claim).ok()?)))
        .collect();
    for (topic, selector) in topics.iter().zip(&selectors) {
        if is_exact(topic) {
            names.push(topic.clone());
        } else {
            keys.push(RouteKey::Public(topic.as_str().into()));
        }
        for (claim, claim_selector) in &allowed {
            if is_exact(topic) {
                // The private updates of this topic, when the claim allows it.
                if claim_selector.matches(topic) {
                    names.push(private(topic));
                }
            } else if is_exact(claim) {
                if selector.matches(claim) {
                    names.push(private(claim));
                }
            } else if *claim == "*" || *claim == topic {
                keys.push(RouteKey::Private(topic.as_str().into(), "*".into()));
            } else {
                keys.push(RouteKey::Private(
                    topic.as_str().into(),
                    claim.as_str().into(),
                ));
            }
        }
    }
    names.sort();
    names.dedup();
    keys.sort();
    keys.dedup();
    let routes = keys
        .into_iter()
        .map(|key| Route::new(key).map_err(|err| err.to_string()))
        .collect::<Result<_, _>>()?;
    Ok((names, routes))
}

fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, reason.into()).into_response()
}

/// The stream's body, holding its routes' counts until it is dropped.
struct Holding {
    body: SseBody,
    _held: Held,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(subscribe: &[&str]) -> Claims {
        serde_json::from_value(serde_json::json!({"mercure": {"subscribe": subscribe}})).unwrap()
    }

    fn topics(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_query_needs_a_topic() {
        let q = Query::parse("topic=a&topic=https%3A%2F%2Fe.com%2F%7Bid%7D&lastEventID=x&x=y");
        let expected = Query {
            topics: topics(&["a", "https://e.com/{id}"]),
            last_event_id: Some("x".into()),
        };
        assert_eq!(q, Ok(expected));
        assert!(Query::parse("").is_err());
        assert!(Query::parse("topic=a&lastEventID=1&lastEventID=2").is_err());
        assert!(Query::parse("topic=%zz").is_err());
    }

    #[test]
    fn exact_topics_are_channels_and_selectors_routes() {
        let (names, routes) = plan(&topics(&["a", "b/{id}", "*"]), None).unwrap();
        assert_eq!(names, ["a"]);
        let keys: Vec<_> = routes.iter().map(|r| r.key.clone()).collect();
        assert_eq!(
            keys,
            [
                RouteKey::Public("*".into()),
                RouteKey::Public("b/{id}".into())
            ]
        );
        assert!(plan(&topics(&["b/{id"]), None).is_err());
    }

    #[test]
    fn private_channels_as_the_claims_allow() {
        let (names, routes) = plan(
            &topics(&["a", "b", "u/{id}"]),
            Some(&claims(&["a", "u/7", "u/{id}", "{+any}"])),
        )
        .unwrap();
        // `a` by its own claim and by `{+any}`, `b` by `{+any}` only, `u/7` under `u/{id}`.
        assert_eq!(names, ["a", "b", "private.a", "private.b", "private.u/7"]);
        let keys: Vec<_> = routes.iter().map(|r| r.key.clone()).collect();
        assert_eq!(
            keys,
            [
                RouteKey::Public("u/{id}".into()),
                RouteKey::Private("u/{id}".into(), "*".into()),
                RouteKey::Private("u/{id}".into(), "{+any}".into()),
            ]
        );
        // No claim: nothing private.
        let (names, _) = plan(&topics(&["a"]), Some(&claims(&[]))).unwrap();
        assert_eq!(names, ["a"]);
    }
}
