//! JWT rights over the hub binary as shipped (issue 19): publishing with a publisher token
//! whose `mercure.publish` selectors match the channel, `private.*` streams with a subscriber
//! token, the cookie's origin check, `/metrics`, the keys from the flags or Mercure's
//! variables, and what the hub refuses at startup. Tokens are minted here with jsonwebtoken.
use tower_sse_test_support as support;

#[path = "support/hub_process.rs"]
mod hub_process;
#[path = "support/tokens.rs"]
mod tokens;

use hub_process::{Exited, HubProcess, field};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use support::{send, text};
use tokens::{KEY, hs256, now};

const SUBSCRIBER_KEY: &str = "another secret, for subscribers";

/// `{"alg":"none"}.{"mercure":{"publish":["*"]}}.`: no signature at all.
const ALG_NONE: &str = "eyJhbGciOiJub25lIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";

/// Claims that may publish to `selectors` for an hour.
fn publish(selectors: &[&str]) -> Value {
    json!({"mercure": {"publish": selectors}, "exp": now() + 3600})
}

/// Claims that may subscribe to `selectors` for an hour.
fn subscribe(selectors: &[&str]) -> Value {
    json!({"mercure": {"subscribe": selectors}, "exp": now() + 3600})
}

/// Sends; the status and body.
async fn answer(req: RequestBuilder) -> (StatusCode, String) {
    let res = send(req).await;
    (res.status(), text(res).await)
}

/// The status of `POST /publish?channel={channel}` authorized by `token` in the header.
async fn publish_status(hub: &HubProcess, channel: &str, token: &str) -> (StatusCode, String) {
    answer(
        hub.post(&format!("channel={channel}"), "x")
            .bearer_auth(token),
    )
    .await
}

async fn refused(args: &[&str], env: &[(&str, &str)]) -> Exited {
    match HubProcess::try_start_with(args, env).await {
        Ok(hub) => panic!("{args:?} {env:?}: the hub listens on {}", hub.addr()),
        Err(exited) => exited,
    }
}

