//! The flask-sse backend (`tower_sse::redis::flask_sse`) against a real `redis-server`, with
//! flask-sse's messages published by hand, in the exact JSON its `sse.publish()` sends (Python's
//! `json.dumps`). The real Flask app is the hub's test. Each test starts its own Redis on a
//! free loopback port; without `redis-server` the tests say so on stderr and pass, unless
//! `TOWER_SSE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

#[path = "common/reader.rs"]
#[allow(dead_code)] // each file uses its part
mod reader;

use reader::{Reader, channels};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use redis::aio::MultiplexedConnection;
use tower_sse::{
    Broker, BrokerBuilder, ChannelError, Event, PublishError, Resume, metrics::FLASK_SSE_DROPPED,
    redis::flask_sse,
};
use tower_sse_test_support::{guard, redis_server, wait_until};

/// Between checks of a state only Redis knows.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn connect(url: &str, builder: BrokerBuilder) -> Broker {
    flask_sse::connect(builder, url)
        .await
        .expect("connect to Redis")
}

/// A plain Redis client, as the Flask app's.
async fn app(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("app's Redis connection")
}

/// `PUBLISH channel payload`, as flask-sse does; returns how many subscribers Redis counted.
async fn publish_raw(conn: &mut MultiplexedConnection, channel: &str, payload: &str) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(conn)
        .await
        .expect("PUBLISH")
}

/// `PUBSUB NUMSUB` of each channel.
async fn numsub(conn: &mut MultiplexedConnection, names: &[&str]) -> Vec<i64> {
    let reply: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(names)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    reply.into_iter().map(|(_, n)| n).collect()
}

/// Waits until `PUBSUB NUMSUB` of `names` is `expected`: a state only Redis knows.
async fn wait_numsub(conn: &mut MultiplexedConnection, names: &[&str], expected: &[i64]) {
    guard(&format!("NUMSUB {names:?} = {expected:?}"), async {
        while numsub(conn, names).await != expected {
            pause().await;
        }
    })
    .await;
}

