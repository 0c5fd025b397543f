//! [`AccessPolicy`]: the check, and [`Denied`]: its "no" (its "yes" is a [`Grant`]).

use std::{borrow::Cow, fmt, future::Future};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request::Parts};

use super::Grant;
use crate::response::plain;

/// Decides whether a request may subscribe to one channel.
///
/// [`Access`](super::Access) calls [`check`](AccessPolicy::check) once for every channel the
/// request names, in the order named, and stops at the first [`Denied`]. A "yes" is `Ok(())`,
/// or `Ok(grant)` to hand the service what the check learned (see [`Grant`]). Closures
/// `FnMut(&Parts, &str) -> impl Future<Output = Result<G, Denied>>`, with `G` `()` or
/// [`Grant`], are policies: copy what the future needs out of the request parts before the
/// `async` block.
///
/// ```
/// use http::request::Parts;
/// use tower_sse::access::{AccessPolicy, Denied};
///
/// #[derive(Clone)]
/// struct PublicOnly;
///
/// impl AccessPolicy for PublicOnly {
///     type Grant = ();
///     type Future = std::future::Ready<Result<(), Denied>>;
///
///     fn check(&mut self, _parts: &Parts, channel: &str) -> Self::Future {
///         std::future::ready(if channel.starts_with("public.") {
///             Ok(())
///         } else {
///             Err(Denied::forbidden("public channels only"))
///         })
///     }
/// }
/// ```
pub trait AccessPolicy: Clone {
    /// What an allowed check hands on: `()` for nothing, or a [`Grant`].
    type Grant: Into<Grant>;

    /// The future of one check.
    type Future: Future<Output = Result<Self::Grant, Denied>>;

    /// Starts checking whether the request with these `parts` may subscribe to `channel`.
    fn check(&mut self, parts: &Parts, channel: &str) -> Self::Future;
}

impl<F, Fut, G> AccessPolicy for F
where
    F: FnMut(&Parts, &str) -> Fut + Clone,
    Fut: Future<Output = Result<G, Denied>>,
    G: Into<Grant>,
{
    type Grant = G;
    type Future = Fut;

    fn check(&mut self, parts: &Parts, channel: &str) -> Fut {
        self(parts, channel)
    }
}

/// A refusal: `401 Unauthorized` or `403 Forbidden` (or another 4xx) with a short reason,
/// sent as `text/plain`.
///
/// ```
/// use http::StatusCode;
/// use tower_sse::access::Denied;
///
/// let denied = Denied::unauthorized("token required");
/// assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(denied.reason(), "token required");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    status: StatusCode,
    reason: Cow<'static, str>,
    challenge: Option<HeaderValue>,
}

impl Denied {
    /// `401 Unauthorized`: no credentials, or unreadable ones. Sent with
    /// `WWW-Authenticate: Bearer` unless [`Denied::challenge`] says otherwise.
    ///
    /// ```
    /// # use tower_sse::access::Denied;
    /// let denied = Denied::unauthorized("missing bearer token");
    /// ```
    pub fn unauthorized(reason: impl Into<Cow<'static, str>>) -> Denied {
        Denied {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
            challenge: Some(HeaderValue::from_static("Bearer")),
        }
    }

    /// `403 Forbidden`: the credentials are known and not enough for this channel.
    ///
    /// ```
    /// # use tower_sse::access::Denied;
    /// let denied = Denied::forbidden("not your channel");
    /// ```
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Denied {
        Denied {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            challenge: None,
        }
    }

    /// Another client error status (`404` to hide that a channel exists, `429`, ...). A status
    /// that is not a 4xx becomes `403`, so a denial is never mistaken for a success.
    ///
    /// ```
    /// # use http::StatusCode;
    /// # use tower_sse::access::Denied;
    /// assert_eq!(Denied::new(StatusCode::NOT_FOUND, "").status(), StatusCode::NOT_FOUND);
    /// assert_eq!(Denied::new(StatusCode::OK, "").status(), StatusCode::FORBIDDEN);
    /// ```
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Denied {
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::FORBIDDEN
        };
        Denied {
            status,
            reason: reason.into(),
            challenge: None,
        }
    }

    /// Sets the `WWW-Authenticate` challenge (RFC 9110 asks one of every 401).
    ///
    /// ```
    /// # use http::HeaderValue;
    /// # use tower_sse::access::Denied;
    /// let denied = Denied::unauthorized("login")
    ///     .challenge(HeaderValue::from_static("Basic realm=\"sse\""));
    /// ```
    #[must_use]
    pub fn challenge(mut self, value: HeaderValue) -> Denied {
        self.challenge = Some(value);
        self
    }

    /// The status sent.
    ///
    /// ```
    /// # use tower_sse::access::Denied;
    /// assert_eq!(Denied::forbidden("no").status(), 403);
    /// ```
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason sent as the body.
    ///
    /// ```
    /// # use tower_sse::access::Denied;
    /// assert_eq!(Denied::forbidden("no").reason(), "no");
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The response for this denial: its status, the reason as a `text/plain` body, and the
    /// `WWW-Authenticate` challenge on a 401. [`Access`](crate::access::Access) answers with
    /// it; a handler that checks the same credentials (a publish endpoint) can too.
    ///
    /// ```
    /// # use tower_sse::access::Denied;
    /// let res: http::Response<tower_sse::SseBody> = Denied::unauthorized("sign in").into_response();
    /// assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED);
    /// assert_eq!(res.headers()["www-authenticate"], "Bearer");
    /// assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    /// ```
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut res = plain(self.status, self.reason.into_owned());
        if let Some(challenge) = self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        res
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

impl std::error::Error for Denied {}
