//! The quickstart page (`examples/quickstart.rs`) in a real browser: headless Chromium driven
//! over WebDriver (chromedriver + fantoccini). Proves what no Rust client can: that a browser's
//! own `EventSource` gets the greeting into the page, and that after the server drops the
//! stream it reconnects by itself with `Last-Event-ID` and gets exactly the events it missed.
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`). Without them the test says so on stderr and passes, unless
//! `TOWER_SSE_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes it fail.

#[path = "../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;
#[path = "support/stream_server.rs"]
mod stream_server;

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use stream_server::Server;
use support::guard;
use tower_sse::{Broker, Event};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser tools, or `None` (after saying so) when they are missing and not required.
fn browser_tools() -> Option<PathBuf> {
    let chromedriver = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromedriver"))
            .find(|file| file.is_file())
    });
    let missing = match &chromedriver {
        _ if !Path::new(CHROMIUM).is_file() => Some(CHROMIUM),
        None => Some("chromedriver (on PATH)"),
        Some(_) => None,
    };
    if let Some(missing) = missing {
        let install = "apt-get install chromium chromium-driver";
        if std::env::var("TOWER_SSE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("TOWER_SSE_REQUIRE_BROWSER=1 but {missing} is missing: {install}");
        }
        // Straight to stderr: the test harness captures `eprintln!`, and a skip must be seen.
        let loud =
            format!("\n!!! SKIPPED tests/browser.rs: {missing} is missing ({install}) !!!\n");
        let _ = std::io::stderr().write_all(loud.as_bytes());
    }
    chromedriver
}

/// A chromedriver we started, in a process group of its own so that the Chromium it starts
/// goes with it: killed by that group id on drop, also when the test panics.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start(binary: &Path) -> Chromedriver {
        let child = Command::new(binary)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut driver = Chromedriver {
            child,
            url: String::new(),
        };
        // With --port=0 it picks a free port and prints it: that line is the ready signal. Keep
        // reading until it exits, so a full pipe never blocks it.
        let stdout = driver.child.stdout.take().unwrap();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
                if let Some(port) = port {
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = guard("chromedriver start", port_rx)
            .await
            .expect("chromedriver exited before printing its port");
        driver.url = format!("http://127.0.0.1:{port}");
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole process group `process_group(0)` made for our chromedriver: Chromium goes
        // with it (SIGTERM to chromedriver alone leaves Chromium running).
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium through `driver`.
async fn open_browser(driver: &Chromedriver) -> Browser {
    let options = serde_json::json!({
        "binary": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-proxy-server",
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    guard("webdriver session", builder.connect(&driver.url))
        .await
        .expect("webdriver session")
}

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
    let Some(chromedriver) = browser_tools() else {
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
