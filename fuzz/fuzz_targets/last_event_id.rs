//! Fuzz target `last_event_id`: [`SseService`] requests with an arbitrary `Last-Event-ID`
//! header and/or `lastEventId` query parameter, on a broker with history.
//!
//! A reconnecting client's id is untrusted input that reaches the broker's resume logic, so
//! every request is checked against a model of the documented behaviour, not only for panics:
//!
//! - the status is `400` exactly when the id is bad (header over 1024 bytes or not UTF-8, as
//!   browsers send back any id they got; query value not strict percent-encoding of UTF-8 or
//!   over 1024 bytes decoded), else
//!   `200`; never a 5xx; the header wins over the query; an empty id is no id;
//! - a `400` is `text/plain` with a reason; a `200` is `text/event-stream`;
//! - on `200` the body is polled (once per frame, never waiting) until it is pending, and what
//!   it gave must be exactly the model's replay: the `gap` event (`data: gap` when some event
//!   after the id is gone, `data: unknown` for an id the broker doesn't know) followed by every
//!   kept event after the id on the requested channels, in publish order;
//! - once the body is dropped no subscriber is left.
//!
//! The broker (buffer and history 4, ids after the fixed base [`ID_BASE`], so that an input
//! means the same on every run) and its events are set up once, on a current-thread runtime;
//! the channels of a request come from a fixed list (channels with and without history), so
//! the broker's state never changes between runs.
#![no_main]

use std::{
    future::Future,
    pin::pin,
    sync::LazyLock,
    task::{Context, Poll, Waker},
};

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_sse::{Broker, ChannelRules, Event, SseService};

/// Ring size of every channel, and so how many events each keeps.
const KEPT: usize = 4;
/// The service's default limit on an id, in bytes.
const MAX_ID: usize = 1024;
/// The broker's id base ([`BrokerBuilder::id_base`](tower_sse::broker::BrokerBuilder::id_base)):
/// the sequence numbers are `ID_BASE + 1`, `ID_BASE + 2`, ...; a number at or below it is
/// from another start, so unknown. Fixed (not the default, the start time) so that a corpus
/// entry or a crash means the same on every run; not 0, so that the base is checked too.
const ID_BASE: u64 = 1000;

/// What is published at setup, in order: channel, publisher id, data. The sequence numbers are
/// `ID_BASE + 1`, `ID_BASE + 2`, ... in this order (the data says which). `1007` is a
/// publisher id that reads as a sequence number (the one of `a7`), `pa` is given twice (the
/// newer one counts), `p3` is no longer kept (so unknown), `é` needs percent-encoding in a
/// query.
const PUBLISHED: &[(&str, Option<&str>, &str)] = &[
    ("sse", None, "s1"),
    ("a", Some("pa"), "a2"),
    ("sse", Some("p3"), "s3"),
    ("b", None, "b4"),
    ("sse", Some("p5"), "s5"),
    ("sse", None, "s6"),
    ("a", None, "a7"),
    ("sse", None, "s8"),
    ("a", Some("pa"), "a9"),
    ("sse", None, "s10"),
    ("b", Some("1007"), "b11"),
    ("a", None, "a12"),
    ("b", Some("é"), "b13"),
];

/// The channel part of a request's query, and the channels it names. `c` and `d` have no
/// events (the first request on them creates them, after every publish).
const CHANNELS: &[(&str, &[&str])] = &[
    ("", &["sse"]),
    ("channel=a", &["a"]),
    ("channel=b", &["b"]),
    ("channel=a,b", &["a", "b"]),
    ("channel=sse&channel=b", &["sse", "b"]),
    ("channel=c", &["c"]),
    ("channel=c,a", &["c", "a"]),
    ("channel=sse,a,b,d", &["sse", "a", "b", "d"]),
];

#[derive(Arbitrary, Debug)]
struct Input {
    channels: u8,
    header: Option<Vec<u8>>,
    query: Option<QueryId>,
}

/// The `lastEventId` query value.
#[derive(Arbitrary, Debug)]
enum QueryId {
    /// Written into the URI as is (the request is skipped if that is no URI).
    Raw(String),
    /// Every byte percent-encoded, so any bytes reach the decoder.
    Encoded(Vec<u8>),
}

struct Setup {
    runtime: Runtime,
    service: SseService,
    broker: Broker,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Broker::builder()
        .buffer(KEPT)
        .history(KEPT)
        .id_base(ID_BASE)
        .build();
    runtime.block_on(async {
        for (seq, (channel, id, data)) in PUBLISHED.iter().enumerate() {
            let mut event = Event::default().data(*data);
            if let Some(id) = id {
                event = event.id(*id);
            }
            let got = broker.publish(channel, event).await.expect("publish");
            assert_eq!(got, id.map_or_else(|| seq_id(seq), str::to_owned), "setup");
        }
    });
    let service = SseService::new(broker.clone());
    Setup {
        runtime,
        service,
        broker,
    }
});

