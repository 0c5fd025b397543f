//! Channel names and the one parser that reads them from a request.
//!
//! A client picks its channels in the query string, like flask-sse: `?channel=a`, repeated
//! (`?channel=a&channel=b`) or comma-separated (`?channel=a,b`); with none, it gets the default
//! channel `sse`. Channels chosen some other way (a path, a token's claims) go through the same
//! rules with [`ChannelRules::channels`], so a list means the same whichever way it came.
//!
//! [`AccessLayer`](crate::AccessLayer) and [`SseService`](crate::SseService) read the list through
//! this parser only, and the access layer hands the list it checked to the service in the
//! request's extensions, so the channels a stream carries are exactly the channels the access
//! check saw, whatever the query looks like (repeated keys, percent-encoding, `+`).
//!
//! The parser is strict, because a lenient one is where such tricks live: invalid
//! percent-encoding, invalid UTF-8 after decoding, an empty name, a name over
//! [`ChannelRules::max_len`] bytes, a control character, whitespace or more than
//! [`ChannelRules::max_channels`] channels are all errors (the services answer them with
//! `400 Bad Request` and the reason), never silently "fixed".

use std::{error::Error as StdError, fmt, sync::Arc};

/// The default channel, when a request names none (flask-sse's default).
pub const DEFAULT_CHANNEL: &str = "sse";

/// The rules a channel list must follow; [`ChannelRules::default`] gives the defaults below.
///
/// ```
/// use tower_sse::ChannelRules;
///
/// let rules = ChannelRules::default().max_channels(4).default_channel("news");
/// let channels = rules.parse_query(None).unwrap();
/// assert_eq!(channels.iter().collect::<Vec<_>>(), ["news"]);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ChannelRules {
    max_channels: usize,
    max_len: usize,
    default_channel: Arc<str>,
}

impl Default for ChannelRules {
    fn default() -> Self {
        ChannelRules {
            max_channels: 32,
            max_len: 256,
            default_channel: Arc::from(DEFAULT_CHANNEL),
        }
    }
}

impl ChannelRules {
    /// The most channels one request may name (default 32: a page rarely needs more, and each
    /// one costs a lookup and a wake-up slot).
    ///
    /// ```
    /// # use tower_sse::{ChannelError, ChannelRules};
    /// let rules = ChannelRules::default().max_channels(1);
    /// assert_eq!(rules.parse_query(Some("channel=a,b")), Err(ChannelError::TooMany(1)));
    /// ```
    pub fn max_channels(mut self, max: usize) -> Self {
        self.max_channels = max.max(1);
        self
    }

    /// The longest channel name, in bytes (default 256).
    ///
    /// ```
    /// # use tower_sse::{ChannelError, ChannelRules};
    /// let rules = ChannelRules::default().max_len(3);
    /// assert_eq!(rules.parse_query(Some("channel=abcd")), Err(ChannelError::TooLong(3)));
    /// ```
    pub fn max_len(mut self, max: usize) -> Self {
        self.max_len = max.max(1);
        self
    }

    /// The channel of a request that names none (default `sse`).
    ///
    /// # Panics
    ///
    /// Never: an invalid name is reported by [`ChannelRules::parse_query`] and
    /// [`ChannelRules::channels`] instead.
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// let rules = ChannelRules::default().default_channel("updates");
    /// assert_eq!(rules.parse_query(Some("x=1")).unwrap().iter().next(), Some("updates"));
    /// ```
    pub fn default_channel(mut self, name: impl Into<Arc<str>>) -> Self {
        self.default_channel = name.into();
        self
    }

