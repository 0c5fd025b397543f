//! The hub as shipped, in a child process: the binary run with `--bind 127.0.0.1:0` and the
//! flags a test adds (none, for the defaults), found at the address it logs, killed on drop.
//! Used through `#[path]` by `tests/trust.rs` and `tests/redis_faults.rs`, which test what
//! the shipped binary does, not a router built by the test.

#![allow(dead_code)] // each test uses its part

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use futures_util::StreamExt;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use tower_sse_test_support::{client, guard, send, text};

/// The hub binary, `tower-sse-hub`, which Cargo builds for the integration tests (with the
/// features of the test run; the test files that use it need `hub`).
pub fn hub_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tower-sse-hub"))
}

/// Between checks of a state only the child process knows (its RSS, its metrics).
pub async fn pause() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The most of the child's output kept for failure messages.
const KEEP: usize = 64 * 1024;

/// Output of the child, kept for failure messages: the last [`KEEP`] bytes.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap();
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(KEEP);
        tail.drain(..excess);
    }

    fn text(&self) -> String {
        let tail = self.0.lock().unwrap();
        String::from_utf8_lossy(&tail.iter().copied().collect::<Vec<_>>()).into_owned()
    }
}

/// A hub that exited instead of listening.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
}

/// A running hub, killed (SIGKILL) and reaped on drop.
pub struct HubProcess {
    child: Child,
    addr: SocketAddr,
    stdout: Tail,
    stderr: Tail,
    pub client: Client,
}

impl HubProcess {
    /// Starts the hub with `args` after `--bind 127.0.0.1:0`; panics, with its output, if it
    /// exits instead.
    pub async fn start(args: &[&str]) -> HubProcess {
        match HubProcess::try_start(args).await {
            Ok(hub) => hub,
            Err(exited) => panic!(
                "the hub {args:?} exited ({}) instead of listening\nstderr:\n{}\nstdout:\n{}",
                exited.status, exited.stderr, exited.stdout
            ),
        }
    }

    /// Starts the hub; `Err` with its exit status and output if it exits before listening.
    pub async fn try_start(args: &[&str]) -> Result<HubProcess, Exited> {
        HubProcess::try_start_with(args, &[]).await
    }

