//! The Redis backend against a real `redis-server`: each test starts its own on a free loopback
//! port, without persistence, and kills it when done. Without `redis-server` the tests say so
//! on stderr and pass, unless `TOWER_SSE_REQUIRE_REDIS=1`.
//!
//! Measurement (not run by default):
//! `cargo test --release --all-features --test redis -- --ignored --nocapture latency`
#![cfg(feature = "redis")]

use tower_sse_test_support as support;

use tower_sse_test_support::redis_server;

#[path = "common/reader.rs"]
#[allow(dead_code)] // each file uses its part
mod reader;

use reader::{Reader, channels};
use std::{
    future::Future,
    ops::RangeInclusive,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use redis_server::Stopped;
use support::guard;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Notify,
};
use tower_sse::{Broker, ConnectError, Event, PublishError, Resume, SubscribeError};

/// Between checks of a state only Redis or a child process knows.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn connect(url: &str, history: usize) -> Broker {
    tower_sse::redis::connect(Broker::builder().history(history), url)
        .await
        .expect("connect to Redis")
}

/// The bytes a client receives for an event with data `data` and id `id`.
fn frame(data: &str, id: &str) -> String {
    format!("data: {data}\nid: {id}\n\n")
}

/// The frames of events `e{i}` with ids `i`, for `i` in `ids`.
fn frames(ids: RangeInclusive<usize>) -> Vec<String> {
    ids.map(|i| frame(&format!("e{i}"), &i.to_string()))
        .collect()
}

/// Resumes `list` on `broker` after `id`: what the resume says, and a reader for the rest.
async fn resume_from(broker: &Broker, list: &str, id: &str) -> (Resume, Reader) {
    let sub = broker.resume(&channels(broker, list), id).await.unwrap();
    (sub.resume(), Reader::new(sub))
}

async fn publish(broker: &Broker, channel: &str, data: &str) -> String {
    guard(
        "publish",
        broker.publish(channel, Event::default().data(data)),
    )
    .await
    .expect("publish")
}

/// Publishes until Redis takes it again (the connection manager reconnects).
async fn publish_when_back(broker: &Broker, channel: &str, data: &str) -> String {
    retry_when_back(broker, channel, Event::default().data(data)).await
}

/// Publishes `event` until Redis takes it.
async fn retry_when_back(broker: &Broker, channel: &str, event: Event) -> String {
    guard("publish after Redis is back", async {
        loop {
            match broker.publish(channel, event.clone()).await {
                Ok(id) => return id,
                Err(PublishError::Backend(_) | PublishError::Unknown(_)) => pause().await,
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await
}

async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("tower-sse:channel:{channel}"))
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

#[tokio::test]
async fn two_brokers_share_channels_ids_and_order() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let b = connect(&redis.url(), 100).await;
    let mut b_ab = Reader::new(b.subscribe(&channels(&b, "a,b")).await.unwrap());
    let mut b_c = Reader::new(b.subscribe(&channels(&b, "c")).await.unwrap());
    let mut a_b = Reader::new(a.subscribe(&channels(&a, "b")).await.unwrap());

    let names = ["a", "b", "c"];
    let mut expected: [Vec<String>; 3] = Default::default();
    for i in 1..=30 {
        // Alternately on each broker: one counter in Redis.
        let publisher = if i % 2 == 1 { &a } else { &b };
        let channel = i % 3;
        let data = format!("{}{i}", names[channel]);
        let id = publish(publisher, names[channel], &data).await;
        assert_eq!(id, i.to_string());
        expected[channel].push(frame(&data, &id));
    }
    // Every field survives the trip through Redis, byte for byte.
    let event = Event::default()
        .event("tick")
        .data("two\nlines")
        .retry(Duration::from_millis(1500));
    assert_eq!(a.publish("b", event).await.unwrap(), "31");
    expected[1].push("event: tick\ndata: two\ndata: lines\nretry: 1500\nid: 31\n\n".into());
    // Ends each stream: nothing from other channels may come before it.
    for channel in ["a", "c"] {
        let id = publish(&b, channel, "end").await;
        expected[if channel == "a" { 0 } else { 2 }].push(frame("end", &id));
    }

    let mut ab: Vec<String> = Vec::new();
    // In publish order: merge a's and b's by id.
    let mut merged: Vec<(u64, String)> = expected[0]
        .iter()
        .chain(&expected[1])
        .map(|f| {
            (
                f.rsplit("id: ").next().unwrap().trim().parse().unwrap(),
                f.clone(),
            )
        })
        .collect();
    merged.sort_by_key(|(id, _)| *id);
    ab.extend(merged.into_iter().map(|(_, f)| f));
    assert_eq!(b_ab.take(ab.len()).await, ab);
    assert_eq!(b_c.take(expected[2].len()).await, expected[2]);
    assert_eq!(a_b.take(expected[1].len()).await, expected[1]);
    b_ab.assert_idle();
    b_c.assert_idle();
    a_b.assert_idle();

    // Both publishing at once: each stream still comes in id order, all of it.
    let tasks = [a.clone(), b.clone()].map(|broker| {
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                let channel = ["a", "b"][i % 2];
                let id = publish(&broker, channel, "x").await;
                ids.push(id.parse::<u64>().unwrap());
                tokio::task::yield_now().await;
            }
            ids
        })
    });
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids.sort_unstable();
    let expected: Vec<String> = ids.iter().map(|id| frame("x", &id.to_string())).collect();
    assert_eq!(b_ab.take(200).await, expected);
    b_ab.assert_idle();
}

