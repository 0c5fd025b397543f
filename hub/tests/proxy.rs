//! The README's nginx snippet, run: Debian's `nginx-light` (started here on a loopback port,
//! with a prefix and config of its own in a temporary folder, killed on drop) in front of the
//! hub binary. Events arrive through it (waited for, not timed), and an idle stream outlives
//! nginx's read timeout thanks to the hub's keep-alive comments; without them nginx cuts it.
//!
//! The config is the README's text, between its marker and the end of the block, with three
//! values replaced, each exactly once: the hub's address, nginx's port, and
//! `proxy_read_timeout 60s` as 3 s (the hub runs with `--keep-alive 1` instead of 15 s, so
//! the test stays short and the proportions stay).
//!
//! Needs `nginx` (Debian: `apt-get install nginx-light`). Without it the tests say so on
//! stderr and pass, unless `TOWER_SSE_REQUIRE_PROXY=1` (set by `.ci/run`), which makes them
//! fail.
#[path = "support/hub_process.rs"]
mod hub_process;
use tower_sse_test_support as support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hub_process::{HubProcess, pause};
use reqwest::{Client, StatusCode};
use support::{client, guard, on_path, send, skip_or_fail, text};

const README: &str = include_str!("../README.md");
const MARKER: &str = "<!-- nginx: tests/proxy.rs reads the block below -->";

/// nginx's read timeout in these tests: shorter than the idle time, longer than the hub's
/// `--keep-alive 1`.
const READ_TIMEOUT: &str = "3s";
/// How long the stream stays idle: past [`READ_TIMEOUT`].
const IDLE: Duration = Duration::from_secs(5);

/// The README's nginx block, as it stands there.
fn readme_snippet() -> &'static str {
    let (_, after) = README
        .split_once(MARKER)
        .expect("the nginx marker in README.md");
    let block = after.trim_start().strip_prefix("```nginx\n");
    let block = block.expect("a ```nginx block right after the marker");
    let (snippet, _) = block.split_once("```").expect("the end of the nginx block");
    snippet
}

/// `text` with `from` replaced by `to`, which must stand there exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} once in the snippet"
    );
    text.replace(from, to)
}

