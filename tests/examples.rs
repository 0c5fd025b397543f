//! The stack examples (`examples/{hyper,axum,tower_http,tonic_web}.rs`) over real sockets: each app served on `127.0.0.1:0`, reqwest as the HTTP/1.1
//! client, eventsource-stream as the parser, tonic's own client for gRPC over HTTP/2. So every
//! example is known to serve, not just to compile.

#[path = "../examples/axum.rs"]
#[allow(dead_code)]
mod axum_example;
#[path = "../examples/hyper.rs"]
#[allow(dead_code)]
mod hyper_example;
#[path = "../examples/tonic_web.rs"]
#[allow(dead_code)]
mod tonic_web_example;
#[path = "../examples/tower_http.rs"]
#[allow(dead_code)]
mod tower_http_example;

use tower_sse_test_support as support;
use tower_sse_test_support::events;

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    time::Duration,
};

use events::Events;
use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode, header};
use support::{client, guard, send, text};
use tokio::{net::TcpListener, sync::oneshot};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower_sse::Broker;

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A JSON body (reqwest's `json` feature is off).
fn json(request: RequestBuilder, value: &serde_json::Value) -> RequestBuilder {
    let request = request.header(header::CONTENT_TYPE, "application/json");
    request.body(value.to_string())
}

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|value| value.to_str().unwrap())
}

/// A stop signal for the servers that take one: send, or drop, to stop.
fn stop_signal() -> (oneshot::Sender<()>, impl Future<Output = ()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async {
        stopped.await.ok();
    })
}

// hyper

