//! Fuzz target `mercure`: the hub's Mercure endpoint (`tower_sse_hub::app_with_rights`, with a
//! publisher and a subscriber HMAC key) driven in process, as any client could: a subscription
//! (`GET /.well-known/mercure` with arbitrary topic selectors, `Last-Event-ID`, and a subscriber
//! token with arbitrary `mercure.subscribe` claims, or none, or a bad one), then an update
//! (`POST` with a form of arbitrary fields, raw or encoded, and a publisher token with arbitrary
//! `mercure.publish` claims, or none), then the subscription's stream read as far as it goes.
//!
//! What must hold:
//!
//! - never a panic and never a 5xx; a refusal (`400`, `401`, `403`, `413`) says why in its body;
//!   a stream is `200 text/event-stream`;
//! - an update answered `200` has its id as the body: the form's `id`, else a `urn:uuid:`;
//! - when the form is fully known (no raw field), an anonymous stream gets the update exactly
//!   once, with its id, when it is public and the stream's topics include `*` or one of the
//!   update's topics; it gets no update when it is private, or when every topic of the stream is
//!   exact and none is one of the update's.
//!
//! Each run builds a new broker and app on a new current-thread runtime (the state never
//! carries over, and the hub's background tasks end with the runtime).
#![no_main]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_sse::{Broker, access::jwt::Verifier};
use tower_sse_hub::{Rights, app_with_rights};

const KEY: &[u8] = b"fuzzing key";
const PATH: &str = "/.well-known/mercure";

#[derive(Arbitrary, Debug)]
struct Input {
    subscribe: Vec<String>,
    raw_query: Option<String>,
    last_event_id: Option<String>,
    subscriber: Token,
    fields: Vec<Field>,
    publisher: Token,
}

/// A token in the request, or none.
#[derive(Arbitrary, Debug)]
enum Token {
    None,
    /// Signed with the hub's key: `mercure.publish` and `mercure.subscribe` as given, and
    /// `exp` an hour from now, or in the past.
    Signed {
        publish: Vec<String>,
        subscribe: Vec<String>,
        expired: bool,
    },
    /// Anything at all.
    Raw(String),
}

/// A field of the update's form.
#[derive(Arbitrary, Debug)]
enum Field {
    Topic(String),
    Data(String),
    Private,
    Id(String),
    Type(String),
    Retry(String),
    /// Written into the form as is.
    Raw(Vec<u8>),
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn bearer(token: &Token) -> Option<String> {
    match token {
        Token::None => None,
        Token::Raw(raw) => Some(format!("Bearer {raw}")),
        Token::Signed {
            publish,
            subscribe,
            expired,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let exp = if *expired { now - 3600 } else { now + 3600 };
            let claims = serde_json::json!({
                "mercure": {"publish": publish, "subscribe": subscribe},
                "exp": exp,
            });
            let token =
                jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(KEY))
                    .expect("a token");
            Some(format!("Bearer {token}"))
        }
    }
}

/// Sends `req` and checks the status: never a 5xx, a refusal with a reason.
fn send(
    rt: &Runtime,
    app: &axum::Router,
    req: Request<Full<Bytes>>,
) -> Option<Response<axum::body::Body>> {
    let res = rt
        .block_on(app.clone().oneshot(req))
        .unwrap_or_else(|never| match never {});
    let status = res.status();
    assert!(!status.is_server_error(), "{status}");
    if status == StatusCode::OK {
        return Some(res);
    }
    assert!(
        matches!(status.as_u16(), 400 | 401 | 403 | 413),
        "unexpected {status}"
    );
    let body = rt
        .block_on(res.into_body().collect())
        .expect("a body")
        .to_bytes();
    assert!(!body.is_empty(), "{status} without a reason");
    None
}

/// What the stream gives now, without waiting.
fn read_now(rt: &Runtime, body: &mut axum::body::Body) -> String {
    let _entered = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut got = Vec::new();
    for _ in 0..64 {
        match pin!(body.frame()).poll(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(err))) => panic!("stream error: {err}"),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    String::from_utf8(got).expect("UTF-8 frames")
}

