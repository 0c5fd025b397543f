//! [`Event`]: one server-sent event, and how it becomes bytes on the wire.
//!
//! The encoding follows the WHATWG [event stream format] exactly:
//!
//! - data is split at every line break (LF, CRLF or a lone CR) and each line is sent as its own
//!   `data:` field, so the client joins them back with LF;
//! - every field value is written after `: ` (colon and one space), because a parser strips
//!   exactly one leading space: a value that starts with spaces keeps them;
//! - an event always has at least one `data:` line, so it is always dispatched, even with empty
//!   data (a block without data only updates the last event id, see the spec's
//!   [dispatch steps]);
//! - the event type and the id can't hold line breaks (they would end the field and let the
//!   rest be read as other fields), and the id can't hold NUL (the spec ignores such ids):
//!   these are rejected with an [`EventError`], never sent;
//! - comments are split at line breaks like data, each line a `:` line;
//! - the fields come in this order: `event`, `data`, `retry`, comments, `id` (the order does
//!   not matter to a client; `id` last lets the Redis backend add the id it assigns).
//!
//! An event is encoded **once**, when it is published, into one [`Bytes`] that every subscriber
//! shares (cloning `Bytes` only bumps a reference count).
//!
//! [event stream format]: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream
//! [dispatch steps]: https://html.spec.whatwg.org/multipage/server-sent-events.html#dispatchMessage

use std::{error::Error as StdError, fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

/// One server-sent event, built field by field like axum's `Event`.
///
/// The builder methods never fail and never panic: a value that can't be sent (an event type
/// with a line break, an id with NUL, data that fails to serialize) is kept as an error that
/// [`Event::validate`] and every publish return, so nothing half-valid reaches a client.
///
/// See the [module docs](crate::event) for the exact wire format.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sse::Event;
///
/// let event = Event::default()
///     .event("greeting")
///     .id("1")
///     .retry(Duration::from_secs(3))
///     .data("Hello!\nWorld");
///
/// assert_eq!(
///     event.to_bytes().unwrap(),
///     "event: greeting\ndata: Hello!\ndata: World\nretry: 3000\nid: 1\n\n"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Event {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    comments: Vec<String>,
    error: Option<EventError>,
}

