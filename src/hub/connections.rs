//! Serving connections: HTTP/1.1 and HTTP/2, over TLS or in the clear, stopped gracefully.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::{rustls::ServerConfig, TlsAcceptor};

/// The default of [`Server::max_streams_per_connection`]: 256.
///
/// ```
/// assert_eq!(tower_sse::hub::MAX_STREAMS_PER_CONNECTION, 256);
/// ```
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves a router on a listener, one task per connection, until a signal; then stops
/// accepting and waits for the open connections to finish (see [`Server::serve`]).
///
/// - In the clear (the default): HTTP/1.1, and HTTP/2 by prior knowledge (`h2c`, [RFC 9113
///   §3.3]) for proxies that speak it; the first bytes of a connection tell which.
/// - With [`tls`](Server::tls): HTTPS, HTTP/2 or HTTP/1.1 as ALPN selects
///   ([`ALPN`](super::ALPN)). Browsers speak HTTP/2 only this way, and over HTTP/1.1 they
///   open at most 6 connections per origin: a page's seventh `EventSource` waits for one of
///   the first six to close. Over HTTP/2 every stream shares one connection.
///
/// An HTTP/2 connection carries at most [`max_streams_per_connection`] streams at once
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client wanting more waits, or opens another
/// connection.
///
/// ```no_run
/// use tower_sse::{hub, Broker};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = Broker::new();
/// let tls = hub::tls_config("cert.pem".as_ref(), "key.pem".as_ref())?;
/// let app = hub::app(broker.clone(), None, None);
/// hub::Server::new()
///     .tls(tls)
///     .max_streams_per_connection(100)
///     .serve(hub::listen("127.0.0.1:8443").await?, app, hub::shutdown(broker, hub::shutdown_signal()))
///     .await;
/// # Ok(())
/// # }
/// ```
///
/// [RFC 9113 §3.3]: https://www.rfc-editor.org/rfc/rfc9113#section-3.3
/// [`max_streams_per_connection`]: Server::max_streams_per_connection
#[derive(Clone, Debug)]
#[must_use]
pub struct Server {
    tls: Option<Arc<ServerConfig>>,
    max_streams: u32,
}

impl Default for Server {
    fn default() -> Server {
        Server::new()
    }
}

impl Server {
    /// In the clear, HTTP/1.1 and h2c, at most [`MAX_STREAMS_PER_CONNECTION`] streams per
    /// HTTP/2 connection.
    ///
    /// ```
    /// let server = tower_sse::hub::Server::new();
    /// ```
    pub fn new() -> Server {
        Server {
            tls: None,
            max_streams: MAX_STREAMS_PER_CONNECTION,
        }
    }

    /// Serves HTTPS with `config` (see [`tls_config`](super::tls_config)), which should offer
    /// [`ALPN`](super::ALPN): a connection speaks HTTP/2 when ALPN selected `h2`, else
    /// HTTP/1.1.
    ///
    /// ```
    /// # fn tls(config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) {
    /// let server = tower_sse::hub::Server::new().tls(config);
    /// # }
    /// ```
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Server {
        self.tls = Some(config);
        self
    }

    /// The most streams (requests) an HTTP/2 connection may have open at once; default
    /// [`MAX_STREAMS_PER_CONNECTION`]. Each open event stream holds its subscription, so this
    /// bounds what one connection can hold of the hub.
    ///
    /// ```
    /// let server = tower_sse::hub::Server::new().max_streams_per_connection(100);
    /// ```
    pub fn max_streams_per_connection(mut self, max: u32) -> Server {
        self.max_streams = max;
        self
    }

    /// Serves `app` on `listener` until `signal` completes, then stops accepting and shuts
    /// each connection down gracefully: HTTP/1.1 connections close once their response is
    /// done, HTTP/2 ones are sent `GOAWAY` and close once their streams are done. Returns
    /// when every connection is closed. An event stream never ends on its own: let `signal`
    /// close the broker, as [`shutdown`](super::shutdown) does.
    ///
    /// Connections that fail (a reset, a failed handshake) are logged at `debug` and don't
    /// stop the server; failing to accept (too many open files) is logged at `error`, and
    /// accepting goes on after a second.
    ///
    /// ```no_run
    /// use tower_sse::{hub, Broker};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let broker = Broker::new();
    /// let app = hub::app(broker.clone(), None, None);
    /// let listener = hub::listen("127.0.0.1:8080").await?;
    /// hub::Server::new()
    ///     .serve(listener, app, hub::shutdown(broker, hub::shutdown_signal()))
    ///     .await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(self, listener: TcpListener, app: Router, signal: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(self.max_streams);
        let tls = self.tls.map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        tokio::pin!(signal);
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        accept_failed(err).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            // One clone of the router per connection (an `Arc`), not a rebuild.
            let service = TowerToHyperService::new(app.clone());
            let (builder, tls, watcher) = (builder.clone(), tls.clone(), graceful.watcher());
            tokio::spawn(async move {
                let served = match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(tcp), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => return tracing::debug!("TLS handshake: {err}"),
                            Err(_) => return tracing::debug!("TLS handshake: timed out"),
                        };
                        let builder = match tls.get_ref().1.alpn_protocol() {
                            Some(b"h2") => builder.http2_only(),
                            _ => builder.http1_only(),
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        watcher.watch(conn.into_owned()).await
                    }
                };
                if let Err(err) = served {
                    tracing::debug!("connection: {err}");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }
}

/// After a failed `accept`: a connection that went away before it was accepted is nothing;
/// anything else (too many open files) is logged, and accepting waits a second, as
/// `axum::serve` does, rather than spin.
async fn accept_failed(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept: {err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
