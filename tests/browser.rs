//! The quickstart page (`examples/quickstart.rs`) in a real browser: headless Chromium driven
//! over WebDriver (chromedriver + fantoccini). Proves what no Rust client can: that a browser's
//! own `EventSource` gets the greeting into the page, and that after the server drops the
//! stream it reconnects by itself with `Last-Event-ID` and gets exactly the events it missed.
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (see `tests/support/chromium.rs`).

use tower_sse_test_support::chromium;
#[path = "../examples/quickstart/src/main.rs"]
#[allow(dead_code)]
mod quickstart;
use tower_sse_test_support::stream_server;

use tower_sse_test_support as support;

use chromium::{Chromedriver, browser_tools, open_browser};
use fantoccini::{Client as Browser, Locator};
use stream_server::Server;
use support::guard;
use tower_sse::{Broker, Event};

/// Waits, in the page, until the last item of `#greetings` reads `last`, then reads them all
/// through WebDriver. A MutationObserver is the signal; the script timeout (30 s) the hang
/// guard.
async fn greetings_until(browser: &Browser, last: &str) -> Vec<String> {
    const WAIT: &str = r#"
        const [last, done] = arguments;
        const list = document.getElementById("greetings");
        let observer = null;
        const check = () => {
            const item = list.lastElementChild;
            if (!item || item.textContent !== last) return false;
            if (observer) observer.disconnect();
            done(null);
            return true;
        };
        if (!check()) {
            observer = new MutationObserver(check);
            observer.observe(list, { childList: true });
        }
    "#;
    let waited = browser.execute_async(WAIT, vec![last.into()]);
    guard("greetings in the DOM", waited)
        .await
        .unwrap_or_else(|err| panic!("waiting for greeting {last:?}: {err}"));
    let items = browser
        .find_all(Locator::Css("#greetings li"))
        .await
        .unwrap();
    let mut texts = Vec::new();
    for item in items {
        texts.push(item.text().await.unwrap());
    }
    texts
}

fn greeting(message: &str) -> Event {
    Event::default()
        .event("greeting")
        .json_data(&serde_json::json!({ "message": message }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_page_gets_greetings_and_resumes_after_a_drop() {
    let Some(chromedriver) = browser_tools("tests/browser.rs") else {
        return;
    };
    let broker = Broker::builder().id_base(0).history(100).build();
    let mut server = Server::start(quickstart::app(broker.clone())).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let browser = open_browser(&driver).await;

    // 1. The page opens its EventSource; /hello's greeting shows up in the DOM.
    guard("page load", browser.goto(&format!("{}/", server.base)))
        .await
        .unwrap();
    let first = server.streams(1).await;
    assert_eq!(first[0].last_event_id, None, "a fresh page has no id");
    assert_eq!(broker.subscriber_count("sse"), 1, "the EventSource is open");
    let http = support::client();
    let hello = guard("/hello", http.get(format!("{}/hello", server.base)).send()).await;
    let hello = guard("/hello body", hello.unwrap().text()).await.unwrap();
    assert_eq!(hello, "Message sent! (id 1)\n");
    assert_eq!(greetings_until(&browser, "Hello!").await, ["Hello!"]);

    // 2. The server drops the stream; events are published while the browser is away (the
    // gate holds its reconnection until they are); it comes back with Last-Event-ID.
    server.gate.send_replace(false);
    server.drop_streams().await;
    assert_eq!(broker.subscriber_count("sse"), 0, "the stream is gone");
    for missed in ["missed 1", "missed 2", "missed 3"] {
        broker.publish("sse", greeting(missed)).await.unwrap();
    }
    server.gate.send_replace(true);
    let second = server.streams(2).await;
    assert_eq!(second[1].last_event_id.as_deref(), Some("1"), "{second:?}");
    assert_ne!(second[1].conn, second[0].conn, "a new connection");
    assert_eq!(broker.subscriber_count("sse"), 1, "reconnected");
    // One live event after the replay: once it is in the page, any duplicate would be too.
    broker.publish("sse", greeting("live")).await.unwrap();
    let expected = ["Hello!", "missed 1", "missed 2", "missed 3", "live"];
    assert_eq!(greetings_until(&browser, "live").await, expected);
    assert_eq!(server.streams(2).await.len(), 2, "one reconnection only");

    guard("close the browser", browser.close()).await.unwrap();
    drop(driver);
}
