//! The hub's limits as shipped (the binary, default flags but the one under test, real
//! sockets). A publish over 1 MiB gets its `413` and reason, also when the client sends the
//! whole body before it reads anything (as Python's `http.client` does), with or without a
//! `Content-Length`; the hub reads a refused body only so far. The broker's limits an
//! operator sizes for a machine are flags and `SSE_HUB_*` variables: subscribers in all and
//! per channel (past them, `503` with `Retry-After`), channels per request (`400`).

#[path = "support/hub_process.rs"]
mod hub_process;
use tower_sse_test_support as support;

use std::{io, net::SocketAddr, process::Command};

use hub_process::{HubProcess, hub_binary};
use reqwest::StatusCode;
use support::{guard, send, text};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MIB: usize = 1024 * 1024;
/// Each oversize publish is sent this many times: a reset instead of the answer comes often,
/// not every time (Python's `http.client` saw it 15 times in 20).
const TRIES: usize = 20;
/// The reason of a `413`.
const TOO_LARGE: &str = "body is over 1 MiB";

/// A response as a raw client reads it.
#[derive(Debug)]
struct Reply {
    /// The status line and headers, lowercase.
    head: String,
    body: String,
}

impl Reply {
    fn status(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// Reads a response: its head, then as many bytes of body as its `Content-Length` says.
async fn read_reply(socket: &mut TcpStream) -> io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before the head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|len| len.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = buf.split_off(end);
    while body.len() < len {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Reply { head, body })
}

/// `POST /publish` on a new connection: writes the head and every part of the body, and only
/// then reads the response, as Python's `http.client` does. An error is what such a client
/// gets: the write or the read failed (a reset). The client's send buffer is kept small, as
/// over a network (on loopback the kernel would take megabytes and hide the reset).
async fn post_all_then_read(addr: SocketAddr, headers: &str, body: &[&[u8]]) -> io::Result<Reply> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_send_buffer_size(64 * 1024)?;
    let mut socket = socket.connect(addr).await?;
    let head = format!(
        "POST /publish?channel=big HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         {headers}\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    for part in body {
        socket.write_all(part).await?;
    }
    read_reply(&mut socket).await
}

/// Asserts that `reply` is the `413` with its reason.
fn assert_too_large(reply: io::Result<Reply>, what: &str) {
    let reply = reply.unwrap_or_else(|err| panic!("{what}: {err}, not the 413"));
    assert_eq!(reply.status(), "413", "{what}: {reply:?}");
    assert!(
        reply
            .head
            .contains("content-type: text/plain; charset=utf-8\r\n"),
        "{what}: {reply:?}"
    );
    assert_eq!(reply.body, TOO_LARGE, "{what}");
}

/// 1.5 MiB with a `Content-Length`, all sent before the client reads: the `413` and its
/// reason, every time, and the hub still publishes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_sent_whole_before_reading_gets_its_413() {
    let hub = HubProcess::start(&[]).await;
    let body = vec![b'x'; MIB + MIB / 2];
    let headers = format!("Content-Length: {}\r\n", body.len());
    for attempt in 0..TRIES {
        let reply = guard(
            "the 413",
            post_all_then_read(hub.addr(), &headers, &[&body]),
        )
        .await;
        assert_too_large(reply, &format!("Content-Length, try {attempt}"));
    }
    hub.publish("channel=big", "small enough").await;
}

/// The same without a length (chunked): the hub can only tell once it has read 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_chunked_body_sent_whole_before_reading_gets_its_413() {
    let hub = HubProcess::start(&[]).await;
    let chunk = [
        format!("{:x}\r\n", 64 * 1024).into_bytes(),
        vec![b'x'; 64 * 1024],
    ]
    .concat();
    // 24 chunks of 64 KiB: 1.5 MiB, each with its CRLF, then the last chunk.
    let mut body: Vec<&[u8]> = Vec::new();
    for _ in 0..24 {
        body.extend([&chunk[..], b"\r\n"]);
    }
    body.push(b"0\r\n\r\n");
    for attempt in 0..TRIES {
        let headers = "Transfer-Encoding: chunked\r\n";
        let reply = guard("the 413", post_all_then_read(hub.addr(), headers, &body)).await;
        assert_too_large(reply, &format!("chunked, try {attempt}"));
    }
    hub.publish("channel=big", "small enough").await;
}

