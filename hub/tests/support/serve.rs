//! A hyper http1 connection loop with hyper-util's `GracefulShutdown`, and a raw client's read
//! of a response head, for the tests that end thousands of open streams at once
//! (`tests/drain.rs`, `tests/shutdown.rs`, through `#[path]`).

use std::net::SocketAddr;

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};
use tower::ServiceExt;
use tower_sse::SseService;
use tower_sse_hub as hub;

/// Serves `sse` on a free loopback port, in a task of its own; returns the address, the
/// `stop` for [`serve`], and the task, which returns how many connections ended with an error.
pub async fn start(sse: SseService) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<usize>) {
    // `TcpListener::bind` listens with a backlog of 128: too few for a batch of connects.
    let listener = hub::listen("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    (addr, stop, tokio::spawn(serve(listener, sse, stopped)))
}

/// Serves `sse` until `stop`, then stops accepting and shuts down gracefully. Returns how many
/// connections ended with an error.
pub async fn serve(listener: TcpListener, sse: SseService, stop: oneshot::Receiver<()>) -> usize {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted.expect("accept").0,
            _ = &mut stop => break,
        };
        let sse = sse.clone();
        let service = service_fn(move |req| sse.clone().oneshot(req));
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        connections.spawn(graceful.watch(conn));
    }
    drop(listener);
    graceful.shutdown().await;
    let mut errors = 0;
    while let Some(ended) = connections.join_next().await {
        if let Err(err) = ended.expect("no connection task panics") {
            eprintln!("connection: {err}");
            errors += 1;
        }
    }
    errors
}

/// Reads a response head from `socket`; returns it (lowercase) and any body bytes read with it.
pub async fn read_head(socket: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0; 1024];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    (head, buf.split_off(end))
}
