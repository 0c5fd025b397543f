//! Tokens: where a request carries one ([`Token::from_request`]), and what makes one valid
//! ([`Verifier`], [`Claims`]).

use std::{
    collections::HashSet,
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use http::{header, request::Parts};
use jsonwebtoken::{DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio::time::Instant;

use crate::{
    body::Deadline,
    channel::{form_decode, query_pairs},
};

/// A signature algorithm: the ones Mercure takes. `none` is not one of them, and a token that
/// names it is always refused.
///
/// ```
/// use tower_sse::access::jwt::Algorithm;
///
/// assert_eq!("RS256".parse::<Algorithm>(), Ok(Algorithm::RS256));
/// assert_eq!(Algorithm::default(), Algorithm::HS256);
/// assert!("none".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret (the default).
    #[default]
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256; the key is an RSA public key's PEM.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA on P-256 with SHA-256; the key is a P-256 public key's PEM.
    ES256,
    /// ECDSA on P-384 with SHA-384; the key is a P-384 public key's PEM.
    ES384,
    /// Ed25519; the key is an Ed25519 public key's PEM.
    EdDSA,
}

impl Algorithm {
    pub(super) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }
}

/// A name that is not one of [`Algorithm`]'s.
///
/// ```
/// # use tower_sse::access::jwt::{Algorithm, UnknownAlgorithm};
/// assert_eq!("PS256".parse::<Algorithm>(), Err(UnknownAlgorithm));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAlgorithm;

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown jwt algorithm")
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Algorithm, UnknownAlgorithm> {
        Ok(match s {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            _ => return Err(UnknownAlgorithm),
        })
    }
}

/// A key that can't be read as the algorithm's key: a PEM that is not a public key of its
/// kind.
///
/// ```
/// # use tower_sse::access::jwt::{Algorithm, Verifier};
/// assert!(Verifier::new(Algorithm::RS256, b"not a pem").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(Algorithm);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a {:?} public key in PEM", self.0)
    }
}

impl std::error::Error for KeyError {}

/// Why a token was refused (`alg: none` is [`Malformed`](TokenError::Malformed) or
/// [`Algorithm`](TokenError::Algorithm)); each is answered `401 Unauthorized`, with this as the reason.
///
/// ```
/// # use tower_sse::access::jwt::{TokenError, Verifier};
/// let verifier = Verifier::hmac(b"secret");
/// assert_eq!(verifier.verify("a.b.c").unwrap_err(), TokenError::Malformed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, not base64url, not JSON, or claims of the wrong type.
    Malformed,
    /// Signed with another algorithm than the verifier's (`none` included).
    Algorithm,
    /// The signature does not match the key.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYetValid,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token signed with another algorithm",
            TokenError::Signature => "invalid token signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
        })
    }
}

impl std::error::Error for TokenError {}

/// A token's claims, in Mercure's shape:
/// `{"mercure": {"publish": [...], "subscribe": [...]}, "exp": ..., "nbf": ...}`. Other
/// claims are ignored.
///
/// ```
/// use tower_sse::access::jwt::Claims;
///
/// let claims: Claims = serde_json::from_str(r#"{"mercure": {"subscribe": ["*"]}, "exp": 1}"#)?;
/// assert_eq!(claims.subscribe(), Some(&["*".to_owned()][..]));
/// assert_eq!(claims.publish(), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The `mercure` claim, if the token has one.
    #[serde(default)]
    pub mercure: Option<Mercure>,
    /// The expiry, in seconds since the Unix epoch; a token without one does not expire.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Not before, in seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
}

/// The `mercure` claim: the selectors of what the token may publish to and subscribe to.
///
/// ```
/// # use tower_sse::access::jwt::Mercure;
/// let m: Mercure = serde_json::from_str(r#"{"publish": ["news"]}"#)?;
/// assert_eq!(m.publish.as_deref(), Some(&["news".to_owned()][..]));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct Mercure {
    /// Selectors of the topics the token may publish to.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
    /// Selectors of the topics the token may subscribe to.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

impl Claims {
    /// The `mercure.subscribe` selectors, if the claim is there.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Claims;
    /// assert_eq!(Claims::default().subscribe(), None);
    /// ```
    pub fn subscribe(&self) -> Option<&[String]> {
        self.mercure.as_ref()?.subscribe.as_deref()
    }

