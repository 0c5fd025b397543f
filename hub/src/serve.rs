//! Listening, serving, and stopping on a signal.

use std::{
    error::Error,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, lookup_host},
    sync::watch,
};

use super::{
    Args, Server,
    app::{metrics_routes, routes, traced},
    args::redis_url,
    broker, cors,
    jwt::{MercureEnv, Rights, rights},
    metrics, protect,
    state::Hub,
    tls_config,
};
use tower_sse::Broker;

/// The listen backlog of [`listen`]: 1,024. `TcpListener::bind` asks for 128, too few for
/// thousands of clients connecting at once (Linux caps it at `net.core.somaxconn`, 4096 by
/// default).
///
/// ```
/// assert_eq!(tower_sse_hub::BACKLOG, 1024);
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
/// let listener = tower_sse_hub::listen("127.0.0.1:0").await?;
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
/// tower_sse_hub::shutdown_signal().await;
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

/// Waits for `signal`, then drains the broker over `window` ([`Broker::drain`]): new streams
/// get `503`, open ones end spread over the window, and once they have, the broker is closed
/// and the server's graceful shutdown can finish (an event stream never ends on its own).
/// Give it to the server as its shutdown signal: the server goes on accepting during the
/// drain, so new streams get their `503` rather than a refused connection.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broker = Broker::new();
/// hub::shutdown(broker.clone(), Duration::ZERO, async {}).await;
/// assert!(broker.is_closed());
/// # }
/// ```
pub async fn shutdown(broker: Broker, window: Duration, signal: impl Future<Output = ()>) {
    signal.await;
    tracing::info!(drain = ?window, "shutting down");
    broker.drain(window).await;
}

/// How long the hub waits, after the drain, for its connections to finish before it exits
/// anyway: a client that stopped reading would hold its connection, and the process, for ever.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The hub as the `tower-sse-hub` binary runs it: the broker the flags ask for, [`app`](super::app) on
/// `--bind` (with [`cors`] for `--cors-origin`, and `/metrics` on `--metrics-bind` instead
/// if given), served by a [`Server`] (HTTPS with `--tls-cert` and `--tls-key`, else HTTP/1.1
/// and h2c), until Ctrl-C or SIGTERM, then drained over `--drain-secs` ([`shutdown`]), each
/// connection closed as its streams end ([`Server::serve_with_drain`]). Logs `hub listening
/// address=...` once it listens.
///
/// # Errors
///
/// A JWT key or algorithm can't be used, or comes with `--token` ([`RightsError`](super::RightsError)),
/// `--bind` is beyond loopback with neither `--token`, a publisher JWT key nor
/// `--allow-anonymous-publish`, the
/// certificate or key can't be loaded (see [`tls_config`]), the broker can't be built (see
/// [`broker`]), an address can't be bound, or serving fails.
///
/// ```no_run
/// use clap::Parser;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// tower_sse_hub::run(tower_sse_hub::Args::parse()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn run(mut args: Args) -> Result<(), Box<dyn Error>> {
    let addrs: Vec<SocketAddr> = lookup_host(&args.bind).await?.collect();
    // Mercure's variables are read here, and only here.
    let rights = rights(&args, &MercureEnv::from_env())?;
    let publisher_key = rights.as_ref().is_some_and(Rights::has_publisher);
    protect::check(&args, publisher_key, &addrs)?;
    // The environment as the crate reads it, also without the `redis` feature, so that a URL
    // there is refused, not ignored; not with `--flask-sse-redis`, which says which Redis and
    // how, where a Flask app's `REDIS_URL` (flask-sse's name) is expected (see `redis_url`),
    // nor with `--redis-cluster`, which names the backend too.
    if args.flask_sse_redis.is_none() && args.redis_cluster.is_empty() {
        args.redis_url = redis_url(args.redis_url, tower_sse::redis::url_from_env(), None);
    }
    metrics();
    let mut server = Server::new().max_streams_per_connection(args.max_streams_per_connection);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        server = server.tls(tls_config(cert, key)?);
    }
    let broker = broker(&args).await?;
    let listener = listen(&args.bind).await?;
    let metrics_listener = match &args.metrics_bind {
        Some(addr) => Some(listen(addr).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    tracing::info!(
        address = %listener.local_addr()?,
        metrics = ?metrics_addr,
        redis = args.redis_url.is_some(),
        flask_sse = args.flask_sse_redis.is_some(),
        // How many seeds, never their URLs (passwords).
        redis_cluster = args.redis_cluster.len(),
        token = args.token.is_some(),
        jwt_publisher = publisher_key,
        jwt_subscriber = rights.as_ref().is_some_and(Rights::has_subscriber),
        cors_origins = args.cors_origin.len(),
        tls = args.tls_cert.is_some(),
        "hub listening"
    );
    let keep_alive = (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive));
    let hub = Hub::new(broker.clone(), args.token, rights);
    let mut main = routes(&hub, keep_alive);
    if metrics_listener.is_none() {
        main = main.merge(metrics_routes(&hub));
    }
    if !args.cors_origin.is_empty() {
        main = main.layer(cors(&args.cors_origin));
    }
    // The signal starts the drain: the main server hears of it first, so that it closes each
    // connection as its streams end (HTTP/2: `GOAWAY` at once). Once the drain is over (the
    // broker closed), both servers stop.
    let (drain_started, draining) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let stopping = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let drain = Duration::from_secs(args.drain_secs);
    tokio::spawn(async move {
        let signal = async move {
            shutdown_signal().await;
            drain_started.send_replace(true);
        };
        shutdown(broker, drain, signal).await;
        stop.send_replace(true);
    });
    let exit_grace = {
        let stopped = stopped.clone();
        async move {
            stopping(stopped).await;
            tokio::time::sleep(EXIT_GRACE).await;
        }
    };
    let metrics_server = metrics_listener.map(|listener| {
        let app = traced(metrics_routes(&hub));
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(stopping(stopped.clone()))
            .into_future()
    });
    // Not `axum::serve`, which has no TLS; the router is cloned per connection, not rebuilt.
    let main_server = async move {
        server
            .serve_with_drain(
                listener,
                traced(main),
                stopping(draining),
                stopping(stopped),
            )
            .await;
        Ok(())
    };
    let servers = async move {
        match metrics_server {
            Some(metrics_server) => {
                let (main, metrics) = tokio::join!(main_server, metrics_server);
                main.and(metrics)
            }
            None => main_server.await,
        }
    };
    tokio::select! {
        served = servers => served?,
        () = exit_grace => tracing::warn!(?EXIT_GRACE, "connections still open after the drain; exiting"),
    }
    Ok(())
}
