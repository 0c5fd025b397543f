//! [`Access`]: the middleware service.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::Service;

use super::{AccessPolicy, future::ResponseFuture};
use crate::{channel::ChannelRules, response::plain};

/// Checks every channel a request names with an [`AccessPolicy`]; see [`AccessLayer`](super::AccessLayer).
///
/// A bad channel list gets `400 Bad Request`, a denial its [`Denied`](super::Denied) status;
/// in both cases the inner service is not called. An allowed request reaches the inner service
/// with the checked [`Channels`](crate::Channels) in its extensions, which
/// [`SseService`](crate::SseService) subscribes to.
///
/// ```
/// use tower_sse::{access::{Access, Denied}, Broker, SseService};
///
/// let service = Access::new(
///     SseService::new(Broker::new()),
///     |_: &http::request::Parts, channel: &str| {
///         let ok = channel != "admin";
///         async move { if ok { Ok(()) } else { Err(Denied::forbidden("admin only")) } }
///     },
/// );
/// assert!(service.get_ref().broker().channel_count() == 0);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Access<S, P> {
    inner: S,
    policy: P,
    rules: ChannelRules,
}

impl<S, P> Access<S, P> {
    /// Wraps `inner`, checking with `policy` and the default [`ChannelRules`].
    ///
    /// ```
    /// # use tower_sse::{access::Access, Broker, SseService};
    /// let service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// ```
    pub fn new(inner: S, policy: P) -> Self {
        Access {
            inner,
            policy,
            rules: ChannelRules::default(),
        }
    }

    /// The rules for reading the channel list.
    ///
    /// ```
    /// # use tower_sse::{access::Access, Broker, ChannelRules, SseService};
    /// let service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) })
    ///     .channel_rules(ChannelRules::default().max_len(64));
    /// ```
    pub fn channel_rules(mut self, rules: ChannelRules) -> Self {
        self.rules = rules;
        self
    }

    /// The inner service.
    ///
    /// ```
    /// # use tower_sse::{access::Access, Broker, SseService};
    /// # let service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// let sse: &SseService = service.get_ref();
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use tower_sse::{access::Access, Broker, SseService};
    /// # let mut service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// let sse: &mut SseService = service.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    ///
    /// ```
    /// # use tower_sse::{access::Access, Broker, SseService};
    /// # let service = Access::new(SseService::new(Broker::new()), |_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// let sse: SseService = service.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, B, ResBody> Service<Request<B>> for Access<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    P: AccessPolicy,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, P, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let channels = match self.rules.parse_query(req.uri().query()) {
            Ok(channels) => channels,
            Err(err) => {
                tracing::debug!(%err, "bad channel list");
                return ResponseFuture::respond(plain(StatusCode::BAD_REQUEST, err.to_string()));
            }
        };
        // Use the service that was made ready, leave a fresh clone in its place:
        // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::check(inner, self.policy.clone(), parts, body, channels)
    }
}
