//! The hub's router served by `hub::Server` over HTTP/2, by prior knowledge (h2c) and over TLS
//! (a self-signed certificate made by the test, ALPN `h2`), read with hyper's HTTP/2 client:
//! `SseService` behaves as over HTTP/1.1. Keep-alive comments come; events waiting together go
//! in one DATA frame; a stream the client resets unsubscribes while its connection lives on;
//! shutdown ends every stream cleanly and the server returns; 100 streams of one connection
//! each get every event; and a connection carries at most `--max-streams-per-connection`.
//! The binary as shipped serves HTTPS and h2c, takes its TLS files from the environment too,
//! and exits 1 naming a file it can't use.

#[path = "support/h2.rs"]
mod h2;
#[path = "support/hub_process.rs"]
mod hub_process;
use tower_sse_test_support as support;

use std::{net::SocketAddr, process::Command, time::Duration};

use h2::{Cert, H2, Stream, Transport, data, get_http1_over_tls};
use hub_process::{HubProcess, hub_binary};
use hyper::StatusCode;
use support::{client, guard, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};
use tower_sse::{Broker, Event};
use tower_sse_hub as hub;

const BOTH: [Transport; 2] = [Transport::H2c, Transport::Tls];

/// The hub's router on a free port, served as the binary serves it.
struct Hub {
    addr: SocketAddr,
    broker: Broker,
    transport: Transport,
    cert: Option<Cert>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
}

impl Hub {
    async fn start(transport: Transport, keep_alive: Option<Duration>, max_streams: u32) -> Hub {
        let broker = Broker::builder().id_base(0).build();
        let listener = hub::listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = hub::Server::new().max_streams_per_connection(max_streams);
        let cert = (transport == Transport::Tls).then(Cert::new);
        if let Some(cert) = &cert {
            server = server.tls(hub::tls_config(&cert.cert, &cert.key).unwrap());
        }
        let app = hub::app(broker.clone(), None, keep_alive);
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = hub::shutdown(broker.clone(), Duration::ZERO, async move {
            let _ = stopped.await;
        });
        let served = tokio::spawn(server.serve(listener, app, signal));
        Hub {
            addr,
            broker,
            transport,
            cert,
            stop: Some(stop),
            served,
        }
    }

    /// As the binary starts by default: no keep-alive here, 256 streams per connection.
    async fn new(transport: Transport) -> Hub {
        Hub::start(transport, None, hub::MAX_STREAMS_PER_CONNECTION).await
    }

    /// A new HTTP/2 connection.
    async fn connect(&self) -> H2 {
        H2::connect(self.addr, self.transport, self.cert.as_ref()).await
    }

    async fn publish(&self, channel: &str, data: &str) {
        let event = Event::default().data(data);
        self.broker.publish(channel, event).await.unwrap();
    }

    /// The shutdown signal: the broker closes, then the server shuts down gracefully; returns
    /// once it has.
    async fn shut_down(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        guard("the server returns", &mut self.served).await.unwrap();
    }
}