fuzz_target!(|input: Input| {
    let rt = &tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Broker::builder().history(4).build();
    let rights = Rights::default()
        .publisher(Verifier::hmac(KEY))
        .subscriber(Verifier::hmac(KEY));
    let app = app_with_rights(broker, rights, None);

    // The subscription.
    let mut query: Vec<String> = input
        .subscribe
        .iter()
        .map(|topic| format!("topic={}", encode(topic)))
        .collect();
    if let Some(raw) = &input.raw_query {
        query.push(raw.clone());
    }
    let mut get = Request::get(format!("{PATH}?{}", query.join("&")));
    if let Some(auth) = bearer(&input.subscriber) {
        get = get.header(header::AUTHORIZATION, auth);
    }
    if let Some(id) = &input.last_event_id {
        get = get.header("last-event-id", id.as_str());
    }
    let stream = match get.body(Full::new(Bytes::new())) {
        Ok(req) => send(rt, &app, req),
        // Not a URI or not a header value: nothing reaches the hub.
        Err(_) => None,
    };
    let mut stream = stream.map(|res| {
        let kind = res.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            kind.as_ref().map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        res.into_body()
    });
    let before = stream
        .as_mut()
        .map(|body| read_now(rt, body))
        .unwrap_or_default();

    // The update.
    let mut form = Vec::new();
    for field in &input.fields {
        let part = match field {
            Field::Topic(topic) => format!("topic={}", encode(topic)).into_bytes(),
            Field::Data(data) => format!("data={}", encode(data)).into_bytes(),
            Field::Private => b"private=on".to_vec(),
            Field::Id(id) => format!("id={}", encode(id)).into_bytes(),
            Field::Type(kind) => format!("type={}", encode(kind)).into_bytes(),
            Field::Retry(retry) => format!("retry={}", encode(retry)).into_bytes(),
            Field::Raw(raw) => raw.clone(),
        };
        if !form.is_empty() {
            form.push(b'&');
        }
        form.extend_from_slice(&part);
    }
    let mut post =
        Request::post(PATH).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(auth) = bearer(&input.publisher) {
        post = post.header(header::AUTHORIZATION, auth);
    }
    let Ok(req) = post.body(Full::new(Bytes::from(form))) else {
        return;
    };
    let Some(res) = send(rt, &app, req) else {
        return;
    };
    let body = rt
        .block_on(res.into_body().collect())
        .expect("a body")
        .to_bytes();
    let id = std::str::from_utf8(&body).expect("a UTF-8 id").to_owned();
    let given = input.fields.iter().rev().find_map(|f| match f {
        Field::Id(id) => Some(id.as_str()),
        _ => None,
    });
    let raw = input.fields.iter().any(|f| matches!(f, Field::Raw(_)));
    if !raw {
        match given {
            Some(given) => assert_eq!(id, given),
            None => assert!(id.starts_with("urn:uuid:"), "{id}"),
        }
    }

    // What the stream got, against the model when the form and the query are fully known.
    let Some(stream) = stream.as_mut() else {
        return;
    };
    let after = read_now(rt, stream);
    let anonymous = matches!(input.subscriber, Token::None);
    if raw || input.raw_query.is_some() || !anonymous {
        return;
    }
    let private = input.fields.iter().any(|f| matches!(f, Field::Private));
    let topics: Vec<&str> = input
        .fields
        .iter()
        .filter_map(|f| match f {
            Field::Topic(topic) => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    let selectors = &input.subscribe;
    let exact = |s: &str| s != "*" && !s.contains('{');
    let ids = after
        .split("\n\n")
        .filter(|frame| frame.lines().any(|l| l.starts_with("data")))
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("id: ")))
        .collect::<Vec<_>>();
    let must = !private
        && selectors
            .iter()
            .any(|s| s == "*" || topics.contains(&s.as_str()));
    let must_not = private
        || selectors
            .iter()
            .all(|s| exact(s) && !topics.contains(&s.as_str()));
    if must {
        assert_eq!(ids, [id.as_str()], "{before:?} then {after:?}");
    }
    if must_not {
        assert!(ids.is_empty(), "{after:?}");
    }
});
