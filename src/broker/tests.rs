//! The broker's unit tests, through its public API (`publish`, `subscribe`, `resume`), at poll
//! level (tokio-test).

use std::task::Poll;

use super::*;
use crate::error::{PublishError, SubscribeError};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, task};

fn channels(broker: &Broker, q: &str) -> Channels {
    broker.channel_rules().parse_query(Some(q)).unwrap()
}

/// The output of `future`, which must be ready at its first poll: the in-process broker never
/// waits to publish or subscribe.
fn now<T>(future: impl Future<Output = T>) -> T {
    assert_ready!(task::spawn(future).poll())
}

fn subscribe(broker: &Broker, channels: &Channels) -> Result<Subscription, SubscribeError> {
    now(broker.subscribe(channels))
}

fn resume(broker: &Broker, channels: &Channels, id: &str) -> Result<Subscription, SubscribeError> {
    now(broker.resume(channels, id))
}

fn try_publish(broker: &Broker, channel: &str, event: Event) -> Result<String, PublishError> {
    now(broker.publish(channel, event))
}

fn publish(broker: &Broker, channel: &str, data: &str) -> String {
    try_publish(broker, channel, Event::default().data(data)).unwrap()
}

#[test]
fn send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Broker>();
    assert_send_sync::<Subscription>();
}

#[test]
fn subscriber_limits_refuse_cleanly_and_free_on_drop() {
    let broker = Broker::builder()
        .id_base(0)
        .max_subscribers(3)
        .max_subscribers_per_channel(2)
        .build();
    let a = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let _b = subscribe(&broker, &channels(&broker, "channel=b,a")).unwrap();
    // `c` is taken first, then `a` is full: `c` must not stay behind.
    let err = subscribe(&broker, &channels(&broker, "channel=c,a")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "too many subscribers on channel a (limit 2)"
    );
    assert_eq!(broker.subscriber_count("c"), 0);
    assert!(!broker.inner.channels.contains_key("c"));
    assert_eq!(broker.total_subscribers(), 2);
    let _c = subscribe(&broker, &channels(&broker, "channel=c")).unwrap();
    let err = subscribe(&broker, &channels(&broker, "channel=d")).unwrap_err();
    assert_eq!(err.to_string(), "too many subscribers (limit 3)");
    assert_eq!(broker.total_subscribers(), 3);
    drop(a);
    assert_eq!(broker.total_subscribers(), 2);
    subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
}

#[test]
fn publish_wakes_a_waiting_subscriber() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let mut recv = task::spawn(sub.recv());
    assert_pending!(recv.poll());
    publish(&broker, "a", "x");
    assert!(recv.is_woken());
    assert_eq!(assert_ready!(recv.poll()).unwrap(), "data: x\nid: 1\n\n");
}

#[test]
fn several_channels_in_sequence_order() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a,b")).unwrap();
    publish(&broker, "b", "1");
    publish(&broker, "c", "not mine");
    publish(&broker, "a", "2");
    publish(&broker, "b", "3");
    let bytes = task::spawn(sub.recv()).poll();
    assert_eq!(
        assert_ready!(bytes).unwrap(),
        "data: 1\nid: 1\n\ndata: 2\nid: 3\n\ndata: 3\nid: 4\n\n"
    );
}

fn publish_to(broker: &Broker, list: &str, data: &str) -> String {
    let channels = channels(broker, list);
    now(broker.publish_to(&channels, Event::default().data(data))).unwrap()
}

#[test]
fn an_event_of_several_channels_comes_once_per_stream() {
    let broker = Broker::builder().id_base(0).history(10).build();
    let mut both = subscribe(&broker, &channels(&broker, "channel=a,b,c")).unwrap();
    let mut a = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    assert_eq!(publish_to(&broker, "channel=a,b", "1"), "1");
    publish(&broker, "b", "2");
    assert_eq!(publish_to(&broker, "channel=c,b,a", "3"), "3");
    assert_eq!(
        recv_now(&mut both),
        "data: 1\nid: 1\n\ndata: 2\nid: 2\n\ndata: 3\nid: 3\n\n"
    );
    assert_eq!(recv_now(&mut a), "data: 1\nid: 1\n\ndata: 3\nid: 3\n\n");
    // Nothing more: the copies in the other rings were passed over.
    assert!(task::spawn(both.recv()).poll().is_pending());
    // A resume over the rings sends each once too.
    let mut resumed = resume(&broker, &channels(&broker, "channel=b,a"), "1").unwrap();
    assert_eq!(resumed.resume(), Resume::Complete);
    assert_eq!(
        recv_now(&mut resumed),
        "data: 2\nid: 2\n\ndata: 3\nid: 3\n\n"
    );
    assert!(task::spawn(resumed.recv()).poll().is_pending());
}

