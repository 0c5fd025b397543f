//! `access::jwt` over real sockets: `SseService` behind `AccessLayer::new(JwtPolicy)`. A
//! valid token streams; a token's `exp` ends the stream with the chunked body's normal end,
//! never before `exp`; an invalid token gets 401, a non-matching selector 403.
#![cfg(feature = "jwt")]

use tower_sse_test_support as support;

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::Router;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{guard, raw_get, wait_until};
use tower::Layer;
use tower_sse::{
    AccessLayer, Broker, Event, SseService,
    access::jwt::{JwtPolicy, Verifier},
};

const SECRET: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";

fn token(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn serve(broker: &Broker) -> SocketAddr {
    let policy = JwtPolicy::new(Verifier::hmac(SECRET));
    let service = AccessLayer::new(policy).layer(SseService::new(broker.clone()));
    let app = Router::new().route_service("/events", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_streams() {
    let broker = Broker::builder().id_base(0).build();
    let addr = serve(&broker).await;
    let token = token(&json!({"mercure": {"subscribe": ["https://example.com/users/{id}"]}}));
    let channel = "https://example.com/users/42";
    let res = support::send(
        support::client()
            .get(format!("http://{addr}/events"))
            .query(&[("channel", channel)])
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(res.status(), 200);
    wait_until("subscribed", || broker.subscriber_count(channel) == 1).await;
    broker
        .publish(channel, Event::default().data("hello"))
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let chunk = guard("event", futures_util::StreamExt::next(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b"data: hello\nid: 1\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_cleanly_at_the_tokens_exp_not_before() {
    let broker = Broker::builder().id_base(0).build();
    let addr = serve(&broker).await;
    let exp = unix_now() + 2;
    let token = token(&json!({"mercure": {"subscribe": ["t"]}, "exp": exp}));
    let bearer = format!("Bearer {token}");
    let response = raw_get(
        addr,
        "/events?channel=t",
        &[("authorization", &bearer)],
        async || {
            wait_until("subscribed", || broker.subscriber_count("t") == 1).await;
            broker
                .publish("t", Event::default().data("in time"))
                .await
                .unwrap();
        },
    )
    .await;
    let ended = SystemTime::now();
    let exp = UNIX_EPOCH + std::time::Duration::from_secs(exp);
    assert!(
        ended >= exp,
        "ended {:?} before exp",
        exp.duration_since(ended)
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // The event, then the last chunk: the body's normal end, not a dropped connection.
    let event = "data: in time\nid: 1\n\n";
    assert_eq!(body, format!("{:x}\r\n{event}\r\n0\r\n\r\n", event.len()));
    wait_until("unsubscribed", || broker.subscriber_count("t") == 0).await;
}

#[tokio::test]
async fn an_invalid_token_gets_401_and_a_non_matching_one_403() {
    let broker = Broker::new();
    let addr = serve(&broker).await;
    let client = support::client();
    let get = |token: &str| {
        client
            .get(format!("http://{addr}/events?channel=private.a"))
            .bearer_auth(token)
    };
    let wrong_key = encode(
        &Header::default(),
        &json!({"mercure": {"subscribe": ["*"]}}),
        &EncodingKey::from_secret(b"another key"),
    )
    .unwrap();
    for (token, reason) in [
        (wrong_key.as_str(), "invalid token signature"),
        ("not.a.token", "malformed token"),
    ] {
        let res = support::send(get(token)).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_eq!(support::text(res).await, reason);
    }
    let expired = token(&json!({"mercure": {"subscribe": ["*"]}, "exp": unix_now() - 1}));
    assert_eq!(support::send(get(&expired)).await.status(), 401);
    let other = token(&json!({"mercure": {"subscribe": ["private.b", "public/{x}"]}}));
    let res = support::send(get(&other)).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        support::text(res).await,
        "no subscribe selector matches the channel"
    );
    let res = support::send(client.get(format!("http://{addr}/events?channel=a"))).await;
    assert_eq!(res.status(), 401);
}
