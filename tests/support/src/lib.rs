//! What the integration tests of `tower-sse` and `tower-sse-hub` share: a hang guard, a wait
//! for the server's own progress, an HTTP client, and (in modules) headless Chromium, a private
//! `redis-server`, an event-stream reader, a server that drops streams and the Python venvs. A dev-dependency of
//! both packages, so a test file takes it with `use tower_sse_test_support as support;`.

pub mod chromium;
pub mod events;
pub mod redis_cluster;
pub mod redis_server;
pub mod stream_server;
pub mod venv;

use std::{future::Future, io::Write, net::SocketAddr, path::PathBuf, time::Duration};

use reqwest::{Client, RequestBuilder, Response};

/// Hang guard only: nothing asserts on time. Long enough for a busy 2-core machine, for a
/// browser's 3 s reconnection delay, and for WebDriver's 30 s script timeout to fire first
/// (it reports better).
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

/// Waits for a state the server reaches on its own (a subscription dropped after its client
/// left), checking again whenever the other tasks have run.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    guard(what, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A client that talks to 127.0.0.1 directly, whatever proxy the environment names.
pub fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

/// Sends, under the hang guard.
pub async fn send(request: RequestBuilder) -> Response {
    guard("response", request.send()).await.unwrap()
}

/// The whole body as text, under the hang guard.
pub async fn text(res: Response) -> String {
    guard("body", res.text()).await.unwrap()
}

/// `name` in one of the folders of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

/// A program `test` needs is `missing`: a failure when the environment variable `require` is
/// `1` (CI sets it), else a loud line on stderr, and the test passes without running.
pub fn skip_or_fail(test: &str, missing: &str, install: &str, require: &str) {
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{require}=1 but {missing} is missing: {install}");
    }
    // Straight to stderr: the test harness captures `eprintln!`, and a skip must be seen.
    let loud = format!("\n!!! SKIPPED {test}: {missing} is missing ({install}) !!!\n");
    let _ = std::io::stderr().write_all(loud.as_bytes());
}

/// Sends `GET {path}` on a new connection, with `connection: close` and the `headers` given,
/// runs `ready` once the request is sent, then reads the whole response (head and body, as
/// sent) to the end: for the tests that check how a stream ends, byte for byte.
pub async fn raw_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    ready: impl AsyncFnOnce(),
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    ready().await;
    let mut response = Vec::new();
    guard("response", conn.read_to_end(&mut response))
        .await
        .unwrap();
    String::from_utf8(response).unwrap()
}
