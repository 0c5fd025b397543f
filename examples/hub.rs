//! A standalone server-sent events hub: publish over HTTP, subscribe with `EventSource`.
//!
//! Run with: cargo run --release --example hub -- --help
//!
//! - `GET /events?channel=A&channel=B`: the event stream (default channel `sse`); resumes from
//!   the `Last-Event-ID` header or the `lastEventId` query parameter. With `--token`, channels
//!   named `private.*` need the token: `401` without one, `403` with a wrong one, and then no
//!   stream at all, whatever other channels the request names.
//! - `POST /publish?channel=A&event=TYPE&id=ID&retry=MS`, body = the event's data (UTF-8, at
//!   most 1 MiB): answers `{"id": "..."}`. With `--token`, publishing always needs the token.
//!   Bad input is a `4xx` with a `text/plain` reason and publishes nothing.
//! - `GET /healthz`: `ok`.
//! - `GET /metrics`: Prometheus text format (see `tower_sse::metrics`); with `--token`, it needs
//!   the token too, as metrics name channels.
//!
//! The token goes in `Authorization: Bearer SECRET`, or in the `access_token` query parameter
//! for `EventSource`, which can't set headers (RFC 6750 §2.3).
//!
//! ```text
//! cargo run --release --example hub -- --token s3cret
//! curl -N 'http://127.0.0.1:8080/events?channel=news&channel=private.ops&access_token=s3cret'
//! curl -X POST -H 'Authorization: Bearer s3cret' --data-binary 'Hello!' \
//!      'http://127.0.0.1:8080/publish?channel=news&event=greeting'
//! ```
//!
//! Logs: `RUST_LOG` (default `info`; `debug` shows subscribe and unsubscribe).

#[path = "support/net.rs"]
mod net;
#[path = "support/signal.rs"]
mod signal;

use std::{
    error::Error,
    future::Future,
    process::ExitCode,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Request, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, get_service, post},
    Json, Router,
};
use clap::{builder::NonEmptyStringValueParser, Parser};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::{
    limit::RequestBodyLimitLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tower_sse::{
    access::Denied,
    channel::{form_decode, query_pairs},
    AccessLayer, Broker, Event, SseService,
};

/// The largest event data `POST /publish` takes.
pub const MAX_BODY: usize = 1024 * 1024;

/// Server-sent events hub: POST /publish, GET /events (EventSource), GET /healthz.
#[derive(Debug, Parser)]
#[command(name = "hub")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Redis URL, so several hubs share channels (needs the `redis` feature); else
    /// $SSE_REDIS_URL, else $REDIS_URL, else the hub keeps everything in process.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Bearer token needed to publish and to subscribe to `private.*` channels.
    #[arg(long, value_name = "SECRET", value_parser = NonEmptyStringValueParser::new())]
    pub token: Option<String>,
    /// Seconds without events before a keep-alive comment is sent (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub keep_alive: u64,
    /// Events a client resuming with Last-Event-ID gets at most, per channel (0: none).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub history: usize,
    /// The most bytes of events kept in all, history and buffers; the oldest go first.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_retained_bytes: usize,
}

/// The Redis URL: the first that is set and not empty of the flag, `SSE_REDIS_URL` and
/// `REDIS_URL` (flask-sse's names). With the `redis` feature, `run` passes the two variables
/// as `tower_sse::redis::url_from_env` reads them, already in that order.
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

/// The broker the flags ask for: in process, or on Redis.
pub async fn broker(args: &Args) -> Result<Broker, Box<dyn Error>> {
    let builder = Broker::builder()
        .history(args.history)
        .max_retained_bytes(args.max_retained_bytes);
    match &args.redis_url {
        None => Ok(builder.build()),
        #[cfg(feature = "redis")]
        Some(url) => Ok(builder.connect_redis(url).await?),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err("the Redis backend needs the `redis` feature: \
                        cargo run --release --features redis --example hub"
            .into()),
    }
}

#[derive(Clone)]
struct Hub {
    broker: Broker,
    token: Option<Arc<str>>,
}

/// The hub's routes; `token` guards publishing and the `private.*` channels.
pub fn app(broker: Broker, token: Option<String>, keep_alive: Option<Duration>) -> Router {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let guard = token.clone();
    let access = AccessLayer::new(move |parts: &Parts, channel: &str| {
        let verdict = match &guard {
            Some(token) if channel.starts_with("private.") => {
                authorize(token, &parts.headers, parts.uri.query())
            }
            _ => Ok(()),
        };
        std::future::ready(verdict)
    })
    .channel_rules(broker.channel_rules().clone());
    // The stream is the service itself: no handler or body wrapper around it, as each would
    // cost every open stream memory (the broker logs subscribe and unsubscribe).
    let sse = SseService::new(broker.clone()).keep_alive(keep_alive);
    let hub = Hub { broker, token };
    Router::new()
        .route("/events", get_service(sse).route_layer(access))
        .route(
            "/publish",
            post(publish).layer((
                DefaultBodyLimit::disable(),
                RequestBodyLimitLayer::new(MAX_BODY),
            )),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(scrape))
        .with_state(hub)
        .layer(
            TraceLayer::new_for_http()
                // The path only: the query may hold an access token.
                .make_span_with(|req: &Request| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
}

/// The process's Prometheus recorder, installed on the first call. Call it before building
/// the broker: the broker takes its metric handles when it is built.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // No series per channel (the broker's default): the label values are bounded.
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if let Err(err) = metrics::set_global_recorder(recorder) {
                tracing::warn!(%err, "another metrics recorder is installed");
            }
            handle
        })
        .clone()
}

