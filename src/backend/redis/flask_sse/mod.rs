//! The flask-sse backend (feature `redis`): a broker that serves what a Flask app's
//! [flask-sse] `sse.publish()` sends to Redis, and publishes in the same format, so that the
//! app's Python code stays as it is and only its `EventSource` URL moves.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::ConnectError> {
//! use tower_sse::{redis::flask_sse, Broker};
//!
//! // The Redis the Flask app's `REDIS_URL` names.
//! let broker = flask_sse::connect(Broker::builder().history(100), "redis://127.0.0.1:6379/0").await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What flask-sse sends, and what a stream gets
//!
//! flask-sse 1.0 sends a plain `PUBLISH <channel> <json>` (no prefix; its default channel is
//! `sse`, the default channel of [`SseService`](crate::SseService) too). The JSON object has
//! `data` (any JSON value) and, when set, `type`, `id` and `retry` (milliseconds). Each
//! message becomes one event: `type` its `event:` field, `data` its `data:` lines (a string as
//! is, any other value as the JSON text it was published as, which is what flask-sse's own
//! stream sends), `id` its `id:` field (a number written as its decimal), `retry` its `retry:`
//! field. Line breaks split data at CR, LF and CRLF only, as a browser reads it (flask-sse's
//! Python `splitlines()` also splits at other separators, and drops a trailing line break and
//! empty data: here the browser gets exactly the string published).
//!
//! A message that can't be served is dropped: not a JSON object, no `data`, a `type` that is
//! not a string or holds CR, LF or NUL, an `id` that is neither a string nor an integer or
//! holds a control character other than tab (a `Last-Event-ID` header can't carry it) or is
//! longer than [`BrokerBuilder::max_id_len`], a `retry` that is not a non-negative integer, or
//! a message over 4 MiB of JSON. Each is counted in
//! [`FLASK_SSE_DROPPED`](crate::metrics::FLASK_SSE_DROPPED) (label `reason`: `json`, `data`,
//! `type`, `id`, `retry`, `too_large`) and logged at `WARN` at most once a second, with the
//! count of those left out; the stream goes on. Keys other than these four are ignored.
//!
//! # Subscriptions
//!
//! Each broker holds one classic `SUBSCRIBE` per channel its clients ask for (taken when the
//! first arrives, dropped when the last leaves), all on one connection, and never
//! `PSUBSCRIBE`: Redis sees one subscriber per channel per broker, whatever the number of
//! browsers, and nothing of the channels other apps use on a shared Redis.
//!
//! # Publishing
//!
//! [`Broker::publish`](crate::Broker::publish) sends what flask-sse's
//! `sse.publish(data, type=..., id=..., retry=..., channel=...)` would: `{"data": ...}` with
//! the data as a string, and `type`, `id`, `retry` when given (flask-sse leaves out empty ones,
//! and so does this; comments are not carried). So the app's own consumers get it, and every
//! broker on that Redis, this one included, delivers it once: as it comes back through its
//! subscription, like any message (nothing is delivered before Redis has it). It answers the
//! event's id, or an empty id when it has none: then each broker that delivers it numbers it.
//! An event over 4 MiB once written as JSON is refused with
//! [`PublishError::TooLarge`](crate::PublishError::TooLarge).
//!
//! # Ids and `Last-Event-ID`
//!
//! flask-sse keeps no history in Redis, so each broker keeps its own: the
//! [history](BrokerBuilder::history) of what it delivered, in process, as a broker without a
//! backend does (same bounds, same [`Resume`](crate::Resume) answers), for as long as the
//! channel has clients on this broker (as its subscription). So:
//!
//! - **the app gave ids** (`sse.publish(..., id=...)`): a client that reconnects to the same
//!   broker with `Last-Event-ID` gets what it missed, as far as the history goes (numeric ids
//!   too). On another broker the id is found if that broker delivered the same event and still
//!   keeps it (it resumes there too), else the client is told of the gap
//!   ([`Resume::Unknown`](crate::Resume::Unknown));
//! - **the app gave none**: the id is this broker's own sequence number (from
//!   [`BrokerBuilder::id_base`], by default the start time), so every broker gives the same
//!   event another id. On the same broker a resume works as above; on another one the id is
//!   not one of its own, and the client gets the gap ([`Resume::Unknown`](crate::Resume::Unknown)),
//!   never a silent loss.
//!
//! Whatever may have passed the broker by is a gap: a resume from an event delivered before a
//! lost Redis connection, or before the channel's last client here left (its subscription
//! went with it, and comes back with the resuming client), gets
//! [`Resume::Gap`](crate::Resume::Gap) or [`Resume::Unknown`](crate::Resume::Unknown).
//!
//! # Faults
//!
//! As for the [Redis backend](super#faults): every Redis step is bounded in time (2 s per
//! command, 5 s per publish or new subscription), a publish without an answer is
//! [`PublishError::Unknown`](crate::PublishError::Unknown) (a retry with the same id would
//! publish it twice: flask-sse has no repeats check), the subscription connection is checked
//! with a PING after 5 s of silence, and a lost one is replaced with backoff (100 ms doubling
//! to 5 s) and its channels subscribed again. Meanwhile
//! [`Broker::is_ready`](crate::Broker::is_ready) is `false` (a `/readyz` answers `503`), open
//! streams stay open (keep-alives go on) and new streams on channels not already subscribed
//! are refused with `503`.
//!
//! Pub/sub keeps nothing: **what is published while a broker's connection is down, or Redis
//! restarts, is lost to its clients**, and nothing is backfilled. Open streams go on with the
//! messages published once the broker has subscribed again (they are not told of the ones
//! they missed); a client that reconnects with a `Last-Event-ID` from before gets the gap
//! (above). flask-sse's own streams lose the same messages.
//!
//! [flask-sse]: https://flask-sse.readthedocs.io/
//! [`BrokerBuilder::history`]: crate::BrokerBuilder::history
//! [`BrokerBuilder::max_id_len`]: crate::BrokerBuilder::max_id_len
//! [`BrokerBuilder::id_base`]: crate::BrokerBuilder::id_base
//! [history]: crate::BrokerBuilder::history

