//! [`FlaskBackend`]: the broker's side of the flask-sse backend, what the [`Backend`] seam
//! asks of it: publish (one `PUBLISH` of flask-sse's JSON), ensure and release a channel's
//! subscription (through the shared subscription task), and no history.

use std::{fmt, sync::Arc};

use redis::aio::ConnectionManager;

use super::message::{self, MAX_MESSAGE};
use crate::{
    backend::{
        Backend, BoxFuture, Replay,
        redis::{connection, subscriber::Subscriptions},
    },
    channel::ChannelError,
    error::{BoxError, PublishError},
    event::Event,
};

/// The broker's side of the flask-sse backend.
pub(crate) struct FlaskBackend {
    conn: ConnectionManager,
    subscriptions: Subscriptions,
}

impl fmt::Debug for FlaskBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlaskBackend")
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl FlaskBackend {
    pub(super) fn new(conn: ConnectionManager, subscriptions: Subscriptions) -> FlaskBackend {
        FlaskBackend {
            conn,
            subscriptions,
        }
    }

    /// `PUBLISH channel json`, as flask-sse's `sse.publish()`. Delivered here, as on every
    /// broker, when it comes back through this broker's subscription: once.
    async fn publish(&self, channels: &[&str], event: &Event) -> Result<String, BoxError> {
        // flask-sse's message names no channel: sent on several, each broker would number
        // it once per channel, and a stream on several would get it more than once.
        let [channel] = channels else {
            return Err(Box::new(PublishError::Channel(ChannelError::TooMany(1))));
        };
        let json = message::write(event)?;
        if json.len() > MAX_MESSAGE {
            return Err(Box::new(PublishError::TooLarge { limit: MAX_MESSAGE }));
        }
        let mut conn = self.conn.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(json);
        let _receivers: i64 = connection::publish(publish.query_async(&mut conn))
            .await
            .inspect_err(|err| tracing::warn!(%err, channel, "publish to Redis failed"))?;
        // Without an id of its own, each broker numbers the event as it receives it.
        Ok(event.get_id().unwrap_or_default().to_owned())
    }
}

impl Backend for FlaskBackend {
    fn publish<'a>(
        &'a self,
        channels: &'a [&'a str],
        event: &'a Event,
    ) -> BoxFuture<'a, Result<String, BoxError>> {
        Box::pin(FlaskBackend::publish(self, channels, event))
    }

    fn ensure<'a>(&'a self, channels: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(self.subscriptions.ensure(channels))
    }

    fn release(&self, channel: Arc<str>) {
        self.subscriptions.release(channel);
    }

    fn reachable(&self) -> bool {
        self.subscriptions.reachable()
    }

    /// flask-sse's message names no channel (see `publish`).
    fn publish_limit(&self) -> Option<usize> {
        Some(1)
    }

    fn keeps_history(&self) -> bool {
        false
    }

    /// Never called: without history the broker resumes from its own rings.
    fn replay<'a>(
        &'a self,
        _channels: &'a [Arc<str>],
        _last_event_id: &'a str,
        _seq: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay, BoxError>> {
        Box::pin(async { Err("flask-sse keeps no history".into()) })
    }
}
