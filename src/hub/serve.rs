//! Listening, serving, and stopping on a signal.

use std::{error::Error, future::Future, io, time::Duration};

use tokio::net::{lookup_host, TcpListener, TcpSocket};

use super::{app, args::redis_url, broker, metrics, tls_config, Args, Server};
use crate::Broker;

/// The listen backlog of [`listen`]: 1,024. `TcpListener::bind` asks for 128, too few for
/// thousands of clients connecting at once (Linux caps it at `net.core.somaxconn`, 4096 by
/// default).
///
/// ```
/// assert_eq!(tower_sse::hub::BACKLOG, 1024);
/// ```
pub const BACKLOG: u32 = 1024;

/// Listens on `addr` with a backlog of [`BACKLOG`]: after a restart, thousands of
/// `EventSource`s reconnect at once, and each connection the backlog drops costs its client a
/// one-second SYN retry.
///
/// # Errors
///
/// `addr` does not resolve, or none of its addresses can be bound.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tower_sse::hub::listen("127.0.0.1:0").await?;
/// println!("listening on {}", listener.local_addr()?);
/// # Ok(())
/// # }
/// ```
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
    let mut failed = None;
    for addr in lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(err) = socket.bind(addr) {
            failed = Some(err);
            continue;
        }
        return socket.listen(BACKLOG);
    }
    Err(failed.unwrap_or_else(|| io::Error::other(format!("{addr}: no address"))))
}

/// Completes on Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send). A signal
/// that can't be listened for never completes, after a line on stderr.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// tower_sse::hub::shutdown_signal().await;
/// println!("stopping");
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("can't listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => drop(sigterm.recv().await),
            Err(err) => {
                eprintln!("can't listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Waits for `signal`, then closes the broker so that every stream ends and the server's
/// graceful shutdown can finish: an event stream never ends on its own.
///
/// ```
/// use tower_sse::{hub, Broker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// hub::shutdown(broker.clone(), async {}).await;
/// assert!(broker.is_closed());
/// # }
/// ```
pub async fn shutdown(broker: Broker, signal: impl Future<Output = ()>) {
    signal.await;
    tracing::info!("shutting down");
    broker.close();
}

/// The hub as the `tower-sse-hub` binary runs it: the broker the flags ask for, [`app`] on
/// `--bind` (served by a [`Server`]: HTTPS with `--tls-cert` and `--tls-key`, else HTTP/1.1
/// and h2c), until Ctrl-C or SIGTERM. Logs `hub listening address=...` once it listens.
///
/// # Errors
///
/// The certificate or key can't be loaded (see [`tls_config`]), the broker can't be built
/// (see [`broker`]), or the address can't be bound.
///
/// ```no_run
/// use clap::Parser;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// tower_sse::hub::run(tower_sse::hub::Args::parse()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn run(mut args: Args) -> Result<(), Box<dyn Error>> {
    // The environment as the crate reads it. Without the `redis` feature the crate has no
    // `redis` module: the hub reads the same variables, so that a URL there is refused, not
    // ignored.
    #[cfg(feature = "redis")]
    let env = (crate::redis::url_from_env(), None);
    #[cfg(not(feature = "redis"))]
    let env = (
        std::env::var("SSE_REDIS_URL").ok(),
        std::env::var("REDIS_URL").ok(),
    );
    args.redis_url = redis_url(args.redis_url, env.0, env.1);
    metrics();
    let mut server = Server::new().max_streams_per_connection(args.max_streams_per_connection);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        server = server.tls(tls_config(cert, key)?);
    }
    let broker = broker(&args).await?;
    let listener = listen(&args.bind).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        redis = args.redis_url.is_some(),
        token = args.token.is_some(),
        tls = args.tls_cert.is_some(),
        "hub listening"
    );
    let keep_alive = (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive));
    let app = app(broker.clone(), args.token, keep_alive);
    // Not `axum::serve`, which has no TLS; the router is cloned per connection, not rebuilt.
    server
        .serve(listener, app, shutdown(broker, shutdown_signal()))
        .await;
    Ok(())
}
