//! The quickstart (`examples/quickstart.rs`) over real sockets: its router served on
//! `127.0.0.1:0`, reqwest as the client, eventsource-stream as the parser.

#[path = "../examples/quickstart/src/main.rs"]
#[allow(dead_code)]
mod quickstart;

use tower_sse_test_support as support;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use support::guard;
use tower_sse::Broker;

async fn serve(broker: Broker) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, quickstart::app(broker)).await });
    base
}

#[tokio::test]
async fn page_listens_for_greetings_on_the_stream() {
    let base = serve(Broker::builder().id_base(0).build()).await;
    let res = guard("response", reqwest::get(format!("{base}/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = guard("body", res.text()).await.unwrap();
    assert!(page.contains(r#"new EventSource("/stream")"#), "{page}");
    assert!(page.contains(r#"addEventListener("greeting""#), "{page}");
}

#[tokio::test]
async fn hello_publishes_a_greeting_to_every_stream() {
    let broker = Broker::builder().id_base(0).build();
    let base = serve(broker.clone()).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let res = guard("response", reqwest::get(format!("{base}/stream")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        streams.push(res.bytes_stream().eventsource());
    }
    assert_eq!(broker.subscriber_count("sse"), 2);

    let res = guard("response", reqwest::get(format!("{base}/hello")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer = guard("body", res.text()).await.unwrap();
    assert_eq!(answer, "Message sent! (id 1)\n");

    for stream in &mut streams {
        let event = guard("event", stream.next()).await.unwrap().unwrap();
        assert_eq!(event.event, "greeting");
        assert_eq!(event.id, "1");
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data, serde_json::json!({"message": "Hello!"}));
    }
}

#[tokio::test]
async fn hello_after_close_says_why_nothing_was_sent() {
    let broker = Broker::builder().id_base(0).build();
    let base = serve(broker.clone()).await;
    broker.close();
    let res = guard("response", reqwest::get(format!("{base}/hello")))
        .await
        .unwrap();
    assert_eq!(
        guard("body", res.text()).await.unwrap(),
        "Not sent: broker is closed\n"
    );
}
