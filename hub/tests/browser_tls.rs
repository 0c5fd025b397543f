//! Why the hub serves HTTPS with HTTP/2, in a real browser: a page that opens 12 `EventSource`s
//! to the hub (the binary as shipped, in a child process). Over HTTPS (a self-signed
//! certificate the test makes with rcgen) Chromium speaks HTTP/2, where streams share a
//! connection, and all 12 get the next event. Over plain HTTP/1.1 Chromium opens at most 6
//! connections per origin: 6 streams open and get the event, the 7th to 12th wait for a
//! connection and never get it.
//!
//! The page is the hub's own origin (`/healthz`, then a script), so no CORS is involved. Needs
//! `/usr/bin/chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`);
//! without them the tests say so on stderr and pass, unless `TOWER_SSE_REQUIRE_BROWSER=1` (set
//! by `.ci/run`), which makes them fail.

use tower_sse_test_support::chromium;
#[path = "support/h2.rs"]
mod h2;
#[path = "support/hub_process.rs"]
mod hub_process;
use tower_sse_test_support as support;

use std::time::Duration;

use chromium::{Chromedriver, browser_tools, open_browser_trusting_any_certificate};
use fantoccini::Client as Browser;
use h2::{Cert, H2, Stream, Transport};
use hub_process::HubProcess;
use serde_json::{Value, json};
use support::guard;

/// More than the 6 connections per origin Chromium allows over HTTP/1.1.
const SOURCES: u64 = 12;
/// Chromium's limit of HTTP/1.1 connections per origin (`kMaxSocketsPerGroup`).
const PER_ORIGIN: u64 = 6;

/// Opens `n` `EventSource`s to `/events?channel=tabs`, counting in `window.state` those open
/// and the events received; answers the protocol the page itself came over.
const OPEN: &str = r#"
    const [n, done] = arguments;
    window.state = { opened: 0, got: 0, data: [] };
    window.waiters = [];
    const changed = () => { window.waiters = window.waiters.filter((check) => !check()); };
    for (let i = 0; i < n; i++) {
        const source = new EventSource("/events?channel=tabs");
        source.onopen = () => { window.state.opened++; changed(); };
        source.onmessage = (event) => {
            window.state.data.push(event.data);
            window.state.got++;
            changed();
        };
    }
    done(performance.getEntriesByType("navigation")[0].nextHopProtocol);
"#;

/// Waits, in the page, until `window.state[key]` reaches `target`; answers the state. The
/// script timeout (30 s) is the hang guard.
const UNTIL: &str = r#"
    const [key, target, done] = arguments;
    const check = () => {
        if (window.state[key] < target) return false;
        done(window.state);
        return true;
    };
    if (!check()) window.waiters.push(check);
"#;

async fn open_sources(browser: &Browser, url: &str) -> String {
    guard("page load", browser.goto(url)).await.unwrap();
    let protocol = browser.execute_async(OPEN, vec![json!(SOURCES)]);
    let protocol = guard("open the EventSources", protocol).await.unwrap();
    protocol.as_str().unwrap().to_owned()
}

async fn until(browser: &Browser, key: &str, target: u64) -> Value {
    let state = browser.execute_async(UNTIL, vec![json!(key), json!(target)]);
    guard(key, state)
        .await
        .unwrap_or_else(|err| panic!("waiting for {key} = {target}: {err}"))
}

async fn state(browser: &Browser) -> Value {
    let state = browser.execute("return window.state;", vec![]);
    guard("state", state).await.unwrap()
}

/// `sse_subscribers` in a `/metrics` text.
fn subscribers(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("sse_subscribers "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_event_sources_over_https_speak_http2_and_all_get_the_event() {
    let Some(chromedriver) = browser_tools("tests/browser_tls.rs") else {
        return;
    };
    let cert = Cert::new();
    let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let hub = HubProcess::start(&["--tls-cert", cert_file, "--tls-key", key_file]).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser_trusting_any_certificate(&driver).await;

    let url = format!("https://{}/healthz", hub.addr());
    assert_eq!(open_sources(&browser, &url).await, "h2");
    let opened = until(&browser, "opened", SOURCES).await;
    assert_eq!(opened["opened"], SOURCES, "{opened}");
    let mut h2 = H2::connect(hub.addr(), Transport::Tls, Some(&cert)).await;
    let metrics = Stream::new(h2.get("/metrics").await).rest().await;
    assert_eq!(subscribers(&metrics), SOURCES as f64, "{metrics}");

    h2.post("/publish?channel=tabs", "to all 12").await;
    let got = until(&browser, "got", SOURCES).await;
    assert_eq!(
        got["data"],
        json!(vec!["to all 12"; SOURCES as usize]),
        "{got}"
    );

    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_event_sources_over_http1_stall_after_six_connections() {
    let Some(chromedriver) = browser_tools("tests/browser_tls.rs") else {
        return;
    };
    let hub = HubProcess::start(&[]).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser_trusting_any_certificate(&driver).await;

    let url = format!("http://{}/healthz", hub.addr());
    assert_eq!(open_sources(&browser, &url).await, "http/1.1");
    until(&browser, "opened", PER_ORIGIN).await;
    assert_eq!(hub.metric("sse_subscribers").await, PER_ORIGIN as f64);

    hub.publish("channel=tabs", "to all 12").await;
    until(&browser, "got", PER_ORIGIN).await;
    // A bounded wait for what must not happen: the other 6 never open, so never get it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = state(&browser).await;
    assert_eq!(stalled["opened"], PER_ORIGIN, "{stalled}");
    assert_eq!(stalled["got"], PER_ORIGIN, "{stalled}");
    assert_eq!(hub.metric("sse_subscribers").await, PER_ORIGIN as f64);

    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}
