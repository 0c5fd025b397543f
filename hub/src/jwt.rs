//! JWT rights, in [Mercure]'s shape: with `--token` every publisher holds the one secret and
//! may publish anywhere; with a JWT key, an app mints each user a token naming the channels it
//! may publish to (`mercure.publish`) and subscribe to (`mercure.subscribe`), and the hub only
//! verifies it (see [`tower_sse::access::jwt`]). The hub then holds no secret that lets one
//! publish when the keys are asymmetric (RS*, ES*, EdDSA: the hub has the public key only).
//!
//! Where the keys come from, first found wins: the role's own flag (`--publisher-jwt-key`,
//! `--subscriber-jwt-key`), then `--jwt-key` for both roles, then Mercure's variables
//! (`MERCURE_PUBLISHER_JWT_KEY`, `MERCURE_SUBSCRIBER_JWT_KEY`), so a Mercure deployment's
//! environment works as it is. The algorithm likewise: `--publisher-jwt-alg`, `--jwt-alg`,
//! `MERCURE_PUBLISHER_JWT_ALG`, then HS256 (and the same for subscribers).
//!
//! [Mercure]: https://mercure.rocks/spec

use std::{env, fmt, sync::Arc};

use http::{HeaderValue, header, request::Parts};

use super::Args;
use tower_sse::access::{
    Denied,
    jwt::{
        Algorithm, Claims, DEFAULT_COOKIE, JwtPolicy, KeyError, Selectors, Source, Token, Verifier,
    },
};

/// Mercure's own variables, the keys' last fallbacks (see [`rights`]). Read from the process
/// by [`MercureEnv::from_env`]; built by hand to test.
///
/// ```
/// use tower_sse_hub::MercureEnv;
///
/// let env = MercureEnv {
///     publisher_jwt_key: Some("!ChangeThisMercureHubJWTSecretKey!".into()),
///     ..MercureEnv::default()
/// };
/// assert!(env.subscriber_jwt_key.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MercureEnv {
    /// `MERCURE_PUBLISHER_JWT_KEY`.
    pub publisher_jwt_key: Option<String>,
    /// `MERCURE_SUBSCRIBER_JWT_KEY`.
    pub subscriber_jwt_key: Option<String>,
    /// `MERCURE_PUBLISHER_JWT_ALG`.
    pub publisher_jwt_alg: Option<String>,
    /// `MERCURE_SUBSCRIBER_JWT_ALG`.
    pub subscriber_jwt_alg: Option<String>,
}

impl MercureEnv {
    /// The four variables from the process's environment; one that is empty or not UTF-8
    /// counts as unset.
    ///
    /// ```
    /// let env = tower_sse_hub::MercureEnv::from_env();
    /// ```
    pub fn from_env() -> MercureEnv {
        let var = |name| env::var(name).ok().filter(|value| !value.is_empty());
        MercureEnv {
            publisher_jwt_key: var("MERCURE_PUBLISHER_JWT_KEY"),
            subscriber_jwt_key: var("MERCURE_SUBSCRIBER_JWT_KEY"),
            publisher_jwt_alg: var("MERCURE_PUBLISHER_JWT_ALG"),
            subscriber_jwt_alg: var("MERCURE_SUBSCRIBER_JWT_ALG"),
        }
    }
}

/// Why the JWT flags can't be used; the hub exits with code 2 and this message.
///
/// ```
/// use clap::Parser;
/// use tower_sse_hub::{Args, MercureEnv, rights};
///
/// let args = Args::parse_from(["tower-sse-hub", "--jwt-alg", "EdDSA", "--jwt-key", "secret"]);
/// let err = rights(&args, &MercureEnv::default()).unwrap_err();
/// assert!(err.to_string().starts_with("--jwt-key"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RightsError {
    /// The key is not a public key of the algorithm's kind.
    Key {
        /// The flag or variable the key came from.
        from: &'static str,
        /// What the library said.
        error: KeyError,
    },
    /// An algorithm name from a Mercure variable that is not one of [`Algorithm`]'s (a flag's
    /// is refused by the command line).
    Algorithm {
        /// The variable it came from.
        from: &'static str,
        /// The name given.
        value: String,
    },
    /// `--token` and a JWT key: one way to authorize, so that no one wonders which applies.
    WithToken {
        /// The flag or variable the key came from.
        key_from: &'static str,
    },
}

