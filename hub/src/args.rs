//! The command line, and the broker it asks for.

use std::{error::Error, ffi::OsStr, path::PathBuf};

use clap::{
    Arg, Command, Parser,
    builder::{NonEmptyStringValueParser, RangedU64ValueParser, TypedValueParser},
    error::ErrorKind,
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
    /// A node of a Redis Cluster to spread channels over (needs the `redis` feature), as
    /// `redis://[:password@]host:port` or `rediss://` (TLS); repeatable, a comma-separated list in
    /// the environment. Each channel lives on one shard, with ids of its own; one event goes
    /// to one channel. Run the cluster with `cluster-require-full-coverage no`. Not with
    /// --redis-url nor --flask-sse-redis; $SSE_REDIS_URL and $REDIS_URL are then not read.
    #[arg(
        long,
        env = "SSE_HUB_REDIS_CLUSTER",
        hide_env_values = true,
        value_name = "URL",
        value_delimiter = ',',
        value_parser = ClusterUrl,
        conflicts_with_all = ["redis_url", "flask_sse_redis"]
    )]
    pub redis_cluster: Vec<String>,
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

/// A `--redis-cluster` seed: a `redis://` or `rediss://` URL. A refusal (exit code 2) names the
/// flag, never the value, which may hold a password.
#[derive(Clone, Copy, Debug)]
struct ClusterUrl;

impl TypedValueParser for ClusterUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let flag = arg.map_or_else(|| "--redis-cluster <URL>".to_owned(), ToString::to_string);
        let refuse = || {
            let why = format!(
                "invalid value for '{flag}': not a redis:// or rediss:// URL (value not shown: \
                 it may hold a password)\n"
            );
            clap::Error::raw(ErrorKind::ValueValidation, why).with_cmd(cmd)
        };
        let url = value.to_str().ok_or_else(refuse)?;
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some(scheme)
                if scheme.eq_ignore_ascii_case("redis")
                    || scheme.eq_ignore_ascii_case("rediss") =>
            {
                Ok(url.to_owned())
            }
            _ => Err(refuse()),
        }
    }
}

/// The Redis URL: the first that is set and not empty of the flag, `SSE_REDIS_URL` and
/// `REDIS_URL` (flask-sse's names). [`run`](super::run) passes the two variables as
/// `tower_sse::redis::url_from_env` reads them, already in that order, unless
/// `--flask-sse-redis` or `--redis-cluster` is given: then neither variable is read (a Flask
/// app's environment has `REDIS_URL` for flask-sse, meant for that same backend; a cluster's
/// seeds name the backend), and only `--redis-url` itself (or `SSE_HUB_REDIS_URL`) conflicts
/// with them.
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

/// The broker the flags ask for: in process, on Redis (`--redis-url`), on the Redis a Flask
/// app's flask-sse publishes to (`--flask-sse-redis`, see [`tower_sse::redis::flask_sse`]), or
/// on a Redis Cluster (`--redis-cluster`, see [`tower_sse::redis::cluster`]).
///
/// # Errors
///
/// Redis can't be reached, two backends are given (the command line refuses that already, exit
/// code 2), or a Redis URL is given to a hub built without the `redis` feature (it is refused,
/// never ignored). The errors mask passwords.
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
    // `Args` built by hand, not by the parser, may name several backends: refused.
    let given: Vec<&str> = [
        ("--redis-url", args.redis_url.is_some()),
        ("--flask-sse-redis", args.flask_sse_redis.is_some()),
        ("--redis-cluster", !args.redis_cluster.is_empty()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if given.len() > 1 {
        let flags = given.join(" and ");
        return Err(format!("{flags} name several backends: give one of them").into());
    }
    #[cfg(feature = "redis")]
    {
        if let Some(url) = &args.redis_url {
            return Ok(tower_sse::redis::connect(builder, url).await?);
        }
        if let Some(url) = &args.flask_sse_redis {
            return Ok(tower_sse::redis::flask_sse::connect(builder, url).await?);
        }
        if !args.redis_cluster.is_empty() {
            let seeds: Vec<&str> = args.redis_cluster.iter().map(String::as_str).collect();
            return Ok(tower_sse::redis::cluster::connect(builder, &seeds).await?);
        }
    }
    #[cfg(not(feature = "redis"))]
    if let Some(flag) = given.first() {
        return Err(format!(
            "{flag}: the Redis backends (--redis-url, --flask-sse-redis, --redis-cluster) need \
             the `redis` feature: cargo install --path hub --features redis"
        )
        .into());
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, error::ErrorKind};

    use super::Args;

    #[test]
    fn redis_cluster_seeds_repeat_or_come_as_a_list() {
        let args = Args::try_parse_from(["hub"]).unwrap();
        assert!(args.redis_cluster.is_empty());
        let args = Args::try_parse_from([
            "hub",
            "--redis-cluster",
            "redis://10.0.0.1:7000,rediss://:pw@10.0.0.2:7000",
            "--redis-cluster",
            "redis://10.0.0.3:7000",
        ])
        .unwrap();
        let expected = [
            "redis://10.0.0.1:7000",
            "rediss://:pw@10.0.0.2:7000",
            "redis://10.0.0.3:7000",
        ];
        assert_eq!(args.redis_cluster, expected);
        let arg = Args::command()
            .get_arguments()
            .find(|arg| arg.get_id() == "redis_cluster")
            .cloned()
            .unwrap();
        assert!(arg.is_hide_env_values_set());
        assert_eq!(
            arg.get_env().and_then(|env| env.to_str()),
            Some("SSE_HUB_REDIS_CLUSTER")
        );
    }

    #[test]
    fn a_redis_cluster_seed_must_be_a_redis_url_and_is_never_echoed() {
        for bad in ["http://:hunter2@10.0.0.1:7000", "10.0.0.1:7000", ""] {
            let err = Args::try_parse_from(["hub", "--redis-cluster", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
            assert_eq!(err.exit_code(), 2);
            let message = err.to_string();
            assert!(message.contains("--redis-cluster"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn redis_cluster_is_not_with_another_backend() {
        let seed = "redis://10.0.0.1:7000";
        for other in ["--redis-url", "--flask-sse-redis"] {
            let err =
                Args::try_parse_from(["hub", "--redis-cluster", seed, other, seed]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{other}");
            assert_eq!(err.exit_code(), 2);
            let message = err.to_string();
            assert!(message.contains("--redis-cluster"), "{message}");
            assert!(message.contains(other), "{message}");
        }
    }

    /// `Args` built by hand with two backends: refused by [`broker`](super::broker), named.
    #[tokio::test]
    async fn broker_refuses_two_backends_built_by_hand() {
        let mut args =
            Args::try_parse_from(["hub", "--redis-url", "redis://127.0.0.1:1/"]).unwrap();
        args.redis_cluster = vec!["redis://127.0.0.1:1".to_owned()];
        let err = super::broker(&args).await.unwrap_err().to_string();
        assert!(err.contains("--redis-url and --redis-cluster"), "{err}");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis_cluster_needs_the_redis_feature() {
        let args = Args::try_parse_from(["hub", "--redis-cluster", "redis://127.0.0.1:1"]).unwrap();
        let err = super::broker(&args).await.unwrap_err().to_string();
        assert!(err.contains("--redis-cluster"), "{err}");
        assert!(err.contains("`redis` feature"), "{err}");
    }
}
