//! The standalone hub (`tower_sse_hub`) over real sockets: its router served on
//! `127.0.0.1:0`, reqwest as the client, eventsource-stream as the parser.
use tower_sse_test_support as support;
use tower_sse_test_support::events;

use std::{
    future::IntoFuture,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::{CommandFactory, Parser, error::ErrorKind};
use events::Events;
use reqwest::{Client, RequestBuilder, Response, StatusCode, header};
use support::{client, guard, send, text, wait_until};
use tokio::net::TcpListener;
use tower_sse::Broker;
use tower_sse_hub as hub;

const TOKEN: &str = "s3cret";
const MIB: usize = 1024 * 1024;

/// A hub serving on a free port.
struct Hub {
    base: String,
    broker: Broker,
    client: Client,
}

impl Hub {
    /// As `hub` runs by default: in process, history 1000, no token.
    async fn new() -> Hub {
        hub::metrics();
        Hub::start(Broker::builder().id_base(0).history(1000).build(), None).await
    }

    async fn with_token() -> Hub {
        hub::metrics();
        Hub::start(
            Broker::builder().id_base(0).history(1000).build(),
            Some(TOKEN),
        )
        .await
    }

    async fn start(broker: Broker, token: Option<&str>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let keep_alive = Some(Duration::from_secs(15));
        let app = hub::app(broker.clone(), token.map(str::to_owned), keep_alive);
        tokio::spawn(axum::serve(listener, app).into_future());
        Hub {
            base,
            broker,
            client: client(),
        }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    fn post(&self, query: &str, body: impl Into<reqwest::Body>) -> RequestBuilder {
        let url = format!("{}/publish?{query}", self.base);
        self.client.post(url).body(body)
    }

    /// Opens `path` and checks it is an event stream.
    async fn subscribe(&self, path: &str) -> Events {
        Events::open(self.get(path)).await
    }

    /// Publishes through `POST /publish` and returns the id the hub answered.
    async fn publish(&self, query: &str, data: &str) -> String {
        publish(self.post(query, data.to_owned())).await
    }
}

fn content_type(res: &Response) -> &str {
    res.headers()[header::CONTENT_TYPE].to_str().unwrap()
}

async fn publish(request: RequestBuilder) -> String {
    let res = send(request).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "application/json");
    let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    body["id"].as_str().expect("{\"id\": string}").to_owned()
}

// Publishing.

#[tokio::test]
async fn publish_is_received_with_event_type_id_and_retry() {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=news").await;
    let query = "channel=news&event=greeting&id=g-1&retry=1500";
    assert_eq!(hub.publish(query, "Hello,\nworld").await, "g-1");
    let event = events.expect().await;
    assert_eq!(event.event, "greeting");
    assert_eq!(event.data, "Hello,\nworld");
    assert_eq!(event.id, "g-1");
    assert_eq!(event.retry, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn publish_answers_json_with_the_assigned_id() {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=news").await;
    let res = send(hub.post("channel=news", "x")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "application/json");
    let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body, serde_json::json!({ "id": "1" }));
    let event = events.expect().await;
    assert_eq!((event.event.as_str(), event.id.as_str()), ("message", "1"));
    assert_eq!(event.retry, None);
}

#[tokio::test]
async fn missing_channel_means_channel_sse() {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events").await;
    assert_eq!(hub.broker.subscriber_count("sse"), 1);
    let id = hub.publish("event=ping", "x").await;
    let event = events.expect().await;
    assert_eq!(
        (event.event, event.data, event.id),
        ("ping".into(), "x".into(), id)
    );
}

#[tokio::test]
async fn channel_of_256_bytes_is_accepted() {
    let hub = Hub::new().await;
    let channel = "a".repeat(256);
    let mut events = hub.subscribe(&format!("/events?channel={channel}")).await;
    hub.publish(&format!("channel={channel}"), "long").await;
    assert_eq!(events.expect().await.data, "long");
}

#[tokio::test]
async fn body_of_exactly_1_mib_is_accepted() {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=news").await;
    hub.publish("channel=news", &"x".repeat(MIB)).await;
    assert_eq!(events.expect().await.data.len(), MIB);
}

/// `POST /publish?{query}` with `body` is refused with `status` and a `text/plain` reason, and
/// publishes nothing: a subscriber to `news` and `sse` (the default) then gets a later valid
/// event first, and its id is 1, so no publish on any channel took a sequence number.
async fn assert_refused(query: &str, body: impl Into<reqwest::Body>, status: StatusCode) -> String {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=news&channel=sse").await;
    let res = send(hub.post(query, body)).await;
    assert_eq!(res.status(), status, "{query}");
    assert_eq!(content_type(&res), "text/plain; charset=utf-8", "{query}");
    let reason = text(res).await;
    assert!(!reason.is_empty(), "{query}: no reason");
    assert_eq!(hub.publish("channel=news", "valid").await, "1", "{query}");
    let first = events.expect().await;
    assert_eq!(
        (first.data.as_str(), first.id.as_str()),
        ("valid", "1"),
        "{query}"
    );
    reason
}

#[tokio::test]
async fn invalid_utf8_body_is_400() {
    let reason = assert_refused(
        "channel=news",
        vec![b'a', 0xff, 0xfe],
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(reason.await, "body is not UTF-8");
}

#[tokio::test]
async fn event_type_with_cr_or_lf_is_400() {
    for query in ["event=a%0Ab", "event=a%0D", "event=%0D%0A", "event=a%0Db"] {
        let query = format!("channel=news&{query}");
        let reason = assert_refused(&query, "x", StatusCode::BAD_REQUEST).await;
        assert_eq!(reason, "event type contains a line break or NUL");
    }
}

#[tokio::test]
async fn id_with_cr_lf_or_nul_is_400() {
    for query in ["id=a%0Ab", "id=a%0D", "id=%0D%0A", "id=a%00b"] {
        let query = format!("channel=news&{query}");
        let reason = assert_refused(&query, "x", StatusCode::BAD_REQUEST).await;
        assert_eq!(reason, "id contains a control character");
    }
}

#[tokio::test]
async fn empty_channel_name_is_400() {
    for query in ["channel=", "channel", "channel=&event=x"] {
        let reason = assert_refused(query, "x", StatusCode::BAD_REQUEST).await;
        assert_eq!(reason, "empty channel name", "{query}");
    }
}

#[tokio::test]
async fn channel_name_over_256_bytes_is_400() {
    let query = format!("channel={}", "a".repeat(257));
    let reason = assert_refused(&query, "x", StatusCode::BAD_REQUEST).await;
    assert_eq!(reason, "channel name longer than 256 bytes");
}

#[tokio::test]
async fn channel_name_with_whitespace_comma_or_control_is_400() {
    for query in [
        "channel=a+b",
        "channel=news,sse",
        "channel=news%0A",
        "channel=%20news",
    ] {
        assert_refused(query, "x", StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn non_numeric_retry_is_400() {
    let retries = [
        "abc",
        "",
        "-1",
        "%2B1",
        "1.5",
        "1e3",
        "99999999999999999999999",
    ];
    for retry in retries {
        let query = format!("channel=news&retry={retry}");
        assert_refused(&query, "x", StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn invalid_percent_encoding_is_400() {
    let queries = [
        "channel=%ZZ",
        "channel=news%",
        "channel=news%4",
        "channel=news&event=%E2%82",
        "channel=news&id=%FF",
        "channel=news&%ZZ=1",
    ];
    for query in queries {
        let reason = assert_refused(query, "x", StatusCode::BAD_REQUEST).await;
        assert_eq!(
            reason, "invalid percent-encoding or UTF-8 in query",
            "{query}"
        );
    }
}

#[tokio::test]
async fn unknown_or_repeated_parameter_is_400() {
    let queries = [
        "chanel=news",
        "channel=news&lastEventId=1",
        "channel=news&channel=sse",
        "channel=news&%63hannel=sse",
        "channel=news&id=a&id=b",
    ];
    for query in queries {
        assert_refused(query, "x", StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn body_over_1_mib_is_413() {
    // With a Content-Length: refused before the body is read.
    let body = vec![b'x'; MIB + 1];
    assert_refused("channel=news", body, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Chunked, without a length: refused once the limit is crossed.
    let chunks = (0..17).map(|_| Ok::<_, io::Error>(vec![b'x'; 64 * 1024]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_refused("channel=news", body, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn closed_broker_is_503() {
    let hub = Hub::new().await;
    hub.broker.close();
    let res = send(hub.post("channel=news", "x")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
    assert_eq!(text(res).await, "broker is closed");
}

#[tokio::test]
async fn healthz_is_ok() {
    let hub = Hub::new().await;
    let res = send(hub.get("/healthz")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "ok");
}

// The token.

async fn assert_denied(res: Response, status: StatusCode) {
    assert_eq!(res.status(), status);
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
    let challenge = res.headers().get(header::WWW_AUTHENTICATE);
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(challenge.unwrap(), "Bearer");
    }
    assert!(!text(res).await.is_empty());
}

#[tokio::test]
async fn private_channel_needs_the_token() {
    let hub = Hub::with_token().await;
    let path = "/events?channel=private.x";
    assert_denied(send(hub.get(path)).await, StatusCode::UNAUTHORIZED).await;
    let wrong = hub.get(path).bearer_auth("s3cre");
    assert_denied(send(wrong).await, StatusCode::FORBIDDEN).await;
    let wrong = hub.get(&format!("{path}&access_token=s3cret2"));
    assert_denied(send(wrong).await, StatusCode::FORBIDDEN).await;
    assert_eq!(hub.broker.subscriber_count("private.x"), 0);

    let mut by_header = Events::open(hub.get(path).bearer_auth(TOKEN)).await;
    let scheme_any_case = hub.get(path).header("authorization", "bearer s3cret");
    let mut lower_case = Events::open(scheme_any_case).await;
    let mut by_query = hub.subscribe(&format!("{path}&access_token={TOKEN}")).await;
    assert_eq!(hub.broker.subscriber_count("private.x"), 3);
    let id = publish(hub.post("channel=private.x", "secret").bearer_auth(TOKEN)).await;
    for events in [&mut by_header, &mut lower_case, &mut by_query] {
        let event = events.expect().await;
        assert_eq!((event.data.as_str(), event.id.as_str()), ("secret", &*id));
    }
}

#[tokio::test]
async fn public_channel_needs_no_token() {
    let hub = Hub::with_token().await;
    let mut events = hub.subscribe("/events?channel=public").await;
    publish(hub.post("channel=public", "hi").bearer_auth(TOKEN)).await;
    assert_eq!(events.expect().await.data, "hi");
}

#[tokio::test]
async fn without_a_token_private_channels_are_open() {
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=private.x").await;
    hub.publish("channel=private.x", "open").await;
    assert_eq!(events.expect().await.data, "open");
}

#[tokio::test]
async fn publish_needs_the_token_on_any_channel() {
    let hub = Hub::with_token().await;
    let mut events = hub.subscribe("/events?channel=public").await;
    let refused = [
        (hub.post("channel=public", "x"), StatusCode::UNAUTHORIZED),
        (
            hub.post("channel=public", "x")
                .basic_auth("user", Some(TOKEN)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            hub.post("channel=public", "x").bearer_auth("wrong"),
            StatusCode::FORBIDDEN,
        ),
        (
            hub.post("channel=public&access_token=s3cre", "x"),
            StatusCode::FORBIDDEN,
        ),
        (
            hub.post("channel=public&access_token=", "x"),
            StatusCode::FORBIDDEN,
        ),
        (
            hub.post("channel=public&access_token=%ZZ", "x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            hub.post("access_token=s3cret&access_token=s3cret", "x"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (request, status) in refused {
        assert_denied(send(request).await, status).await;
    }
    let by_header = hub.post("channel=public", "header").bearer_auth(TOKEN);
    assert_eq!(
        publish(by_header).await,
        "1",
        "a refused publish took an id"
    );
    let by_query = hub.post("channel=public&access_token=s3cret", "query");
    assert_eq!(publish(by_query).await, "2");
    assert_eq!(events.expect().await.data, "header");
    assert_eq!(events.expect().await.data, "query");
}

#[tokio::test]
async fn no_query_trick_reaches_a_private_channel() {
    let hub = Hub::with_token().await;
    let attempts = [
        ("channel=public&channel=private.x", StatusCode::UNAUTHORIZED),
        ("channel=private.x&channel=public", StatusCode::UNAUTHORIZED),
        ("channel=public,private.x", StatusCode::UNAUTHORIZED),
        ("channel=private%2Ex", StatusCode::UNAUTHORIZED),
        (
            "channel=private%2ex&channel=public",
            StatusCode::UNAUTHORIZED,
        ),
        ("%63hannel=private.x", StatusCode::UNAUTHORIZED),
        (
            "channel=public&%63hannel=private.x",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "channel=private.x&access_token=wrong",
            StatusCode::FORBIDDEN,
        ),
        (
            "channel=private.x&%61ccess_token=wrong",
            StatusCode::FORBIDDEN,
        ),
        ("channel=private.x%20", StatusCode::BAD_REQUEST),
        ("channel=+private.x", StatusCode::BAD_REQUEST),
        ("channel=private.x+&channel=public", StatusCode::BAD_REQUEST),
        ("channel=private.x%00", StatusCode::BAD_REQUEST),
        ("channel=private.x%", StatusCode::BAD_REQUEST),
    ];
    for (query, status) in attempts {
        let res = send(hub.get(&format!("/events?{query}"))).await;
        assert_eq!(res.status(), status, "{query}");
        assert_ne!(content_type(&res), "text/event-stream", "{query}");
        assert_eq!(hub.broker.subscriber_count("private.x"), 0, "{query}");
        assert_eq!(hub.broker.subscriber_count("public"), 0, "{query}");
    }
    // The same channels with the token do stream, so the checks above can fail.
    let path = "/events?channel=public&channel=private%2Ex";
    let _events = Events::open(hub.get(path).bearer_auth(TOKEN)).await;
    assert_eq!(hub.broker.subscriber_count("private.x"), 1);
}

// Resuming.

#[derive(Clone, Copy)]
enum LastEventId {
    Header,
    Query,
}

/// 1,000 events published over HTTP while the client reads at most 150 per connection, drops
/// it and reconnects with the last id it saw: it counts every event exactly once, in order.
async fn resume_while_publishing(via: LastEventId) {
    const TOTAL: usize = 1000;
    const PER_CONNECTION: usize = 150;
    let hub = Hub::new().await;
    let mut events = hub.subscribe("/events?channel=load").await;
    let publisher = {
        let (client, url) = (hub.client.clone(), format!("{}/publish", hub.base));
        tokio::spawn(async move {
            for i in 0..TOTAL {
                let request = client
                    .post(format!("{url}?channel=load"))
                    .body(i.to_string());
                publish(request).await;
            }
        })
    };
    let (mut seen, mut last_id, mut connections) = (0, 0_u64, 1);
    loop {
        let mut read = 0;
        while read < PER_CONNECTION && seen < TOTAL {
            let Some(event) = events.next().await else {
                break;
            };
            assert_eq!(
                event.event, "message",
                "no gap: the history holds every event"
            );
            assert_eq!(event.data, seen.to_string(), "exactly once, in order");
            let id: u64 = event.id.parse().unwrap();
            assert!(id > last_id, "ids increase: {id} after {last_id}");
            (seen, last_id, read) = (seen + 1, id, read + 1);
        }
        if seen == TOTAL {
            break;
        }
        drop(events);
        events = match via {
            LastEventId::Header => {
                let request = hub.get("/events?channel=load");
                Events::open(request.header("last-event-id", last_id.to_string())).await
            }
            LastEventId::Query => {
                let path = format!("/events?channel=load&lastEventId={last_id}");
                hub.subscribe(&path).await
            }
        };
        connections += 1;
    }
    guard("publisher", publisher).await.unwrap();
    assert!(connections > TOTAL / PER_CONNECTION, "{connections}");
    // And nothing after the last one but what comes next.
    hub.publish("channel=load", "next").await;
    assert_eq!(events.expect().await.data, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_header_while_publishing() {
    resume_while_publishing(LastEventId::Header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_query_while_publishing() {
    resume_while_publishing(LastEventId::Query).await;
}

#[tokio::test]
async fn unknown_last_event_id_gets_the_gap_event_first() {
    let hub = Hub::new().await;
    hub.publish("channel=news", "before").await;
    let request = hub.get("/events?channel=news");
    let mut events = Events::open(request.header("last-event-id", "no-such-id")).await;
    let gap = events.expect().await;
    assert_eq!((gap.event.as_str(), gap.data.as_str()), ("gap", "unknown"));
    assert_eq!(gap.id, "", "the gap event leaves Last-Event-ID alone");
    let id = hub.publish("channel=news", "live").await;
    let event = events.expect().await;
    assert_eq!((event.data, event.id), ("live".into(), id));
}

#[tokio::test]
async fn expired_last_event_id_gets_the_gap_event_then_what_is_kept() {
    let hub = Hub::start(
        Broker::builder().id_base(0).buffer(1).history(2).build(),
        None,
    )
    .await;
    for i in 1..=5 {
        hub.publish("channel=news", &i.to_string()).await;
    }
    let mut events = hub.subscribe("/events?channel=news&lastEventId=1").await;
    let gap = events.expect().await;
    assert_eq!((gap.event.as_str(), gap.data.as_str()), ("gap", "gap"));
    for kept in ["4", "5"] {
        let event = events.expect().await;
        assert_eq!((event.data.as_str(), event.id.as_str()), (kept, kept));
    }
}

// Running.

#[tokio::test]
async fn shutdown_closes_the_broker_and_ends_streams() {
    let broker = Broker::builder().id_base(0).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        stopped.await.ok();
    };
    let app = hub::app(broker.clone(), None, Some(Duration::from_secs(15)));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(hub::shutdown(broker.clone(), Duration::ZERO, signal))
        .into_future();
    let server = tokio::spawn(server);
    let client = client();
    let mut events = Events::open(client.get(format!("{base}/events"))).await;
    publish(client.post(format!("{base}/publish")).body("last")).await;
    stop.send(()).unwrap();
    assert_eq!(events.expect().await.data, "last");
    assert!(events.next().await.is_none(), "the stream ends");
    guard("graceful shutdown", server).await.unwrap().unwrap();
    assert!(broker.is_closed());
}

/// `/healthz` is liveness; `/readyz` says whether to send the hub new streams: not once it
/// drains.
#[tokio::test]
async fn readyz_answers_503_once_the_broker_is_closed() {
    let hub = Hub::new().await;
    let get = |path: &'static str| {
        let request = hub.get(path);
        async move {
            let res = send(request).await;
            (res.status(), text(res).await)
        }
    };
    assert_eq!(get("/readyz").await, (StatusCode::OK, "ready".into()));
    hub.broker.close();
    let not_ready = (StatusCode::SERVICE_UNAVAILABLE, "not ready".into());
    assert_eq!(get("/readyz").await, not_ready);
    assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".into()));
}

// CORS (in a real browser: tests/cors.rs).

const ORIGIN: &str = "http://127.0.0.1:8000";

/// A hub with `--cors-origin http://127.0.0.1:8000`.
async fn cors_hub() -> Hub {
    let hub = Hub::with_token().await;
    let origins = [header::HeaderValue::from_static(ORIGIN)];
    let app = hub::app(hub.broker.clone(), Some(TOKEN.into()), None).layer(hub::cors(&origins));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.into_make_service()).into_future());
    Hub { base, ..hub }
}

/// A listed origin's preflight for a publish with a token is allowed, with credentials; the
/// answers carry the origin exactly, never `*`.
#[tokio::test]
async fn cors_allows_listed_origins_with_credentials() {
    let hub = cors_hub().await;
    let preflight = hub
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/publish", hub.base))
        .header(header::ORIGIN, ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        );
    let res = send(preflight).await;
    assert_eq!(res.status(), StatusCode::OK);
    let allowed = |name: &str| {
        let value = res.headers().get(name).map(|v| v.to_str().unwrap());
        value.unwrap_or_default().to_ascii_lowercase()
    };
    assert_eq!(allowed("access-control-allow-origin"), ORIGIN);
    assert_eq!(allowed("access-control-allow-credentials"), "true");
    assert!(allowed("access-control-allow-methods").contains("post"));
    for name in ["authorization", "content-type", "last-event-id"] {
        assert!(
            allowed("access-control-allow-headers").contains(name),
            "{name}"
        );
    }

    let stream = send(
        hub.get("/events?channel=news")
            .header(header::ORIGIN, ORIGIN),
    )
    .await;
    let origin = stream.headers().get("access-control-allow-origin");
    assert_eq!(origin.map(|v| v.to_str().unwrap()), Some(ORIGIN));
    let mut events = Events::from(stream);
    let published = hub
        .post("channel=news", "from the page")
        .header(header::ORIGIN, ORIGIN)
        .bearer_auth(TOKEN);
    publish(published).await;
    assert_eq!(events.expect().await.data, "from the page");
}

/// Another origin gets no CORS headers (its browser refuses the answers); the hub itself
/// still answers as it would without CORS.
#[tokio::test]
async fn cors_gives_other_origins_nothing() {
    let hub = cors_hub().await;
    for origin in ["http://127.0.0.1:8001", "http://evil.example", "null"] {
        let res = send(hub.get("/healthz").header(header::ORIGIN, origin)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let allow = res.headers().get("access-control-allow-origin");
        assert_eq!(allow, None, "{origin}");
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Tracing caches per call site, process-wide, whether any subscriber listens; a subscriber set
/// for one test while other tests run on other threads can miss events. So the log test runs
/// alone, in a process of its own: this test binary, started again.
#[test]
fn requests_are_logged_without_the_access_token() {
    let exe = std::env::current_exe().unwrap();
    let args = [
        "logs_in_own_process",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ];
    let out = std::process::Command::new(exe).args(args).output().unwrap();
    let out = [out.stdout, out.stderr].concat();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("1 passed"), "{out}");
}

#[tokio::test]
#[ignore = "run alone by requests_are_logged_without_the_access_token"]
async fn logs_in_own_process() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let hub = Hub::with_token().await;
    let path = format!("/events?channel=private.x&access_token={TOKEN}");
    let mut events = hub.subscribe(&path).await;
    publish(hub.post(&format!("channel=private.x&access_token={TOKEN}"), "x")).await;
    events.expect().await;
    drop(events);
    wait_until("unsubscribe", || {
        hub.broker.subscriber_count("private.x") == 0
    })
    .await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("path=/events"), "{logs}");
    assert!(logs.contains("path=/publish"), "{logs}");
    assert!(logs.contains("status=200"), "{logs}");
    let subscribe = "tower_sse::service: subscribe channels=";
    assert!(logs.contains(subscribe), "{logs}");
    assert!(
        logs.contains("tower_sse::broker: unsubscribed channels=[\"private.x\"]"),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
}

// Flags.

#[test]
fn flags_have_the_documented_defaults() {
    hub::Args::command().debug_assert();
    let args = hub::Args::try_parse_from(["hub"]).unwrap();
    assert_eq!(args.bind, "127.0.0.1:8080");
    assert_eq!(args.redis_url, None);
    assert_eq!(args.flask_sse_redis, None);
    assert_eq!(args.token, None);
    assert_eq!(args.keep_alive, 15);
    assert_eq!(args.history, 1000);
}

#[test]
fn flags_parse() {
    let args = hub::Args::try_parse_from([
        "hub",
        "--bind",
        "0.0.0.0:9000",
        "--redis-url",
        "redis://127.0.0.1/",
        "--token",
        TOKEN,
        "--keep-alive",
        "0",
        "--history",
        "5",
    ])
    .unwrap();
    assert_eq!(args.bind, "0.0.0.0:9000");
    assert_eq!(args.redis_url.as_deref(), Some("redis://127.0.0.1/"));
    assert_eq!(args.token.as_deref(), Some(TOKEN));
    assert_eq!((args.keep_alive, args.history), (0, 5));
}

#[test]
fn help_and_bad_flags() {
    let help = hub::Args::try_parse_from(["hub", "--help"]).unwrap_err();
    assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    for flag in [
        "--bind",
        "--redis-url",
        "--token",
        "--keep-alive",
        "--history",
    ] {
        assert!(help.to_string().contains(flag), "{flag}");
    }
    let bad = [
        &["hub", "--token", ""][..],
        &["hub", "--history", "many"],
        &["hub", "--keep-alive", "-1"],
        &["hub", "--port", "1"],
    ];
    for args in bad {
        assert!(hub::Args::try_parse_from(args).is_err(), "{args:?}");
    }
}

/// Every flag can come from the environment, as `SSE_HUB_` and its name, and `--help` says
/// which variable; secrets' values are never shown.
#[test]
fn every_flag_has_its_environment_variable_in_help() {
    let mut command = hub::Args::command();
    let help = command.render_help().to_string();
    let mut flags = 0;
    for arg in command.get_arguments() {
        let Some(long) = arg
            .get_long()
            .filter(|long| !["help", "version"].contains(long))
        else {
            continue;
        };
        let expected = format!("SSE_HUB_{}", long.to_uppercase().replace('-', "_"));
        let env = arg.get_env().and_then(|env| env.to_str());
        assert_eq!(env, Some(expected.as_str()), "--{long}");
        assert!(
            help.contains(&format!("[env: {expected}")),
            "--{long}: {help}"
        );
        flags += 1;
    }
    assert!(flags >= 9, "{help}");
    for secret in ["token", "redis_url", "flask_sse_redis"] {
        let arg = command.get_arguments().find(|arg| arg.get_id() == secret);
        assert!(arg.unwrap().is_hide_env_values_set(), "{secret}");
    }
}

#[test]
fn cors_origins_repeat_or_come_as_a_list() {
    let args = hub::Args::try_parse_from([
        "hub",
        "--cors-origin",
        "http://127.0.0.1:8000,https://a.example",
        "--cors-origin",
        "https://b.example:8443",
    ])
    .unwrap();
    let origins: Vec<_> = args
        .cors_origin
        .iter()
        .map(|o| o.to_str().unwrap())
        .collect();
    let expected = [
        "http://127.0.0.1:8000",
        "https://a.example",
        "https://b.example:8443",
    ];
    assert_eq!(origins, expected);
    for bad in ["*", "https://a.example/", "a.example"] {
        let err = hub::Args::try_parse_from(["hub", "--cors-origin", bad]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
    }
    let conflicting = ["hub", "--token", TOKEN, "--allow-anonymous-publish"];
    assert!(hub::Args::try_parse_from(conflicting).is_err());
}

#[test]
fn redis_url_flag_then_sse_redis_url_then_redis_url() {
    let url = |s: &str| Some(s.to_owned());
    assert_eq!(
        hub::redis_url(url("flag"), url("sse"), url("redis")),
        url("flag")
    );
    assert_eq!(hub::redis_url(None, url("sse"), url("redis")), url("sse"));
    assert_eq!(hub::redis_url(None, None, url("redis")), url("redis"));
    assert_eq!(hub::redis_url(None, url(""), url("redis")), url("redis"));
    assert_eq!(hub::redis_url(url(""), None, None), None);
    assert_eq!(hub::redis_url(None, None, None), None);
}

#[tokio::test]
async fn broker_is_in_process_and_keeps_history() {
    let args = hub::Args::try_parse_from(["hub"]).unwrap();
    let broker = hub::broker(&args).await.unwrap();
    let mut ids = Vec::new();
    for data in ["1", "2"] {
        let event = tower_sse::Event::default().data(data);
        ids.push(broker.publish("news", event).await.unwrap());
    }
    // Nobody listened, yet the events are kept for resuming.
    let channels = broker.channel_rules().channels(["news"]);
    let channels = channels.unwrap();
    let mut subscription = broker.resume(&channels, &ids[0]).await.unwrap();
    assert_eq!(subscription.resume(), tower_sse::Resume::Complete);
    let second = format!("data: 2\nid: {}\n\n", ids[1]);
    assert_eq!(subscription.recv().await.unwrap(), second);

    let args = hub::Args::try_parse_from(["hub", "--history", "0"]).unwrap();
    let broker = hub::broker(&args).await.unwrap();
    broker
        .publish("news", tower_sse::Event::default())
        .await
        .unwrap();
    assert_eq!(broker.channel_count(), 0, "no history, nothing kept");
}

#[tokio::test]
async fn a_redis_url_is_never_silently_ignored() {
    for flag in ["--redis-url", "--flask-sse-redis"] {
        let args = hub::Args::try_parse_from(["hub", flag, "not a url"]).unwrap();
        let err = guard("connect", hub::broker(&args)).await.unwrap_err();
        if cfg!(not(feature = "redis")) {
            assert!(err.to_string().contains("`redis` feature"), "{flag}: {err}");
        }
    }
}

// Metrics.

/// The value of one sample line of a Prometheus scrape, `None` when absent.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_format() {
    let hub = Hub::with_token().await;
    let auth = format!("Bearer {TOKEN}");
    let scrape = || async {
        let res = send(hub.get("/metrics").header(header::AUTHORIZATION, &auth)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(content_type(&res), "text/plain; version=0.0.4");
        text(res).await
    };
    // Other tests share the process's recorder: use a channel of this test's own, and compare
    // counters before and after.
    let before = scrape().await;
    let mut first = hub.subscribe("/events?channel=metrics-test").await;
    let _second = hub.subscribe("/events?channel=metrics-test,other").await;
    let query = "channel=metrics-test";
    publish(hub.post(query, "x").header(header::AUTHORIZATION, &auth)).await;
    first.expect().await;
    let denied = send(hub.get("/events?channel=private.x")).await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let after = scrape().await;

    // No series per channel name by default (any client makes names up): the total only.
    let series = r#"sse_channel_subscribers{channel="metrics-test"}"#;
    assert_eq!(sample(&after, series), None, "{after}");
    assert!(sample(&after, "sse_subscribers") >= Some(2.0), "{after}");
    for counter in [
        "sse_events_published_total",
        r#"sse_access_denied_total{status="401"}"#,
    ] {
        let old = sample(&before, counter).unwrap_or(0.0);
        let new = sample(&after, counter).unwrap_or_else(|| panic!("no {counter} in {after}"));
        assert!(new > old, "{counter}: {old} -> {new}");
    }
    assert!(sample(&after, "sse_subscribers").is_some_and(|n| n >= 2.0));

    // Without the token: metrics name channels, so they are guarded too.
    let res = send(hub.get("/metrics")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
