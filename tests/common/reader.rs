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
    /// The last `id:` read, as an `EventSource` keeps it.
    last_id: Option<String>,
}

impl Reader {
    pub fn new(sub: Subscription) -> Reader {
        Reader {
            sub,
            pending: VecDeque::new(),
            last_id: None,
        }
    }

    /// The last `id:` read, of an event or of a frame without data, as an `EventSource`
    /// keeps it for `Last-Event-ID`.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next frame with data (what an `EventSource` dispatches); frames without data on
    /// the way (a stream's positions) set only [`last_id`](Reader::last_id).
    pub async fn event(&mut self) -> String {
        loop {
            let frame = self.next().await;
            if frame.lines().any(|line| line.starts_with("data:")) {
                return frame;
            }
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
        let frame = self.pending.pop_front().expect("an event");
        if let Some(id) = frame.lines().find_map(|line| line.strip_prefix("id: ")) {
            self.last_id = Some(id.to_owned());
        }
        frame
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
