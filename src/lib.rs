//! Server-sent events pub/sub for any [Tower](https://docs.rs/tower) HTTP stack.
//!
//! Publish [`Event`]s to named channels on a [`Broker`]; serve [`SseService`] where clients
//! connect with `EventSource("/stream?channel=news")`; guard channels with [`AccessLayer`].
//! Like flask-sse, with `?channel=` and `publish`, but in-process: nothing to install.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_sse::{Broker, Event, SseService};
//!
//! let broker = Broker::new();
//! let publisher = broker.clone();
//! let app: Router = Router::new()
//!     .route_service("/stream", SseService::new(broker))
//!     .route("/hello", get(move || async move {
//!         let event = Event::default().event("greeting").json_data(&serde_json::json!({"message": "Hello!"}));
//!         match publisher.publish("sse", event).await {
//!             Ok(id) => format!("sent {id}"),
//!             Err(err) => format!("not sent: {err}"),
//!         }
//!     }));
//! ```
//!
//! # Concepts
//!
//! - [`event`]: one event and its exact [WHATWG] wire format, encoded once per publish.
//! - [`channel`]: channel names and the one parser that reads `?channel=` lists.
//! - [`broker`]: the registry of channels; ids, ordering, slow subscribers, shutdown.
//! - [`service`] and [`body`]: the Tower service and its streaming response body.
//! - [`access`]: before-request authorization per channel.
//! - [`error`]: one error per operation, each with the HTTP status a service answers it with.
//! - backends: in-process by default; `redis` (feature) so several instances share channels.
//! - The standalone hub is a crate of its own, [`tower-sse-hub`](https://docs.rs/tower-sse-hub),
//!   built on this crate's public API.
//! - [`metrics`]: counters and gauges through the `metrics` facade; `tracing` spans and events
//!   for subscribe, unsubscribe, lag and refusals.
//!
//! # Compared with
//!
//! | | tower-sse | [flask-sse] | [flask-queue-sse] | axum [`Sse`] + `broadcast` |
//! |-|-----------|-------------|-------------------|----------------------------|
//! | channels | several per stream, `?channel=` | one, `?channel=` | none: one queue per listener | hand-rolled |
//! | needs a server | no (Redis optional) | Redis | no | no |
//! | several instances | Redis, one subscription per channel per instance | Redis, one connection per browser | no | no |
//! | access control | [`AccessLayer`], every channel checked | `before_request` | no | hand-rolled |
//! | `Last-Event-ID` | bounded history, across instances | no | no | no |
//! | slow subscribers | bounded; disconnected or skipped | Redis buffers | dropped when the queue is full | a `Lagged` error to handle |
//! | encoding | once per publish, shared `Bytes` | per message | per listener | per subscriber |
//! | line break in an id | typed `Err` | sent broken | sent broken | panic |
//!
//! [flask-sse]: https://flask-sse.readthedocs.io/
//! [flask-queue-sse]: https://pypi.org/project/flask-queue-sse/
//! [`Sse`]: https://docs.rs/axum/latest/axum/response/sse/struct.Sse.html
//!
//! # Limits
//!
//! An SSE endpoint is a long-lived socket anyone can open, so every resource a request can
//! take is bounded, with defaults safe to expose to the internet. Past a limit the answer is a
//! `4xx` with the reason (bad input) or `503` with `Retry-After` (full), never a panic and
//! never an allocation sized by the client.
//!
//! | limit | default | set with | why |
//! |-------|---------|----------|-----|
//! | channels per request | 32 | [`ChannelRules::max_channels`] | each costs a slot per channel; 32 covers real pages, and thousands of `channel=` parameters are refused without building a list |
//! | channel name | 1 to 256 bytes, no control characters, whitespace or `,` | [`ChannelRules::max_len`] | names are map keys and metric labels; `,` separates lists |
//! | `Last-Event-ID`, and ids published | 1,024 bytes | [`BrokerBuilder::max_id_len`] ([`SseService::max_last_event_id`] follows it) | ids are short; a long one is an attack on the lookup; an id published must come back |
//! | subscribers in all | 100,000 | [`BrokerBuilder::max_subscribers`] | what a server with a raised `ulimit -n` holds; past it, clean refusals instead of an exhausted machine |
//! | subscribers per channel | 20,000 | [`BrokerBuilder::max_subscribers_per_channel`] | one channel can't take every slot |
//! | buffer | 256 events (or the history, if larger) | [`BrokerBuilder::buffer`] | shared by the channel's subscribers: a stalled one costs a cursor, not a copy; past it the [`LagPolicy`] applies |
//! | history channels | 10,000 idle ones | [`BrokerBuilder::history_channels`] | a churn of channel names can't grow idle histories without bound: the one idle longest goes first, and a channel with nothing kept goes at once |
//! | bytes kept | 64 MiB, history and buffers together | [`BrokerBuilder::max_retained_bytes`] | counts of events don't bound memory when events are large; the oldest go first |
//! | a resume's replay | the history (0 by default) | [`BrokerBuilder::history`] | what the docs say is kept is what a client gets back |
//! | per-channel metrics | off | [`BrokerBuilder::channel_metrics`] | a label per made-up channel name would grow the metrics without bound |
//!
//! Header and query sizes are bounded before a request reaches the service: the `http`
//! crate refuses a URI over 64 KiB (`414`), hyper a header section over 400 KiB (`431`).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `json`  | yes     | [`Event::json_data`], with serde_json |
//! | `redis` | no      | the Redis backend, so several instances share channels; and [`redis::flask_sse`], to serve and publish a Flask app's flask-sse messages |
//! | `redis-tls` | no  | `redis` and `rediss://` URLs: Redis over TLS, with rustls (`ring`) and the system's root certificates; `#insecure` at the end skips the certificate's check |
//! | `jwt`   | no      | [`access::jwt`]: Mercure-style JWT rights per channel (`*`, exact names, URI templates), `exp` ending open streams; with `jsonwebtoken` and pure-Rust crypto |
//!
//! [WHATWG]: https://html.spec.whatwg.org/multipage/server-sent-events.html
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

pub mod access;
mod backend;
pub mod body;
pub mod broker;
pub mod channel;
pub mod error;
pub mod event;
mod fnv;
pub mod metrics;
mod random;
mod rate_limited;
mod response;
pub mod service;
mod sync;

// Always there for `redis::url_from_env`, so that every program reads the same variables; the
// backend itself (`redis::connect`) needs the feature `redis`.
pub use self::backend::redis;
pub use self::{
    access::AccessLayer,
    body::SseBody,
    broker::{Broker, BrokerBuilder, LagPolicy, Resume, Subscription},
    channel::{ChannelError, ChannelRules, Channels},
    error::{ConnectError, PublishError, SubscribeError},
    event::{Event, EventError},
    service::SseService,
};

/// The README's code samples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