fuzz_target!(|input: Input| {
    let setup = &*SETUP;
    let (channel_query, channels) = CHANNELS[usize::from(input.channels) % CHANNELS.len()];
    let mut uri = format!("/?{channel_query}");
    match &input.query {
        Some(QueryId::Raw(raw)) => uri.push_str(&format!("&lastEventId={raw}")),
        Some(QueryId::Encoded(bytes)) => {
            uri.push_str("&lastEventId=");
            uri.extend(bytes.iter().map(|b| format!("%{b:02X}")));
        }
        None => {}
    }
    let mut builder = Request::get(uri.as_str());
    if let Some(value) = input
        .header
        .as_deref()
        .and_then(|b| HeaderValue::from_bytes(b).ok())
    {
        builder = builder.header("last-event-id", value);
    }
    let Ok(req) = builder.body(Full::new(Bytes::new())) else {
        // Not a URI (raw query value): nothing reaches the service.
        return;
    };
    // A raw value may add `channel` parameters: those requests would open channels outside
    // the fixed list (and change the broker for later runs), so they are left out.
    let named = ChannelRules::default().parse_query(req.uri().query());
    if named.map_or(true, |named| !named.iter().eq(channels.iter().copied())) {
        return;
    }
    let want = want_id(&req);

    let res = setup
        .runtime
        .block_on(setup.service.clone().oneshot(req))
        .unwrap_or_else(|never| match never {});
    let content_type = res.headers().get("content-type").cloned();
    let Ok(id) = want else {
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            content_type.as_ref().map(HeaderValue::as_bytes),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        let body = setup
            .runtime
            .block_on(res.into_body().collect())
            .unwrap_or_else(|never| match never {})
            .to_bytes();
        assert!(!body.is_empty(), "400 without a reason");
        return;
    };
    assert_eq!(res.status(), StatusCode::OK, "id {id:?}");
    assert_eq!(
        content_type.as_ref().map(HeaderValue::as_bytes),
        Some(&b"text/event-stream"[..])
    );

    let mut body = res.into_body();
    let mut got = Vec::new();
    {
        // Timers (the keep-alive) need the runtime; the body is polled here, never waited on.
        let _entered = setup.runtime.enter();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..64 {
            match pin!(body.frame()).poll(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    got.extend_from_slice(&frame.into_data().expect("a data frame"))
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => panic!("the stream ended"),
                Poll::Pending => break,
            }
        }
    }
    let want = expected_body(channels, id.as_deref());
    assert_eq!(
        String::from_utf8_lossy(&got),
        want,
        "id {id:?} on {channels:?}"
    );
    drop(body);
    assert_eq!(setup.broker.total_subscribers(), 0, "subscription leaked");
});

/// The id the service should take from `req`: `Err` for a 400, `Ok(None)` for none.
fn want_id<B>(req: &Request<B>) -> Result<Option<String>, ()> {
    let id = if let Some(value) = req.headers().get("last-event-id") {
        // Any UTF-8 (a `HeaderValue` has no control character but tab anyway).
        let bytes = value.as_bytes();
        if bytes.len() > MAX_ID {
            return Err(());
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| ())?
    } else {
        let query = req.uri().query().unwrap_or("");
        let value = query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == "lastEventId").then_some(value)
        });
        let Some(value) = value else { return Ok(None) };
        let id = form_decode(value).ok_or(())?;
        if id.len() > MAX_ID {
            return Err(());
        }
        id
    };
    Ok((!id.is_empty()).then_some(id))
}

/// Strict `x-www-form-urlencoded`: `+` is a space, `%` takes two hex digits, UTF-8 result.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digits = bytes.get(i + 1..i + 3)?;
                let value = |d: u8| (d as char).to_digit(16);
                out.push((value(digits[0])? * 16 + value(digits[1])?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The id the broker gives the event published `index`-th at setup, without an id of its own.
fn seq_id(index: usize) -> String {
    (ID_BASE + index as u64 + 1).to_string()
}

/// What the body gives at once, by the documented resume rules (see `Broker::resume`).
fn expected_body(channels: &[&str], id: Option<&str>) -> String {
    let Some(id) = id else {
        return String::new();
    };
    let last = ID_BASE + PUBLISHED.len() as u64;
    // Each event with its sequence number, and whether its channel still keeps it (the
    // last `KEPT` of the channel).
    let events = PUBLISHED
        .iter()
        .enumerate()
        .map(|(i, &(channel, given, data))| {
            let seq = ID_BASE + i as u64 + 1;
            let newer = PUBLISHED[i + 1..].iter().filter(|e| e.0 == channel).count();
            (seq, channel, given, data, newer < KEPT)
        });
    // Below this sequence number a channel may have lost events: the last one dropped, else
    // the one before its first event; a channel made by a subscriber starts at the last.
    let floor = |name: &str| -> u64 {
        let mine = events.clone().filter(|e| e.1 == name);
        let dropped = mine.clone().filter(|e| !e.4).map(|e| e.0).max();
        let first = mine.map(|e| e.0).min();
        dropped.or(first.map(|seq| seq - 1)).unwrap_or(last)
    };
    let is_seq = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
    let after = if is_seq {
        // Too big for a u64 is no sequence number, and not a publisher id either here; one at
        // or below the base is from another start.
        id.parse::<u64>().ok().filter(|&n| ID_BASE < n && n <= last)
    } else {
        // A publisher id of a kept event, on the first requested channel that has one.
        channels.iter().find_map(|name| {
            events
                .clone()
                .filter(|e| e.1 == *name && e.4 && e.2 == Some(id))
                .map(|e| e.0)
                .max()
        })
    };
    let Some(after) = after else {
        return "event: gap\ndata: unknown\n\n".to_owned();
    };
    let mut out = String::new();
    if channels.iter().any(|name| floor(name) > after) {
        out.push_str("event: gap\ndata: gap\n\n");
    }
    for (seq, channel, given, data, kept) in events {
        if kept && seq > after && channels.contains(&channel) {
            let id = given.map_or_else(|| seq.to_string(), str::to_owned);
            out.push_str(&format!("data: {data}\nid: {id}\n\n"));
        }
    }
    out
}
