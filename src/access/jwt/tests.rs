use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn sub(selectors: &[&str]) -> Value {
    json!({"mercure": {"subscribe": selectors}})
}

fn parts(token: &str) -> Parts {
    Request::get("/events")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn check(policy: &JwtPolicy, token: &str, channel: &str) -> Result<Grant, Denied> {
    policy.authorize(&parts(token), channel)
}

/// Signs `claims` with each asymmetric algorithm's private key and verifies with its public
/// key; the other family's key never verifies.
#[test]
fn each_algorithm_family() {
    let rsa = EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa.key.pem")).unwrap();
    let ec256 = EncodingKey::from_ec_pem(include_bytes!("testdata/ec256.key.pem")).unwrap();
    let ec384 = EncodingKey::from_ec_pem(include_bytes!("testdata/ec384.key.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(include_bytes!("testdata/ed25519.key.pem")).unwrap();
    let rsa_pub = include_str!("testdata/rsa.pub.pem");
    let cases = [
        (Algorithm::RS256, &rsa, rsa_pub),
        (Algorithm::RS384, &rsa, rsa_pub),
        (Algorithm::RS512, &rsa, rsa_pub),
        (
            Algorithm::ES256,
            &ec256,
            include_str!("testdata/ec256.pub.pem"),
        ),
        (
            Algorithm::ES384,
            &ec384,
            include_str!("testdata/ec384.pub.pem"),
        ),
        (
            Algorithm::EdDSA,
            &ed,
            include_str!("testdata/ed25519.pub.pem"),
        ),
    ];
    let claims = sub(&["*"]);
    for (alg, key, public) in cases {
        let token = encode(&Header::new(alg.to_jwt()), &claims, key).unwrap();
        let verifier = Verifier::new(alg, public).unwrap();
        assert_eq!(
            verifier.verify(&token).unwrap().subscribe().unwrap(),
            ["*"],
            "{alg:?}"
        );
        // Another algorithm's verifier refuses it, whatever the key.
        let hmac = Verifier::hmac(public);
        assert_eq!(hmac.verify(&token), Err(TokenError::Algorithm), "{alg:?}");
    }
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let header = Header::new(alg.to_jwt());
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(Verifier::new(alg, SECRET).unwrap().verify(&token).is_ok());
        let wrong = Verifier::new(alg, b"another secret").unwrap();
        assert_eq!(wrong.verify(&token), Err(TokenError::Signature));
    }
}

#[test]
fn a_wrong_public_key_is_a_bad_signature() {
    let ec256 = EncodingKey::from_ec_pem(include_bytes!("testdata/ec256.key.pem")).unwrap();
    let token = encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &sub(&["*"]),
        &ec256,
    )
    .unwrap();
    // A valid P-384 key is not the signer's P-256 key.
    let other = Verifier::new(Algorithm::ES256, include_str!("testdata/ec384.pub.pem"));
    if let Ok(other) = other {
        assert!(other.verify(&token).is_err());
    }
    let rsa = EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa.key.pem")).unwrap();
    let token = encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &sub(&["*"]),
        &rsa,
    )
    .unwrap();
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let verifier = Verifier::new(Algorithm::RS256, include_str!("testdata/rsa.pub.pem")).unwrap();
    assert!(verifier.verify(&token).is_ok());
    assert!(verifier.verify(&forged).is_err());
}

#[test]
fn bad_keys_are_errors() {
    assert!(Verifier::new(Algorithm::RS256, "nope").is_err());
    assert!(Verifier::new(Algorithm::ES256, include_str!("testdata/rsa.pub.pem")).is_err());
    assert!(Verifier::new(Algorithm::EdDSA, include_str!("testdata/rsa.pub.pem")).is_err());
}