mod backend;
mod feed;
mod message;

/// flask-sse's message as the backend reads and writes it, for the fuzz target
/// `flask_sse_message` alone: `cargo fuzz` builds with `--cfg fuzzing` (fuzz/README.md).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use crate::event::Event;

    /// The event a message gives, or the reason (`reason` label of the dropped counter) it is
    /// dropped.
    pub fn read(payload: &[u8]) -> Result<Event, &'static str> {
        super::message::read(payload).map_err(|dropped| dropped.label())
    }

    /// The message `Broker::publish` sends for `event`.
    pub fn write(event: &Event) -> Vec<u8> {
        super::message::write(event).expect("an event's fields are JSON strings and a number")
    }
}

use std::sync::Arc;

use self::{backend::FlaskBackend, feed::Flask};
use super::{connection, subscriber::Subscriptions};
use crate::{
    broker::{Broker, BrokerBuilder},
    error::ConnectError,
};

/// Connects to the Redis flask-sse publishes to (`redis://[:password@]host[:port][/db]`,
/// `rediss://` with the feature `redis-tls`, as its `REDIS_URL`; the database number plays no
/// part in pub/sub; `#insecure` at the end for a self-signed certificate, see the
/// [`redis`](super) module) and builds
/// the broker `builder` describes on it: it serves what flask-sse publishes there, and
/// publishes in its format (see the [module docs](self)). Spawns the task that holds the
/// broker's Redis subscriptions, so call it within a Tokio runtime.
///
/// # Errors
///
/// The URL is invalid or Redis can't be reached (over TLS: the certificate is not trusted,
/// or the server does not speak TLS); the error names the URL, with its password masked.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::ConnectError> {
/// use tower_sse::{redis::flask_sse, Broker};
///
/// let broker = flask_sse::connect(Broker::builder().history(1000), "redis://127.0.0.1:6379/").await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(builder: BrokerBuilder, url: &str) -> Result<Broker, ConnectError> {
    let (client, conn) = connection::open(url).await?;
    let (subscriptions, task) = Subscriptions::new(client, Flask);
    let backend = FlaskBackend::new(conn, subscriptions);
    let (broker, inbound) = builder.build_on(Arc::new(backend));
    task.spawn(inbound);
    Ok(broker)
}
