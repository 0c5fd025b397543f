//! [`ResponseFuture`]: runs the checks one channel after another, gathering their grants, then
//! the inner service.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response, request::Parts};
use pin_project_lite::pin_project;
use tower::Service;

use super::{AccessPolicy, Grant};
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
    /// What the checks so far handed on.
    grant: Grant,
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
                grant: Grant::default(),
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
                    let grant = match ready!(check.poll(cx)) {
                        Ok(grant) => grant,
                        Err(denied) => {
                            tracing::debug!(%denied, status = denied.status().as_u16(), "access denied");
                            crate::metrics::denied(denied.status());
                            *this.pending = None;
                            return Poll::Ready(Ok(denied.into_response()));
                        }
                    };
                    let Some(pending) = this.pending.as_mut() else {
                        unreachable!("a check always has its pending request")
                    };
                    pending.grant.merge(grant.into());
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
                        grant,
                        ..
                    }) = this.pending.take()
                    else {
                        unreachable!("checked just above")
                    };
                    grant.apply(&mut parts.extensions);
                    // The inner service subscribes to exactly the list that was checked: put
                    // last, so no grant replaces it.
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

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use http::StatusCode;
    use tokio::time::Instant;
    use tower::{ServiceExt, service_fn};

    use crate::{
        access::{Access, Denied},
        body::Deadline,
        channel::ChannelRules,
    };

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct User(String);

    /// What the inner service saw of the request's extensions.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        user: Option<User>,
        deadline: Option<Deadline>,
        channels: Option<Vec<String>>,
    }

    fn inner(
        seen: Arc<Mutex<Vec<Seen>>>,
    ) -> impl Service<
        Request<()>,
        Response = Response<Bytes>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(move |req: Request<()>| {
            let ext = req.extensions();
            seen.lock().unwrap().push(Seen {
                user: ext.get::<User>().cloned(),
                deadline: ext.get::<Deadline>().copied(),
                channels: ext
                    .get::<Channels>()
                    .map(|c| c.iter().map(str::to_owned).collect()),
            });
            std::future::ready(Ok::<_, Infallible>(Response::new(Bytes::new())))
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn grants_reach_the_inner_service_merged() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let policy = move |_: &Parts, channel: &str| {
            let channel = channel.to_owned();
            async move {
                let secs = if channel == "b" { 5 } else { 10 };
                let mut grant = Grant::default()
                    .extension(User(channel))
                    .until(now + Duration::from_secs(secs));
                if secs == 10 {
                    // A grant can't change what the stream subscribes to.
                    let other = ChannelRules::default().channels(["evil"]).unwrap();
                    grant = grant.extension(other);
                }
                Ok::<_, Denied>(grant)
            }
        };
        let res = Access::new(inner(seen.clone()), policy)
            .oneshot(get("/?channel=a,b,c"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            *seen.lock().unwrap(),
            [Seen {
                user: Some(User("c".into())),
                deadline: Some(Deadline(now + Duration::from_secs(5))),
                channels: Some(vec!["a".into(), "b".into(), "c".into()]),
            }]
        );
    }

    /// A deadline a layer before put in the request stays when it is earlier.
    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let policy = move |_: &Parts, _: &str| async move {
            Ok::<_, Denied>(Grant::default().until(now + Duration::from_secs(5)))
        };
        let service = Access::new(inner(seen.clone()), policy);
        for secs in [1, 9] {
            let mut req = get("/");
            req.extensions_mut()
                .insert(Deadline(now + Duration::from_secs(secs)));
            service.clone().oneshot(req).await.unwrap();
        }
        let deadlines: Vec<_> = seen.lock().unwrap().iter().map(|s| s.deadline).collect();
        assert_eq!(
            deadlines,
            [
                Some(Deadline(now + Duration::from_secs(1))),
                Some(Deadline(now + Duration::from_secs(5)))
            ]
        );
    }

    /// A plain "yes" adds nothing but the channels.
    #[tokio::test]
    async fn a_plain_yes_hands_on_nothing() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let policy = |_: &Parts, _: &str| async { Ok::<_, Denied>(()) };
        Access::new(inner(seen.clone()), policy)
            .oneshot(get("/?channel=a"))
            .await
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [Seen {
                channels: Some(vec!["a".into()]),
                ..Seen::default()
            }]
        );
    }

    /// A denial after a grant: the inner service is never called.
    #[tokio::test]
    async fn a_denial_drops_the_grants_so_far() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let policy = |_: &Parts, channel: &str| {
            let allowed = channel == "a";
            async move {
                if allowed {
                    Ok(Grant::default().extension(User("a".into())))
                } else {
                    Err(Denied::forbidden("no"))
                }
            }
        };
        let res = Access::new(inner(seen.clone()), policy)
            .oneshot(get("/?channel=a,b"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.body(), "no");
        assert!(seen.lock().unwrap().is_empty());
    }
}
