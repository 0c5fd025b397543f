//! Run with: cargo run --release --example churn -- --cycles 10000
//!
//! Connect/disconnect churn against an [`SseService`] in the same process, over real sockets
//! on 127.0.0.1: every cycle opens a stream on one of a few channels and goes away, half of
//! them after the response head, half right after sending the request. At the end nothing
//! may be left: no subscriber, no channel entry, no task but the accept loop. Prints the
//! process RSS (at start, after each half of the cycles, peak, end) and those counts; exits
//! nonzero if a count is not zero. A leak shows as RSS growing over the second half.

use std::{
    error::Error,
    io,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinSet,
};
use tower::ServiceExt;
use tower_sse::{Broker, SseService};

/// Connect/disconnect churn against an in-process SSE service.
#[derive(Debug, Parser)]
pub struct Args {
    /// Connect/disconnect cycles.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: usize,
    /// Clients connected at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
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

/// `cycles` cycles by `concurrency` clients at once, on eight channels (every fourth cycle
/// on two); each cycle bounded by a 10 s guard.
pub async fn churn(addr: SocketAddr, cycles: usize, concurrency: usize) -> io::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients: JoinSet<io::Result<()>> = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles {
                    return Ok(());
                }
                let channel = match i % 4 {
                    0 => format!("churn{},churn-all", i % 8),
                    _ => format!("churn{}", i % 8),
                };
                let cycle = cycle(addr, &channel, i % 2 == 0);
                tokio::time::timeout(Duration::from_secs(10), cycle).await??;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    Ok(())
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`: the peak); 0 where there is none.
pub fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    let kb = value.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kb.unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args = Args::parse();
    println!("rss at start: {} kB", status_kb("VmRSS"));
    let broker = Broker::new();
    // `TcpListener::bind` listens with a backlog of 128; leave room for bursts of connects.
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    tokio::spawn(serve(listener, app(broker.clone())));
    let started = Instant::now();
    // In two halves: the allocator keeps what the first half freed for reuse, so RSS after the
    // first half is the plateau; a leak would show as growth over the second half.
    let half = args.cycles / 2;
    for (round, cycles) in [half, args.cycles - half].into_iter().enumerate() {
        let churned = churn(addr, cycles, args.concurrency);
        tokio::time::timeout(Duration::from_secs(600), churned).await??;
        println!("rss after half {}: {} kB", round + 1, status_kb("VmRSS"));
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
    println!("rss at peak: {} kB", status_kb("VmHWM"));
    println!("rss at end: {} kB", status_kb("VmRSS"));
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
