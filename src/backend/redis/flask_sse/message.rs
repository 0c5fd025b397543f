//! flask-sse's message: the JSON object its `sse.publish()` sends, read into an [`Event`]
//! ([`read`]), and written from one ([`write`]).
//!
//! flask-sse 1.0 publishes `json.dumps(Message(data, type, id, retry).to_dict())`: `data`
//! always, any JSON value, and `type`, `id`, `retry` only when truthy. Its `/stream` then
//! writes `data` as is when it is a string, else `json.dumps(data)`, and leaves out the
//! fields Python takes for false (`None`, `False`, `0`, `""`, `[]`, `{}`). Read here the same
//! way, except that nothing is ever sent that a browser would read as something else:
//!
//! - `data`: a string as is; any other JSON value as the JSON text it was published as (what
//!   flask-sse's stream sends for a message `json.dumps` wrote: the same text). Line breaks
//!   (CR, LF, CRLF, and only these, as the [WHATWG] parser) split it into `data:` lines, and
//!   empty data or a trailing line break are kept, where flask-sse's `splitlines()` loses them;
//! - `type`: a string without CR, LF or NUL, else the message is dropped;
//! - `id`: a string without control characters other than tab (a `Last-Event-ID` header can't
//!   carry them), or an integer, written as its decimal; else dropped;
//! - `retry`: an integer of milliseconds; else dropped;
//! - other keys are ignored; a field Python takes for false is left out, as flask-sse does.
//!
//! [WHATWG]: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream

use std::{collections::HashMap, time::Duration};

use serde_json::{Value, value::RawValue};

use crate::event::{Event, EventError};

/// The largest message read, in bytes of JSON: 4 MiB, four times the largest body the hub's
/// `POST /publish` takes, so that anything published through a broker fits once written as
/// JSON (escaping lengthens it). Larger messages are dropped, and a broker refuses to publish
/// them.
pub(super) const MAX_MESSAGE: usize = 4 << 20;

/// Why a message was dropped: the `reason` label of
/// [`FLASK_SSE_DROPPED`](crate::metrics::FLASK_SSE_DROPPED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// Over [`MAX_MESSAGE`].
    TooLarge,
    /// Not a JSON object.
    Json,
    /// No `data`.
    Data,
    /// A `type` that is not a string, or one an event can't carry.
    Type,
    /// An `id` that is neither a string nor an integer, or one an event can't carry (or longer
    /// than the broker takes).
    Id,
    /// A `retry` that is not a non-negative integer.
    Retry,
}

impl Dropped {
    pub(super) fn label(self) -> &'static str {
        match self {
            Dropped::TooLarge => "too_large",
            Dropped::Json => "json",
            Dropped::Data => "data",
            Dropped::Type => "type",
            Dropped::Id => "id",
            Dropped::Retry => "retry",
        }
    }
}

/// Reads a message flask-sse published into the event its stream would send.
pub(super) fn read(payload: &[u8]) -> Result<Event, Dropped> {
    if payload.len() > MAX_MESSAGE {
        return Err(Dropped::TooLarge);
    }
    // The last of repeated keys wins, as with Python's `json.loads`.
    let fields: HashMap<String, Box<RawValue>> =
        serde_json::from_slice(payload).map_err(|_| Dropped::Json)?;
    let data = fields.get("data").ok_or(Dropped::Data)?.get();
    let mut event = if data.starts_with('"') {
        let text: String = serde_json::from_str(data).map_err(|_| Dropped::Data)?;
        Event::default().data(text)
    } else {
        Event::default().data(data)
    };
    if let Some(kind) = field(&fields, "type")? {
        match kind {
            Value::String(kind) => event = event.event(kind),
            _ => return Err(Dropped::Type),
        }
    }
    if let Some(id) = field(&fields, "id")? {
        match id {
            Value::String(id) => event = event.id(id),
            // The text as published: an integer of any size, as Python prints it.
            Value::Number(_) => event = event.id(integer(&fields["id"]).ok_or(Dropped::Id)?),
            _ => return Err(Dropped::Id),
        }
    }
    if field(&fields, "retry")?.is_some() {
        let ms = integer(&fields["retry"])
            .and_then(|ms| ms.parse().ok())
            .ok_or(Dropped::Retry)?;
        event = event.retry(Duration::from_millis(ms));
    }
    match event.validate() {
        Ok(()) => Ok(event),
        Err(EventError::EventType) => Err(Dropped::Type),
        Err(_) => Err(Dropped::Id),
    }
}