    /// Checks one channel name against the rules.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Empty`], [`ChannelError::TooLong`] or [`ChannelError::InvalidChar`].
    ///
    /// ```
    /// # use tower_sse::{ChannelError, ChannelRules};
    /// let rules = ChannelRules::default();
    /// assert!(rules.check_name("private.orders").is_ok());
    /// assert_eq!(rules.check_name("a b"), Err(ChannelError::InvalidChar));
    /// ```
    pub fn check_name(&self, name: &str) -> Result<(), ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if name.len() > self.max_len {
            return Err(ChannelError::TooLong(self.max_len));
        }
        if name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ',')
        {
            return Err(ChannelError::InvalidChar);
        }
        Ok(())
    }

    /// Checks a list read elsewhere (by a layer with its own rules) against these rules.
    pub(crate) fn check_list(&self, channels: &Channels) -> Result<(), ChannelError> {
        if channels.len() > self.max_channels {
            return Err(ChannelError::TooMany(self.max_channels));
        }
        channels.iter().try_for_each(|name| self.check_name(name))
    }

    /// Reads the channel list from a query string (without the `?`).
    ///
    /// Keys are percent-decoded too, so `%63hannel=x` names channel `x`: the list is what the
    /// query means, not what it looks like. Other keys are ignored. Repeated names count once.
    ///
    /// # Errors
    ///
    /// A [`ChannelError`] for the first thing wrong with a `channel` parameter, or for the
    /// default channel if it breaks the rules.
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// let rules = ChannelRules::default();
    /// let channels = rules.parse_query(Some("channel=a&channel=b%2Cc&channel=a")).unwrap();
    /// assert_eq!(channels.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    /// ```
    pub fn parse_query(&self, query: Option<&str>) -> Result<Channels, ChannelError> {
        let mut list = List::default();
        for (key, value) in query_pairs(query.unwrap_or("")) {
            // "channel" is 7 bytes; percent-encoded it is at most 21. Longer keys can't be it,
            // so they are not decoded at all.
            if key.len() > 21 || form_decode(key).ok().as_deref() != Some("channel") {
                continue;
            }
            let value = form_decode(value)?;
            for name in value.split(',') {
                list.push(self, name)?;
            }
        }
        list.finish(self)
    }

    /// The channel list of these names, checked as [`ChannelRules::parse_query`] checks a
    /// query's: for channels chosen elsewhere than in `?channel=` (a path, a JSON body, a
    /// token's claims), with the same meaning as a query naming each in turn.
    ///
    /// Each name is taken as it is (no percent-decoding, no splitting at `,`). Repeated names
    /// count once, in the order first named; no names at all gives the
    /// [default channel](ChannelRules::default_channel), as a query without `channel` does.
    ///
    /// # Errors
    ///
    /// A [`ChannelError`] for the first name that breaks the rules ([`ChannelError::Empty`],
    /// [`ChannelError::TooLong`], [`ChannelError::InvalidChar`]), [`ChannelError::TooMany`]
    /// as soon as more than [`ChannelRules::max_channels`] different names were read (the rest
    /// is not read), or the default channel's error if it breaks the rules.
    ///
    /// ```
    /// use tower_sse::{ChannelError, ChannelRules};
    ///
    /// let rules = ChannelRules::default().max_channels(2);
    /// let channels = rules.channels(["news", "sport", "news"]).unwrap();
    /// assert_eq!(channels.iter().collect::<Vec<_>>(), ["news", "sport"]);
    /// assert_eq!(channels, rules.parse_query(Some("channel=news,sport&channel=news")).unwrap());
    ///
    /// let none: [&str; 0] = [];
    /// assert_eq!(rules.channels(none).unwrap().iter().collect::<Vec<_>>(), ["sse"]);
    /// assert_eq!(rules.channels(["a,b"]), Err(ChannelError::InvalidChar));
    /// assert_eq!(rules.channels(["a", "b", "c"]), Err(ChannelError::TooMany(2)));
    /// ```
    pub fn channels<I>(&self, names: I) -> Result<Channels, ChannelError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut list = List::default();
        for name in names {
            list.push(self, name.as_ref())?;
        }
        list.finish(self)
    }
}

/// A channel list being read: the one place the rules on a whole list are applied.
#[derive(Default)]
struct List {
    names: Vec<Arc<str>>,
}

impl List {
    /// Adds `name` unless it is there already.
    fn push(&mut self, rules: &ChannelRules, name: &str) -> Result<(), ChannelError> {
        rules.check_name(name)?;
        if self.names.iter().any(|n| &**n == name) {
            return Ok(());
        }
        // Checked before the push, so a flood of names stops at the limit, without a list
        // sized by the client.
        if self.names.len() == rules.max_channels {
            return Err(ChannelError::TooMany(rules.max_channels));
        }
        self.names.push(Arc::from(name));
        Ok(())
    }

    /// The list, or the default channel when no name was read.
    fn finish(mut self, rules: &ChannelRules) -> Result<Channels, ChannelError> {
        if self.names.is_empty() {
            rules.check_name(&rules.default_channel)?;
            self.names.push(rules.default_channel.clone());
        }
        Ok(Channels { names: self.names })
    }
}

