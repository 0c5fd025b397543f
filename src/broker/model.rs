//! A model check of the rings' lock and wake protocol (see `ring.rs`) under
//! [loom](https://docs.rs/loom): every interleaving of publish, poll, close and drop, up to a
//! preemption bound, so a lost wake-up, an event out of order or one delivered twice shows as
//! a failure (loom reports a poll that is never woken as a deadlock).
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

fn publish(broker: &Broker, channel: &str, data: &str) {
    broker
        .publish_local(channel, &Event::default().data(data))
        .unwrap();
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
        let mut subscription = broker
            .subscribe_local(&channels(&broker, "channel=a"), None)
            .unwrap();
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
        let mut subscription = broker
            .subscribe_local(&channels(&broker, "channel=a,b"), None)
            .unwrap();
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
        let mut subscription = broker
            .subscribe_local(&channels(&broker, "channel=a"), None)
            .unwrap();
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
        let mut stays = broker
            .subscribe_local(&channels(&broker, "channel=a"), None)
            .unwrap();
        // Not the channel's last subscriber, so its drop frees a slot without removing the
        // channel (a dashmap writer).
        let leaves = broker
            .subscribe_local(&channels(&broker, "channel=a"), None)
            .unwrap();
        let (publisher, closer) = (broker.clone(), broker.clone());
        let dropper = thread::spawn(move || drop(leaves));
        let publishing = thread::spawn(move || {
            let published = publisher.publish_local("a", &Event::default().data("x"));
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