/// The value of `name`, unless absent or false to Python (then flask-sse leaves it out).
fn field(fields: &HashMap<String, Box<RawValue>>, name: &str) -> Result<Option<Value>, Dropped> {
    let Some(raw) = fields.get(name) else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(raw.get()).map_err(|_| Dropped::Json)?;
    let falsy = match &value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(true) => false,
    };
    Ok((!falsy).then_some(value))
}

/// The text of an integer (no fraction, no exponent), as published.
fn integer(raw: &RawValue) -> Option<&str> {
    let text = raw.get();
    let digits = text.strip_prefix('-').unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

/// The message flask-sse's `sse.publish(data, type=..., id=..., retry=...)` would send for
/// `event`: `data` as a string, and `type`, `id`, `retry` (in milliseconds) when given and not
/// empty or zero (which flask-sse leaves out). Comments are not carried: flask-sse has no
/// field for them.
pub(super) fn write(event: &Event) -> serde_json::Result<Vec<u8>> {
    let data = event.get_data().unwrap_or("");
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(b"{\"data\":");
    serde_json::to_writer(&mut out, data)?;
    if let Some(kind) = event.get_event().filter(|kind| !kind.is_empty()) {
        out.extend_from_slice(b",\"type\":");
        serde_json::to_writer(&mut out, kind)?;
    }
    if let Some(id) = event.get_id().filter(|id| !id.is_empty()) {
        out.extend_from_slice(b",\"id\":");
        serde_json::to_writer(&mut out, id)?;
    }
    if let Some(ms) = event.get_retry().map(|retry| retry.as_millis()) {
        if ms > 0 {
            out.extend_from_slice(format!(",\"retry\":{ms}").as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(payload: &str) -> String {
        let event = read(payload.as_bytes()).unwrap_or_else(|err| panic!("{payload}: {err:?}"));
        String::from_utf8(event.to_bytes().unwrap().to_vec()).unwrap()
    }

    fn dropped(payload: &str) -> Dropped {
        read(payload.as_bytes()).expect_err(payload)
    }

    #[test]
    fn what_flask_sse_publishes() {
        // `sse.publish("hi")`
        assert_eq!(sent(r#"{"data": "hi"}"#), "data: hi\n\n");
        // `sse.publish({"message": "Hello!"}, type="greeting")`: the JSON text as published.
        assert_eq!(
            sent(r#"{"data": {"message": "Hello!", "a": [1, 2.5]}, "type": "greeting"}"#),
            "event: greeting\ndata: {\"message\": \"Hello!\", \"a\": [1, 2.5]}\n\n"
        );
        assert_eq!(sent(r#"{"data": 42}"#), "data: 42\n\n");
        assert_eq!(sent(r#"{"data": [1, "x"]}"#), "data: [1, \"x\"]\n\n");
        assert_eq!(sent(r#"{"data": null}"#), "data: null\n\n");
        assert_eq!(sent(r#"{"data": "x", "id": 7}"#), "data: x\nid: 7\n\n");
        assert_eq!(sent(r#"{"data": "x", "id": -7}"#), "data: x\nid: -7\n\n");
        let big = r#"{"data": "x", "id": 123456789012345678901234567890}"#;
        assert_eq!(sent(big), "data: x\nid: 123456789012345678901234567890\n\n");
        assert_eq!(
            sent(r#"{"data": "x", "id": "a b"}"#),
            "data: x\nid: a b\n\n"
        );
        assert_eq!(
            sent(r#"{"data": "x", "retry": 1500}"#),
            "data: x\nretry: 1500\n\n"
        );
        assert_eq!(
            sent(r#"{"data": "x", "type": "t", "id": "i", "retry": 5, "other": 1}"#),
            "event: t\ndata: x\nretry: 5\nid: i\n\n"
        );
    }

    #[test]
    fn lines_split_at_cr_lf_and_crlf_only() {
        assert_eq!(
            sent(r#"{"data": "a\r\nb\rc\nd\u2028e\u000bf\n"}"#),
            "data: a\ndata: b\ndata: c\ndata: d\u{2028}e\u{b}f\ndata: \n\n"
        );
        assert_eq!(sent(r#"{"data": ""}"#), "data: \n\n");
        assert_eq!(sent(r#"{"data": "  x"}"#), "data:   x\n\n");
    }

    #[test]
    fn fields_python_takes_for_false_are_left_out() {
        for falsy in [r#""""#, "null", "false", "0", "0.0", "[]", "{}"] {
            let payload =
                format!(r#"{{"data": "x", "type": {falsy}, "id": {falsy}, "retry": {falsy}}}"#);
            assert_eq!(sent(&payload), "data: x\n\n", "{falsy}");
        }
    }

    #[test]
    fn bad_messages_are_dropped_with_their_reason() {
        assert_eq!(dropped("not json"), Dropped::Json);
        assert_eq!(dropped(r#""data""#), Dropped::Json);
        assert_eq!(dropped(r#"[{"data": "x"}]"#), Dropped::Json);
        assert_eq!(dropped(r#"{"data": "x""#), Dropped::Json);
        // A lone surrogate, which Python writes and no Rust string holds.
        assert_eq!(dropped(r#"{"data": "\ud800"}"#), Dropped::Data);
        assert_eq!(dropped(r#"{"type": "t"}"#), Dropped::Data);
        assert_eq!(dropped(r#"{"data": "x", "type": "a\nb"}"#), Dropped::Type);
        assert_eq!(
            dropped(r#"{"data": "x", "type": "a\u0000"}"#),
            Dropped::Type
        );
        assert_eq!(dropped(r#"{"data": "x", "type": 5}"#), Dropped::Type);
        assert_eq!(dropped(r#"{"data": "x", "id": "a\nb"}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "id": "a\rb"}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "id": 1.5}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "id": 1e3}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "id": true}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "id": ["a"]}"#), Dropped::Id);
        assert_eq!(dropped(r#"{"data": "x", "retry": "1500"}"#), Dropped::Retry);
        assert_eq!(dropped(r#"{"data": "x", "retry": 1.5}"#), Dropped::Retry);
        assert_eq!(dropped(r#"{"data": "x", "retry": -1}"#), Dropped::Retry);
        let huge = format!(r#"{{"data": "{}"}}"#, "x".repeat(MAX_MESSAGE));
        assert_eq!(dropped(&huge), Dropped::TooLarge);
        // Just under the limit is taken.
        let fits = format!(r#"{{"data": "{}"}}"#, "x".repeat(MAX_MESSAGE - 12));
        assert_eq!(fits.len(), MAX_MESSAGE);
        assert!(read(fits.as_bytes()).is_ok());
    }

    #[test]
    fn written_as_flask_sse_writes_it() {
        let json = |event: Event| String::from_utf8(write(&event).unwrap()).unwrap();
        assert_eq!(json(Event::default().data("hi")), r#"{"data":"hi"}"#);
        assert_eq!(json(Event::default()), r#"{"data":""}"#);
        let full = Event::default()
            .data("a\n\"b\"")
            .event("t")
            .id("7")
            .retry(Duration::from_millis(1500))
            .comment("not carried");
        assert_eq!(
            json(full),
            r#"{"data":"a\n\"b\"","type":"t","id":"7","retry":1500}"#
        );
        let empty = Event::default()
            .data("x")
            .event("")
            .id("")
            .retry(Duration::ZERO);
        assert_eq!(json(empty), r#"{"data":"x"}"#);
    }

    #[test]
    fn what_is_written_reads_back_as_the_same_event() {
        let event = Event::default()
            .data("a\r\nb")
            .event("t")
            .id("i")
            .retry(Duration::from_millis(3));
        let back = read(&write(&event).unwrap()).unwrap();
        assert_eq!(back.to_bytes().unwrap(), event.to_bytes().unwrap());
    }
}
