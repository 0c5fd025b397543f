//! The command line, and the broker it asks for.

use std::{error::Error, path::PathBuf};

use clap::{
    Parser,
    builder::{NonEmptyStringValueParser, RangedU64ValueParser},
};
use http::HeaderValue;

use super::{cors::origin, jwt::algorithm};

use tower_sse::{Broker, ChannelRules, access::jwt::Algorithm};

/// The hub's flags, as `tower-sse-hub --help` lists them. Each can also be set through the
/// environment variable named in its `env` (for containers): `SSE_HUB_` and the flag's name in
/// capitals, `-` as `_`; a flag given on the command line wins. `--cors-origin` takes a
/// comma-separated list there; `--allow-anonymous-publish` takes `true` or `false`.
///
/// ```
/// use clap::Parser;
/// use tower_sse_hub::Args;
///
/// let args = Args::parse_from(["tower-sse-hub", "--token", "s3cret", "--history", "100"]);
/// assert_eq!(args.bind, "127.0.0.1:8080");
/// assert_eq!(args.token.as_deref(), Some("s3cret"));
/// assert_eq!((args.keep_alive, args.history), (15, 100));
/// // The broker's limits, the library's defaults.
/// assert_eq!(args.max_subscribers, 100_000);
/// assert_eq!(args.max_subscribers_per_channel, 20_000);
/// assert_eq!(args.max_channels, 32);
/// ```
#[derive(Debug, Parser)]
#[command(
    name = "tower-sse-hub",
    version,
    about = "Server-sent events hub: POST /publish, GET /events (EventSource), GET /healthz.",
    // Not this doc comment, which is for Rust readers.
    long_about = None
)]
pub struct Args {
    /// Address to listen on. Not a loopback address: needs --token, a publisher JWT key or
    /// --allow-anonymous-publish.
    #[arg(
        long,
        env = "SSE_HUB_BIND",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: String,
    /// Redis URL, so several hubs share channels (needs the `redis` feature); else
    /// $SSE_REDIS_URL, else $REDIS_URL (not with --flask-sse-redis), else the hub keeps
    /// everything in process.
    #[arg(
        long,
        env = "SSE_HUB_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,
    /// The Redis a Flask app's flask-sse publishes to (its REDIS_URL): serve what
    /// `sse.publish()` sends there, and publish in its format (needs the `redis` feature).
    /// redis:// or rediss:// (TLS; #insecure at the end for a self-signed certificate).
    /// Not with --redis-url; $SSE_REDIS_URL and $REDIS_URL are then not read.
    #[arg(
        long,
        env = "SSE_HUB_FLASK_SSE_REDIS",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "redis_url"
    )]
    pub flask_sse_redis: Option<String>,
    /// Bearer token needed to publish and to subscribe to `private.*` channels. Not with a
    /// JWT key (--jwt-key...).
    #[arg(
        long,
        env = "SSE_HUB_TOKEN",
        hide_env_values = true,
        value_name = "SECRET",
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub token: Option<String>,
    // JWT rights (hub/src/jwt.rs).
    /// Key of the JWTs publishers and subscribers present: for HS256, HS384 and HS512 the
    /// secret, for the others the public key's PEM text. Else $MERCURE_PUBLISHER_JWT_KEY and
    /// $MERCURE_SUBSCRIBER_JWT_KEY. Publishing then needs a token whose mercure.publish
    /// selectors match the channel, and private.* channels one whose mercure.subscribe do.
    /// Not with --token.
    #[arg(
        long,
        env = "SSE_HUB_JWT_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = NonEmptyStringValueParser::new(),
        conflicts_with = "token"
    )]
    pub jwt_key: Option<String>,
    /// Key of publishers' JWTs, instead of --jwt-key's.
    #[arg(
        long,
        env = "SSE_HUB_PUBLISHER_JWT_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = NonEmptyStringValueParser::new(),
        conflicts_with = "token"
    )]
    pub publisher_jwt_key: Option<String>,
    /// Key of subscribers' JWTs, instead of --jwt-key's.
    #[arg(
        long,
        env = "SSE_HUB_SUBSCRIBER_JWT_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = NonEmptyStringValueParser::new(),
        conflicts_with = "token"
    )]
    pub subscriber_jwt_key: Option<String>,
    /// Algorithm of the JWTs: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or EdDSA
    /// (`none` never). Else $MERCURE_PUBLISHER_JWT_ALG and $MERCURE_SUBSCRIBER_JWT_ALG, else
    /// HS256.
    #[arg(long, env = "SSE_HUB_JWT_ALG", value_name = "ALG", value_parser = algorithm)]
    pub jwt_alg: Option<Algorithm>,
    /// Algorithm of publishers' JWTs, instead of --jwt-alg's.
    #[arg(
        long,
        env = "SSE_HUB_PUBLISHER_JWT_ALG",
        value_name = "ALG",
        value_parser = algorithm
    )]
    pub publisher_jwt_alg: Option<Algorithm>,
    /// Algorithm of subscribers' JWTs, instead of --jwt-alg's.
    #[arg(
        long,
        env = "SSE_HUB_SUBSCRIBER_JWT_ALG",
        value_name = "ALG",
        value_parser = algorithm
    )]
    pub subscriber_jwt_alg: Option<Algorithm>,
    /// Lets anyone publish when the hub listens on an address other than loopback, without
    /// --token.
    #[arg(
        long,
        env = "SSE_HUB_ALLOW_ANONYMOUS_PUBLISH",
        conflicts_with = "token"
    )]
    pub allow_anonymous_publish: bool,
    /// Seconds without events before a keep-alive comment is sent (0: never).
    #[arg(
        long,
        env = "SSE_HUB_KEEP_ALIVE",
        value_name = "SECS",
        default_value_t = 15
    )]
    pub keep_alive: u64,
    /// Events a client resuming with Last-Event-ID gets at most, per channel (0: none).
    #[arg(
        long,
        env = "SSE_HUB_HISTORY",
        value_name = "N",
        default_value_t = 1000
    )]
    pub history: usize,
    /// The most bytes of events kept in all, history and buffers; the oldest go first.
    #[arg(
        long,
        env = "SSE_HUB_MAX_RETAINED_BYTES",
        value_name = "BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub max_retained_bytes: usize,
    /// Streams open at once, in all (a stream on several channels counts once); past it, a
    /// new stream gets 503 with Retry-After. Each holds a socket and memory: size it, and
    /// `ulimit -n`, for the machine.
    #[arg(
        long,
        env = "SSE_HUB_MAX_SUBSCRIBERS",
        value_name = "N",
        default_value_t = 100_000,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_subscribers: usize,
    /// Streams one channel takes at once, so that one channel can't take them all; past it,
    /// a new stream on it gets 503 with Retry-After.
    #[arg(
        long,
        env = "SSE_HUB_MAX_SUBSCRIBERS_PER_CHANNEL",
        value_name = "N",
        default_value_t = 20_000,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_subscribers_per_channel: usize,
    /// Channels one stream may name (`?channel=a,b`); more is a 400.
    #[arg(
        long,
        env = "SSE_HUB_MAX_CHANNELS",
        value_name = "N",
        default_value_t = 32,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_channels: usize,
    /// An origin whose pages may subscribe and publish, with credentials (`EventSource(url,
    /// {withCredentials: true})`, `fetch(url, {credentials: 'include'})`), as
    /// `scheme://host[:port]`; repeatable. Not `*`: credentials need exact origins.
    #[arg(
        long,
        env = "SSE_HUB_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = origin
    )]
    pub cors_origin: Vec<HeaderValue>,
    /// On Ctrl-C or SIGTERM: seconds over which open streams are ended, each at a random
    /// moment after a `retry:` that spreads the reconnects over the window after it; new
    /// streams get 503 meanwhile (0: end every stream at once).
    #[arg(
        long,
        env = "SSE_HUB_DRAIN_SECS",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub drain_secs: u64,
    /// Serve GET /metrics on this address of its own instead of on --bind.
    #[arg(long, env = "SSE_HUB_METRICS_BIND", value_name = "ADDR")]
    pub metrics_bind: Option<String>,

    // HTTPS and HTTP/2 (hub/src/tls.rs, hub/src/connections.rs).
    /// PEM certificate chain: serve HTTPS, HTTP/2 or HTTP/1.1 as ALPN selects (with
    /// --tls-key). Without it: plain HTTP/1.1, and HTTP/2 by prior knowledge (h2c).
    #[arg(
        long,
        value_name = "PEM",
        env = "SSE_HUB_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS #8, PKCS #1 or SEC1).
    #[arg(
        long,
        value_name = "PEM",
        env = "SSE_HUB_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Streams one HTTP/2 connection may have open at once (a browser tab's EventSources
    /// share one connection); a client wanting more waits or opens another connection.
    #[arg(
        long,
        value_name = "N",
        env = "SSE_HUB_MAX_STREAMS_PER_CONNECTION",
        default_value_t = super::MAX_STREAMS_PER_CONNECTION,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams_per_connection: u32,
}

