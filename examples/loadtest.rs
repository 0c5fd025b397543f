//! Run with: cargo run --release --example loadtest -- [--quick] [--runs 3]
//!
//! A side-by-side load run of the tower-sse hub (`examples/hub.rs`, `Broker::new()` defaults)
//! against an idiomatic axum baseline (`DashMap` of `tokio::sync::broadcast` senders, axum `Sse`
//! with the default `KeepAlive`, broadcast capacity 256 like tower-sse's default buffer), so
//! that the crate's performance claims are measured, not assumed (see BENCHMARKS.md).
//!
//! Each server runs in its own child process (this binary, hidden `serve` subcommand), with the
//! same tokio runtime, on its own `127.0.0.1` port, so that `/proc/<pid>` gives its own RSS and
//! CPU time. The parent opens raw TCP subscribers (`GET /events?channel=..`, bytes scanned for
//! `data:` lines) and publishes 100-byte events with `POST /publish?channel=..`; each event
//! carries its sequence number and its send time (UNIX nanoseconds). Per server and run:
//!
//! - RSS per idle subscriber: (RSS with N idle streams - RSS before) / N, N = 10,000;
//! - deliveries/s at 10,000 (1,000 events) and 1,000 subscribers (5,000 events), 4 publishers
//!   going as fast as the slowest subscriber allows (at most 128 events in flight, so no
//!   subscriber falls 256 behind);
//! - publish-to-receive latency p50/p99/max at 1,000 subscribers, 500 events at 50/s and 1,000
//!   at 200/s (published on the clock, not waiting for answers);
//! - events lost (expected minus distinct received), in every phase;
//! - CPU time and write system calls per 1,000 deliveries, of the server; CPU time of this load
//!   generator too, to see whether it is the bottleneck.
//!
//! It prints a markdown table of medians over `--runs` runs and the ratios to the baseline.
//! Both are served as `hub` serves: `axum::serve(listener, router.into_make_service())`.
//! `--serve-router` and `--metrics` change how both are set up, to see what that costs.
//! Everything is bounded; the children are killed by PID at the end. `--quick` (under 30 s) is a
//! smoke check: it exits 0 when everything ran, nonzero if a server failed or subscribers could
//! not connect.

#[path = "hub.rs"]
#[allow(dead_code)]
mod hub;

use std::{
    env,
    error::Error,
    fmt::Write as _,
    fs, io,
    net::SocketAddr,
    ops::Range,
    process::{ExitCode, Stdio},
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
    process::{Child, Command},
    sync::{oneshot, Notify},
    task::JoinHandle,
    time::timeout,
};
use tower_sse::Broker;

type BoxError = Box<dyn Error + Send + Sync>;

/// Keep-alive of both servers: the hub's default and axum's `KeepAlive::default()`.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events in flight in the throughput phases; below the 256-event buffer of both servers.
const WINDOW: u64 = 128;
/// Tries per subscriber to connect and get the response head.
const CONNECT_ATTEMPTS: u32 = 3;
/// Concurrent publishers in the throughput phases.
const PUBLISHERS: usize = 4;
/// Subscribers connecting at once.
const BATCH: usize = 250;
/// The servers' listen backlog (Linux caps it at `net.core.somaxconn`, 4096 by default).
const BACKLOG: u32 = 1024;
/// Bytes of event data, as the issue asks.
const PAYLOAD: usize = 100;
/// Hang guard: a phase ends when no event arrived for this long (lost events never do).
const STALL: Duration = Duration::from_secs(3);
/// Hang guard for a server to start or a batch of subscribers to connect.
const GUARD: Duration = Duration::from_secs(20);

/// Side-by-side load test of the tower-sse hub and an axum `Sse` baseline on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Small counts, under 30 s: a smoke check whose figures mean little.
    #[arg(long)]
    quick: bool,
    /// Runs per server; the table shows medians (default 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    runs: Option<u32>,
    #[command(flatten)]
    setup: Setup,
}

