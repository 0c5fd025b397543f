//! [`AccessLayer`]: wraps a service in [`Access`].

use tower::Layer;

use super::Access;
use crate::channel::ChannelRules;

/// Applies an [`AccessPolicy`](super::AccessPolicy) to every channel a request names, before
/// the inner service sees it.
///
/// ```
/// use http::request::Parts;
/// use tower::ServiceBuilder;
/// use tower_sse::{access::Denied, AccessLayer, Broker, SseService};
///
/// let service = ServiceBuilder::new()
///     .layer(AccessLayer::new(|parts: &Parts, channel: &str| {
///         let private = channel.starts_with("private.");
///         let signed_in = parts.headers.contains_key("authorization");
///         async move {
///             if private && !signed_in {
///                 return Err(Denied::unauthorized("sign in for private channels"));
///             }
///             Ok(())
///         }
///     }))
///     .service(SseService::new(Broker::new()));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AccessLayer<P> {
    policy: P,
    rules: ChannelRules,
}

impl<P> AccessLayer<P> {
    /// A layer checking every channel with `policy`, reading channels with the default
    /// [`ChannelRules`].
    ///
    /// ```
    /// # use tower_sse::AccessLayer;
    /// let layer = AccessLayer::new(|_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) });
    /// ```
    pub fn new(policy: P) -> Self {
        AccessLayer {
            policy,
            rules: ChannelRules::default(),
        }
    }

    /// The rules for reading the channel list; give the same as the [`SseService`](crate::SseService)'s.
    ///
    /// ```
    /// # use tower_sse::{AccessLayer, ChannelRules};
    /// let layer = AccessLayer::new(|_: &http::request::Parts, _: &str| async { Ok::<_, tower_sse::access::Denied>(()) })
    ///     .channel_rules(ChannelRules::default().max_channels(4));
    /// ```
    pub fn channel_rules(mut self, rules: ChannelRules) -> Self {
        self.rules = rules;
        self
    }
}

impl<S, P: Clone> Layer<S> for AccessLayer<P> {
    type Service = Access<S, P>;

    fn layer(&self, inner: S) -> Access<S, P> {
        Access::new(inner, self.policy.clone()).channel_rules(self.rules.clone())
    }
}
