//! A hub of your own: the standalone hub's routes (`tower_sse_hub::app`) plus one of yours.
//!
//! Run with: `cargo run -p tower-sse-hub --example hub`, then
//! `curl -N 'http://127.0.0.1:8080/events?channel=news'`, and in another terminal
//! `curl 'http://127.0.0.1:8080/subscribers?channel=news'` (`1`) and
//! `curl -X POST --data-binary 'Hello!' 'http://127.0.0.1:8080/publish?channel=news'`.
//!
//! To run the hub as it is, no Rust needed: `cargo install --path hub`, then
//! `tower-sse-hub --help`. This example is for an app that needs more than its flags: here a
//! route that counts a channel's subscribers; in yours, your own auth, routes or layers.

use std::time::Duration;

use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use tower_sse::Broker;
use tower_sse_hub as hub;

#[derive(serde::Deserialize)]
struct Channel {
    channel: String,
}

/// `GET /subscribers?channel=NAME`: how many streams are open on the channel, here.
async fn subscribers(State(broker): State<Broker>, Query(query): Query<Channel>) -> String {
    broker.subscriber_count(&query.channel).to_string()
}

/// The hub's routes (no token, keep-alive every 15 s), and ours beside them.
pub fn app(broker: Broker) -> Router {
    let ours = Router::new()
        .route("/subscribers", get(subscribers))
        .with_state(broker.clone());
    hub::app(broker, None, Some(Duration::from_secs(15))).merge(ours)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before the broker is built, so that `/metrics` counts it.
    hub::metrics();
    let broker = Broker::builder().history(1000).build();
    let listener = hub::listen("127.0.0.1:8080").await?;
    println!("hub: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(broker.clone()).into_make_service())
        .with_graceful_shutdown(hub::shutdown(
            broker,
            Duration::from_secs(10),
            hub::shutdown_signal(),
        ))
        .await?;
    Ok(())
}