/// Variants of how the servers are set up, to see what they cost; off by default.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Setup {
    /// Serve both routers with `axum::serve(listener, router)`, which rebuilds the router for
    /// every connection, instead of `router.into_make_service()` as `hub` does.
    #[arg(long)]
    serve_router: bool,
    /// Install the hub's Prometheus recorder before building the broker, as `hub` does.
    #[arg(long)]
    metrics: bool,
}

impl Setup {
    fn flags(self) -> impl Iterator<Item = &'static str> {
        [
            self.serve_router.then_some("--serve-router"),
            self.metrics.then_some("--metrics"),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve one of the servers on 127.0.0.1 and print its address (run by the load test).
    #[command(hide = true)]
    Serve {
        server: Server,
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[command(flatten)]
        setup: Setup,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Server {
    /// `examples/hub.rs` with `Broker::new()`.
    Tower,
    /// [`baseline::app`].
    Axum,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Tower => "tower",
            Server::Axum => "axum",
        }
    }
}

/// The baseline: what an axum user writes without tower-sse.
pub mod baseline {
    use std::{
        convert::Infallible,
        sync::{
            atomic::{AtomicU64, Ordering},
            Arc,
        },
    };

    use axum::{
        extract::{Query, State},
        response::sse::{Event, KeepAlive, Sse},
        routing::{get, post},
        Json, Router,
    };
    use dashmap::DashMap;
    use futures_util::Stream;
    use tokio::sync::broadcast::{self, error::RecvError};

    /// tower-sse's default buffer.
    pub const CAPACITY: usize = 256;

    #[derive(Clone, Default)]
    struct Hub {
        // `Arc<str>`, not `String`: each receiver clones a pointer, not the data.
        channels: Arc<DashMap<String, broadcast::Sender<Arc<str>>>>,
        next_id: Arc<AtomicU64>,
    }

    #[derive(serde::Deserialize)]
    struct Channel {
        channel: Option<String>,
    }

    impl Channel {
        fn name(self) -> String {
            self.channel.unwrap_or_else(|| "sse".to_owned())
        }
    }

    /// `GET /events?channel=X` and `POST /publish?channel=X` (body: the data; answers
    /// `{"id": ".."}`), like the hub's.
    pub fn app() -> Router {
        Router::new()
            .route("/events", get(events))
            .route("/publish", post(publish))
            .with_state(Hub::default())
    }

