//! `examples/hub.rs` (a hub of your own, on both crates) over a real socket: reqwest as the
//! client, eventsource-stream as the parser.

#[path = "../examples/hub.rs"]
#[allow(dead_code)]
mod hub_example;

use std::future::IntoFuture;

use tokio::net::TcpListener;
use tower_sse::Broker;
use tower_sse_test_support::{client, events::Events, send, text};

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The hub's routes and the example's own `/subscribers` beside them.
#[tokio::test]
async fn hub_example_serves_the_hub_and_its_own_route() {
    let broker = Broker::builder().id_base(0).build();
    let (listener, addr) = bind().await;
    let app = hub_example::app(broker.clone());
    tokio::spawn(axum::serve(listener, app.into_make_service()).into_future());
    let (base, client) = (format!("http://{addr}"), client());
    let count = || send(client.get(format!("{base}/subscribers?channel=news")));
    assert_eq!(text(count().await).await, "0");
    let mut events = Events::open(client.get(format!("{base}/events?channel=news"))).await;
    assert_eq!(text(count().await).await, "1");
    let res = send(
        client
            .post(format!("{base}/publish?channel=news"))
            .body("Hello!"),
    )
    .await;
    assert_eq!(text(res).await, r#"{"id":"1"}"#);
    let event = events.expect().await;
    assert_eq!((event.data.as_str(), event.id.as_str()), ("Hello!", "1"));
}