#[test]
fn copies_past_the_byte_limit_are_not_sent_again() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a,b")).unwrap();
    for _ in 0..3 {
        publish_to(&broker, "channel=a,b", "0123456789");
    }
    let mut t = task::spawn(());
    let mut got = String::new();
    while let Poll::Ready(Some(Delivery::Events(b))) = t.enter(|cx, _| sub.poll_delivery(cx, 30)) {
        assert!(!b.is_empty());
        got.push_str(std::str::from_utf8(&b).unwrap());
    }
    let ids: Vec<_> = got.lines().filter(|l| l.starts_with("id:")).collect();
    assert_eq!(ids, ["id: 1", "id: 2", "id: 3"]);
}

#[test]
fn a_publish_to_several_channels_checks_every_name_first() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let bad = broker.channel_rules().clone().max_len(3);
    let rules = Broker::builder().channel_rules(bad).id_base(0).build();
    let list = broker.channel_rules().channels(["a", "toolong"]).unwrap();
    assert!(matches!(
        now(rules.publish_to(&list, Event::default())),
        Err(PublishError::Channel(_))
    ));
    let list = broker.channel_rules().channels(["a", "b"]).unwrap();
    assert!(now(broker.publish_to(&list, Event::default().id("\n"))).is_err());
    assert!(task::spawn(sub.recv()).poll().is_pending());
}