    async fn events(
        State(hub): State<Hub>,
        Query(channel): Query<Channel>,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let rx = hub
            .channels
            .entry(channel.name())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        // As `BroadcastStream` with lag errors filtered out.
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(data) => return Some((Ok(Event::default().data(&*data)), rx)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Sse::new(stream).keep_alive(KeepAlive::default())
    }

    async fn publish(
        State(hub): State<Hub>,
        Query(channel): Query<Channel>,
        data: String,
    ) -> Json<serde_json::Value> {
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(sender) = hub.channels.get(&channel.name()) {
            // No receivers is not an error: nobody listens.
            let _ = sender.send(Arc::from(data));
        }
        Json(serde_json::json!({ "id": id.to_string() }))
    }
}

/// The one runtime setting both servers and the load generator share.
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The `serve` subcommand: one server, until the parent closes our stdin or kills us.
async fn serve(server: Server, port: u16, setup: Setup) -> Result<(), BoxError> {
    // `TcpListener::bind` listens with a backlog of 128: thousands of subscribers connecting
    // at once would overflow it and wait a second for their SYN to be sent again.
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = socket.listen(BACKLOG)?;
    if setup.metrics {
        hub::metrics();
    }
    let app = match server {
        Server::Tower => hub::app(Broker::new(), None, Some(KEEP_ALIVE)),
        Server::Axum => baseline::app(),
    };
    println!("{}", listener.local_addr()?);
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    if setup.serve_router {
        axum::serve(listener, app).await?;
    } else {
        axum::serve(listener, app.into_make_service()).await?;
    }
    Ok(())
}

/// Raises the open-file soft limit to the hard limit (children inherit it) and returns it.
fn raise_nofile() -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// A process's resident memory and CPU time (user + system), from `/proc`.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss: u64,
    cpu: Duration,
    /// Write system calls (`write`, `writev`...): `syscw` of `/proc/PID/io`.
    writes: u64,
}

fn usage(pid: u32) -> Result<Usage, BoxError> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/PID/status")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64, BoxError> {
        Ok(fields.get(i).ok_or("short /proc/PID/stat")?.parse()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = ticks(11)? + ticks(12)?;
    let io = fs::read_to_string(format!("/proc/{pid}/io"))?;
    let writes = io
        .lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no syscw in /proc/PID/io")?;
    Ok(Usage {
        rss: rss_kib * 1024,
        cpu: Duration::from_nanos(ticks * 1_000_000_000 / hz),
        writes,
    })
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A server child process, killed by its PID when dropped.
struct ServerProcess {
    server: Server,
    addr: SocketAddr,
    pid: u32,
    child: Child,
}

impl ServerProcess {
    async fn start(server: Server, setup: Setup) -> Result<ServerProcess, BoxError> {
        let mut child = Command::new(env::current_exe()?)
            .args(["serve", server.name(), "--port", "0"])
            .args(setup.flags())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let pid = child.id().ok_or("server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let mut process = ServerProcess {
            server,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            child,
        };
        timeout(GUARD, BufReader::new(stdout).read_line(&mut line)).await??;
        process.addr = line
            .trim()
            .parse()
            .map_err(|_| format!("{} server printed {line:?}, not an address", server.name()))?;
        Ok(process)
    }

    fn check(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            Some(status) => Err(format!("{} server exited: {status}", self.server.name()).into()),
            None => Ok(()),
        }
    }

    fn usage(&self) -> Result<Usage, BoxError> {
        usage(self.pid)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL to this child's PID; tokio reaps it.
        let _ = self.child.start_kill();
    }
}

/// Publish-to-receive latencies in microseconds: exact below 1 ms, then 64 buckets per
/// power of two (under 1.6% error). Atomic, shared by all subscribers.
struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..1024 + 54 * 64).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < 1024 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as usize; // >= 10
        (1024 + (exp - 10) * 64 + ((us >> (exp - 6)) & 63) as usize).min(1024 + 54 * 64 - 1)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 1024 {
            return index as u64;
        }
        let (exp, sub) = ((index - 1024) / 64 + 10, (index - 1024) % 64);
        (64 + sub as u64) << (exp - 6)
    }

    fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    fn reset(&self) {
        self.buckets.iter().for_each(|b| b.store(0, Relaxed));
        self.max.store(0, Relaxed);
    }

    fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        0
    }
}

/// What the subscribers of one set received, per sequence number and in total.
struct Tally {
    subscribers: usize,
    /// Subscribers that received each sequence number.
    counts: Box<[AtomicU32]>,
    received: AtomicU64,
    /// Deliveries expected in the current phase.
    target: AtomicU64,
    /// UNIX nanoseconds of the last read that brought events.
    last_nanos: AtomicU64,
    ended: AtomicUsize,
    malformed: AtomicU64,
    duplicates: AtomicU64,
    /// Connection attempts that failed and were retried.
    retries: AtomicU64,
    latency: Histogram,
    done: Notify,
    window: Notify,
}

impl Tally {
    /// Prints what should not happen.
    fn report(&self, server: &str) {
        let (malformed, duplicates) = (self.malformed.load(Relaxed), self.duplicates.load(Relaxed));
        let retries = self.retries.load(Relaxed);
        if malformed + duplicates + retries > 0 {
            eprintln!(
                "  {server}: {malformed} malformed and {duplicates} duplicate events, \
                 {retries} connections retried"
            );
        }
    }

    fn live(&self) -> u32 {
        (self.subscribers - self.ended.load(Relaxed).min(self.subscribers)) as u32
    }