/// The value of the `id:` line of a frame.
fn id_of(frame: &str) -> &str {
    frame
        .lines()
        .find_map(|line| line.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {frame:?}"))
}

#[tokio::test]
async fn what_flask_sse_publishes_arrives_as_the_browser_reads_it() {
    let redis = redis_server!();
    // Ids from 1, so that the hub's own are known.
    let broker = connect(&redis.url(), Broker::builder().id_base(0)).await;
    let mut sse = Reader::subscribe(&broker, "sse").await;
    let mut news = Reader::subscribe(&broker, "news").await;
    let mut conn = app(&redis.url()).await;
    // Python's `json.dumps(Message(...).to_dict())`, for:
    let published = [
        // sse.publish("hello")
        ("sse", r#"{"data": "hello"}"#),
        // sse.publish({"message": "Hello!"}, type="greeting")
        (
            "sse",
            r#"{"data": {"message": "Hello!"}, "type": "greeting"}"#,
        ),
        // sse.publish("x", id=42)
        ("sse", r#"{"data": "x", "id": 42}"#),
        // sse.publish("y", id="abc")
        ("sse", r#"{"data": "y", "id": "abc"}"#),
        // sse.publish("z", retry=1500)
        ("sse", r#"{"data": "z", "retry": 1500}"#),
        // sse.publish("a\nb", type="t", id="i", retry=20, channel="news")
        (
            "news",
            r#"{"data": "a\nb", "type": "t", "id": "i", "retry": 20}"#,
        ),
        // sse.publish([1, 2.5, null])
        ("sse", r#"{"data": [1, 2.5, null]}"#),
        // sse.publish("l1\r\nl2\rl3\u2028same line")
        ("sse", r#"{"data": "l1\r\nl2\rl3\u2028same line"}"#),
    ];
    for (channel, payload) in published {
        assert_eq!(publish_raw(&mut conn, channel, payload).await, 1);
    }
    // Events without an id of the app's get the broker's next number.
    assert_eq!(sse.next().await, "data: hello\nid: 1\n\n");
    assert_eq!(
        sse.next().await,
        "event: greeting\ndata: {\"message\": \"Hello!\"}\nid: 2\n\n"
    );
    assert_eq!(sse.next().await, "data: x\nid: 42\n\n");
    assert_eq!(sse.next().await, "data: y\nid: abc\n\n");
    assert_eq!(sse.next().await, "data: z\nretry: 1500\nid: 5\n\n");
    assert_eq!(
        news.next().await,
        "event: t\ndata: a\ndata: b\nretry: 20\nid: i\n\n"
    );
    assert_eq!(sse.next().await, "data: [1, 2.5, null]\nid: 7\n\n");
    assert_eq!(
        sse.next().await,
        "data: l1\ndata: l2\ndata: l3\u{2028}same line\nid: 8\n\n"
    );
    sse.assert_idle();
    news.assert_idle();
}

/// A recorder of counters, for this test's thread only.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn name(key: &Key) -> String {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    fn get(&self, name: &str) -> u64 {
        let counters = self.0.lock().unwrap();
        counters.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every counter whose name starts with `prefix`, with its value.
    fn all(&self, prefix: &str) -> HashMap<String, u64> {
        let counters = self.0.lock().unwrap();
        counters
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, c)| (name.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.0.lock().unwrap();
        let counter = counters.entry(Counters::name(key)).or_default();
        Counter::from_arc(counter.clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// A current-thread runtime: the backend's task runs on this thread, where the recorder is.
#[tokio::test(flavor = "current_thread")]
async fn bad_messages_are_dropped_and_counted_and_the_stream_goes_on() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let redis = redis_server!();
    let builder = Broker::builder().id_base(0).max_id_len(8);
    let broker = connect(&redis.url(), builder).await;
    let mut sse = Reader::subscribe(&broker, "sse").await;
    let mut conn = app(&redis.url()).await;
    let huge = format!(r#"{{"data": "{}"}}"#, "x".repeat(4 << 20));
    let bad = [
        ("not json", "json"),
        (r#"["data", "x"]"#, "json"),
        (r#"{"type": "greeting"}"#, "data"),
        (r#"{"data": "x", "type": "a\nb"}"#, "type"),
        (r#"{"data": "x", "type": 5}"#, "type"),
        (r#"{"data": "x", "id": "a\nb"}"#, "id"),
        (r#"{"data": "x", "id": "a\u0000"}"#, "id"),
        (r#"{"data": "x", "id": 1.5}"#, "id"),
        (r#"{"data": "x", "id": "123456789"}"#, "id"),
        (r#"{"data": "x", "retry": "soon"}"#, "retry"),
        (&huge, "too_large"),
    ];
    publish_raw(&mut conn, "sse", r#"{"data": "first"}"#).await;
    for (payload, _) in &bad {
        publish_raw(&mut conn, "sse", payload).await;
    }
    // What flask-sse's stream would send as `data:null`: served, not dropped.
    publish_raw(&mut conn, "sse", r#"{"data": null}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "last"}"#).await;
    // One connection, in order: once "last" is here, every message before it was read.
    assert_eq!(sse.next().await, "data: first\nid: 1\n\n");
    assert_eq!(sse.next().await, "data: null\nid: 2\n\n");
    assert_eq!(sse.next().await, "data: last\nid: 3\n\n");
    sse.assert_idle();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for (_, reason) in &bad {
        *expected
            .entry(format!("{FLASK_SSE_DROPPED}{{reason={reason}}}"))
            .or_default() += 1;
    }
    assert_eq!(counters.all(FLASK_SSE_DROPPED), expected);
    assert_eq!(
        counters.get("sse_flask_sse_dropped_total{reason=json}"),
        2,
        "the counter's name is part of the API"
    );
}

#[tokio::test]
async fn publish_sends_flask_sse_json_and_each_broker_delivers_it_once() {
    let redis = redis_server!();
    let one = connect(&redis.url(), Broker::builder().id_base(0)).await;
    let two = connect(&redis.url(), Broker::builder().id_base(1000)).await;
    let mut on_one = Reader::subscribe(&one, "sse").await;
    let mut on_two = Reader::subscribe(&two, "sse").await;
    // A consumer of flask-sse's own, `sse.messages()`: a plain SUBSCRIBE.
    let mut consumer = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    consumer.subscribe("sse").await.unwrap();
    let mut messages = consumer.on_message();

    let event = Event::default()
        .data("hi \"there\"\nline")
        .event("greeting")
        .id("i1")
        .retry(Duration::from_millis(1500));
    assert_eq!(one.publish("sse", event).await.unwrap(), "i1");
    // Without an id: each broker numbers it, so the answer is empty.
    assert_eq!(
        two.publish("sse", Event::default().data("plain"))
            .await
            .unwrap(),
        ""
    );
    // Comments have no field in flask-sse's JSON; empty fields are left out, as flask-sse does.
    let bare = Event::default().data("").event("").comment("c");
    one.publish("sse", bare).await.unwrap();

    let mut payloads = Vec::new();
    for _ in 0..3 {
        let message = guard("the consumer's message", messages.next())
            .await
            .unwrap();
        payloads.push(String::from_utf8(message.get_payload_bytes().to_vec()).unwrap());
    }
    assert_eq!(
        payloads,
        [
            r#"{"data":"hi \"there\"\nline","type":"greeting","id":"i1","retry":1500}"#,
            r#"{"data":"plain"}"#,
            r#"{"data":""}"#,
        ]
    );

    // Each broker delivers each once (the publisher's own through its subscription), in
    // Redis's order: the event after each is the next one, not a copy.
    let first = "event: greeting\ndata: hi \"there\"\ndata: line\nretry: 1500\nid: i1\n\n";
    assert_eq!(on_one.next().await, first);
    assert_eq!(on_two.next().await, first);
    assert_eq!(on_one.next().await, "data: plain\nid: 2\n\n");
    assert_eq!(on_two.next().await, "data: plain\nid: 1002\n\n");
    assert_eq!(on_one.next().await, "data: \nid: 3\n\n");
    assert_eq!(on_two.next().await, "data: \nid: 1003\n\n");
    on_one.assert_idle();
    on_two.assert_idle();
}

#[tokio::test]
async fn a_publish_too_large_for_flask_sse_is_refused() {
    let redis = redis_server!();
    let broker = connect(&redis.url(), Broker::builder()).await;
    let mut sse = Reader::subscribe(&broker, "sse").await;
    let huge = Event::default().data("x".repeat(4 << 20));
    let err = broker.publish("sse", huge).await.unwrap_err();
    assert!(
        matches!(err, PublishError::TooLarge { limit } if limit == 4 << 20),
        "{err}"
    );
    assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing went out: the next event is the next one.
    broker
        .publish("sse", Event::default().data("small").id("s"))
        .await
        .unwrap();
    assert_eq!(sse.next().await, "data: small\nid: s\n\n");
}

#[tokio::test]
async fn one_redis_subscription_per_channel_per_broker() {
    let redis = redis_server!();
    let one = connect(&redis.url(), Broker::builder()).await;
    let two = connect(&redis.url(), Broker::builder()).await;
    let mut streams = [Vec::new(), Vec::new()];
    for (broker, streams) in [&one, &two].into_iter().zip(&mut streams) {
        for _ in 0..50 {
            streams.push(broker.subscribe(&channels(broker, "sse")).await.unwrap());
        }
        for _ in 0..20 {
            let both = channels(broker, "news,sse");
            streams.push(broker.subscribe(&both).await.unwrap());
        }
    }
    assert_eq!(one.subscriber_count("sse"), 70);
    let mut conn = app(&redis.url()).await;
    assert_eq!(numsub(&mut conn, &["sse", "news"]).await, [2, 2]);
    let patterns: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(patterns, 0, "no PSUBSCRIBE on a Redis others share");
    // Broker one's clients leave (no history): its subscriptions go, two's stay.
    let [of_one, of_two] = streams;
    drop(of_one);
    wait_numsub(&mut conn, &["sse", "news"], &[1, 1]).await;
    let mut on_two = Reader::new(of_two.into_iter().next().unwrap());
    publish_raw(&mut conn, "sse", r#"{"data": "still", "id": "s"}"#).await;
    assert_eq!(on_two.next().await, "data: still\nid: s\n\n");
}

#[tokio::test]
async fn resume_on_the_same_broker_replays_from_its_history() {
    let redis = redis_server!();
    let broker = connect(&redis.url(), Broker::builder().history(10).id_base(0)).await;
    let mut conn = app(&redis.url()).await;
    // Another browser keeps the channel, and its history, on this broker.
    let mut keeper = Reader::subscribe(&broker, "sse").await;
    let mut client = Reader::subscribe(&broker, "sse").await;
    publish_raw(&mut conn, "sse", r#"{"data": "a", "id": "id-a"}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "b", "id": 42}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "c"}"#).await;
    assert_eq!(client.next().await, "data: a\nid: id-a\n\n");
    assert_eq!(client.next().await, "data: b\nid: 42\n\n");
    assert_eq!(client.next().await, "data: c\nid: 3\n\n");
    drop(client);
    publish_raw(&mut conn, "sse", r#"{"data": "d", "id": "id-d"}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "e"}"#).await;
    let missed = [
        "data: b\nid: 42\n\n",
        "data: c\nid: 3\n\n",
        "data: d\nid: id-d\n\n",
        "data: e\nid: 5\n\n",
    ];
    assert_eq!(keeper.next().await, "data: a\nid: id-a\n\n");
    for frame in missed {
        assert_eq!(keeper.next().await, frame);
    }

    // From each kind of id: the app's string, the app's number, the broker's own.
    for (last_event_id, from) in [("id-a", 0), ("42", 1), ("3", 2), ("id-d", 3), ("5", 4)] {
        let sub = broker
            .resume(&channels(&broker, "sse"), last_event_id)
            .await
            .unwrap();
        assert_eq!(sub.resume(), Resume::Complete, "{last_event_id}");
        let mut reader = Reader::new(sub);
        for frame in &missed[from..] {
            assert_eq!(reader.next().await, *frame, "after {last_event_id}");
        }
        reader.assert_idle();
    }
}

#[tokio::test]
async fn resume_on_another_broker_gets_the_gap_unless_it_has_the_apps_id() {
    let redis = redis_server!();
    // Two starts (by default from the clock, in milliseconds times a million).
    let one = connect(&redis.url(), Broker::builder().history(10).id_base(0)).await;
    let two = connect(
        &redis.url(),
        Broker::builder().history(10).id_base(1_000_000),
    )
    .await;
    let mut on_one = Reader::subscribe(&one, "sse").await;
    let mut on_two = Reader::subscribe(&two, "sse").await;
    let mut conn = app(&redis.url()).await;
    publish_raw(&mut conn, "sse", r#"{"data": "own id"}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "app's id", "id": "app-1"}"#).await;
    publish_raw(&mut conn, "sse", r#"{"data": "after"}"#).await;
    let own = on_one.next().await;
    let on_two_own = on_two.next().await;
    assert_ne!(id_of(&own), id_of(&on_two_own), "each broker numbers it");
    for reader in [&mut on_one, &mut on_two] {
        assert_eq!(reader.next().await, "data: app's id\nid: app-1\n\n");
        reader.next().await;
    }

    // One's own id means nothing to two: the gap, never a silent loss.
    let sub = two
        .resume(&channels(&two, "sse"), id_of(&own))
        .await
        .unwrap();
    assert_eq!(sub.resume(), Resume::Unknown);
    // The app's id: two delivered that event too, and resumes after it.
    let sub = two.resume(&channels(&two, "sse"), "app-1").await.unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    let mut reader = Reader::new(sub);
    assert!(reader.next().await.starts_with("data: after\nid: "));
    // An id neither knows.
    let sub = two.resume(&channels(&two, "sse"), "app-0").await.unwrap();
    assert_eq!(sub.resume(), Resume::Unknown);
}

#[tokio::test]
async fn a_resume_from_before_the_channel_was_subscribed_again_gets_the_gap() {
    let redis = redis_server!();
    // The channel, its history and its subscription go with the last client.
    let broker = connect(&redis.url(), Broker::builder().history(10).id_base(0)).await;
    let mut conn = app(&redis.url()).await;
    let mut client = Reader::subscribe(&broker, "sse").await;
    publish_raw(&mut conn, "sse", r#"{"data": "seen"}"#).await;
    assert_eq!(client.next().await, "data: seen\nid: 1\n\n");
    drop(client);
    wait_numsub(&mut conn, &["sse"], &[0]).await;
    // Published while nobody here listened: lost to this broker.
    assert_eq!(
        publish_raw(&mut conn, "sse", r#"{"data": "lost"}"#).await,
        0
    );
    let sub = broker.resume(&channels(&broker, "sse"), "1").await.unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
    let mut reader = Reader::new(sub);
    publish_raw(&mut conn, "sse", r#"{"data": "next"}"#).await;
    assert_eq!(reader.next().await, "data: next\nid: 2\n\n");
    // A resume from that one is complete again.
    let sub = broker.resume(&channels(&broker, "sse"), "2").await.unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
}

#[tokio::test]
async fn after_a_redis_restart_streams_get_later_messages_and_resumes_get_the_gap() {
    let mut redis = redis_server!();
    let broker = connect(&redis.url(), Broker::builder().history(10).id_base(0)).await;
    let mut stream = Reader::subscribe(&broker, "sse").await;
    let mut conn = app(&redis.url()).await;
    publish_raw(&mut conn, "sse", r#"{"data": "before", "id": "b"}"#).await;
    assert_eq!(stream.next().await, "data: before\nid: b\n\n");
    wait_until("ready", || broker.is_ready()).await;

    redis.kill();
    guard("not ready while Redis is down", async {
        while broker.is_ready() {
            pause().await;
        }
    })
    .await;
    let err = broker
        .publish("sse", Event::default().data("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Backend(_) | PublishError::Unknown(_)),
        "{err}"
    );
    redis.restart(&[]).await;
    // Ready again once the channels are subscribed again: then every message reaches us.
    guard("ready again", async {
        while !broker.is_ready() {
            pause().await;
        }
    })
    .await;
    let mut conn = app(&redis.url()).await;
    assert_eq!(numsub(&mut conn, &["sse"]).await, [1]);
    publish_raw(&mut conn, "sse", r#"{"data": "after", "id": "a"}"#).await;
    // The open stream goes on, with nothing in between.
    assert_eq!(stream.next().await, "data: after\nid: a\n\n");
    stream.assert_idle();
    // What was published while the broker was away is unknown: a resume from before says so.
    let sub = broker.resume(&channels(&broker, "sse"), "b").await.unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
    let sub = broker.resume(&channels(&broker, "sse"), "a").await.unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
}

#[tokio::test]
async fn a_publish_to_several_channels_is_refused_as_flask_sse_names_one() {
    let redis = redis_server!();
    let broker = connect(&redis.url(), Broker::builder()).await;
    let two = broker.channel_rules().channels(["a", "b"]).unwrap();
    let refused = broker.publish_to(&two, Event::default().data("x")).await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Channel(ChannelError::TooMany(1)))
        ),
        "{refused:?}"
    );
    // Nothing reached Redis; one channel through the same call is published.
    let mut sub = Reader::new(broker.subscribe(&channels(&broker, "a,b")).await.unwrap());
    let one = broker.channel_rules().channels(["b"]).unwrap();
    broker
        .publish_to(&one, Event::default().data("y"))
        .await
        .unwrap();
    assert!(sub.next().await.starts_with("data: y\n"));
    sub.assert_idle();
}