#[test]
fn coalescing_stops_at_max_bytes() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    for _ in 0..3 {
        publish(&broker, "a", "0123456789");
    }
    let mut t = task::spawn(());
    let first = t.enter(|cx, _| sub.poll_delivery(cx, 50));
    match first {
        Poll::Ready(Some(Delivery::Events(b))) => assert_eq!(b.len(), 2 * 24),
        other => panic!("{other:?}"),
    }
    let second = t.enter(|cx, _| sub.poll_delivery(cx, 50));
    match second {
        Poll::Ready(Some(Delivery::Events(b))) => assert_eq!(b, "data: 0123456789\nid: 3\n\n"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn laggard_is_disconnected_without_holding_up_others() {
    let broker = Broker::builder().id_base(0).buffer(2).build();
    let mut slow = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let mut fast = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    for i in 0..5 {
        publish(&broker, "a", &i.to_string());
        assert!(assert_ready!(task::spawn(fast.recv()).poll()).is_some());
    }
    let mut t = task::spawn(());
    match t.enter(|cx, _| slow.poll_delivery(cx, 1024)) {
        Poll::Ready(Some(Delivery::Lagged(3))) => {}
        other => panic!("{other:?}"),
    }
    assert!(assert_ready!(t.enter(|cx, _| slow.poll_delivery(cx, 1024))).is_none());
}

#[test]
fn laggard_skips_with_skip_policy() {
    let broker = Broker::builder()
        .id_base(0)
        .buffer(2)
        .lag_policy(LagPolicy::Skip)
        .build();
    let mut slow = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    for i in 0..5 {
        publish(&broker, "a", &i.to_string());
    }
    // Lagged by 3, then the two kept.
    assert_eq!(
        assert_ready!(task::spawn(slow.recv()).poll()).unwrap(),
        "data: 3\nid: 4\n\ndata: 4\nid: 5\n\n"
    );
}

#[test]
fn last_subscriber_leaving_removes_the_channel() {
    let broker = Broker::builder().id_base(0).build();
    let a1 = subscribe(&broker, &channels(&broker, "channel=a,b")).unwrap();
    let a2 = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    assert_eq!(broker.channel_count(), 2);
    drop(a1);
    assert_eq!(broker.channel_count(), 1);
    assert_eq!(broker.subscriber_count("a"), 1);
    drop(a2);
    assert_eq!(broker.channel_count(), 0);
    // Publishing to nobody creates nothing.
    publish(&broker, "a", "x");
    assert_eq!(broker.channel_count(), 0);
}

fn recv_now(sub: &mut Subscription) -> String {
    let bytes = assert_ready!(task::spawn(sub.recv()).poll()).unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn resume_replays_kept_events_then_live_without_gap_or_duplicate() {
    let broker = Broker::builder().id_base(0).history(10).build();
    for i in 1..=5 {
        publish(&broker, if i % 2 == 0 { "a" } else { "b" }, &i.to_string());
    }
    let mut sub = resume(&broker, &channels(&broker, "channel=a,b"), "2").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    publish(&broker, "a", "6");
    assert_eq!(
        recv_now(&mut sub),
        "data: 3\nid: 3\n\ndata: 4\nid: 4\n\ndata: 5\nid: 5\n\ndata: 6\nid: 6\n\n"
    );
    // Only channel a: the events of a after 2.
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "2").unwrap();
    assert_eq!(recv_now(&mut sub), "data: 4\nid: 4\n\ndata: 6\nid: 6\n\n");
}

#[test]
fn resume_after_a_publisher_id() {
    let broker = Broker::builder().id_base(0).history(10).build();
    publish(&broker, "a", "1");
    try_publish(&broker, "a", Event::default().id("x").data("2")).unwrap();
    publish(&broker, "a", "3");
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "x").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    assert_eq!(recv_now(&mut sub), "data: 3\nid: 3\n\n");
}

/// On a broker with a history of 2: publishes 1 to 5 on `a`; a resume after 1 replays the two
/// kept, 4 and 5, and says it is a gap; one after 3 is complete.
fn publish_five_and_resume_with_a_history_of_two(broker: &Broker) {
    for i in 1..=5 {
        publish(broker, "a", &i.to_string());
    }
    let mut sub = resume(broker, &channels(broker, "channel=a"), "1").unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
    assert_eq!(recv_now(&mut sub), "data: 4\nid: 4\n\ndata: 5\nid: 5\n\n");
    // The last kept event's predecessor is still complete.
    let sub = resume(broker, &channels(broker, "channel=a"), "3").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
}

#[test]
fn resume_from_an_id_older_than_history_replays_all_kept_and_says_gap() {
    let broker = Broker::builder().id_base(0).buffer(1).history(2).build();
    publish_five_and_resume_with_a_history_of_two(&broker);
}

#[test]
fn resume_from_unknown_ids_is_live_only() {
    let broker = Broker::builder().id_base(0).history(10).build();
    publish(&broker, "a", "1");
    for id in ["zzz", "99", "01", "+1", ""] {
        let mut sub = resume(&broker, &channels(&broker, "channel=a"), id).unwrap();
        assert_eq!(sub.resume(), Resume::Unknown, "{id:?}");
        assert_pending!(task::spawn(sub.recv()).poll());
    }
}

#[test]
fn a_numeric_publisher_id_outside_the_sequence_numbers_resumes_as_a_publisher_id() {
    // Sequence numbers 1001 on; a publisher's 42 (as flask-sse apps give) is not one of them.
    let broker = Broker::builder().id_base(1000).history(10).build();
    let given = |id: &str| Event::default().data(id).id(id);
    assert_eq!(try_publish(&broker, "a", given("42")).unwrap(), "42");
    publish(&broker, "a", "x");
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "42").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    assert_eq!(recv_now(&mut sub), "data: x\nid: 1002\n\n");
    // One that is in the range is read as the sequence number, whatever a publisher gave.
    assert_eq!(try_publish(&broker, "a", given("1001")).unwrap(), "1001");
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "1001").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    assert_eq!(
        recv_now(&mut sub),
        "data: x\nid: 1002\n\ndata: 1001\nid: 1001\n\n"
    );
}

#[test]
fn resume_on_a_channel_that_did_not_exist_is_a_gap() {
    // Without history the channel is gone when its subscriber leaves.
    let broker = Broker::builder().id_base(0).build();
    let sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    publish(&broker, "a", "1");
    drop(sub);
    publish(&broker, "a", "2");
    let sub = resume(&broker, &channels(&broker, "channel=a"), "1").unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
}

#[test]
fn idle_history_channels_are_bounded() {
    let broker = Broker::builder()
        .id_base(0)
        .history(4)
        .history_channels(10)
        .build();
    for i in 0..1000 {
        publish(&broker, &format!("c{i}"), "x");
    }
    assert!(broker.channel_count() <= 10, "{}", broker.channel_count());
}

