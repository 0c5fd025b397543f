//! The Redis Cluster backend against a real cluster on loopback (3 masters, with a replica each
//! for the failover), started by the test with `redis-server --cluster-enabled yes` and
//! `redis-cli --cluster create`. Without `redis-server` the tests say so and pass, unless
//! `TOWER_SSE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use tower_sse_test_support as support;

#[path = "common/reader.rs"]
#[allow(dead_code)] // each file uses its part
mod reader;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use reader::{Reader, channels};
use support::{
    guard,
    redis_cluster::{RedisCluster, channel_key, query, redis_cluster},
};
use tower_sse::{Broker, Event, PublishError, Resume, redis::cluster};

async fn connect(cluster: &RedisCluster, history: usize) -> Broker {
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    cluster::connect(Broker::builder().history(history), &seeds)
        .await
        .expect("connect to the cluster")
}

/// One channel per master: `(name, master)`.
async fn one_per_shard(cluster: &RedisCluster, prefix: &str) -> Vec<(String, SocketAddr)> {
    let found = cluster.one_channel_per_shard(prefix).await;
    found
        .into_iter()
        .map(|(name, _, owner)| (name, owner))
        .collect()
}

fn frame(data: &str, id: &str) -> String {
    format!("data: {data}\nid: {id}\n\n")
}

async fn publish(broker: &Broker, channel: &str, data: &str) -> String {
    guard(
        "publish",
        broker.publish(channel, Event::default().data(data)),
    )
    .await
    .expect("publish")
}

/// Up to `n` events, each within 10 s: what arrived, for a failure to show what is missing.
async fn receive(reader: &mut Reader, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(frame) => got.push(frame),
            Err(_) => break,
        }
    }
    got
}

async fn shardnumsub(owner: SocketAddr, channel: &str) -> i64 {
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("SHARDNUMSUB").arg(channel_key(channel));
    let (_, count): (String, i64) = query(owner, &cmd).await.expect("PUBSUB SHARDNUMSUB");
    count
}

/// Two instances on a 3-master cluster: channels on each shard, an event published on A
/// reaches B's streams, each channel counts its own ids, a stream over channels of every
/// shard gets each event once, a resume on B replays from the history, and each instance
/// holds one sharded subscription per channel whatever its number of streams.
#[tokio::test]
async fn two_instances_share_channels_on_every_shard() {
    let cluster = redis_cluster!(3, 0);
    let a = connect(&cluster, 100).await;
    let b = connect(&cluster, 100).await;
    let shards = one_per_shard(&cluster, "news.").await;
    let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
    let mut single = Vec::new();
    for name in &names {
        single.push(Reader::subscribe(&b, name).await);
    }
    let mut all = Reader::subscribe(&b, &names.join(",")).await;
    let mut expected = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let id = publish(&a, name, &format!("first on {i}")).await;
        assert_eq!(id, "1", "each channel counts its own ids");
        assert_eq!(single[i].next().await, frame(&format!("first on {i}"), "1"));
        expected.insert(frame(&format!("first on {i}"), "1"));
    }
    let mut got = BTreeSet::new();
    for _ in 0..names.len() {
        got.insert(all.event().await);
    }
    assert_eq!(got, expected);
    // After the last, the stream's positions: one in each channel.
    let last = all.next().await;
    assert!(
        positions(&last).is_some_and(|id| id.ends_with(".1.1.1")),
        "{last}"
    );
    all.assert_idle();

    // Many streams of one channel on B, one sharded subscription per instance.
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(Reader::subscribe(&b, names[0]).await);
    }
    let _on_a = Reader::subscribe(&a, names[0]).await;
    assert_eq!(shardnumsub(shards[0].1, names[0]).await, 2);

    // A resume on B from an id A answered.
    let second = publish(&a, names[1], "second").await;
    let third = publish(&a, names[1], "third").await;
    let sub = b
        .resume(&channels(&b, names[1]), "1")
        .await
        .expect("resume");
    assert_eq!(sub.resume(), Resume::Complete);
    let mut resumed = Reader::new(sub);
    assert_eq!(
        resumed.take(2).await,
        [frame("second", &second), frame("third", &third)]
    );
    // One event, one channel: several channels may be on several shards.
    let refused = a
        .publish_to(&channels(&a, &names.join(",")), Event::default())
        .await;
    assert!(
        matches!(refused, Err(PublishError::Channel(_))),
        "{refused:?}"
    );
    drop(more);
}

/// Whether `frame` is a stream's positions: an `id:` of the positions kind and no data.
fn positions(frame: &str) -> Option<&str> {
    let id = frame.strip_prefix("id: ~")?.strip_suffix("\n\n")?;
    (!id.contains('\n')).then_some(&frame[4..frame.len() - 2])
}

