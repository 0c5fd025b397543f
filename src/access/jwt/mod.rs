//! JWT rights per channel, in [Mercure]'s shape (feature `jwt`).
//!
//! A token's claims list what it may subscribe to:
//!
//! ```json
//! {"mercure": {"subscribe": ["https://example.com/users/{id}", "news"]}, "exp": 1767225600}
//! ```
//!
//! Each entry is a [`Selector`]: `*` (every channel), an exact channel name, or a URI template
//! ([RFC 6570]: `{id}` does not cross `/`, `{+path}` does). [`JwtPolicy`] is an
//! [`AccessPolicy`] for [`AccessLayer`](crate::AccessLayer). For each channel that needs a
//! token (every channel, unless [`JwtPolicy::needs_token`] says otherwise) it:
//!
//! 1. reads the token ([`Token::from_request`]): `Authorization: Bearer`, else the
//!    `authorization` query parameter, else the `mercureAuthorization` cookie (an
//!    `EventSource` can't send headers);
//! 2. verifies it ([`Verifier`]): the one algorithm configured (HS256 by default; `none`
//!    never), the signature, `exp` and `nbf` with no leeway. A token without `exp` is valid,
//!    as Mercure's own test tokens are. Missing or invalid: `401 Unauthorized` with the reason;
//! 3. matches the channel against the `mercure.subscribe` selectors: none matches, or no
//!    such claim: `403 Forbidden`;
//! 4. grants the request, with [`Verified`] (the claims, and where the token was found) in its
//!    extensions, until the token's `exp`: an open stream then ends cleanly at the expiry (never
//!    before it), and the browser reconnects with a fresh token.
//!
//! The token is verified once per channel checked: a request for several channels pays a
//! signature check for each (a few microseconds for HMAC, tens for RSA).
//!
//! ```
//! use jsonwebtoken::{EncodingKey, Header, encode};
//! use tower::Layer;
//! use tower_sse::{AccessLayer, Broker, SseService, access::jwt::{JwtPolicy, Verifier}};
//!
//! let policy = JwtPolicy::new(Verifier::hmac(b"!ChangeThisMercureHubJWTSecretKey!"))
//!     .needs_token(|channel: &str| channel.starts_with("private."));
//! let service = AccessLayer::new(policy).layer(SseService::new(Broker::new()));
//!
//! // What an app gives its user: rights on their own channel for an hour.
//! let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
//! let claims = serde_json::json!({"mercure": {"subscribe": ["private.users.42"]}, "exp": exp});
//! let key = EncodingKey::from_secret(b"!ChangeThisMercureHubJWTSecretKey!");
//! let token = encode(&Header::default(), &claims, &key)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [Mercure]: https://mercure.rocks/spec
//! [RFC 6570]: https://www.rfc-editor.org/rfc/rfc6570

mod selector;
mod token;

use std::{
    future::{Ready, ready},
    sync::Arc,
};

use http::request::Parts;

pub use self::{
    selector::{Selector, SelectorError, Selectors},
    token::{
        Algorithm, Claims, KeyError, Mercure, Source, Token, TokenError, UnknownAlgorithm, Verifier,
    },
};
use super::{AccessPolicy, Denied, Grant};
use crate::body::Deadline;

/// The cookie Mercure reads a token from.
pub const DEFAULT_COOKIE: &str = "mercureAuthorization";

/// What a [`JwtPolicy`] hands on in the request's extensions once it allowed a channel: the
/// verified claims and where the token was found.
///
/// ```
/// use tower_sse::access::jwt::{Source, Verified};
///
/// fn may_publish(verified: &Verified) -> bool {
///     // A cookie goes with every request from any site: a publish needs more (CSRF).
///     verified.source != Source::Cookie && verified.claims.publish().is_some()
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The token's claims.
    pub claims: Claims,
    /// Where the token was found.
    pub source: Source,
}

/// Every channel needs a token: [`JwtPolicy`]'s default.
pub type EveryChannel = fn(&str) -> bool;

/// An [`AccessPolicy`] that checks Mercure JWTs: see [the module](self) for what it does and
/// answers. Cloning shares the verifier and the selector cache.
///
/// ```
/// use tower_sse::{AccessLayer, access::jwt::{Algorithm, JwtPolicy, Verifier}};
///
/// let pem = "-----BEGIN PUBLIC KEY-----
/// MCowBQYDK2VwAyEAOapB9wURAtwXtYZNzBmya3mJ1AGv8h37mWdNbCLRdN8=
/// -----END PUBLIC KEY-----";
/// let policy = JwtPolicy::new(Verifier::new(Algorithm::EdDSA, pem)?).cookie("auth");
/// let layer = AccessLayer::new(policy);
/// # Ok::<(), tower_sse::access::jwt::KeyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct JwtPolicy<P = EveryChannel> {
    verifier: Arc<Verifier>,
    selectors: Selectors,
    cookie: Arc<str>,
    needs_token: P,
}

