//! Property tests: the wire format against an independent parser, and the channel list against
//! the access check, for inputs nobody thought of.
//!
//! - Any [`Event`] the API accepts (data with CR, LF, CRLF, unicode, colons, leading spaces;
//!   event type, id, retry, comments) encodes to bytes that `eventsource-stream`, a separate
//!   implementation of the WHATWG parser, fed several events as one stream in arbitrary
//!   chunks, decodes to the same fields; and the events the API rejects are exactly those with
//!   CR or LF in the event type or id, or NUL in the id.
//! - Any query string gives either a clean `400` with the parser's reason, or a stream whose
//!   channels (what [`AccessLayer`] puts in the request's extensions for the inner service) are
//!   exactly the channels the access policy was asked about, in order.
//!
//! 256 cases per property, so the suite stays within the normal test run.

use std::{
    convert::Infallible,
    future::ready,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt};
use http::{Request, Response, request::Parts};
use proptest::{prelude::*, test_runner::FileFailurePersistence};
use tower::{Layer, ServiceExt};
use tower_sse::{AccessLayer, ChannelRules, Channels, Event, EventError, access::Denied};

/// 256 cases; a failure is kept in `tests/properties.proptest-regressions` and tried first.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// Events.

/// Strings rich in what the format must escape or keep: line breaks, colons, spaces, NUL,
/// non-ASCII (two, three and four bytes, and a BOM).
fn text() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('\r'),
        Just('\n'),
        Just(':'),
        Just(' '),
        Just('\0'),
        Just('é'),
        Just('\u{feff}'),
        Just('😀'),
    ];
    let char = prop_oneof![3 => any::<char>(), 2 => special, 2 => proptest::char::range('a', 'c')];
    proptest::collection::vec(char, 0..12).prop_map(|chars| chars.into_iter().collect())
}

#[derive(Debug, Clone)]
struct Spec {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let comments = proptest::collection::vec(text(), 0..3);
    let retry = proptest::option::of(any::<u64>());
    let fields = (proptest::option::of(text()), proptest::option::of(text()));
    (fields, proptest::option::of(text()), retry, comments).prop_map(
        |((event, data), id, retry, comments)| Spec {
            event,
            data,
            id,
            retry,
            comments,
        },
    )
}

