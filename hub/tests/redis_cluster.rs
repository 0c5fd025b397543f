//! Issue 21: hub binaries (as shipped, built with the `redis` feature) on a private Redis
//! Cluster of 3 masters (with a replica each for the failover; `--redis-cluster`), started by
//! the test with `redis-server --cluster-enabled yes`. Without `redis-server` the tests say so
//! on stderr and pass, unless `TOWER_SSE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use reqwest::StatusCode;
use tower_sse_test_support::{
    guard,
    redis_cluster::{RedisCluster, channel_key, query, redis_cluster},
    send, text,
};

/// The hub binary in a child process (`tests/support/hub_process.rs`), killed on drop.
#[path = "support/hub_process.rs"]
mod hub_process;

use hub_process::{Frames, HubProcess, field};

/// Tokens signed with the hub's `--jwt-key`.
#[path = "support/tokens.rs"]
mod tokens;

/// A hub on `cluster`, every node a seed: `--redis-cluster` repeated, or once as a
/// comma-separated list.
async fn hub(cluster: &RedisCluster, as_list: bool) -> HubProcess {
    let urls = cluster.urls();
    let list = urls.join(",");
    let mut args = vec!["--keep-alive", "0"];
    if as_list {
        args.extend(["--redis-cluster", &list]);
    } else {
        for url in &urls {
            args.extend(["--redis-cluster", url.as_str()]);
        }
    }
    HubProcess::start(&args).await
}

/// `(id, data)` of a frame.
fn event(frame: &str) -> (String, String) {
    let id = field(frame, "id").unwrap_or_else(|| panic!("no id in {frame:?}"));
    let data = field(frame, "data").unwrap_or_else(|| panic!("no data in {frame:?}"));
    (id.to_owned(), data.to_owned())
}

/// `POST /publish?channel={channel}`: the status and the body.
async fn try_publish(hub: &HubProcess, channel: &str, data: &str) -> (StatusCode, String) {
    let res = send(hub.post(&format!("channel={channel}"), data.to_owned())).await;
    let status = res.status();
    (status, text(res).await)
}

/// `PUBSUB SHARDNUMSUB` of `channel`'s sharded channel on its master.
async fn shardnumsub(owner: SocketAddr, channel: &str) -> i64 {
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("SHARDNUMSUB").arg(channel_key(channel));
    let (_, count): (String, i64) = query(owner, &cmd).await.expect("PUBSUB SHARDNUMSUB");
    count
}

/// `GET /readyz`: the status and the body.
async fn readyz(hub: &HubProcess) -> (StatusCode, String) {
    let res = send(hub.client.get(hub.url("/readyz"))).await;
    let status = res.status();
    (status, text(res).await)
}