impl fmt::Display for RightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RightsError::Key { from, error } => write!(
                f,
                "{from}: {error} (HS256, HS384 and HS512 take the secret; the others the \
                 public key's PEM text itself)"
            ),
            RightsError::Algorithm { from, value } => {
                write!(f, "{from}: {value:?} is not {ALGORITHMS}")
            }
            RightsError::WithToken { key_from } => write!(
                f,
                "--token and a JWT key ({key_from}) both given: use one or the other"
            ),
        }
    }
}

impl std::error::Error for RightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RightsError::Key { error, .. } => Some(error),
            _ => None,
        }
    }
}

const ALGORITHMS: &str = "one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, EdDSA";

/// The command line's parser of `--jwt-alg` and the role ones.
pub(super) fn algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse().map_err(|_| format!("not {ALGORITHMS}"))
}

/// Who may publish and subscribe with a JWT: the verifier of each role's tokens (none: that
/// role is as without a key), one cache of compiled selectors for both, and the origins a
/// publish authorized by the cookie may come from. Cloning shares them.
///
/// ```
/// use http::HeaderValue;
/// use tower_sse::access::jwt::Verifier;
/// use tower_sse_hub::Rights;
///
/// let rights = Rights::default()
///     .publisher(Verifier::hmac("publisher secret"))
///     .subscriber(Verifier::hmac("subscriber secret"))
///     .origins(&[HeaderValue::from_static("https://app.example.com")]);
/// assert!(rights.has_publisher());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Rights {
    publisher: Option<Arc<Verifier>>,
    subscriber: Option<Verifier>,
    selectors: Selectors,
    origins: Arc<[HeaderValue]>,
}

impl Rights {
    /// Publishing needs a token this verifier accepts, whose `mercure.publish` selectors match
    /// the channel; so does `/metrics` (a `*` selector), unless `--token` is given.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Verifier;
    /// let rights = tower_sse_hub::Rights::default().publisher(Verifier::hmac("k"));
    /// ```
    #[must_use]
    pub fn publisher(mut self, verifier: Verifier) -> Self {
        self.publisher = Some(Arc::new(verifier));
        self
    }

    /// Subscribing to a `private.*` channel needs a token this verifier accepts, whose
    /// `mercure.subscribe` selectors match it; other channels need nothing.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Verifier;
    /// let rights = tower_sse_hub::Rights::default().subscriber(Verifier::hmac("k"));
    /// ```
    #[must_use]
    pub fn subscriber(mut self, verifier: Verifier) -> Self {
        self.subscriber = Some(verifier);
        self
    }

    /// The origins (`scheme://host[:port]`, as `--cors-origin`) a publish authorized by the
    /// `mercureAuthorization` cookie may come from: a browser sends a cookie with requests
    /// any site makes, so such a publish needs its `Origin` (else its `Referer`'s origin) to
    /// be one of these (default: none, so no cookie publishes).
    ///
    /// ```
    /// # use http::HeaderValue;
    /// let rights = tower_sse_hub::Rights::default()
    ///     .origins(&[HeaderValue::from_static("https://app.example.com")]);
    /// ```
    #[must_use]
    pub fn origins(mut self, origins: &[HeaderValue]) -> Self {
        self.origins = origins.into();
        self
    }

    /// Whether publishing needs a JWT.
    ///
    /// ```
    /// assert!(!tower_sse_hub::Rights::default().has_publisher());
    /// ```
    pub fn has_publisher(&self) -> bool {
        self.publisher.is_some()
    }

    /// Whether subscribing to `private.*` channels needs a JWT.
    ///
    /// ```
    /// assert!(!tower_sse_hub::Rights::default().has_subscriber());
    /// ```
    pub fn has_subscriber(&self) -> bool {
        self.subscriber.is_some()
    }

    /// The policy of `GET /events`: a subscriber token for `private.*` channels only, the
    /// selector cache shared with the publish checks. `None` without a subscriber key.
    pub(super) fn subscribe_policy(&self) -> Option<JwtPolicy<Private>> {
        let verifier = self.subscriber.clone()?;
        let private: Private = |channel| channel.starts_with("private.");
        Some(
            JwtPolicy::new(verifier)
                .needs_token(private)
                .selectors(self.selectors.clone()),
        )
    }

