//! tower-sse in an axum app: the stream beside ordinary routes, guarded per channel.
//!
//! Run with: `cargo run --example axum`, then
//!
//! ```text
//! curl -N 'http://127.0.0.1:3001/stream?channel=news'
//! curl -H 'content-type: application/json' -d '{"channel":"news","text":"Hello"}' \
//!      http://127.0.0.1:3001/messages
//! curl -N -H 'Authorization: Bearer s3cret' 'http://127.0.0.1:3001/stream?channel=admin.ops'
//! ```
//!
//! [`SseService`] is a `tower::Service`, so it goes under `/stream` with `route_service`, and
//! [`AccessLayer`] wraps just that service: channels named `admin.*` need
//! `Authorization: Bearer <token>` (`401` without one, `403` with a wrong one, and no stream).
//! `POST /messages` takes a JSON body and publishes it as the event's data, the same check
//! applying to `admin.*` channels. The broker is the router's state.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header, request::Parts},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_sse::{AccessLayer, Broker, Event, SseService, access::Denied};

/// The body of `POST /messages`, which is also the data of the event it publishes.
#[derive(Debug, Deserialize, Serialize)]
pub struct Message {
    /// Where to publish.
    pub channel: String,
    /// What to say.
    pub text: String,
}

#[derive(Clone)]
struct AppState {
    broker: Broker,
    /// `Bearer <token>`: the `Authorization` header `admin.*` channels need.
    admin: Arc<str>,
}

/// The routes: `GET /`, `POST /messages`, and `GET /stream` behind the access check.
pub fn app(broker: Broker, admin_token: &str) -> Router {
    let admin: Arc<str> = format!("Bearer {admin_token}").into();
    let expected = admin.clone();
    let access = AccessLayer::new(move |parts: &Parts, channel: &str| {
        std::future::ready(check(&parts.headers, channel, &expected))
    })
    .channel_rules(broker.channel_rules().clone());
    let stream = ServiceBuilder::new()
        .layer(access)
        .service(SseService::new(broker.clone()));
    Router::new()
        .route(
            "/",
            get(|| async { "GET /stream?channel=NAME, POST /messages\n" }),
        )
        .route("/messages", post(post_message))
        .route_service("/stream", stream)
        .with_state(AppState { broker, admin })
}

/// Channels named `admin.*` need the admin token; all others are open.
fn check(headers: &HeaderMap, channel: &str, expected: &str) -> Result<(), Denied> {
    if !channel.starts_with("admin.") {
        return Ok(());
    }
    // A real app would compare in constant time, as `tower-sse-hub` does.
    match headers.get(header::AUTHORIZATION) {
        None => Err(Denied::unauthorized("admin channels need a bearer token")),
        Some(given) if given.as_bytes() == expected.as_bytes() => Ok(()),
        Some(_) => Err(Denied::forbidden("wrong token")),
    }
}

/// Publishes the message as a `message` event with JSON data; answers `{"id": "..."}`.
async fn post_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(message): Json<Message>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    check(&headers, &message.channel, &state.admin)
        .map_err(|denied| (denied.status(), denied.reason().to_owned()))?;
    let event = Event::default().event("message").json_data(&message);
    match state.broker.publish(&message.channel, event).await {
        Ok(id) => Ok(Json(serde_json::json!({ "id": id }))),
        Err(err) => Err((err.status(), err.to_string())),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("axum: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(Broker::new(), "s3cret")).await?;
    Ok(())
}
