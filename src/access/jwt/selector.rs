//! [`Selector`]: one entry of a `mercure.subscribe` (or `publish`) claim, and [`Selectors`]: a
//! bounded cache of compiled ones.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

/// One selector, compiled: `*` (every channel), an exact name, or a URI template
/// ([RFC 6570](https://www.rfc-editor.org/rfc/rfc6570) levels 1 and 2, as Mercure matches
/// them).
///
/// In a template, `{var}` matches one or more characters other than `/`, `?` and `#`;
/// `{+var}` matches one or more of any characters, `/` included; `{#var}` matches `#` then one
/// or more of any characters. A string with no brace is an exact name.
///
/// ```
/// use tower_sse::access::jwt::Selector;
///
/// let users = Selector::parse("https://example.com/users/{id}")?;
/// assert!(users.matches("https://example.com/users/42"));
/// assert!(!users.matches("https://example.com/users/42/x"));
///
/// let tree = Selector::parse("https://example.com/{+path}")?;
/// assert!(tree.matches("https://example.com/users/42/x"));
///
/// assert!(Selector::parse("*")?.matches("anything"));
/// assert!(Selector::parse("news")?.matches("news"));
/// # Ok::<(), tower_sse::access::jwt::SelectorError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Exact(String),
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{var}`: no `/`, `?` or `#`.
    Simple,
    /// `{+var}`: anything.
    Reserved,
    /// `{#var}`: `#`, then anything.
    Fragment,
}

/// Why a selector is not a valid URI template.
///
/// ```
/// use tower_sse::access::jwt::{Selector, SelectorError};
///
/// assert_eq!(Selector::parse("users/{id"), Err(SelectorError::Unclosed));
/// assert_eq!(Selector::parse("users/{}"), Err(SelectorError::EmptyVariable));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    /// A `{` with no `}` after it.
    Unclosed,
    /// A `}` with no `{` before it.
    UnexpectedClose,
    /// `{}`, or an operator with no name: `{+}`.
    EmptyVariable,
    /// A variable name with a character RFC 6570 does not allow there, or an operator of
    /// level 3 or 4 (`{/var}`, `{?var}`, `{a,b}`...), which Mercure does not match either.
    InvalidVariable,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectorError::Unclosed => "unclosed `{` in a uri template",
            SelectorError::UnexpectedClose => "`}` without `{` in a uri template",
            SelectorError::EmptyVariable => "empty variable in a uri template",
            SelectorError::InvalidVariable => "unsupported variable in a uri template",
        })
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Compiles a selector.
    ///
    /// # Errors
    ///
    /// [`SelectorError`] for a malformed template: an unclosed `{`, a stray `}`, an empty or
    /// unsupported variable.
    ///
    /// ```
    /// use tower_sse::access::jwt::Selector;
    ///
    /// assert!(Selector::parse("https://example.com/books/{id}").is_ok());
    /// assert!(Selector::parse("https://example.com/books/{id").is_err());
    /// ```
    pub fn parse(selector: &str) -> Result<Selector, SelectorError> {
        if selector == "*" {
            return Ok(Selector(Kind::Any));
        }
        if !selector.contains(['{', '}']) {
            return Ok(Selector(Kind::Exact(selector.to_owned())));
        }
        let mut parts = Vec::new();
        let mut rest = selector;
        while !rest.is_empty() {
            let open = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..open];
            if literal.contains('}') {
                return Err(SelectorError::UnexpectedClose);
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            rest = &rest[open..];
            let Some(inner) = rest.strip_prefix('{') else {
                break;
            };
            let close = inner.find('}').ok_or(SelectorError::Unclosed)?;
            let expression = &inner[..close];
            rest = &inner[close + 1..];
            let (part, name) = match expression.as_bytes().first() {
                Some(b'+') => (Part::Reserved, &expression[1..]),
                Some(b'#') => (Part::Fragment, &expression[1..]),
                _ => (Part::Simple, expression),
            };
            if name.is_empty() {
                return Err(SelectorError::EmptyVariable);
            }
            // RFC 6570 §2.3: varchar = ALPHA / DIGIT / "_" / pct-encoded, with "." between.
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%')
            {
                return Err(SelectorError::InvalidVariable);
            }
            parts.push(part);
        }
        Ok(Selector(Kind::Template(parts)))
    }

    /// Whether `topic` (a channel name) matches.
    ///
    /// ```
    /// use tower_sse::access::jwt::Selector;
    ///
    /// let s = Selector::parse("https://example.com/{kind}/{id}")?;
    /// assert!(s.matches("https://example.com/books/1"));
    /// assert!(!s.matches("https://example.com/books/"));
    /// # Ok::<(), tower_sse::access::jwt::SelectorError>(())
    /// ```
    pub fn matches(&self, topic: &str) -> bool {
        match &self.0 {
            Kind::Any => true,
            Kind::Exact(name) => name == topic,
            Kind::Template(parts) => template_matches(parts, topic.as_bytes()),
        }
    }
}

