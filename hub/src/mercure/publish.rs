//! `POST /.well-known/mercure`: an update, as a form (`topic`, repeatable; `data`, `private`,
//! `id`, `type`, `retry`), published once to its topics' channels and the routes they match;
//! answered with its id as `text/plain`.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use tower_sse::{
    Event,
    access::Denied,
    channel::{form_decode, query_pairs},
};

use super::{Mercure, layout::private};
use crate::publish::{bad_request, may_publish, parse_retry, publisher, read_body};

/// An update, as the form says it.
#[derive(Debug, Default, PartialEq)]
struct Update {
    topics: Vec<String>,
    data: Option<String>,
    private: bool,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<Duration>,
}

impl Update {
    /// The form: `application/x-www-form-urlencoded`, `+` a space. `topic` is repeatable (the
    /// first is the canonical topic, the others alternates); the other fields once at most;
    /// unknown fields are passed over, as Mercure does.
    fn parse(form: &str) -> Result<Update, String> {
        let mut update = Update::default();
        let mut retry = None;
        for (key, value) in query_pairs(form) {
            let decode = |s| form_decode(s).map_err(|err| err.to_string());
            let key = decode(key)?;
            let slot = match &*key {
                "topic" => {
                    update.topics.push(decode(value)?);
                    continue;
                }
                "private" => {
                    // Present means private, as Mercure reads it (`private=on`).
                    update.private = true;
                    continue;
                }
                "data" => &mut update.data,
                "id" => &mut update.id,
                "type" => &mut update.kind,
                "retry" => &mut retry,
                _ => continue,
            };
            if slot.replace(decode(value)?).is_some() {
                return Err(format!("{key:?} given twice"));
            }
        }
        if update.topics.is_empty() {
            return Err("missing \"topic\" field".into());
        }
        update.retry = retry.as_deref().map(parse_retry).transpose()?;
        Ok(update)
    }

    /// The event: the given id, else a new `urn:uuid:`.
    fn event(&self) -> Event {
        let id = match &self.id {
            Some(id) => id.clone(),
            None => format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        };
        let mut event = Event::default()
            .data(self.data.clone().unwrap_or_default())
            .id(id);
        if let Some(kind) = &self.kind {
            event = event.event(kind.clone());
        }
        if let Some(retry) = self.retry {
            event = event.retry(retry);
        }
        event
    }
}

pub(super) async fn publish(State(mercure): State<Mercure>, req: Request) -> Response {
    mercure.registry.start();
    match try_publish(&mercure, req).await {
        Ok(id) => {
            let mut res = id.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        }
        Err(res) => {
            if res.status().is_server_error() {
                tracing::warn!(status = %res.status(), "Mercure publish failed");
            }
            res
        }
    }
}

async fn try_publish(mercure: &Mercure, req: Request) -> Result<String, Response> {
    let hub = &mercure.hub;
    let (parts, body) = req.into_parts();
    // As `/publish`: the credentials (401), the form (400), the rights on each topic (403).
    let publisher = publisher(hub, &parts).map_err(Denied::into_response)?;
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        let form = kind
            .to_str()
            .ok()
            .and_then(|kind| kind.split(';').next())
            .is_some_and(|kind| {
                kind.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(bad_request(
                "the update must be a form: Content-Type: application/x-www-form-urlencoded",
            ));
        }
    }
    let body = read_body(body).await?;
    let form = std::str::from_utf8(&body).map_err(|_| bad_request("the form is not UTF-8"))?;
    let update = Update::parse(form).map_err(bad_request)?;
    for topic in &update.topics {
        may_publish(hub, publisher.as_ref(), &parts, topic).map_err(Denied::into_response)?;
    }
    if update.private
        && hub.token.is_none()
        && !hub.rights.as_ref().is_some_and(|r| r.has_subscriber())
    {
        return Err((
            StatusCode::FORBIDDEN,
            "a private update needs a subscriber key (--subscriber-jwt-key or --jwt-key) or \
             --token: without, nobody could be told apart to receive it",
        )
            .into_response());
    }
    let mut names: Vec<Arc<str>> = update
        .topics
        .iter()
        .map(|topic| match update.private {
            false => Arc::from(topic.as_str()),
            true => Arc::from(private(topic)),
        })
        .collect();
    // The topics as channels: valid names, and no more of them than a stream may name.
    let rules = hub.broker.channel_rules();
    rules
        .channels(names.iter().map(|n| &**n))
        .map_err(|err| bad_request(format!("{err} (the topics)")))?;
    match hub.broker.publish_limit() {
        // No stream holds a route on such a backend (see `subscribe`).
        Some(limit) if names.len() > limit => {
            let most = match limit {
                1 => "one topic".to_owned(),
                _ => format!("{limit} topics"),
            };
            return Err(bad_request(format!(
                "an update has {most} at most on this hub, whose backend (a Redis Cluster, or \
                 flask-sse's Redis) carries each update on one channel"
            )));
        }
        Some(_) => {}
        // The routes they match, as many as there are (at most `MAX_ROUTES`).
        None => mercure
            .registry
            .channels(&update.topics, update.private, &mut names),
    }
    let channels = rules
        .clone()
        .max_channels(names.len())
        .channels(names.iter().map(|n| &**n))
        .map_err(|err| bad_request(err.to_string()))?;
    hub.broker
        .publish_to(&channels, update.event())
        .await
        .map_err(|err| (err.status(), err.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_as_mercure_clients_send_it() {
        let update = Update::parse(
            "topic=https%3A%2F%2Fe.com%2Fbooks%2F1&topic=books&data=a+b%0A%0Ac&private=on\
             &id=x&type=t&retry=5&unknown=1",
        )
        .unwrap();
        let expected = Update {
            topics: vec!["https://e.com/books/1".into(), "books".into()],
            data: Some("a b\n\nc".into()),
            private: true,
            id: Some("x".into()),
            kind: Some("t".into()),
            retry: Some(Duration::from_millis(5)),
        };
        assert_eq!(update, expected);
        for bad in [
            "data=x",
            "topic=a&id=1&id=2",
            "topic=a&retry=-1",
            "topic=%zz",
        ] {
            assert!(Update::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_update_without_an_id_gets_a_urn_uuid() {
        let update = Update::parse("topic=a").unwrap();
        let id = update.event().get_id().unwrap().to_owned();
        assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
        assert_ne!(update.event().get_id(), Some(&*id));
    }
}