#[tokio::test]
async fn hyper_streams_published_messages_and_answers_404() {
    let (listener, addr) = bind().await;
    let broker = Broker::builder().id_base(0).build();
    let (_stop, signal) = stop_signal();
    tokio::spawn(hyper_example::serve(listener, broker.clone(), signal));
    let (client, base) = (client(), format!("http://{addr}"));
    let mut events = Events::open(client.get(format!("{base}/stream"))).await;
    assert_eq!(broker.subscriber_count("sse"), 1);

    let res = send(client.get(format!("{base}/publish?msg=Hello%2C+world%21"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "published 1\n");
    let event = events.expect().await;
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("Hello, world!", "1")
    );

    for (path, status) in [
        ("/", StatusCode::NOT_FOUND),
        ("/streams", StatusCode::NOT_FOUND),
        ("/publish", StatusCode::BAD_REQUEST),
        ("/publish?msg=%FF", StatusCode::BAD_REQUEST),
        ("/publish?msg=%4", StatusCode::BAD_REQUEST),
        ("/stream?channel=%ZZ", StatusCode::BAD_REQUEST),
    ] {
        let res = send(client.get(format!("{base}{path}"))).await;
        assert_eq!(res.status(), status, "{path}");
        let content_type = header(&res, "content-type");
        assert_eq!(content_type, Some("text/plain; charset=utf-8"), "{path}");
    }
    // None of those published: the next event is the next publish.
    send(client.get(format!("{base}/publish?msg=next"))).await;
    assert_eq!(events.expect().await.data, "next");
}

#[tokio::test]
async fn hyper_graceful_shutdown_ends_open_streams() {
    let (listener, addr) = bind().await;
    let broker = Broker::builder().id_base(0).build();
    let (stop, signal) = stop_signal();
    let server = tokio::spawn(hyper_example::serve(listener, broker.clone(), signal));
    let (client, base) = (client(), format!("http://{addr}"));
    let mut events = Events::open(client.get(format!("{base}/stream"))).await;
    let mut other = Events::open(client.get(format!("{base}/stream?channel=other"))).await;
    let res = send(client.get(format!("{base}/publish?msg=last"))).await;
    assert_eq!(res.status(), StatusCode::OK);

    stop.send(()).unwrap();
    assert_eq!(
        events.expect().await.data,
        "last",
        "delivered before the end"
    );
    assert!(events.next().await.is_none(), "the stream ends");
    assert!(other.next().await.is_none(), "every stream ends");
    guard("graceful shutdown", server).await.unwrap().unwrap();
    assert!(broker.is_closed());
    let refused = guard("connect", client.get(format!("{base}/stream")).send()).await;
    assert!(refused.is_err(), "the listener is closed");
}

// axum

const ADMIN_TOKEN: &str = "s3cret";

async fn serve_axum(broker: &Broker) -> String {
    let (listener, addr) = bind().await;
    let app = axum_example::app(broker.clone(), ADMIN_TOKEN);
    tokio::spawn(axum::serve(listener, app).into_future());
    format!("http://{addr}")
}

#[tokio::test]
async fn axum_routes_and_json_messages() {
    let broker = Broker::builder().id_base(0).build();
    let (base, client) = (serve_axum(&broker).await, client());
    let res = send(client.get(format!("{base}/"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(text(res).await.contains("/stream"));

    let mut events = Events::open(client.get(format!("{base}/stream?channel=news"))).await;
    let message = serde_json::json!({ "channel": "news", "text": "Hello, \"world\"\n" });
    let res = send(json(client.post(format!("{base}/messages")), &message)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, r#"{"id":"1"}"#);
    let event = events.expect().await;
    assert_eq!((event.event.as_str(), event.id.as_str()), ("message", "1"));
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data, message);

    let messages = || client.post(format!("{base}/messages"));
    let refused = [
        (messages().body(r#"{"channel":"news","text":"x"}"#), 415),
        (
            json(messages(), &serde_json::json!({ "channel": "news" })),
            422,
        ),
        (
            messages()
                .header("content-type", "application/json")
                .body("{"),
            400,
        ),
        (
            json(
                messages(),
                &serde_json::json!({ "channel": "bad name", "text": "x" }),
            ),
            400,
        ),
        (client.get(format!("{base}/messages")), 405),
        (client.get(format!("{base}/nope")), 404),
    ];
    for (request, status) in refused {
        assert_eq!(send(request).await.status(), status);
    }
    let res = send(json(
        messages(),
        &serde_json::json!({ "channel": "news", "text": "next" }),
    ));
    assert_eq!(res.await.status(), StatusCode::OK);
    let event = events.expect().await;
    assert_eq!(event.id, "2", "no refused message was published");
}

#[tokio::test]
async fn axum_access_layer_guards_admin_channels() {
    let broker = Broker::builder().id_base(0).build();
    let (base, client) = (serve_axum(&broker).await, client());
    let stream = |query: &str| client.get(format!("{base}/stream?{query}"));
    let bearer = |token: &str| format!("Bearer {token}");
    let attempts = [
        (stream("channel=admin.ops"), StatusCode::UNAUTHORIZED),
        (
            stream("channel=news&channel=admin.ops"),
            StatusCode::UNAUTHORIZED,
        ),
        (stream("channel=news,admin%2Eops"), StatusCode::UNAUTHORIZED),
        (
            stream("channel=admin.ops").header("authorization", bearer("wrong")),
            StatusCode::FORBIDDEN,
        ),
        (
            stream("channel=admin.ops").header("authorization", ADMIN_TOKEN),
            StatusCode::FORBIDDEN,
        ),
        (stream("channel=admin.ops%00"), StatusCode::BAD_REQUEST),
    ];
    for (request, status) in attempts {
        let res = send(request).await;
        assert_eq!(res.status(), status);
        assert_ne!(header(&res, "content-type"), Some("text/event-stream"));
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(header(&res, "www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(
        broker.subscriber_count("news"),
        0,
        "a denial starts no stream"
    );
    assert_eq!(broker.subscriber_count("admin.ops"), 0);

    // Publishing to an admin channel needs the token too.
    let message = serde_json::json!({ "channel": "admin.ops", "text": "deploy" });
    let publish = || json(client.post(format!("{base}/messages")), &message);
    assert_eq!(send(publish()).await.status(), StatusCode::UNAUTHORIZED);
    let res = send(publish().header("authorization", bearer("wrong"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // With the token: streams, and the denied publishes never happened.
    let request = stream("channel=news,admin.ops").header("authorization", bearer(ADMIN_TOKEN));
    let mut events = Events::open(request).await;
    assert_eq!(broker.subscriber_count("admin.ops"), 1);
    let res = send(publish().header("authorization", bearer(ADMIN_TOKEN))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let event = events.expect().await;
    assert_eq!(event.id, "1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&event.data).unwrap(),
        message
    );
}

// tower-http

/// The timeout the tower_http test app runs with.
const TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn tower_http_stack_leaves_streams_uncompressed_and_open_past_the_timeout() {
    let (listener, addr) = bind().await;
    let broker = Broker::builder().id_base(0).build();
    let app = tower_http_example::app(broker.clone(), TIMEOUT);
    tokio::spawn(axum::serve(listener, app).into_future());
    let (client, base) = (client(), format!("http://{addr}"));
    let origin = "http://app.example";

    let res = send(
        client
            .get(format!("{base}/stream?channel=news"))
            .header(header::ACCEPT_ENCODING, "gzip")
            .header(header::ORIGIN, origin),
    )
    .await;
    assert_eq!(header(&res, "content-encoding"), None, "never compressed");
    assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&res, "cache-control"), Some("no-cache"), "kept");
    let mut events = Events::from(res);
    let publish = |data: &str| {
        let url = format!("{base}/publish?channel=news");
        client.post(url).body(data.to_owned())
    };
    assert_eq!(text(send(publish("first")).await).await, "1\n");
    assert_eq!(events.expect().await.data, "first", "arrives at once");

    // The page, by contrast, is compressed and gets the cache-control header.
    let page = client
        .get(format!("{base}/"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::ORIGIN, origin);
    let res = send(page).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-encoding"), Some("gzip"));
    assert_eq!(header(&res, "cache-control"), Some("max-age=60"));
    assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));

    // A publish whose body never finishes times out: its 408 is the signal that the timeout
    // has elapsed since the stream opened.
    let stalled = futures_util::stream::once(async { Ok::<_, std::io::Error>("partial") })
        .chain(futures_util::stream::pending());
    let res = send(publish("").body(reqwest::Body::wrap_stream(stalled))).await;
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    let cors = header(&res, "access-control-allow-origin");
    assert_eq!(cors, Some("*"), "CORS sits outside the timeout");

    assert_eq!(text(send(publish("after")).await).await, "2\n");
    let event = events.expect().await;
    assert_eq!(event.data, "after", "the stream outlived the timeout");
}

#[tokio::test]
async fn tower_http_stack_limits_bodies_and_answers_cors_preflight() {
    let (listener, addr) = bind().await;
    let broker = Broker::builder().id_base(0).build();
    let app = tower_http_example::app(broker.clone(), Duration::from_secs(5));
    tokio::spawn(axum::serve(listener, app).into_future());
    let (client, base) = (client(), format!("http://{addr}"));
    let mut events = Events::open(client.get(format!("{base}/stream"))).await;
    let publish = |size: usize| {
        client
            .post(format!("{base}/publish"))
            .body("x".repeat(size))
    };

    let res = send(publish(tower_http_example::MAX_BODY + 1)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = send(publish(tower_http_example::MAX_BODY)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let event = events.expect().await;
    assert_eq!(event.data.len(), tower_http_example::MAX_BODY);
    assert_eq!(event.id, "1", "the refused body published nothing");

    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/publish"))
        .header(header::ORIGIN, "http://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST");
    let res = send(preflight).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
    let methods = header(&res, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
}

// tonic + tonic-web

/// Reads grpc-web frames: `(flag, payload)`, flag `0x00` for a message, `0x80` for trailers.
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a frame header: {body:?}");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        frames.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    frames
}

#[tokio::test]
async fn tonic_web_serves_grpc_grpc_web_and_the_stream_on_one_port() {
    let (listener, addr) = bind().await;
    let broker = Broker::builder().id_base(0).build();
    let (stop, signal) = stop_signal();
    let server = tokio::spawn(tonic_web_example::serve(listener, broker.clone(), signal));
    let (client, base) = (client(), format!("http://{addr}"));

    // The event stream, over HTTP/1.1.
    let mut events = Events::open(client.get(format!("{base}/stream"))).await;
    let res = send(client.post(format!("{base}/publish")).body("Hello!")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(events.expect().await.data, "Hello!");

    // gRPC, over HTTP/2 on the same port.
    let channel = tonic::transport::Endpoint::from_shared(base.clone()).unwrap();
    let channel = guard("grpc connect", channel.connect()).await.unwrap();
    let health = HealthClient::new(channel);
    let check = |service: &str| {
        let service = service.to_owned();
        let mut health = health.clone();
        async move { health.check(HealthCheckRequest { service }).await }
    };
    let answer = guard("grpc check", check("")).await.unwrap().into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
    let unknown = guard("grpc check", check("nope")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // grpc-web, over HTTP/1.1: an empty HealthCheckRequest (service "") in one frame.
    let grpc_web = client
        .post(format!("{base}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc-web")
        .header("x-grpc-web", "1")
        .body(vec![0_u8, 0, 0, 0, 0]);
    let res = send(grpc_web).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    let content_type = header(&res, "content-type").unwrap();
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    let body = guard("grpc-web body", res.bytes()).await.unwrap();
    let frames = grpc_web_frames(&body);
    assert_eq!(frames.len(), 2, "{frames:?}");
    // HealthCheckResponse { status: SERVING }: field 1, varint 1.
    assert_eq!(frames[0], (0x00, vec![0x08, 0x01]));
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Plain HTTP elsewhere: 404, not a gRPC answer.
    let res = send(client.get(format!("{base}/nope"))).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // The stream still works, and a graceful shutdown ends it.
    let res = send(client.post(format!("{base}/publish")).body("last")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(events.expect().await.data, "last");
    drop(health);
    stop.send(()).unwrap();
    assert!(events.next().await.is_none(), "the stream ends");
    guard("graceful shutdown", server).await.unwrap().unwrap();
    assert!(broker.is_closed());
}
