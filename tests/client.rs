//! A real Rust SSE client against tower-sse: reqwest-eventsource's `EventSource`, which
//! reconnects and sends `Last-Event-ID` on its own, as a browser does. So resuming is proven
//! with a client the crate did not write: after the server drops the stream, the client gets
//! exactly the events published meanwhile; and an `AccessLayer` denial reaches it as
//! `InvalidStatusCode(403)`, with no retry.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use futures_util::StreamExt;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request};
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use reqwest_eventsource::{Error, Event as SseEvent, EventSource};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::{Layer, ServiceExt};
use tower_sse::{access::Denied, AccessLayer, Broker, Event, SseService};

/// Hang guard only: nothing asserts on time.
async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

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

/// A `/stream` request the app answered: on which connection, with which `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq)]
struct StreamRequest {
    conn: usize,
    last_event_id: Option<String>,
}

/// The app on a free port, one task per connection, so the test can drop the connections
/// under the client, as a crash or a proxy would.
struct Server {
    url: String,
    /// Connection tasks, by connection number; `None` once dropped.
    conns: Arc<Mutex<Vec<Option<JoinHandle<()>>>>>,
    /// Every answered `/stream` request, in order.
    streams: watch::Receiver<Vec<StreamRequest>>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (streams_tx, streams) = watch::channel(Vec::new());
        let (tasks, streams_tx) = (conns.clone(), Arc::new(streams_tx));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut tasks = tasks.lock().unwrap();
                let conn = tasks.len();
                let (app, streams) = (app.clone(), streams_tx.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (app, streams) = (app.clone(), streams.clone());
                    // The recording layer: what the client sent, as it sent it.
                    let last_event_id = req
                        .headers()
                        .get("last-event-id")
                        .map(|id| id.to_str().unwrap().to_owned());
                    async move {
                        let res = app.oneshot(req).await;
                        streams.send_modify(|all| {
                            all.push(StreamRequest {
                                conn,
                                last_event_id,
                            })
                        });
                        res
                    }
                });
                let serve = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                tasks.push(Some(tokio::spawn(async move {
                    let _ = serve.await;
                })));
            }
        });
        Server {
            url,
            conns,
            streams,
        }
    }

    /// Waits until `n` `/stream` requests have been answered; returns them all.
    async fn streams(&mut self, n: usize) -> Vec<StreamRequest> {
        let all = guard(
            "stream request",
            self.streams.wait_for(|all| all.len() >= n),
        )
        .await;
        all.unwrap().clone()
    }

    /// Drops every connection, and returns once they are gone.
    async fn drop_connections(&self) {
        let tasks: Vec<_> = self
            .conns
            .lock()
            .unwrap()
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        assert!(!tasks.is_empty(), "no connection to drop");
        for task in tasks {
            task.abort();
            // Cancelled: the connection, its response body and its subscription are dropped.
            let _ = guard("connection drop", task).await;
        }
    }
}

fn event_source(url: &str) -> EventSource {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
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
    let broker = Broker::builder().history(100).build();
    let mut server = Server::start(app(broker.clone())).await;
    let mut source = event_source(&format!("{}/stream?channel=scores", server.url));

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
    server.drop_connections().await;
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
    let broker = Broker::builder().history(100).build();
    let server = Server::start(app(broker.clone())).await;
    let url = format!("{}/stream?channel=scores&channel=private.ops", server.url);
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
