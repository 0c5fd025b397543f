//! Serving connections: HTTP/1.1 and HTTP/2, over TLS or in the clear, closed as a drain
//! goes, stopped gracefully.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig, server::TlsStream};

use super::linger::Linger;

/// The default of [`Server::max_streams_per_connection`]: 256.
///
/// ```
/// assert_eq!(tower_sse_hub::MAX_STREAMS_PER_CONNECTION, 256);
/// ```
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The router as hyper calls it.
type Service = TowerToHyperService<Router>;

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
/// A connection the server closes with bytes still coming (the rest of a refused request's
/// body) is closed in two steps ([RFC 9112 §9.6]): the server shuts its side, so the client
/// reads the response and then the end, and reads and discards what the client still sends,
/// up to 4 MiB and for 2 s at most, before it closes the socket. Closed at once, the socket
/// would send a reset, and a client that sends a whole body before it reads (Python's
/// `http.client`) would get the reset instead of the `413` and its reason. Past the bounds,
/// the socket is closed anyway, so a client can't hold a connection with a body without end.
///
/// ```no_run
/// use std::time::Duration;
///
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = Broker::new();
/// let tls = hub::tls_config("cert.pem".as_ref(), "key.pem".as_ref())?;
/// let app = hub::app(broker.clone(), None, None);
/// let stop = hub::shutdown(broker, Duration::from_secs(10), hub::shutdown_signal());
/// hub::Server::new()
///     .tls(tls)
///     .max_streams_per_connection(100)
///     .serve(hub::listen("127.0.0.1:8443").await?, app, stop)
///     .await;
/// # Ok(())
/// # }
/// ```
///
/// [RFC 9113 §3.3]: https://www.rfc-editor.org/rfc/rfc9113#section-3.3
/// [RFC 9112 §9.6]: https://www.rfc-editor.org/rfc/rfc9112#section-9.6
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
    /// let server = tower_sse_hub::Server::new();
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
    /// let server = tower_sse_hub::Server::new().tls(config);
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
    /// let server = tower_sse_hub::Server::new().max_streams_per_connection(100);
    /// ```
    pub fn max_streams_per_connection(mut self, max: u32) -> Server {
        self.max_streams = max;
        self
    }

    /// Serves `app` on `listener` until `signal` completes, then stops accepting and shuts
    /// each connection down gracefully: HTTP/1.1 connections close once their response is
    /// done, HTTP/2 ones are sent `GOAWAY` and close once their streams are done. Returns
    /// when every connection is closed. An event stream never ends on its own: let `signal`
    /// drain or close the broker, as [`shutdown`](super::shutdown) does; the server goes on
    /// accepting until `signal` completes, so streams opened during a drain get its `503`.
    /// To close each connection as its streams end during the drain, rather than all at the
    /// end, see [`serve_with_drain`](Server::serve_with_drain).
    ///
    /// Connections that fail (a reset, a failed handshake) are logged at `debug` and don't
    /// stop the server; failing to accept (too many open files) is logged at `error`, and
    /// accepting goes on after a second.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use tower_sse::Broker;
    /// use tower_sse_hub as hub;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let broker = Broker::new();
    /// let app = hub::app(broker.clone(), None, None);
    /// let listener = hub::listen("127.0.0.1:8080").await?;
    /// let stop = hub::shutdown(broker, Duration::from_secs(10), hub::shutdown_signal());
    /// hub::Server::new().serve(listener, app, stop).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(self, listener: TcpListener, app: Router, signal: impl Future<Output = ()>) {
        self.serve_with_drain(listener, app, std::future::pending(), signal)
            .await;
    }

    /// As [`serve`](Server::serve), and from when `drain` completes (the drain's start, before
    /// `signal`) each connection closes as soon as it carries nothing more: an HTTP/1.1
    /// connection once its response is done (an event stream's, at its moment in the drain),
    /// at once if idle; an HTTP/2 connection is sent `GOAWAY` at once, so its client opens no
    /// new stream on it, and closes once its open streams are done. Connections accepted
    /// meanwhile are served one request (HTTP/1.1, then closed) or the streams the client
    /// opened before the `GOAWAY` (HTTP/2).
    ///
    /// So a proxy that keeps its connections to the hub in a pool can't send a new stream
    /// down one of them to the draining hub, and get its `503`: an `EventSource` given a
    /// `503` gives up for good, while a closed connection makes it (or the proxy) retry.
    /// The hub binary ([`run`](super::run)) serves so.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use tokio::sync::watch;
    /// use tower_sse::Broker;
    /// use tower_sse_hub as hub;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let broker = Broker::new();
    /// let app = hub::app(broker.clone(), None, None);
    /// let listener = hub::listen("127.0.0.1:8080").await?;
    /// let (started, mut draining) = watch::channel(false);
    /// let signal = async move {
    ///     hub::shutdown_signal().await;
    ///     started.send_replace(true);
    /// };
    /// let stop = hub::shutdown(broker, Duration::from_secs(10), signal);
    /// let drain = async move {
    ///     let _ = draining.wait_for(|started| *started).await;
    /// };
    /// hub::Server::new().serve_with_drain(listener, app, drain, stop).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve_with_drain(
        self,
        listener: TcpListener,
        app: Router,
        drain: impl Future<Output = ()>,
        signal: impl Future<Output = ()>,
    ) {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.max_concurrent_streams(self.max_streams);
        let mut h1_closing = http1::Builder::new();
        h1_closing.keep_alive(false);
        let protocols = Arc::new(Protocols {
            tls: self.tls.map(TlsAcceptor::from),
            h1: http1::Builder::new(),
            h1_closing,
            h2,
        });
        // Each connection holds a receiver until it is closed.
        let phase = watch::Sender::new(Phase::Serving);
        tokio::pin!(drain, signal);
        let mut draining = false;
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        accept_failed(err).await;
                        continue;
                    }
                },
                () = &mut drain, if !draining => {
                    draining = true;
                    phase.send_replace(Phase::Closing);
                    continue;
                }
                () = &mut signal => break,
            };
            // One clone of the router per connection (an `Arc`), not a rebuild.
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(Protocols::serve(
                protocols.clone(),
                tcp,
                service,
                phase.subscribe(),
            ));
        }
        drop(listener);
        phase.send_replace(Phase::Stopped);
        phase.closed().await;
    }
}

