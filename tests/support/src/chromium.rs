//! Headless Chromium over WebDriver, for the tests that need a real browser
//! (`tests/browser.rs`, `tests/cors.rs`, `tests/browser_tls.rs`, through `#[path]`).
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`). Without them a test says so on stderr and passes, unless
//! `TOWER_SSE_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes it fail.

#![allow(dead_code)] // each test uses its part

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use fantoccini::{Client as Browser, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{guard, on_path, skip_or_fail};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser tools, or `None` (after saying so, for `test`) when they are missing and not
/// required.
pub fn browser_tools(test: &str) -> Option<PathBuf> {
    let chromedriver = on_path("chromedriver");
    let missing = match &chromedriver {
        _ if !Path::new(CHROMIUM).is_file() => Some(CHROMIUM),
        None => Some("chromedriver (on PATH)"),
        Some(_) => None,
    };
    if let Some(missing) = missing {
        let install = "apt-get install chromium chromium-driver";
        skip_or_fail(test, missing, install, "TOWER_SSE_REQUIRE_BROWSER");
        return None;
    }
    chromedriver
}

/// A chromedriver we started, in a process group of its own so that the Chromium it starts
/// goes with it: killed by that group id on drop, also when the test panics. The profile
/// folder of [`open_browser_trusting_any_certificate`] goes too.
pub struct Chromedriver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Chromedriver {
    pub async fn start(binary: &Path) -> Chromedriver {
        let child = Command::new(binary)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(format!("tower-sse-chromium-{}", child.id()));
        let mut driver = Chromedriver {
            child,
            url: String::new(),
            profile,
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
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Headless Chromium through `driver`.
pub async fn open_browser(driver: &Chromedriver) -> Browser {
    session(driver, &[], false).await
}

/// Headless Chromium through `driver`, with a fresh profile, trusting any certificate (the
/// tests make self-signed ones), and HTTP/2 over TCP rather than HTTP/3 over QUIC.
pub async fn open_browser_trusting_any_certificate(driver: &Chromedriver) -> Browser {
    let profile = format!("--user-data-dir={}", driver.profile.display());
    let extra = [
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        &profile,
    ];
    session(driver, &extra, true).await
}

/// A WebDriver session of headless Chromium with the flags this machine needs, and `extra`.
async fn session(driver: &Chromedriver, extra: &[&str], insecure_certs: bool) -> Browser {
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-proxy-server",
    ];
    args.extend_from_slice(extra);
    let options = serde_json::json!({ "binary": CHROMIUM, "args": args });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    if insecure_certs {
        capabilities.insert("acceptInsecureCerts".into(), true.into());
    }
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    guard("webdriver session", builder.connect(&driver.url))
        .await
        .expect("webdriver session")
}
