//! Hostile input over real sockets, subscriber limits, slow consumers and connection churn.
//!
//! An SSE endpoint is a long-lived socket anyone can open, so every attack here gets a `4xx`
//! with a `text/plain` reason (or, past hyper's own header limit, a `4xx` from hyper or a closed
//! connection), no handler panics, and the server then still serves a normal stream. The
//! attacks run against [`SseService`] in a plain hyper connection loop and against the hub
//! (`tower_sse_hub`, where an `AccessLayer` reads the channels first). Clients are raw
//! `TcpStream`s (to send exactly the bytes meant) or reqwest.
#[path = "../examples/churn.rs"]
#[allow(dead_code)]
mod churn;
use tower_sse_test_support as support;

use std::{
    convert::Infallible,
    error::Error as StdError,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use support::{guard, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::{Service, ServiceExt};
use tower_sse::{Broker, Event, EventError, LagPolicy, PublishError, Resume};
use tower_sse_hub as hub;

/// A server on a free port, counting the connections whose handling panicked.
struct Server {
    addr: SocketAddr,
    broker: Broker,
    panics: Arc<AtomicUsize>,
    /// For [`Server::assert_serves`]: a fresh channel each time.
    checks: AtomicUsize,
}

impl Server {
    /// [`SseService`] alone, as `churn` serves it.
    async fn sse(broker: Broker) -> Server {
        Server::start(broker.clone(), churn::app(broker)).await
    }

    /// The hub's router (with a token, so its `AccessLayer` checks `private.*`).
    async fn hub(broker: Broker) -> Server {
        let app = hub::app(broker.clone(), Some("s3cret".into()), None);
        Server::start(broker, app).await
    }

    async fn start<S, B>(broker: Broker, service: S) -> Server
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
        S: Clone + Send + 'static,
        S::Future: Send,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let panics = Arc::new(AtomicUsize::new(0));
        let counter = panics.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (service, counter) = (service.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| service.clone().oneshot(req));
                    let conn =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    if AssertUnwindSafe(conn).catch_unwind().await.is_err() {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Server {
            addr,
            broker,
            panics,
            checks: AtomicUsize::new(0),
        }
    }

    fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.addr)
    }

    /// Nothing panicked, and a new stream still gets a published event.
    async fn assert_serves(&self, after: &str) {
        assert_eq!(
            self.panics.load(Ordering::SeqCst),
            0,
            "a panic, after {after}"
        );
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let channel = format!("check{n}");
        let mut stream = Stream::open(self.addr, &format!("/events?channel={channel}"), "").await;
        let event = Event::default().data("still serving");
        let id = self.broker.publish(&channel, event).await.unwrap();
        let expected = format!("data: still serving\nid: {id}\n\n");
        stream.read_until(&expected).await;
    }
}

/// A raw HTTP/1.1 exchange: `None` if the server closed (or reset) the connection without
/// a complete response head.
async fn raw(addr: SocketAddr, target: &str, headers: &[u8]) -> Option<Reply> {
    guard("raw request", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
        request.extend_from_slice(headers);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        // The server may answer and close before it has read everything: then writing fails
        // and the answer, if any, is still there to read.
        let _ = stream.write_all(&request).await;
        let mut buf = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            if let Some(reply) = Reply::parse(&buf) {
                return Some(reply);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// The head, lowercased.
    head: String,
    /// The body of a response with `content-length`; empty for a stream.
    body: String,
}

impl Reply {
    /// A complete reply in `buf`: the head, and the body if it has a length.
    fn parse(buf: &[u8]) -> Option<Reply> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let status = head.get(9..12)?.parse().ok()?;
        let length = head.lines().find_map(|line| {
            let value = line.strip_prefix("content-length:")?;
            value.trim().parse::<usize>().ok()
        });
        let body = &buf[end..];
        let body = match length {
            Some(length) if body.len() < length => return None,
            Some(length) => String::from_utf8_lossy(&body[..length]).into_owned(),
            None => String::new(),
        };
        Some(Reply { status, head, body })
    }

    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}:");
        self.head
            .lines()
            .find_map(|line| Some(line.strip_prefix(&prefix)?.trim()))
    }
}

