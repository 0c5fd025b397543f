//! How both Redis backends (tower-sse's own format, and [`flask_sse`](super::flask_sse)) talk
//! to Redis outside their pub/sub connection: one [`ConnectionManager`], and the time bounds of
//! every step, so that nothing on a request's path waits on Redis for ever.

use std::{future::Future, time::Duration};

use redis::{Client, RedisError, RedisResult, aio::ConnectionManager};
use tokio::time::timeout;

use crate::error::{BoxError, ConnectError, OutcomeUnknown};

/// How long one Redis command may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish, an ensure or a replay may take in all, reconnecting included.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `url` (`redis://[:password@]host[:port][/db]`, `rediss://` with the `redis-tls`
/// feature): the client, for the pub/sub connection, and a connection manager for the
/// commands, connected now.
///
/// # Errors
///
/// The URL is invalid or Redis can't be reached; the error names the URL, with its password
/// masked.
pub(super) async fn open(url: &str) -> Result<(Client, ConnectionManager), ConnectError> {
    let failed = |err: RedisError| ConnectError::new("Redis", url, err.into());
    #[cfg(feature = "redis-tls")]
    install_crypto_provider();
    let client = Client::open(url).map_err(failed)?;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(TIMEOUT)
        .set_response_timeout(TIMEOUT)
        .set_number_of_retries(1);
    let conn = client
        .get_connection_manager_with_config(manager)
        .await
        .map_err(failed)?;
    Ok((client, conn))
}

/// Installs rustls's `ring` provider as the process's default, unless one is installed: the
/// redis crate builds its TLS config from the default (`ClientConfig::builder`,
/// `CryptoProvider::get_default` for `#insecure`), which rustls picks from its crate features
/// only when exactly one provider is enabled in the whole build.
#[cfg(feature = "redis-tls")]
pub(super) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // rustls 0.23.48 deprecates `ring` (no post-quantum key exchange); aws-lc-rs, which
        // has it, needs cmake and nasm to build. Classic ECDHE is what Redis offers today.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        // Err: another thread installed one meanwhile, which serves as well.
        let _ = provider.install_default();
    }
}

/// Awaits a publish's command for at most [`REQUEST_TIMEOUT`]. An error is an
/// [`OutcomeUnknown`] when the command may have run (see [`publish_error`]).
pub(super) async fn publish<T>(step: impl Future<Output = RedisResult<T>>) -> Result<T, BoxError> {
    match timeout(REQUEST_TIMEOUT, step).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(err)) => Err(publish_error(err)),
        Err(_) => Err(Box::new(OutcomeUnknown(
            format!("no answer from Redis within {REQUEST_TIMEOUT:?}").into(),
        ))),
    }
}

/// A failed publish: [`OutcomeUnknown`] when the command may have reached Redis (no answer
/// in time, or the connection lost on the way), the plain error when Redis surely did not
/// run it (connection refused, an error reply).
fn publish_error(err: RedisError) -> BoxError {
    if err.is_timeout() || err.is_connection_dropped() {
        Box::new(OutcomeUnknown(err.into()))
    } else {
        err.into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_publish_sent_without_an_answer_has_an_unknown_outcome() {
        let io = |kind: ErrorKind| RedisError::from(Error::from(kind));
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
        ] {
            assert!(publish_error(io(kind)).is::<OutcomeUnknown>(), "{kind:?}");
        }
        let refused = publish_error(io(ErrorKind::ConnectionRefused));
        assert!(!refused.is::<OutcomeUnknown>());
        let reply = RedisError::from((redis::ErrorKind::ResponseError, "ERR", "bad".to_owned()));
        assert!(!publish_error(reply).is::<OutcomeUnknown>());
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn rediss_urls_are_tls_connections() {
        use redis::{ConnectionAddr, IntoConnectionInfo};

        let info = "rediss://:secret@example.com:6380/2"
            .into_connection_info()
            .unwrap();
        assert_eq!(
            info.addr,
            ConnectionAddr::TcpTls {
                host: "example.com".to_owned(),
                port: 6380,
                insecure: false,
                tls_params: None,
            }
        );
        assert_eq!(info.redis.db, 2);
        assert_eq!(info.redis.password.as_deref(), Some("secret"));
        let info = "rediss://127.0.0.1/#insecure"
            .into_connection_info()
            .unwrap();
        assert!(matches!(
            info.addr,
            ConnectionAddr::TcpTls {
                port: 6379,
                insecure: true,
                ..
            }
        ));
    }
}
