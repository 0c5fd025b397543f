//! tower-sse on plain hyper 1: no framework, a connection loop, graceful shutdown.
//!
//! Run with: `cargo run --example hyper`, then `curl -N http://127.0.0.1:3000/stream` and in
//! another terminal `curl 'http://127.0.0.1:3000/publish?msg=Hello%2C+world'`.
//!
//! [`SseService`] is a `tower::Service`, so a plain `match` on the path can call it. Every
//! response uses [`SseBody`], which also carries short plain-text bodies. On Ctrl-C the
//! listener stops, [`Broker::close`] ends the open streams (after the events
//! already published), and [`GracefulShutdown`] waits for the connections: an event stream
//! never ends on its own, so without `close` a graceful shutdown would wait forever.

use std::{convert::Infallible, future::Future, time::Duration};

use hyper::{Request, Response, StatusCode};
use hyper::{body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_sse::{
    Broker, Event, SseBody, SseService,
    channel::{form_decode, query_pairs},
};

/// Routes one request: `/stream`, `/publish?msg=...` (to the default channel `sse`), else 404.
async fn route(sse: SseService, req: Request<Incoming>) -> Result<Response<SseBody>, Infallible> {
    let broker = sse.broker().clone();
    match req.uri().path() {
        "/stream" => sse.oneshot(req).await,
        "/publish" => {
            let query = req.uri().query().unwrap_or("");
            let msg = query_pairs(query).find_map(|(key, value)| match key {
                "msg" => form_decode(value).ok(),
                _ => None,
            });
            Ok(match msg {
                None => plain(StatusCode::BAD_REQUEST, "msg missing or malformed\n".into()),
                Some(msg) => match broker.publish("sse", Event::default().data(msg)).await {
                    Ok(id) => plain(StatusCode::OK, format!("published {id}\n")),
                    Err(err) => plain(err.status(), format!("{err}\n")),
                },
            })
        }
        _ => Ok(plain(StatusCode::NOT_FOUND, "not found\n".into())),
    }
}

fn plain(status: StatusCode, text: String) -> Response<SseBody> {
    let mut res = Response::new(SseBody::from(text));
    *res.status_mut() = status;
    let text_plain = header::HeaderValue::from_static("text/plain; charset=utf-8");
    res.headers_mut().insert(header::CONTENT_TYPE, text_plain);
    res
}

/// Serves until `shutdown` completes, then closes the broker and waits for the connections.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // E.g. too many open files: wait for some to close, keep serving.
                Err(err) => {
                    eprintln!("accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let sse = SseService::new(broker.clone());
        let service = service_fn(move |req| route(sse.clone(), req));
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                eprintln!("connection: {err}");
            }
        });
    }
    drop(listener);
    broker.close();
    graceful.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("hyper: listening on http://{}", listener.local_addr()?);
    // Ctrl-C only; `tower_sse_hub::shutdown_signal` (crate tower-sse-hub) also takes SIGTERM.
    let ctrl_c = async { drop(tokio::signal::ctrl_c().await) };
    serve(listener, Broker::new(), ctrl_c).await?;
    Ok(())
}