#[tokio::test]
async fn an_event_of_several_channels_comes_once_on_every_instance() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let b = connect(&redis.url(), 100).await;
    let (_, mut both) = resume_from(&b, "x,y,z", "0").await;
    let (_, mut x) = resume_from(&b, "x", "0").await;
    let first = publish(&a, "x", "before").await;
    let pair = channels(&a, "x,y");
    let id = guard(
        "publish",
        a.publish_to(&pair, Event::default().data("both")),
    )
    .await
    .unwrap();
    let last = publish(&a, "z", "after").await;
    let expected = [
        frame("before", &first),
        frame("both", &id),
        frame("after", &last),
    ];
    assert_eq!(both.take(3).await, expected);
    assert_eq!(x.take(2).await, expected[..2]);
    both.assert_idle();
    // Kept in each channel's history; a resume on several of them replays it once.
    let (resumed, mut replay) = resume_from(&b, "y,x,z", &first).await;
    assert_eq!(resumed, Resume::Complete);
    assert_eq!(replay.take(2).await, expected[1..]);
    replay.assert_idle();
    // Everything kept, from the first. A gap all the same: a channel's history that began
    // after other events were numbered can't tell whether some of those were its own.
    let earliest = b.resume_earliest(&channels(&b, "z,y,x")).await.unwrap();
    assert_eq!(earliest.resume(), Resume::Gap);
    let mut earliest = Reader::new(earliest);
    assert_eq!(earliest.take(3).await, expected);
    earliest.assert_idle();
    // All or nothing: a bad name publishes nowhere.
    let bad = channels(&a, "x,y");
    let refused = a.publish_to(&bad, Event::default().id("\n")).await;
    assert!(
        matches!(refused, Err(PublishError::Event(_))),
        "{refused:?}"
    );
    x.assert_idle();
}

#[tokio::test]
async fn resume_on_another_instance_replays_then_goes_live() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let b = connect(&redis.url(), 100).await;
    let abc = ["a", "b", "c"];
    let mut all = Vec::new();
    for i in 1..=10 {
        let channel = abc[i % 3];
        let id = publish(&a, channel, &format!("e{i}")).await;
        all.push((channel, frame(&format!("e{i}"), &id)));
    }
    // More events race with the resume: each must come exactly once, replayed or live.
    let publisher = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 11..=60 {
                let channel = abc[i % 3];
                let id = publish(&a, channel, &format!("e{i}")).await;
                sent.push((channel, frame(&format!("e{i}"), &id)));
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    let (resumed, mut sub) = resume_from(&b, "a,b", "4").await;
    assert_eq!(resumed, Resume::Complete);
    all.extend(publisher.await.unwrap());
    let expected: Vec<String> = all[4..]
        .iter()
        .filter(|(channel, _)| *channel != "c")
        .map(|(_, f)| f.clone())
        .collect();
    assert_eq!(sub.take(expected.len()).await, expected);
    let id = publish(&a, "a", "live").await;
    assert_eq!(sub.next().await, frame("live", &id));
    sub.assert_idle();

    // A publisher's own id, not a number.
    publish(&a, "p", "before").await;
    let given = a
        .publish("p", Event::default().id("order-7").data("x"))
        .await
        .unwrap();
    assert_eq!(given, "order-7");
    let after = publish(&a, "p", "y").await;
    let (resumed, mut sub) = resume_from(&b, "p", "order-7").await;
    assert_eq!(resumed, Resume::Complete);
    assert_eq!(sub.next().await, frame("y", &after));
    sub.assert_idle();
}

#[tokio::test]
async fn resume_older_than_the_history_is_a_gap_and_unknown_ids_are_live() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 5).await;
    let b = connect(&redis.url(), 5).await;
    for i in 1..=20 {
        assert_eq!(publish(&a, "a", &format!("e{i}")).await, i.to_string());
    }
    let kept = frames(16..=20);
    let mut readers = Vec::new();
    for (id, resume, replayed) in [
        ("1", Resume::Gap, &kept[..]),
        ("14", Resume::Gap, &kept[..]),
        // 15 is the last one dropped: nothing after it is missing.
        ("15", Resume::Complete, &kept[..]),
        ("18", Resume::Complete, &kept[3..]),
        ("20", Resume::Complete, &[][..]),
        ("nope", Resume::Unknown, &[][..]),
        ("21", Resume::Unknown, &[][..]),
        ("015", Resume::Unknown, &[][..]),
    ] {
        let (resumed, mut reader) = resume_from(&b, "a", id).await;
        assert_eq!(resumed, resume, "resume from {id:?}");
        assert_eq!(reader.take(replayed.len()).await, replayed, "from {id:?}");
        readers.push(reader);
    }
    let id = publish(&a, "a", "live").await;
    assert_eq!(id, "21");
    for reader in &mut readers {
        assert_eq!(reader.next().await, frame("live", "21"));
        reader.assert_idle();
    }
}

