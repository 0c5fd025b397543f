//! The baseline: what an axum user writes without tower-sse, and the hidden `serve` subcommand
//! that runs it in a child process.

use std::{
    convert::Infallible,
    error::Error,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
};
use dashmap::DashMap;
use futures_util::Stream;
use tokio::{
    io::AsyncReadExt,
    sync::broadcast::{self, error::RecvError},
};

/// tower-sse's default buffer (the hub keeps more: its history, 1,000 events by default).
pub const CAPACITY: usize = 256;

#[derive(Clone, Default)]
struct Hub {
    // `Arc<str>`, not `String`: each receiver clones a pointer, not the data.
    channels: Arc<DashMap<String, broadcast::Sender<Arc<str>>>>,
    next_id: Arc<AtomicU64>,
}

#[derive(serde::Deserialize)]
struct Channel {
    channel: Option<String>,
}

impl Channel {
    fn name(self) -> String {
        self.channel.unwrap_or_else(|| "sse".to_owned())
    }
}

/// `GET /events?channel=X` and `POST /publish?channel=X` (body: the data; answers
/// `{"id": ".."}`), like the hub's.
pub fn app() -> Router {
    Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(Hub::default())
}

async fn events(
    State(hub): State<Hub>,
    Query(channel): Query<Channel>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = hub
        .channels
        .entry(channel.name())
        .or_insert_with(|| broadcast::channel(CAPACITY).0)
        .subscribe();
    // As `BroadcastStream` with lag errors filtered out.
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(data) => return Some((Ok(Event::default().data(&*data)), rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn publish(
    State(hub): State<Hub>,
    Query(channel): Query<Channel>,
    data: String,
) -> Json<serde_json::Value> {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(sender) = hub.channels.get(&channel.name()) {
        // No receivers is not an error: nobody listens.
        let _ = sender.send(Arc::from(data));
    }
    Json(serde_json::json!({ "id": id.to_string() }))
}

/// The `serve` subcommand: [`app`] on 127.0.0.1, served as the hub serves its router
/// (`into_make_service`, the same listen backlog), until the parent closes our stdin or kills
/// us. Prints the address first.
pub async fn serve(port: u16) -> Result<(), Box<dyn Error + Send + Sync>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tower_sse_hub::listen(&addr.to_string()).await?;
    println!("{}", listener.local_addr()?);
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    axum::serve(listener, app().into_make_service()).await?;
    Ok(())
}
