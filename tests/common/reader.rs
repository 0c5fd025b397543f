//! A subscription read one event at a time, for the tests that read a broker directly
//! (`tests/redis.rs`, `tests/flask_sse.rs`, through `#[path]`).

use std::collections::VecDeque;

use futures_util::FutureExt;
use tower_sse::{Broker, Channels, Subscription};
use tower_sse_test_support::guard;

/// The checked list of the comma-separated channel names `list`.
pub fn channels(broker: &Broker, list: &str) -> Channels {
    broker
        .channel_rules()
        .channels(list.split(','))
        .expect("channel list")
}

/// Reads a subscription one event at a time (a `recv` may bring several).
pub struct Reader {
    sub: Subscription,
    pending: VecDeque<String>,
}

impl Reader {
    pub fn new(sub: Subscription) -> Reader {
        Reader {
            sub,
            pending: VecDeque::new(),
        }
    }

    /// A subscription to the comma-separated channels `list`.
    pub async fn subscribe(broker: &Broker, list: &str) -> Reader {
        Reader::new(broker.subscribe(&channels(broker, list)).await.unwrap())
    }

    pub async fn next(&mut self) -> String {
        if self.pending.is_empty() {
            let bytes = guard("next event", self.sub.recv())
                .await
                .expect("the stream ended");
            let text = std::str::from_utf8(&bytes).expect("utf-8");
            self.pending
                .extend(text.split_inclusive("\n\n").map(str::to_owned));
        }
        self.pending.pop_front().expect("an event")
    }

    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.next().await);
        }
        frames
    }

    /// Nothing to read now, and the stream is not over.
    pub fn assert_idle(&mut self) {
        assert!(self.pending.is_empty(), "unexpected {:?}", self.pending);
        if let Some(next) = self.sub.recv().now_or_never() {
            panic!("expected nothing, got {next:?}");
        }
    }
}