    /// Scans complete lines; returns the bytes consumed. Chunk-size lines of the chunked
    /// encoding never start with `data: `, and a chunk always holds whole events.
    fn scan(&self, bytes: &[u8], seen: &mut [u64], now: u64) -> usize {
        let mut start = 0;
        let mut events = 0;
        for end in memchr::memchr_iter(b'\n', bytes) {
            if let Some(data) = bytes[start..end].strip_prefix(b"data: ") {
                events += self.deliver(data, seen, now);
            }
            start = end + 1;
        }
        if events > 0 {
            self.last_nanos.fetch_max(now, Relaxed);
            let received = self.received.fetch_add(events, Relaxed) + events;
            if received >= self.target.load(Relaxed) {
                self.done.notify_waiters();
            }
        }
        start
    }

    /// Counts one event, once per subscriber (`seen` is its bitmap of sequence numbers).
    fn deliver(&self, data: &[u8], seen: &mut [u64], now: u64) -> u64 {
        let (Some(seq), Some(sent)) = (digits(data.get(..10)), digits(data.get(11..31))) else {
            self.malformed.fetch_add(1, Relaxed);
            return 0;
        };
        let Some(count) = self.counts.get(seq as usize) else {
            self.malformed.fetch_add(1, Relaxed);
            return 0;
        };
        let (word, bit) = (&mut seen[seq as usize / 64], 1 << (seq % 64));
        if *word & bit != 0 {
            self.duplicates.fetch_add(1, Relaxed);
            return 0;
        }
        *word |= bit;
        if count.fetch_add(1, Relaxed) + 1 >= self.live() {
            self.window.notify_waiters();
        }
        self.latency.record(now.saturating_sub(sent) / 1000);
        1
    }
}

fn digits(bytes: Option<&[u8]>) -> Option<u64> {
    let bytes = bytes?;
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10) + u64::from(b - b'0'))
    })
}

/// The event data: sequence number, send time, padding; 100 bytes.
fn payload(seq: u64) -> String {
    let data = format!("{seq:010} {:020} ", unix_nanos());
    let pad = PAYLOAD - data.len();
    data + &"x".repeat(pad)
}

/// N raw subscribers of one channel of one server; aborted when dropped.
struct Subscribers {
    tally: Arc<Tally>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    async fn connect(
        addr: SocketAddr,
        channel: &str,
        n: usize,
        events: u64,
    ) -> Result<Subscribers, BoxError> {
        let tally = Arc::new(Tally {
            subscribers: n,
            counts: (0..events).map(|_| AtomicU32::new(0)).collect(),
            received: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            last_nanos: AtomicU64::new(0),
            ended: AtomicUsize::new(0),
            malformed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: Histogram::new(),
            done: Notify::new(),
            window: Notify::new(),
        });
        let request: Arc<str> = format!(
            "GET /events?channel={channel} HTTP/1.1\r\nHost: {addr}\r\n\
             Accept: text/event-stream\r\n\r\n"
        )
        .into();
        let mut set = Subscribers {
            tally,
            tasks: Vec::with_capacity(n),
        };
        for first in (0..n).step_by(BATCH) {
            let mut ready = Vec::with_capacity(BATCH);
            for _ in first..n.min(first + BATCH) {
                let (tx, rx) = oneshot::channel();
                let (request, tally) = (request.clone(), set.tally.clone());
                set.tasks
                    .push(tokio::spawn(subscriber(addr, request, tally, tx)));
                ready.push(rx);
            }
            for (i, rx) in ready.into_iter().enumerate() {
                let what = format!("subscriber {} of {n} could not connect", first + i + 1);
                match timeout(GUARD, rx).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(err))) => return Err(format!("{what}: {err}").into()),
                    Ok(Err(_)) => return Err(format!("{what}: task failed").into()),
                    Err(_) => return Err(format!("{what}: no response in {GUARD:?}").into()),
                }
            }
        }
        Ok(set)
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// One subscriber: sends the request, reports the response head, then counts events.
async fn subscriber(
    addr: SocketAddr,
    request: Arc<str>,
    tally: Arc<Tally>,
    ready: oneshot::Sender<io::Result<()>>,
) {
    let mut buf = vec![0; 8 * 1024];
    let mut attempt = 1;
    let (mut stream, mut filled) = loop {
        match handshake(addr, &request, &mut buf).await {
            Ok(ok) => {
                let _ = ready.send(Ok(()));
                break ok;
            }
            // A connection reset while 10,000 others connect is retried, and counted.
            Err(err) if attempt < CONNECT_ATTEMPTS => {
                tally.retries.fetch_add(1, Relaxed);
                eprintln!("  retrying a subscriber: {err}");
                attempt += 1;
            }
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        }
    };
    let mut seen = vec![0; tally.counts.len().div_ceil(64)];
    let mut now = unix_nanos();
    loop {
        let used = tally.scan(&buf[..filled], &mut seen, now);
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            tally.malformed.fetch_add(1, Relaxed);
            break;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        now = unix_nanos();
    }
    tally.ended.fetch_add(1, Relaxed);
    tally.window.notify_waiters();
}