/// The ids of `frames`, channel by channel (the data starts with the channel's name): each
/// channel's must increase.
fn assert_in_order_per_channel(frames: &[String], names: &[&str]) {
    for name in names {
        let ids: Vec<u64> = frames
            .iter()
            .filter(|f| f.starts_with(&format!("data: {name} ")))
            .map(|f| f.lines().nth(1).unwrap()["id: ".len()..].parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{name}: {ids:?}");
    }
}

/// A stream over channels of every shard tells its position in each after each batch (an
/// `id:` without data, which an `EventSource` keeps as its last id, and dispatches nothing
/// for), and resumes from those positions on another instance: each channel from its own
/// history, nothing lost, nothing twice, in order per channel. A live start tells where it
/// starts; `earliest` replays every channel's history; the positions of another list of
/// channels are unknown.
#[tokio::test]
async fn a_stream_over_several_shards_resumes_from_its_positions() {
    let cluster = redis_cluster!(3, 0);
    let a = connect(&cluster, 100).await;
    let b = connect(&cluster, 100).await;
    let shards = one_per_shard(&cluster, "pos.").await;
    let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
    let list = names.join(",");
    let mut published = Vec::new();
    let data = format!("{} before", names[0]);
    published.push(frame(&data, &publish(&a, names[0], &data).await));

    let sub = b.subscribe(&channels(&b, &list)).await.expect("subscribe");
    let start = sub
        .last_event_id()
        .expect("a live start is told")
        .to_owned();
    assert!(start.ends_with(".1.0.0"), "{start}");
    let mut stream = Reader::new(sub);
    assert_eq!(
        stream.next().await,
        format!("id: {start}\n\n"),
        "told first"
    );
    for round in 0..2 {
        for name in &names {
            let data = format!("{name} {round}");
            published.push(frame(&data, &publish(&a, name, &data).await));
        }
    }
    // Three events or more, up to the positions after them: there the connection is lost.
    let mut seen = Vec::new();
    let resume_from = loop {
        let next = stream.next().await;
        match positions(&next) {
            Some(id) if seen.len() >= 3 => break id.to_owned(),
            Some(_) => {}
            None => seen.push(next),
        }
    };
    assert_eq!(stream.last_id(), Some(&*resume_from));
    drop(stream);
    for name in &names {
        let data = format!("{name} away");
        published.push(frame(&data, &publish(&a, name, &data).await));
    }

    // On the other instance, which has no subscription of these channels yet.
    let sub = a
        .resume(&channels(&a, &list), &resume_from)
        .await
        .expect("resume");
    assert_eq!(sub.resume(), Resume::Complete);
    assert_eq!(sub.last_event_id(), Some(&*resume_from));
    let mut resumed = Reader::new(sub);
    let missed = published.len() - 1 - seen.len();
    let mut got = Vec::new();
    for _ in 0..missed {
        got.push(resumed.event().await);
    }
    let mut all: Vec<String> = seen.iter().chain(&got).cloned().collect();
    assert_in_order_per_channel(&all, &names);
    all.sort();
    let mut want = published[1..].to_vec();
    want.sort();
    assert_eq!(all, want, "every event after the start once");
    // Then the positions after the last of each channel.
    let last = resumed.next().await;
    assert!(
        positions(&last).is_some_and(|id| id.ends_with(".4.3.3")),
        "{last}"
    );
    resumed.assert_idle();

    // Live events go on after the replay, told the same way.
    let data = format!("{} live", names[2]);
    let id = publish(&b, names[2], &data).await;
    assert_eq!(resumed.event().await, frame(&data, &id));
    assert!(resumed.next().await.ends_with(".4.3.4\n\n"));

    // Another list of channels: unknown. Every channel's history: complete.
    let other = b
        .resume(&channels(&b, &names[..2].join(",")), &resume_from)
        .await
        .expect("resume");
    assert_eq!(other.resume(), Resume::Unknown);
    let earliest = b
        .resume_earliest(&channels(&b, &list))
        .await
        .expect("resume earliest");
    assert_eq!(earliest.resume(), Resume::Complete);
    let mut earliest = Reader::new(earliest);
    let mut everything = Vec::new();
    for _ in 0..published.len() + 1 {
        everything.push(earliest.event().await);
    }
    assert_in_order_per_channel(&everything, &names);

    // The channels of one resume share its byte budget (4 MiB), as on one node: 3 events of
    // 1 MiB on each of two channels, 6 MiB in all, come back as one each (the newest), and the
    // gap is told.
    let big = one_per_shard(&cluster, "big.").await;
    let mb = "x".repeat(1 << 20);
    for (name, _) in &big[..2] {
        for _ in 0..3 {
            publish(&a, name, &mb).await;
        }
    }
    let list = format!("{},{}", big[0].0, big[1].0);
    let sub = b
        .resume_earliest(&channels(&b, &list))
        .await
        .expect("resume earliest");
    assert_eq!(sub.resume(), Resume::Gap);
    let mut replay = Reader::new(sub);
    assert_eq!(replay.event().await.len(), replay.event().await.len());
    assert!(positions(&replay.next().await).is_some());
    replay.assert_idle();
}

/// A master with a replica dies: after the failover its channel's stream goes on with every
/// event that was published (answered 2xx), once each and in order, and a channel on another
/// shard never stops.
#[tokio::test]
async fn a_failover_loses_nothing_within_the_history() {
    let mut cluster = redis_cluster!(3, 1);
    let a = connect(&cluster, 1000).await;
    let b = connect(&cluster, 1000).await;
    let shards = one_per_shard(&cluster, "orders.").await;
    let (doomed, master) = (&shards[0].0, shards[0].1);
    let other = &shards[1].0;
    let mut stream = Reader::subscribe(&b, doomed).await;
    let mut steady = Reader::subscribe(&b, other).await;
    let mut sent = Vec::new();
    let mut steady_sent = Vec::new();
    let publisher = async {
        for i in 0..60u32 {
            // The same id on a retry: published once, whatever the first answer was.
            let event = Event::default().data(format!("e{i}")).id(format!("o{i}"));
            loop {
                match a.publish(doomed, event.clone()).await {
                    Ok(id) => {
                        sent.push(frame(&format!("e{i}"), &id));
                        break;
                    }
                    Err(PublishError::Backend(_) | PublishError::Unknown(_)) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(err) => panic!("{err}"),
                }
            }
            let id = a
                .publish(other, Event::default().data(format!("s{i}")))
                .await
                .expect("the other shard never stops");
            steady_sent.push(frame(&format!("s{i}"), &id));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.kill(master);
        cluster.wait_failover(master).await;
    };
    guard("publish through a failover", async {
        tokio::join!(publisher, failover)
    })
    .await;
    let got = receive(&mut stream, sent.len()).await;
    if got != sent {
        let key = channel_key(doomed).replace(":channel:", ":history:");
        let owner = cluster.node_for_slot(RedisCluster::slot_of(&key)).await;
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&key).arg("-").arg("+");
        let history: Option<redis::Value> = query(owner, &cmd).await;
        eprintln!("the history of {doomed} on {owner}: {history:?}");
    }
    assert_eq!(got, sent);
    assert_eq!(receive(&mut steady, steady_sent.len()).await, steady_sent);
    stream.assert_idle();
}

/// A master without a replica dies: its channels answer publishes with an error (`503`, or
/// `504` when the outcome is unknown) and new streams on them with `503`, while the other
/// shards go on; it comes back empty (no persistence) and everything recovers: the open
/// stream gets the events published from then on, the channel's history begins again.
#[tokio::test]
async fn a_shard_down_stops_its_channels_only_and_recovers() {
    let mut cluster = redis_cluster!(3, 0);
    let a = connect(&cluster, 100).await;
    let b = connect(&cluster, 100).await;
    let shards = one_per_shard(&cluster, "room.").await;
    let (doomed, master) = (shards[0].0.as_str(), shards[0].1);
    let other = shards[1].0.as_str();
    let mut stream = Reader::subscribe(&b, doomed).await;
    let mut steady = Reader::subscribe(&b, other).await;
    let before = publish(&a, doomed, "before").await;
    assert_eq!(stream.next().await, frame("before", &before));

    cluster.kill(master);
    let refused = a.publish(doomed, Event::default().data("lost")).await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Backend(_) | PublishError::Unknown(_))
        ),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().status().as_u16() / 100, 5);
    // Told by slot; the instance stays ready for the other shards' channels.
    let slot = RedisCluster::slot_of(channel_key(doomed));
    let down = a.unreachable();
    assert!(
        down.iter()
            .any(|line| line.contains(&format!("slot {slot} "))),
        "{down:?}"
    );
    assert!(a.is_ready());
    let new_stream = a.subscribe(&channels(&a, doomed)).await;
    let err = new_stream.expect_err("no stream on a shard that is down");
    assert_eq!(err.status(), 503);
    let id = publish(&a, other, "still here").await;
    assert_eq!(steady.next().await, frame("still here", &id));

    cluster.restart(master).await;
    cluster.wait_ok().await;
    let id = guard("publish once the shard is back", async {
        loop {
            match a.publish(doomed, Event::default().data("after")).await {
                Ok(id) => return id,
                Err(PublishError::Backend(_) | PublishError::Unknown(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await;
    assert_eq!(receive(&mut stream, 1).await, [frame("after", &id)]);
    stream.assert_idle();
    assert_eq!(a.unreachable(), Vec::<String>::new());
    support::wait_until("B subscribed again", || b.unreachable().is_empty()).await;
    // A resume from before the loss is told of the gap, never silently short.
    let resumed = b.resume(&channels(&b, doomed), &before).await.unwrap();
    assert_eq!(resumed.resume(), Resume::Gap);
}

/// A reshard moves a channel's slot to another master: B's stream on it follows (Redis ends
/// the old shard's subscription; the instance subscribes on the new owner and backfills), and
/// every event, before, during and after the move, arrives once and in order.
#[tokio::test]
async fn a_moved_slot_is_followed() {
    let cluster = redis_cluster!(3, 0);
    let a = connect(&cluster, 100).await;
    let b = connect(&cluster, 100).await;
    let shards = one_per_shard(&cluster, "moving.").await;
    let (channel, from) = (&shards[0].0, shards[0].1);
    let to = shards[1].1;
    let mut stream = Reader::subscribe(&b, channel).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = publish(&a, channel, &format!("e{i}")).await;
        sent.push(frame(&format!("e{i}"), &id));
    }
    let slot = RedisCluster::slot_of(channel_key(channel));
    cluster.move_slot(slot, to).await;
    assert_eq!(cluster.node_for_slot(slot).await, to, "moved from {from}");
    for i in 5..10 {
        let id = publish(&a, channel, &format!("e{i}")).await;
        sent.push(frame(&format!("e{i}"), &id));
    }
    assert_eq!(receive(&mut stream, sent.len()).await, sent);
    stream.assert_idle();
    assert_eq!(
        shardnumsub(to, channel).await,
        1,
        "subscribed on the new owner"
    );
}

/// A master without a replica dies under an instance with streams on 600 channels, about a
/// third of them on it, while clients keep asking for new streams on its channels: each is
/// refused at once, told that the master is down (no command is sent for it, which would hold
/// up every other command of the connection while the redis crate tries the node again), and
/// the events of the other masters' channels keep coming, every one. Once the master is back,
/// every stream on its channels gets its next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_down_holds_up_no_other_channel() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let mut cluster = redis_cluster!(3, 0);
    let a = connect(&cluster, 100).await;
    let b = connect(&cluster, 100).await;
    let names: Vec<String> = (0..600).map(|i| format!("many.{i}")).collect();
    let mut owners = Vec::new();
    for name in &names {
        owners.push(
            cluster
                .node_for_slot(RedisCluster::slot_of(channel_key(name)))
                .await,
        );
    }
    let master = owners[0];
    let mut streams = Vec::new();
    for name in &names {
        streams.push(Reader::subscribe(&b, name).await);
    }
    let healthy = owners
        .iter()
        .position(|o| *o != master)
        .expect("another master");
    let doomed: Vec<usize> = (0..names.len()).filter(|i| owners[*i] == master).collect();
    eprintln!("{} of {} channels on {master}", doomed.len(), names.len());

    cluster.kill(master);
    // New streams on new channels (about a third on that master, refused), as fast as they
    // are answered.
    let pressing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut refusals = Vec::new();
    for worker in 0..4 {
        let (b, pressing) = (b.clone(), pressing.clone());
        refusals.push(tokio::spawn(async move {
            let mut reasons = Vec::new();
            let mut k = 0;
            while pressing.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("refused.{worker}.{k}");
                k += 1;
                if let Err(err) = b.subscribe(&channels(&b, &name)).await {
                    reasons.push(err.to_string());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reasons
        }));
    }
    // Every event of a healthy channel arrives, in order.
    for i in 0..20 {
        let id = publish(&a, &names[healthy], &format!("h{i}")).await;
        assert_eq!(streams[healthy].next().await, frame(&format!("h{i}"), &id));
    }
    pressing.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut reasons = Vec::new();
    for task in refusals {
        reasons.extend(guard("the new streams", task).await.expect("a task"));
    }
    assert!(
        !reasons.is_empty(),
        "some new streams were on the master that is down"
    );
    // Told which master, whether it was found down already or not yet.
    for reason in &reasons {
        assert!(reason.contains(&master.to_string()), "{reason}");
    }
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains(&format!("master {master} is down"))),
        "{reasons:?}"
    );

    cluster.restart(master).await;
    cluster.wait_ok().await;
    for &i in &doomed {
        let id = guard("publish once the master is back", async {
            loop {
                match a.publish(&names[i], Event::default().data("back")).await {
                    Ok(id) => return id,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await;
        assert_eq!(streams[i].next().await, frame("back", &id));
    }
}
