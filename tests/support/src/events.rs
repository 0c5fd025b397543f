//! An open event stream, read as `EventSource` would read it (eventsource-stream parses it).
//! Used by `tests/hub.rs` and `tests/examples.rs` through `#[path]`.

#![allow(dead_code)] // each test uses its part

use std::pin::Pin;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode, header};

use crate::{guard, send};

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open event stream, parsed as `EventSource` would.
pub struct Events(EventStream);

impl Events {
    /// Checks the response is an event stream (`200`, `text/event-stream`) and starts parsing it.
    pub fn from(res: Response) -> Events {
        assert_eq!(res.status(), StatusCode::OK);
        let content_type = res.headers().get(header::CONTENT_TYPE);
        let content_type = content_type.map(|value| value.to_str().unwrap());
        assert_eq!(content_type, Some("text/event-stream"));
        let events = res.bytes_stream().eventsource();
        Events(Box::pin(
            events.map(|event| event.map_err(|e| format!("{e:?}"))),
        ))
    }

    /// Sends `request`, under the hang guard, and reads its response as an event stream.
    pub async fn open(request: RequestBuilder) -> Events {
        Events::from(send(request).await)
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        let event = guard("next event", self.0.next()).await;
        event.map(|event| event.expect("a well-formed stream"))
    }

    /// The next event, which must come before the end of the stream.
    pub async fn expect(&mut self) -> Event {
        let event = self.next().await;
        event.expect("an event, not the end of the stream")
    }
}
