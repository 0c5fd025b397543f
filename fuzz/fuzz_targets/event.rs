//! Fuzz target `event`: arbitrary [`Event`] builder calls, encoded with [`Event::to_bytes`].
//!
//! The bytes are read back with a small WHATWG event-stream parser written here, independent
//! of the crate's encoder (lines split at CRLF, LF or CR; `field: value` with one leading space
//! stripped; `data` lines joined with LF), and the fields must round-trip: exactly one event
//! is dispatched and nothing follows it; its data is the data given, with CRLF and CR read as
//! LF; the event type and the id are the ones given; `retry` is the duration in whole
//! milliseconds; each comment line comes back as a `:` line. On `Err`, the error must be the
//! first bad call's (an event type with CR or LF, an id with CR, LF or NUL), as
//! [`Event::validate`] documents; any other `Err`, or an `Ok` for such input, fails.
//!
//! Spec: <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_sse::{Event, EventError};

/// One builder call.
#[derive(Arbitrary, Debug)]
enum Call {
    Data(String),
    Event(String),
    Id(String),
    /// Seconds and nanoseconds (taken modulo one second) of the reconnection time.
    Retry(u64, u32),
    Comment(String),
}

fuzz_target!(|calls: Vec<Call>| {
    let mut event = Event::default();
    // What the calls should give, by the builder's documented rules: the last data, type, id
    // and retry win, comments add up, and the first problem is the one reported.
    let mut want = Fields::default();
    let mut want_err = None;
    for call in calls {
        event = match call {
            Call::Data(data) => {
                want.data = normalise(&data);
                event.data(data)
            }
            Call::Event(name) => {
                if name.contains(['\r', '\n', '\0']) {
                    want_err.get_or_insert(EventError::EventType);
                }
                want.event = Some(name.clone());
                event.event(name)
            }
            Call::Id(id) => {
                // It must come back as a `Last-Event-ID` header: no control character but tab.
                if id.contains(|c: char| c.is_ascii_control() && c != '\t') {
                    want_err.get_or_insert(EventError::Id);
                }
                want.id = Some(id.clone());
                event.id(id)
            }
            Call::Retry(secs, nanos) => {
                let retry = Duration::new(secs, nanos % 1_000_000_000);
                want.retry =
                    Some(u128::from(secs) * 1000 + u128::from(nanos % 1_000_000_000) / 1_000_000);
                event.retry(retry)
            }
            Call::Comment(comment) => {
                want.comments.extend(
                    normalise(&comment)
                        .split('\n')
                        .map(|line| format!(" {line}")),
                );
                event.comment(comment)
            }
        };
    }
    let bytes = event.to_bytes();
    assert_eq!(bytes, event.clone().to_bytes(), "not deterministic");
    assert_eq!(
        event.validate(),
        bytes.as_ref().map(|_| ()).map_err(Clone::clone)
    );
    let bytes = match (bytes, want_err) {
        (Ok(bytes), None) => bytes,
        (Err(err), Some(want)) => {
            assert_eq!(err, want);
            return;
        }
        (got, want) => panic!("got {got:?}, want error {want:?}"),
    };
    let text = std::str::from_utf8(&bytes).expect("encoded event is not UTF-8");
    let mut events = parse(text);
    assert_eq!(events.len(), 1, "{text:?} is not exactly one event");
    let got = events.pop().unwrap_or_default();
    assert_eq!(got, want, "round trip of {text:?}");
});

/// The fields of one dispatched event, as a client sees them (plus its comment lines).
#[derive(Debug, Default, PartialEq, Eq)]
struct Fields {
    data: String,
    /// The `event` field's value, `None` when absent (the client then says `message`).
    event: Option<String>,
    /// The last event id buffer after the event, `None` if no `id` field set it.
    id: Option<String>,
    retry: Option<u128>,
    /// Each comment line's text after the colon.
    comments: Vec<String>,
}

/// Line breaks as a client reads them: CRLF and CR are LF.
fn normalise(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// The WHATWG event-stream interpretation, for a stream known to be UTF-8. Returns every
/// dispatched event; a stream that ends inside an event (no blank line) yields an extra empty
/// entry so that the caller sees it.
fn parse(text: &str) -> Vec<Fields> {
    let mut events = Vec::new();
    let mut current = Fields::default();
    let mut data = String::new();
    let mut any_line = false;
    let mut rest = text;
    while !rest.is_empty() {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(i) if rest[i..].starts_with("\r\n") => (&rest[..i], &rest[i + 2..]),
            Some(i) => (&rest[..i], &rest[i + 1..]),
            // A last line without a line break is never processed.
            None => {
                events.push(Fields::default());
                break;
            }
        };
        rest = next;
        if line.is_empty() {
            // Dispatch: an event with an empty data buffer is not dispatched.
            if !data.is_empty() {
                data.pop();
                current.data = std::mem::take(&mut data);
                events.push(std::mem::take(&mut current));
            } else if any_line {
                events.push(Fields::default());
            }
            any_line = false;
            continue;
        }
        any_line = true;
        if let Some(comment) = line.strip_prefix(':') {
            current.comments.push(comment.to_owned());
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => current.event = Some(value.to_owned()),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => current.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                current.retry = value.parse().ok();
            }
            // Unknown fields are ignored by a client, but this encoder writes none.
            _ => panic!("unexpected line {line:?}"),
        }
    }
    if any_line {
        events.push(Fields::default());
    }
    events
}