    /// The publisher token's claims, checked: `Ok(None)` without a publisher key; `401` for a
    /// missing or invalid token.
    pub(super) fn publisher_token(&self, parts: &Parts) -> Result<Option<Publisher>, Denied> {
        let Some(verifier) = &self.publisher else {
            return Ok(None);
        };
        let token = Token::from_request(parts, DEFAULT_COOKIE)
            .map_err(|err| Denied::unauthorized(err.to_string()))?
            .ok_or_else(|| Denied::unauthorized("publisher token required"))?;
        let claims = verifier
            .verify(&token.value)
            .map_err(|err| Denied::unauthorized(err.to_string()))?;
        Ok(Some(Publisher {
            claims,
            source: token.source,
        }))
    }

    /// `403` unless the token may publish to `channel`, and a cookie's request comes from one
    /// of the origins.
    pub(super) fn may_publish(
        &self,
        publisher: &Publisher,
        parts: &Parts,
        channel: &str,
    ) -> Result<(), Denied> {
        if publisher.source == Source::Cookie && !self.trusted_origin(parts) {
            return Err(Denied::forbidden(
                "a publish authorized by the cookie needs an Origin (or Referer) among \
                 --cors-origin",
            ));
        }
        let Some(publish) = publisher.claims.publish() else {
            return Err(Denied::forbidden("no mercure.publish claim"));
        };
        if !self.selectors.any_matches(publish, channel) {
            return Err(Denied::forbidden("no publish selector matches the channel"));
        }
        Ok(())
    }

    /// A subscriber token's claims, checked: `Ok(None)` without a subscriber key or without a
    /// token (anonymous); `401` for an invalid one, never taken as anonymous.
    pub(super) fn subscriber_claims(&self, parts: &Parts) -> Result<Option<Claims>, Denied> {
        let Some(verifier) = &self.subscriber else {
            return Ok(None);
        };
        let Some(token) = Token::from_request(parts, DEFAULT_COOKIE)
            .map_err(|err| Denied::unauthorized(err.to_string()))?
        else {
            return Ok(None);
        };
        verifier
            .verify(&token.value)
            .map(Some)
            .map_err(|err| Denied::unauthorized(err.to_string()))
    }

    /// `/metrics`: a publisher token that may publish everywhere (a `*` selector), since
    /// metrics are about every channel. `Ok` without a publisher key.
    pub(super) fn may_scrape(&self, parts: &Parts) -> Result<(), Denied> {
        let Some(publisher) = self.publisher_token(parts)? else {
            return Ok(());
        };
        match publisher.claims.publish() {
            Some(publish) if publish.iter().any(|s| s == "*") => Ok(()),
            _ => Err(Denied::forbidden("metrics need a publish selector \"*\"")),
        }
    }

    fn trusted_origin(&self, parts: &Parts) -> bool {
        let from = match parts.headers.get(header::ORIGIN) {
            Some(origin) => origin.to_str().ok(),
            None => parts
                .headers
                .get(header::REFERER)
                .and_then(|referer| referer.to_str().ok())
                .and_then(referer_origin),
        };
        from.is_some_and(|from| {
            self.origins
                .iter()
                .any(|origin| origin.as_bytes().eq_ignore_ascii_case(from.as_bytes()))
        })
    }
}

/// Which channels need a subscriber token: `private.*`.
pub(super) type Private = fn(&str) -> bool;

/// A verified publisher token.
#[derive(Debug)]
pub(super) struct Publisher {
    claims: Claims,
    source: Source,
}

/// `scheme://host[:port]` of a `Referer` URL; `None` if it has no such origin, or user info.
fn referer_origin(referer: &str) -> Option<&str> {
    let (scheme, rest) = referer.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if scheme.is_empty() || authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(&referer[..scheme.len() + 3 + end])
}

/// One role's key and algorithm, first found wins: its own flag, the shared flag, Mercure's
/// variable; each with the name it came from.
struct Found<'a> {
    key: Option<(&'static str, &'a str)>,
    algorithm: Result<(&'static str, Algorithm), RightsError>,
}

fn find<'a>(
    keys: [(&'static str, Option<&'a str>); 3],
    algorithms: [Option<Algorithm>; 2],
    env_algorithm: (&'static str, Option<&str>),
) -> Found<'a> {
    let key = keys
        .into_iter()
        .find_map(|(from, key)| Some((from, key.filter(|key| !key.is_empty())?)));
    let algorithm = match algorithms.into_iter().flatten().next() {
        Some(algorithm) => Ok(("the flag", algorithm)),
        None => match env_algorithm {
            (from, Some(name)) if !name.is_empty() => name
                .parse()
                .map(|algorithm| (from, algorithm))
                .map_err(|_| RightsError::Algorithm {
                    from,
                    value: name.to_owned(),
                }),
            _ => Ok(("the default", Algorithm::HS256)),
        },
    };
    Found { key, algorithm }
}