/// Connects, sends the request and reads the response head: the server has subscribed
/// before it answers. Returns the stream and how many body bytes are already in `buf`.
async fn handshake(
    addr: SocketAddr,
    request: &str,
    buf: &mut [u8],
) -> io::Result<(TcpStream, usize)> {
    let mut stream = TcpStream::connect(addr).await?;
    // Reset on close, so 20,000 closed streams leave no TIME_WAIT holding ports.
    stream.set_zero_linger()?;
    stream.write_all(request.as_bytes()).await?;
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 || filled + n == buf.len() {
            return Err(io::Error::other("no response head"));
        }
        filled += n;
        if let Some(end) = memchr::memmem::find(&buf[..filled], b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                let line = buf[..filled].split(|&b| b == b'\r').next().unwrap_or(&[]);
                let line = String::from_utf8_lossy(line).into_owned();
                return Err(io::Error::other(format!("answered {line}")));
            }
            buf.copy_within(end + 4..filled, 0);
            return Ok((stream, filled - end - 4));
        }
    }
}

/// Publishes over keep-alive connections.
struct Publisher {
    client: reqwest::Client,
    url: String,
}

impl Publisher {
    fn new(addr: SocketAddr, channel: &str) -> Result<Publisher, BoxError> {
        Ok(Publisher {
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(PUBLISHERS)
                .build()?,
            url: format!("http://{addr}/publish?channel={channel}"),
        })
    }