/// A body far over the limit (64 MiB announced and sent, while the client reads): the hub
/// answers `413` and reads on only so far before it closes the connection, so the client's
/// write fails long before its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_reads_a_refused_body_only_so_far() {
    const ANNOUNCED: usize = 64 * MIB;
    let hub = HubProcess::start(&[]).await;
    let socket = TcpStream::connect(hub.addr()).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let head = format!(
        "POST /publish?channel=big HTTP/1.1\r\nHost: {}\r\nContent-Length: {ANNOUNCED}\r\n\r\n",
        hub.addr()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let writing = tokio::spawn(async move {
        let part = vec![b'x'; MIB];
        let mut written = 0;
        while written < ANNOUNCED {
            if let Err(err) = writer.write_all(&part).await {
                return Err((written, err));
            }
            written += part.len();
        }
        Ok(written)
    });
    let mut reply = Vec::new();
    let read = guard("the hub's answer and close", reader.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    // The answer comes first; it may be lost when the hub gives up reading and the rest of the
    // body meets a closed socket (a reset), which is the client's to avoid (`Expect:
    // 100-continue`).
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 413 "),
        "{read:?}: {reply:?}"
    );
    let written = guard("the write fails", writing).await.unwrap();
    let (written, err) = written.expect_err("the hub read the whole 64 MiB");
    eprintln!("the answer: {read:?} {reply:?}; the write failed after {written} bytes: {err}");
}

/// `--max-subscribers-per-channel 2`: a third stream on a channel is refused with `503`,
/// `Retry-After` and a reason; another channel still takes streams.
#[tokio::test]
async fn max_subscribers_per_channel_is_a_flag() {
    let hub = HubProcess::start(&["--max-subscribers-per-channel", "2"]).await;
    let _first = hub.subscribe("channel=full", None).await;
    let _second = hub.subscribe("channel=full", None).await;
    let res = send(hub.events("channel=full", None)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    let reason = text(res).await;
    assert!(reason.contains("subscribers"), "{reason}");
    let _other = hub.subscribe("channel=other", None).await;
}

/// `SSE_HUB_MAX_SUBSCRIBERS=3`: a fourth stream, on any channel, is refused with `503` and
/// `Retry-After`.
#[tokio::test]
async fn max_subscribers_from_the_environment() {
    let env = [("SSE_HUB_MAX_SUBSCRIBERS", "3")];
    let hub = HubProcess::try_start_with(&[], &env).await.unwrap();
    let mut open = Vec::new();
    for channel in ["a", "b", "c"] {
        open.push(hub.subscribe(&format!("channel={channel}"), None).await);
    }
    let res = send(hub.events("channel=d", None)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    let reason = text(res).await;
    assert!(reason.contains("subscribers"), "{reason}");
    // One leaves: there is room again, once the hub has seen it go.
    drop(open.pop());
    guard("the stream gone", async {
        while hub.metric("sse_subscribers").await >= 3.0 {
            hub_process::pause().await;
        }
    })
    .await;
    let _fourth = hub.subscribe("channel=d", None).await;
}

/// `SSE_HUB_MAX_CHANNELS=2`: a request naming 3 channels is a `400` with the reason, and one
/// naming 2 is a stream.
#[tokio::test]
async fn max_channels_from_the_environment() {
    let env = [("SSE_HUB_MAX_CHANNELS", "2")];
    let hub = HubProcess::try_start_with(&[], &env).await.unwrap();
    let res = send(hub.events("channel=a,b,c", None)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(text(res).await, "more than 2 channels");
    let _stream = hub.subscribe("channel=a&channel=b", None).await;
    // The flag wins over the variable.
    let hub = HubProcess::try_start_with(&["--max-channels", "3"], &env)
        .await
        .unwrap();
    let _stream = hub.subscribe("channel=a,b,c", None).await;
}

/// `--help` lists the limits with their variables and the library's defaults; 0 is refused.
#[test]
fn help_lists_the_limits() {
    let help = Command::new(hub_binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for shown in [
        "--max-subscribers <N>",
        "[env: SSE_HUB_MAX_SUBSCRIBERS=] [default: 100000]",
        "--max-subscribers-per-channel <N>",
        "[env: SSE_HUB_MAX_SUBSCRIBERS_PER_CHANNEL=] [default: 20000]",
        "--max-channels <N>",
        "[env: SSE_HUB_MAX_CHANNELS=] [default: 32]",
    ] {
        assert!(help.contains(shown), "{shown} in {help}");
    }
    for flag in [
        "--max-subscribers",
        "--max-subscribers-per-channel",
        "--max-channels",
    ] {
        let out = Command::new(hub_binary())
            .args(["--bind", "127.0.0.1:0", flag, "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} 0: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}
