//! The hub's routes.

use std::time::Duration;

use axum::{
    Router,
    extract::Request,
    http::request::Parts,
    routing::{get, get_service, post},
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use super::{
    auth::authorize,
    health::{healthz, readyz},
    jwt::Rights,
    mercure,
    prometheus::scrape,
    publish::publish,
    state::Hub,
};
use tower_sse::{AccessLayer, Broker, SseService};

/// The hub's routes: `GET /events`, `POST /publish`, `GET /healthz`, `GET /readyz` and
/// `GET /metrics`, each request traced by its path only (the query may hold a token). `token`
/// guards publishing, the `private.*` channels and the metrics; `keep_alive` is the idle time
/// before a keep-alive comment (`None`: never). No CORS: add [`cors`](super::cors) as a layer.
///
/// Serve it with `into_make_service`, not `axum::serve(listener, app)`, which rebuilds the
/// router for every connection: about 500 bytes per route held by each open stream. Call
/// [`metrics`](super::metrics) before building the broker for `/metrics` to count.
///
/// ```no_run
/// use std::time::Duration;
///
/// use axum::routing::get;
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// hub::metrics();
/// let broker = Broker::new();
/// let keep_alive = Some(Duration::from_secs(15));
/// let app = hub::app(broker.clone(), Some("s3cret".into()), keep_alive)
///     .route("/hello", get(|| async { "hello" }));
/// let listener = hub::listen("127.0.0.1:8080").await?;
/// axum::serve(listener, app.into_make_service())
///     .with_graceful_shutdown(hub::shutdown(broker, Duration::from_secs(10), hub::shutdown_signal()))
///     .await?;
/// # Ok(())
/// # }
/// ```
pub fn app(broker: Broker, token: Option<String>, keep_alive: Option<Duration>) -> Router {
    let hub = Hub::new(broker, token, None);
    traced(routes(&hub, keep_alive).merge(metrics_routes(&hub)))
}

/// [`app`] guarded by JWT rights instead of a token (see [`Rights`]): publishing needs a
/// publisher token if `rights` has a publisher key, and `private.*` channels a subscriber
/// token if it has a subscriber key; `/metrics` needs a publisher token with a `*` publish
/// selector.
///
/// ```
/// use tower_sse::{Broker, access::jwt::Verifier};
/// use tower_sse_hub::{Rights, app_with_rights};
///
/// let rights = Rights::default()
///     .publisher(Verifier::hmac("publisher secret"))
///     .subscriber(Verifier::hmac("subscriber secret"));
/// let app = app_with_rights(Broker::new(), rights, None);
/// ```
pub fn app_with_rights(broker: Broker, rights: Rights, keep_alive: Option<Duration>) -> Router {
    let hub = Hub::new(broker, None, Some(rights));
    traced(routes(&hub, keep_alive).merge(metrics_routes(&hub)))
}

/// Everything but `/metrics`, untraced.
pub(super) fn routes(hub: &Hub, keep_alive: Option<Duration>) -> Router {
    let rules = hub.broker.channel_rules().clone();
    // The stream is the service itself: no handler or body wrapper around it, as each would
    // cost every open stream memory (the broker logs subscribe and unsubscribe).
    let sse = SseService::new(hub.broker.clone()).keep_alive(keep_alive);
    // A subscriber key: a JWT for `private.*` channels, and the stream ends at its `exp`.
    let events = match hub
        .rights
        .as_ref()
        .and_then(|rights| rights.subscribe_policy())
    {
        Some(policy) => get_service(sse).route_layer(AccessLayer::new(policy).channel_rules(rules)),
        None => {
            let guard = hub.token.clone();
            let access = AccessLayer::new(move |parts: &Parts, channel: &str| {
                let verdict = match &guard {
                    Some(token) if channel.starts_with("private.") => {
                        authorize(token, &parts.headers, parts.uri.query())
                    }
                    _ => Ok(()),
                };
                std::future::ready(verdict)
            })
            .channel_rules(rules);
            get_service(sse).route_layer(access)
        }
    };
    Router::new()
        .route("/events", events)
        // The handler reads the body itself, up to `MAX_BODY`.
        .route("/publish", post(publish))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(hub.clone())
        .merge(mercure::routes(hub, keep_alive))
}

/// `GET /metrics` alone, untraced: on the main listener, or on `--metrics-bind`.
pub(super) fn metrics_routes(hub: &Hub) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(hub.clone())
}

/// Each request logged with its method, path (only: the query may hold an access token) and
/// status.
pub(super) fn traced(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            })
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
    )
}
