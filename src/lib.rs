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
//! - backends: in-process by default; `redis` (feature) so several instances share channels.
//! - [`metrics`]: counters and gauges through the `metrics` facade; `tracing` spans and events
//!   for subscribe, unsubscribe, lag and refusals.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `json`  | yes     | [`Event::json_data`], with serde_json |
//! | `redis` | no      | the Redis backend, so several instances share channels |
//!
//! [WHATWG]: https://html.spec.whatwg.org/multipage/server-sent-events.html
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

pub mod access;
pub mod body;
pub mod broker;
pub mod channel;
pub mod event;
pub mod metrics;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod service;

pub use self::{
    access::AccessLayer,
    body::SseBody,
    broker::{Broker, BrokerBuilder, LagPolicy, PublishError, Resume, Subscription},
    channel::{ChannelError, ChannelRules, Channels},
    event::{Event, EventError},
    service::SseService,
};

/// The README's code samples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
