//! Headless Chromium driven over WebDriver (chromedriver + fantoccini), with a fresh profile
//! and certificate errors ignored (the tests make self-signed certificates). The same rule as
//! `tests/browser.rs`: without `/usr/bin/chromium` and `chromedriver` a test says so on stderr
//! and passes, unless `TOWER_SSE_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes it fail.
//! Used by `tests/browser_tls.rs` through `#[path]`.

#![allow(dead_code)] // each test uses its part

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use fantoccini::{Client as Browser, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::support::guard;

const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, or `None` (after saying so, naming `test`) when the browser tools are
/// missing and not required.
pub fn browser_tools(test: &str) -> Option<PathBuf> {
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
        let loud = format!("\n!!! SKIPPED {test}: {missing} is missing ({install}) !!!\n");
        let _ = std::io::stderr().write_all(loud.as_bytes());
    }
    chromedriver
}

/// A chromedriver we started, in a process group of its own so that the Chromium it starts
/// goes with it: killed by that group id on drop, also when the test panics. Its Chromium's
/// profile folder goes too.
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

    /// Headless Chromium with a fresh profile, trusting any certificate.
    pub async fn open_browser(&self) -> Browser {
        let profile = format!("--user-data-dir={}", self.profile.display());
        let options = serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                // HTTP/2 over TCP, not HTTP/3 over QUIC.
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                "--ignore-certificate-errors",
                profile,
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities.insert("acceptInsecureCerts".into(), true.into());
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        guard("webdriver session", builder.connect(&self.url))
            .await
            .expect("webdriver session")
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