/// What the server asks of its connections, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Serve: HTTP/1.1 connections are kept alive between requests.
    Serving,
    /// Close once nothing more is carried (HTTP/2: after a `GOAWAY`); the server still
    /// accepts.
    Closing,
    /// As `Closing`, and the server accepts no more: connections still choosing their
    /// protocol give up.
    Stopped,
}

/// What a connection needs to choose its protocol and serve it. Each connection's task holds
/// one protocol's state, not room for both: hyper-util's `auto` builder holds either, and
/// costs an HTTP/1.1 stream about 7 KB more of RSS (`cargo run --example loadtest --
/// --http2`).
struct Protocols {
    tls: Option<TlsAcceptor>,
    h1: http1::Builder,
    /// Without keep-alive, for connections accepted while closing: hyper closes a connection
    /// asked to close before it has read anything, which would leave its request unanswered.
    h1_closing: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    async fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        service: Service,
        mut phase: watch::Receiver<Phase>,
    ) {
        let chosen = async {
            match &self.tls {
                None => h2c_preface(&tcp)
                    .await
                    .map(|h2| (h2, Io::Plain(Linger::new(tcp)))),
                Some(acceptor) => {
                    // Boxed, as below: only TLS connections hold the TLS state.
                    let accept = Box::pin(acceptor.accept(Linger::new(tcp)));
                    let tls = tokio::time::timeout(HANDSHAKE, accept).await;
                    let tls = tls.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    Ok((h2, Io::Tls(Box::new(tls))))
                }
            }
        };
        let (h2, io) = tokio::select! {
            chosen = chosen => match chosen {
                Ok(chosen) => chosen,
                Err(err) => return tracing::debug!("connection: {err}"),
            },
            // Shutting down before the client said anything: nothing to finish.
            _ = phase.wait_for(|phase| *phase == Phase::Stopped) => return,
        };
        // An HTTP/1.1 connection accepted while closing serves one request, then closes; an
        // HTTP/2 one is sent `GOAWAY` at once (after the streams the client opened first).
        let (h1, h1_close_at) = if *phase.borrow_and_update() == Phase::Serving {
            (&self.h1, Phase::Closing)
        } else {
            (&self.h1_closing, Phase::Stopped)
        };
        // The HTTP/2 state is boxed, so that an HTTP/1.1 connection's task has room for its
        // own state only: about 800 bytes less per stream.
        let served = match (h2, io) {
            (false, Io::Plain(tcp)) => {
                let conn = h1.serve_connection(TokioIo::new(tcp), service);
                until_closed(conn, phase, h1_close_at).await
            }
            (true, Io::Plain(tcp)) => {
                let conn = self.h2.serve_connection(TokioIo::new(tcp), service);
                Box::pin(until_closed(conn, phase, Phase::Closing)).await
            }
            (false, Io::Tls(tls)) => {
                let conn = h1.serve_connection(TokioIo::new(tls), service);
                until_closed(conn, phase, h1_close_at).await
            }
            (true, Io::Tls(tls)) => {
                let conn = self.h2.serve_connection(TokioIo::new(tls), service);
                Box::pin(until_closed(conn, phase, Phase::Closing)).await
            }
        };
        if let Err(err) = served {
            tracing::debug!("connection: {err}");
        }
    }
}

/// Serves `conn` to its end; once the server's phase reaches `close_at` (at once if it
/// already has), asks it to close gracefully: hyper's HTTP/1.1 connection closes after the
/// response under way (at once if idle or if it has read nothing yet), its HTTP/2
/// connection sends `GOAWAY` and closes once its streams are done. `phase` is held to the
/// end: the server waits for it.
async fn until_closed<C: GracefulConnection>(
    conn: C,
    mut phase: watch::Receiver<Phase>,
    close_at: Phase,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => return served,
        // Or the server is gone: close as well.
        _ = phase.wait_for(|phase| *phase >= close_at) => {}
    }
    conn.as_mut().graceful_shutdown();
    let served = conn.await;
    drop(phase);
    served
}

/// A connection, in the clear or over TLS; either closes lingering ([`Linger`]).
enum Io {
    Plain(Linger<TcpStream>),
    // Boxed: the TLS state is larger than a connection in the clear needs.
    Tls(Box<TlsStream<Linger<TcpStream>>>),
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), which an h2c client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client starts with the HTTP/2 preface (h2c by prior knowledge): peeks, so the
/// bytes stay for hyper to read. A client that stops partway through the preface is looked at
/// again every 10 ms, and dropped after [`HANDSHAKE`]: an HTTP/1.1 request differs from the
/// preface by its third byte at the latest.
async fn h2c_preface(tcp: &TcpStream) -> io::Result<bool> {
    let mut buf = [0; PREFACE.len()];
    let mut waited = Duration::ZERO;
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            // HTTP/1.1, or gone: hyper reads it.
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Peeking again at once would spin: the socket stays readable.
        if waited >= HANDSHAKE {
            return Err(io::ErrorKind::TimedOut.into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
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
