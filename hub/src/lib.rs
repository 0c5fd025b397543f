//! The standalone hub: publish over HTTP, subscribe with `EventSource`, without writing Rust.
//! The `tower-sse-hub` binary (`cargo install --path hub`) is [`main`].
//!
//! - `GET /events?channel=A&channel=B`: the event stream (default channel `sse`); resumes from
//!   the `Last-Event-ID` header or the `lastEventId` query parameter. With `--token`, channels
//!   named `private.*` need the token: `401` without one, `403` with a wrong one, and then no
//!   stream at all, whatever other channels the request names.
//! - `POST /publish?channel=A&event=TYPE&id=ID&retry=MS`, body = the event's data (UTF-8, at
//!   most [`MAX_BODY`], else `413`): answers `{"id": "..."}`. With `--token`, publishing
//!   always needs the token. Bad input is a `4xx` with a `text/plain` reason and publishes
//!   nothing.
//! - `GET` and `POST /.well-known/mercure`: the [Mercure] protocol (draft-07): streams by topic
//!   selector, updates as forms, private updates by the subscriber's JWT claims, resume with
//!   `Last-Event-ID` (see the README's "Use it as a Mercure hub").
//! - `GET /healthz`: `ok` (liveness). `GET /readyz`: `ready`, or `503` while the hub drains or
//!   its backend (or a shard of a Redis Cluster) is unreachable, saying which (see [`ready`]).
//! - `GET /metrics`: Prometheus text format (see [`tower_sse::metrics`]); with `--token`, it needs
//!   the token too, as metrics name channels. With `--metrics-bind ADDR`, on that address
//!   only.
//!
//! Protected by default, like Redis's protected mode: bound beyond loopback (`--bind
//! 0.0.0.0:8080`) with no `--token`, the hub refuses to start unless `--allow-anonymous-publish`
//! says that anyone may publish (a publisher JWT key counts as a token). `--cors-origin ORIGIN` (repeatable) lets pages on that
//! origin subscribe and publish with credentials (see [`cors`]). Every flag can also be set
//! from the environment, as `SSE_HUB_` and its name (see [`Args`]).
//!
//! Backends: in process by default; `--redis-url URL` shares channels, ids and history with
//! other hubs on that Redis; `--flask-sse-redis URL` serves what a Flask app's flask-sse
//! `sse.publish()` sends to that Redis, and publishes in its format; `--redis-cluster URL`
//! (repeatable) spreads channels over a Redis Cluster's shards, ids per channel (see
//! [`broker`]).
//!
//! The token goes in `Authorization: Bearer SECRET`, or in the `access_token` query parameter
//! for `EventSource`, which can't set headers ([RFC 6750 §2.3]).
//!
//! JWT rights instead of `--token` (see [`rights`] and [`Rights`]): with `--jwt-key KEY` (or a
//! key per role, `--publisher-jwt-key`, `--subscriber-jwt-key`, or Mercure's
//! `MERCURE_PUBLISHER_JWT_KEY` and `MERCURE_SUBSCRIBER_JWT_KEY`), a publish needs a token whose
//! `mercure.publish` selectors match its channel, and a `private.*` channel one whose
//! `mercure.subscribe` selectors match it ([`tower_sse::access::jwt`]): `401` without a valid
//! token, `403` when no selector matches. A publish authorized by the `mercureAuthorization`
//! cookie must come from an origin of `--cors-origin`. Never with `--token` (exit code 2).
//!
//! ```text
//! tower-sse-hub --token s3cret
//! curl -N 'http://127.0.0.1:8080/events?channel=news&channel=private.ops&access_token=s3cret'
//! curl -X POST -H 'Authorization: Bearer s3cret' --data-binary 'Hello!' \
//!      'http://127.0.0.1:8080/publish?channel=news&event=greeting'
//! ```
//!
//! Logs: `RUST_LOG` (default `info`, with the redis crate's per-reconnect cluster warnings
//! quieted; `debug` shows subscribe and unsubscribe).
//!
//! With `--tls-cert` and `--tls-key`, HTTPS, and HTTP/2 when ALPN selects it, so that a page's
//! `EventSource`s share one connection instead of 6 per origin; without, HTTP/1.1 and h2c. See
//! [`Server`].
//!
//! The parts are public, to build a hub of your own: [`app`] is the router (add routes or
//! layers to it), [`listen`] the listener, [`Server`] and [`tls_config`] the serving,
//! [`shutdown`] and [`shutdown_signal`] the stop.
//!
//! [RFC 6750 §2.3]: https://www.rfc-editor.org/rfc/rfc6750#section-2.3
//! [Mercure]: https://mercure.rocks/spec

mod app;
mod args;
mod auth;
mod connections;
mod cors;
mod health;
mod jwt;
mod linger;
mod mercure;
mod prometheus;
mod protect;
mod publish;
mod serve;
mod state;
mod tls;

use std::process::ExitCode;

use clap::Parser;

pub use self::{
    app::{app, app_with_rights},
    args::{Args, broker, redis_url},
    cors::cors,
    health::ready,
    jwt::{MercureEnv, Rights, RightsError, rights},
    prometheus::metrics,
    publish::MAX_BODY,
    serve::{BACKLOG, EXIT_GRACE, listen, run, shutdown, shutdown_signal},
};
pub use self::{
    connections::{MAX_STREAMS_PER_CONNECTION, Server},
    tls::{ALPN, TlsError, tls_config},
};

/// The `tower-sse-hub` binary: parses the flags (see [`Args`]), logs to stdout through
/// `tracing` (`RUST_LOG`, default `info`), and [`run`]s the hub on a multi-threaded runtime.
/// An error that stops it goes to stderr, and the exit code is 1 (2 for JWT flags that can't
/// be used, [`RightsError`], as for the command line's own errors).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     tower_sse_hub::main()
/// }
/// ```
pub fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The redis crate warns on each of its reconnect attempts to a cluster node that is
        // down, hundreds a second; the hub says what is down itself (`/readyz`, its warnings).
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,redis::cluster_handling=error")
        });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(run(args)));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tower-sse-hub: {err}");
            // Flags that can't go together or can't be read: a usage error, as the command
            // line's own.
            if err.downcast_ref::<RightsError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