/// Two hubs on a 3-master cluster: channels on every shard; an event published on A reaches
/// B's streams on each, each channel counting its own ids; a stream on channels of every shard
/// gets each event once; a resume on B replays what followed; each hub holds one sharded
/// subscription per channel whatever its number of streams. `$SSE_REDIS_URL` and `$REDIS_URL`
/// are not read with `--redis-cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_share_channels_on_every_shard() {
    let cluster = redis_cluster!(3, 0);
    let a = hub(&cluster, false).await;
    // Variables that would name another backend: not read with `--redis-cluster` (else the
    // hub would refuse two backends).
    let list = cluster.urls().join(",");
    let env = [
        ("SSE_REDIS_URL", "redis://127.0.0.1:1/"),
        ("REDIS_URL", "not a url"),
    ];
    let b = HubProcess::try_start_with(&["--keep-alive", "0", "--redis-cluster", &list], &env)
        .await
        .unwrap_or_else(|exited| panic!("B exited: {}\n{}", exited.status, exited.stderr));
    // Its startup line counts the seeds, and shows none (they may hold passwords).
    let logs = b.stdout();
    assert!(logs.contains("redis_cluster=3"), "{logs}");
    assert!(!logs.contains("redis://"), "{logs}");
    let shards = cluster.one_channel_per_shard("room.").await;
    let names: Vec<&str> = shards.iter().map(|(n, _, _)| n.as_str()).collect();

    let mut single = Vec::new();
    for name in &names {
        single.push(b.subscribe(&format!("channel={name}"), None).await);
    }
    let mut all = b
        .subscribe(&format!("channel={}", names.join(",")), None)
        .await;
    let mut expected = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let data = format!("first on {name}");
        let id = a.publish(&format!("channel={name}"), data.clone()).await;
        assert_eq!(id, "1", "each channel counts its own ids");
        assert_eq!(event(&single[i].next().await), (id.clone(), data.clone()));
        expected.insert((id, data));
    }
    let mut got = BTreeSet::new();
    for _ in 0..names.len() {
        assert!(
            got.insert(event(&all.next_event().await)),
            "each event once"
        );
    }
    assert_eq!(got, expected, "order across shards is not told: as sets");
    // After them, the stream's position in each channel: an `id` without data.
    let frame = all.next().await;
    assert_eq!(field(&frame, "data"), None, "{frame}");
    let positions = all.last_id.clone().expect("an id");
    assert!(
        positions.starts_with('~') && positions.ends_with(".1.1.1"),
        "{positions}"
    );
    // The connection is lost; an event on each shard meanwhile; the reconnect (on A, with the
    // `Last-Event-ID` an `EventSource` would send) gets them, once each, and nothing else.
    drop(all);
    let mut missed = BTreeSet::new();
    for name in &names {
        let data = format!("away on {name}");
        let id = b.publish(&format!("channel={name}"), data.clone()).await;
        missed.insert((id, data));
    }
    let mut back = a
        .subscribe(
            &format!("channel={}", names.join(",")),
            Some(positions.as_bytes()),
        )
        .await;
    let mut got = BTreeSet::new();
    for _ in 0..names.len() {
        assert!(
            got.insert(event(&back.next_event().await)),
            "each event once"
        );
    }
    assert_eq!(got, missed);
    let frame = back.next().await;
    assert!(frame.ends_with(".2.2.2\n\n"), "{frame}");

    // One sharded subscription per hub, whatever the number of streams.
    let (first, _, owner) = &shards[0];
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(b.subscribe(&format!("channel={first}"), None).await);
    }
    let _on_a = a.subscribe(&format!("channel={first}"), None).await;
    assert_eq!(shardnumsub(*owner, first).await, 2, "one per hub");

    // A resume on B, from an id A answered.
    let second = names[1];
    let ids = [
        a.publish(&format!("channel={second}"), "second").await,
        a.publish(&format!("channel={second}"), "third").await,
    ];
    let mut resumed = b.subscribe(&format!("channel={second}"), Some(b"2")).await;
    assert_eq!(
        event(&resumed.next().await),
        (ids[0].clone(), "second".into())
    );
    assert_eq!(
        event(&resumed.next().await),
        (ids[1].clone(), "third".into())
    );
    // The live streams had them too; and the 5 more streams on the first channel.
    let id = a.publish(&format!("channel={first}"), "to all five").await;
    for stream in &mut more {
        assert_eq!(
            event(&stream.next().await),
            (id.clone(), "to all five".into())
        );
    }
    assert_eq!(shardnumsub(*owner, first).await, 2, "still one per hub");
}

/// Reads frames until the one with id `id`; every frame before it must have `data` (an earlier
/// try whose outcome was unknown may have been published).
async fn until_id(frames: &mut Frames, id: &str, data: &str) {
    loop {
        let (got, got_data) = event(&frames.next().await);
        assert_eq!(got_data, data);
        if got == id {
            return;
        }
    }
}

