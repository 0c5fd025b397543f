//! What a policy hands the service, over real sockets: a [`Grant`]'s deadline ends the stream
//! with the normal end of the chunked body, never before it, and a real `EventSource` client
//! then reconnects and is checked again; a grant's extension reaches the inner service; a
//! [`Deadline`] from a layer of one's own works as well.

use tower_sse_test_support as support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use futures_util::StreamExt;
use http::request::Parts;
use reqwest_eventsource::{Event as SseEvent, EventSource};
use support::{guard, raw_get, wait_until};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder};
use tower_sse::{
    AccessLayer, Broker, Event, SseService,
    access::{Denied, Grant},
    body::Deadline,
};

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `/stream` behind a policy that grants the first request until 1 s after its check and the
/// next ones for an hour, and records the deadlines it gave.
fn one_second(broker: &Broker, given: Arc<Mutex<Vec<Instant>>>) -> Router {
    let access = AccessLayer::new(move |_: &Parts, _: &str| {
        let mut given = given.lock().unwrap();
        let secs = if given.is_empty() { 1 } else { 3600 };
        let deadline = Instant::now() + Duration::from_secs(secs);
        given.push(deadline);
        async move { Ok::<_, Denied>(Grant::default().until(deadline)) }
    });
    let service = access.layer(SseService::new(broker.clone()));
    Router::new().route_service("/stream", service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grants_deadline_ends_the_chunked_body_cleanly_not_before() {
    let broker = Broker::builder().id_base(0).build();
    let given = Arc::new(Mutex::new(Vec::new()));
    let addr = serve(one_second(&broker, given.clone())).await;
    let response = raw_get(addr, "/stream?channel=t", &[], async || {
        wait_until("subscribed", || broker.subscriber_count("t") == 1).await;
        broker
            .publish("t", Event::default().data("in time"))
            .await
            .unwrap();
    })
    .await;
    let ended = Instant::now();
    let deadline = *given.lock().unwrap().first().expect("the policy was asked");
    assert!(ended >= deadline, "ended {:?} early", deadline - ended);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    // The event, then the last chunk: the body's normal end, not a dropped connection.
    let event = "data: in time\nid: 1\n\n";
    assert_eq!(body, format!("{:x}\r\n{event}\r\n0\r\n\r\n", event.len()));
    wait_until("unsubscribed", || broker.subscriber_count("t") == 0).await;
}

/// A `Deadline` a layer of one's own puts in the request ends the stream as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_from_a_layer_of_ones_own() {
    let broker = Broker::builder().id_base(0).build();
    let deadline = Instant::now() + Duration::from_millis(500);
    let service = ServiceBuilder::new()
        .map_request(move |mut req: http::Request<axum::body::Body>| {
            req.extensions_mut().insert(Deadline(deadline));
            req
        })
        .service(SseService::new(broker.clone()));
    let addr = serve(Router::new().route_service("/stream", service)).await;
    let response = raw_get(addr, "/stream", &[], async || {}).await;
    let ended = Instant::now();
    assert!(ended >= deadline, "ended {:?} early", deadline - ended);
    assert!(response.ends_with("\r\n\r\n0\r\n\r\n"), "{response:?}");
}

/// After the deadline a real `EventSource` client reconnects on its own, with its
/// `Last-Event-ID`, and its new request is checked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_reconnects_after_the_deadline_and_is_checked_again() {
    let broker = Broker::builder().id_base(0).history(10).build();
    let given = Arc::new(Mutex::new(Vec::new()));
    let addr = serve(one_second(&broker, given.clone())).await;
    let client = support::client();
    let mut source =
        EventSource::new(client.get(format!("http://{addr}/stream?channel=r"))).unwrap();
    let mut next = async || guard("event", source.next()).await.unwrap();
    assert!(matches!(next().await, Ok(SseEvent::Open)));
    broker
        .publish("r", Event::default().data("first"))
        .await
        .unwrap();
    match next().await {
        Ok(SseEvent::Message(message)) => assert_eq!(message.data, "first"),
        other => panic!("{other:?}"),
    }
    // The stream ends at the deadline: the client sees the end, and opens a new one.
    assert!(matches!(
        next().await,
        Err(reqwest_eventsource::Error::StreamEnded)
    ));
    assert!(matches!(next().await, Ok(SseEvent::Open)));
    assert_eq!(given.lock().unwrap().len(), 2, "checked again");
    broker
        .publish("r", Event::default().data("second"))
        .await
        .unwrap();
    match next().await {
        Ok(SseEvent::Message(message)) => {
            assert_eq!((&*message.data, &*message.id), ("second", "2"));
        }
        other => panic!("{other:?}"),
    }
}

#[derive(Debug, Clone)]
struct User(String);

/// What a policy learned reaches the inner service, in the request's extensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grants_extension_reaches_the_inner_service() {
    let access = AccessLayer::new(|parts: &Parts, _: &str| {
        let user = parts
            .headers
            .get("x-user")
            .map(|v| v.to_str().unwrap().to_owned());
        async move {
            let user = user.ok_or_else(|| Denied::unauthorized("who?"))?;
            Ok(Grant::default().extension(User(user)))
        }
    });
    let inner = tower::service_fn(|req: http::Request<axum::body::Body>| async move {
        let user = req.extensions().get::<User>().map(|u| u.0.clone());
        let channels = req.extensions().get::<tower_sse::Channels>().unwrap();
        let text = format!("{user:?} on {:?}", channels.iter().collect::<Vec<_>>());
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::from(text)))
    });
    let addr = serve(Router::new().route_service("/stream", access.layer(inner))).await;
    let client = support::client();
    let url = format!("http://{addr}/stream?channel=a,b");
    let res = support::send(client.get(&url).header("x-user", "ann")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(support::text(res).await, r#"Some("ann") on ["a", "b"]"#);
    let res = support::send(client.get(&url)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(support::text(res).await, "who?");
}
