//! The stream service over real sockets: a hyper server on 127.0.0.1:0, reqwest as the client,
//! eventsource-stream as an independent spec parser.

use tower_sse_test_support as support;

use std::{net::SocketAddr, time::Duration};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use support::{guard, wait_until};
use tower_sse::{Broker, Event, SseService};

async fn serve(service: SseService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route_service("/stream", service);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn open(addr: SocketAddr, query: &str) -> reqwest::Response {
    let res = reqwest::get(format!("http://{addr}/stream?{query}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

/// Every line break becomes LF, as the spec's parser reads them.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_data_round_trips_through_a_spec_parser() {
    let broker = Broker::builder().id_base(0).build();
    let addr = serve(SseService::new(broker.clone())).await;
    let mut events = open(addr, "channel=t").await.bytes_stream().eventsource();
    let cases = [
        "plain",
        "a\nb",
        "a\r\nb",
        "a\rb",
        "end\r",
        "\n\r",
        "",
        "\n\nmiddle\n\n",
        "  leading",
        ": colon",
        "data: fake",
        "héllo ✓ 🚀 مرحبا e\u{301}",
        "nul\0byte",
        &"x".repeat(100_000),
    ];
    for (i, data) in cases.iter().enumerate() {
        let id = format!("id:{i} ü");
        let event = Event::default()
            .event(format!("type {i}:x"))
            .id(&id)
            .data(*data);
        broker.publish("t", event).await.unwrap();
        let got = guard("event", events.next()).await.unwrap().unwrap();
        assert_eq!(got.data, normalised(data), "case {i}");
        assert_eq!(got.event, format!("type {i}:x"));
        assert_eq!(got.id, id);
    }
    // Invalid events are refused and never sent: the next valid one comes first.
    assert!(
        broker
            .publish("t", Event::default().id("a\nb"))
            .await
            .is_err()
    );
    assert!(
        broker
            .publish("t", Event::default().event("a\rb"))
            .await
            .is_err()
    );
    broker
        .publish("t", Event::default().data("after"))
        .await
        .unwrap();
    assert_eq!(
        guard("event", events.next()).await.unwrap().unwrap().data,
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_default_channel_and_isolation() {
    let broker = Broker::builder().id_base(0).build();
    let addr = serve(SseService::new(broker.clone())).await;
    let mut both = open(addr, "channel=a&channel=b")
        .await
        .bytes_stream()
        .eventsource();
    let mut default = open(addr, "").await.bytes_stream().eventsource();
    wait_until("subscribed", || broker.subscriber_count("sse") == 1).await;
    for (channel, data) in [("c", "other"), ("b", "1"), ("sse", "default"), ("a", "2")] {
        broker
            .publish(channel, Event::default().data(data))
            .await
            .unwrap();
    }
    assert_eq!(
        guard("event", both.next()).await.unwrap().unwrap().data,
        "1"
    );
    assert_eq!(
        guard("event", both.next()).await.unwrap().unwrap().data,
        "2"
    );
    assert_eq!(
        guard("event", default.next()).await.unwrap().unwrap().data,
        "default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_removes_subscriber_and_channel() {
    let broker = Broker::builder().id_base(0).build();
    let addr = serve(SseService::new(broker.clone())).await;
    let res = open(addr, "channel=gone").await;
    assert_eq!(broker.subscriber_count("gone"), 1);
    drop(res);
    wait_until("unsubscribed", || {
        broker.subscriber_count("gone") == 0 && broker.channel_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_arrives_and_close_ends_the_stream() {
    let broker = Broker::builder().id_base(0).build();
    let service = SseService::new(broker.clone()).keep_alive(Some(Duration::from_millis(100)));
    let addr = serve(service).await;
    let mut body = open(addr, "channel=k").await.bytes_stream();
    assert_eq!(
        &guard("frame", body.next()).await.unwrap().unwrap()[..],
        b":\n\n"
    );
    broker
        .publish("k", Event::default().data("last"))
        .await
        .unwrap();
    broker.close();
    let mut rest = Vec::new();
    while let Some(chunk) = guard("frame", body.next()).await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.contains("data: last\nid: 1\n\n"), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_delay_another() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::builder().id_base(0).buffer(4096).build();
    let addr = serve(SseService::new(broker.clone())).await;
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /stream?channel=s HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = open(addr, "channel=s").await.bytes_stream().eventsource();
    wait_until("subscribed", || broker.subscriber_count("s") == 2).await;
    let publisher = broker.clone();
    let data = "y".repeat(1024);
    let count = 2000;
    tokio::spawn(async move {
        for _ in 0..count {
            publisher
                .publish("s", Event::default().data(&data))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
    let mut last = 0u64;
    while last < count {
        let event = guard("event", reader.next()).await.unwrap().unwrap();
        let id: u64 = event.id.parse().unwrap();
        assert_eq!(id, last + 1, "every event, in order");
        last = id;
    }
    drop(stalled);
}