impl Event {
    /// Sets the data. Line breaks of any kind (LF, CRLF, CR) split it into several `data:` lines,
    /// which the client joins back with LF. Calling it again replaces the data.
    ///
    /// An event without data is sent with empty data, so it is still dispatched.
    ///
    /// ```
    /// # use tower_sse::Event;
    /// let bytes = Event::default().data("a\r\nb\rc").to_bytes().unwrap();
    /// assert_eq!(bytes, "data: a\ndata: b\ndata: c\n\n");
    /// ```
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the data to `value` serialized as JSON (feature `json`, on by default).
    ///
    /// A value that fails to serialize makes the event invalid: [`Event::validate`] and publish
    /// return [`EventError::Json`].
    ///
    /// ```
    /// # use tower_sse::Event;
    /// let event = Event::default().json_data(&serde_json::json!({"message": "Hello!"}));
    /// assert_eq!(event.to_bytes().unwrap(), "data: {\"message\":\"Hello!\"}\n\n");
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json_data<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_string(value) {
            Ok(json) => self.data = Some(json),
            Err(err) => self.fail(EventError::Json(err.to_string())),
        }
        self
    }

    /// Sets the event type, which the client's `EventSource` dispatches on
    /// (`addEventListener("greeting", ...)`). Without it the type is `message`.
    ///
    /// A type containing CR, LF or NUL makes the event invalid ([`EventError::EventType`]).
    ///
    /// ```
    /// # use tower_sse::{Event, EventError};
    /// assert_eq!(
    ///     Event::default().event("a\nb").validate(),
    ///     Err(EventError::EventType)
    /// );
    /// ```
    pub fn event(mut self, event: impl Into<String>) -> Self {
        let event = event.into();
        if has_line_break(&event) || event.contains('\0') {
            self.fail(EventError::EventType);
        }
        self.event = Some(event);
        self
    }

    /// Sets the id, which the client sends back in `Last-Event-ID` when it reconnects.
    ///
    /// Without it, the broker assigns one when the event is published. An id containing a
    /// control character other than tab (CR, LF and NUL included) makes the event invalid
    /// ([`EventError::Id`]): the browser sends the id back as the `Last-Event-ID` header, and a
    /// header can't carry those ([RFC 9110 §5.5]), so the id could never resume.
    ///
    /// [RFC 9110 §5.5]: https://www.rfc-editor.org/rfc/rfc9110#section-5.5
    ///
    /// ```
    /// # use tower_sse::{Event, EventError};
    /// assert_eq!(Event::default().id("a\0").validate(), Err(EventError::Id));
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if id.contains(|c: char| c.is_ascii_control() && c != '\t') {
            self.fail(EventError::Id);
        }
        self.id = Some(id);
        self
    }

    /// Sets the reconnection time the client waits before it reconnects, sent in whole
    /// milliseconds.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sse::Event;
    /// let bytes = Event::default().retry(Duration::from_millis(1500)).to_bytes().unwrap();
    /// assert_eq!(bytes, "data: \nretry: 1500\n\n");
    /// ```
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Adds a comment; clients ignore comments, proxies see traffic. Can be called several
    /// times; line breaks split a comment into several comment lines.
    ///
    /// ```
    /// # use tower_sse::Event;
    /// let bytes = Event::default().comment("hi").data("x").to_bytes().unwrap();
    /// assert_eq!(bytes, "data: x\n: hi\n\n");
    /// ```
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comments.push(comment.into());
        self
    }

    /// The id given with [`Event::id`], if any.
    ///
    /// ```
    /// # use tower_sse::Event;
    /// assert_eq!(Event::default().id("7").get_id(), Some("7"));
    /// ```
    pub fn get_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The event type, for a backend that carries the fields (flask-sse's JSON).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the flask-sse backend uses it
    pub(crate) fn get_event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The data, for a backend that carries the fields.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the flask-sse backend uses it
    pub(crate) fn get_data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The reconnection time, for a backend that carries the fields.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the flask-sse backend uses it
    pub(crate) fn get_retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Checks that the event can be sent.
    ///
    /// # Errors
    ///
    /// The first problem a builder method found: an event type with a line break
    /// ([`EventError::EventType`]), an id with a control character ([`EventError::Id`]), data
    /// that failed to serialize ([`EventError::Json`]).
    ///
    /// ```
    /// # use tower_sse::Event;
    /// assert!(Event::default().data("ok").validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), EventError> {
        match &self.error {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// Encodes the event with its own id (if any) into the bytes a client receives.
    ///
    /// The broker calls the same encoder once per publish, with the id it assigned when the
    /// event had none.
    ///
    /// # Errors
    ///
    /// As [`Event::validate`].
    ///
    /// ```
    /// # use tower_sse::Event;
    /// assert_eq!(Event::default().data("").to_bytes().unwrap(), "data: \n\n");
    /// ```
    pub fn to_bytes(&self) -> Result<Bytes, EventError> {
        self.validate()?;
        Ok(self.encode(self.id.as_deref()))
    }

    /// Encodes a valid event with `id` as its `id:` field. The caller has validated it.
    pub(crate) fn encode(&self, id: Option<&str>) -> Bytes {
        finish(self.encode_head(id.map_or(0, str::len) + 6), id)
    }

    /// Every line but the `id:` line and the blank line that ends the event, with room for
    /// `extra` more bytes. The `id:` line comes last so that a backend which assigns ids
    /// elsewhere (Redis) can store the rest and [`finish`] it with the id it got.
    pub(crate) fn encode_head(&self, extra: usize) -> BytesMut {
        let data = self.data.as_deref().unwrap_or("");
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint(data) + extra);
        if let Some(event) = &self.event {
            field(&mut buf, "event", event);
        }
        for line in lines(data) {
            field(&mut buf, "data", line);
        }
        if let Some(retry) = self.retry {
            buf.put_slice(b"retry: ");
            buf.put_slice(retry.as_millis().to_string().as_bytes());
            buf.put_u8(b'\n');
        }
        for comment in &self.comments {
            for line in lines(comment) {
                buf.put_slice(b": ");
                buf.put_slice(line.as_bytes());
                buf.put_u8(b'\n');
            }
        }
        buf
    }

    fn encoded_len_hint(&self, data: &str) -> usize {
        // Each line costs its text plus a short field name; a little slack covers the rest.
        let text = data.len()
            + self.event.as_ref().map_or(0, String::len)
            + self.comments.iter().map(String::len).sum::<usize>();
        text + 32 + 8 * memchr::memchr2_iter(b'\r', b'\n', data.as_bytes()).count()
    }

    fn fail(&mut self, err: EventError) {
        // Keep the first problem: it is the one the user made first.
        self.error.get_or_insert(err);
    }
}