    async fn publish(&self, seq: u64) -> Result<(), BoxError> {
        let res = self
            .client
            .post(&self.url)
            .body(payload(seq))
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        if !status.is_success() || memchr::memmem::find(&body, b"\"id\"").is_none() {
            let body = String::from_utf8_lossy(&body);
            return Err(format!("publish answered {status}: {body}").into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Events per second.
    Rate(u32),
    /// As fast as the slowest subscriber takes them, [`WINDOW`] in flight.
    Window,
}

/// Figures of one phase on one server.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    deliveries: u64,
    lost: u64,
    disconnected: usize,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    server_cpu_per_1k_ms: f64,
    server_writes_per_1k: f64,
    client_cpu_per_1k_ms: f64,
    server_util: f64,
    client_util: f64,
}

async fn phase(
    server: &mut ServerProcess,
    subs: &Subscribers,
    publisher: &Publisher,
    seqs: Range<u64>,
    pace: Pace,
) -> Result<Phase, BoxError> {
    let tally = &subs.tally;
    let (live, ended) = (tally.live(), tally.ended.load(Relaxed));
    tally.latency.reset();
    let received0 = tally.received.load(Relaxed);
    let target = received0 + u64::from(live) * (seqs.end - seqs.start);
    tally.target.store(target, Relaxed);
    let (server0, client0) = (server.usage()?, usage(std::process::id())?);
    let (start, start_nanos) = (Instant::now(), unix_nanos());
    match pace {
        Pace::Rate(rate) => {
            // On the clock, without waiting for answers: a slow answer must not lower the rate.
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
            let (mut seqs, mut in_flight) = (seqs, FuturesUnordered::new());
            loop {
                tokio::select! {
                    _ = ticks.tick(), if !seqs.is_empty() => {
                        in_flight.extend(seqs.next().map(|seq| publisher.publish(seq)));
                    }
                    Some(published) = in_flight.next() => published?,
                    else => break,
                }
            }
        }
        Pace::Window => {
            // Several publishers, so that publishing keeps up with fan-out; each waits until
            // the event WINDOW before its own reached every subscriber.
            let next = AtomicU64::new(seqs.start);
            let publish = || async {
                loop {
                    let seq = next.fetch_add(1, Relaxed);
                    if seq >= seqs.end {
                        return Ok::<_, BoxError>(());
                    }
                    if let Some(before) = seq.checked_sub(WINDOW).filter(|s| *s >= seqs.start) {
                        let count = &tally.counts[before as usize];
                        wait(&tally.window, || count.load(Relaxed) >= tally.live()).await;
                    }
                    publisher.publish(seq).await?;
                }
            };
            futures_util::future::try_join_all((0..PUBLISHERS).map(|_| publish())).await?;
        }
    }
    wait(&tally.done, || tally.received.load(Relaxed) >= target).await;
    let (server1, client1) = (server.usage()?, usage(std::process::id())?);
    server.check()?;
    let deliveries = tally.received.load(Relaxed) - received0;
    let secs = (tally.last_nanos.load(Relaxed).saturating_sub(start_nanos) as f64 / 1e9).max(1e-3);
    let per_1k = |cpu: Duration| cpu.as_secs_f64() * 1e3 / (deliveries.max(1) as f64 / 1e3);
    let wall = start.elapsed().as_secs_f64();
    Ok(Phase {
        deliveries,
        lost: target - received0 - deliveries.min(target - received0),
        disconnected: tally.ended.load(Relaxed) - ended,
        per_sec: deliveries as f64 / secs,
        p50_us: tally.latency.quantile(0.50),
        p99_us: tally.latency.quantile(0.99),
        max_us: tally.latency.max.load(Relaxed),
        server_cpu_per_1k_ms: per_1k(server1.cpu - server0.cpu),
        server_writes_per_1k: (server1.writes - server0.writes) as f64 * 1e3
            / deliveries.max(1) as f64,
        client_cpu_per_1k_ms: per_1k(client1.cpu - client0.cpu),
        server_util: (server1.cpu - server0.cpu).as_secs_f64() / wall,
        client_util: (client1.cpu - client0.cpu).as_secs_f64() / wall,
    })
}

/// Waits until `ready()`, re-checking on each notification; gives up after [`STALL`] without
/// one (events that were lost never come).
async fn wait(notify: &Notify, ready: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a notification in between is not missed.
        notified.as_mut().enable();
        if ready() || timeout(STALL, notified).await.is_err() {
            return;
        }
    }
}

/// Counts for one run; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
struct Plan {
    idle: usize,
    idle_events: u64,
    subscribers: usize,
    warmup: u64,
    latency_events: u64,
    loss_events: u64,
    burst_events: u64,
}

impl Plan {
    const FULL: Plan = Plan {
        idle: 10_000,
        idle_events: 1_000,
        subscribers: 1_000,
        warmup: 20,
        latency_events: 500,
        loss_events: 1_000,
        burst_events: 5_000,
    };
    const QUICK: Plan = Plan {
        idle: 1_000,
        idle_events: 50,
        subscribers: 200,
        warmup: 10,
        latency_events: 50,
        loss_events: 200,
        burst_events: 300,
    };
}

/// One server's figures in one run.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rss_per_idle: f64,
    burst_idle: Phase,
    latency: Phase,
    loss: Phase,
    burst: Phase,
}

impl Figures {
    /// One line for the progress log.
    fn summary(&self) -> String {
        let phase = |p: &Phase| {
            format!(
                "{} delivered, {} lost, {} disconnected, {:.0}/s, p99 {} µs",
                p.deliveries, p.lost, p.disconnected, p.per_sec, p.p99_us
            )
        };
        format!(
            "RSS/idle {:.0} B; idle burst: {}; 50/s: {}; 200/s: {}; burst: {}",
            self.rss_per_idle,
            phase(&self.burst_idle),
            phase(&self.latency),
            phase(&self.loss),
            phase(&self.burst)
        )
    }
}

