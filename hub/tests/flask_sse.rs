//! Issue 20: a Flask app keeps `sse.publish()`, and its browsers read the hub. The hub as
//! shipped (the binary, `--flask-sse-redis`) on a private `redis-server`, with the real
//! flask-sse from PyPI in the quickstart app of `tests/flask/` (`sse.publish()`,
//! `sse.messages()`, and its `/stream` under gunicorn with gevent workers), and headless
//! Chromium for the quickstart's page.
//!
//! Needs `redis-server` (`TOWER_SSE_REQUIRE_REDIS`), the venv of `bash .ci/python`
//! (`TOWER_SSE_PYTHON`, `TOWER_SSE_REQUIRE_PYTHON`) and, for the page, Chromium and
//! chromedriver (`TOWER_SSE_REQUIRE_BROWSER`); without one, a test says so on stderr and
//! passes, unless its variable is `1`.
#![cfg(feature = "redis")]

#[path = "support/flask.rs"]
mod flask;
#[path = "support/hub_process.rs"]
mod hub_process;

use std::{pin::Pin, time::Duration};

use eventsource_stream::{Event, Eventsource};
use flask::{Gunicorn, Python};
use futures_util::{Stream, StreamExt};
use hub_process::{HubProcess, pause};
use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_sse_test_support::{
    chromium::{Chromedriver, browser_tools, open_browser},
    client,
    events::Events,
    guard, redis_server, send, text,
};

/// The counter of messages the hub dropped as malformed, in `/metrics`.
const DROPPED: &str = "sse_flask_sse_dropped_total";

/// The hub on flask-sse's Redis, as shipped otherwise.
async fn hub(redis_url: &str) -> HubProcess {
    HubProcess::start(&["--flask-sse-redis", redis_url]).await
}

