//! [`ResponseFuture`]: [`SseService`](super::SseService)'s answer, without a box per request.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;

use crate::body::SseBody;

/// The response future of [`SseService`](super::SseService): ready at once with the in-process broker (the
/// subscription is made in [`call`](tower::Service::call), and nothing is allocated for the
/// future); with Redis, ready once the channels' Redis subscriptions are in place.
///
/// ```
/// # use tower::Service;
/// # use tower_sse::{service::ResponseFuture, Broker, SseService};
/// let mut service = SseService::new(Broker::new());
/// let future: ResponseFuture = service.call(http::Request::new(()));
/// ```
pub struct ResponseFuture {
    state: State,
}

impl ResponseFuture {
    pub(super) fn new(state: State) -> ResponseFuture {
        ResponseFuture { state }
    }
}

/// Everything in it is `Unpin` (the backend's future is boxed), so it needs no projection.
// The response inline: boxing it would be the allocation per request this type saves.
#[allow(clippy::large_enum_variant)]
pub(super) enum State {
    /// The response, until it is taken.
    Ready { response: Option<Response<SseBody>> },
    /// Subscribing through the backend. Boxed: an `async` block's type can't be named, and a
    /// backend boxes its own futures anyway.
    Subscribing {
        future: Pin<Box<dyn Future<Output = Response<SseBody>> + Send>>,
    },
}

impl State {
    pub(super) fn ready(response: Response<SseBody>) -> State {
        State::Ready {
            response: Some(response),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready { response: Some(_) } => "ready",
            State::Ready { response: None } => "done",
            State::Subscribing { .. } => "subscribing",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<SseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            State::Subscribing { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}