/// An open event stream over a raw socket (the server's chunked encoding left in: the
/// checks look for whole events, which these tests keep under one chunk).
struct Stream {
    socket: TcpStream,
    seen: Vec<u8>,
}

impl Stream {
    /// Opens `target` with extra header lines `headers` and checks the head of a stream.
    async fn open(addr: SocketAddr, target: &str, headers: &str) -> Stream {
        let mut socket = guard("connect", TcpStream::connect(addr)).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut stream = Stream {
            socket,
            seen: Vec::new(),
        };
        stream.read_until("\r\n\r\n").await;
        let head = String::from_utf8_lossy(&stream.seen).to_lowercase();
        assert!(head.starts_with("http/1.1 200 "), "{target}: {head}");
        assert!(
            head.contains("content-type: text/event-stream\r\n"),
            "{head}"
        );
        stream
    }

    async fn read_until(&mut self, text: &str) {
        let what = format!("waiting for {text:?}");
        guard(&what, async {
            while !self.seen.windows(text.len()).any(|w| w == text.as_bytes()) {
                let mut chunk = [0; 4096];
                let n = self.socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "{what}: connection closed");
                self.seen.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
    }
}

/// What an attack must get.
#[derive(Debug)]
enum Expect {
    /// This status, `text/plain`, and a body saying this.
    Refused(u16, String),
    /// Past hyper's limits: hyper's own `4xx`, or the connection closed.
    Rejected,
    /// Not an attack after all: a stream.
    Stream,
}

fn refused(status: u16, reason: &str) -> Expect {
    Expect::Refused(status, reason.to_owned())
}

const INVALID_ENCODING: &str = "invalid percent-encoding or UTF-8 in query";
const INVALID_CHAR: &str = "channel name contains a control character, whitespace or comma";
const EMPTY: &str = "empty channel name";
const TOO_LONG: &str = "channel name longer than 256 bytes";
const TOO_MANY: &str = "more than 32 channels";

/// Every attack: a name, the request target, extra header lines, the answer it must get.
fn attacks() -> Vec<(String, String, Vec<u8>, Expect)> {
    let mut attacks = Vec::new();
    let mut query = |what: &str, query: String, expect: Expect| {
        let target = format!("/events?{query}");
        attacks.push((what.to_owned(), target, Vec::new(), expect));
    };
    // Names in hex, so that 5,000 of them fit in a URI (the `http` crate takes 65,534 bytes).
    let distinct = |sep: &str| {
        (0..5_000)
            .map(|i| format!("{i:x}"))
            .collect::<Vec<_>>()
            .join(sep)
    };
    let many = distinct("&channel=");
    query(
        "5,000 channel parameters",
        format!("channel={many}"),
        refused(400, TOO_MANY),
    );
    let many = distinct(",");
    query(
        "5,000 names in one parameter",
        format!("channel={many}"),
        refused(400, TOO_MANY),
    );
    let same = "channel=a&".repeat(5_000);
    query("5,000 times the same name", same, Expect::Stream);
    let huge = "a".repeat(60 * 1024);
    query(
        "a 60 KiB name",
        format!("channel={huge}"),
        refused(400, TOO_LONG),
    );
    let query_60k = format!("x={huge}&channel=%zz");
    query("a 60 KiB query", query_60k, refused(400, INVALID_ENCODING));
    // Past the URI limit (hyper: 414) and past hyper's header buffer (431).
    let query_64k = "a".repeat(64 * 1024);
    query(
        "a 64 KiB query",
        format!("channel={query_64k}"),
        Expect::Rejected,
    );
    let past_hyper = "a".repeat(512 * 1024);
    query(
        "a 512 KiB query",
        format!("channel={past_hyper}"),
        Expect::Rejected,
    );
    for bad in ["%zz", "%e2%82", "%ff", "a%", "%2", "%C3%28"] {
        let what = format!("invalid encoding {bad}");
        query(
            &what,
            format!("channel={bad}"),
            refused(400, INVALID_ENCODING),
        );
    }
    for bad in [
        "%00",
        "a%0Ab",
        "%0D",
        "%09",
        "%1B",
        "%7F",
        "%20a",
        "a+b",
        "+",
        "%C2%A0",
        "%E2%80%A8",
    ] {
        let what = format!("control character or space {bad}");
        query(&what, format!("channel={bad}"), refused(400, INVALID_CHAR));
    }
    for bad in [
        "channel=",
        "channel",
        "channel=a,,b",
        "channel=,",
        "channel=a%2C",
    ] {
        query(
            &format!("empty name {bad}"),
            bad.to_owned(),
            refused(400, EMPTY),
        );
    }
    query(
        "257 bytes",
        format!("channel={}", "a".repeat(257)),
        refused(400, TOO_LONG),
    );
    query(
        "256 bytes",
        format!("channel={}", "a".repeat(256)),
        Expect::Stream,
    );
    let e_acute = "%C3%A9".repeat(128);
    query(
        "256 bytes in 2-byte characters",
        format!("channel={e_acute}"),
        Expect::Stream,
    );
    query(
        "257 bytes in 2-byte characters",
        format!("channel={e_acute}a"),
        refused(400, TOO_LONG),
    );
    let id_1025 = "a".repeat(1025);
    let too_long = "lastEventId longer than 1024 bytes";
    query(
        "lastEventId of 1025 bytes",
        format!("lastEventId={id_1025}"),
        refused(400, too_long),
    );
    let id_1025 = "%41".repeat(1025);
    query(
        "lastEventId of 1025 escaped bytes",
        format!("lastEventId={id_1025}"),
        refused(400, too_long),
    );
    query(
        "lastEventId of 1024 bytes",
        format!("lastEventId={}", "a".repeat(1024)),
        Expect::Stream,
    );
    query(
        "lastEventId %ff",
        "lastEventId=%ff".to_owned(),
        refused(400, INVALID_ENCODING),
    );
    let mut header = |what: &str, name: &str, value: &[u8], expect: Expect| {
        let mut line = format!("{name}: ").into_bytes();
        line.extend_from_slice(value);
        line.extend_from_slice(b"\r\n");
        attacks.push((what.to_owned(), "/events".to_owned(), line, expect));
    };
    let mib = vec![b'1'; 1024 * 1024];
    header(
        "Last-Event-ID of 1 MiB",
        "Last-Event-ID",
        &mib,
        Expect::Rejected,
    );
    let too_long = "Last-Event-ID longer than 1024 bytes";
    header(
        "Last-Event-ID of 1025 bytes",
        "Last-Event-ID",
        &mib[..1025],
        refused(400, too_long),
    );
    header(
        "Last-Event-ID of 1024 bytes",
        "Last-Event-ID",
        &mib[..1024],
        Expect::Stream,
    );
    // UTF-8 is what browsers send (an id the broker sent comes back); other bytes are not.
    let not_ascii = "Last-Event-ID is not UTF-8";
    header(
        "Last-Event-ID of bytes that are not UTF-8",
        "Last-Event-ID",
        b"\xff\xfe",
        refused(400, not_ascii),
    );
    header("a 1 MiB header", "X-Junk", &mib, Expect::Rejected);
    attacks
}

async fn run_attacks(server: &Server) {
    for (what, target, headers, expect) in attacks() {
        let reply = raw(server.addr, &target, &headers).await;
        match (&expect, &reply) {
            (Expect::Refused(status, reason), Some(reply)) => {
                assert_eq!(reply.status, *status, "{what}: {reply:?}");
                let content_type = reply.header("content-type");
                assert_eq!(content_type, Some("text/plain; charset=utf-8"), "{what}");
                assert_eq!(reply.body, *reason, "{what}");
            }
            (Expect::Rejected, None) => {}
            (Expect::Rejected, Some(reply)) => {
                assert!((400..500).contains(&reply.status), "{what}: {reply:?}");
            }
            (Expect::Stream, Some(reply)) => {
                assert_eq!(reply.status, 200, "{what}: {reply:?}");
                let content_type = reply.header("content-type");
                assert_eq!(content_type, Some("text/event-stream"), "{what}");
            }
            _ => panic!("{what}: expected {expect:?}, got {reply:?}"),
        }
        server.assert_serves(&what).await;
    }
    // The refused requests subscribed nothing, the accepted ones are gone with their client.
    let broker = &server.broker;
    wait_until("streams gone", || broker.total_subscribers() == 0).await;
}

#[tokio::test]
async fn attacks_on_sse_service_are_refused_with_a_reason() {
    let server = Server::sse(Broker::builder().id_base(0).build()).await;
    run_attacks(&server).await;
}

#[tokio::test]
async fn attacks_on_the_hub_are_refused_with_a_reason() {
    let server = Server::hub(Broker::builder().id_base(0).history(100).build()).await;
    run_attacks(&server).await;
}

#[tokio::test]
async fn five_thousand_repeats_of_a_name_are_one_channel() {
    let server = Server::sse(Broker::builder().id_base(0).build()).await;
    let query = "channel=a&".repeat(5_000);
    let _stream = Stream::open(server.addr, &format!("/events?{query}"), "").await;
    assert_eq!(server.broker.subscriber_count("a"), 1);
    assert_eq!(server.broker.channel_count(), 1);
}

/// Event types and ids with CR, LF or NUL are a typed `Err` from the Rust API, and nothing is
/// sent: the subscriber's first bytes are the next valid event, with the first id.
#[tokio::test]
async fn invalid_events_are_errors_and_publish_nothing() {
    let server = Server::sse(Broker::builder().id_base(0).build()).await;
    let broker = &server.broker;
    let mut stream = Stream::open(server.addr, "/events?channel=clean", "").await;
    let head_len = stream.seen.len();
    let bad_types = ["a\nb", "a\r", "\r\n", "\n", "x\r\ndata: injected"];
    for bad in bad_types {
        let err = broker.publish("clean", Event::default().event(bad)).await;
        assert!(
            matches!(err, Err(PublishError::Event(EventError::EventType))),
            "{bad:?}: {err:?}"
        );
    }
    for bad in ["a\nb", "a\r", "\r\n", "a\0b", "\0", "1\nid: 2"] {
        let err = broker.publish("clean", Event::default().id(bad)).await;
        assert!(
            matches!(err, Err(PublishError::Event(EventError::Id))),
            "{bad:?}: {err:?}"
        );
    }
    for bad in ["", "a b", "a\nb", "a,b"] {
        let err = broker.publish(bad, Event::default()).await;
        assert!(
            matches!(err, Err(PublishError::Channel(_))),
            "{bad:?}: {err:?}"
        );
    }
    let id = broker
        .publish("clean", Event::default().data("ok"))
        .await
        .unwrap();
    assert_eq!(id, "1");
    stream.read_until("data: ok\nid: 1\n\n").await;
    // The first body bytes: one chunk, that event.
    let body = String::from_utf8_lossy(&stream.seen[head_len..]).into_owned();
    assert_eq!(body, "10\r\ndata: ok\nid: 1\n\n\r\n");
}

async fn get(client: &reqwest::Client, url: String) -> reqwest::Response {
    guard("response", client.get(url).send()).await.unwrap()
}

/// Over both servers: per channel and total limits are `503` with `Retry-After` and the
/// reason, and a slot frees when a subscriber leaves.
#[tokio::test]
async fn subscriber_limits_are_503_with_retry_after() {
    let limits = || {
        Broker::builder()
            .id_base(0)
            .max_subscribers(5)
            .max_subscribers_per_channel(3)
    };
    for server in [
        Server::sse(limits().build()).await,
        Server::hub(limits().build()).await,
    ] {
        let client = support::client();
        let mut open = Vec::new();
        let cases = [
            ("a", "a", "too many subscribers on channel a (limit 3)"),
            ("b", "c", "too many subscribers (limit 5)"),
            ("b", "c,a", "too many subscribers (limit 5)"),
        ];
        for (fill, channel, reason) in cases {
            // Fill `fill` up to its limit, or the broker up to its own.
            while open.len() < 5 && server.broker.subscriber_count(fill) < 3 {
                let res = get(&client, server.url(&format!("/events?channel={fill}"))).await;
                assert_eq!(res.status(), 200);
                open.push(res);
            }
            let res = get(&client, server.url(&format!("/events?channel={channel}"))).await;
            assert_eq!(res.status(), 503, "{channel}");
            let retry_after = res.headers()["retry-after"].to_str().unwrap();
            assert!(retry_after.parse::<u32>().is_ok(), "{retry_after}");
            let content_type = &res.headers()["content-type"];
            assert_eq!(content_type, "text/plain; charset=utf-8");
            assert_eq!(guard("body", res.text()).await.unwrap(), reason);
        }
        assert_eq!(server.broker.total_subscribers(), 5);
        assert_eq!(server.broker.channel_count(), 2);
        // One of `a` leaves: the server notices, and the slot is free again.
        drop(open.remove(0));
        wait_until("a slot freed", || server.broker.total_subscribers() == 4).await;
        let res = get(&client, server.url("/events?channel=a")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(server.broker.subscriber_count("a"), 3);
        let res = get(&client, server.url("/events?channel=a")).await;
        assert_eq!(res.status(), 503);
        assert_eq!(server.panics.load(Ordering::SeqCst), 0);
    }
}

/// Events big enough that `EVENTS` of them can't all wait in socket and server buffers
/// (a few MiB on loopback): a client that never reads must fall behind the broker's buffer.
const EVENT_SIZE: usize = 128 * 1024;
const EVENTS: u64 = 256;
const BUFFER: u64 = 4;

fn big_event() -> Event {
    Event::default().data("x".repeat(EVENT_SIZE))
}

fn encoded(id: u64) -> String {
    format!("data: {}\nid: {id}\n\n", "x".repeat(EVENT_SIZE))
}

/// The blocks of a stream body: `Ok(id)` for each event, `Err(n)` for `: lagged by n events`.
fn blocks(body: &str) -> Vec<Result<u64, u64>> {
    let mut blocks = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.find("\n\n") {
        let block = &rest[..end];
        rest = &rest[end + 2..];
        if let Some(n) = block.strip_prefix(": lagged by ") {
            let n = n.strip_suffix(" events").expect("lagged comment");
            blocks.push(Err(n.parse().unwrap()));
            continue;
        }
        let (data, id) = block.rsplit_once("\nid: ").expect("an event with an id");
        assert_eq!(data.len(), "data: ".len() + EVENT_SIZE, "event {id}");
        blocks.push(Ok(id.parse().unwrap()));
    }
    assert_eq!(rest, "", "the body ends with a whole block");
    blocks
}

/// A reader that keeps up, and one that never reads, on one channel with a buffer of
/// `BUFFER`. Returns both responses, the slow one not read at all yet.
async fn slow_consumer(policy: LagPolicy) -> (Server, reqwest::Response, reqwest::Response) {
    let broker = Broker::builder()
        .id_base(0)
        .buffer(BUFFER as usize)
        .lag_policy(policy)
        .build();
    let server = Server::sse(broker).await;
    let client = support::client();
    let mut fast = get(&client, server.url("/events?channel=s")).await;
    let slow = get(&client, server.url("/events?channel=s")).await;
    assert_eq!(server.broker.subscriber_count("s"), 2);
    let mut received = 0;
    for n in 1..=EVENTS {
        let id = server.broker.publish("s", big_event()).await.unwrap();
        assert_eq!(id, n.to_string());
        // Each event read before the next is published: the fast reader is never behind.
        let end = format!("\nid: {n}\n\n");
        let mut tail = Vec::new();
        while !tail.ends_with(end.as_bytes()) {
            let chunk = guard("fast reader", fast.chunk()).await.unwrap().unwrap();
            received += chunk.len();
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(64)..]);
            tail.drain(..tail.len().saturating_sub(64));
        }
    }
    // Every event, whole, and nothing else (no lag comment).
    let all: usize = (1..=EVENTS).map(|id| encoded(id).len()).sum();
    assert_eq!(received, all);
    (server, fast, slow)
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_others_get_every_event() {
    let (server, _fast, slow) = slow_consumer(LagPolicy::Disconnect).await;
    // What was buffered for it, then the lag comment, then the end of the body: no error.
    let body = guard("slow reader", slow.bytes()).await.unwrap();
    let blocks = blocks(std::str::from_utf8(&body).unwrap());
    let (last, events) = blocks.split_last().unwrap();
    let read = events.len() as u64;
    let expected: Vec<_> = (1..=read).map(Ok).collect();
    assert_eq!(events, expected, "the events before the lag, in order");
    assert!(read < EVENTS - BUFFER, "it fell behind: read {read}");
    // The broker kept the last BUFFER events; the rest after what it read were lost to it.
    assert_eq!(*last, Err(EVENTS - BUFFER - read));
    wait_until("slow subscriber gone", || {
        server.broker.subscriber_count("s") == 1
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_skips_to_newer_events_with_skip() {
    let (server, _fast, mut slow) = slow_consumer(LagPolicy::Skip).await;
    let mut body = Vec::new();
    let last = encoded(EVENTS);
    while !body.ends_with(last.as_bytes()) {
        let chunk = guard("slow reader", slow.chunk()).await.unwrap().unwrap();
        body.extend_from_slice(&chunk);
    }
    let blocks = blocks(std::str::from_utf8(&body).unwrap());
    let lag = blocks
        .iter()
        .position(Result::is_err)
        .expect("a lag comment");
    let read = lag as u64;
    let expected: Vec<_> = (1..=read).map(Ok).collect();
    assert_eq!(
        blocks[..lag],
        expected,
        "the events before the lag, in order"
    );
    // The comment, then exactly the BUFFER events the broker still kept: it keeps no more.
    assert_eq!(blocks[lag], Err(EVENTS - BUFFER - read));
    let kept: Vec<_> = (EVENTS - BUFFER + 1..=EVENTS).map(Ok).collect();
    assert_eq!(blocks[lag + 1..], kept);
    assert_eq!(server.broker.subscriber_count("s"), 2);
}

/// A resume replays at most `history` events, whatever the buffer keeps for live subscribers
/// (issue 14, item 5: it used to replay `max(buffer, history)`).
#[tokio::test]
async fn a_resume_replays_at_most_the_history_whatever_the_buffer() {
    for (buffer, history) in [(8, 0), (8, 3), (3, 8), (5, 5), (1, 1)] {
        let broker = Broker::builder()
            .id_base(0)
            .buffer(buffer)
            .history(history)
            .build();
        let channels = broker.channel_rules().channels(["m"]).unwrap();
        // A subscriber keeps the channel and its buffer.
        let _idle = broker.subscribe(&channels).await.unwrap();
        for i in 1..=100 {
            broker
                .publish("m", Event::default().data(i.to_string()))
                .await
                .unwrap();
        }
        let mut resumed = broker.resume(&channels, "1").await.unwrap();
        assert_eq!(resumed.resume(), Resume::Gap);
        let kept = history as u64;
        let expected: String = (101 - kept..=100)
            .map(|i| format!("data: {i}\nid: {i}\n\n"))
            .collect();
        let replay = resumed.recv().now_or_never().flatten().unwrap_or_default();
        assert_eq!(replay, expected, "buffer {buffer}, history {history}");
    }
}

/// 1,000 connect/disconnect cycles (half leave after the response head, half right after the
/// request) on several channels: then no subscriber, no channel and no task is left but the
/// accept loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let broker = Broker::builder().id_base(0).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(churn::serve(listener, churn::app(broker.clone())));
    guard("churn", churn::churn(addr, 1_000, 20)).await.unwrap();
    wait_until("churn settled", || {
        broker.total_subscribers() == 0
            && broker.channel_count() == 0
            && metrics.num_alive_tasks() == tasks_before + 1
    })
    .await;
}