async fn scrape(State(hub): State<Hub>, req: Request) -> Response {
    if let Some(token) = &hub.token {
        if let Err(denied) = authorize(token, req.headers(), req.uri().query()) {
            return denied.into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

async fn publish(State(hub): State<Hub>, req: Request) -> Response {
    match try_publish(&hub, req).await {
        Ok(id) => Json(serde_json::json!({ "id": id })).into_response(),
        Err(res) if res.status().is_server_error() => {
            tracing::warn!(status = %res.status(), "publish failed");
            res
        }
        Err(res) => {
            tracing::debug!(status = %res.status(), "publish refused");
            res
        }
    }
}

async fn try_publish(hub: &Hub, req: Request) -> Result<String, Response> {
    if let Some(token) = &hub.token {
        authorize(token, req.headers(), req.uri().query()).map_err(Denied::into_response)?;
    }
    let params = PublishParams::parse(req.uri().query().unwrap_or("")).map_err(bad_request)?;
    // Reading the body after the checks: a refused request costs no buffering.
    let body = Bytes::from_request(req, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let data = String::from_utf8(body.into()).map_err(|_| bad_request("body is not UTF-8"))?;
    let mut event = Event::default().data(data);
    if let Some(kind) = params.event {
        event = event.event(kind);
    }
    if let Some(id) = params.id {
        event = event.id(id);
    }
    if let Some(retry) = params.retry {
        event = event.retry(retry);
    }
    let channel = params.channel.as_deref().unwrap_or("sse");
    hub.broker
        .publish(channel, event)
        .await
        .map_err(|err| (err.status(), err.to_string()).into_response())
}

/// The query of `POST /publish`. Unknown or repeated parameters are errors, so a typo
/// (`chanel=`) can't publish to the default channel.
#[derive(Default)]
struct PublishParams {
    channel: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
}

impl PublishParams {
    fn parse(query: &str) -> Result<PublishParams, String> {
        let (mut params, mut retry) = (PublishParams::default(), None);
        for (key, value) in query_pairs(query) {
            let slot = match &*form_decode(key).map_err(|err| err.to_string())? {
                "channel" => &mut params.channel,
                "event" => &mut params.event,
                "id" => &mut params.id,
                "retry" => &mut retry,
                "access_token" => continue,
                _ => return Err("unknown parameter (expected channel, event, id, retry)".into()),
            };
            if slot
                .replace(form_decode(value).map_err(|err| err.to_string())?)
                .is_some()
            {
                return Err("parameter given twice".into());
            }
        }
        if let Some(ms) = retry {
            if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                return Err("retry is not a number of milliseconds".into());
            }
            let ms = ms.parse().map_err(|_| "retry is too large".to_owned())?;
            params.retry = Some(Duration::from_millis(ms));
        }
        Ok(params)
    }
}

/// Checks the bearer token: `Authorization: Bearer ...`, else the `access_token` parameter.
fn authorize(expected: &str, headers: &HeaderMap, query: Option<&str>) -> Result<(), Denied> {
    let token = match bearer(headers) {
        Some(token) => Some(token.to_owned()),
        None => access_token(query.unwrap_or(""))?,
    };
    match token {
        None => Err(Denied::unauthorized("bearer token required")),
        Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Denied::forbidden("wrong token")),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn access_token(query: &str) -> Result<Option<String>, Denied> {
    let mut token = None;
    for (key, value) in query_pairs(query) {
        if form_decode(key).as_deref() != Ok("access_token") {
            continue;
        }
        let value = form_decode(value)
            .map_err(|err| Denied::new(StatusCode::BAD_REQUEST, err.to_string()))?;
        if token.replace(value).is_some() {
            return Err(Denied::new(
                StatusCode::BAD_REQUEST,
                "access_token given twice",
            ));
        }
    }
    Ok(token)
}

/// Compares in time that depends on the expected token's length only, not on where the
/// first difference is.
fn same(given: &[u8], expected: &[u8]) -> bool {
    let diff = expected.iter().enumerate().fold(0, |diff, (i, b)| {
        diff | (given.get(i).copied().unwrap_or(!b) ^ b)
    });
    diff == 0 && given.len() == expected.len()
}

fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, reason.into()).into_response()
}

/// Waits for `signal`, then closes the broker so that every stream ends and the server's
/// graceful shutdown can finish.
pub async fn shutdown(broker: Broker, signal: impl Future<Output = ()>) {
    signal.await;
    tracing::info!("shutting down");
    broker.close();
}

async fn run(mut args: Args) -> Result<(), Box<dyn Error>> {
    // The environment as the crate reads it. Without the `redis` feature the crate has no
    // `redis` module: the hub reads the same variables, so that a URL there is refused, not
    // ignored.
    #[cfg(feature = "redis")]
    let env = (tower_sse::redis::url_from_env(), None);
    #[cfg(not(feature = "redis"))]
    let env = (
        std::env::var("SSE_REDIS_URL").ok(),
        std::env::var("REDIS_URL").ok(),
    );
    args.redis_url = redis_url(args.redis_url, env.0, env.1);
    metrics();
    let broker = broker(&args).await?;
    let listener = net::listen(&args.bind).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        redis = args.redis_url.is_some(),
        token = args.token.is_some(),
        "hub listening"
    );
    let keep_alive = (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive));
    let app = app(broker.clone(), args.token, keep_alive);
    // `into_make_service` once, rather than `axum::serve(listener, app)`, which rebuilds the
    // router for every connection: about 500 bytes per route held by each open stream.
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown(broker, signal::shutdown()))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hub: {err}");
            ExitCode::FAILURE
        }
    }
}