impl Spec {
    fn build(&self) -> Event {
        let mut event = Event::default();
        for comment in &self.comments {
            event = event.comment(comment.clone());
        }
        if let Some(data) = &self.data {
            event = event.data(data.clone());
        }
        if let Some(kind) = &self.event {
            event = event.event(kind.clone());
        }
        if let Some(id) = &self.id {
            event = event.id(id.clone());
        }
        if let Some(ms) = self.retry {
            event = event.retry(Duration::from_millis(ms));
        }
        event
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// The data as a client sees it: every line break (CRLF, CR, LF) is one LF.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// `bytes` split at the given points (taken modulo its length, so anywhere, also inside a
/// UTF-8 sequence).
fn chunks(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<Bytes> {
    if bytes.is_empty() {
        return Vec::new();
    }
    cuts.iter_mut().for_each(|cut| *cut %= bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        chunks.push(Bytes::copy_from_slice(&bytes[start..cut]));
        start = cut;
    }
    chunks
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn accepted_events_decode_to_the_same_fields(
        specs in proptest::collection::vec(spec(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        // The id is the stream's last event id: it carries over to events without one.
        let mut last_id = String::new();
        for spec in &specs {
            let event = spec.build();
            let bad_type = spec.event.as_deref().is_some_and(|kind| has_line_break(kind) || kind.contains('\0'));
            // An id must come back as a `Last-Event-ID` header: no control character but tab.
            let bad_id = spec.id.as_deref().is_some_and(|id| id.contains(|c: char| c.is_ascii_control() && c != '\t'));
            match event.to_bytes() {
                Ok(bytes) => {
                    prop_assert!(!bad_type && !bad_id, "accepted {spec:?}");
                    prop_assert_eq!(event.validate(), Ok(()));
                    stream.extend_from_slice(&bytes);
                    if let Some(id) = &spec.id {
                        last_id = id.clone();
                    }
                    expected.push(eventsource_stream::Event {
                        event: match spec.event.as_deref() {
                            None | Some("") => "message".to_owned(),
                            Some(kind) => kind.to_owned(),
                        },
                        data: normalized(spec.data.as_deref().unwrap_or("")),
                        id: last_id.clone(),
                        retry: spec.retry.map(Duration::from_millis),
                    });
                }
                // The builder keeps the first problem; the event type is set before the id.
                Err(EventError::EventType) => prop_assert!(bad_type, "{spec:?}"),
                Err(EventError::Id) => prop_assert!(bad_id && !bad_type, "{spec:?}"),
                Err(err) => prop_assert!(false, "{spec:?}: {err:?}"),
            }
        }
        let chunks = chunks(&stream, cuts);
        let parsed = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>))
            .eventsource()
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("an in-memory stream is always ready");
        let parsed: Vec<_> = parsed.into_iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(parsed, expected);
    }
}

// Channel lists through the access layer.

/// What the access policy was asked about, and what the inner service received.
#[derive(Default)]
struct Seen {
    checked: Vec<String>,
    received: Vec<Option<Channels>>,
}

/// Runs `GET /events?{query}` through `AccessLayer::new(policy).layer(service)` with a policy
/// that allows everything and records each channel; checks what the service received against
/// what the policy saw, and returns the channels (or the status and reason of a refusal).
/// `None`: `query` is not a valid URI query, so no request can carry it.
fn through_access(query: &str) -> Option<Result<Vec<String>, String>> {
    let request = Request::get(format!("/events?{query}")).body(()).ok()?;
    assert_eq!(request.uri().query(), Some(query));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (policy_seen, service_seen) = (seen.clone(), seen.clone());
    let policy = move |_: &Parts, channel: &str| {
        policy_seen.lock().unwrap().checked.push(channel.to_owned());
        ready(Ok::<(), Denied>(()))
    };
    let service = tower::service_fn(move |req: Request<()>| {
        let channels = req.extensions().get::<Channels>().cloned();
        service_seen.lock().unwrap().received.push(channels);
        ready(Ok::<_, Infallible>(Response::new(Bytes::new())))
    });
    let access = AccessLayer::new(policy).layer(service);
    let response = access.oneshot(request).now_or_never()?.unwrap();
    let seen = seen.lock().unwrap();
    if response.status() == 200 {
        assert_eq!(
            seen.received.len(),
            1,
            "{query}: the service is called once"
        );
        let received = seen.received[0]
            .as_ref()
            .expect("the checked list in the extensions");
        let received: Vec<String> = received.iter().map(str::to_owned).collect();
        assert_eq!(
            received, seen.checked,
            "{query}: streamed exactly what was checked"
        );
        Some(Ok(received))
    } else {
        assert_eq!(
            response.status(),
            400,
            "{query}: only a bad list is refused"
        );
        assert!(
            seen.received.is_empty(),
            "{query}: refused, yet the service was called"
        );
        assert!(seen.checked.is_empty(), "{query}: refused before any check");
        let content_type = &response.headers()["content-type"];
        assert_eq!(content_type, "text/plain; charset=utf-8");
        let reason = String::from_utf8(response.into_body().to_vec()).unwrap();
        Some(Err(reason))
    }
}

/// Checks `query` against the access layer and the crate's parser: an `Ok` list is valid
/// (non-empty, no duplicates, every name within the rules), and a refusal gives the parser's
/// error. `Ok(None)`: not a URI query; `Ok(Some(None))`: refused.
fn check_query(query: &str) -> Result<Option<Option<Vec<String>>>, TestCaseError> {
    let Some(outcome) = through_access(query) else {
        return Ok(None);
    };
    let rules = ChannelRules::default();
    let parsed = rules.parse_query(Some(query));
    match outcome {
        Ok(channels) => {
            let parsed = parsed.map_err(|err| TestCaseError::fail(format!("{query}: {err}")))?;
            let parsed: Vec<String> = parsed.iter().map(str::to_owned).collect();
            prop_assert_eq!(&channels, &parsed);
            prop_assert!(!channels.is_empty() && channels.len() <= 32);
            for (i, name) in channels.iter().enumerate() {
                prop_assert!(rules.check_name(name).is_ok(), "{name:?}");
                prop_assert!(!channels[..i].contains(name), "duplicate {name:?}");
            }
            Ok(Some(Some(channels)))
        }
        Err(reason) => {
            let err = parsed.err().map(|err| err.to_string());
            prop_assert_eq!(err.as_deref(), Some(reason.as_str()), "{}", query);
            Ok(Some(None))
        }
    }
}

/// Percent-encodes what can't appear raw in a URI query, so any string makes a request.
fn uri_safe(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '!' | '$'..=';' | '=' | '?'..='~' => out.push(c),
            // `http` takes UTF-8 raw in a query: half of it raw, half encoded.
            c if !c.is_ascii() && c as u32 % 2 == 0 => out.push(c),
            c => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// Query syntax in pieces, so that arbitrary strings of them look like channel lists.
fn query_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("channel"),
        Just("channel="),
        Just("%63hannel="),
        Just("="),
        Just("&"),
        Just(","),
        Just("%2C"),
        Just("+"),
        Just("%"),
        Just("%2"),
        Just("%zz"),
        Just("%e2%82"),
        Just("%ff"),
        Just("%00"),
        Just("%20"),
        Just("a"),
        Just("b"),
        Just("é"),
        Just("lastEventId="),
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// A key: those that name the channel parameter (however encoded), and others.
const KEYS: [(&str, bool); 9] = [
    ("channel", true),
    ("%63hannel", true),
    ("chann%65l", true),
    ("%63%68%61%6E%6E%65%6C", true),
    ("CHANNEL", false),
    ("channels", false),
    ("x", false),
    ("lastEventId", false),
    ("", false),
];

/// A value of valid names, comma-separated: characters that need escaping but are allowed,
/// rarely a name around the 256-byte limit.
fn clean_value() -> impl Strategy<Value = String> {
    let char = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('0', '9'),
        1 => Just('+'),
        1 => Just('%'),
        1 => Just('&'),
        1 => Just('='),
        1 => Just('#'),
        1 => Just('é'),
        1 => Just('😀'),
    ];
    let short = proptest::collection::vec(char, 1..4).prop_map(String::from_iter);
    let long = (255..=258_usize).prop_map(|len| "y".repeat(len));
    let name = prop_oneof![40 => short, 1 => long];
    proptest::collection::vec(name, 1..3).prop_map(|names| names.join(","))
}

/// A value with what the rules refuse: empty names, whitespace, control characters.
fn dirty_value() -> impl Strategy<Value = String> {
    let char = prop_oneof![
        4 => proptest::char::range('a', 'd'),
        1 => Just(','),
        1 => Just(' '),
        1 => Just('\n'),
        1 => Just('\0'),
        1 => Just('\u{a0}'),
        1 => any::<char>(),
    ];
    proptest::collection::vec(char, 0..8).prop_map(String::from_iter)
}

/// Query parameters: mostly clean (so that a list is often valid, on either side of 32
/// channels), sometimes dirty. Each is a key (an index into [`KEYS`]), a value, and whether
/// an empty value is written as a bare key.
fn params() -> impl Strategy<Value = Vec<(usize, String, bool)>> {
    let clean = (0..KEYS.len(), clean_value(), any::<bool>());
    let dirty = (0..KEYS.len(), dirty_value(), any::<bool>());
    prop_oneof![
        3 => proptest::collection::vec(clean, 0..48),
        1 => proptest::collection::vec(dirty, 0..8),
    ]
}

/// Encodes `value` as a query value, choosing by `seed` for each character whether to
/// percent-encode it when it need not be (and `+` or `%20` for a space, upper or lower hex).
fn encode(value: &str, seed: &mut u64) -> String {
    let mut out = String::new();
    for c in value.chars() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let raw_ok = c.is_ascii_alphanumeric() || ",.-_~!$'()*;:@/?=".contains(c);
        if raw_ok && *seed & 1 == 0 {
            out.push(c);
        } else if c == ' ' && *seed & 2 == 0 {
            out.push('+');
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                if *seed & 4 == 0 {
                    out.push_str(&format!("%{b:02X}"));
                } else {
                    out.push_str(&format!("%{b:02x}"));
                }
            }
        }
    }
    out
}

/// What the query means, worked out from how it was built: the names of the channel
/// parameters in order, split at commas, each once; `None` if one breaks the rules (empty,
/// over 256 bytes, a control character or whitespace) or there are more than 32.
fn meaning(params: &[(usize, String, bool)]) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for (key, value, _) in params {
        if !KEYS[*key].1 {
            continue;
        }
        for name in value.split(',') {
            let bad = |c: char| c.is_control() || c.is_whitespace();
            if name.is_empty() || name.len() > 256 || name.contains(bad) {
                return None;
            }
            if !names.iter().any(|n| n == name) {
                if names.len() == 32 {
                    return None;
                }
                names.push(name.to_owned());
            }
        }
    }
    if names.is_empty() {
        names.push("sse".to_owned());
    }
    Some(names)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_query_is_refused_or_fully_checked(s in any::<String>()) {
        let s = uri_safe(&s);
        check_query(&s)?;
        check_query(&format!("channel={s}"))?;
    }

    #[test]
    fn query_soup_is_refused_or_fully_checked(query in query_soup()) {
        check_query(&query)?;
    }

    #[test]
    fn built_query_means_what_it_says(
        params in params(),
        mut seed in 1..u64::MAX,
    ) {
        let mut pairs = Vec::new();
        for (key, value, bare) in &params {
            // A bare key (no `=`) is an empty value.
            if value.is_empty() && *bare {
                pairs.push(KEYS[*key].0.to_owned());
            } else {
                pairs.push(format!("{}={}", KEYS[*key].0, encode(value, &mut seed)));
            }
        }
        let query = pairs.join("&");
        let channels = check_query(&query)?;
        prop_assert_eq!(channels, Some(meaning(&params)), "{}", query);
    }
}