/// Ends an event whose other lines are in `head` (from [`Event::encode_head`]): its `id:` line,
/// if any, then the blank line. The one place the `id:` line is written, for events encoded
/// here and for those a backend stored without it.
pub(crate) fn finish(mut head: BytesMut, id: Option<&str>) -> Bytes {
    if let Some(id) = id {
        field(&mut head, "id", id);
    }
    head.put_u8(b'\n');
    head.freeze()
}

fn field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

fn has_line_break(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

/// Splits at LF, CRLF and lone CR, as the spec's parser does. An empty string is one empty line.
fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match memchr::memchr2(b'\r', b'\n', s.as_bytes()) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Why an [`Event`] can't be sent.
///
/// ```
/// # use tower_sse::Event;
/// let err = Event::default().event("x\ry").validate().unwrap_err();
/// assert_eq!(err.to_string(), "event type contains a line break or NUL");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// The event type contains CR, LF or NUL.
    EventType,
    /// The id contains a control character other than tab (CR, LF and NUL included).
    Id,
    /// The data could not be serialized to JSON; the serializer's message.
    Json(String),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::EventType => f.write_str("event type contains a line break or NUL"),
            EventError::Id => f.write_str("id contains a control character"),
            EventError::Json(msg) => write!(f, "data is not serializable to JSON: {msg}"),
        }
    }
}

impl StdError for EventError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(event: Event) -> String {
        String::from_utf8(event.to_bytes().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn every_line_break_splits_data() {
        assert_eq!(
            bytes(Event::default().data("a\nb\r\nc\rd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn trailing_and_doubled_line_breaks_keep_empty_lines() {
        assert_eq!(
            bytes(Event::default().data("a\n\nb\n")),
            "data: a\ndata: \ndata: b\ndata: \n\n"
        );
        // "\r\n" is one break, "\n\r" is two.
        assert_eq!(
            bytes(Event::default().data("\n\r")),
            "data: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn leading_space_is_not_stripped() {
        assert_eq!(bytes(Event::default().data("  x")), "data:   x\n\n");
    }

    #[test]
    fn empty_or_missing_data_still_dispatches() {
        assert_eq!(bytes(Event::default()), "data: \n\n");
        assert_eq!(bytes(Event::default().data("")), "data: \n\n");
    }

    #[test]
    fn fields_in_order() {
        let event = Event::default()
            .comment("c1\nc2")
            .retry(Duration::from_millis(10))
            .id("7")
            .event("e")
            .data("d");
        assert_eq!(
            bytes(event),
            "event: e\ndata: d\nretry: 10\n: c1\n: c2\nid: 7\n\n"
        );
    }

    #[test]
    fn invalid_event_type_and_id_are_errors() {
        for bad in ["a\nb", "a\r", "\r\n"] {
            assert_eq!(
                Event::default().event(bad).to_bytes(),
                Err(EventError::EventType)
            );
            assert_eq!(Event::default().id(bad).to_bytes(), Err(EventError::Id));
        }
        // An id comes back as a header: no control character but tab.
        for bad in ["a\0b", "\x01", "a\x1fb", "\x7f"] {
            assert_eq!(
                Event::default().id(bad).to_bytes(),
                Err(EventError::Id),
                "{bad:?}"
            );
        }
        assert_eq!(bytes(Event::default().id("a\tb")), "data: \nid: a\tb\n\n");
        // NUL is refused in an event type too; colons are fine anywhere.
        assert_eq!(
            Event::default().event("a\0b").to_bytes(),
            Err(EventError::EventType)
        );
        assert_eq!(
            bytes(Event::default().event("a:b")),
            "event: a:b\ndata: \n\n"
        );
    }

    #[test]
    fn first_error_wins() {
        let event = Event::default().id("\n").event("\n");
        assert_eq!(event.validate(), Err(EventError::Id));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_data_and_failure() {
        use std::collections::BTreeMap;
        assert_eq!(
            bytes(Event::default().json_data(&vec!["a\nb"])),
            "data: [\"a\\nb\"]\n\n"
        );
        // JSON object keys must be strings.
        let mut map = BTreeMap::new();
        map.insert(vec![1u8], 1);
        assert!(matches!(
            Event::default().json_data(&map).validate(),
            Err(EventError::Json(_))
        ));
    }
}