/// The positions reachable after each part, left to right: O(parts × len²) at worst, with no
/// backtracking (channel names are at most a few hundred bytes).
fn template_matches(parts: &[Part], topic: &[u8]) -> bool {
    let mut reach = vec![false; topic.len() + 1];
    reach[0] = true;
    for part in parts {
        let mut next = vec![false; topic.len() + 1];
        for start in (0..=topic.len()).filter(|&p| reach[p]) {
            let rest = &topic[start..];
            match part {
                Part::Literal(literal) => {
                    if rest.starts_with(literal.as_bytes()) {
                        next[start + literal.len()] = true;
                    }
                }
                Part::Simple => {
                    let run = rest
                        .iter()
                        .take_while(|b| !matches!(b, b'/' | b'?' | b'#'))
                        .count();
                    next[start + 1..=start + run].fill(true);
                }
                Part::Reserved => next[start + 1..].fill(true),
                Part::Fragment => {
                    if rest.len() >= 2 && rest[0] == b'#' {
                        next[start + 2..].fill(true);
                    }
                }
            }
        }
        reach = next;
    }
    reach[topic.len()]
}

/// Compiled selectors, cached by their text, with a bound: when `capacity` are kept the cache
/// is emptied and fills again, so a stream of tokens with made-up selectors can't grow it
/// without limit. Cloning shares the cache.
///
/// A malformed selector is cached as such and matches nothing.
///
/// ```
/// use tower_sse::access::jwt::Selectors;
///
/// let selectors = Selectors::new(1024);
/// assert!(selectors.matches("https://example.com/users/{id}", "https://example.com/users/7"));
/// assert!(!selectors.matches("users/{id", "users/7"));
/// assert!(selectors.any_matches(["news", "users/{id}"], "users/7"));
/// ```
#[derive(Debug, Clone)]
pub struct Selectors {
    compiled: Arc<Mutex<Compiled>>,
    capacity: usize,
}

/// Each selector's text, and what it compiled to (`None`: malformed).
type Compiled = HashMap<Box<str>, Option<Arc<Selector>>>;

impl Default for Selectors {
    /// A cache of 1,024 selectors.
    fn default() -> Selectors {
        Selectors::new(1024)
    }
}