fn verifier(found: Found<'_>) -> Result<Option<Verifier>, RightsError> {
    let Some((from, key)) = found.key else {
        return Ok(None);
    };
    let (_, algorithm) = found.algorithm?;
    Verifier::new(algorithm, key)
        .map(Some)
        .map_err(|error| RightsError::Key { from, error })
}

/// The rights the flags ask for, `None` when no JWT key is set anywhere (the hub is then as
/// without this feature). Per role, the first set of: the role's flag, `--jwt-key`, Mercure's
/// variable in `env`; the algorithm likewise (`--publisher-jwt-alg`, `--jwt-alg`,
/// `MERCURE_PUBLISHER_JWT_ALG`, HS256). The cookie publish origins are `--cors-origin`.
/// [`run`](super::run) passes [`MercureEnv::from_env`].
///
/// # Errors
///
/// [`RightsError`]: a key that is not of its algorithm, an unknown algorithm in a variable,
/// or a key with `--token`.
///
/// ```
/// use clap::Parser;
/// use tower_sse_hub::{Args, MercureEnv, rights};
///
/// let env = MercureEnv {
///     publisher_jwt_key: Some("from mercure".into()),
///     subscriber_jwt_key: Some("from mercure too".into()),
///     ..MercureEnv::default()
/// };
/// let args = Args::parse_from(["tower-sse-hub", "--subscriber-jwt-key", "flag"]);
/// let both = rights(&args, &env)?.expect("keys");
/// assert!(both.has_publisher() && both.has_subscriber());
/// assert!(rights(&Args::parse_from(["tower-sse-hub"]), &MercureEnv::default())?.is_none());
/// # Ok::<(), tower_sse_hub::RightsError>(())
/// ```
pub fn rights(args: &Args, env: &MercureEnv) -> Result<Option<Rights>, RightsError> {
    let publisher = find(
        [
            ("--publisher-jwt-key", args.publisher_jwt_key.as_deref()),
            ("--jwt-key", args.jwt_key.as_deref()),
            (
                "$MERCURE_PUBLISHER_JWT_KEY",
                env.publisher_jwt_key.as_deref(),
            ),
        ],
        [args.publisher_jwt_alg, args.jwt_alg],
        (
            "$MERCURE_PUBLISHER_JWT_ALG",
            env.publisher_jwt_alg.as_deref(),
        ),
    );
    let subscriber = find(
        [
            ("--subscriber-jwt-key", args.subscriber_jwt_key.as_deref()),
            ("--jwt-key", args.jwt_key.as_deref()),
            (
                "$MERCURE_SUBSCRIBER_JWT_KEY",
                env.subscriber_jwt_key.as_deref(),
            ),
        ],
        [args.subscriber_jwt_alg, args.jwt_alg],
        (
            "$MERCURE_SUBSCRIBER_JWT_ALG",
            env.subscriber_jwt_alg.as_deref(),
        ),
    );
    if let Some((key_from, _)) = publisher.key.or(subscriber.key) {
        if args.token.is_some() {
            return Err(RightsError::WithToken { key_from });
        }
    }
    let (publisher, subscriber) = (verifier(publisher)?, verifier(subscriber)?);
    if publisher.is_none() && subscriber.is_none() {
        return Ok(None);
    }
    let mut rights = Rights::default().origins(&args.cors_origin);
    rights.publisher = publisher.map(Arc::new);
    rights.subscriber = subscriber;
    Ok(Some(rights))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn found(flags: &[&str], env: &MercureEnv) -> [Option<(&'static str, Algorithm)>; 2] {
        let args = Args::parse_from([&["tower-sse-hub"][..], flags].concat());
        let f = |keys: [(&'static str, Option<&str>); 3], algs, env_alg| {
            let found = find(keys, algs, env_alg);
            found
                .key
                .map(|(from, _)| (from, found.algorithm.unwrap().1))
        };
        [
            f(
                [
                    ("--publisher-jwt-key", args.publisher_jwt_key.as_deref()),
                    ("--jwt-key", args.jwt_key.as_deref()),
                    (
                        "$MERCURE_PUBLISHER_JWT_KEY",
                        env.publisher_jwt_key.as_deref(),
                    ),
                ],
                [args.publisher_jwt_alg, args.jwt_alg],
                (
                    "$MERCURE_PUBLISHER_JWT_ALG",
                    env.publisher_jwt_alg.as_deref(),
                ),
            ),
            f(
                [
                    ("--subscriber-jwt-key", args.subscriber_jwt_key.as_deref()),
                    ("--jwt-key", args.jwt_key.as_deref()),
                    (
                        "$MERCURE_SUBSCRIBER_JWT_KEY",
                        env.subscriber_jwt_key.as_deref(),
                    ),
                ],
                [args.subscriber_jwt_alg, args.jwt_alg],
                (
                    "$MERCURE_SUBSCRIBER_JWT_ALG",
                    env.subscriber_jwt_alg.as_deref(),
                ),
            ),
        ]
    }

    fn mercure() -> MercureEnv {
        MercureEnv {
            publisher_jwt_key: Some("pk".into()),
            subscriber_jwt_key: Some("sk".into()),
            publisher_jwt_alg: Some("HS512".into()),
            subscriber_jwt_alg: Some("HS384".into()),
        }
    }

    #[test]
    fn role_flag_then_shared_flag_then_mercure() {
        use Algorithm::*;
        let none = MercureEnv::default();
        assert_eq!(found(&[], &none), [None, None]);
        assert_eq!(
            found(&[], &mercure()),
            [
                Some(("$MERCURE_PUBLISHER_JWT_KEY", HS512)),
                Some(("$MERCURE_SUBSCRIBER_JWT_KEY", HS384))
            ]
        );
        assert_eq!(
            found(&["--jwt-key", "k", "--jwt-alg", "HS256"], &mercure()),
            [Some(("--jwt-key", HS256)), Some(("--jwt-key", HS256))]
        );
        let flags = [
            "--jwt-key",
            "k",
            "--publisher-jwt-key",
            "p",
            "--subscriber-jwt-alg",
            "ES256",
        ];
        assert_eq!(
            found(&flags, &mercure()),
            [
                Some(("--publisher-jwt-key", HS512)),
                Some(("--jwt-key", ES256))
            ]
        );
        let flags = ["--jwt-key", "k", "--jwt-alg", "HS384"];
        assert_eq!(
            found(&flags, &none),
            [Some(("--jwt-key", HS384)), Some(("--jwt-key", HS384))]
        );
        // Empty variables count as unset.
        let empty = MercureEnv {
            publisher_jwt_key: Some(String::new()),
            ..MercureEnv::default()
        };
        assert_eq!(found(&[], &empty), [None, None]);
    }

    #[test]
    fn bad_keys_and_algorithms_name_their_source() {
        let args = |flags: &[&str]| Args::parse_from([&["tower-sse-hub"][..], flags].concat());
        let env = MercureEnv {
            publisher_jwt_alg: Some("PS256".into()),
            ..mercure()
        };
        let err = rights(&args(&[]), &env).unwrap_err().to_string();
        assert!(err.starts_with("$MERCURE_PUBLISHER_JWT_ALG"), "{err}");
        // A flag's algorithm wins over the variable's, so the bad one is not read.
        assert!(rights(&args(&["--jwt-alg", "HS256"]), &env).is_ok());
        let err = rights(&args(&["--subscriber-jwt-alg", "RS256"]), &mercure());
        let err = err.unwrap_err().to_string();
        assert!(err.starts_with("$MERCURE_SUBSCRIBER_JWT_KEY: "), "{err}");
        let err = rights(&args(&["--token", "t"]), &mercure()).unwrap_err();
        assert!(matches!(err, RightsError::WithToken { .. }), "{err}");
        assert!(Args::try_parse_from(["tower-sse-hub", "--jwt-alg", "none"]).is_err());
    }

    #[test]
    fn referer_origins() {
        for (referer, origin) in [
            ("https://a.example/x?y#z", Some("https://a.example")),
            ("http://a.example:8080", Some("http://a.example:8080")),
            ("http://127.0.0.1:1/?q", Some("http://127.0.0.1:1")),
            ("https://user@a.example/", None),
            ("a.example/x", None),
            ("https:///x", None),
        ] {
            assert_eq!(referer_origin(referer), origin, "{referer}");
        }
    }
}
