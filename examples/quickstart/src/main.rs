//! The flask-sse quickstart, in Rust: no Redis, nothing to install.
//!
//! Run with: `cargo run -p quickstart`, open <http://127.0.0.1:8000/>, then in another
//! tab (or `curl http://127.0.0.1:8000/hello`) hit `/hello`: the page shows the greeting.
//! `curl -N http://127.0.0.1:8000/stream` shows the raw stream.

use axum::{Router, http::StatusCode, response::Html, routing::get};
use tower_sse::{Broker, Event, SseService};

const PAGE: &str = r#"<!DOCTYPE html>
<html>
<head><title>tower-sse quickstart</title></head>
<body>
  <h1>tower-sse quickstart</h1>
  <p>Open <a href="/hello" target="_blank">/hello</a> to publish a greeting.</p>
  <ul id="greetings"></ul>
  <script>
    var source = new EventSource("/stream");
    source.addEventListener("greeting", function (event) {
      var data = JSON.parse(event.data);
      var item = document.createElement("li");
      item.textContent = data.message;
      document.getElementById("greetings").appendChild(item);
    }, false);
  </script>
</body>
</html>
"#;

/// The page, `/hello` publishing to the default channel `sse`, and `/stream` serving it.
pub fn app(broker: Broker) -> Router {
    let stream = SseService::new(broker.clone());
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/hello",
            get(move || async move {
                let greeting = Event::default()
                    .event("greeting")
                    .json_data(&serde_json::json!({"message": "Hello!"}));
                match broker.publish("sse", greeting).await {
                    Ok(id) => (StatusCode::OK, format!("Message sent! (id {id})\n")),
                    Err(err) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("Not sent: {err}\n"),
                    ),
                }
            }),
        )
        .route_service("/stream", stream)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("quickstart: open http://{}/", listener.local_addr()?);
    // A short history: a browser that reconnects gets the greetings it missed.
    let broker = Broker::builder().history(100).build();
    axum::serve(listener, app(broker)).await?;
    Ok(())
}