/// The Redis URL: the first that is set and not empty of the flag, `SSE_REDIS_URL` and
/// `REDIS_URL` (flask-sse's names). [`run`](super::run) passes the two variables as
/// `tower_sse::redis::url_from_env` reads them, already in that order, unless
/// `--flask-sse-redis` is given: then neither variable is read (a Flask app's environment has
/// `REDIS_URL` for flask-sse, meant for that same backend), and only `--redis-url` itself
/// (or `SSE_HUB_REDIS_URL`) conflicts with it.
///
/// ```
/// use tower_sse_hub::redis_url;
///
/// let url = |s: &str| Some(s.to_owned());
/// assert_eq!(redis_url(None, url(""), url("redis://r/")), url("redis://r/"));
/// assert_eq!(redis_url(url("redis://flag/"), url("redis://sse/"), None), url("redis://flag/"));
/// assert_eq!(redis_url(None, None, None), None);
/// ```
pub fn redis_url(
    flag: Option<String>,
    sse_redis_url: Option<String>,
    redis_url: Option<String>,
) -> Option<String> {
    [flag, sse_redis_url, redis_url]
        .into_iter()
        .flatten()
        .find(|url| !url.is_empty())
}

/// The broker the flags ask for: in process, on Redis (`--redis-url`), or on the Redis a
/// Flask app's flask-sse publishes to (`--flask-sse-redis`, see
/// [`tower_sse::redis::flask_sse`]).
///
/// # Errors
///
/// Redis can't be reached, both URLs are given (the command line refuses that already, exit
/// code 2), or a Redis URL is given to a hub built without the `redis` feature (it is refused,
/// never ignored).
///
/// ```
/// use clap::Parser;
/// use tower_sse_hub::{broker, Args};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = broker(&Args::parse_from(["tower-sse-hub", "--history", "10"])).await?;
/// assert!(!broker.is_closed());
/// # Ok(())
/// # }
/// ```
pub async fn broker(args: &Args) -> Result<Broker, Box<dyn Error>> {
    let builder = Broker::builder()
        .history(args.history)
        .max_retained_bytes(args.max_retained_bytes)
        .max_subscribers(args.max_subscribers)
        .max_subscribers_per_channel(args.max_subscribers_per_channel)
        .channel_rules(ChannelRules::default().max_channels(args.max_channels));
    match (&args.redis_url, &args.flask_sse_redis) {
        (None, None) => Ok(builder.build()),
        // `Args` built by hand, not by the parser, which refuses this.
        (Some(_), Some(_)) => Err("--flask-sse-redis and --redis-url name two backends: \
                                   give one of them"
            .into()),
        #[cfg(feature = "redis")]
        (Some(url), None) => Ok(tower_sse::redis::connect(builder, url).await?),
        #[cfg(feature = "redis")]
        (None, Some(url)) => Ok(tower_sse::redis::flask_sse::connect(builder, url).await?),
        #[cfg(not(feature = "redis"))]
        (Some(_), None) | (None, Some(_)) => Err("the Redis backends (--redis-url, \
                                                  --flask-sse-redis) need the `redis` feature: \
                                                  cargo install --path hub --features redis"
            .into()),
    }
}
