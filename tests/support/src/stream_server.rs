//! A server for tests that drop streams under their client, as a crash or a proxy would: the
//! app on a free port, served with hyper one task per connection, recording every `/stream`
//! request (its connection and its `Last-Event-ID`, as sent), with a gate that holds new
//! `/stream` requests while the test publishes. Used by `tests/browser.rs` and
//! `tests/client.rs` through `#[path]`.

#![allow(dead_code)] // each test uses its part

use std::sync::{Arc, Mutex};

use crate::guard;
use axum::Router;
use hyper::{Request, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::ServiceExt;

/// A `/stream` request the app answered: on which connection, with which `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    pub conn: usize,
    pub last_event_id: Option<String>,
}

/// The app on a free port, one task per connection, so the test can drop the connections that
/// carry streams (as a crash or a proxy would) and see what the client does.
pub struct Server {
    pub base: String,
    /// Connection tasks, by connection number; `None` once dropped.
    conns: Arc<Mutex<Vec<Option<JoinHandle<()>>>>>,
    /// Every answered `/stream` request, in order.
    streams: watch::Receiver<Vec<StreamRequest>>,
    /// While `false`, `/stream` requests wait before reaching the app.
    pub gate: Arc<watch::Sender<bool>>,
}

impl Server {
    pub async fn start(app: Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (streams_tx, streams) = watch::channel(Vec::new());
        let (streams_tx, gate) = (Arc::new(streams_tx), Arc::new(watch::channel(true).0));
        let (tasks, gates) = (conns.clone(), gate.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut tasks = tasks.lock().unwrap();
                let conn = tasks.len();
                let (app, streams, gates) = (app.clone(), streams_tx.clone(), gates.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (app, streams, mut gate) =
                        (app.clone(), streams.clone(), gates.subscribe());
                    async move {
                        if req.uri().path() != "/stream" {
                            return app.oneshot(req).await;
                        }
                        // The recording layer: what the client sent, as it sent it.
                        let last_event_id = req
                            .headers()
                            .get("last-event-id")
                            .map(|id| id.to_str().unwrap().to_owned());
                        let _ = gate.wait_for(|open| *open).await;
                        let res = app.oneshot(req).await;
                        // The subscription exists once the response does.
                        streams.send_modify(|all| {
                            all.push(StreamRequest {
                                conn,
                                last_event_id,
                            })
                        });
                        res
                    }
                });
                let serve = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                tasks.push(Some(tokio::spawn(async move {
                    let _ = serve.await;
                })));
            }
        });
        Server {
            base,
            conns,
            streams,
            gate,
        }
    }

    /// Waits until `n` `/stream` requests have been answered; returns them all.
    pub async fn streams(&mut self, n: usize) -> Vec<StreamRequest> {
        let all = guard(
            "stream request",
            self.streams.wait_for(|all| all.len() >= n),
        )
        .await;
        all.unwrap().clone()
    }

    /// Drops every connection that carried a stream, and returns once they are gone.
    pub async fn drop_streams(&self) {
        let conns: Vec<usize> = self.streams.borrow().iter().map(|s| s.conn).collect();
        let tasks: Vec<_> = {
            let mut tasks = self.conns.lock().unwrap();
            conns
                .iter()
                .filter_map(|&conn| tasks[conn].take())
                .collect()
        };
        assert!(!tasks.is_empty(), "no stream connection to drop");
        for task in tasks {
            task.abort();
            // Cancelled: the connection, its response body and its subscription are dropped.
            let _ = guard("connection drop", task).await;
        }
    }
}