#[test]
fn close_delivers_what_was_published_then_ends() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let mut waiting = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let mut wait = task::spawn(async {
        let mut n = 0;
        while waiting.recv().await.is_some() {
            n += 1;
        }
        n
    });
    assert_pending!(wait.poll());
    publish(&broker, "a", "last");
    broker.close();
    assert!(matches!(
        try_publish(&broker, "a", Event::default()),
        Err(PublishError::Closed)
    ));
    assert_eq!(assert_ready!(wait.poll()), 1);
    assert!(assert_ready!(task::spawn(sub.recv()).poll()).is_some());
    assert!(assert_ready!(task::spawn(sub.recv()).poll()).is_none());
    assert!(subscribe(&broker, &channels(&broker, "channel=a")).is_err());
}

#[test]
fn invalid_input_publishes_nothing() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    assert!(try_publish(&broker, "a", Event::default().event("x\ny")).is_err());
    assert!(try_publish(&broker, "", Event::default()).is_err());
    assert!(try_publish(&broker, "a b", Event::default()).is_err());
    assert_pending!(task::spawn(sub.recv()).poll());
    // And the failed ones used no id.
    assert_eq!(publish(&broker, "a", "ok"), "1");
}

#[test]
fn a_channel_that_retains_nothing_goes_with_its_last_subscriber() {
    let broker = Broker::builder().id_base(0).history(10).build();
    for i in 0..100 {
        drop(subscribe(&broker, &channels(&broker, &format!("channel=c{i}"))).unwrap());
    }
    assert_eq!(broker.channel_count(), 0);
}

#[test]
fn idle_history_channels_go_idle_longest_first() {
    let broker = Broker::builder()
        .id_base(0)
        .history(4)
        .history_channels(2)
        .build();
    for name in ["a", "b", "c"] {
        publish(&broker, name, "x");
    }
    // `a` was idle longest.
    assert_eq!(broker.channel_count(), 2);
    assert!(!broker.inner.channels.contains_key("a"));
    // A subscriber takes `b` off the idle list; `b` stays while `c` and then `d` go idle.
    let b = subscribe(&broker, &channels(&broker, "channel=b")).unwrap();
    publish(&broker, "d", "x");
    publish(&broker, "e", "x");
    assert!(broker.inner.channels.contains_key("b"));
    assert!(!broker.inner.channels.contains_key("c"));
    // Back to idle, now the newest idle.
    drop(b);
    publish(&broker, "f", "x");
    assert!(broker.inner.channels.contains_key("b"));
    assert!(!broker.inner.channels.contains_key("d"));
    assert_eq!(broker.inner.idle.load(Ordering::Acquire), 2);
}

#[test]
fn the_byte_budget_evicts_the_oldest_events_of_any_channel() {
    // Each event is "data: xxxxxxxxxx\nid: N\n\n": 24 bytes with a one-digit id.
    let broker = Broker::builder()
        .id_base(0)
        .history(100)
        .max_retained_bytes(3 * 24)
        .build();
    for name in ["a", "b", "a", "b", "a"] {
        publish(&broker, name, "xxxxxxxxxx");
    }
    let retained = lock(&broker.inner.sequencer).retention.bytes();
    assert_eq!(retained, 3 * 24);
    // a had 1, 3 and 5: 1 is gone, so a resume from before it has a gap; from 1, none.
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "1").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
    assert_eq!(
        recv_now(&mut sub),
        "data: xxxxxxxxxx\nid: 3\n\ndata: xxxxxxxxxx\nid: 5\n\n"
    );
    // b had 2 and 4: 2 is gone.
    let mut sub = resume(&broker, &channels(&broker, "channel=b"), "1").unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
    assert_eq!(recv_now(&mut sub), "data: xxxxxxxxxx\nid: 4\n\n");
}

#[test]
fn a_channel_emptied_by_the_byte_budget_goes() {
    let broker = Broker::builder()
        .id_base(0)
        .history(100)
        .max_retained_bytes(100)
        .build();
    for i in 0..50 {
        publish(&broker, &format!("c{i}"), "xxxxxxxxxx");
    }
    assert!(broker.channel_count() <= 5, "{}", broker.channel_count());
    let retained = lock(&broker.inner.sequencer).retention.bytes();
    assert!(retained <= 100, "{retained}");
}