#[test]
fn none_is_always_refused() {
    // {"alg":"none","typ":"JWT"} . {"mercure":{"subscribe":["*"]}} . (no signature)
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InN1YnNjcmliZSI6WyIqIl19fQ.";
    let verifier = Verifier::hmac(SECRET);
    // jsonwebtoken knows no `none`: its header does not even parse.
    assert!(verifier.verify(none).is_err());
    // Even with a signature made up for it.
    let signed = format!("{none}c2lnbmF0dXJl");
    assert!(verifier.verify(&signed).is_err());
    let policy = JwtPolicy::new(Verifier::hmac(SECRET));
    assert_eq!(
        check(&policy, none, "a").unwrap_err().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn exp_and_nbf_are_enforced_and_exp_is_optional() {
    let verifier = Verifier::hmac(SECRET);
    let expired = hs256(&json!({"mercure": {"subscribe": ["*"]}, "exp": now() - 10}));
    assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
    let early = hs256(&json!({"mercure": {"subscribe": ["*"]}, "nbf": now() + 60}));
    assert_eq!(verifier.verify(&early), Err(TokenError::NotYetValid));
    let forever = hs256(&sub(&["*"]));
    assert_eq!(verifier.verify(&forever).unwrap().exp, None);
    let policy = JwtPolicy::new(verifier);
    let denied = check(&policy, &expired, "a").unwrap_err();
    assert_eq!(
        (denied.status(), denied.reason()),
        (StatusCode::UNAUTHORIZED, "token expired")
    );
    assert_eq!(check(&policy, &early, "a").unwrap_err().status(), 401);
    assert_eq!(check(&policy, &forever, "a").unwrap().deadline(), None);
}

#[test]
fn the_grant_lasts_until_exp_and_carries_the_claims() {
    let exp = now() + 100;
    let token = hs256(&json!({"mercure": {"subscribe": ["a"]}, "exp": exp}));
    let policy = JwtPolicy::new(Verifier::hmac(SECRET));
    let before = tokio::time::Instant::now();
    let grant = check(&policy, &token, "a").unwrap();
    let deadline = grant.deadline().unwrap();
    let ahead = deadline - before;
    assert!(ahead.as_secs() >= 98 && ahead.as_secs() <= 100, "{ahead:?}");
    let verified = grant.extensions().get::<Verified>().unwrap();
    assert_eq!(verified.source, Source::Header);
    assert_eq!(verified.claims.exp, Some(exp));
}

#[test]
fn missing_claims_or_selectors_are_forbidden() {
    let policy = JwtPolicy::new(Verifier::hmac(SECRET));
    for claims in [
        json!({}),
        json!({"mercure": {}}),
        json!({"mercure": {"publish": ["*"]}}),
    ] {
        let denied = check(&policy, &hs256(&claims), "a").unwrap_err();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN, "{claims}");
    }
    let token = hs256(&sub(&["https://example.com/users/{id}", "news"]));
    assert!(check(&policy, &token, "news").is_ok());
    assert!(check(&policy, &token, "https://example.com/users/42").is_ok());
    let denied = check(&policy, &token, "https://example.com/users/42/x").unwrap_err();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    // A malformed selector matches nothing, and does no harm.
    let token = hs256(&sub(&["users/{id"]));
    assert_eq!(
        check(&policy, &token, "users/{id").unwrap_err().status(),
        403
    );
}

#[test]
fn a_missing_token_is_unauthorized_only_where_one_is_needed() {
    let mut policy = JwtPolicy::new(Verifier::hmac(SECRET))
        .needs_token(|channel: &str| channel.starts_with("private."));
    let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let denied = futures_check(&mut policy, &parts, "private.x").unwrap_err();
    assert_eq!(
        (denied.status(), denied.reason()),
        (StatusCode::UNAUTHORIZED, "token required")
    );
    assert!(futures_check(&mut policy, &parts, "public").is_ok());
}

fn futures_check<P: AccessPolicy<Future = Ready<Result<Grant, Denied>>>>(
    policy: &mut P,
    parts: &Parts,
    channel: &str,
) -> Result<Grant, Denied> {
    policy.check(parts, channel).into_inner()
}

#[test]
fn tokens_come_from_the_header_then_the_query_then_the_cookie() {
    let cookie = "a=b; mercureAuthorization=from-cookie";
    let req = |uri: &str, auth: Option<&str>| {
        let mut req = Request::get(uri).header("cookie", cookie);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.body(()).unwrap().into_parts().0
    };
    let read = |parts: &Parts| Token::from_request(parts, DEFAULT_COOKIE).unwrap().unwrap();
    let t = read(&req("/?authorization=q", Some("Bearer h")));
    assert_eq!((t.value.as_str(), t.source), ("h", Source::Header));
    let t = read(&req("/?authorization=a%2Eb+c", Some("Basic xyz")));
    assert_eq!((t.value.as_str(), t.source), ("a.b c", Source::Query));
    let t = read(&req("/?channel=x", None));
    assert_eq!(
        (t.value.as_str(), t.source),
        ("from-cookie", Source::Cookie)
    );
    assert_eq!(
        Token::from_request(&req("/?authorization=%zz", None), DEFAULT_COOKIE),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        Token::from_request(
            &req("/?authorization=a&authorization=b", None),
            DEFAULT_COOKIE
        ),
        Err(TokenError::Malformed)
    );
    assert_eq!(Token::from_request(&req("/", None), "other"), Ok(None));
    // A cookie-authorized grant says so.
    let token = hs256(&sub(&["*"]));
    let (parts, ()) = Request::get("/")
        .header("cookie", format!("sse={token}"))
        .body(())
        .unwrap()
        .into_parts();
    let policy = JwtPolicy::new(Verifier::hmac(SECRET)).cookie("sse");
    let grant = policy.authorize(&parts, "x").unwrap();
    assert_eq!(
        grant.extensions().get::<Verified>().unwrap().source,
        Source::Cookie
    );
}

#[test]
fn malformed_tokens_are_unauthorized() {
    let policy = JwtPolicy::new(Verifier::hmac(SECRET));
    let good = hs256(&sub(&["*"]));
    let (head, _) = good.split_once('.').unwrap();
    for token in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        &format!("{head}.!!!.x"),
        &format!("{head}.e30"),
        &format!("{good}x"),
    ] {
        let denied = check(&policy, token, "a").unwrap_err();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED, "{token:?}");
    }
    // Claims of the wrong type are malformed.
    let wrong = hs256(&json!({"mercure": {"subscribe": "*"}}));
    assert_eq!(
        Verifier::hmac(SECRET).verify(&wrong),
        Err(TokenError::Malformed)
    );
}

proptest::proptest! {
    #[test]
    fn no_token_makes_it_panic(token in "\\PC{0,64}", parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,40}", 0..5)) {
        let verifier = Verifier::hmac(SECRET);
        let _ = verifier.verify(&token);
        let _ = verifier.verify(&parts.join("."));
        let rsa = Verifier::new(Algorithm::RS256, include_str!("testdata/rsa.pub.pem")).unwrap();
        let _ = rsa.verify(&parts.join("."));
    }
}
