//! CORS in a real browser: a page on origin A (`http://127.0.0.1:PORT_A`) subscribes with
//! `new EventSource(hub, {withCredentials: true})` and publishes with `fetch(hub, {method:
//! 'POST', credentials: 'include'})`, `Authorization` set (so the browser sends a preflight),
//! to the hub binary on origin B. With `--cors-origin http://127.0.0.1:PORT_A` the event
//! arrives; without it, or with another origin listed, the browser refuses both.
//!
//! Needs Chromium and chromedriver (see `tests/support/chromium.rs`).
use tower_sse_test_support::chromium;
#[path = "support/hub_process.rs"]
mod hub_process;
use tower_sse_test_support as support;

use std::future::IntoFuture;

use axum::{Router, response::Html, routing::get};
use chromium::{Chromedriver, browser_tools, open_browser};
use fantoccini::Client as Browser;
use hub_process::HubProcess;
use serde_json::{Value, json};
use support::guard;
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret";

/// In the page: subscribe, publish, and report what the browser let through. A refused
/// stream is its first `error` before any `open`; a refused `fetch` rejects.
const SUBSCRIBE_AND_PUBLISH: &str = r#"
    const [hub, token, done] = arguments;
    (async () => {
        const es = new EventSource(hub + "/events?channel=cors", { withCredentials: true });
        const received = new Promise(resolve => { es.onmessage = event => resolve(event.data); });
        const subscribe = await new Promise(resolve => {
            es.onopen = () => resolve("open");
            es.onerror = () => resolve("refused");
        });
        let publish;
        try {
            const res = await fetch(hub + "/publish?channel=cors", {
                method: "POST",
                credentials: "include",
                headers: { "Authorization": "Bearer " + token, "Content-Type": "text/plain" },
                body: "from origin A",
            });
            publish = res.status;
        } catch (err) {
            publish = "rejected: " + err.name;
        }
        const event = subscribe === "open" && publish === 200 ? await received : null;
        es.close();
        done({ subscribe, publish, event });
    })().catch(err => done({ error: String(err) }));
"#;

/// What the page on origin A got from `hub`.
async fn from_the_page(browser: &Browser, hub: &HubProcess) -> Value {
    let args = vec![hub.url("").into(), TOKEN.into()];
    guard(
        "the page's script",
        browser.execute_async(SUBSCRIBE_AND_PUBLISH, args),
    )
    .await
    .expect("the script runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_a_listed_origin_subscribes_and_publishes_others_are_refused() {
    let Some(chromedriver) = browser_tools("tests/cors.rs") else {
        return;
    };
    // Origin A: a page of our own, on a port of its own.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    let page = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>origin A</title>") }),
    );
    tokio::spawn(axum::serve(listener, page).into_future());

    let listed = HubProcess::start(&["--token", TOKEN, "--cors-origin", &origin]).await;
    let not_listed = HubProcess::start(&["--token", TOKEN]).await;
    // Same port, another host name: another origin.
    let other = format!("http://localhost:{port}");
    let other_listed = HubProcess::start(&["--token", TOKEN, "--cors-origin", &other]).await;

    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser(&driver).await;
    guard("page load", browser.goto(&format!("{origin}/")))
        .await
        .unwrap();

    let allowed = json!({ "subscribe": "open", "publish": 200, "event": "from origin A" });
    assert_eq!(from_the_page(&browser, &listed).await, allowed);
    let refused =
        json!({ "subscribe": "refused", "publish": "rejected: TypeError", "event": null });
    for hub in [&not_listed, &other_listed] {
        assert_eq!(
            from_the_page(&browser, hub).await,
            refused,
            "{}",
            hub.url("")
        );
    }
    // Refused by the browser, not by the hub: nothing was published there.
    for hub in [&not_listed, &other_listed] {
        let scrape = hub.client.get(hub.url("/metrics")).bearer_auth(TOKEN);
        let metrics = support::text(support::send(scrape).await).await;
        let published = metrics
            .lines()
            .find_map(|line| line.strip_prefix("sse_events_published_total "));
        assert_eq!(published.unwrap_or("0"), "0", "{metrics}");
    }

    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}
