//! The Mercure protocol (draft-07) at `/.well-known/mercure`, over the hub binary as shipped:
//! topic selectors (exact, URI templates, `*`), alternate topics sent once, private updates by
//! the subscriber's claims, the form and its errors, reconnection (`Last-Event-ID`,
//! `lastEventID`, `earliest`) and the `Last-Event-ID` response header; on Redis, two hubs
//! sharing updates, routes and history. Tokens are minted here with jsonwebtoken.
use tower_sse_test_support as support;

#[path = "support/hub_process.rs"]
mod hub_process;
#[path = "support/tokens.rs"]
mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use hub_process::HubProcess;
use reqwest::{RequestBuilder, StatusCode, header};
use serde_json::{Value, json};
use support::{events::Events, send, text};
use tokens::{KEY, hs256, now};

const PATH: &str = "/.well-known/mercure";
const BOOK: &str = "https://example.com/books/1";
const BOOKS: &str = "https://example.com/books/{id}";

fn jwt(claims: &Value) -> String {
    hs256(KEY, claims)
}

fn publisher() -> String {
    jwt(&json!({"mercure": {"publish": ["*"]}}))
}

fn subscriber(selectors: &[&str]) -> String {
    jwt(&json!({"mercure": {"subscribe": selectors}, "exp": now() + 3600}))
}

/// `GET /.well-known/mercure` with these topics (and more query, `&`-joined).
fn get(hub: &HubProcess, topics: &[&str], more: &str) -> RequestBuilder {
    let mut query: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    query.extend(more.split('&').filter_map(|pair| pair.split_once('=')));
    support::client().get(hub.url(PATH)).query(&query)
}

async fn open(hub: &HubProcess, topics: &[&str]) -> Events {
    Events::open(get(hub, topics, "")).await
}

/// `POST /.well-known/mercure` with this form, as a publisher with `*`.
fn post(hub: &HubProcess, form: &[(&str, &str)]) -> RequestBuilder {
    support::client()
        .post(hub.url(PATH))
        .bearer_auth(publisher())
        .form(form)
}

/// Publishes; the id the hub answered.
async fn publish(hub: &HubProcess, form: &[(&str, &str)]) -> String {
    let res = send(post(hub, form)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let kind = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    text(res).await
}

async fn answer(req: RequestBuilder) -> (StatusCode, String) {
    let res = send(req).await;
    (res.status(), text(res).await)
}

/// Exact topics, a URI template, `*`, an alternate topic: each subscriber gets each update it
/// matches once, with the id the hub answered, in order; a selector that matches nothing gets
/// nothing (seen once a later event it does match arrived).
#[tokio::test]
async fn selectors_and_alternate_topics() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut exact = open(&hub, &[BOOK]).await;
    let mut template = open(&hub, &[BOOKS]).await;
    let mut alias = open(&hub, &["books/first"]).await;
    let mut both = open(&hub, &[BOOK, "books/first", BOOKS]).await;
    let mut everything = open(&hub, &["*"]).await;
    let mut other = open(&hub, &["https://example.com/authors/{id}", "news"]).await;

    let first = publish(
        &hub,
        &[
            ("topic", BOOK),
            ("topic", "books/first"),
            ("data", "line 1\n\nline 3"),
            ("type", "book"),
        ],
    )
    .await;
    assert!(first.starts_with("urn:uuid:"), "{first}");
    let deeper = publish(
        &hub,
        &[
            ("topic", "https://example.com/books/1/reviews"),
            ("data", "r"),
        ],
    )
    .await;
    let news = publish(
        &hub,
        &[
            ("topic", "news"),
            ("data", "n"),
            ("id", "news-1"),
            ("retry", "2500"),
        ],
    )
    .await;
    assert_eq!(news, "news-1");

    for stream in [
        &mut exact,
        &mut template,
        &mut alias,
        &mut both,
        &mut everything,
    ] {
        let event = stream.expect().await;
        assert_eq!(
            (&*event.id, &*event.event, &*event.data),
            (&*first, "book", "line 1\n\nline 3")
        );
    }
    assert_eq!(everything.expect().await.id, deeper);
    assert_eq!(everything.expect().await.id, news);
    // The first event of these is the news: nothing before it, once each.
    let got = other.expect().await;
    assert_eq!((&*got.id, &*got.data), ("news-1", "n"));
    assert_eq!(got.retry, Some(std::time::Duration::from_millis(2500)));
    let last = publish(&hub, &[("topic", BOOK), ("data", "again")]).await;
    for stream in [&mut exact, &mut template, &mut both] {
        assert_eq!(stream.expect().await.id, last);
    }
}