async fn measure(server: &mut ServerProcess, plan: Plan) -> Result<Figures, BoxError> {
    let name = server.server.name();
    let before = server.usage()?;
    eprintln!("  {name}: {} idle subscribers", plan.idle);
    let idle = Subscribers::connect(server.addr, "idle", plan.idle, plan.idle_events).await?;
    let after = server.usage()?;
    let rss_per_idle = after.rss.saturating_sub(before.rss) as f64 / plan.idle as f64;
    eprintln!("  {name}: {} events to them, max speed", plan.idle_events);
    let publisher = Publisher::new(server.addr, "idle")?;
    let burst_idle = phase(server, &idle, &publisher, 0..plan.idle_events, Pace::Window).await?;
    idle.tally.report(name);
    drop(idle);

    let p = plan;
    let seqs = [p.warmup, p.latency_events, p.loss_events, p.burst_events];
    let mut at = 0;
    let mut next = |n: u64| {
        at += n;
        at - n..at
    };
    let (warmup, latency, loss, burst) =
        (next(seqs[0]), next(seqs[1]), next(seqs[2]), next(seqs[3]));
    eprintln!("  {name}: {} subscribers", p.subscribers);
    let subs = Subscribers::connect(server.addr, "load", p.subscribers, at).await?;
    let publisher = Publisher::new(server.addr, "load")?;
    phase(server, &subs, &publisher, warmup, Pace::Rate(200)).await?;
    eprintln!("  {name}: {} events at 50/s", p.latency_events);
    let latency = phase(server, &subs, &publisher, latency, Pace::Rate(50)).await?;
    eprintln!("  {name}: {} events at 200/s", p.loss_events);
    let loss = phase(server, &subs, &publisher, loss, Pace::Rate(200)).await?;
    eprintln!("  {name}: {} events, max speed", p.burst_events);
    let burst = phase(server, &subs, &publisher, burst, Pace::Window).await?;
    subs.tally.report(name);
    server.check()?;
    Ok(Figures {
        rss_per_idle,
        burst_idle,
        latency,
        loss,
        burst,
    })
}

fn median(runs: &[Figures], metric: impl Fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(metric).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a row of the table must show, from the issue.
#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    /// tower-sse at least this many times the baseline.
    AtLeast(f64),
    /// tower-sse at most this many times the baseline.
    AtMost(f64),
    /// tower-sse exactly zero.
    Zero,
}

