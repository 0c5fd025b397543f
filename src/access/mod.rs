//! Before-request authorization per channel, like flask-sse's `@sse.before_request`.
//!
//! [`AccessLayer`] wraps a service (usually [`SseService`](crate::SseService)) in [`Access`].
//! For each request it:
//!
//! 1. reads the channel list with the crate's one parser ([`ChannelRules::parse_query`]);
//!    a bad list is answered `400 Bad Request` with the reason;
//! 2. runs the [`AccessPolicy`] once for **every** channel, in the order named, and stops at
//!    the first [`Denied`], which is answered with its status (401, 403, ...) and reason: the
//!    inner service is never called and no stream starts;
//! 3. passes the request on with the checked [`Channels`] in its extensions, and the stream
//!    subscribes to exactly that list; with it, what the checks' [`Grant`]s hand on: values
//!    the policy learned (the user, their scopes) and the earliest [`Deadline`] (a token's
//!    expiry), at which [`SseService`](crate::SseService) ends the stream cleanly, so that the
//!    browser reconnects and is checked again.
//!
//! So no query trick can reach a channel the policy did not see: `?channel=public&channel=private.x`
//! checks both, `private%2Ex` is checked as `private.x`, and a name with spaces or control
//! characters is refused before any check.
//!
//! # Order
//!
//! Put `AccessLayer` right around the SSE service: layers added before it in a
//! [`ServiceBuilder`](tower::ServiceBuilder) run first (tracing, timeouts, CORS...), and a layer
//! between it and the service that rewrote the URI could not change the channels anyway, since
//! the service reads the checked list from the extensions.
//!
//! The inner service's error type goes through unchanged; denials are responses, not errors.
//!
//! [`ChannelRules::parse_query`]: crate::ChannelRules::parse_query
//! [`Channels`]: crate::Channels
//! [`Deadline`]: crate::body::Deadline

mod future;
mod grant;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
mod layer;
mod policy;
mod service;

pub use self::{
    future::ResponseFuture,
    grant::Grant,
    layer::AccessLayer,
    policy::{AccessPolicy, Denied},
    service::Access,
};