/// More distinct selectors matching one update than a stream may name channels (32 by
/// default): each still gets it; the limit is on what one request names, not on routes.
#[tokio::test]
async fn more_matching_selectors_than_channels_per_stream() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut streams = Vec::new();
    for i in 0..40 {
        let selector = format!("https://example.com/{{kind{i}}}/1");
        streams.push(open(&hub, &[&selector]).await);
    }
    let id = publish(&hub, &[("topic", BOOK), ("data", "for all")]).await;
    for stream in &mut streams {
        assert_eq!(stream.expect().await.id, id);
    }
    // A request naming more topics than that is refused, with the reason.
    let topics: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let mut form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", t.as_str())).collect();
    form.push(("data", "x"));
    let (status, reason) = answer(post(&hub, &form)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
}

/// Private updates reach only subscribers whose `mercure.subscribe` claim matches one of their
/// topics; an invalid or expired token is a 401, never anonymous.
#[tokio::test]
async fn private_updates_go_by_the_claims() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let topic = "https://example.com/users/42";
    let mut anonymous = open(&hub, &[topic]).await;
    let mut owner = Events::open(get(&hub, &[topic], "").bearer_auth(subscriber(&[topic]))).await;
    let mut by_template = Events::open(
        get(&hub, &["https://example.com/users/{id}"], "")
            .bearer_auth(subscriber(&["https://example.com/users/{id}"])),
    )
    .await;
    let query = format!("authorization={}", subscriber(&["*"]));
    let mut admin = Events::open(get(&hub, &["*"], &query)).await;
    let mut stranger = Events::open(
        get(&hub, &[topic], "").bearer_auth(subscriber(&["https://example.com/users/7"])),
    )
    .await;

    let secret = publish(
        &hub,
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    let public = publish(&hub, &[("topic", topic), ("data", "public")]).await;
    for stream in [&mut owner, &mut by_template, &mut admin] {
        assert_eq!(stream.expect().await.id, secret);
        assert_eq!(stream.expect().await.id, public);
    }
    for stream in [&mut anonymous, &mut stranger] {
        assert_eq!(stream.expect().await.id, public, "no private update first");
    }

    let expired = jwt(&json!({"mercure": {"subscribe": ["*"]}, "exp": now() - 10}));
    for token in [expired, "not.a.token".into(), subscriber(&["*"]) + "x"] {
        let (status, _) = answer(get(&hub, &[topic], "").bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
    }
}

/// A stream ends at its subscriber token's `exp`, cleanly (the end of the body, so that an
/// `EventSource` reconnects with a fresh token), and never before it.
#[tokio::test]
async fn a_stream_ends_at_its_token_exp() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let exp = now() + 2;
    let token = jwt(&json!({"mercure": {"subscribe": ["*"]}, "exp": exp}));
    let mut stream = Events::open(get(&hub, &[BOOK], "").bearer_auth(&token)).await;
    let id = publish(&hub, &[("topic", BOOK), ("data", "before exp")]).await;
    assert_eq!(stream.expect().await.id, id);
    assert!(stream.next().await.is_none(), "the stream ends");
    let ended = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(
        ended.as_secs_f64() >= exp as f64,
        "ended at {ended:?}, before exp {exp}"
    );
}