#[test]
fn a_resume_replays_at_most_the_history() {
    // A subscriber keeps the channel and its buffer of 256; the history is 2.
    let broker = Broker::builder().id_base(0).history(2).build();
    let _keeper = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    publish_five_and_resume_with_a_history_of_two(&broker);
}

#[test]
fn without_history_a_resume_replays_nothing() {
    let broker = Broker::builder().id_base(0).build();
    let _keeper = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    for i in 1..=3 {
        publish(&broker, "a", &i.to_string());
    }
    let mut sub = resume(&broker, &channels(&broker, "channel=a"), "1").unwrap();
    assert_eq!(sub.resume(), Resume::Gap);
    assert_pending!(task::spawn(sub.recv()).poll());
    // Nothing missed: complete, and nothing to replay.
    let sub = resume(&broker, &channels(&broker, "channel=a"), "3").unwrap();
    assert_eq!(sub.resume(), Resume::Complete);
}

#[test]
fn ids_of_another_start_are_unknown() {
    let before = Broker::builder().id_base(1_000).history(10).build();
    let old = publish(&before, "a", "x");
    assert_eq!(old, "1001");
    let after = Broker::builder().id_base(2_000).history(10).build();
    for _ in 0..5 {
        publish(&after, "a", "x");
    }
    let sub = resume(&after, &channels(&after, "channel=a"), &old).unwrap();
    assert_eq!(sub.resume(), Resume::Unknown);
    // By default the ids start from the clock: a later broker's are greater.
    let first: u64 = publish(&Broker::new(), "a", "x").parse().unwrap();
    assert!(first > 1_700_000_000_000_000_000, "{first}");
}

#[test]
fn the_brokers_channel_rules_hold_for_a_list_read_elsewhere() {
    let broker = Broker::builder()
        .id_base(0)
        .channel_rules(ChannelRules::default().max_len(3))
        .build();
    let lax = ChannelRules::default().channels(["toolong"]).unwrap();
    let err = subscribe(&broker, &lax).unwrap_err();
    assert!(matches!(err, SubscribeError::Channel(_)), "{err}");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    assert_eq!(broker.channel_count(), 0);
    assert_eq!(broker.total_subscribers(), 0);
}

#[test]
fn ids_longer_than_a_last_event_id_may_be_are_refused() {
    let broker = Broker::builder().id_base(0).max_id_len(4).build();
    assert!(try_publish(&broker, "a", Event::default().id("abcd")).is_ok());
    assert!(matches!(
        try_publish(&broker, "a", Event::default().id("abcde")),
        Err(PublishError::IdTooLong { limit: 4 })
    ));
}

