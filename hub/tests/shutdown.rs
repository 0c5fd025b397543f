//! Graceful shutdown under load: 5,000 open streams over real sockets, a hyper connection
//! loop with hyper-util's `GracefulShutdown`, then `Broker::close` and a graceful shutdown.
//!
//! Every stream must end cleanly: the client reads every event published before the close,
//! then the end of the chunked body, then the server closes the connection; no connection
//! fails, and the server's loop returns (a 30 s hang guard, nothing timed). An event stream
//! never ends on its own, so this is what `Broker::close` is for: without it a graceful
//! shutdown would wait forever.

#[path = "../examples/support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use tower_sse_test_support as support;

use std::net::SocketAddr;

use serve::{read_head, start};
use support::guard;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use tower_sse::{Broker, Event, SseService};

const STREAMS: usize = 5_000;
/// Connections opened at once: well under the listener's backlog ([`hub::BACKLOG`]).
const BATCH: usize = 250;

/// Opens a stream and reads its head; returns the socket and any body bytes already read.
async fn open(addr: SocketAddr, channels: &str) -> (TcpStream, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /events?channel={channels} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let (head, bytes) = read_head(&mut socket).await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    (socket, bytes)
}

/// Decodes a complete chunked body, which must be all of `bytes`: the last chunk, its
/// trailer's empty line, and nothing after.
fn dechunk(mut bytes: &[u8]) -> Result<String, String> {
    let mut body = Vec::new();
    loop {
        let line = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("cut in a size")?;
        let size = std::str::from_utf8(&bytes[..line]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size, 16).map_err(|e| format!("size {size:?}: {e}"))?;
        bytes = &bytes[line + 2..];
        if size == 0 {
            return match bytes {
                b"\r\n" => String::from_utf8(body).map_err(|e| e.to_string()),
                rest => Err(format!("after the last chunk: {rest:?}")),
            };
        }
        if bytes.len() < size + 2 || &bytes[size..size + 2] != b"\r\n" {
            return Err("cut in a chunk".into());
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_streams_end_cleanly_on_graceful_shutdown() {
    // Two sockets per stream (client and server, one process) and some slack.
    proc::raise_open_files(2 * STREAMS as u64 + 256).unwrap();
    let broker = Broker::builder().id_base(0).build();
    let (addr, stop, server) = start(SseService::new(broker.clone()).keep_alive(None)).await;

    // Even streams on `all`, odd ones on `all` and `odd`.
    let mut streams = Vec::with_capacity(STREAMS);
    for batch in 0..STREAMS.div_ceil(BATCH) {
        let mut opening = JoinSet::new();
        for i in batch * BATCH..((batch + 1) * BATCH).min(STREAMS) {
            let channels = if i % 2 == 0 { "all" } else { "all,odd" };
            opening.spawn(async move { (i, open(addr, channels).await) });
        }
        while let Some(opened) = guard("connecting", opening.join_next()).await {
            streams.push(opened.unwrap());
        }
    }
    assert_eq!(broker.total_subscribers(), STREAMS);
    assert_eq!(broker.subscriber_count("all"), STREAMS);

    let events = [("all", "one"), ("odd", "two"), ("all", "three")];
    for (channel, data) in events {
        broker
            .publish(channel, Event::default().data(data))
            .await
            .unwrap();
    }
    broker.close();
    stop.send(()).unwrap();

    let mut reading = JoinSet::new();
    for (i, (mut socket, mut bytes)) in streams {
        reading.spawn(async move { socket.read_to_end(&mut bytes).await.map(|_| (i, bytes)) });
    }
    let even = "data: one\nid: 1\n\ndata: three\nid: 3\n\n";
    let odd = "data: one\nid: 1\n\ndata: two\nid: 2\n\ndata: three\nid: 3\n\n";
    let mut ended = 0;
    while let Some(read) = guard("streams ending", reading.join_next()).await {
        let (i, bytes) = read.unwrap().expect("read to the end, no reset");
        let body = dechunk(&bytes).unwrap_or_else(|err| panic!("stream {i}: {err}"));
        assert_eq!(body, if i % 2 == 0 { even } else { odd }, "stream {i}");
        ended += 1;
    }
    assert_eq!(ended, STREAMS);
    let errors = guard("server exit", server).await.unwrap();
    assert_eq!(errors, 0, "connections ended with an error");
    assert_eq!(broker.total_subscribers(), 0);
    assert_eq!(broker.channel_count(), 0);
}
