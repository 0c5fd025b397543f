//! Issue 20: `--flask-sse-redis` reads the URL as flask-sse does, `rediss://` (TLS) included.
//! The hub as shipped (the binary) on a private `redis-server` that speaks TLS only
//! (`--port 0 --tls-port`), with a self-signed certificate the test makes with rcgen: so the
//! hub's URL ends in `#insecure`, the redis crate's syntax for not checking the certificate.
//!
//! Needs `redis-server` built with TLS (Debian's is); without it, a test says so on stderr and
//! passes, unless `TOWER_SSE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

#[path = "support/h2.rs"]
mod h2;
#[path = "support/hub_process.rs"]
mod hub_process;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
};

use h2::Cert;
use hub_process::{HubProcess, pause};
use redis::{RedisResult, aio::MultiplexedConnection};
use reqwest::StatusCode;
use tower_sse_test_support::{
    events::Events, guard, on_path, redis_server::REQUIRE, send, skip_or_fail,
};

/// A private `redis-server` child process that listens with TLS only, on a free loopback
/// port, without persistence; killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    // Its certificate's files, removed on drop.
    _cert: Cert,
}

impl TlsRedis {
    /// `None` (after a loud message) when `redis-server` is not installed.
    async fn start(test: &str) -> Option<TlsRedis> {
        if on_path("redis-server").is_none() {
            skip_or_fail(
                test,
                "redis-server",
                "apt-get install redis-server",
                REQUIRE,
            );
            return None;
        }
        // The rustls of this process (the redis crate's client): the hub's own provider.
        #[allow(deprecated)] // src/tls.rs says why
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let cert = Cert::new();
        let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
        // The port is free when picked, but something else may take it before the server
        // binds: then try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--tls-cert-file", cert_file, "--tls-key-file", key_file])
                // Redis wants a CA even when it asks clients for no certificate.
                .args(["--tls-ca-cert-file", cert_file, "--tls-auth-clients", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            if up(&mut child, port).await {
                return Some(TlsRedis {
                    port,
                    child,
                    _cert: cert,
                });
            }
        }
        panic!("redis-server with TLS did not start on any of 5 free ports (built without TLS?)");
    }

    /// `scheme://127.0.0.1:port/`.
    fn url(&self, scheme: &str) -> String {
        url(scheme, self.port)
    }

    /// A connection over TLS, the certificate unchecked.
    async fn connect(&self) -> MultiplexedConnection {
        connect(self.port).await.expect("a connection over TLS")
    }
}

fn url(scheme: &str, port: u16) -> String {
    format!("{scheme}://127.0.0.1:{port}/")
}

/// A connection to `port` over TLS, the certificate unchecked.
async fn connect(port: u16) -> RedisResult<MultiplexedConnection> {
    let url = format!("{}#insecure", url("rediss", port));
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Waits until the server answers PING over TLS: `false` if it exited (port taken).
async fn up(child: &mut Child, port: u16) -> bool {
    guard("redis-server answers PING over TLS", async {
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(mut conn) = connect(port).await {
                let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return true;
                }
            }
            pause().await;
        }
    })
    .await
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PUBLISH channel message`, as flask-sse's `sse.publish()` does; returns the subscriptions
/// that got it.
async fn publish_raw(conn: &mut MultiplexedConnection, channel: &str, message: &[u8]) -> u64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async(conn)
        .await
        .expect("PUBLISH")
}

/// `rediss://...#insecure`: the hub subscribes over TLS, so a flask-sse message published
/// there reaches its stream; and the hub's own publish goes through that Redis to it too.
#[tokio::test]
async fn a_rediss_url_serves_flask_sse_over_tls() {
    let test = "hub/tests/flask_sse_tls.rs: rediss://";
    let Some(redis) = TlsRedis::start(test).await else {
        return;
    };
    let url = format!("{}#insecure", redis.url("rediss"));
    let hub = HubProcess::start(&["--flask-sse-redis", &url]).await;
    let mut stream = Events::open(hub.events("channel=news", None)).await;
    let ready = send(hub.client.get(hub.url("/readyz"))).await;
    assert_eq!(ready.status(), StatusCode::OK);

    let mut conn = redis.connect().await;
    let message = br#"{"data": "over TLS", "type": "greeting", "id": "t-1"}"#;
    assert_eq!(publish_raw(&mut conn, "news", message).await, 1);
    let got = stream.expect().await;
    assert_eq!(
        (got.event.as_str(), got.data.as_str(), got.id.as_str()),
        ("greeting", "over TLS", "t-1")
    );

    hub.publish("channel=news", "from the hub").await;
    assert_eq!(stream.expect().await.data, "from the hub");
}

/// The certificate is checked unless the URL says `#insecure`, and a plain `redis://` URL does
/// not speak TLS: either way the hub does not start, and says which URL failed.
#[tokio::test]
async fn a_tls_redis_without_insecure_or_over_redis_is_refused_at_start() {
    let test = "hub/tests/flask_sse_tls.rs: refused";
    let Some(redis) = TlsRedis::start(test).await else {
        return;
    };
    let cases = [
        // rustls: "invalid peer certificate: UnknownIssuer".
        (redis.url("rediss"), "certificate"),
        // The server drops a connection that does not start with a TLS handshake.
        (redis.url("redis"), ""),
    ];
    for (url, why) in cases {
        let exited = match HubProcess::try_start(&["--flask-sse-redis", &url]).await {
            Ok(_) => panic!("{url}: the hub started"),
            Err(exited) => exited,
        };
        assert_ne!(exited.status.code(), Some(0), "{url}: {exited:?}");
        let said = format!("tower-sse-hub: can't connect to Redis at {url}: ");
        assert!(exited.stderr.contains(&said), "{url}: {exited:?}");
        assert!(exited.stderr.contains(why), "{url}: {exited:?}");
    }
}