/// What one poll of `sub` yields, as text: the bytes, `lagged`, `drain`, `end` or `pending`.
fn step(t: &mut task::Spawn<()>, sub: &mut Subscription, max_bytes: usize) -> String {
    match t.enter(|cx, _| sub.poll_delivery(cx, max_bytes)) {
        Poll::Ready(Some(Delivery::Events(bytes))) => String::from_utf8(bytes.to_vec()).unwrap(),
        Poll::Ready(Some(Delivery::Lagged(_))) => "lagged".into(),
        Poll::Ready(Some(Delivery::Drain)) => "drain".into(),
        Poll::Ready(None) => "end".into(),
        Poll::Pending => "pending".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_refuses_subscriptions_and_lets_publishes_go_on() {
    let broker = Broker::builder().id_base(0).build();
    let all = channels(&broker, "channel=a");
    let _open = subscribe(&broker, &all).unwrap();
    let _drained = broker.drain(Duration::from_secs(3));
    assert!(broker.is_draining() && !broker.is_closed());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        match subscribe(&broker, &all).unwrap_err() {
            SubscribeError::Draining { retry_after } => seen.insert(retry_after.as_secs()),
            err => panic!("{err}"),
        };
    }
    // 1..=3 s, each drawn: all three come up in 200 draws but once in 10^35.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(broker.total_subscribers(), 1);
    assert_eq!(publish(&broker, "a", "x"), "1");
}

/// At its turn a stream delivers what was published before it, in as many polls as it takes,
/// and nothing published after it.
#[tokio::test(start_paused = true)]
async fn at_its_turn_a_stream_takes_what_came_before_and_no_more() {
    let broker = Broker::builder().id_base(0).build();
    let mut sub = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let mut t = task::spawn(());
    assert_eq!(step(&mut t, &mut sub, 1), "pending");
    publish(&broker, "a", "1");
    publish(&broker, "a", "2");
    let window = Duration::from_millis(900);
    let _drained = broker.drain(window);
    assert!(t.is_woken());
    assert_eq!(step(&mut t, &mut sub, 1), "drain");
    let end = sub.drain_end().unwrap();
    assert!(end < Instant::now() + window);
    tokio::time::advance(window).await;
    // One event per poll (a 1-byte bound); its stop was taken at the first.
    assert_eq!(step(&mut t, &mut sub, 1), "data: 1\nid: 1\n\n");
    assert_eq!(sub.drain_end(), None);
    publish(&broker, "a", "after its turn");
    assert_eq!(step(&mut t, &mut sub, 1), "data: 2\nid: 2\n\n");
    let retry = format!("retry: {}\n\n", sub.drain_retry_ms().unwrap());
    assert_eq!(step(&mut t, &mut sub, 1), retry);
    assert_eq!(step(&mut t, &mut sub, 1), "end");
}

/// A stream nobody polls holds the drain up to its window and grace, then the close ends it
/// (with its `retry:` field, when it is polled).
#[tokio::test(start_paused = true)]
async fn a_drain_closes_after_its_window_and_grace() {
    let broker = Broker::builder().id_base(0).build();
    let mut stuck = subscribe(&broker, &channels(&broker, "channel=a")).unwrap();
    let window = Duration::from_millis(800);
    let start = Instant::now();
    broker.drain(window).await;
    assert_eq!(start.elapsed(), window + DRAIN_GRACE);
    assert!(broker.is_closed());
    assert!(matches!(
        try_publish(&broker, "a", Event::default()),
        Err(PublishError::Closed)
    ));
    let mut t = task::spawn(());
    assert_eq!(step(&mut t, &mut stuck, 1024), "drain");
    let retry = format!("retry: {}\n\n", stuck.drain_retry_ms().unwrap());
    assert_eq!(step(&mut t, &mut stuck, 1024), retry);
    assert_eq!(step(&mut t, &mut stuck, 1024), "end");
}

/// The drain is over as soon as the last stream is gone; a second drain or one after a close
/// waits for nothing more.
#[tokio::test(start_paused = true)]
async fn a_drain_ends_with_its_last_stream() {
    let broker = Broker::builder().id_base(0).build();
    let all = channels(&broker, "channel=a,b");
    let (one, two) = (
        subscribe(&broker, &all).unwrap(),
        subscribe(&broker, &all).unwrap(),
    );
    let start = Instant::now();
    let mut drained = task::spawn(broker.drain(Duration::from_secs(60)));
    let mut again = task::spawn(broker.drain(Duration::from_secs(1)));
    assert_pending!(drained.poll());
    assert_pending!(again.poll());
    drop(one);
    assert_pending!(drained.poll());
    drop(two);
    assert!(drained.is_woken());
    assert_ready!(drained.poll());
    assert_ready!(again.poll());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(broker.is_closed());

    let closed = Broker::builder().id_base(0).build();
    closed.close();
    closed.drain(Duration::from_secs(60)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(
        subscribe(&closed, &all),
        Err(SubscribeError::Closed)
    ));
}

/// A client that keeps reconnecting to a channel with history (a browser tab retrying every
/// few seconds) leaves one item in the idle queue, not one per reconnect; and the channel it
/// left last is the newest idle, not the one idle longest.
#[test]
fn reconnects_to_an_idle_channel_leave_one_idle_item() {
    let broker = Broker::builder()
        .id_base(0)
        .history(4)
        .history_channels(3)
        .build();
    for name in ["a", "b", "c"] {
        publish(&broker, name, "x");
    }
    let a = channels(&broker, "channel=a");
    for _ in 0..1000 {
        drop(subscribe(&broker, &a).unwrap());
    }
    let queued = lock(&broker.inner.sequencer).retention.idle_queued();
    assert!(queued <= 2 * 3, "{queued} idle items for 3 channels");
    assert_eq!(broker.inner.idle.load(Ordering::Acquire), 3);
    // `a` went idle last: `b` is the one idle longest.
    publish(&broker, "d", "x");
    assert!(broker.inner.channels.contains_key("a"));
    assert!(!broker.inner.channels.contains_key("b"));
}