impl Selectors {
    /// A cache that keeps at most `capacity` compiled selectors (at least 1).
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// let selectors = Selectors::new(256);
    /// ```
    pub fn new(capacity: usize) -> Selectors {
        Selectors {
            compiled: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// The compiled `selector`, from the cache or compiled now; `None` if it is malformed.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// let selectors = Selectors::default();
    /// assert!(selectors.get("{id}").is_some());
    /// assert!(selectors.get("{id").is_none());
    /// ```
    pub fn get(&self, selector: &str) -> Option<Arc<Selector>> {
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = compiled.get(selector) {
            return found.clone();
        }
        let parsed = Selector::parse(selector).ok().map(Arc::new);
        if compiled.len() >= self.capacity {
            compiled.clear();
        }
        compiled.insert(selector.into(), parsed.clone());
        parsed
    }

    /// Whether `selector` matches `topic`; a malformed selector matches nothing.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// assert!(Selectors::default().matches("*", "private.x"));
    /// ```
    pub fn matches(&self, selector: &str, topic: &str) -> bool {
        // The two cheap cases need no cache.
        if selector == "*" || selector == topic && !selector.contains(['{', '}']) {
            return true;
        }
        if !selector.contains(['{', '}']) {
            return false;
        }
        self.get(selector).is_some_and(|s| s.matches(topic))
    }

    /// Whether any of `selectors` matches `topic`.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// assert!(!Selectors::default().any_matches(["a", "b/{x}"], "b/c/d"));
    /// ```
    pub fn any_matches<I>(&self, selectors: I, topic: &str) -> bool
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        selectors
            .into_iter()
            .any(|s| self.matches(s.as_ref(), topic))
    }

    /// How many compiled selectors are kept now.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// let selectors = Selectors::new(2);
    /// for s in ["{a}", "{b}", "{c}"] {
    ///     selectors.get(s);
    /// }
    /// assert!(selectors.len() <= 2);
    /// ```
    pub fn len(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no compiled selector is kept.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Selectors;
    /// assert!(Selectors::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).unwrap().matches(topic)
    }

    #[test]
    fn star_and_exact() {
        assert!(m("*", ""));
        assert!(m("*", "a/b/c"));
        assert!(m("news", "news"));
        assert!(!m("news", "news2"));
        assert!(!m("news", "new"));
    }

    #[test]
    fn simple_variables_stop_at_slash_query_and_fragment() {
        let s = "https://example.com/users/{id}";
        assert!(m(s, "https://example.com/users/42"));
        assert!(!m(s, "https://example.com/users/42/x"));
        assert!(!m(s, "https://example.com/users/"));
        assert!(!m(s, "https://example.com/users/4?x"));
        assert!(!m(s, "https://example.com/users/4#x"));
        assert!(!m(s, "https://example.com/user/42"));
    }

    #[test]
    fn several_variables() {
        let s = "https://example.com/{kind}/{id}.json";
        assert!(m(s, "https://example.com/books/1.json"));
        assert!(m(s, "https://example.com/books/1.2.json"));
        assert!(!m(s, "https://example.com/books/1"));
        assert!(!m(s, "https://example.com/books/a/1.json"));
        assert!(m("{a}-{b}", "x-y-z"));
        assert!(!m("{a}{b}", "x"));
        assert!(m("{a}{b}", "xy"));
    }

    #[test]
    fn reserved_and_fragment_variables_cross_slashes() {
        assert!(m(
            "https://example.com/{+path}",
            "https://example.com/a/b/c"
        ));
        assert!(!m("https://example.com/{+path}", "https://example.com/"));
        assert!(m("books{#frag}", "books#a/b"));
        assert!(!m("books{#frag}", "books#"));
        assert!(!m("books{#frag}", "booksa"));
    }

    #[test]
    fn malformed_templates_are_errors_and_match_nothing_in_the_cache() {
        assert_eq!(Selector::parse("a{"), Err(SelectorError::Unclosed));
        assert_eq!(Selector::parse("a}"), Err(SelectorError::UnexpectedClose));
        assert_eq!(Selector::parse("{}"), Err(SelectorError::EmptyVariable));
        assert_eq!(Selector::parse("{+}"), Err(SelectorError::EmptyVariable));
        assert_eq!(
            Selector::parse("{a,b}"),
            Err(SelectorError::InvalidVariable)
        );
        assert_eq!(Selector::parse("{/a}"), Err(SelectorError::InvalidVariable));
        assert_eq!(
            Selector::parse("{{a}}"),
            Err(SelectorError::InvalidVariable)
        );
        let cache = Selectors::default();
        assert!(!cache.matches("a{", "a{"));
        assert!(!cache.matches("{}", "{}"));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = Selectors::new(3);
        for i in 0..10 {
            assert!(cache.matches(&format!("{{a}}/{i}"), &format!("x/{i}")));
            assert!(cache.len() <= 3);
        }
    }

    proptest! {
        #[test]
        fn never_panics(selector in "\\PC{0,24}", topic in "\\PC{0,24}") {
            let _ = Selector::parse(&selector).map(|s| s.matches(&topic));
            let _ = Selectors::new(4).matches(&selector, &topic);
        }

        #[test]
        fn a_simple_variable_matches_exactly_the_segments_without_a_slash(
            prefix in "[a-z:/.]{0,10}",
            value in "[^/?#{}]{0,10}",
        ) {
            let selector = format!("{prefix}{{id}}");
            let topic = format!("{prefix}{value}");
            prop_assert_eq!(m(&selector, &topic), !value.is_empty());
            let deeper = format!("{topic}/x");
            let reserved = format!("{prefix}{{+id}}");
            prop_assert!(!m(&selector, &deeper));
            prop_assert!(m(&reserved, &deeper));
        }

        #[test]
        fn an_exact_selector_matches_only_itself(a in "[^{}]{0,12}", b in "[^{}]{0,12}") {
            prop_assume!(a != "*");
            prop_assert_eq!(m(&a, &b), a == b);
        }
    }
}