/// `PUBSUB NUMSUB channel`: the subscriptions to `channel`, of every client of that Redis.
async fn numsub(admin: &mut MultiplexedConnection, channel: &str) -> u64 {
    let (_, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(admin)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

/// Waits until `channel` has `count` subscriptions: a subscriber that has no other signal
/// (flask-sse's `/stream` answers with its first message, `sse.messages()` says nothing) has
/// subscribed once Redis counts it.
async fn subscribed(admin: &mut MultiplexedConnection, channel: &str, count: u64) {
    guard(&format!("{count} subscriptions to {channel}"), async {
        while numsub(admin, channel).await != count {
            pause().await;
        }
    })
    .await;
}

/// `PUBLISH channel message`, by hand; returns the subscriptions that got it.
async fn publish_raw(admin: &mut MultiplexedConnection, channel: &str, message: &[u8]) -> u64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async(admin)
        .await
        .expect("PUBLISH")
}

/// The status of `GET /readyz`.
async fn readyz(hub: &HubProcess) -> StatusCode {
    send(hub.client.get(hub.url("/readyz"))).await.status()
}

/// Waits until `GET /readyz` answers `status`.
async fn ready_becomes(hub: &HubProcess, status: StatusCode) {
    guard(&format!("/readyz {status}"), async {
        while readyz(hub).await != status {
            pause().await;
        }
    })
    .await;
}

/// Every series of the counter `name` in `/metrics`, added up (0 if none).
async fn counter(hub: &HubProcess, name: &str) -> f64 {
    let metrics = hub.metrics().await;
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

type EventStream = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// flask-sse's own `/stream?channel=...` from the app under gunicorn, parsed as `EventSource`
/// would. Its response starts with its first message: open it in a task of its own, know it
/// has subscribed from [`subscribed`], and await the task once something is published.
fn flask_stream(flask: &Gunicorn, channel: &str) -> tokio::task::JoinHandle<EventStream> {
    let request = client().get(flask.url(&format!("/stream?channel={channel}")));
    tokio::spawn(async move {
        let res = send(request).await;
        assert_eq!(res.status(), StatusCode::OK);
        let content_type = res.headers().get("content-type").unwrap().to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let events = res.bytes_stream().eventsource();
        Box::pin(events.map(|event| event.expect("a well-formed stream"))) as EventStream
    })
}

async fn next(stream: &mut EventStream) -> Event {
    guard("next event from flask-sse's /stream", stream.next())
        .await
        .expect("an event, not the end of the stream")
}

/// `(event type, data, id, retry)` of an event, as a page's `EventSource` sees them
/// (`lastEventId` carries on from the last id).
fn seen(event: &Event) -> (&str, &str, &str, Option<Duration>) {
    (&event.event, &event.data, &event.id, event.retry)
}

/// What a Flask app publishes with `sse.publish()` (string data, JSON data, a type, a numeric
/// and a string id, a retry, lines, on `news` and on the default channel) reaches a stream on
/// the hub as a browser reads it, and as flask-sse's own `/stream` sends it: the same type,
/// data (other JSON than a string as the JSON text flask-sse sends), retry, and the app's ids.
/// Without an id from the app, the hub gives its own, for `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_sse_publish_sends_reaches_a_hub_stream_as_flask_sse_streams_it() {
    let Some(python) = Python::find("hub/tests/flask_sse.rs: sse.publish() to the hub") else {
        return;
    };
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    let (hub, flask) = tokio::join!(hub(&url), python.gunicorn(&url));
    let mut on_hub = Events::open(hub.events("channel=news", None)).await;
    let mut on_default = Events::open(hub.events("", None)).await;
    let on_flask = flask_stream(&flask, "news");
    // The hub's one subscription, and gunicorn's for its `/stream`.
    subscribed(&mut admin, "news", 2).await;

    let json_data = json!({"message": "Héllo!", "n": [1, 2.5, null, true], "nested": {"a": "b"}});
    // (what the app publishes, what a page's EventSource gets: type, data, the app's id, retry)
    let cases = [
        (
            json!({"data": "plain text", "channel": "news"}),
            ("message", json!("plain text"), None, None),
        ),
        (
            json!({"data": json_data, "type": "greeting", "channel": "news"}),
            ("greeting", json_data.clone(), None, None),
        ),
        (
            json!({"data": "numbered", "id": 42, "channel": "news"}),
            ("message", json!("numbered"), Some("42"), None),
        ),
        (
            json!({"data": "named", "id": "order-7", "channel": "news"}),
            ("message", json!("named"), Some("order-7"), None),
        ),
        (
            json!({"data": "slow down", "retry": 5000, "channel": "news"}),
            ("message", json!("slow down"), None, Some(5000)),
        ),
        (
            json!({"data": "line 1\nline 2\r\nline 3\rline 4", "channel": "news"}),
            (
                "message",
                json!("line 1\nline 2\nline 3\nline 4"),
                None,
                None,
            ),
        ),
        (
            json!({"data": ["a", 1], "type": "list", "id": 43, "retry": 2500, "channel": "news"}),
            ("list", json!(["a", 1]), Some("43"), Some(2500)),
        ),
        (
            json!({"data": 7, "channel": "news"}),
            ("message", json!(7), None, None),
        ),
    ];
    let mut messages: Vec<Value> = cases.iter().map(|(message, _)| message.clone()).collect();
    messages.push(json!({"data": "to the default channel"}));
    let receivers = python.publish(&url, &messages).await;
    // Two subscriptions to `news` (the hub's, gunicorn's), one to `sse` (the hub's).
    assert_eq!(receivers, [2, 2, 2, 2, 2, 2, 2, 2, 1]);
    let mut on_flask = guard("flask-sse's /stream", on_flask).await.unwrap();

    let mut hub_ids = Vec::new();
    for (message, (event, data, id, retry)) in &cases {
        let got = on_hub.expect().await;
        let retry = retry.map(Duration::from_millis);
        assert_eq!(
            (got.event.as_str(), got.retry),
            (*event, retry),
            "{message}: {got:?}"
        );
        match data {
            Value::String(data) => assert_eq!(&got.data, data, "{message}"),
            data => {
                let json = serde_json::from_str::<Value>(&got.data);
                assert_eq!(json.ok().as_ref(), Some(data), "{message}: {got:?}");
            }
        }
        match id {
            Some(id) => assert_eq!(got.id, *id, "{message}"),
            None => {
                assert!(!got.id.is_empty(), "{message}: {got:?}");
                assert!(!hub_ids.contains(&got.id), "{message}: {got:?} {hub_ids:?}");
                hub_ids.push(got.id.clone());
            }
        }

        // As flask-sse's own stream sends it, JSON data as the very text it sends.
        let flask = next(&mut on_flask).await;
        let flask_seen = (&flask.event, &flask.data, flask.retry);
        assert_eq!(flask_seen, (&got.event, &got.data, got.retry), "{message}");
        if id.is_some() {
            assert_eq!(flask.id, got.id, "{message}");
        }
    }
    // The default channel, `sse`, as flask-sse's.
    let default = on_default.expect().await;
    let default = (default.event.as_str(), default.data.as_str());
    assert_eq!(default, ("message", "to the default channel"));
}

/// flask-sse's quickstart in Chromium, with its one line changed: the page (served by the
/// Flask app under gunicorn) opens its `EventSource` on the hub, and the app's `/hello`
/// (`sse.publish({"message": "Hello!"}, type='greeting')`) makes the page say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_page_gets_its_greeting_from_the_hub() {
    let test = "hub/tests/flask_sse.rs: the quickstart page";
    let Some(python) = Python::find(test) else {
        return;
    };
    let Some(chromedriver) = browser_tools(test) else {
        return;
    };
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    let flask = python.gunicorn(&url).await;
    // The page is on the app's origin, the hub on another: CORS for the app's origin.
    let hub =
        HubProcess::start(&["--flask-sse-redis", &url, "--cors-origin", flask.origin()]).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser(&driver).await;
    let page = flask.url(&format!("/?hub={}", hub.url("")));
    guard("page load", browser.goto(&page)).await.unwrap();
    // The page's `var source`, open (an error alerts instead, and fails this script).
    let open = r#"
        const done = arguments[0];
        if (source.readyState === EventSource.OPEN) done("open");
        else source.addEventListener("open", () => done("open"));
    "#;
    let opened = guard(
        "the page's EventSource opens",
        browser.execute_async(open, vec![]),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\ngunicorn:\n{}", flask.log()));
    assert_eq!(opened, json!("open"));
    // The page reads the hub: the one subscription to `sse` is the hub's.
    assert_eq!(numsub(&mut admin, "sse").await, 1);

    let hello = send(client().get(flask.url("/hello"))).await;
    assert_eq!(text(hello).await, "Message sent!");
    let alert = guard("the page's alert", async {
        loop {
            match browser.get_alert_text().await {
                Ok(text) => return text,
                Err(_) => pause().await,
            }
        }
    })
    .await;
    assert_eq!(alert, "The server says Hello!");
    guard("accept the alert", browser.accept_alert())
        .await
        .unwrap();
    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}

/// The hub's `POST /publish` sends what `sse.publish()` would: a consumer of flask-sse's own
/// `sse.messages()`, flask-sse's `/stream` under gunicorn, and a stream on the hub each get it
/// unchanged (data as a string, type, id, retry), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_publish_reaches_flask_sse_unchanged() {
    let Some(python) = Python::find("hub/tests/flask_sse.rs: POST /publish to flask-sse") else {
        return;
    };
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    let (hub, flask) = tokio::join!(hub(&url), python.gunicorn(&url));
    let mut consumer = python.consume(&url, "orders", 2);
    let on_flask = flask_stream(&flask, "orders");
    let mut on_hub = Events::open(hub.events("channel=orders", None)).await;
    subscribed(&mut admin, "orders", 3).await;

    // Data that looks like JSON stays a string; lines and non-ASCII as they are.
    let data = "héllo {\"not\": \"parsed\"}\nline 2";
    let query = "channel=orders&event=created&id=order-1&retry=2500";
    assert_eq!(hub.publish(query, data).await, "order-1");
    let plain = "no type, no id";
    hub.publish("channel=orders", plain).await;
    let mut on_flask = guard("flask-sse's /stream", on_flask).await.unwrap();

    let first = consumer.next().await;
    let text = "event:created\ndata:héllo {\"not\": \"parsed\"}\ndata:line 2\nid:order-1\n\
                retry:2500\n\n";
    let expected = json!({
        "data": data, "type": "created", "id": "order-1", "retry": 2500, "text": text,
    });
    assert_eq!(first, expected);
    let second = consumer.next().await;
    let expected = json!({
        "data": plain, "type": null, "id": null, "retry": null, "text": "data:no type, no id\n\n",
    });
    assert_eq!(second, expected);

    let retry = Some(Duration::from_millis(2500));
    for (what, got) in [
        ("flask-sse's /stream", next(&mut on_flask).await),
        ("the hub", on_hub.expect().await),
    ] {
        assert_eq!(seen(&got), ("created", data, "order-1", retry), "{what}");
    }
    let flask_got = next(&mut on_flask).await;
    assert_eq!(seen(&flask_got), ("message", plain, "order-1", None));
    let hub_got = on_hub.expect().await;
    assert_eq!(
        (hub_got.event.as_str(), hub_got.data.as_str()),
        ("message", plain)
    );
    // Once: the next on the hub's stream is the next published.
    hub.publish("channel=orders", "marker").await;
    assert_eq!(on_hub.expect().await.data, "marker");
}

