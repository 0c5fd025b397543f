//! [`ResponseFuture`]: runs the checks one channel after another, then the inner service.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response, request::Parts};
use pin_project_lite::pin_project;
use tower::Service;

use super::AccessPolicy;
use crate::channel::Channels;

pin_project! {
    /// The response future of [`Access`](super::Access).
    ///
    /// ```
    /// # use tower::Service;
    /// # use tower_sse::{access::{Access, ResponseFuture}, Broker, SseService};
    /// # let mut service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// let future: ResponseFuture<_, _, _> = service.call(http::Request::new(()));
    /// ```
    pub struct ResponseFuture<S, P, B>
    where
        S: Service<Request<B>>,
        P: AccessPolicy,
    {
        #[pin]
        state: State<P::Future, S::Future, S::Response>,
        pending: Option<Pending<S, P, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<C, F, R> {
        Check { #[pin] check: C },
        Inner { #[pin] future: F },
        Respond { response: Option<R> },
    }
}

/// What the checks need, and what the inner service gets once they pass.
struct Pending<S, P, B> {
    inner: S,
    policy: P,
    parts: Parts,
    body: B,
    channels: Channels,
    /// Index of the channel being checked.
    next: usize,
}

impl<S, P, B> ResponseFuture<S, P, B>
where
    S: Service<Request<B>>,
    P: AccessPolicy,
{
    pub(crate) fn respond(response: S::Response) -> Self {
        ResponseFuture {
            state: State::Respond {
                response: Some(response),
            },
            pending: None,
        }
    }

    pub(crate) fn check(
        inner: S,
        mut policy: P,
        parts: Parts,
        body: B,
        channels: Channels,
    ) -> Self {
        let first = channels.iter().next().unwrap_or_default();
        let check = policy.check(&parts, first);
        ResponseFuture {
            state: State::Check { check },
            pending: Some(Pending {
                inner,
                policy,
                parts,
                body,
                channels,
                next: 0,
            }),
        }
    }
}

impl<S, P, B, ResBody> Future for ResponseFuture<S, P, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    P: AccessPolicy,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Check { check } => {
                    if let Err(denied) = ready!(check.poll(cx)) {
                        tracing::debug!(%denied, status = denied.status().as_u16(), "access denied");
                        crate::metrics::denied(denied.status());
                        *this.pending = None;
                        return Poll::Ready(Ok(denied.into_response()));
                    }
                    let Some(pending) = this.pending.as_mut() else {
                        unreachable!("a check always has its pending request")
                    };
                    pending.next += 1;
                    if let Some(channel) = pending.channels.iter().nth(pending.next) {
                        let check = pending.policy.check(&pending.parts, channel);
                        this.state.set(State::Check { check });
                        continue;
                    }
                    let Some(Pending {
                        mut inner,
                        mut parts,
                        body,
                        channels,
                        ..
                    }) = this.pending.take()
                    else {
                        unreachable!("checked just above")
                    };
                    // The inner service subscribes to exactly the list that was checked.
                    parts.extensions.insert(channels);
                    let future = inner.call(Request::from_parts(parts, body));
                    this.state.set(State::Inner { future });
                }
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Respond { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