/// The markdown table of medians over the runs, with ratios and targets.
fn table(plan: Plan, tower: &[Figures], axum: &[Figures]) -> String {
    type Metric = fn(&Figures) -> f64;
    let (idle, subs, loss) = (plan.idle, plan.subscribers, plan.loss_events);
    let rows: [(String, Metric, Target); 20] = [
        (
            format!("deliveries/s, {idle} subscribers"),
            |f| f.burst_idle.per_sec,
            Target::AtLeast(1.5),
        ),
        (
            format!("deliveries/s, {subs} subscribers"),
            |f| f.burst.per_sec,
            Target::None,
        ),
        (
            format!("latency p50 µs, {subs} subs, 50 ev/s"),
            |f| f.latency.p50_us as f64,
            Target::None,
        ),
        (
            format!("latency p99 µs, {subs} subs, 50 ev/s"),
            |f| f.latency.p99_us as f64,
            Target::AtMost(1.0),
        ),
        (
            format!("latency max µs, {subs} subs, 50 ev/s"),
            |f| f.latency.max_us as f64,
            Target::None,
        ),
        (
            format!("latency p50 µs, {subs} subs, 200 ev/s"),
            |f| f.loss.p50_us as f64,
            Target::None,
        ),
        (
            format!("latency p99 µs, {subs} subs, 200 ev/s"),
            |f| f.loss.p99_us as f64,
            Target::None,
        ),
        (
            format!("latency max µs, {subs} subs, 200 ev/s"),
            |f| f.loss.max_us as f64,
            Target::None,
        ),
        (
            format!("events lost, {subs} subs, {loss} ev at 200/s"),
            |f| f.loss.lost as f64,
            Target::Zero,
        ),
        (
            "events lost, all phases".to_owned(),
            |f| (f.burst_idle.lost + f.latency.lost + f.loss.lost + f.burst.lost) as f64,
            Target::None,
        ),
        (
            format!("RSS bytes per idle subscriber, {idle} open"),
            |f| f.rss_per_idle,
            Target::AtMost(0.7),
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {subs} subs"),
            |f| f.burst.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {subs} subs, 50 ev/s"),
            |f| f.latency.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {subs} subs"),
            |f| f.burst.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {subs} subs, 50 ev/s"),
            |f| f.latency.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server CPU use (cores), {idle} subs, max speed"),
            |f| f.burst_idle.server_util,
            Target::None,
        ),
        (
            format!("load generator CPU ms per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.client_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("load generator CPU use (cores), {idle} subs, max speed"),
            |f| f.burst_idle.client_util,
            Target::None,
        ),
    ];
    let mut out = String::from(
        "| metric (median) | tower-sse | axum `Sse` | ratio | target |\n|---|---:|---:|---:|---|\n",
    );
    for (label, metric, target) in rows {
        let (t, a) = (median(tower, metric), median(axum, metric));
        let ratio = if a > 0.0 {
            format!("{:.2}x", t / a)
        } else {
            "-".to_owned()
        };
        let verdict = |met: bool| if met { "met" } else { "missed" };
        let target = match target {
            Target::None => String::new(),
            Target::AtLeast(x) => format!(">= {x}x: {}", verdict(t >= x * a)),
            Target::AtMost(x) => format!("<= {x}x: {}", verdict(t <= x * a)),
            Target::Zero => format!("0: {}", verdict(t == 0.0)),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {ratio} | {target} |",
            num(t),
            num(a)
        );
    }
    out
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run(args: Args) -> Result<(), BoxError> {
    let plan = if args.quick { Plan::QUICK } else { Plan::FULL };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }) as usize;
    let nofile = raise_nofile()?;
    if nofile < (plan.idle + 100) as libc::rlim_t {
        return Err(format!("open-file limit {nofile} is below {} + 100", plan.idle).into());
    }
    let started = Instant::now();
    let load_before = loadavg();
    let (mut tower, mut axum) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Fresh processes each run, so RSS starts from scratch; alternate who goes first.
        let mut servers = [
            ServerProcess::start(Server::Tower, args.setup).await?,
            ServerProcess::start(Server::Axum, args.setup).await?,
        ];
        if run % 2 == 1 {
            servers.reverse();
        }
        for server in &mut servers {
            eprintln!(
                "run {}/{runs}: {} on {}",
                run + 1,
                server.server.name(),
                server.addr
            );
            let figures = measure(server, plan).await?;
            eprintln!("  {}", figures.summary());
            match server.server {
                Server::Tower => tower.push(figures),
                Server::Axum => axum.push(figures),
            }
        }
    }
    println!(
        "tower-sse hub vs axum `Sse` baseline, {runs} run(s){}, {} s; load average {load_before} \
         before, {} after; {} cores\n",
        args.setup
            .flags()
            .chain(args.quick.then_some("--quick"))
            .fold(String::new(), |all, flag| all + ", " + flag),
        started.elapsed().as_secs(),
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!("{}", table(plan, &tower, &axum));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = runtime()
        .map_err(BoxError::from)
        .and_then(|rt| match args.command {
            Some(Cmd::Serve {
                server,
                port,
                setup,
            }) => {
                raise_nofile().map_err(BoxError::from)?;
                rt.block_on(serve(server, port, setup))
            }
            None => rt.block_on(run(args)),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::FAILURE
        }
    }
}