/// The `key=value` pairs of a query string, still percent-encoded, split as
/// [`ChannelRules::parse_query`] splits them (a key without `=` has an empty value; empty
/// pairs are skipped). Decode each part with [`form_decode`].
///
/// For an access check that reads other parameters of a stream request (a token, say) the
/// way the channels are read, so that no query trick tells the two apart.
///
/// ```
/// use tower_sse::channel::query_pairs;
///
/// let pairs: Vec<_> = query_pairs("channel=a&&flag&token=x%20y").collect();
/// assert_eq!(pairs, [("channel", "a"), ("flag", ""), ("token", "x%20y")]);
/// ```
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Strict `application/x-www-form-urlencoded` decoding: `+` is a space, `%` must start two hex
/// digits, and the result must be UTF-8.
///
/// # Errors
///
/// [`ChannelError::InvalidEncoding`] for a `%` not followed by two hex digits, or bytes that
/// are not UTF-8.
///
/// ```
/// use tower_sse::channel::{form_decode, ChannelError};
///
/// assert_eq!(form_decode("a+b%2Cc").unwrap(), "a b,c");
/// assert_eq!(form_decode("%zz"), Err(ChannelError::InvalidEncoding));
/// ```
pub fn form_decode(s: &str) -> Result<String, ChannelError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(hex);
                let lo = bytes.next().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(ChannelError::InvalidEncoding),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| ChannelError::InvalidEncoding)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The channels one request asked for: never empty, no duplicates, in the order first named.
///
/// Made by [`ChannelRules::parse_query`] from a query string, or by [`ChannelRules::channels`]
/// from names. [`AccessLayer`](crate::AccessLayer) puts the list it checked into the request's extensions;
/// [`SseService`](crate::SseService) subscribes to that list when it is there.
///
/// ```
/// # use tower_sse::ChannelRules;
/// let channels = ChannelRules::default().parse_query(Some("channel=a")).unwrap();
/// assert_eq!(channels.len(), 1);
/// assert!(channels.contains("a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    names: Vec<Arc<str>>,
}

impl Channels {
    /// The channel names, in the order the request named them.
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// let channels = ChannelRules::default().parse_query(Some("channel=b,a")).unwrap();
    /// assert_eq!(channels.iter().collect::<Vec<_>>(), ["b", "a"]);
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// How many channels (at least one).
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// assert_eq!(ChannelRules::default().parse_query(None).unwrap().len(), 1);
    /// ```
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether `name` is in the list.
    ///
    /// ```
    /// # use tower_sse::ChannelRules;
    /// assert!(ChannelRules::default().parse_query(None).unwrap().contains("sse"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    pub(crate) fn names(&self) -> &[Arc<str>] {
        &self.names
    }
}

/// Why a channel list was refused. Services answer it with `400 Bad Request` and this text.
///
/// ```
/// # use tower_sse::{ChannelError, ChannelRules};
/// let err = ChannelRules::default().parse_query(Some("channel=%zz")).unwrap_err();
/// assert_eq!(err, ChannelError::InvalidEncoding);
/// assert_eq!(err.to_string(), "invalid percent-encoding or UTF-8 in query");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// A channel name is empty.
    Empty,
    /// A channel name is longer than the limit, in bytes.
    TooLong(usize),
    /// A channel name holds a control character, whitespace or a comma.
    InvalidChar,
    /// The query has a `%` not followed by two hex digits, or decodes to invalid UTF-8.
    InvalidEncoding,
    /// The request names more channels than the limit.
    TooMany(usize),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Empty => f.write_str("empty channel name"),
            ChannelError::TooLong(max) => write!(f, "channel name longer than {max} bytes"),
            ChannelError::InvalidChar => {
                f.write_str("channel name contains a control character, whitespace or comma")
            }
            ChannelError::InvalidEncoding => {
                f.write_str("invalid percent-encoding or UTF-8 in query")
            }
            ChannelError::TooMany(max) => write!(f, "more than {max} channels"),
        }
    }
}

