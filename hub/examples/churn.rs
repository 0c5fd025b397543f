//! Run with: cargo run --release --example churn -- --cycles 10000
//! or, against the hub as shipped: cargo build --release -p tower-sse-hub --bin tower-sse-hub &&
//! cargo run --release -p tower-sse-hub --example churn -- --random-names [--names 25000,100000]
//!
//! Connect/disconnect churn over real sockets on 127.0.0.1.
//!
//! By default against an [`SseService`] in the same process: every cycle opens a stream on one
//! of a few channels and goes away, half of them after the response head, half right after
//! sending the request. At the end nothing may be left: no subscriber, no channel entry, no
//! task but the accept loop. Prints the process RSS (at start, after each half of the cycles,
//! peak, end) and those counts; exits nonzero if a count is not zero. A leak shows as RSS
//! growing over the second half.
//!
//! With `--random-names`, against the hub as shipped (its binary in a child process, default
//! flags but `--bind`): every cycle subscribes to a fresh random channel name, reads the
//! response head and goes away. After each count of `--names`, once the hub counts no
//! subscriber, prints the hub's RSS, its `sse_channels` gauge and how many series of its
//! `GET /metrics` have a `channel` label: what names nobody uses again leave behind.

#[path = "support/child.rs"]
mod child;
#[path = "support/proc.rs"]
mod proc;

use std::{
    error::Error,
    hash::{BuildHasher, RandomState},
    io,
    net::SocketAddr,
    ops::Range,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::timeout,
};
use tower::ServiceExt;
use tower_sse::{Broker, SseService, metrics};

type BoxError = Box<dyn Error + Send + Sync>;

/// Hang guard of one stage of cycles.
const STAGE: Duration = Duration::from_secs(600);

/// Connect/disconnect churn against an in-process SSE service, or the hub.
#[derive(Debug, Parser)]
pub struct Args {
    /// Connect/disconnect cycles (in process).
    #[arg(long, default_value_t = 10_000)]
    pub cycles: usize,
    /// Clients connected at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Churn fresh random channel names against the hub's binary instead.
    #[arg(long)]
    pub random_names: bool,
    /// With --random-names: the counts of names after which to report.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_values_t = [25_000, 100_000])]
    pub names: Vec<usize>,
}

/// The service under churn: the defaults, no keep-alive (nothing is published either, so a
/// stream that stays open is a leak, not traffic).
pub fn app(broker: Broker) -> SseService {
    SseService::new(broker).keep_alive(None)
}

/// Serves `service` on `listener`, one task per connection, forever.
pub async fn serve(listener: TcpListener, service: SseService) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // E.g. too many open files: let some close.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let sse = service.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| sse.clone().oneshot(req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A client that leaves mid-stream is the point here, not an error.
            let _ = conn.await;
        });
    }
}

/// One cycle: connect, ask for a stream, go away (after the head if `read_head`).
pub async fn cycle(addr: SocketAddr, channel: &str, read_head: bool) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /events?channel={channel} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    if !read_head {
        return Ok(());
    }
    // Nothing is published, so the head is all the server sends.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0; 1024];
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200 ") {
        let head = String::from_utf8_lossy(&head);
        return Err(io::Error::other(format!("not a stream: {head}")));
    }
    Ok(())
}

/// What cycle `i` asks for: its channel list, and whether it reads the head before leaving.
type Plan = Arc<dyn Fn(usize) -> (String, bool) + Send + Sync>;

/// Cycles `range` by `concurrency` clients at once, each bounded by a 10 s guard.
async fn cycles(
    addr: SocketAddr,
    range: Range<usize>,
    concurrency: usize,
    plan: Plan,
) -> io::Result<()> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut clients: JoinSet<io::Result<()>> = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, plan) = (next.clone(), plan.clone());
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= range.end {
                    return Ok(());
                }
                let (channel, read_head) = plan(i);
                let cycle = cycle(addr, &channel, read_head);
                tokio::time::timeout(Duration::from_secs(10), cycle).await??;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    Ok(())
}