    /// Starts the hub with `args`, after `--bind 127.0.0.1:0` unless they or `env` give one,
    /// and `env` set; `Err` with its exit status and output if it exits before listening.
    pub async fn try_start_with(args: &[&str], env: &[(&str, &str)]) -> Result<HubProcess, Exited> {
        let mut command = Command::new(hub_binary());
        let bind_given =
            args.contains(&"--bind") || env.iter().any(|(name, _)| *name == "SSE_HUB_BIND");
        if !bind_given {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        // The defaults as shipped: its default log level, and no Redis nor flags nor
        // Mercure's JWT keys from the environment (the hub reads these).
        for (name, _) in std::env::vars_os() {
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("SSE_HUB_") || name.starts_with("MERCURE_"))
            {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SSE_REDIS_URL")
            .env_remove("REDIS_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the hub");
        let (stdout, stderr) = (Tail::default(), Tail::default());
        // Threads of their own, reading to the end: the hub logs every request, and a full
        // pipe would stall it.
        let (found, address) = tokio::sync::oneshot::channel();
        let out = child.stdout.take().unwrap();
        let tail = stdout.clone();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                tail.push(line.as_bytes());
                tail.push(b"\n");
                if let Some(addr) = listening_address(&line) {
                    if let Some(found) = found.take() {
                        let _ = found.send(addr);
                    }
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let tail = stderr.clone();
        let stderr_done: JoinHandle<()> = std::thread::spawn(move || {
            let mut err = err;
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                tail.push(&buf[..n]);
            }
        });
        let mut hub = HubProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            stderr,
            client: client(),
        };
        match guard("the hub logs its address or exits", address).await {
            Ok(mut addr) => {
                // Listening on every address (`0.0.0.0`): talk to it over loopback.
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                hub.addr = addr;
                Ok(hub)
            }
            // Its stdout closed without the address: it is exiting.
            Err(_) => {
                let status = guard("the hub exits", async {
                    loop {
                        if let Some(status) = hub.child.try_wait().expect("wait for the hub") {
                            return status;
                        }
                        pause().await;
                    }
                })
                .await;
                let _ = tokio::task::spawn_blocking(move || stderr_done.join()).await;
                Err(Exited {
                    status,
                    stderr: hub.stderr.text(),
                    stdout: hub.stdout.text(),
                })
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the hub wrote to stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// What the hub logged so far (the last 64 KiB, without colours).
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// The hub's resident set size in bytes (`VmRSS` in `/proc/PID/status`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status of the hub");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// `POST /publish?{query}` with `data` as the body.
    pub fn post(&self, query: &str, data: impl Into<reqwest::Body>) -> RequestBuilder {
        self.client
            .post(self.url(&format!("/publish?{query}")))
            .body(data)
    }

    /// Publishes and returns the id the hub answered; panics unless it answered 200.
    pub async fn publish(&self, query: &str, data: impl Into<reqwest::Body>) -> String {
        let res = send(self.post(query, data)).await;
        let status = res.status();
        let body = text(res).await;
        assert_eq!(status, StatusCode::OK, "POST /publish?{query}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        body["id"].as_str().expect("{\"id\": string}").to_owned()
    }

    /// `GET /events?{query}`, with `Last-Event-ID` as these exact bytes if given.
    pub fn events(&self, query: &str, last_event_id: Option<&[u8]>) -> RequestBuilder {
        let mut req = self.client.get(self.url(&format!("/events?{query}")));
        if let Some(id) = last_event_id {
            let value = reqwest::header::HeaderValue::from_bytes(id).expect("a header value");
            req = req.header("last-event-id", value);
        }
        req
    }

    /// Opens a stream; panics, with the hub's reason, unless it answered 200. The response
    /// has come, so the subscription exists.
    pub async fn subscribe(&self, query: &str, last_event_id: Option<&[u8]>) -> Frames {
        let res = send(self.events(query, last_event_id)).await;
        let status = res.status();
        if status != StatusCode::OK {
            panic!("GET /events?{query}: {status} {}", text(res).await);
        }
        Frames::new(res)
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        let res = send(self.client.get(self.url("/metrics"))).await;
        assert_eq!(res.status(), StatusCode::OK, "GET /metrics");
        text(res).await
    }

    /// The value of an unlabelled gauge or counter in `GET /metrics` (0 if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }
}

impl HubProcess {
    /// Sends `signal` (`libc::SIGTERM`, ...) to the hub.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: `kill` has no memory effects; the pid is our child's, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for the hub to exit on its own.
    pub async fn wait(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the hub") {
                return status;
            }
            pause().await;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the hub's `hub listening address=... ` log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let (_, rest) = line.split_once("address=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The line without ANSI colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An event stream read frame by frame, as the hub wrote them (`field: value` lines ending
/// with a blank line); frames of comments only (keep-alives) are skipped.
pub struct Frames {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    /// The last `id` field read, as an `EventSource` keeps it for `Last-Event-ID`.
    pub last_id: Option<String>,
}

impl Frames {
    pub fn new(res: Response) -> Frames {
        let content_type = res.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "an event stream"
        );
        Frames {
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            last_id: None,
        }
    }

    /// The next frame, `None` when the stream ended.
    pub async fn try_next(&mut self) -> Option<String> {
        loop {
            while let Some(end) = memchr::memmem::find(&self.buf, b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let frame = String::from_utf8(frame).expect("a UTF-8 frame");
                if frame
                    .lines()
                    .all(|line| line.is_empty() || line.starts_with(':'))
                {
                    continue;
                }
                if let Some(id) = field(&frame, "id") {
                    self.last_id = Some(id.to_owned());
                }
                return Some(frame);
            }
            match guard("next frame", self.body.next()).await {
                Some(chunk) => self
                    .buf
                    .extend_from_slice(&chunk.expect("the stream's bytes")),
                None => return None,
            }
        }
    }

    /// The next frame; panics if the stream ended.
    pub async fn next(&mut self) -> String {
        self.try_next()
            .await
            .expect("a frame, not the end of the stream")
    }

    /// The next frame with data, what an `EventSource` dispatches: frames on the way with an
    /// id and no data (a stream's positions on a cluster) only set [`Frames::last_id`].
    #[allow(dead_code)] // the cluster's tests use it
    pub async fn next_event(&mut self) -> String {
        loop {
            let frame = self.next().await;
            if field(&frame, "data").is_some() {
                return frame;
            }
        }
    }
}

/// A frame's field, the first of that name (`data`, `id`, `event`).
pub fn field<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        Some(value.strip_prefix(' ').unwrap_or(value))
    })
}