/// Two hubs on one Redis: one Redis subscription per channel per hub, whatever the number of
/// streams (20 on each), never a pattern; one `sse.publish()` reaches every stream on both,
/// once, and so does a `POST /publish` on either. A hub's subscription goes with its last
/// stream on the channel, and a browser coming back to it then gets the `gap` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_hold_one_subscription_each_and_deliver_once() {
    let Some(python) = Python::find("hub/tests/flask_sse.rs: two hubs") else {
        return;
    };
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    let (a, b) = tokio::join!(hub(&url), hub(&url));
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..20 {
        on_a.push(Events::open(a.events("channel=news", None)).await);
        on_b.push(Events::open(b.events("channel=news", None)).await);
    }
    assert_eq!(numsub(&mut admin, "news").await, 2, "one per hub");
    let patterns: u64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(patterns, 0, "no PSUBSCRIBE on a shared Redis");

    let messages = [
        json!({"data": "once", "id": "n-1", "channel": "news"}),
        json!({"data": "then", "channel": "news"}),
    ];
    assert_eq!(python.publish(&url, &messages).await, [2, 2]);
    a.publish("channel=news&id=n-3", "from hub A").await;
    b.publish("channel=news", "from hub B").await;
    let expected = ["once", "then", "from hub A", "from hub B"];
    let mut last_on_a = String::new();
    for (hub, streams) in [("A", &mut on_a), ("B", &mut on_b)] {
        for stream in streams.iter_mut() {
            let mut got = Vec::new();
            for _ in 0..4 {
                let event = stream.expect().await;
                if hub == "A" {
                    last_on_a = event.id;
                }
                got.push(event.data);
            }
            assert_eq!(got, expected, "on {hub}");
        }
    }

    // Every stream on A leaves, and its subscription with the last. A browser coming back to
    // A gets the gap event (A missed what was published meanwhile), then live events.
    on_a.clear();
    subscribed(&mut admin, "news", 1).await;
    let away = [json!({"data": "while away", "channel": "news"})];
    assert_eq!(python.publish(&url, &away).await, [1]);
    for stream in &mut on_b {
        assert_eq!(stream.expect().await.data, "while away");
    }
    let last = Some(last_on_a.as_bytes());
    let mut back = Events::open(a.events("channel=news", last)).await;
    let gap = back.expect().await;
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(numsub(&mut admin, "news").await, 2);
    a.publish("channel=news", "live").await;
    assert_eq!(back.expect().await.data, "live");
}

