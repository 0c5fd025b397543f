//! tower-sse behind the usual tower-http stack: trace, CORS, set-header, compression, timeout,
//! body limit, on every route including the stream.
//!
//! Run with: `cargo run --example tower_http` (logs: `RUST_LOG=tower_http=debug`), then
//! `curl -N --compressed http://127.0.0.1:3002/stream` and in another terminal
//! `curl -d 'Hello!' 'http://127.0.0.1:3002/publish?channel=sse'`.
//!
//! Two layers need care with streams:
//!
//! - `TimeoutLayer` bounds the time to the response *head*. [`SseService`] answers at once and
//!   the body then streams for as long as the client stays, so a stream outlives the 2 s
//!   timeout. (A body timeout, `TimeoutBody` or `ResponseBodyTimeoutLayer`, would cut every
//!   stream: keep those off the stream route.)
//! - `CompressionLayer` flushes whenever the body waits, so events would still go out at once,
//!   but every open stream would keep a compressor for its whole life (zlib's deflate state is
//!   about 256 KiB at its defaults) to save a few bytes per small event. Its default predicate
//!   skips `text/event-stream` (`NotForContentType::SSE`), which is what the stream sends, while
//!   the page `/` is gzipped. With a custom predicate, keep `NotForContentType::SSE` in it.
//!
//! `SetResponseHeaderLayer::if_not_present` gives `/` a `cache-control` and leaves the
//! stream's `no-cache` alone; `overriding` would let proxies cache the stream.

use std::time::Duration;

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::Html,
    routing::{get, post},
};
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer, cors::CorsLayer, limit::RequestBodyLimitLayer,
    set_header::SetResponseHeaderLayer, timeout::TimeoutLayer, trace::TraceLayer,
};
use tower_sse::{Broker, Event, SseService};

/// The largest body `POST /publish` takes.
pub const MAX_BODY: usize = 4096;

const PAGE: &str = r#"<!DOCTYPE html>
<title>tower-sse behind tower-http</title>
<ul id="events"></ul>
<script>
  new EventSource("/stream").onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = event.data;
    document.getElementById("events").appendChild(item);
  };
</script>
"#;

/// `GET /`, `GET /stream`, `POST /publish?channel=NAME` (body: the data), all behind the stack;
/// `timeout` bounds how long a request may take to get its response head.
pub fn app(broker: Broker, timeout: Duration) -> Router {
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(
            CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST]),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        ))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/publish", post(publish))
        .route_service("/stream", SseService::new(broker.clone()))
        .with_state(broker)
        // A layer of its own: `Router::layer` turns its 413 body into axum's body type, which
        // `CorsLayer` and `TimeoutLayer` need (they make empty responses with `Default`).
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(stack)
}

#[derive(serde::Deserialize)]
struct Target {
    channel: Option<String>,
}

async fn publish(
    State(broker): State<Broker>,
    Query(to): Query<Target>,
    data: String,
) -> (StatusCode, String) {
    let channel = to.channel.as_deref().unwrap_or("sse");
    match broker.publish(channel, Event::default().data(data)).await {
        Ok(id) => (StatusCode::OK, format!("{id}\n")),
        Err(err) => (err.status(), format!("{err}\n")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=debug"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    println!("tower_http: listening on http://{}", listener.local_addr()?);
    let app = app(Broker::new(), Duration::from_secs(2));
    axum::serve(listener, app).await?;
    Ok(())
}