/// `cycles` cycles on eight channels (every fourth cycle on two), every other one leaving
/// before the head.
pub async fn churn(addr: SocketAddr, cycles: usize, concurrency: usize) -> io::Result<()> {
    let plan = |i: usize| match i % 4 {
        0 => (format!("churn{},churn-all", i % 8), i % 2 == 0),
        _ => (format!("churn{}", i % 8), i % 2 == 0),
    };
    self::cycles(addr, 0..cycles, concurrency, Arc::new(plan)).await
}

async fn in_process(args: &Args) -> Result<ExitCode, BoxError> {
    let rss = |field| proc::status_kib(std::process::id(), field);
    println!("rss at start: {} kB", rss("VmRSS")?);
    let broker = Broker::new();
    let listener = tower_sse_hub::listen("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    tokio::spawn(serve(listener, app(broker.clone())));
    let started = Instant::now();
    // In two halves: the allocator keeps what the first half freed for reuse, so RSS after the
    // first half is the plateau; a leak would show as growth over the second half.
    let half = args.cycles / 2;
    for (round, cycles) in [half, args.cycles - half].into_iter().enumerate() {
        timeout(STAGE, churn(addr, cycles, args.concurrency)).await??;
        println!("rss after half {}: {} kB", round + 1, rss("VmRSS")?);
    }
    println!("{} cycles in {:?}", args.cycles, started.elapsed());
    // The server notices the last clients leave on its own: sample until it has, for 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = || {
        broker.total_subscribers() == 0
            && broker.channel_count() == 0
            && metrics.num_alive_tasks() == tasks_before + 1
    };
    while !settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("rss at peak: {} kB", rss("VmHWM")?);
    println!("rss at end: {} kB", rss("VmRSS")?);
    let (subscribers, channels) = (broker.total_subscribers(), broker.channel_count());
    let tasks = metrics.num_alive_tasks().saturating_sub(tasks_before);
    println!("subscribers: {subscribers}, channels: {channels}");
    println!("alive tasks: {tasks} (the accept loop: 1)");
    let clean = subscribers == 0 && channels == 0 && tasks == 1;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The value of an unlabelled series in a Prometheus scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    let line = scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '));
    line.and_then(|value| value.trim().parse().ok())
}

/// `GET /metrics` once the hub counts no subscriber (it notices a client leave on its own),
/// sampled for at most 10 s.
async fn scrape_settled(client: &reqwest::Client, addr: SocketAddr) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = client.get(format!("http://{addr}/metrics")).send().await?;
        let scrape = res.error_for_status()?.text().await?;
        if sample(&scrape, metrics::SUBSCRIBERS) == Some(0.0) || Instant::now() > deadline {
            return Ok(scrape);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn random_names(args: &Args) -> Result<ExitCode, BoxError> {
    let mut hub = child::ChildServer::hub().await?;
    let rss = |pid| proc::status_kib(pid, "VmRSS");
    println!(
        "hub at {} (pid {}), rss at start: {} kB",
        hub.addr,
        hub.pid,
        rss(hub.pid)?
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    // Names no one can guess or repeat: a per-run random key hashing the cycle's number.
    let key = RandomState::new();
    let plan: Plan = Arc::new(move |i| (format!("churn-{:016x}", key.hash_one(i)), true));
    let (started, mut done) = (Instant::now(), 0);
    let mut counts = args.names.clone();
    counts.sort_unstable();
    for count in counts {
        timeout(
            STAGE,
            cycles(hub.addr, done..count, args.concurrency, plan.clone()),
        )
        .await??;
        done = count;
        let scrape = scrape_settled(&client, hub.addr).await?;
        let series = scrape
            .lines()
            .filter(|line| line.contains("channel=\""))
            .count();
        let channels = sample(&scrape, metrics::CHANNELS).unwrap_or(f64::NAN);
        let subscribers = sample(&scrape, metrics::SUBSCRIBERS).unwrap_or(f64::NAN);
        println!(
            "after {count} names ({:.0?}): hub rss {} kB, {channels} channels, {subscribers} \
             subscribers, {series} `channel` series in /metrics",
            started.elapsed(),
            rss(hub.pid)?,
        );
    }
    hub.check()?;
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let args = Args::parse();
    if args.random_names {
        random_names(&args).await
    } else {
        in_process(&args).await
    }
}