/// The form's errors and the publisher's rights: each refused, with a reason, publishing
/// nothing.
#[tokio::test]
async fn bad_publishes_are_refused() {
    let hub = HubProcess::start(&["--jwt-key", KEY, "--cors-origin", "https://app.example"]).await;
    let mut stream = open(&hub, &["*"]).await;
    let form = [("topic", BOOK), ("data", "x")];
    let client = support::client();
    let (status, _) = answer(client.post(hub.url(PATH)).form(&form)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let narrow = jwt(&json!({"mercure": {"publish": [BOOKS]}}));
    let two = [("topic", BOOK), ("topic", "news"), ("data", "x")];
    let (status, reason) = answer(client.post(hub.url(PATH)).bearer_auth(&narrow).form(&two)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reason}");
    for (body, why) in [
        ("data=x", "topic"),
        ("topic=a&id=1&id=2", "twice"),
        ("topic=a&retry=soon", "retry"),
        ("topic=%zz", ""),
        ("topic=a%20b", "channel"),
    ] {
        let req = client
            .post(hub.url(PATH))
            .bearer_auth(publisher())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let (status, reason) = answer(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reason}");
        assert!(reason.contains(why), "{body}: {reason}");
    }
    let json = client
        .post(hub.url(PATH))
        .bearer_auth(publisher())
        .header(header::CONTENT_TYPE, "application/json")
        .body(json!({"topic": BOOK}).to_string());
    assert_eq!(answer(json).await.0, StatusCode::BAD_REQUEST);
    // The cookie: only from a listed origin.
    let cookie = format!("mercureAuthorization={}", publisher());
    let from = |origin: Option<&str>| {
        let req = client
            .post(hub.url(PATH))
            .header(header::COOKIE, &cookie)
            .form(&form);
        match origin {
            Some(origin) => req.header(header::ORIGIN, origin),
            None => req,
        }
    };
    assert_eq!(answer(from(None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        answer(from(Some("https://evil.example"))).await.0,
        StatusCode::FORBIDDEN
    );
    let id = text(send(from(Some("https://app.example"))).await).await;
    // Nothing else was published.
    assert_eq!(stream.expect().await.id, id);
}

/// Reconnection: `Last-Event-ID` or `lastEventID` resumes after that update, `earliest` sends
/// everything kept; the response's `Last-Event-ID` is the update before the first one sent,
/// else `earliest`.
#[tokio::test]
async fn reconnection_and_the_last_event_id_header() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let header_of = |res: &reqwest::Response| {
        res.headers()
            .get("last-event-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    // Nothing published yet.
    let res = send(get(&hub, &[BOOKS], "")).await;
    assert_eq!(header_of(&res).as_deref(), Some("earliest"));
    drop(res);
    let mut ids = Vec::new();
    for data in ["a", "b", "c"] {
        ids.push(publish(&hub, &[("topic", BOOK), ("data", data)]).await);
    }
    // Live: the last one before it.
    let res = send(get(&hub, &[BOOK], "")).await;
    assert_eq!(header_of(&res).as_ref(), Some(&ids[2]));
    drop(res);
    for (req, first) in [
        (get(&hub, &[BOOK], "").header("Last-Event-ID", &ids[0]), 1),
        (get(&hub, &[BOOK], &format!("lastEventID={}", ids[1])), 2),
    ] {
        let res = send(req).await;
        assert_eq!(header_of(&res).as_ref(), Some(&ids[first - 1]));
        let mut events = Events::from(res);
        for id in &ids[first..] {
            assert_eq!(&events.expect().await.id, id);
        }
    }
    let res = send(get(&hub, &[BOOK], "lastEventID=earliest")).await;
    assert_eq!(header_of(&res).as_deref(), Some("earliest"));
    let mut events = Events::from(res);
    for id in &ids {
        assert_eq!(&events.expect().await.id, id);
    }
    // An id the hub does not know: told by the header, and the stream goes on live.
    let res = send(get(&hub, &[BOOK], "").header("Last-Event-ID", "urn:uuid:unknown")).await;
    assert_eq!(header_of(&res).as_deref(), Some("earliest"));
    let mut events = Events::from(res);
    let next = publish(&hub, &[("topic", BOOK), ("data", "d")]).await;
    assert_eq!(events.expect().await.id, next);
    let (status, reason) = answer(support::client().get(hub.url(PATH))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
}

/// Two hubs on one Redis: an update published on A reaches B's exact, template and `*`
/// subscribers, once; a resume on B from an id A answered replays what followed it.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_hubs_on_redis_share_updates_routes_and_history() {
    let redis = support::redis_server!();
    let url = redis.url();
    let a = HubProcess::start(&["--jwt-key", KEY, "--redis-url", &url]).await;
    let b = HubProcess::start(&["--jwt-key", KEY, "--redis-url", &url]).await;
    let mut exact = open(&b, &[BOOK]).await;
    let mut template = open(&b, &[BOOKS]).await;
    let mut everything = open(&b, &["*", BOOK]).await;
    // B's routes are announced through Redis: publish on A until one reaches the template.
    let mut probes = Vec::new();
    let first = loop {
        assert!(
            probes.len() < 100,
            "A never routed to B's template subscriber"
        );
        let id = publish(&a, &[("topic", BOOK), ("data", "probe")]).await;
        assert_eq!(exact.expect().await.id, id);
        probes.push(id);
        let wait = std::time::Duration::from_millis(100);
        if let Ok(event) = tokio::time::timeout(wait, template.expect()).await {
            assert!(probes.contains(&event.id), "{event:?}");
            break event.id;
        }
    };
    // Past the probes: from here on every stream gets each update once, in order.
    let next = publish(
        &a,
        &[("topic", BOOK), ("topic", "books/alias"), ("data", "n")],
    )
    .await;
    for stream in [&mut template, &mut everything] {
        loop {
            let event = stream.expect().await;
            if event.id == next {
                break;
            }
            assert!(probes.contains(&event.id), "{event:?}");
        }
    }
    assert_eq!(exact.expect().await.id, next);
    let last = publish(&a, &[("topic", BOOK), ("data", "l")]).await;
    assert_eq!(everything.expect().await.id, last, "no duplicate of {next}");
    // Resume on B from an id A answered: what followed it on that topic.
    let res = send(get(&b, &[BOOK], "").header("Last-Event-ID", &first)).await;
    assert_eq!(res.headers()["last-event-id"], first.as_str());
    let mut resumed = Events::from(res);
    let after: Vec<&String> = probes
        .iter()
        .skip_while(|id| **id != first)
        .skip(1)
        .collect();
    for id in after {
        assert_eq!(&resumed.expect().await.id, id);
    }
    assert_eq!(resumed.expect().await.id, next);
    assert_eq!(resumed.expect().await.id, last);
}