#[tokio::test]
async fn invalid_input_never_reaches_redis() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let b = connect(&redis.url(), 100).await;
    let mut sub = Reader::new(b.subscribe(&channels(&b, "a")).await.unwrap());
    assert!(matches!(
        a.publish("a", Event::default().id("x\ny").data("bad"))
            .await,
        Err(PublishError::Event(_))
    ));
    assert!(matches!(
        a.publish("a", Event::default().event("x\ry")).await,
        Err(PublishError::Event(_))
    ));
    for bad in ["", "a b", "a,b", "a\n"] {
        assert!(
            matches!(
                a.publish(bad, Event::default().data("bad")).await,
                Err(PublishError::Channel(_))
            ),
            "{bad:?}"
        );
    }
    let mut conn = redis.admin(&redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tower-sse:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Only the epoch the instances wrote on connect.
    assert_eq!(keys, ["tower-sse:epoch"]);
    // No id was used either.
    assert_eq!(publish(&a, "a", "ok").await, "1");
    assert_eq!(sub.next().await, frame("ok", "1"));
    sub.assert_idle();
}

#[tokio::test]
async fn streams_survive_a_redis_restart() {
    let mut redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let b = connect(&redis.url(), 100).await;
    let mut ab = Reader::new(b.subscribe(&channels(&b, "a,b")).await.unwrap());
    let mut c = Reader::new(b.subscribe(&channels(&b, "c")).await.unwrap());
    let abc = ["a", "b", "c"];
    let mut last = 0;
    for i in 1..=9u64 {
        let id = publish(&a, abc[i as usize % 3], &format!("before{i}")).await;
        assert_eq!(id, i.to_string());
        let frame = frame(&format!("before{i}"), &id);
        let reader = if i % 3 == 2 { &mut c } else { &mut ab };
        assert_eq!(reader.next().await, frame);
        last = i;
    }

    redis.kill();
    for i in 0..3 {
        let result = guard(
            "publish while down",
            a.publish("a", Event::default().data("lost")),
        );
        // The first may find the connection lost on the way: the outcome is unknown then.
        match result.await {
            Err(PublishError::Backend(err) | PublishError::Unknown(err)) => {
                eprintln!("publish {i} while down: {err}");
            }
            other => panic!("publish while Redis is down: {other:?}"),
        }
    }
    ab.assert_idle();
    c.assert_idle();

    redis.restart(&[]).await;
    let mut expected_ab = Vec::new();
    let mut expected_c = Vec::new();
    let mut ids = Vec::new();
    for i in 1..=30 {
        let data = format!("after{i}");
        let channel = abc[i % 3];
        let id = if i == 1 {
            publish_when_back(&a, channel, &data).await
        } else {
            publish(&a, channel, &data).await
        };
        ids.push(id.parse::<u64>().expect("a sequence number"));
        let expected = if channel == "c" {
            &mut expected_c
        } else {
            &mut expected_ab
        };
        expected.push(frame(&data, &id));
        // While B may still be reconnecting, then after: some come live, some backfilled.
        tokio::task::yield_now().await;
    }
    // Redis lost the counter; ids go on from the highest any instance had seen.
    assert!(ids[0] > last, "ids went back: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ab.take(expected_ab.len()).await, expected_ab);
    assert_eq!(c.take(expected_c.len()).await, expected_c);
    ab.assert_idle();
    c.assert_idle();

    // And B, which was cut off too, publishes again.
    let id = publish_when_back(&b, "c", "from b").await;
    assert_eq!(c.next().await, frame("from b", &id));
    ab.assert_idle();
}

/// The counter restarts from 1 when no instance that knew the old ids publishes first: the
/// subscriber must still take the new events, though their ids are not above what it saw.
#[tokio::test]
async fn data_loss_is_noticed_when_new_ids_reuse_old_ones() {
    let mut redis = redis_server!();
    let b = connect(&redis.url(), 100).await;
    let mut sub = Reader::new(b.subscribe(&channels(&b, "a")).await.unwrap());
    for i in 1..=3 {
        let id = publish(&b, "a", &format!("old{i}")).await;
        assert_eq!(sub.next().await, frame(&format!("old{i}"), &id));
    }
    // B can't resubscribe until unlocked.
    let locked = redis.restart_locked().await;
    let fresh = connect(&locked, 100).await;
    let mut expected = Vec::new();
    // More than B had seen, so "counter below what B saw" alone would not tell.
    for i in 1..=6 {
        let id = publish(&fresh, "a", &format!("new{i}")).await;
        assert_eq!(id, i.to_string());
        expected.push(frame(&format!("new{i}"), &id));
    }
    redis.unlock(&locked).await;
    assert_eq!(sub.take(6).await, expected);
    // Once B is back, ids go on above what it had seen.
    let id = publish(&fresh, "a", "new7").await;
    assert_eq!(sub.next().await, frame("new7", &id));
    let id = publish_when_back(&b, "a", "new8").await;
    assert_eq!(sub.next().await, frame("new8", &id));
    sub.assert_idle();
}

/// As above, for a stream that was resumed before the loss.
#[tokio::test]
async fn data_loss_with_reused_ids_and_a_resumed_stream() {
    let mut redis = redis_server!();
    let b = connect(&redis.url(), 100).await;
    for i in 1..=3 {
        publish(&b, "a", &format!("old{i}")).await;
    }
    let (_, mut sub) = resume_from(&b, "a", "1").await;
    assert_eq!(sub.take(2).await, [frame("old2", "2"), frame("old3", "3")]);
    let locked = redis.restart_locked().await;
    let fresh = connect(&locked, 100).await;
    let mut expected = Vec::new();
    for i in 1..=6 {
        let id = publish(&fresh, "a", &format!("new{i}")).await;
        expected.push(frame(&format!("new{i}"), &id));
    }
    redis.unlock(&locked).await;
    assert_eq!(sub.take(6).await, expected);
}

/// As above, for a stream over two channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_loss_with_reused_ids_on_two_channels() {
    let mut redis = redis_server!();
    // A buffer for the whole backfill, which comes at once.
    let b = tower_sse::redis::connect(Broker::builder().buffer(5000).history(5000), &redis.url())
        .await
        .unwrap();
    let mut conn = redis.admin(&redis.url()).await;
    let () = redis::cmd("SET")
        .arg("tower-sse:seq")
        .arg(1_000_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sub = Reader::new(b.subscribe(&channels(&b, "a,b")).await.unwrap());
    let id = publish(&b, "a", "old").await;
    assert_eq!(sub.next().await, frame("old", &id));
    let locked = redis.restart_locked().await;
    let fresh = connect(&locked, 5000).await;
    let mut expected = Vec::new();
    for i in 1..=4000 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        let id = publish(&fresh, channel, &format!("new{i}")).await;
        expected.push(frame(&format!("new{i}"), &id));
    }
    // On a thread of its own, so it reads while the backfill delivers.
    let reader = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(sub.take(4000))
    });
    redis.unlock(&locked).await;
    let received = tokio::task::spawn_blocking(|| reader.join().unwrap());
    let received = guard("reader", received).await.unwrap();
    assert!(received == expected, "out of order");
}