/// A publisher token (HS256) in the header publishes to a channel its selectors name, and
/// subscribers of that public channel get the event with no token.
#[tokio::test]
async fn publisher_token_publishes() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut frames = hub.subscribe("channel=news", None).await;
    let token = hs256(KEY, &publish(&["news"]));
    let res = send(hub.post("channel=news", "hello").bearer_auth(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(field(&frames.next().await, "data"), Some("hello"));
    // The `authorization` query parameter, for clients that can't set headers.
    let query = format!("channel=news&authorization={token}");
    assert_eq!(answer(hub.post(&query, "again")).await.0, StatusCode::OK);
    assert_eq!(field(&frames.next().await, "data"), Some("again"));
}

/// On loopback too, a key set: no token, an expired one, one signed with another key, with
/// `alg: none`, or malformed, is a 401 with the reason, and nothing is published.
#[tokio::test]
async fn invalid_publisher_tokens_are_401() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let (status, reason) = answer(hub.post("channel=news", "x")).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::UNAUTHORIZED, "publisher token required")
    );
    let expired = json!({"mercure": {"publish": ["*"]}, "exp": now() - 60});
    for (token, reason) in [
        (hs256(KEY, &expired), "token expired"),
        (
            hs256("wrong key", &publish(&["*"])),
            "invalid token signature",
        ),
        (ALG_NONE.to_owned(), ""),
        ("not.a.token".to_owned(), "malformed token"),
    ] {
        let (status, body) = publish_status(&hub, "news", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}: {body}");
        assert!(body.contains(reason), "{token}: {body}");
    }
    // `access_token` is --token's, not a JWT's.
    let query = format!("channel=news&access_token={}", hs256(KEY, &publish(&["*"])));
    assert_eq!(
        answer(hub.post(&query, "x")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// With a key for each role, a token signed with the subscriber key can't publish.
#[tokio::test]
async fn subscriber_key_does_not_publish() {
    let flags = [
        "--publisher-jwt-key",
        KEY,
        "--subscriber-jwt-key",
        SUBSCRIBER_KEY,
    ];
    let hub = HubProcess::start(&flags).await;
    let token = hs256(SUBSCRIBER_KEY, &publish(&["*"]));
    assert_eq!(
        publish_status(&hub, "news", &token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let token = hs256(KEY, &publish(&["*"]));
    assert_eq!(publish_status(&hub, "news", &token).await.0, StatusCode::OK);
}

/// A valid token may publish only where its selectors match: an exact name, `*`, a URI
/// template whose `{id}` does not cross `/`; else 403, as with no publish claim.
#[tokio::test]
async fn publish_selectors_decide() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let news = hs256(KEY, &publish(&["news"]));
    let (status, reason) = publish_status(&hub, "sports", &news).await;
    assert_eq!(
        (status, reason.as_str()),
        (
            StatusCode::FORBIDDEN,
            "no publish selector matches the channel"
        )
    );
    let subscriber_only = hs256(KEY, &subscribe(&["*"]));
    let (status, reason) = publish_status(&hub, "news", &subscriber_only).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::FORBIDDEN, "no mercure.publish claim")
    );
    let books = hs256(KEY, &publish(&["https://example.com/books/{id}"]));
    let book = "https%3A%2F%2Fexample.com%2Fbooks%2F1";
    assert_eq!(publish_status(&hub, book, &books).await.0, StatusCode::OK);
    let deeper = format!("{book}%2Fx");
    assert_eq!(
        publish_status(&hub, &deeper, &books).await.0,
        StatusCode::FORBIDDEN
    );
    let everything = hs256(KEY, &publish(&["*"]));
    assert_eq!(
        publish_status(&hub, "sports", &everything).await.0,
        StatusCode::OK
    );
}

/// A token in the `mercureAuthorization` cookie publishes only from an origin of
/// `--cors-origin`: its `Origin`, else its `Referer`'s origin; neither, or another, is a 403.
#[tokio::test]
async fn cookie_publish_needs_a_listed_origin() {
    let app = "http://app.example:8000";
    let hub = HubProcess::start(&["--jwt-key", KEY, "--cors-origin", app]).await;
    let cookie = format!(
        "theme=dark; mercureAuthorization={}",
        hs256(KEY, &publish(&["*"]))
    );
    let post = || hub.post("channel=news", "x").header("cookie", &cookie);
    assert_eq!(answer(post().header("origin", app)).await.0, StatusCode::OK);
    let (status, reason) = answer(post()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reason}");
    assert!(reason.contains("Origin"), "{reason}");
    for origin in ["http://evil.example", "http://app.example:8001", "null"] {
        let (status, reason) = answer(post().header("origin", origin)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {reason}");
    }
    let referer = format!("{app}/page?x=1");
    assert_eq!(
        answer(post().header("referer", &referer)).await.0,
        StatusCode::OK
    );
    let elsewhere = "http://evil.example/http://app.example:8000/";
    assert_eq!(
        answer(post().header("referer", elsewhere)).await.0,
        StatusCode::FORBIDDEN
    );
    // The header's token needs no origin: a page can't make a browser send it cross-site.
    let token = hs256(KEY, &publish(&["*"]));
    assert_eq!(publish_status(&hub, "news", &token).await.0, StatusCode::OK);
}

/// `private.*` streams need a subscriber token whose selectors match (401 without, or with
/// an invalid one; 403 when none matches), and then get what is published; public channels
/// need nothing, and an invalid token there is not even read.
#[tokio::test]
async fn private_channels_need_a_subscriber_token() {
    let flags = [
        "--publisher-jwt-key",
        KEY,
        "--subscriber-jwt-key",
        SUBSCRIBER_KEY,
    ];
    let hub = HubProcess::start(&flags).await;
    // The status only: a stream's body never ends.
    let status = async |query: String| send(hub.events(&query, None)).await.status();
    assert_eq!(
        status("channel=private.x".into()).await,
        StatusCode::UNAUTHORIZED
    );
    let signed_by_publisher = hs256(KEY, &subscribe(&["*"]));
    let query = format!("channel=private.x&authorization={signed_by_publisher}");
    assert_eq!(status(query).await, StatusCode::UNAUTHORIZED);
    let other = hs256(SUBSCRIBER_KEY, &subscribe(&["private.y"]));
    let query = format!("channel=private.x&authorization={other}");
    assert_eq!(status(query).await, StatusCode::FORBIDDEN);
    // A public channel beside a refused private one: still no stream.
    let query = format!("channel=news&channel=private.x&authorization={other}");
    assert_eq!(status(query).await, StatusCode::FORBIDDEN);
    let query = "channel=news&authorization=not.a.token".to_owned();
    assert!(status(query).await.is_success());

    let mine = hs256(SUBSCRIBER_KEY, &subscribe(&["private.{name}"]));
    let mut frames = hub
        .subscribe(&format!("channel=private.x&authorization={mine}"), None)
        .await;
    let publisher = hs256(KEY, &publish(&["private.x"]));
    let res = send(
        hub.post("channel=private.x", "secret")
            .bearer_auth(&publisher),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(field(&frames.next().await, "data"), Some("secret"));
    // The header, for clients that can set one.
    let res = send(hub.events("channel=private.x", None).bearer_auth(&mine)).await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// With a publisher key, `/metrics` needs a publisher token that may publish everywhere.
#[tokio::test]
async fn metrics_need_a_publish_everywhere_token() {
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let get = || hub.client.get(hub.url("/metrics"));
    assert_eq!(answer(get()).await.0, StatusCode::UNAUTHORIZED);
    let news = hs256(KEY, &publish(&["news"]));
    assert_eq!(
        answer(get().bearer_auth(news)).await.0,
        StatusCode::FORBIDDEN
    );
    let all = hs256(KEY, &publish(&["*"]));
    let (status, body) = answer(get().bearer_auth(all)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("sse_subscribers"), "{body}");
}

/// Mercure's variables, with an asymmetric algorithm: the hub has the public key's PEM only,
/// the test signs with the private key.
#[tokio::test]
async fn eddsa_key_from_mercure_variables() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = pair.public_key_pem();
    let env = [
        ("MERCURE_PUBLISHER_JWT_KEY", public.as_str()),
        ("MERCURE_PUBLISHER_JWT_ALG", "EdDSA"),
    ];
    let hub = HubProcess::try_start_with(&[], &env).await.unwrap();
    let private = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let token = encode(
        &Header::new(Algorithm::EdDSA),
        &publish(&["news"]),
        &private,
    )
    .unwrap();
    assert_eq!(publish_status(&hub, "news", &token).await.0, StatusCode::OK);
    // An HMAC token signed with the PEM text as its secret: another algorithm.
    let confused = hs256(&public, &publish(&["news"]));
    assert_eq!(
        publish_status(&hub, "news", &confused).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The flag's algorithm wins over the variable's: HS256 with the PEM as a secret.
    let hub = HubProcess::try_start_with(&["--jwt-alg", "HS256"], &env)
        .await
        .unwrap();
    assert_eq!(
        publish_status(&hub, "news", &confused).await.0,
        StatusCode::OK
    );
}

/// Flags, variables, and the name the hub's refusal must give.
type Refusal = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Keys and algorithms that can't be used, and `--token` with a key, stop the hub with exit
/// code 2 and a message naming the flag or variable; a publisher key protects a hub beyond
/// loopback as `--token` does.
#[tokio::test]
async fn unusable_rights_refuse_to_start() {
    let cases: [Refusal; 6] = [
        (&["--jwt-alg", "none", "--jwt-key", "k"], &[], "--jwt-alg"),
        (&["--jwt-alg", "RS256", "--jwt-key", "k"], &[], "--jwt-key"),
        (
            &[],
            &[
                ("MERCURE_PUBLISHER_JWT_KEY", "k"),
                ("MERCURE_PUBLISHER_JWT_ALG", "PS256"),
            ],
            "MERCURE_PUBLISHER_JWT_ALG",
        ),
        (&["--token", "t", "--jwt-key", "k"], &[], "--token"),
        (
            &["--token", "t"],
            &[("MERCURE_SUBSCRIBER_JWT_KEY", "k")],
            "MERCURE_SUBSCRIBER_JWT_KEY",
        ),
        (
            &["--subscriber-jwt-key", "k", "--subscriber-jwt-alg", "ES256"],
            &[],
            "--subscriber-jwt-key",
        ),
    ];
    for (args, env, named) in cases {
        let exited = refused(args, env).await;
        assert_eq!(
            exited.status.code(),
            Some(2),
            "{args:?} {env:?}: {exited:?}"
        );
        assert!(exited.stderr.contains(named), "{args:?}: {}", exited.stderr);
        assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
    }
    let hub = HubProcess::start(&["--bind", "0.0.0.0:0", "--jwt-key", KEY]).await;
    let token = hs256(KEY, &publish(&["*"]));
    assert_eq!(publish_status(&hub, "news", &token).await.0, StatusCode::OK);
    let exited = refused(&["--bind", "0.0.0.0:0", "--subscriber-jwt-key", KEY], &[]).await;
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
}
