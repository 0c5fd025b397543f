//! [`Grant`]: what an [`AccessPolicy`](super::AccessPolicy)'s "yes" hands on to the service.
//!
//! A check often learns something the service needs: who the user is, when their token
//! expires. Rather than the service reading the credentials again, the policy hands it over
//! with the request, in its extensions, as tower-http's `AsyncAuthorizeRequest` hands on the
//! request it was given.

use std::any::Any;

use http::Extensions;
use tokio::time::Instant;

use crate::body::Deadline;

/// What an allowed check hands on: values for the request's
/// [extensions](http::Request::extensions), and a [`Deadline`] at which the stream ends.
///
/// A policy's future returns `Ok(grant)`, or `Ok(())` for a plain "yes" (`()` is an empty
/// grant). Once every channel is allowed, [`Access`](super::Access) merges the grants of all
/// the checks into the request before the inner service sees it:
///
/// - every [`extension`](Grant::extension) is inserted, replacing a value of the same type the
///   request had; between the checks of several channels, the later channel's value wins;
/// - the earliest deadline of all the grants (and of a [`Deadline`] the request had already)
///   is the request's [`Deadline`], which [`SseService`](crate::SseService) ends the stream at.
///
/// The checked [`Channels`](crate::Channels) are inserted last, so a grant can't change what
/// the stream subscribes to.
///
/// ```
/// use std::time::Duration;
/// use http::request::Parts;
/// use tokio::time::Instant;
/// use tower_sse::access::{Denied, Grant};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct User(String);
///
/// // The user and the expiry, as a real policy would read them from a token.
/// let policy = |parts: &Parts, _channel: &str| {
///     let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
///     async move {
///         let Some(user) = user else {
///             return Err(Denied::unauthorized("who are you?"));
///         };
///         let expires = Instant::now() + Duration::from_secs(600);
///         Ok(Grant::default().extension(User(user)).until(expires))
///     }
/// };
/// let layer = tower_sse::AccessLayer::new(policy);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Grant {
    extensions: Extensions,
    deadline: Option<Instant>,
}

impl Grant {
    /// Hands `value` on in the request's extensions (replacing one of the same type). A
    /// [`Deadline`] given here is the same as [`Grant::until`].
    ///
    /// ```
    /// # use tower_sse::access::Grant;
    /// #[derive(Clone)]
    /// struct Scopes(Vec<String>);
    ///
    /// let grant = Grant::default().extension(Scopes(vec!["read".into()]));
    /// assert!(grant.extensions().get::<Scopes>().is_some());
    /// ```
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        // A deadline is kept apart, so that merging keeps the earliest, not the last.
        if let Some(Deadline(at)) = (&value as &dyn Any).downcast_ref::<Deadline>() {
            return self.until(*at);
        }
        self.extensions.insert(value);
        self
    }

    /// Ends the stream at `deadline` at the latest (a token's expiry, say): see [`Deadline`]
    /// for how it ends and what a browser then does. Given twice, the earlier one counts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tokio::time::Instant;
    /// # use tower_sse::access::Grant;
    /// let soon = Instant::now() + Duration::from_secs(60);
    /// let grant = Grant::default().until(soon).until(soon + Duration::from_secs(1));
    /// assert_eq!(grant.deadline(), Some(soon));
    /// ```
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// The deadline given, if any.
    ///
    /// ```
    /// # use tower_sse::access::Grant;
    /// assert_eq!(Grant::default().deadline(), None);
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The extensions given (a deadline is not among them: see [`Grant::deadline`]).
    ///
    /// ```
    /// # use tower_sse::access::Grant;
    /// assert!(Grant::from(()).extensions().is_empty());
    /// ```
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Adds a later check's grant to this one.
    pub(crate) fn merge(&mut self, later: Grant) {
        self.extensions.extend(later.extensions);
        if let Some(deadline) = later.deadline {
            *self = std::mem::take(self).until(deadline);
        }
    }

    /// Puts the grant into a request's extensions. An empty grant changes nothing and costs
    /// nothing.
    pub(crate) fn apply(self, extensions: &mut Extensions) {
        extensions.extend(self.extensions);
        if let Some(at) = self.deadline {
            let earliest = extensions
                .get::<Deadline>()
                .map_or(at, |&Deadline(before)| before.min(at));
            extensions.insert(Deadline(earliest));
        }
    }
}

/// A plain "yes": nothing handed on.
impl From<()> for Grant {
    fn from((): ()) -> Grant {
        Grant::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct User(&'static str);

    #[derive(Debug, Clone, PartialEq)]
    struct Role(&'static str);

    #[test]
    fn merged_grants_keep_the_earliest_deadline_and_the_later_value() {
        let now = Instant::now();
        let (early, late) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let mut grant = Grant::default().extension(User("a")).until(late);
        grant.merge(Grant::from(()));
        grant.merge(Grant::default().extension(Role("r")).until(early));
        grant.merge(Grant::default().extension(User("b")).until(late));
        assert_eq!(grant.deadline(), Some(early));
        let mut extensions = Extensions::new();
        grant.apply(&mut extensions);
        assert_eq!(extensions.get::<User>(), Some(&User("b")));
        assert_eq!(extensions.get::<Role>(), Some(&Role("r")));
        assert_eq!(extensions.get::<Deadline>(), Some(&Deadline(early)));
        assert_eq!(extensions.len(), 3);
    }

    #[test]
    fn a_deadline_given_as_an_extension_is_a_deadline() {
        let now = Instant::now();
        let (early, late) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let grant = Grant::default()
            .extension(Deadline(early))
            .extension(Deadline(late));
        assert_eq!(grant.deadline(), Some(early));
        assert!(grant.extensions().is_empty());
    }

    #[test]
    fn the_request_keeps_its_own_earlier_deadline() {
        let now = Instant::now();
        let (early, late) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let mut extensions = Extensions::new();
        extensions.insert(Deadline(early));
        Grant::default().until(late).apply(&mut extensions);
        assert_eq!(extensions.get::<Deadline>(), Some(&Deadline(early)));
        Grant::default().until(now).apply(&mut extensions);
        assert_eq!(extensions.get::<Deadline>(), Some(&Deadline(now)));
    }

    #[test]
    fn an_empty_grant_changes_nothing() {
        let mut extensions = Extensions::new();
        Grant::from(()).apply(&mut extensions);
        assert!(extensions.is_empty());
        extensions.insert(User("a"));
        Grant::default().apply(&mut extensions);
        assert_eq!(extensions.get::<User>(), Some(&User("a")));
        assert_eq!(extensions.len(), 1);
    }
}