#[tokio::test]
async fn a_killed_subscription_connection_is_backfilled() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 1000).await;
    let b = connect(&redis.url(), 1000).await;
    let mut sub = Reader::new(b.subscribe(&channels(&b, "a,b")).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 900 {
                i += 1;
                let channel = ["a", "b", "c"][i % 3];
                let id = publish(&a, channel, &format!("e{i}")).await;
                if channel != "c" {
                    sent.push(frame(&format!("e{i}"), &id));
                }
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    let mut conn = redis.admin(&redis.url()).await;
    let mut received = Vec::new();
    for until in [50, 150, 250] {
        while received.len() < until {
            received.push(sub.next().await);
        }
        if until < 250 {
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(killed >= 1, "no subscription connection to kill");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = guard("publisher", publisher).await.unwrap();
    assert!(sent.len() >= 250);
    while received.len() < sent.len() {
        received.push(sub.next().await);
    }
    assert_eq!(received, sent);
    let id = publish(&a, "b", "last").await;
    assert_eq!(sub.next().await, frame("last", &id));
    sub.assert_idle();
}

#[tokio::test]
async fn one_redis_subscription_per_instance_and_channel() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 0).await;
    let b = connect(&redis.url(), 0).await;
    let mut conn = redis.admin(&redis.url()).await;
    let x = channels(&b, "x");
    let mut subs = Vec::new();
    for i in 0..500 {
        subs.push(b.subscribe(&x).await.unwrap());
        if i % 100 == 0 {
            assert_eq!(numsub(&mut conn, "x").await, 1);
        }
    }
    assert_eq!(numsub(&mut conn, "x").await, 1);
    assert_eq!(b.subscriber_count("x"), 500);
    let other = a.subscribe(&x).await.unwrap();
    assert_eq!(numsub(&mut conn, "x").await, 2);

    // All 500 get one publish, through that one subscription.
    let id = publish(&a, "x", "hi").await;
    for sub in &mut subs {
        let bytes = guard("fan-out", sub.recv()).await.unwrap();
        assert_eq!(bytes, frame("hi", &id));
    }

    subs.truncate(1);
    assert_eq!(numsub(&mut conn, "x").await, 2);
    drop(subs);
    guard("B unsubscribes", async {
        while numsub(&mut conn, "x").await != 1 {
            pause().await;
        }
    })
    .await;
    drop(other);
    guard("A unsubscribes", async {
        while numsub(&mut conn, "x").await != 0 {
            pause().await;
        }
    })
    .await;
    // And subscribing again takes it again.
    let _again = b.subscribe(&x).await.unwrap();
    assert_eq!(numsub(&mut conn, "x").await, 1);
}

#[tokio::test]
async fn a_new_channel_while_redis_is_down_is_refused() {
    let mut redis = redis_server!();
    let b = connect(&redis.url(), 100).await;
    let mut old = Reader::new(b.subscribe(&channels(&b, "old")).await.unwrap());
    redis.kill();
    assert!(matches!(
        guard(
            "connect",
            tower_sse::redis::connect(Broker::builder(), &redis.url())
        )
        .await,
        Err(ConnectError { .. })
    ));
    assert!(matches!(
        guard("subscribe", b.subscribe(&channels(&b, "new"))).await,
        Err(SubscribeError::Backend(_))
    ));
    assert!(matches!(
        guard("subscribe", b.subscribe(&channels(&b, "old,new"))).await,
        Err(SubscribeError::Backend(_))
    ));
    assert_eq!(b.subscriber_count("new"), 0);
    // A channel this instance already holds a Redis subscription for goes on.
    let mut also_old = Reader::new(
        guard("subscribe", b.subscribe(&channels(&b, "old")))
            .await
            .unwrap(),
    );
    // Unknown if it finds the connection lost on the way.
    assert!(matches!(
        guard("publish", b.publish("old", Event::default())).await,
        Err(PublishError::Backend(_) | PublishError::Unknown(_))
    ));
    old.assert_idle();

    redis.restart(&[]).await;
    let new = guard("subscribe once Redis is back", async {
        loop {
            match b.subscribe(&channels(&b, "new")).await {
                Ok(sub) => return sub,
                Err(SubscribeError::Backend(_)) => pause().await,
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await;
    let mut new = Reader::new(new);
    let id = publish_when_back(&b, "new", "n").await;
    assert_eq!(new.next().await, frame("n", &id));
    let id = publish(&b, "old", "o").await;
    assert_eq!(old.next().await, frame("o", &id));
    assert_eq!(also_old.next().await, frame("o", &id));
}

// Issue 14: a Redis that stops answering, and what Redis keeps.

/// How soon a request must be answered while Redis is paused ("within a few seconds"), with
/// room for a busy machine. A hang guard: nothing is measured against it.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Awaits `future`; panics if no answer comes within [`ANSWER_WITHIN`]. Prints how long it
/// took (`--nocapture`).
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let start = Instant::now();
    match tokio::time::timeout(ANSWER_WITHIN, future).await {
        Ok(output) => {
            eprintln!("{what}: answered in {:?}", start.elapsed());
            output
        }
        Err(_) => panic!("{what}, with Redis paused: no answer within {ANSWER_WITHIN:?}"),
    }
}

/// Issue 14, item 6, on the broker: with Redis paused (`SIGSTOP`: TCP up, nothing answers), a
/// new subscription, a resume and a publish each fail within seconds (a new subscription hung
/// until Redis came back, and so did everything queued behind it), while a channel already
/// subscribed still takes subscribers. Once Redis goes on, the broker recovers by itself, and
/// the publish retried with its id is delivered once.
#[tokio::test]
async fn a_paused_redis_fails_requests_within_seconds_then_recovers() {
    let redis = redis_server!();
    let b = connect(&redis.url(), 100).await;
    let mut old = Reader::new(b.subscribe(&channels(&b, "old")).await.unwrap());
    let stopped = Stopped::new(redis.pid()).await;

    for what in ["a new subscription", "the same again"] {
        let new = within(what, b.subscribe(&channels(&b, "new"))).await;
        assert!(matches!(new, Err(SubscribeError::Backend(_))), "{what}");
    }
    let resumed = within("a resume", b.resume(&channels(&b, "old"), "1")).await;
    assert!(matches!(resumed, Err(SubscribeError::Backend(_))));
    let order = Event::default().id("order-1").data("during");
    let published = within("a publish", b.publish("old", order.clone())).await;
    match published {
        // Backend until the broker maps an unknown outcome to its own variant.
        Err(PublishError::Unknown(err) | PublishError::Backend(err)) => eprintln!("{err}"),
        other => panic!("a publish with Redis paused: {other:?}"),
    }
    let old_only = channels(&b, "old");
    let also_old = within("a channel already subscribed", b.subscribe(&old_only)).await;
    let mut also_old = Reader::new(also_old.expect("a channel already subscribed"));

    let continued = Instant::now();
    drop(stopped);
    let new = guard("a new subscription once Redis is back", async {
        loop {
            match b.subscribe(&channels(&b, "new")).await {
                Ok(sub) => return sub,
                Err(SubscribeError::Backend(_)) => pause().await,
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await;
    eprintln!(
        "a new subscription succeeds {:?} after SIGCONT",
        continued.elapsed()
    );
    let mut new = Reader::new(new);
    // The publisher does not know whether it went through: it retries with the same id.
    assert_eq!(retry_when_back(&b, "old", order).await, "order-1");
    let id = publish(&b, "old", "after").await;
    let expected = [frame("during", "order-1"), frame("after", &id)];
    assert_eq!(old.take(2).await, expected);
    assert_eq!(also_old.take(2).await, expected);
    let id = publish(&b, "new", "new").await;
    assert_eq!(new.next().await, frame("new", &id));
    old.assert_idle();
    also_old.assert_idle();
}

/// Issue 14, item 6: the queue to the subscription task is bounded. With Redis paused, a
/// burst of subscriptions to new channels past it fails at once, and the rest within
/// seconds: none waits for Redis (they all did, queued without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_channels_on_a_paused_redis_is_refused_not_queued() {
    let redis = redis_server!();
    let b = connect(&redis.url(), 0).await;
    let _stopped = Stopped::new(redis.pid()).await;
    let burst = (0..2000).map(|i| {
        let b = b.clone();
        tokio::spawn(async move {
            let new = channels(&b, &format!("c{i}"));
            match b.subscribe(&new).await {
                Ok(_) => panic!("subscribed to c{i} with Redis paused"),
                Err(SubscribeError::Backend(err)) => err.to_string(),
                Err(err) => panic!("{err}"),
            }
        })
    });
    let errors = within(
        "2,000 new subscriptions",
        futures_util::future::join_all(burst),
    )
    .await;
    let full = errors
        .iter()
        .filter(|err| err.as_ref().unwrap().contains("under way"))
        .count();
    eprintln!("{full} of 2,000 refused at once, the queue full");
    assert!(full > 0, "{:?}", errors.first());
}

/// A TCP proxy to Redis that can freeze the pub/sub connections through it: they stay open
/// and pass nothing more either way, as over a partition.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<Arc<Proxied>>>>,
}

/// One connection through the [`Proxy`].
#[derive(Default)]
struct Proxied {
    /// It sent SUBSCRIBE.
    subscriber: AtomicBool,
    frozen: AtomicBool,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let list = conns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let state = Arc::new(Proxied::default());
                list.lock().unwrap().push(state.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Proxy::pass(client_read, server_write, state.clone(), true));
                tokio::spawn(Proxy::pass(server_read, client_write, state, false));
            }
        });
        Proxy { port, conns }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Freezes every connection that has sent SUBSCRIBE; returns how many.
    fn freeze_subscribers(&self) -> usize {
        let conns = self.conns.lock().unwrap();
        let subscribers = conns.iter().filter(|c| c.subscriber.load(Ordering::SeqCst));
        subscribers
            .map(|c| c.frozen.store(true, Ordering::SeqCst))
            .count()
    }

    async fn pass(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        state: Arc<Proxied>,
        upstream: bool,
    ) {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if upstream && buf[..n].windows(9).any(|w| w == b"SUBSCRIBE") {
                state.subscriber.store(true, Ordering::SeqCst);
            }
            if state.frozen.load(Ordering::SeqCst) {
                // Frozen: hold the connection open, passing nothing, until the test ends.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// Issue 14, item 6: the subscription connection goes silent (TCP up, nothing comes through,
/// as over a partition). The PING health check finds it; the broker replaces the connection
/// and backfills what was published meanwhile (the stream waited for ever).
#[tokio::test]
async fn a_silent_subscription_connection_is_replaced_and_backfilled() {
    let redis = redis_server!();
    let proxy = Proxy::start(redis.port).await;
    let a = connect(&redis.url(), 100).await;
    let b = connect(&proxy.url(), 100).await;
    let mut sub = Reader::new(b.subscribe(&channels(&b, "a")).await.unwrap());
    let id = publish(&a, "a", "before").await;
    assert_eq!(sub.next().await, frame("before", &id));

    assert_eq!(proxy.freeze_subscribers(), 1);
    let silent = Instant::now();
    let mut missed = Vec::new();
    for i in 1..=3 {
        let id = publish(&a, "a", &format!("silent{i}")).await;
        missed.push(frame(&format!("silent{i}"), &id));
    }
    assert_eq!(sub.take(3).await, missed);
    eprintln!(
        "the silent connection was replaced and backfilled {:?} after it went silent",
        silent.elapsed()
    );
    let id = publish(&a, "a", "live").await;
    assert_eq!(sub.next().await, frame("live", &id));
    sub.assert_idle();
}

/// Issue 14, item 6: a publish repeated with the same id, event and channel (a publisher
/// retrying after an unknown outcome) is published once, from any instance and with history
/// or without; the same id with another event, the same event on another channel, and events
/// without an id are published as usual (every repeat was published again).
#[tokio::test]
async fn a_repeated_publish_with_an_id_is_published_once() {
    let redis = redis_server!();
    for history in [100, 0] {
        let a = connect(&redis.url(), history).await;
        let b = connect(&redis.url(), history).await;
        let (orders, other) = (format!("orders{history}"), format!("other{history}"));
        let mut sub = Reader::new(
            b.subscribe(&channels(&b, &format!("{orders},{other}")))
                .await
                .unwrap(),
        );
        let order = || Event::default().id("order-1").data("one");
        for publisher in [&a, &a, &b] {
            assert_eq!(
                publisher.publish(&orders, order()).await.unwrap(),
                "order-1"
            );
        }
        let changed = order().data("changed");
        assert_eq!(a.publish(&orders, changed).await.unwrap(), "order-1");
        assert_eq!(a.publish(&other, order()).await.unwrap(), "order-1");
        let x = publish(&a, &orders, "x").await;
        let y = publish(&a, &orders, "x").await;
        assert_ne!(x, y);
        assert_eq!(
            sub.take(5).await,
            [
                frame("one", "order-1"),
                frame("changed", "order-1"),
                frame("one", "order-1"),
                frame("x", &x),
                frame("x", &y),
            ],
            "history {history}"
        );
        sub.assert_idle();
    }
}

/// Issue 14, item 6: what Redis keeps per channel expires, so that name churn does not grow it
/// for ever: the history and its id index 1 day after the channel's last publish, the clock
/// too, the repeat marks after 10 minutes; only the counter and the epoch stay (every history
/// was kept for ever).
#[tokio::test]
async fn what_redis_keeps_per_channel_expires() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    publish(&a, "a", "x").await;
    let given = Event::default().id("given").data("y");
    assert_eq!(a.publish("a", given).await.unwrap(), "given");
    let mut conn = redis.admin(&redis.url()).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("tower-sse:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "tower-sse:clock",
            "tower-sse:epoch",
            "tower-sse:history:a",
            "tower-sse:ids:a",
            "tower-sse:pubid:a given",
            "tower-sse:seq",
        ]
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected = match key.as_str() {
            "tower-sse:seq" | "tower-sse:epoch" => -1..=-1,
            "tower-sse:pubid:a given" => 1..=10 * 60 * 1000,
            _ => 1..=24 * 60 * 60 * 1000,
        };
        assert!(expected.contains(&ttl), "PTTL {key}: {ttl} ms");
    }
}

/// Issue 14, item 6: a resume that needed an expired history gets the gap, and a channel
/// without history does not make a recent id a gap. The expiry is simulated: the history
/// deleted, and the clock as a day later, with only newer samples left (a resume on an expired
/// history was complete, with nothing replayed).
#[tokio::test]
async fn a_resume_past_an_expired_history_is_a_gap() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    for i in 1..=5 {
        publish(&a, "a", &format!("e{i}")).await;
    }
    let (resumed, mut sub) = resume_from(&a, "a,quiet", "3").await;
    assert_eq!(resumed, Resume::Complete, "a channel never published to");
    assert_eq!(sub.take(2).await, [frame("e4", "4"), frame("e5", "5")]);

    let mut conn = redis.admin(&redis.url()).await;
    let () = redis::cmd("DEL")
        .arg(&["tower-sse:history:a", "tower-sse:ids:a", "tower-sse:clock"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&["tower-sse:clock", "*", "s", "5"])
        .query_async(&mut conn)
        .await
        .unwrap();
    for list in ["a", "quiet"] {
        let (resumed, mut sub) = resume_from(&a, list, "3").await;
        assert_eq!(resumed, Resume::Gap, "{list}, expired");
        sub.assert_idle();
    }
    // The history again, from the next publish: still a gap from before it.
    assert_eq!(publish(&a, "a", "e6").await, "6");
    for (from, resume) in [("3", Resume::Gap), ("5", Resume::Complete)] {
        let (resumed, mut sub) = resume_from(&a, "a", from).await;
        assert_eq!(resumed, resume, "from {from}");
        assert_eq!(sub.next().await, frame("e6", "6"));
        sub.assert_idle();
    }
}

/// Issue 14, items 2 and 5: a resume replays, on each channel, at most this instance's
/// history, whatever another instance keeps, and at most 4 MiB in all: the newest events,
/// with the gap when any is left out; history 0 replays nothing (everything the stream held
/// was copied into the resumed subscription).
#[tokio::test]
async fn a_resume_replays_at_most_the_history_and_4_mib() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 100).await;
    let five = connect(&redis.url(), 5).await;
    let none = connect(&redis.url(), 0).await;
    for i in 1..=20 {
        publish(&a, "a", &format!("e{i}")).await;
    }
    let newest = |from: usize| frames(from..=20);
    for (broker, from, resume, replayed) in [
        (&five, "1", Resume::Gap, newest(16)),
        (&five, "17", Resume::Complete, newest(18)),
        (&none, "1", Resume::Gap, Vec::new()),
        (&none, "20", Resume::Complete, Vec::new()),
        (&a, "1", Resume::Complete, newest(2)),
    ] {
        let (resumed, mut sub) = resume_from(broker, "a", from).await;
        assert_eq!(resumed, resume, "from {from}");
        assert_eq!(sub.take(replayed.len()).await, replayed, "from {from}");
        sub.assert_idle();
    }

    // 1 MiB each: 3 fit in 4 MiB, with their ids, 4 do not.
    let big = "x".repeat(1 << 20);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(publish(&a, "big", &big).await);
    }
    let (resumed, mut sub) = resume_from(&a, "big", "20").await;
    assert_eq!(resumed, Resume::Gap);
    for id in &ids[3..] {
        assert!(sub.next().await == frame(&big, id), "event {id}");
    }
    sub.assert_idle();
}

/// Issue 14, item 6: a publisher's id is found through an index trimmed with the history (a
/// resume read every history whole): the index holds the ids of the events kept, and a resume
/// from an id no longer kept is unknown, as in process.
#[tokio::test]
async fn publisher_ids_are_indexed_with_the_history() {
    let redis = redis_server!();
    let a = connect(&redis.url(), 5).await;
    for i in 1..=20 {
        let event = Event::default().id(format!("id-{i}")).data(format!("e{i}"));
        a.publish("a", event).await.unwrap();
    }
    let mut conn = redis.admin(&redis.url()).await;
    let mut index: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("tower-sse:ids:a")
        .query_async(&mut conn)
        .await
        .unwrap();
    index.sort();
    let kept: Vec<(String, String)> = (16..=20)
        .map(|i| (format!("id-{i}"), i.to_string()))
        .collect();
    assert_eq!(index, kept);

    let (resumed, mut sub) = resume_from(&a, "a", "id-18").await;
    assert_eq!(resumed, Resume::Complete);
    assert_eq!(
        sub.take(2).await,
        [frame("e19", "id-19"), frame("e20", "id-20")]
    );
    sub.assert_idle();
    let (resumed, mut sub) = resume_from(&a, "a", "id-3").await;
    assert_eq!(resumed, Resume::Unknown);
    sub.assert_idle();
}

/// Not a test: prints publish-to-receive latency for 1,000 subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --release --all-features --test redis -- --ignored --nocapture latency"]
async fn latency_redis_vs_local() {
    const SUBSCRIBERS: usize = 1_000;
    const EVENTS: usize = 200;

    fn percentile(sorted: &[u64], p: f64) -> Duration {
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(sorted[i])
    }

    async fn measure(label: &str, publisher: &Broker, subscriber: &Broker) {
        let start = Instant::now();
        let received = Arc::new(AtomicUsize::new(0));
        let all_in = Arc::new(Notify::new());
        let ch = channels(subscriber, "latency");
        let mut tasks = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let mut sub = subscriber.subscribe(&ch).await.unwrap();
            let (received, all_in) = (received.clone(), all_in.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(EVENTS);
                while latencies.len() < EVENTS {
                    let bytes = sub.recv().await.expect("stream ended");
                    let now = start.elapsed().as_nanos() as u64;
                    let text = std::str::from_utf8(&bytes).unwrap();
                    for event in text.split_inclusive("\n\n") {
                        let sent: u64 = event
                            .strip_prefix("data: ")
                            .and_then(|rest| rest.split('\n').next())
                            .and_then(|n| n.parse().ok())
                            .expect("send time");
                        latencies.push(now - sent);
                        if (received.fetch_add(1, Ordering::AcqRel) + 1) % SUBSCRIBERS == 0 {
                            all_in.notify_one();
                        }
                    }
                }
                latencies
            }));
        }
        // One event in flight at a time: latency, not throughput.
        let mut fan_out = Vec::with_capacity(EVENTS);
        for i in 1..=EVENTS {
            let sent = start.elapsed();
            let data = (sent.as_nanos() as u64).to_string();
            publisher
                .publish("latency", Event::default().data(data))
                .await
                .unwrap();
            guard("all subscribers got it", async {
                while received.load(Ordering::Acquire) < i * SUBSCRIBERS {
                    all_in.notified().await;
                }
            })
            .await;
            fan_out.push((start.elapsed() - sent).as_nanos() as u64);
        }
        let mut all = Vec::with_capacity(EVENTS * SUBSCRIBERS);
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_unstable();
        fan_out.sort_unstable();
        println!(
            "{label}: {EVENTS} events x {SUBSCRIBERS} subscribers: per receive p50 {:?} p99 {:?} \
             max {:?}; last subscriber of each event p50 {:?} p99 {:?}",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            Duration::from_nanos(*all.last().unwrap()),
            percentile(&fan_out, 0.5),
            percentile(&fan_out, 0.99),
        );
    }

    let local = Broker::new();
    measure("in-process", &local, &local).await;
    let redis = redis_server!();
    let a = connect(&redis.url(), 0).await;
    let b = connect(&redis.url(), 0).await;
    measure("redis (publish on A, subscribers on B)", &a, &b).await;
}
