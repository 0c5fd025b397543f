//! The [Mercure] protocol (draft-07, as Mercure 0.x implements it) at `/.well-known/mercure`,
//! beside the hub's own `/events` and `/publish`, so that apps and clients written for a
//! Mercure hub work with this one unchanged: its tokens, its form, its reconnection.
//!
//! - `GET /.well-known/mercure?topic=S&topic=T`: the stream of every update with a topic that
//!   one of the selectors matches (`*`, an exact topic, an RFC 6570 URI template). Private
//!   updates go only to a subscriber whose token's `mercure.subscribe` selectors match one
//!   of their topics; an invalid token is a `401`, never taken as anonymous. The stream ends
//!   at the token's `exp`. `Last-Event-ID` (or the `lastEventID` parameter) resumes;
//!   `earliest` asks for everything kept. The response's `Last-Event-ID` header is the id of
//!   the event before the first one sent, or `earliest`: a client that asked for another id
//!   sees that it lost some.
//! - `POST /.well-known/mercure`, a form: `topic` (repeatable: the first is canonical, the
//!   others alternates; a subscriber of several gets the update once), `data`, `private`,
//!   `id` (else `urn:uuid:...`), `type`, `retry`. Answers `200` with the id as `text/plain`;
//!   `401`/`403` as `/publish` (a token whose `mercure.publish` selectors match every topic);
//!   `400` with a reason for a malformed form.
//!
//! How topics map to the broker's channels, so that a publish costs one lookup per exact
//! topic and one match per distinct other selector: see [`layout`] and [`registry`]. A
//! stream's topics and the private channels its token adds count against `--max-channels`.
//!
//! [Mercure]: https://mercure.rocks/spec

mod layout;
mod publish;
mod registry;
mod subscribe;

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::get};

use self::registry::Registry;
use super::state::Hub;

/// The path of the Mercure hub.
pub(super) const PATH: &str = "/.well-known/mercure";

/// The state of the Mercure routes: the hub's, the routes known, and the streams' keep-alive.
#[derive(Clone, Debug)]
pub(super) struct Mercure {
    hub: Hub,
    registry: Arc<Registry>,
    keep_alive: Option<Duration>,
}

/// `GET` and `POST /.well-known/mercure`.
pub(super) fn routes(hub: &Hub, keep_alive: Option<Duration>) -> Router {
    let registry = Registry::new(hub.broker.clone());
    // From the start, so that on a shared broker other hubs' routes are known before the
    // first publish here; outside a runtime, on the first Mercure request.
    if tokio::runtime::Handle::try_current().is_ok() {
        registry.start();
    }
    let mercure = Mercure {
        hub: hub.clone(),
        registry,
        keep_alive,
    };
    Router::new()
        .route(PATH, get(subscribe::subscribe).post(publish::publish))
        .with_state(mercure)
}