/// The two documented differences from one in-process history: a client resuming with an
/// id the app gave gets what it missed from the same hub, and with an id the hub made up (the
/// app gave none) it gets the `gap` event from another hub, never a silent loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_app_ids_on_the_same_hub_and_a_gap_on_another() {
    let Some(python) = Python::find("hub/tests/flask_sse.rs: resume") else {
        return;
    };
    let redis = redis_server!();
    let url = redis.url();
    // One after the other: each hub numbers its events from its start time in milliseconds
    // (`BrokerBuilder::id_base`), so two started in the same millisecond would read each
    // other's numbers as their own, and B would not see A's id as foreign.
    let a = hub(&url).await;
    let b = hub(&url).await;
    // Other browsers keep the channel open on both hubs, so both see every event.
    let mut keep_a = Events::open(a.events("channel=news", None)).await;
    let mut keep_b = Events::open(b.events("channel=news", None)).await;
    let mut client = Events::open(a.events("channel=news", None)).await;

    let publish = |data: &str, id: Option<&str>| {
        let mut message = json!({"data": data, "channel": "news"});
        if let Some(id) = id {
            message["id"] = id.into();
        }
        message
    };
    python
        .publish(&url, &[publish("one", Some("m-1")), publish("two", None)])
        .await;
    assert_eq!(client.expect().await.id, "m-1");
    let two = client.expect().await;
    assert_eq!(two.data, "two");
    let hub_id = two.id;
    drop(client);
    python
        .publish(
            &url,
            &[publish("three", Some("m-3")), publish("four", None)],
        )
        .await;
    // Both hubs delivered all four, so both hold them.
    for keeper in [&mut keep_a, &mut keep_b] {
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(keeper.expect().await.data);
        }
        assert_eq!(got, ["one", "two", "three", "four"]);
    }

    // On A, with the app's id: what came after it.
    let mut resumed = Events::open(a.events("channel=news", Some(b"m-1"))).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(resumed.expect().await.data);
    }
    assert_eq!(got, ["two", "three", "four"]);
    // On A, with A's own id: the same.
    let mut resumed = Events::open(a.events("channel=news", Some(hub_id.as_bytes()))).await;
    assert_eq!(resumed.expect().await.data, "three");
    assert_eq!(resumed.expect().await.data, "four");
    // On B, with A's own id: the gap, then live events.
    let mut elsewhere = Events::open(b.events("channel=news", Some(hub_id.as_bytes()))).await;
    let gap = elsewhere.expect().await;
    assert_eq!(gap.event, "gap", "{gap:?}");
    python.publish(&url, &[publish("five", None)]).await;
    assert_eq!(elsewhere.expect().await.data, "five");
}