    /// The `mercure.publish` selectors, if the claim is there.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Claims;
    /// assert_eq!(Claims::default().publish(), None);
    /// ```
    pub fn publish(&self) -> Option<&[String]> {
        self.mercure.as_ref()?.publish.as_deref()
    }

    /// `exp` as a time, if the token has one.
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use tower_sse::access::jwt::Claims;
    /// let claims: Claims = serde_json::from_str(r#"{"exp": 60}"#).unwrap();
    /// assert_eq!(claims.expires(), Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60)));
    /// ```
    pub fn expires(&self) -> Option<SystemTime> {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(self.exp?))
    }

    /// `exp` as the [`Deadline`] of a stream: on tokio's clock, never before `exp` (a time
    /// already passed is now); `None` without `exp`, or one too far ahead to represent.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Claims;
    /// let claims: Claims = serde_json::from_str(r#"{"exp": 60}"#).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// // Long past: the deadline is now.
    /// assert!(claims.deadline().unwrap().0 <= tokio::time::Instant::now());
    /// # });
    /// ```
    pub fn deadline(&self) -> Option<Deadline> {
        let at = self.expires()?;
        // The wall clock first: reading it before the monotonic one errs late, never early.
        let (wall, now) = (SystemTime::now(), Instant::now());
        match at.duration_since(wall) {
            Ok(ahead) => now.checked_add(ahead).map(Deadline),
            Err(_) => Some(Deadline(now)),
        }
    }
}

/// Checks a token's signature, algorithm, `exp` and `nbf` (with no leeway), and reads its
/// [`Claims`]. Tokens without `exp` are valid, as Mercure takes them.
///
/// ```
/// use jsonwebtoken::{EncodingKey, Header, encode};
/// use tower_sse::access::jwt::Verifier;
///
/// let claims = serde_json::json!({"mercure": {"subscribe": ["*"]}});
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"secret"))?;
///
/// let claims = Verifier::hmac(b"secret").verify(&token).expect("valid");
/// assert_eq!(claims.subscribe(), Some(&["*".to_owned()][..]));
/// assert!(Verifier::hmac(b"other").verify(&token).is_err());
/// # Ok::<(), jsonwebtoken::errors::Error>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material in logs.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 with a shared secret, Mercure's default.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Verifier;
    /// let verifier = Verifier::hmac("!ChangeThisMercureHubJWTSecretKey!");
    /// ```
    pub fn hmac(secret: impl AsRef<[u8]>) -> Verifier {
        Verifier::with_key(Algorithm::HS256, DecodingKey::from_secret(secret.as_ref()))
    }

    /// A verifier for `algorithm`: for HS256, HS384 and HS512 `key` is the shared secret; for
    /// the others, the PEM text of the public key (`-----BEGIN PUBLIC KEY-----`, or
    /// `BEGIN RSA PUBLIC KEY` for RSA).
    ///
    /// # Errors
    ///
    /// [`KeyError`] when `key` is not a PEM public key of the algorithm's kind.
    ///
    /// ```
    /// use tower_sse::access::jwt::{Algorithm, Verifier};
    ///
    /// let pem = "-----BEGIN PUBLIC KEY-----
    /// MCowBQYDK2VwAyEAOapB9wURAtwXtYZNzBmya3mJ1AGv8h37mWdNbCLRdN8=
    /// -----END PUBLIC KEY-----";
    /// let verifier = Verifier::new(Algorithm::EdDSA, pem)?;
    /// let verifier = Verifier::new(Algorithm::HS512, "a secret")?;
    /// # Ok::<(), tower_sse::access::jwt::KeyError>(())
    /// ```
    pub fn new(algorithm: Algorithm, key: impl AsRef<[u8]>) -> Result<Verifier, KeyError> {
        let key = key.as_ref();
        let decoding = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(DecodingKey::from_secret(key))
            }
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                DecodingKey::from_rsa_pem(key)
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(key),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(key),
        }
        .map_err(|_| KeyError(algorithm))?;
        Ok(Verifier::with_key(algorithm, decoding))
    }

    fn with_key(algorithm: Algorithm, key: DecodingKey) -> Verifier {
        let mut validation = Validation::new(algorithm.to_jwt());
        // Mercure's tokens often have no `exp`, and never an `aud`.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 0;
        Verifier {
            algorithm,
            key,
            validation,
        }
    }

    /// The algorithm tokens must be signed with.
    ///
    /// ```
    /// # use tower_sse::access::jwt::{Algorithm, Verifier};
    /// assert_eq!(Verifier::hmac("k").algorithm(), Algorithm::HS256);
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies `token` and reads its claims.
    ///
    /// # Errors
    ///
    /// [`TokenError`]: malformed, another algorithm (`none` included), a bad signature,
    /// expired, or not yet valid.
    ///
    /// ```
    /// # use tower_sse::access::jwt::Verifier;
    /// // {"alg":"none"}.{"mercure":{"subscribe":["*"]}}.
    /// let none = "eyJhbGciOiJub25lIn0.eyJtZXJjdXJlIjp7InN1YnNjcmliZSI6WyIqIl19fQ.";
    /// assert!(Verifier::hmac("secret").verify(none).is_err());
    /// ```
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header's `alg` first, so that another algorithm is told apart from a bad
        // signature (`none` is not even a name jsonwebtoken reads: a malformed header).
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if header.alg != self.algorithm.to_jwt() {
            return Err(TokenError::Algorithm);
        }
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_) => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Malformed,
            })
    }
}

