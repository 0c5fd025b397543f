//! Where Mercure's topics live among the broker's channels.
//!
//! - A public update on topic `T` goes to channel `T`: the hub's own API sees the same
//!   channel (`/events?channel=T`, `/publish?channel=T`), and an exact topic selector is one
//!   channel lookup per publish.
//! - A private update on `T` goes to `private.T`, which the hub's own `/events` guards as any
//!   `private.*` channel.
//! - A topic selector that is not an exact topic (`*`, a URI template) is a [`Route`]: a
//!   channel of its own that every publish whose topics it matches also goes to (one
//!   [`Broker::publish_to`](tower_sse::Broker::publish_to): one id, sent once per stream). A
//!   subscriber's private rights that exact channels can't express are routes too, of a topic
//!   selector and a claim selector together, in channels under `private.`.
//!
//! A route's channel name holds its selectors with `%`, `,`, `|` and white space
//! percent-encoded, so any selector makes a valid channel name, and two routes never share one.

use std::{fmt::Write as _, sync::Arc};

use tower_sse::access::jwt::{Selector, SelectorError};

/// The channel of a private update's topic.
pub(super) fn private(topic: &str) -> String {
    format!("private.{topic}")
}

/// A selector that is an exact topic: no template expression, not `*`.
pub(super) fn is_exact(selector: &str) -> bool {
    selector != "*" && !selector.contains(['{', '}'])
}

/// What a route matches: its selectors' text, as subscribers and announcements name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum RouteKey {
    /// Public updates with a topic the selector matches.
    Public(Arc<str>),
    /// Private updates with a topic the first selector (the subscriber's) matches and a topic
    /// the second (its claim) matches.
    Private(Arc<str>, Arc<str>),
}

impl RouteKey {
    /// The selectors, the topic selector first.
    pub(super) fn selectors(&self) -> Vec<&str> {
        match self {
            RouteKey::Public(s) => vec![s],
            RouteKey::Private(s, c) => vec![s, c],
        }
    }

    /// The key of `selectors` as [`RouteKey::selectors`] lists them; `None` for another count.
    pub(super) fn from_selectors(selectors: &[String]) -> Option<RouteKey> {
        match selectors {
            [s] => Some(RouteKey::Public(s.as_str().into())),
            [s, c] => Some(RouteKey::Private(s.as_str().into(), c.as_str().into())),
            _ => None,
        }
    }

    /// The route's channel.
    pub(super) fn channel(&self) -> String {
        let mut name = String::new();
        match self {
            RouteKey::Public(s) => {
                name.push_str("mercure:");
                escape(s, &mut name);
            }
            RouteKey::Private(s, c) => {
                name.push_str("private.mercure:");
                escape(s, &mut name);
                name.push('|');
                escape(c, &mut name);
            }
        }
        name
    }
}

/// A route, compiled: its key, its channel and its selectors.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) key: RouteKey,
    pub(super) channel: Arc<str>,
    selector: Selector,
    claim: Option<Selector>,
}

impl Route {
    pub(super) fn new(key: RouteKey) -> Result<Route, SelectorError> {
        let (selector, claim) = match &key {
            RouteKey::Public(s) => (Selector::parse(s)?, None),
            RouteKey::Private(s, c) => (Selector::parse(s)?, Some(Selector::parse(c)?)),
        };
        Ok(Route {
            channel: key.channel().into(),
            key,
            selector,
            claim,
        })
    }

    /// Whether an update with these topics goes to this route's channel.
    pub(super) fn matches(&self, topics: &[String], private: bool) -> bool {
        let any = |selector: &Selector| topics.iter().any(|t| selector.matches(t));
        match &self.claim {
            None => !private && any(&self.selector),
            Some(claim) => private && any(&self.selector) && any(claim),
        }
    }
}

/// Appends `selector` with the characters a channel name can't hold, and those the layout
/// uses, percent-encoded.
fn escape(selector: &str, out: &mut String) {
    for c in selector.chars() {
        if c == '%' || c == ',' || c == '|' || c.is_whitespace() || c.is_control() {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_channels_are_valid_and_distinct() {
        let rules = tower_sse::ChannelRules::default();
        let keys = [
            RouteKey::Public("*".into()),
            RouteKey::Public("https://example.com/{a,b}".into()),
            RouteKey::Public("a b|c%".into()),
            RouteKey::Private("a".into(), "b|c".into()),
            RouteKey::Private("a|b".into(), "c".into()),
        ];
        let names: Vec<String> = keys.iter().map(RouteKey::channel).collect();
        for name in &names {
            assert!(rules.check_name(name).is_ok(), "{name}");
        }
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(names[2], "mercure:a%20b%7Cc%25");
        assert!(names[3].starts_with("private."));
    }

    #[test]
    fn routes_match_public_or_private_updates() {
        let topics = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let books = Route::new(RouteKey::Public("https://e.com/books/{id}".into())).unwrap();
        assert!(books.matches(&topics(&["x", "https://e.com/books/1"]), false));
        assert!(!books.matches(&topics(&["https://e.com/books/1"]), true));
        assert!(!books.matches(&topics(&["https://e.com/books/1/x"]), false));
        let mine = Route::new(RouteKey::Private("*".into(), "users/{id}".into())).unwrap();
        assert!(mine.matches(&topics(&["feed", "users/7"]), true));
        assert!(!mine.matches(&topics(&["feed"]), true));
        assert!(!mine.matches(&topics(&["users/7"]), false));
        assert!(Route::new(RouteKey::Public("{a".into())).is_err());
    }
}
