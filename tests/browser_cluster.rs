//! A stream over channels on every shard of a Redis Cluster, in a real browser: Chromium's own
//! `EventSource` on a page, served by an instance on a 3-master cluster (started by the test),
//! with events published by another instance. It shows what the cluster's resume rests on: the
//! stream's positions (an `id:` without data, sent after each batch) dispatch no event, yet
//! become the `EventSource`'s last event id, which it sends back when it reconnects after a
//! dropped connection; and that from them, every channel resumes with exactly the events it
//! missed, while each event shows the page its own channel's id.
//!
//! Needs `redis-server` and `redis-cli` (7 or later), `/usr/bin/chromium` and `chromedriver`;
//! without them the test says so and passes, unless `TOWER_SSE_REQUIRE_REDIS=1` or
//! `TOWER_SSE_REQUIRE_BROWSER=1`.
#![cfg(feature = "redis")]

use std::collections::BTreeSet;

use axum::{Router, response::Html, routing::get};
use fantoccini::Client as Browser;
use tower_sse::{Broker, Event, SseService, redis::cluster};
use tower_sse_test_support::{
    chromium::{Chromedriver, browser_tools, open_browser},
    guard,
    redis_cluster::{RedisCluster, redis_cluster},
    stream_server::Server,
};

/// The page: an `EventSource` on `/stream` with the page's own query; each event's data and
/// `lastEventId` go in a list.
const PAGE: &str = r#"<!doctype html>
<ul id="got"></ul>
<script>
  const source = new EventSource("/stream" + location.search);
  source.onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = event.data + " #" + event.lastEventId;
    document.getElementById("got").appendChild(item);
  };
</script>"#;

/// Waits, in the page, until the list holds `n` items; returns them.
async fn items(browser: &Browser, n: usize) -> Vec<String> {
    const WAIT: &str = r#"
        const [n, done] = arguments;
        const list = document.getElementById("got");
        const check = () => {
            if (list.children.length < n) return false;
            done(Array.from(list.children, (item) => item.textContent));
            return true;
        };
        if (!check()) new MutationObserver(check).observe(list, { childList: true });
    "#;
    let got = guard(
        "events in the page",
        browser.execute_async(WAIT, vec![n.into()]),
    )
    .await
    .unwrap_or_else(|err| panic!("waiting for {n} events: {err}"));
    serde_json::from_value(got).expect("a list of strings")
}

async fn connect(cluster: &RedisCluster) -> Broker {
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    cluster::connect(Broker::builder().history(100), &seeds)
        .await
        .expect("connect to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_resumes_a_stream_over_every_shard_from_its_positions() {
    let Some(chromedriver) = browser_tools("tests/browser_cluster.rs") else {
        return;
    };
    let cluster = redis_cluster!(3, 0);
    let serving = connect(&cluster).await;
    let publisher = connect(&cluster).await;
    let shards = cluster.one_channel_per_shard("page.").await;
    let names: Vec<&str> = shards.iter().map(|(name, _, _)| name.as_str()).collect();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route_service("/stream", SseService::new(serving.clone()));
    let mut server = Server::start(app).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser(&driver).await;
    let page = format!("{}/?channel={}", server.base, names.join(","));
    guard("page load", browser.goto(&page)).await.unwrap();
    assert_eq!(server.streams(1).await[0].last_event_id, None);

    let publish = |name: &str, data: String| {
        let publisher = publisher.clone();
        let name = name.to_owned();
        async move {
            let id = publisher
                .publish(&name, Event::default().data(data.clone()))
                .await
                .expect("publish");
            format!("{data} #{id}")
        }
    };
    let mut seen = BTreeSet::new();
    for name in &names {
        seen.insert(publish(name, format!("first on {name}")).await);
    }
    let got: BTreeSet<String> = items(&browser, names.len()).await.into_iter().collect();
    assert_eq!(got, seen, "each event with its own channel's id");

    // The connection drops; an event on each shard while the page is away.
    server.gate.send_replace(false);
    server.drop_streams().await;
    for name in &names {
        seen.insert(publish(name, format!("away on {name}")).await);
    }
    server.gate.send_replace(true);
    let again = server.streams(2).await;
    let positions = again[1].last_event_id.clone().expect("a Last-Event-ID");
    assert!(
        positions.starts_with('~') && positions.ends_with(".1.1.1"),
        "the positions, not an event's id: {positions}"
    );
    let live = publish(names[0], "live".to_owned()).await;
    seen.insert(live.clone());
    let all = items(&browser, seen.len()).await;
    assert_eq!(
        all.last(),
        Some(&live),
        "the replay comes before live events"
    );
    assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), seen);
    assert_eq!(all.len(), seen.len(), "nothing twice");
    assert_eq!(server.streams(2).await.len(), 2, "one reconnection only");

    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}
