//! The hub binary as shipped (`tower-sse-hub`, in a child process) and the flags of issue 15:
//! protected by default, every flag from the environment, `/metrics` on a listener of its
//! own, CORS origins that must be exact. Over 127.0.0.1 only, also when it listens on
//! `0.0.0.0`.
use tower_sse_test_support as support;

#[path = "support/hub_process.rs"]
mod hub_process;

use hub_process::{Exited, HubProcess};
use reqwest::StatusCode;
use support::{send, text};

/// The hub's exit, which must be a refusal to start, not listening.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> Exited {
    match HubProcess::try_start_with(args, env).await {
        Ok(hub) => panic!("{args:?} {env:?}: the hub listens on {}", hub.addr()),
        Err(exited) => exited,
    }
}

/// `GET {path}`: its status and body.
async fn get(hub: &HubProcess, path: &str) -> (StatusCode, String) {
    let res = send(hub.client.get(hub.url(path))).await;
    (res.status(), text(res).await)
}

/// Beyond loopback with no publish authentication, the hub refuses to start and names both
/// ways out; with either, it starts.
#[tokio::test]
async fn beyond_loopback_without_a_token_refuses_to_start() {
    let exited = refused(&["--bind", "0.0.0.0:0"], &[]).await;
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    let stderr = &exited.stderr;
    assert!(
        stderr.contains("--token") && stderr.contains("--allow-anonymous-publish"),
        "the refusal names both flags: {stderr:?}"
    );
    for flags in [
        &["--bind", "0.0.0.0:0", "--token", "s3cret"][..],
        &["--bind", "0.0.0.0:0", "--allow-anonymous-publish"],
    ] {
        let hub = HubProcess::start(flags).await;
        assert_eq!(get(&hub, "/healthz").await, (StatusCode::OK, "ok".into()));
    }
    // On loopback, as by default, no flag is needed.
    let hub = HubProcess::start(&[]).await;
    assert_eq!(get(&hub, "/healthz").await, (StatusCode::OK, "ok".into()));
}

/// A flag from the environment takes effect: `SSE_HUB_TOKEN` guards publishing as `--token`
/// does, and then also lets the hub listen beyond loopback.
#[tokio::test]
async fn flags_from_the_environment() {
    let env = [("SSE_HUB_TOKEN", "s3cret"), ("SSE_HUB_BIND", "0.0.0.0:0")];
    let hub = match HubProcess::try_start_with(&[], &env).await {
        Ok(hub) => hub,
        Err(exited) => panic!("with {env:?}: {exited:?}"),
    };
    let log = hub.stdout();
    assert!(
        log.contains("address=0.0.0.0:"),
        "SSE_HUB_BIND taken: {log}"
    );
    let anonymous = send(hub.post("channel=news", "x")).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let signed = hub.post("channel=news", "x").bearer_auth("s3cret");
    assert_eq!(send(signed).await.status(), StatusCode::OK);
    // The flag wins over the variable.
    let hub = HubProcess::try_start_with(&["--token", "flag"], &[("SSE_HUB_TOKEN", "env")])
        .await
        .unwrap();
    let signed = hub.post("channel=news", "x").bearer_auth("flag");
    assert_eq!(send(signed).await.status(), StatusCode::OK);
}

/// `--metrics-bind`: `/metrics` answers there, and no longer on the main listener.
#[tokio::test]
async fn metrics_on_a_listener_of_their_own() {
    let hub = HubProcess::start(&["--metrics-bind", "127.0.0.1:0"]).await;
    let log = hub.stdout();
    let metrics = log
        .lines()
        .find(|line| line.contains("hub listening"))
        .and_then(|line| line.split_once("metrics=Some(")?.1.split_once(')'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("the metrics address in the log: {log}"));
    let res = send(hub.client.get(format!("http://{metrics}/metrics"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(text(res).await.contains("sse_subscribers"));
    assert_eq!(get(&hub, "/metrics").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&hub, "/healthz").await.0, StatusCode::OK);
}

/// Credentials are allowed, so `*` is no origin: the hub says so and does not start, from
/// the flag or from the environment.
#[tokio::test]
async fn a_wildcard_origin_is_refused_at_start() {
    for exited in [
        refused(&["--cors-origin", "*"], &[]).await,
        refused(&[], &[("SSE_HUB_CORS_ORIGIN", "http://127.0.0.1:1,*")]).await,
    ] {
        assert!(!exited.status.success());
        assert!(
            exited.stderr.contains("wildcard") && exited.stderr.contains("credentials"),
            "{exited:?}"
        );
    }
}

/// A bad start ends with a reason on stderr and exit code 1.
#[tokio::test]
async fn a_bad_address_is_an_error_on_stderr() {
    let exited = refused(&["--bind", "not an address"], &[]).await;
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(exited.stderr.starts_with("tower-sse-hub: "), "{exited:?}");
}
