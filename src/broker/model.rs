//! A model check of the rings' lock and wake protocol (see `ring.rs`) under
//! [loom](https://docs.rs/loom): every interleaving of publish, poll, close, drain and drop,
//! up to a preemption bound, so a lost wake-up, an event out of order or one delivered twice
//! shows as a failure (loom reports a poll that is never woken as a deadlock).
//!
//! ```text
//! RUSTFLAGS="--cfg tower_sse_loom" cargo test --release --lib model
//! ```
//!
//! The channel map (dashmap) is not loom's: the models keep its writers (creating and removing
//! channels) out of the racing threads, where they could block a thread loom has paused.

use loom::{future::block_on, thread};

use super::*;

/// Every interleaving with up to this many preemptions: enough for the races below (each is
/// two or three steps deep), small enough for CI.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(f);
}

fn channels(broker: &Broker, query: &str) -> Channels {
    broker.channel_rules().parse_query(Some(query)).unwrap()
}

/// Subscribes through the public API: in process, its future is ready at once.
fn subscribe(broker: &Broker, query: &str) -> Subscription {
    block_on(broker.subscribe(&channels(broker, query))).unwrap()
}

fn publish(broker: &Broker, channel: &str, data: &str) {
    block_on(broker.publish(channel, Event::default().data(data))).unwrap();
}

/// Reads until the stream ends or `events` blocks came.
fn read(subscription: &mut Subscription, events: usize) -> String {
    let mut out = String::new();
    while out.matches("\n\n").count() < events {
        match block_on(subscription.recv()) {
            Some(bytes) => out.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => break,
        }
    }
    out
}

#[test]
fn a_publish_wakes_a_waiting_poll() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut subscription = subscribe(&broker, "channel=a");
        let publisher = broker.clone();
        let thread = thread::spawn(move || publish(&publisher, "a", "x"));
        assert_eq!(read(&mut subscription, 1), "data: x\nid: 1\n\n");
        thread.join().unwrap();
    });
}

#[test]
fn two_channels_arrive_in_order_and_once() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut subscription = subscribe(&broker, "channel=a,b");
        let (one, two) = (broker.clone(), broker.clone());
        let a = thread::spawn(move || publish(&one, "a", "x"));
        let b = thread::spawn(move || publish(&two, "b", "y"));
        let got = read(&mut subscription, 2);
        a.join().unwrap();
        b.join().unwrap();
        // Whichever publish took order number 1 comes first.
        assert!(
            got == "data: x\nid: 1\n\ndata: y\nid: 2\n\n"
                || got == "data: y\nid: 1\n\ndata: x\nid: 2\n\n",
            "{got:?}"
        );
    });
}

#[test]
fn close_ends_a_waiting_poll_after_what_was_published() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut subscription = subscribe(&broker, "channel=a");
        let other = broker.clone();
        let thread = thread::spawn(move || {
            publish(&other, "a", "x");
            other.close();
        });
        assert_eq!(read(&mut subscription, 2), "data: x\nid: 1\n\n");
        assert!(block_on(subscription.recv()).is_none());
        thread.join().unwrap();
    });
}

#[test]
fn a_drop_racing_a_publish_and_a_close_leaves_the_others_whole() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut stays = subscribe(&broker, "channel=a");
        // Not the channel's last subscriber, so its drop frees a slot without removing the
        // channel (a dashmap writer).
        let leaves = subscribe(&broker, "channel=a");
        let (publisher, closer) = (broker.clone(), broker.clone());
        let dropper = thread::spawn(move || drop(leaves));
        let publishing = thread::spawn(move || {
            let published = block_on(publisher.publish("a", Event::default().data("x")));
            assert!(
                matches!(published, Ok(_) | Err(PublishError::Closed)),
                "{published:?}"
            );
        });
        let closing = thread::spawn(move || closer.close());
        let got = read(&mut stays, 2);
        dropper.join().unwrap();
        publishing.join().unwrap();
        closing.join().unwrap();
        // The publish came before the close (then it is delivered) or was refused after it.
        assert!(got.is_empty() || got == "data: x\nid: 1\n\n", "{got:?}");
        assert_eq!(broker.subscriber_count("a"), 1);
    });
}

/// Reads with `poll_delivery` (`recv` sets a tokio timer during a drain, and there is no
/// runtime here) until the stream ends.
fn read_to_end(subscription: &mut Subscription) -> String {
    let mut out = String::new();
    while let Some(delivery) = block_on(std::future::poll_fn(|cx| {
        subscription.poll_delivery(cx, 1024)
    })) {
        if let Delivery::Events(bytes) = delivery {
            out.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }
    out
}

/// A drain's start wakes a poll that waits, or the poll sees it after leaving its waker: the
/// same race as a close. With a window of 0 the stream's turn is at once.
#[test]
fn a_drain_wakes_a_waiting_poll() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut subscription = subscribe(&broker, "channel=a");
        let drainer = broker.clone();
        let thread = thread::spawn(move || drop(drainer.drain(Duration::ZERO)));
        assert_eq!(read_to_end(&mut subscription), "retry: 1000\n\n");
        thread.join().unwrap();
    });
}

/// A publish racing a drain (window 0) is delivered before the stream's end, or published
/// after its stop and not delivered: never after the `retry:` field, never lost in between.
#[test]
fn a_publish_racing_a_drain_comes_before_the_end_or_not_at_all() {
    model(|| {
        let broker = Broker::builder().id_base(0).build();
        let mut subscription = subscribe(&broker, "channel=a");
        let (publisher, drainer) = (broker.clone(), broker.clone());
        let publishing = thread::spawn(move || publish(&publisher, "a", "x"));
        let draining = thread::spawn(move || drop(drainer.drain(Duration::ZERO)));
        let got = read_to_end(&mut subscription);
        publishing.join().unwrap();
        draining.join().unwrap();
        assert!(
            got == "retry: 1000\n\n" || got == "data: x\nid: 1\n\nretry: 1000\n\n",
            "{got:?}"
        );
    });
}
