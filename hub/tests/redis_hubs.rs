//! Two hub processes (the binary as shipped, built with the `redis` feature) on one private
//! `redis-server`: they share channels, ids and history. Without `redis-server` the test says so
//! on stderr and passes, unless `TOWER_SSE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use tower_sse_test_support::{guard, redis_server};

/// The hub binary in a child process (`tests/support/hub_process.rs`), killed on drop.
#[path = "support/hub_process.rs"]
mod hub_process;

/// The hub binary on Redis, in a process of its own.
struct HubProcess(hub_process::HubProcess);

impl HubProcess {
    async fn start(redis_url: &str) -> HubProcess {
        let args = ["--redis-url", redis_url, "--keep-alive", "0"];
        HubProcess(hub_process::HubProcess::start(&args).await)
    }

    async fn publish(&self, client: &reqwest::Client, channel: &str, data: &str) -> String {
        let res = client
            .post(self.0.url(&format!("/publish?channel={channel}")))
            .body(data.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
        let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// A stream; its response has come, so its subscription exists.
    async fn events(
        &self,
        client: &reqwest::Client,
        channels: &str,
        last_event_id: Option<&str>,
    ) -> impl futures_util::Stream<Item = eventsource_stream::Event> + Unpin {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let mut req = client.get(self.0.url(&format!("/events?channel={channels}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.bytes_stream()
            .eventsource()
            .map(|event| event.expect("a well-formed event"))
    }
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = eventsource_stream::Event> + Unpin),
) -> (String, String) {
    use futures_util::StreamExt;
    let event = guard("next event over HTTP", stream.next())
        .await
        .expect("the stream ended");
    (event.id, event.data)
}

/// Two hub processes on one Redis: what is published on B reaches a stream on A, and a client
/// that leaves A and reconnects to B with `Last-Event-ID` gets exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hub_processes_share_channels_and_history() {
    let redis = redis_server!();
    let url = redis.url();
    let (a, b) = tokio::join!(HubProcess::start(&url), HubProcess::start(&url));
    let client = reqwest::Client::new();

    let mut on_a = a.events(&client, "news,sport", None).await;
    let mut seen = Vec::new();
    for i in 1..=3 {
        let channel = ["news", "sport"][i % 2];
        let id = b.publish(&client, channel, &format!("live{i}")).await;
        seen.push((id, format!("live{i}")));
    }
    // Published on A too: one order for everything.
    let id = a.publish(&client, "news", "live4").await;
    seen.push((id, "live4".to_owned()));
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(next_event(&mut on_a).await);
    }
    assert_eq!(received, seen);
    drop(on_a);

    // Offline: missed events published on both instances, and one on a channel not asked for.
    let mut missed = Vec::new();
    for i in 1..=5 {
        let hub = if i % 2 == 0 { &a } else { &b };
        let channel = ["news", "sport"][i % 2];
        let id = hub.publish(&client, channel, &format!("missed{i}")).await;
        missed.push((id, format!("missed{i}")));
    }
    b.publish(&client, "weather", "not asked for").await;

    let last = &seen.last().unwrap().0;
    let mut on_b = b.events(&client, "news,sport", Some(last)).await;
    let mut replayed = Vec::new();
    for _ in 0..missed.len() {
        replayed.push(next_event(&mut on_b).await);
    }
    assert_eq!(replayed, missed, "exactly the missed events, in order");
    // And then live ones, with nothing sent twice in between.
    let id = a.publish(&client, "sport", "after").await;
    assert_eq!(next_event(&mut on_b).await, (id, "after".to_owned()));
}