/// Messages on a channel that flask-sse would not send (not JSON, no `data`, wrong types, a type
/// or id a stream can't carry, an id over 1,024 bytes, over 4 MiB in all) are dropped and
/// counted in `/metrics`; the stream goes on.
#[tokio::test]
async fn malformed_messages_are_dropped_and_counted() {
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    let hub = hub(&url).await;
    let mut stream = Events::open(hub.events("channel=news", None)).await;
    let before = counter(&hub, DROPPED).await;

    let malformed: [&[u8]; 15] = [
        b"not json",
        b"",
        b"\xff\xfe{}",
        b"null",
        b"\"a string\"",
        br#"["data"]"#,
        br#"{"type": "greeting"}"#,
        br#"{"data": "x", "type": 5}"#,
        br#"{"data": "x", "type": "a\nb"}"#,
        br#"{"data": "x", "type": "a\rb"}"#,
        br#"{"data": "x", "id": "a\nb"}"#,
        br#"{"data": "x", "id": {"n": 1}}"#,
        br#"{"data": "x", "retry": "soon"}"#,
        br#"{"data": "x", "retry": -1}"#,
        br#"{"data": "x""#,
    ];
    let long_id = format!(r#"{{"data": "x", "id": "{}"}}"#, "i".repeat(1025));
    let too_large = format!(r#"{{"data": "{}"}}"#, "x".repeat(4 << 20));
    let malformed: Vec<&[u8]> = malformed
        .into_iter()
        .chain([long_id.as_bytes(), too_large.as_bytes()])
        .collect();
    for message in &malformed {
        assert_eq!(publish_raw(&mut admin, "news", message).await, 1);
    }
    let good = br#"{"data": "still here", "type": "greeting", "id": "g-1"}"#;
    assert_eq!(publish_raw(&mut admin, "news", good).await, 1);
    let got = stream.expect().await;
    assert_eq!(seen(&got), ("greeting", "still here", "g-1", None));

    let after = counter(&hub, DROPPED).await;
    assert_eq!(
        after - before,
        malformed.len() as f64,
        "{DROPPED}: {before} -> {after}\n{}",
        hub.metrics().await
    );
    assert_eq!(readyz(&hub).await, StatusCode::OK);
    let healthz = send(hub.client.get(hub.url("/healthz"))).await;
    assert_eq!(healthz.status(), StatusCode::OK);
}

/// Redis restarted (killed, then started empty on its port): `/readyz` is `503` while it is
/// down (and a new stream on another channel gets `503`), the hub subscribes again on its own,
/// and the streams opened before get what the app publishes after, as do new ones. Pub/sub
/// keeps nothing, so a client resuming from before the restart gets the `gap` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_streams_get_later_messages() {
    let Some(python) = Python::find("hub/tests/flask_sse.rs: Redis restarted") else {
        return;
    };
    let mut redis = redis_server!();
    let url = redis.url();
    let hub = hub(&url).await;
    let mut before = Events::open(hub.events("channel=news", None)).await;
    ready_becomes(&hub, StatusCode::OK).await;
    let message = |data: &str| json!({"data": data, "channel": "news"});
    assert_eq!(python.publish(&url, &[message("before")]).await, [1]);
    let first = before.expect().await;
    assert_eq!(first.data, "before");

    redis.kill();
    ready_becomes(&hub, StatusCode::SERVICE_UNAVAILABLE).await;
    let healthz = send(hub.client.get(hub.url("/healthz"))).await;
    assert_eq!(healthz.status(), StatusCode::OK, "alive, not ready");
    // A stream on a channel the hub has no subscription for can't be served meanwhile.
    let elsewhere = send(hub.events("channel=elsewhere", None)).await;
    assert_eq!(elsewhere.status(), StatusCode::SERVICE_UNAVAILABLE);

    redis.restart(&[]).await;
    let mut admin = redis.admin(&url).await;
    subscribed(&mut admin, "news", 1).await;
    ready_becomes(&hub, StatusCode::OK).await;
    let mut after = Events::open(hub.events("channel=news", None)).await;
    assert_eq!(python.publish(&url, &[message("after")]).await, [1]);
    assert_eq!(before.expect().await.data, "after");
    assert_eq!(after.expect().await.data, "after");
    // Resuming from before the restart: what Redis lost, the hub can't know; the gap says so.
    let last = Some(first.id.as_bytes());
    let mut resumed = Events::open(hub.events("channel=news", last)).await;
    let gap = resumed.expect().await;
    assert_eq!(gap.event, "gap", "{gap:?}");
}

/// `--flask-sse-redis` and `--redis-url` name two backends: the hub refuses to start, exit
/// code 2, naming both, from flags or from the hub's own variables.
#[tokio::test]
async fn flask_sse_redis_with_redis_url_is_refused() {
    /// The flags, and the variables, the hub is started with.
    type Settings<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let url = "redis://127.0.0.1:1/";
    let cases: [Settings; 3] = [
        (&["--flask-sse-redis", url, "--redis-url", url], &[]),
        (&["--flask-sse-redis", url], &[("SSE_HUB_REDIS_URL", url)]),
        (
            &[],
            &[("SSE_HUB_FLASK_SSE_REDIS", url), ("SSE_HUB_REDIS_URL", url)],
        ),
    ];
    for (args, env) in cases {
        let exited = match HubProcess::try_start_with(args, env).await {
            Ok(_) => panic!("{args:?} {env:?}: the hub started"),
            Err(exited) => exited,
        };
        assert_eq!(
            exited.status.code(),
            Some(2),
            "{args:?} {env:?}: {exited:?}"
        );
        let named = ["--flask-sse-redis", "--redis-url"];
        assert!(
            named.iter().all(|flag| exited.stderr.contains(flag)),
            "{args:?} {env:?}: {exited:?}"
        );
    }
}

/// `SSE_REDIS_URL` and `REDIS_URL` (flask-sse's names, which a Flask app's environment has)
/// are the Redis backend's fallback when no flag names a backend; with `--flask-sse-redis`
/// they are not read, and the hub serves flask-sse's Redis.
#[tokio::test]
async fn flask_sse_redis_wins_over_the_redis_url_variables() {
    let redis = redis_server!();
    let url = redis.url();
    let mut admin = redis.admin(&url).await;
    // Nothing listens there: a hub that read them would not start.
    let unreachable = "redis://127.0.0.1:1/";
    let env = [("SSE_REDIS_URL", unreachable), ("REDIS_URL", unreachable)];
    let hub = HubProcess::try_start_with(&["--flask-sse-redis", &url], &env)
        .await
        .unwrap_or_else(|exited| panic!("{exited:?}"));
    let mut stream = Events::open(hub.events("channel=news", None)).await;
    let message = br#"{"data": "from flask-sse"}"#;
    assert_eq!(publish_raw(&mut admin, "news", message).await, 1);
    assert_eq!(stream.expect().await.data, "from flask-sse");
}
