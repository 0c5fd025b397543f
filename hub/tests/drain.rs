//! A drain over real sockets: 2,000 open streams, a hyper connection loop, `Broker::drain`
//! with a 3 s window, then a graceful shutdown.
//!
//! Every stream must end cleanly (the chunked body's end, after the events published before
//! its turn and a `retry:` field), and the ends must be spread over the window instead of all
//! at once, and so must the reconnects their `retry:` fields ask for (over the window after
//! the drain): that is the point of a drain, so that the browsers don't all reconnect to the
//! next instance in the same second. A new stream during the drain gets a `503` whose `Retry-After`
//! varies. The only timed assertions are the bounds the drain promises: every stream ended
//! within the window plus [`DRAIN_GRACE`] and a slack, spread over most of the window.
//!
//! The hub as shipped closes an HTTP/1.1 connection once its stream's drained end has come,
//! rather than keep it for a proxy's pool to send a new stream down it (and get the `503`).

#[path = "support/hub_process.rs"]
mod hub_process;
#[path = "../examples/support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use tower_sse_test_support as support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serve::{read_head, start};
use support::guard;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::Instant,
};
use tower_sse::{Broker, Event, SseService, broker::DRAIN_GRACE};
use tower_sse_hub as hub;

const STREAMS: usize = 2_000;
/// Connections opened at once: well under the listener's backlog ([`hub::BACKLOG`]).
const BATCH: usize = 250;
const WINDOW: Duration = Duration::from_secs(3);
/// Beyond the window and its grace, for a busy 2-core machine to get the last ends out and
/// read.
const SLACK: Duration = Duration::from_secs(2);
/// Refused streams opened during the drain.
const REFUSED: usize = 20;

/// Sends a request for a stream (the server closes the connection after the response) and
/// reads the response head; returns the socket, the head (lowercase) and any body bytes read.
async fn request(addr: SocketAddr) -> (TcpStream, String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /events?channel=all HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let (head, bytes) = read_head(&mut socket).await;
    (socket, head, bytes)
}