/// A master without a replica dies: publishes to its channels answer `503` or `504`, a new
/// stream on one of them on a hub without its subscription `503` with `Retry-After`, the
/// other shards' channels go on, `/readyz` names the slot; once the node is back, publishes
/// succeed again and a stream left open on it gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_stops_its_channels_only_and_recovers() {
    let mut cluster = redis_cluster!(3, 0);
    let (a, b) = tokio::join!(hub(&cluster, false), hub(&cluster, true));
    let shards = cluster.one_channel_per_shard("down.").await;
    let (doomed, slot, master) = (shards[0].0.as_str(), shards[0].1, shards[0].2);
    let others: Vec<&str> = shards[1..].iter().map(|(n, _, _)| n.as_str()).collect();
    let mut stream = b.subscribe(&format!("channel={doomed}"), None).await;
    let mut steady = Vec::new();
    for other in &others {
        steady.push(b.subscribe(&format!("channel={other}"), None).await);
    }
    let id = a.publish(&format!("channel={doomed}"), "before").await;
    assert_eq!(event(&stream.next().await), (id, "before".into()));
    assert_eq!(readyz(&a).await, (StatusCode::OK, "ready".into()));

    cluster.kill(master);
    eprintln!("killed {master}, the master of slot {slot} (channel {doomed})");
    let (status, body) = try_publish(&a, doomed, "lost").await;
    assert!(
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT].contains(&status),
        "{status} {body}"
    );
    // A has no subscription for it: a new stream needs the shard.
    let res = send(a.events(&format!("channel={doomed}"), None)).await;
    let (status, retry_after) = (res.status(), res.headers().get("retry-after").cloned());
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        text(res).await
    );
    assert!(retry_after.is_some(), "503 with Retry-After");
    // The other shards go on.
    for (other, steady) in others.iter().zip(&mut steady) {
        let id = a.publish(&format!("channel={other}"), "still here").await;
        assert_eq!(event(&steady.next().await), (id, "still here".into()));
    }
    // `/readyz` names what is down, on B, whose stream on it needs the shard (A's failures
    // are forgotten once its failed stream is gone: nothing there needs the shard). B stays
    // ready: the other shards serve, and every hub would be out of rotation otherwise.
    let body = guard("B's /readyz naming the shard down", async {
        loop {
            let (status, body) = readyz(&b).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            // The hub's other channels on that shard (Mercure's routes) may come first.
            if body.contains(&format!("slot {slot} ")) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!("B's /readyz: {body}");
    assert!(body.starts_with("ready; unreachable: "), "{body}");
    assert!(body.contains(&format!("slot {slot} ")), "{body}");
    assert!(body.contains(&format!("channel {doomed}")), "{body}");

    cluster.restart(master).await;
    cluster.wait_ok().await;
    let id = guard("a publish once the shard is back", async {
        loop {
            let (status, body) = try_publish(&a, doomed, "after").await;
            if status.is_success() {
                let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                return body["id"].as_str().expect("an id").to_owned();
            }
            assert!(status.is_server_error(), "{status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    until_id(&mut stream, &id, "after").await;
    guard("A and B ready again", async {
        while readyz(&a).await.1 != "ready" || readyz(&b).await.1 != "ready" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The flags, the variables, and the other backend's flag the refusal must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// `--redis-cluster` names the backend: with `--redis-url` or `--flask-sse-redis`, by flag or
/// variable, the hub refuses to start with exit code 2 naming both; a seed's password is never
/// written, when it is refused nor when the cluster can't be reached.
#[tokio::test]
async fn redis_cluster_with_another_backend_is_refused() {
    let url = "redis://:hunter2@127.0.0.1:1/";
    let cases: [Case; 5] = [
        (
            &["--redis-cluster", url, "--redis-url", url],
            &[],
            "--redis-url",
        ),
        (
            &["--redis-cluster", url],
            &[("SSE_HUB_REDIS_URL", url)],
            "--redis-url",
        ),
        (
            &["--redis-url", url],
            &[("SSE_HUB_REDIS_CLUSTER", url)],
            "--redis-url",
        ),
        (
            &["--redis-cluster", url, "--flask-sse-redis", url],
            &[],
            "--flask-sse-redis",
        ),
        (
            &[],
            &[
                ("SSE_HUB_REDIS_CLUSTER", url),
                ("SSE_HUB_FLASK_SSE_REDIS", url),
            ],
            "--flask-sse-redis",
        ),
    ];
    for (args, env, other) in cases {
        let exited = match HubProcess::try_start_with(args, env).await {
            Ok(_) => panic!("{args:?} {env:?}: the hub started"),
            Err(exited) => exited,
        };
        assert_eq!(
            exited.status.code(),
            Some(2),
            "{args:?} {env:?}: {exited:?}"
        );
        for flag in ["--redis-cluster", other] {
            assert!(exited.stderr.contains(flag), "{flag}: {}", exited.stderr);
        }
        assert!(!exited.stderr.contains("hunter2"), "{}", exited.stderr);
    }

    // Not a Redis URL: a usage error, the value not shown.
    let exited = HubProcess::try_start(&["--redis-cluster", "http://:hunter2@127.0.0.1:1/"])
        .await
        .err()
        .expect("refused");
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("--redis-cluster"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stderr.contains("hunter2"), "{}", exited.stderr);

    // Nothing listens there: exit code 1, the password masked.
    let exited = HubProcess::try_start(&["--redis-cluster", url])
        .await
        .err()
        .expect("no cluster there");
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    for output in [&exited.stderr, &exited.stdout] {
        assert!(!output.contains("hunter2"), "{output}");
    }
}

/// A master with a replica dies under two hubs: once its replica took over, B's stream on its
/// channel goes on with every event A's `POST /publish` answered `200` for (retried with the
/// same `id` after a `503` or `504`, so published once), in order and once each; a channel on
/// another shard never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_two_hubs_loses_nothing() {
    let mut cluster = redis_cluster!(3, 1);
    let a = hub(&cluster, false).await;
    let b = hub(&cluster, true).await;
    let shards = cluster.one_channel_per_shard("orders.").await;
    let (doomed, master) = (shards[0].0.clone(), shards[0].2);
    let other = shards[1].0.clone();
    let mut stream = b.subscribe(&format!("channel={doomed}"), None).await;
    let mut steady = b.subscribe(&format!("channel={other}"), None).await;
    let (mut sent, mut steady_sent) = (Vec::new(), Vec::new());
    let publisher = async {
        for i in 0..40 {
            let query = format!("channel={doomed}&id=o{i}");
            loop {
                let res = send(a.post(&query, format!("e{i}"))).await;
                let status = res.status();
                if status == StatusCode::OK {
                    sent.push((format!("o{i}"), format!("e{i}")));
                    break;
                }
                assert!(status.is_server_error(), "{status}: {}", text(res).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (status, body) = try_publish(&a, &other, &format!("s{i}")).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "the other shard never stops: {body}"
            );
            let id: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            steady_sent.push((
                id["id"].as_str().expect("an id").to_owned(),
                format!("s{i}"),
            ));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.kill(master);
        cluster.wait_failover(master).await;
    };
    guard("publish through a failover", async {
        tokio::join!(publisher, failover)
    })
    .await;
    for expected in &sent {
        assert_eq!(&event(&stream.next().await), expected);
    }
    for expected in &steady_sent {
        assert_eq!(&event(&steady.next().await), expected);
    }
}

/// Mercure on a cluster: an update goes to one channel, so a stream of a URI template or `*`
/// (which would make every matching update go to its route's channel too) is refused with a
/// reason, and can't make publishes fail; an update to an exact topic reaches an exact
/// subscriber on the other hub, and one with two topics is refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercure_on_a_cluster_takes_exact_topics() {
    let cluster = redis_cluster!(3, 0);
    let seeds = cluster.urls().join(",");
    let args = [
        "--keep-alive",
        "0",
        "--jwt-key",
        tokens::KEY,
        "--redis-cluster",
        &seeds,
    ];
    let a = HubProcess::start(&args).await;
    let b = HubProcess::start(&args).await;
    let path = "/.well-known/mercure";
    let publisher = tokens::hs256(
        tokens::KEY,
        &serde_json::json!({"mercure": {"publish": ["*"]}}),
    );
    let publish = |hub: &HubProcess, form: &[(&str, &str)]| {
        hub.client
            .post(hub.url(path))
            .bearer_auth(&publisher)
            .form(form)
    };
    let book = "https://example.com/books/1";
    for selector in ["*", "https://example.com/books/{id}"] {
        let res = send(b.client.get(b.url(path)).query(&[("topic", selector)])).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{selector}");
        let reason = text(res).await;
        assert!(reason.contains("Redis Cluster"), "{reason}");
    }
    let res = send(b.client.get(b.url(path)).query(&[("topic", book)])).await;
    let mut exact = Frames::new(res);
    let res = send(publish(&a, &[("topic", book), ("data", "one")])).await;
    let status = res.status();
    let id = text(res).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    let frame = exact.next_event().await;
    assert_eq!(field(&frame, "id"), Some(&*id));
    assert_eq!(field(&frame, "data"), Some("one"));
    let res = send(publish(
        &a,
        &[("topic", book), ("topic", "other"), ("data", "x")],
    ))
    .await;
    let status = res.status();
    let reason = text(res).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
    assert!(reason.contains("one topic"), "{reason}");
}