impl StdError for ChannelError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Vec<String>, ChannelError> {
        ChannelRules::default()
            .parse_query(Some(q))
            .map(|c| c.iter().map(str::to_owned).collect())
    }

    #[test]
    fn default_channel_when_none_named() {
        assert_eq!(parse("").unwrap(), ["sse"]);
        assert_eq!(parse("other=1&&").unwrap(), ["sse"]);
        assert_eq!(parse("channels=x").unwrap(), ["sse"]);
    }

    #[test]
    fn repeated_and_comma_separated() {
        assert_eq!(
            parse("channel=public&channel=private.x").unwrap(),
            ["public", "private.x"]
        );
        assert_eq!(parse("channel=a,b&channel=b").unwrap(), ["a", "b"]);
    }

    #[test]
    fn percent_encoding_is_decoded_in_keys_and_values() {
        assert_eq!(parse("channel=private%2Ex").unwrap(), ["private.x"]);
        assert_eq!(parse("%63hannel=x").unwrap(), ["x"]);
        assert_eq!(parse("channel=%C3%A9t%C3%A9").unwrap(), ["été"]);
    }

    #[test]
    fn strict_errors() {
        assert_eq!(parse("channel="), Err(ChannelError::Empty));
        assert_eq!(parse("channel"), Err(ChannelError::Empty));
        assert_eq!(parse("channel=a,,b"), Err(ChannelError::Empty));
        assert_eq!(parse("channel=a+b"), Err(ChannelError::InvalidChar));
        assert_eq!(parse("channel=%20a"), Err(ChannelError::InvalidChar));
        assert_eq!(parse("channel=a%0A"), Err(ChannelError::InvalidChar));
        assert_eq!(parse("channel=%2"), Err(ChannelError::InvalidEncoding));
        assert_eq!(parse("channel=%G0"), Err(ChannelError::InvalidEncoding));
        assert_eq!(parse("channel=%FF"), Err(ChannelError::InvalidEncoding));
        assert_eq!(
            parse(&format!("channel={}", "a".repeat(257))),
            Err(ChannelError::TooLong(256))
        );
        assert!(parse(&format!("channel={}", "a".repeat(256))).is_ok());
    }

    fn names(names: &[&str]) -> Result<Vec<String>, ChannelError> {
        ChannelRules::default()
            .channels(names)
            .map(|c| c.iter().map(str::to_owned).collect())
    }

    #[test]
    fn channels_from_names_in_order_once_each() {
        assert_eq!(names(&["b", "a", "b", "c", "a"]).unwrap(), ["b", "a", "c"]);
        // Taken as they are: no decoding, no splitting.
        assert_eq!(names(&["a%2Eb", "a+b"]).unwrap(), ["a%2Eb", "a+b"]);
        assert_eq!(names(&["a b"]), Err(ChannelError::InvalidChar));
        let owned = vec![String::from("x"), String::from("y")];
        let channels = ChannelRules::default().channels(&owned).unwrap();
        assert_eq!(channels.iter().collect::<Vec<_>>(), ["x", "y"]);
    }

    #[test]
    fn channels_from_names_mean_what_the_query_means() {
        let rules = ChannelRules::default().max_channels(3);
        for (list, query) in [
            (&["a", "b"][..], "channel=a,b"),
            (&["a", "a"], "channel=a&channel=a"),
            (&[], ""),
            (&["a", "b", "c", "b"], "channel=a,b,c,b"),
        ] {
            assert_eq!(
                rules.channels(list),
                rules.parse_query(Some(query)),
                "{list:?}"
            );
        }
    }

    #[test]
    fn channels_from_names_default_and_errors() {
        assert_eq!(names(&[]).unwrap(), ["sse"]);
        let none: [&str; 0] = [];
        let rules = ChannelRules::default().default_channel("a b");
        assert_eq!(rules.channels(none), Err(ChannelError::InvalidChar));
        assert_eq!(names(&["a", ""]), Err(ChannelError::Empty));
        assert_eq!(names(&["a", "b,c"]), Err(ChannelError::InvalidChar));
        assert_eq!(names(&["a\n"]), Err(ChannelError::InvalidChar));
        assert_eq!(names(&[&"a".repeat(257)]), Err(ChannelError::TooLong(256)));
        assert_eq!(names(&[&"a".repeat(256)]).unwrap().len(), 1);
    }

    #[test]
    fn channels_from_names_stop_at_the_limit() {
        // An endless list: the answer proves the rest was not read.
        let endless = (0..).map(|i| format!("c{i}"));
        assert_eq!(
            ChannelRules::default().channels(endless),
            Err(ChannelError::TooMany(32))
        );
        let limit: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
        assert_eq!(ChannelRules::default().channels(&limit).unwrap().len(), 32);
    }

    #[test]
    fn too_many_channels_stops_early() {
        let query: String = (0..10_000).map(|i| format!("channel=c{i}&")).collect();
        assert_eq!(parse(&query), Err(ChannelError::TooMany(32)));
        // Repeats of one name are one channel.
        let query = "channel=a&".repeat(10_000);
        assert_eq!(parse(&query).unwrap(), ["a"]);
    }
}