/// Decodes a chunked body: `Ok(None)` while it is incomplete, `Ok(Some(body))` once it ends
/// with the last chunk and its empty trailer, and nothing after.
fn dechunk(mut bytes: &[u8]) -> Result<Option<String>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&bytes[..line]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size, 16).map_err(|e| format!("size {size:?}: {e}"))?;
        bytes = &bytes[line + 2..];
        if size == 0 {
            return match bytes {
                b"\r\n" => String::from_utf8(body).map(Some).map_err(|e| e.to_string()),
                b"" | b"\r" => Ok(None),
                rest => Err(format!("after the last chunk: {rest:?}")),
            };
        }
        if bytes.len() < size + 2 {
            return Ok(None);
        }
        if &bytes[size..size + 2] != b"\r\n" {
            return Err("a chunk not followed by CRLF".into());
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// One stream's end, as its client saw it.
struct Ended {
    /// When the chunked body's end arrived.
    at: Instant,
    body: String,
}

/// Reads a stream to its chunked end (timed), the body's first bytes in `bytes`.
async fn body_end(socket: &mut TcpStream, mut bytes: Vec<u8>) -> Result<Ended, String> {
    let mut chunk = [0; 4096];
    loop {
        if let Some(body) = dechunk(&bytes)? {
            return Ok(Ended {
                at: Instant::now(),
                body,
            });
        }
        let n = socket.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed before the body's end: {bytes:?}"));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a stream to its chunked end (timed), then to the connection's close, which must
/// follow with nothing more.
async fn read_to_end(mut socket: TcpStream, bytes: Vec<u8>) -> Result<Ended, String> {
    let ended = body_end(&mut socket, bytes).await?;
    let mut chunk = [0; 4096];
    let n = socket.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n != 0 {
        return Err(format!("after the body's end: {:?}", &chunk[..n]));
    }
    Ok(ended)
}

/// Opens [`STREAMS`] streams, [`BATCH`] at a time, checks each head with `check_head`, and
/// reads each to its end in a task of its own.
async fn open_streams(
    addr: SocketAddr,
    check_head: impl Fn(&str),
) -> JoinSet<Result<Ended, String>> {
    let mut reading = JoinSet::new();
    for batch in 0..STREAMS.div_ceil(BATCH) {
        let mut opening = JoinSet::new();
        for _ in batch * BATCH..((batch + 1) * BATCH).min(STREAMS) {
            opening.spawn(request(addr));
        }
        while let Some(opened) = guard("connecting", opening.join_next()).await {
            let (socket, head, bytes) = opened.unwrap();
            check_head(&head);
            reading.spawn(read_to_end(socket, bytes));
        }
    }
    reading
}

/// Sorts `times`; returns the first, the last, how many fall in each 100 ms slot, and the
/// most in one slot.
fn spread(times: &mut [Duration]) -> (Duration, Duration, BTreeMap<u128, usize>, usize) {
    times.sort();
    let mut slots = BTreeMap::new();
    for time in times.iter() {
        *slots.entry(time.as_millis() / 100).or_insert(0) += 1;
    }
    let fullest = slots.values().max().copied().unwrap_or(0);
    (times[0], times[times.len() - 1], slots, fullest)
}

/// Splits a body into its event blocks (each with its `\n\n`).
fn blocks(body: &str) -> Vec<&str> {
    body.split_inclusive("\n\n").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_streams_end_spread_over_the_drain_window() {
    // Two sockets per stream (client and server, one process) and some slack.
    proc::raise_open_files(2 * STREAMS as u64 + 256).unwrap();
    let broker = Broker::builder().id_base(0).build();
    // The default keep-alive (15 s): the drain's end must come first, on the same timer.
    let (addr, stop, server) = start(SseService::new(broker.clone())).await;

    let mut reading = open_streams(addr, |head| {
        assert!(head.starts_with("http/1.1 200 "), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    })
    .await;
    // The subscription exists before the response head: no wait needed, but say so.
    support::wait_until("every stream subscribed", || {
        broker.total_subscribers() == STREAMS
    })
    .await;
    broker
        .publish("all", Event::default().data("before"))
        .await
        .unwrap();

    let start = Instant::now();
    let drained = tokio::spawn(broker.drain(WINDOW));
    assert!(broker.is_draining());
    // Publishes go on: every stream whose turn has not come yet gets this one.
    broker
        .publish("all", Event::default().data("during"))
        .await
        .unwrap();

    // New streams are refused meanwhile, each with its own Retry-After.
    let mut retry_afters = BTreeSet::new();
    for _ in 0..REFUSED {
        let (mut socket, head, mut body) = guard("refused", request(addr)).await;
        assert!(head.starts_with("http/1.1 503 "), "{head}");
        assert!(
            head.contains("content-type: text/plain; charset=utf-8\r\n"),
            "{head}"
        );
        let retry_after = head
            .lines()
            .find_map(|line| line.strip_prefix("retry-after: "))
            .unwrap_or_else(|| panic!("no retry-after: {head}"));
        let secs: u64 = retry_after.trim().parse().unwrap();
        assert!((1..=WINDOW.as_secs()).contains(&secs), "{secs}");
        retry_afters.insert(secs);
        guard("refusal's body", socket.read_to_end(&mut body))
            .await
            .unwrap();
        assert!(body.ends_with(b"broker is draining"), "{body:?}");
    }
    // Three values, 20 draws: all the same but once in 10^9.
    assert!(retry_afters.len() > 1, "{retry_afters:?}");

    let mut ends = Vec::with_capacity(STREAMS);
    // When each client would reconnect, after its end and its `retry:`.
    let mut reconnects = Vec::with_capacity(STREAMS);
    let mut retries = BTreeSet::new();
    let mut got_during = 0;
    while let Some(read) = guard("streams ending", reading.join_next()).await {
        let ended = read
            .unwrap()
            .unwrap_or_else(|err| panic!("a stream: {err}"));
        let blocks = blocks(&ended.body);
        // The event from before the drain, maybe the one from during it, the retry, the end.
        let (last, events) = blocks.split_last().expect("not empty");
        let retry: u64 = last
            .strip_prefix("retry: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no retry: last: {:?}", ended.body));
        retries.insert(retry);
        match events {
            ["data: before\nid: 1\n\n"] => {}
            ["data: before\nid: 1\n\n", "data: during\nid: 2\n\n"] => got_during += 1,
            _ => panic!("events: {:?}", ended.body),
        }
        let end = ended.at.duration_since(start);
        ends.push(end);
        reconnects.push(end + Duration::from_millis(retry));
    }
    assert_eq!(ends.len(), STREAMS);
    guard("drain", drained).await.unwrap();
    let drained_at = start.elapsed();
    assert!(broker.is_closed());
    assert_eq!(broker.total_subscribers(), 0);
    stop.send(()).unwrap();
    let errors = guard("server exit", server).await.unwrap();
    assert_eq!(errors, 0, "connections ended with an error");
    let exited_at = start.elapsed();

    let (first, last, slots, fullest) = spread(&mut ends);
    let (soonest, latest, reconnect_slots, busiest) = spread(&mut reconnects);
    eprintln!(
        "{STREAMS} streams, window {WINDOW:?}: ends from {first:?} to {last:?} in {} distinct \
         100 ms slots (fullest {fullest}); reconnects from {soonest:?} to {latest:?} in {} \
         slots (fullest {busiest}), {} distinct retry values; {got_during} got the event \
         published during the drain; drain over at {drained_at:?}, server out at {exited_at:?}",
        slots.len(),
        reconnect_slots.len(),
        retries.len(),
    );
    // Not all at once: 30 slots of 100 ms in the window, about 67 streams each.
    assert!(slots.len() >= 20, "{slots:?}");
    assert!(fullest < STREAMS / 4, "{slots:?}");
    // Over most of the window, and all within it plus the grace and a slack.
    assert!(first < WINDOW / 3, "{first:?}");
    assert!(last > WINDOW * 2 / 3, "{last:?}");
    assert!(last < WINDOW + DRAIN_GRACE + SLACK, "{last:?}");
    assert!(exited_at < WINDOW + DRAIN_GRACE + SLACK, "{exited_at:?}");
    // The reconnects spread too, over the window after the drain and its grace: never into
    // the drain's 503s (fatal to an `EventSource`).
    assert!(soonest >= WINDOW + DRAIN_GRACE, "{soonest:?}");
    assert!(latest < 2 * WINDOW + DRAIN_GRACE + SLACK, "{latest:?}");
    assert!(reconnect_slots.len() >= 20, "{reconnect_slots:?}");
    assert!(busiest < STREAMS / 4, "{reconnect_slots:?}");
    assert!(retries.len() > 500, "{}", retries.len());
    // All but the streams whose turn came in the moment before that publish.
    assert!(got_during > STREAMS / 2, "{got_during}");
}

/// The hub as shipped: a SIGTERM with 2,000 open streams ends them spread over `--drain-secs`
/// (each after a `retry:`), not all in one 100 ms slot, and the process exits within the
/// window plus [`DRAIN_GRACE`] and the hub's [`hub::EXIT_GRACE`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_hub_ends_two_thousand_streams_spread_over_its_drain() {
    // Inherited by the hub: a socket per stream there, and here.
    proc::raise_open_files(2 * STREAMS as u64 + 256).unwrap();
    let secs = WINDOW.as_secs().to_string();
    let mut hub = hub_process::HubProcess::start(&["--drain-secs", &secs]).await;
    let addr = hub.addr();
    let mut reading = open_streams(addr, |head| {
        assert!(head.starts_with("http/1.1 200 "), "{head}");
    })
    .await;
    guard("every stream subscribed", async {
        while hub.metric("sse_subscribers").await < STREAMS as f64 {
            hub_process::pause().await;
        }
    })
    .await;

    let start = Instant::now();
    hub.signal(libc::SIGTERM);
    let mut ends = Vec::with_capacity(STREAMS);
    while let Some(read) = guard("streams ending", reading.join_next()).await {
        let ended = read
            .unwrap()
            .unwrap_or_else(|err| panic!("a stream: {err}"));
        let last = blocks(&ended.body).pop().unwrap_or_default();
        assert!(last.starts_with("retry: "), "no retry: {:?}", ended.body);
        ends.push(ended.at - start);
    }
    let status = guard("the hub exits", hub.wait()).await;
    let exited = start.elapsed();
    assert!(status.success(), "{status}");
    let (first, last, slots, fullest) = spread(&mut ends);
    eprintln!(
        "SIGTERM, {STREAMS} streams, --drain-secs {secs}: ends {first:?}..{last:?} over {} \
         100 ms slots (fullest {fullest}); exited after {exited:?}",
        slots.len()
    );
    assert!(
        fullest < STREAMS / 4,
        "{fullest} streams ended in one 100 ms slot"
    );
    assert!(slots.len() >= 10, "ends in {} slots only", slots.len());
    let bound = WINDOW + DRAIN_GRACE + hub::EXIT_GRACE + SLACK;
    assert!(exited < bound, "exited after {exited:?}, past {bound:?}");
}

/// Streams on keep-alive connections in [`a_drained_stream_closes_its_keep_alive_connection`].
const KEPT: usize = 8;

/// `request` on a new connection: the whole answer, to the connection's close.
async fn once(addr: SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    guard("the answer and the close", socket.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The hub as shipped, its streams on HTTP/1.1 keep-alive connections (as a proxy keeps its
/// upstream connections in a pool): once a stream's drained end has come, the hub closes its
/// connection, while the other streams still run, so that nothing can send a new stream down
/// it and get the drain's `503` (which ends an `EventSource` for good). A second request sent
/// on it anyway gets no answer: the connection is closed. A new connection meanwhile is
/// served its request (a new stream gets the `503`), then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_stream_closes_its_keep_alive_connection() {
    let hub = hub_process::HubProcess::start(&["--drain-secs", "3"]).await;
    let addr = hub.addr();
    let request = format!("GET /events?channel=kept HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut opened = Vec::new();
    for _ in 0..KEPT {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let (head, bytes) = guard("a stream's head", read_head(&mut socket)).await;
        assert!(head.starts_with("http/1.1 200 "), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        opened.push((socket, bytes));
    }
    guard("every stream subscribed", async {
        while hub.metric("sse_subscribers").await < KEPT as f64 {
            hub_process::pause().await;
        }
    })
    .await;

    hub.signal(libc::SIGTERM);
    // How many streams have come to their end.
    let ended = Arc::new(AtomicUsize::new(0));
    let mut reading = JoinSet::new();
    for (mut socket, bytes) in opened {
        let (ended, request) = (ended.clone(), request.clone());
        reading.spawn(async move {
            let end = body_end(&mut socket, bytes).await;
            let order = ended.fetch_add(1, Ordering::SeqCst);
            // What a pool would do with a connection it holds: send the next request.
            let _ = socket.write_all(request.as_bytes()).await;
            let mut reply = [0; 1024];
            let reply = socket
                .read(&mut reply)
                .await
                .map(|n| String::from_utf8_lossy(&reply[..n]).into_owned());
            // The streams still running once this connection answered (or closed).
            let running = KEPT - ended.load(Ordering::SeqCst);
            (order, end, reply, running)
        });
    }
    // Once the drain has started, a new connection is answered, then closed.
    let ready = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    guard("the drain's start", async {
        while !once(addr, &ready).await.starts_with("HTTP/1.1 503 ") {
            hub_process::pause().await;
        }
    })
    .await;
    for _ in 0..REFUSED {
        let answer = once(addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer:?}");
        assert!(answer.ends_with("broker is draining"), "{answer:?}");
    }
    while let Some(read) = guard("streams ending", reading.join_next()).await {
        let (order, end, reply, running) = read.unwrap();
        let ended = end.unwrap_or_else(|err| panic!("stream {order}: {err}"));
        let last = blocks(&ended.body).pop().unwrap_or_default();
        assert!(last.starts_with("retry: "), "no retry: {:?}", ended.body);
        match reply {
            Ok(reply) => assert!(
                reply.is_empty(),
                "stream {order}: the next request on its connection was answered: {reply:?}"
            ),
            Err(err) => assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "stream {order}: {err}"
            ),
        }
        // Closed at once, not once the drain is over: the other streams' moments are spread
        // over the window, so all coming in the same instant is out of the question.
        if order == 0 {
            assert!(
                running > 0,
                "the first stream's connection was held open until every stream had ended"
            );
        }
    }
}
