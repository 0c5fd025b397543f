//! A real Rust SSE client against tower-sse: reqwest-eventsource's `EventSource`, which
//! reconnects and sends `Last-Event-ID` on its own, as a browser does. So resuming is proven
//! with a client the crate did not write: after the server drops the stream, the client gets
//! exactly the events published meanwhile; and an `AccessLayer` denial reaches it as
//! `InvalidStatusCode(403)`, with no retry.

use tower_sse_test_support::stream_server;

use tower_sse_test_support as support;

use axum::Router;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest_eventsource::{Error, Event as SseEvent, EventSource};
use serde::{Deserialize, Serialize};
use stream_server::Server;
use support::guard;
use tower::Layer;
use tower_sse::{AccessLayer, Broker, Event, SseService, access::Denied};

/// The JSON the `score` events carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Score {
    team: String,
    points: u32,
}

fn score(team: &str, points: u32) -> Score {
    Score {
        team: team.into(),
        points,
    }
}

/// `/stream` behind an access layer: `private.*` channels are forbidden.
fn app(broker: Broker) -> Router {
    let access = AccessLayer::new(|_: &http::request::Parts, channel: &str| {
        let verdict = match channel.starts_with("private.") {
            true => Err(Denied::forbidden("members only")),
            false => Ok(()),
        };
        std::future::ready(verdict)
    });
    Router::new().route_service("/stream", access.layer(SseService::new(broker)))
}

fn event_source(url: &str) -> EventSource {
    let client = support::client();
    EventSource::new(client.get(url)).unwrap()
}

async fn next(source: &mut EventSource) -> Result<SseEvent, Error> {
    guard("next event", source.next())
        .await
        .expect("the event source gave up")
}

/// The next item, which must be a message: `(event type, id, data as a Score)`.
async fn next_score(source: &mut EventSource) -> (String, String, Score) {
    match next(source).await {
        Ok(SseEvent::Message(message)) => {
            let data = serde_json::from_str(&message.data).expect("JSON data");
            (message.event, message.id, data)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn publish(broker: &Broker, event: Event) -> String {
    broker.publish("scores", event).await.unwrap()
}

fn score_event(score: &Score) -> Event {
    Event::default().event("score").json_data(score)
}

#[tokio::test]
async fn typed_events_then_resume_after_the_server_drops_the_stream() {
    let broker = Broker::builder().id_base(0).history(100).build();
    let mut server = Server::start(app(broker.clone())).await;
    let mut source = event_source(&format!("{}/stream?channel=scores", server.base));

    // Connect; typed events, JSON data read into a struct.
    assert!(matches!(next(&mut source).await, Ok(SseEvent::Open)));
    assert_eq!(server.streams(1).await[0].last_event_id, None);
    assert_eq!(broker.subscriber_count("scores"), 1);
    let first = [score("red", 1), score("blue", 1)];
    let mut ids = Vec::new();
    for s in &first {
        ids.push(publish(&broker, score_event(s)).await);
    }
    for (s, id) in first.iter().zip(&ids) {
        assert_eq!(
            next_score(&mut source).await,
            ("score".into(), id.clone(), s.clone())
        );
    }
    let plain = publish(&broker, Event::default().data("half time")).await;
    match next(&mut source).await {
        Ok(SseEvent::Message(message)) => {
            let got = (message.event.as_str(), message.id, message.data.as_str());
            assert_eq!(got, ("message", plain.clone(), "half time"));
        }
        other => panic!("expected a message, got {other:?}"),
    }

    // The server drops the connection. The client is not polled until the events below are
    // published, so it can't have reconnected yet: they are missed, and must be replayed.
    server.drop_streams().await;
    assert_eq!(broker.subscriber_count("scores"), 0, "the stream is gone");
    let missed = [score("red", 2), score("red", 3), score("blue", 2)];
    let mut missed_ids = Vec::new();
    for s in &missed {
        missed_ids.push(publish(&broker, score_event(s)).await);
    }
    match next(&mut source).await {
        Err(Error::Transport(_) | Error::StreamEnded) => {}
        other => panic!("expected the connection loss, got {other:?}"),
    }
    assert!(matches!(next(&mut source).await, Ok(SseEvent::Open)));
    let second = server.streams(2).await;
    assert_eq!(second[1].last_event_id.as_deref(), Some(plain.as_str()));
    assert_ne!(second[1].conn, second[0].conn, "a new connection");
    assert_eq!(broker.subscriber_count("scores"), 1, "reconnected");
    for (s, id) in missed.iter().zip(&missed_ids) {
        assert_eq!(
            next_score(&mut source).await,
            ("score".into(), id.clone(), s.clone())
        );
    }
    // Then live events, with nothing in between: no duplicate of the replay.
    let live = score("blue", 3);
    let id = publish(&broker, score_event(&live)).await;
    assert_eq!(
        next_score(&mut source).await,
        ("score".into(), id.clone(), live)
    );
    assert_eq!(source.last_event_id(), id);
}

#[tokio::test]
async fn denied_channel_is_invalid_status_403_without_retry() {
    let broker = Broker::builder().id_base(0).history(100).build();
    let server = Server::start(app(broker.clone())).await;
    let url = format!("{}/stream?channel=scores&channel=private.ops", server.base);
    let mut source = event_source(&url);
    match next(&mut source).await {
        Err(Error::InvalidStatusCode(status, res)) => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(guard("body", res.text()).await.unwrap(), "members only");
        }
        other => panic!("expected InvalidStatusCode(403), got {other:?}"),
    }
    assert!(
        guard("end", source.next()).await.is_none(),
        "a 403 is final: the client closes, no retry"
    );
    assert_eq!(broker.subscriber_count("scores"), 0);
    assert_eq!(broker.subscriber_count("private.ops"), 0);
}