/// A whole nginx.conf around the snippet: everything nginx writes goes to `dir`.
fn config(dir: &Path, hub: SocketAddr, port: u16) -> String {
    let snippet = replace_once(
        readme_snippet(),
        "server 127.0.0.1:8080;",
        &format!("server {hub};"),
    );
    let snippet = replace_once(&snippet, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let timeout = format!("proxy_read_timeout {READ_TIMEOUT};");
    let snippet = replace_once(&snippet, "proxy_read_timeout 60s;", &timeout);
    let dir = dir.display();
    format!(
        "worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {dir}/body;\n\
         proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n\
         uwsgi_temp_path {dir}/uwsgi;\n\
         scgi_temp_path {dir}/scgi;\n\
         {snippet}\n\
         }}\n"
    )
}

/// The nginx binary, or `None` (after saying so) when it is missing and not required.
fn nginx_binary() -> Option<PathBuf> {
    let sbin = Some(PathBuf::from("/usr/sbin/nginx")).filter(|nginx| nginx.is_file());
    let found = on_path("nginx").or(sbin);
    if found.is_none() {
        let install = "apt-get install nginx-light";
        skip_or_fail(
            "tests/proxy.rs",
            "nginx",
            install,
            "TOWER_SSE_REQUIRE_PROXY",
        );
    }
    found
}

/// nginx in the foreground (`daemon off`), with the README's snippet in front of `hub`:
/// stopped (SIGTERM to its PID, then SIGKILL) and its folder removed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    async fn start(binary: &Path, hub: &HubProcess) -> Nginx {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tower-sse-nginx-{}-{n}", std::process::id()));
        // The port is free when we look; if another process takes it first, nginx exits
        // ("address in use") and we try another.
        for _ in 0..3 {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .port();
            std::fs::write(dir.join("nginx.conf"), config(&dir, hub.addr(), port)).unwrap();
            let child = Command::new(binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let mut nginx = Nginx {
                child,
                dir: dir.clone(),
                addr: (Ipv4Addr::LOCALHOST, port).into(),
            };
            if nginx.until_it_proxies(&client()).await {
                return nginx;
            }
        }
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("nginx did not start in front of the hub:\n{log}");
    }

    /// Until `GET /healthz` through nginx answers `200`; `false` if nginx exited.
    async fn until_it_proxies(&mut self, client: &Client) -> bool {
        guard("nginx starts", async {
            loop {
                if self.child.try_wait().unwrap().is_some() {
                    return false;
                }
                if let Ok(res) = client.get(self.url("/healthz")).send().await {
                    if res.status() == StatusCode::OK {
                        return true;
                    }
                }
                // Nothing to wait on but the process starting up: look again shortly.
                pause().await;
            }
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master, by its PID: it stops its worker too. Then make sure.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An event stream read line by line, comments (`:` keep-alives) included.
struct Lines {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(client: &Client, url: String) -> Lines {
        let res = send(client.get(url)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap());
        assert_eq!(content_type, Some("text/event-stream"));
        Lines {
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next line; `None` when the stream ended (or was cut).
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(String::from_utf8(line).unwrap().trim_end().to_owned());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads until the line `data: {data}`; panics if the stream ends first.
    async fn until_data(&mut self, data: &str) {
        let expected = format!("data: {data}");
        guard("the event through nginx", async {
            loop {
                match self.next().await {
                    Some(line) if line == expected => return,
                    Some(_) => {}
                    None => panic!("the stream ended before {expected:?}"),
                }
            }
        })
        .await;
    }
}

/// `POST /publish?channel=proxy` through nginx.
async fn publish(client: &Client, nginx: &Nginx, data: &str) {
    let res = send(
        client
            .post(nginx.url("/publish?channel=proxy"))
            .body(data.to_owned()),
    )
    .await;
    let status = res.status();
    assert_eq!(status, StatusCode::OK, "{}", text(res).await);
}

/// The hub binary with `flags`, nginx in front of it, and a stream on channel `proxy`
/// through nginx; `None` when nginx is missing (and not required).
async fn stream_through_nginx(flags: &[&str]) -> Option<(HubProcess, Nginx, Client, Lines)> {
    let binary = nginx_binary()?;
    let hub = HubProcess::start(flags).await;
    let nginx = Nginx::start(&binary, &hub).await;
    let client = client();
    let stream = Lines::open(&client, nginx.url("/events?channel=proxy")).await;
    Some((hub, nginx, client, stream))
}

#[tokio::test]
async fn events_arrive_through_nginx() {
    let Some((_hub, nginx, client, mut stream)) = stream_through_nginx(&[]).await else {
        return;
    };
    publish(&client, &nginx, "through nginx").await;
    stream.until_data("through nginx").await;
}

/// Idle past nginx's read timeout, the stream stays open (the keep-alive comments reset the
/// timeout), and the next event arrives on it.
#[tokio::test]
async fn an_idle_stream_outlives_the_read_timeout_thanks_to_keep_alives() {
    let flags = ["--keep-alive", "1"];
    let Some((_hub, nginx, client, mut stream)) = stream_through_nginx(&flags).await else {
        return;
    };
    let (started, mut comments) = (Instant::now(), 0);
    // Time itself is what this waits for: nginx's timeout to pass.
    while let Some(left) = IDLE.checked_sub(started.elapsed()) {
        match tokio::time::timeout(left, stream.next()).await {
            Err(_) => break,
            Ok(Some(line)) if line.starts_with(':') => comments += 1,
            Ok(Some(line)) => assert!(line.is_empty(), "no event yet: {line:?}"),
            Ok(None) => panic!("nginx cut the stream after {:?} idle", started.elapsed()),
        }
    }
    assert!(
        comments >= 3,
        "keep-alive comments came through: {comments}"
    );
    publish(&client, &nginx, "after the idle time").await;
    stream.until_data("after the idle time").await;
}

/// The control: without keep-alive comments, nginx ends the idle stream at its read timeout,
/// so the test above holds thanks to them.
#[tokio::test]
async fn without_keep_alives_nginx_cuts_the_idle_stream() {
    let Some((_hub, _nginx, _, mut stream)) = stream_through_nginx(&["--keep-alive", "0"]).await
    else {
        return;
    };
    let ended = guard("nginx ends the idle stream", async {
        while let Some(line) = stream.next().await {
            assert!(line.is_empty(), "no event, no comment: {line:?}");
        }
    });
    ended.await;
}