/// Where a request's token was found. A hub refuses a publish authorized by the cookie
/// unless its `Origin` is one it trusts (CSRF), so it needs to know.
///
/// ```
/// # use tower_sse::access::jwt::Source;
/// assert_ne!(Source::Header, Source::Cookie);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The `authorization` query parameter.
    Query,
    /// The cookie (`mercureAuthorization` unless set otherwise).
    Cookie,
}

/// A token as a request carries it, and where it was found.
///
/// ```
/// use tower_sse::access::jwt::{Source, Token};
///
/// let (parts, ()) = http::Request::get("/events?authorization=abc").body(())?.into_parts();
/// let token = Token::from_request(&parts, "mercureAuthorization").unwrap().unwrap();
/// assert_eq!((token.value.as_str(), token.source), ("abc", Source::Query));
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Token {
    /// The token's text.
    pub value: String,
    /// Where it was found.
    pub source: Source,
}

impl Token {
    /// Reads the token of a request: from `Authorization: Bearer`, else the `authorization`
    /// query parameter (strictly form-decoded), else the cookie named `cookie`. `Ok(None)`
    /// when there is none. Another `Authorization` scheme (`Basic`) is not a token.
    ///
    /// # Errors
    ///
    /// [`TokenError::Malformed`] for an `authorization` parameter that does not decode, a
    /// header that is not text, or several `authorization` parameters.
    ///
    /// ```
    /// use tower_sse::access::jwt::{Source, Token};
    ///
    /// let req = http::Request::get("/events")
    ///     .header("cookie", "theme=dark; mercureAuthorization=xyz")
    ///     .body(())?;
    /// let token = Token::from_request(&req.into_parts().0, "mercureAuthorization");
    /// assert_eq!(token.unwrap().unwrap().source, Source::Cookie);
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn from_request(parts: &Parts, cookie: &str) -> Result<Option<Token>, TokenError> {
        for value in parts.headers.get_all(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| TokenError::Malformed)?;
            let Some((scheme, token)) = value.trim().split_once(' ') else {
                continue;
            };
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(Some(Token {
                    value: token.trim().to_owned(),
                    source: Source::Header,
                }));
            }
        }
        let query = parts.uri.query().unwrap_or("");
        let mut found = None;
        for (name, value) in query_pairs(query) {
            if form_decode(name).is_ok_and(|n| n == "authorization") {
                if found.is_some() {
                    return Err(TokenError::Malformed);
                }
                found = Some(form_decode(value).map_err(|_| TokenError::Malformed)?);
            }
        }
        if let Some(value) = found {
            return Ok(Some(Token {
                value,
                source: Source::Query,
            }));
        }
        for header in parts.headers.get_all(header::COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            for pair in header.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    if name == cookie {
                        let value = value.trim_matches('"');
                        return Ok(Some(Token {
                            value: value.to_owned(),
                            source: Source::Cookie,
                        }));
                    }
                }
            }
        }
        Ok(None)
    }
}