impl JwtPolicy {
    /// A policy that asks a token valid for `verifier` of every channel, read from the
    /// `mercureAuthorization` cookie after the header and the query, with a cache of 1,024
    /// compiled selectors.
    ///
    /// ```
    /// # use tower_sse::access::jwt::{JwtPolicy, Verifier};
    /// let policy = JwtPolicy::new(Verifier::hmac("secret"));
    /// ```
    pub fn new(verifier: Verifier) -> JwtPolicy {
        JwtPolicy {
            verifier: Arc::new(verifier),
            selectors: Selectors::default(),
            cookie: DEFAULT_COOKIE.into(),
            needs_token: |_| true,
        }
    }
}

impl<P> JwtPolicy<P> {
    /// Which channels need a token with a matching `subscribe` selector (default: all). The
    /// others are allowed with no check at all, even with a bad token.
    ///
    /// ```
    /// # use tower_sse::access::jwt::{JwtPolicy, Verifier};
    /// let policy = JwtPolicy::new(Verifier::hmac("secret"))
    ///     .needs_token(|channel: &str| channel.starts_with("private."));
    /// ```
    #[must_use]
    pub fn needs_token<Q>(self, needs_token: Q) -> JwtPolicy<Q>
    where
        Q: Fn(&str) -> bool + Clone,
    {
        JwtPolicy {
            verifier: self.verifier,
            selectors: self.selectors,
            cookie: self.cookie,
            needs_token,
        }
    }

    /// The cookie a token is read from when neither the header nor the query has one
    /// (default: `mercureAuthorization`).
    ///
    /// ```
    /// # use tower_sse::access::jwt::{JwtPolicy, Verifier};
    /// let policy = JwtPolicy::new(Verifier::hmac("secret")).cookie("sse_token");
    /// ```
    #[must_use]
    pub fn cookie(mut self, name: &str) -> Self {
        self.cookie = name.into();
        self
    }

    /// The cache of compiled selectors to use (default: its own, of 1,024), for sharing one
    /// with a publish endpoint.
    ///
    /// ```
    /// # use tower_sse::access::jwt::{JwtPolicy, Selectors, Verifier};
    /// let selectors = Selectors::new(4096);
    /// let policy = JwtPolicy::new(Verifier::hmac("secret")).selectors(selectors.clone());
    /// ```
    #[must_use]
    pub fn selectors(mut self, selectors: Selectors) -> Self {
        self.selectors = selectors;
        self
    }

    /// Checks `parts`' token for a subscription to `channel`, as the [`AccessPolicy`] does,
    /// whether or not the channel [needs a token](JwtPolicy::needs_token).
    ///
    /// # Errors
    ///
    /// [`Denied`]: 401 for a missing or invalid token, 403 when no `subscribe` selector
    /// matches `channel`.
    ///
    /// ```
    /// # use tower_sse::access::jwt::{JwtPolicy, Verifier};
    /// let policy = JwtPolicy::new(Verifier::hmac("secret"));
    /// let (parts, ()) = http::Request::get("/events").body(())?.into_parts();
    /// assert_eq!(policy.authorize(&parts, "news").unwrap_err().status(), 401);
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn authorize(&self, parts: &Parts, channel: &str) -> Result<Grant, Denied> {
        let token = Token::from_request(parts, &self.cookie)
            .map_err(|e| Denied::unauthorized(e.to_string()))?
            .ok_or_else(|| Denied::unauthorized("token required"))?;
        let claims = self
            .verifier
            .verify(&token.value)
            .map_err(|e| Denied::unauthorized(e.to_string()))?;
        let Some(subscribe) = claims.subscribe() else {
            return Err(Denied::forbidden("no mercure.subscribe claim"));
        };
        if !self.selectors.any_matches(subscribe, channel) {
            return Err(Denied::forbidden(
                "no subscribe selector matches the channel",
            ));
        }
        let deadline = claims.deadline();
        let mut grant = Grant::default().extension(Verified {
            claims,
            source: token.source,
        });
        if let Some(Deadline(deadline)) = deadline {
            grant = grant.until(deadline);
        }
        Ok(grant)
    }
}

impl<P> AccessPolicy for JwtPolicy<P>
where
    P: Fn(&str) -> bool + Clone,
{
    type Grant = Grant;
    type Future = Ready<Result<Grant, Denied>>;

    fn check(&mut self, parts: &Parts, channel: &str) -> Self::Future {
        if !(self.needs_token)(channel) {
            return ready(Ok(Grant::default()));
        }
        ready(self.authorize(parts, channel))
    }
}

#[cfg(test)]
mod tests;
