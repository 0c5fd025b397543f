//! tower-sse beside a tonic gRPC service, on one port: gRPC over HTTP/2, grpc-web and the event
//! stream over HTTP/1.1.
//!
//! Run with: `cargo run --example tonic_web`, then `curl -N http://127.0.0.1:3003/stream` and in
//! another terminal `curl -d 'Hello!' http://127.0.0.1:3003/publish`; a gRPC health check
//! (`grpcurl -plaintext 127.0.0.1:3003 grpc.health.v1.Health/Check`) answers `SERVING`.
//!
//! tonic routes with axum: [`Routes`] is an `axum::Router` with one route per gRPC service
//! (`/grpc.health.v1.Health/*`), so the stream and other HTTP routes merge into it. tonic's
//! [`Server`] serves the lot, with `accept_http1(true)` for grpc-web and `EventSource`, which
//! speak HTTP/1.1. [`GrpcWebLayer`] wraps only the gRPC service: it translates grpc-web
//! requests and answers `400` to any other HTTP/1.1 request, so around the whole router it
//! would refuse the stream. tonic-health's service needs no protoc.

use std::future::Future;

use axum::{Router, extract::State, http::StatusCode, routing::post};
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_web::GrpcWebLayer;
use tower::Layer;
use tower_sse::{Broker, Event, SseService};

/// One router for everything: `grpc.health.v1.Health` (gRPC and grpc-web), `GET /stream`,
/// `POST /publish` (body: the data, to the default channel `sse`), and `404` for other paths.
pub fn app(broker: Broker) -> Routes {
    // The reporter sets statuses; the overall one ("") starts as SERVING.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let grpc = Routes::new(GrpcWebLayer::new().layer(health)).into_axum_router();
    let http = Router::new()
        .route("/publish", post(publish))
        .route_service("/stream", SseService::new(broker.clone()))
        .with_state(broker);
    // tonic's fallback answers gRPC `unimplemented` with HTTP 200; a plain 404 suits both
    // kinds of client (gRPC maps HTTP 404 to UNIMPLEMENTED).
    Routes::from(
        grpc.merge(http)
            .fallback(|| async { StatusCode::NOT_FOUND }),
    )
}

async fn publish(State(broker): State<Broker>, data: String) -> (StatusCode, String) {
    match broker.publish("sse", Event::default().data(data)).await {
        Ok(id) => (StatusCode::OK, format!("{id}\n")),
        Err(err) => (err.status(), format!("{err}\n")),
    }
}

/// Serves [`app`] on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` completes, then closes
/// the broker, which ends the open streams, and waits for the connections.
///
/// # Errors
///
/// The server failed.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let routes = app(broker.clone());
    let shutdown = async move {
        shutdown.await;
        broker.close();
    };
    Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:3003").await?;
    println!("tonic_web: listening on http://{}", listener.local_addr()?);
    // Ctrl-C only; `tower_sse_hub::shutdown_signal` (crate tower-sse-hub) also takes SIGTERM.
    let ctrl_c = async { drop(tokio::signal::ctrl_c().await) };
    serve(listener, Broker::new(), ctrl_c).await?;
    Ok(())
}