/// The rest of a stream the drain ended, without the `retry:` it ends with.
fn drained(rest: String) -> String {
    let (events, retry) = rest
        .trim_end_matches('\n')
        .rsplit_once("retry: ")
        .unwrap_or(("", &rest));
    assert!(retry.parse::<u64>().is_ok(), "ends with a retry: {rest:?}");
    events.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_serves_http1_and_h2c_tls_selects_by_alpn() {
    let plain = Hub::new(Transport::H2c).await;
    let mut h2c = plain.connect().await;
    let res = h2c.get("/healthz").await;
    assert_eq!(Stream::new(res).rest().await, "ok");
    let res = support::send(client().get(format!("http://{}/healthz", plain.addr))).await;
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(support::text(res).await, "ok");

    let tls = Hub::new(Transport::Tls).await;
    let mut h2 = tls.connect().await; // checks that ALPN selected h2
    let res = h2.get("/healthz").await;
    assert_eq!(Stream::new(res).rest().await, "ok");
    let cert = tls.cert.as_ref().unwrap();
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let res = get_http1_over_tls(cert, tls.addr, alpn, "/healthz").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(Stream::new(res).rest().await, "ok", "ALPN {alpn:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_come_over_http2() {
    for transport in BOTH {
        let hub = Hub::start(transport, Some(Duration::from_millis(100)), 256).await;
        let mut h2 = hub.connect().await;
        let mut stream = h2.subscribe("/events?channel=k").await;
        assert_eq!(stream.chunk().await.unwrap(), ":\n\n", "{transport:?}");
        hub.publish("k", "event").await;
        assert_eq!(stream.chunk().await.unwrap(), "data: event\nid: 1\n\n");
        assert_eq!(stream.chunk().await.unwrap(), ":\n\n", "{transport:?}");
    }
}

/// One thread: the three publishes run before the server's stream is polled again, so the
/// three events wait together.
#[tokio::test]
async fn events_waiting_together_go_in_one_data_frame() {
    let together = "data: one\nid: 1\n\ndata: two\nid: 2\n\ndata: three\nid: 3\n\n";
    for transport in BOTH {
        let hub = Hub::new(transport).await;
        let mut stream = hub.connect().await.subscribe("/events?channel=c").await;
        for data in ["one", "two", "three"] {
            hub.publish("c", data).await;
        }
        assert_eq!(stream.chunk().await.unwrap(), together, "{transport:?}");
    }
    // The same as over HTTP/1.1 (one chunk of the chunked body).
    let hub = Hub::new(Transport::H2c).await;
    let url = format!("http://{}/events?channel=c", hub.addr);
    let mut res = support::send(client().get(url)).await;
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    for data in ["one", "two", "three"] {
        hub.publish("c", data).await;
    }
    let chunk = guard("chunk", res.chunk()).await.unwrap().unwrap();
    assert_eq!(chunk, together);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_unsubscribes_and_its_connection_lives_on() {
    for transport in BOTH {
        let hub = Hub::new(transport).await;
        let mut h2 = hub.connect().await;
        let gone = h2.subscribe("/events?channel=gone").await;
        let mut stays = h2.subscribe("/events?channel=stays").await;
        assert_eq!(hub.broker.subscriber_count("gone"), 1);
        // Dropping the response body resets the stream (RST_STREAM), not the connection.
        drop(gone);
        wait_until("unsubscribed", || {
            hub.broker.subscriber_count("gone") == 0 && hub.broker.channel_count() == 1
        })
        .await;
        hub.publish("stays", "still here").await;
        assert_eq!(data(&stays.event().await.unwrap()), "still here");
        let mut again = h2.subscribe("/events?channel=gone").await;
        assert_eq!(hub.broker.subscriber_count("gone"), 1, "{transport:?}");
        hub.publish("gone", "back").await;
        assert_eq!(data(&again.event().await.unwrap()), "back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_stream_and_the_server_returns() {
    for transport in BOTH {
        let mut hub = Hub::new(transport).await;
        let (mut first, mut second) = (hub.connect().await, hub.connect().await);
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(first.subscribe("/events?channel=s").await);
        }
        streams.push(second.subscribe("/events?channel=s").await);
        assert_eq!(hub.broker.subscriber_count("s"), 4);
        hub.publish("s", "one").await;
        hub.publish("s", "two").await;
        hub.shut_down().await;
        // Each ends with END_STREAM after the events published before and the drain's
        // `retry:`: `rest` panics on a reset.
        for stream in streams {
            let rest = drained(stream.rest().await);
            assert_eq!(rest, "data: one\nid: 1\n\ndata: two\nid: 2\n\n");
        }
        assert_eq!(hub.broker.total_subscribers(), 0, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_clients_that_said_nothing() {
    for transport in BOTH {
        let mut hub = Hub::new(transport).await;
        // Connected, nothing sent; and stopped partway through the HTTP/2 preface.
        let _silent = TcpStream::connect(hub.addr).await.unwrap();
        let mut partway = TcpStream::connect(hub.addr).await.unwrap();
        partway.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut h2 = hub.connect().await;
        let stream = h2.subscribe("/events?channel=s").await;
        hub.shut_down().await;
        assert_eq!(drained(stream.rest().await), "", "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_starting_like_the_preface_are_http1() {
    let hub = Hub::new(Transport::H2c).await;
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    // "P" could begin the HTTP/2 preface: the server looks again until "O" says otherwise.
    tcp.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let request = "OST /publish?channel=p HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\
                   connection: close\r\n\r\nhi";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    guard("answer", tcp.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_on_one_connection_each_get_every_event() {
    const STREAMS: usize = 100;
    const EVENTS: usize = 20;
    for transport in BOTH {
        let hub = Hub::new(transport).await;
        let h2 = hub.connect().await;
        let mut opening = JoinSet::new();
        for _ in 0..STREAMS {
            let mut h2 = h2.clone();
            opening.spawn(async move { h2.subscribe("/events?channel=many").await });
        }
        let mut streams = Vec::new();
        while let Some(stream) = guard("opening", opening.join_next()).await {
            streams.push(stream.unwrap());
        }
        assert_eq!(hub.broker.subscriber_count("many"), STREAMS);
        for i in 0..EVENTS {
            hub.publish("many", &format!("event {i}")).await;
        }
        let mut reading = JoinSet::new();
        for mut stream in streams {
            reading.spawn(async move {
                let mut got = Vec::new();
                for _ in 0..EVENTS {
                    got.push(data(&stream.event().await.unwrap()).to_owned());
                }
                got
            });
        }
        let expected: Vec<String> = (0..EVENTS).map(|i| format!("event {i}")).collect();
        let mut read = 0;
        while let Some(got) = guard("reading", reading.join_next()).await {
            assert_eq!(got.unwrap(), expected, "{transport:?}");
            read += 1;
        }
        assert_eq!(read, STREAMS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_at_most_max_streams_per_connection() {
    const MAX: usize = 8;
    for transport in BOTH {
        let hub = Hub::start(transport, None, MAX as u32).await;
        let mut h2 = hub.connect().await;
        let mut open = Vec::new();
        for _ in 0..MAX {
            open.push(h2.subscribe("/events?channel=b").await);
        }
        let mut ninth = h2.clone();
        let mut ninth = tokio::spawn(async move { ninth.subscribe("/events?channel=b").await });
        // A bounded wait for what must not happen: the ninth stream is not opened.
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut ninth).await;
        assert!(waited.is_err(), "a ninth stream opened");
        assert_eq!(hub.broker.subscriber_count("b"), MAX);
        // One ends: the ninth opens.
        drop(open.pop());
        let mut ninth = guard("the ninth stream", ninth).await.unwrap();
        assert_eq!(hub.broker.subscriber_count("b"), MAX, "{transport:?}");
        hub.publish("b", "to all").await;
        assert_eq!(data(&ninth.event().await.unwrap()), "to all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_https_and_h2c() {
    let cert = Cert::new();
    let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let tls = HubProcess::start(&["--tls-cert", cert_file, "--tls-key", key_file]).await;
    let mut h2 = H2::connect(tls.addr(), Transport::Tls, Some(&cert)).await;
    let mut stream = h2.subscribe("/events?channel=bin").await;
    h2.post("/publish?channel=bin", "over h2").await;
    assert_eq!(data(&stream.event().await.unwrap()), "over h2");
    let res = get_http1_over_tls(&cert, tls.addr(), &[b"http/1.1"], "/healthz").await;
    assert_eq!(Stream::new(res).rest().await, "ok");
    assert!(tls.stdout().contains("tls=true"), "{}", tls.stdout());

    let plain = HubProcess::start(&[]).await;
    let mut h2c = H2::connect(plain.addr(), Transport::H2c, None).await;
    let mut stream = h2c.subscribe("/events?channel=bin").await;
    plain.publish("channel=bin", "over h2c").await;
    assert_eq!(data(&stream.event().await.unwrap()), "over h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_1_naming_a_file_it_cannot_use() {
    let cert = Cert::new();
    let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let other = Cert::new();
    let other_key = other.key.to_str().unwrap();
    let cases: [(&[&str], String); 3] = [
        (
            &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key_file],
            "tower-sse-hub: certificate /nonexistent/cert.pem: No such file".to_owned(),
        ),
        (
            &["--tls-cert", key_file, "--tls-key", key_file],
            format!("tower-sse-hub: certificate {key_file}: no PEM certificate in it\n"),
        ),
        (
            &["--tls-cert", cert_file, "--tls-key", other_key],
            format!("tower-sse-hub: certificate {cert_file} with private key {other_key}: "),
        ),
    ];
    for (args, expected) in cases {
        let exited = match HubProcess::try_start(args).await {
            Ok(_) => panic!("the hub started with {args:?}"),
            Err(exited) => exited,
        };
        assert_eq!(exited.status.code(), Some(1), "{args:?}");
        assert!(
            exited.stderr.starts_with(&expected),
            "{args:?}: {}",
            exited.stderr
        );
    }
}

#[test]
fn the_binary_takes_its_tls_files_from_the_environment() {
    // A blocking run of the binary: it exits at once, on the file the variable names.
    let out = Command::new(hub_binary())
        .args(["--bind", "127.0.0.1:0"])
        .env("SSE_HUB_TLS_CERT", "/nonexistent/env-cert.pem")
        .env("SSE_HUB_TLS_KEY", "/nonexistent/env-key.pem")
        .env("SSE_HUB_MAX_STREAMS_PER_CONNECTION", "16")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("tower-sse-hub: certificate /nonexistent/env-cert.pem: "),
        "{stderr}"
    );
    let help = Command::new(hub_binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for shown in [
        "[env: SSE_HUB_TLS_CERT=]",
        "[env: SSE_HUB_TLS_KEY=]",
        "[env: SSE_HUB_MAX_STREAMS_PER_CONNECTION=] [default: 256]",
    ] {
        assert!(help.contains(shown), "{shown} in {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ends_its_streams_on_sigterm_and_exits_0() {
    let cert = Cert::new();
    let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let args = [
        "--tls-cert",
        cert_file,
        "--tls-key",
        key_file,
        "--drain-secs",
        "1",
    ];
    let mut hub = HubProcess::start(&args).await;
    let mut h2 = H2::connect(hub.addr(), Transport::Tls, Some(&cert)).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(h2.subscribe("/events?channel=end").await);
    }
    let res = get_http1_over_tls(&cert, hub.addr(), &[b"http/1.1"], "/events?channel=end").await;
    streams.push(Stream::new(res));
    h2.post("/publish?channel=end", "last").await;
    hub.signal(libc::SIGTERM);
    let status = guard("the hub exits", hub.wait()).await;
    for stream in streams {
        // `rest` panics on a reset: each ends cleanly, after the event and the drain's
        // `retry:`.
        let rest = stream.rest().await;
        assert!(rest.starts_with("data: last\nid: "), "{rest:?}");
        assert!(
            rest.contains("\nretry: ") && rest.ends_with("\n\n"),
            "{rest:?}"
        );
    }
    assert!(status.success(), "{status}");
}

/// The binary as shipped, over h2c: the drain's start sends `GOAWAY` on each HTTP/2
/// connection, so that a proxy opens no new stream on it to be refused with the drain's `503`
/// (which ends an `EventSource` for good); the streams open on it go on until their moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_sends_goaway_and_open_streams_go_on() {
    // A long window: each stream's moment is most likely minutes away, this test a second.
    let hub = HubProcess::start(&["--drain-secs", "600"]).await;
    let mut h2 = H2::connect(hub.addr(), Transport::H2c, None).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(h2.subscribe("/events?channel=goaway").await);
    }
    hub.signal(libc::SIGTERM);
    // New streams are served until the client has the GOAWAY, then refused by the client
    // itself: they never reach the hub. Without a GOAWAY, this waits for ever (the guard).
    let refused = guard("a GOAWAY", async {
        loop {
            match h2.try_get("/healthz").await {
                Ok(res) => assert_eq!(Stream::new(res).rest().await, "ok"),
                Err(refused) => break refused,
            }
        }
    })
    .await;
    eprintln!("a new stream after the drain's start: {refused}");
    // The streams already open go on: an event published now reaches each, but one whose
    // moment came meanwhile (then it ended cleanly, after the drain's `retry:`).
    hub.publish("channel=goaway", "after the GOAWAY").await;
    let mut got = 0;
    for mut stream in streams {
        let block = stream
            .event()
            .await
            .expect("an event, or the drain's retry:");
        if block.starts_with("retry: ") {
            continue;
        }
        assert_eq!(data(&block), "after the GOAWAY");
        got += 1;
    }
    assert!(
        got > 0,
        "every stream's moment came in the first second of 600"
    );
}
