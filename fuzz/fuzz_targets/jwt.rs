//! Fuzz target `jwt`: the parsers of `tower_sse::access::jwt` (feature `jwt`) on what a client
//! sends: a selector as a token's claims list it (`*`, an exact name, an RFC 6570 template) and
//! a topic, and the token itself.
//!
//! What must hold: nothing panics, whatever the bytes; `*` matches every topic and a selector
//! without braces is an exact name, matching only itself; a `{var}` template with nothing but
//! literals around it matches exactly the topics made of its prefix, one or more characters
//! other than `/`, `?` and `#`, and its suffix; and an arbitrary token is refused by every
//! verifier (HMAC, RSA and EdDSA keys), since no fuzzer forges a signature.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_sse::access::jwt::{Algorithm, Selector, Verifier};

#[derive(Arbitrary, Debug)]
struct Input {
    selector: String,
    topic: String,
    token: String,
}

fuzz_target!(|input: Input| {
    let Input {
        selector,
        topic,
        token,
    } = input;
    if let Ok(parsed) = Selector::parse(&selector) {
        let matched = parsed.matches(&topic);
        if selector == "*" {
            assert!(matched, "* must match {topic:?}");
        } else if !selector.contains(['{', '}']) {
            assert_eq!(
                matched,
                topic == selector,
                "exact {selector:?} on {topic:?}"
            );
        } else if let Some(want) = one_variable(&selector, &topic) {
            assert_eq!(matched, want, "{selector:?} on {topic:?}");
        }
    }
    let verifiers = [
        Verifier::hmac(b"fuzz"),
        Verifier::new(
            Algorithm::RS256,
            include_str!("../../src/access/jwt/testdata/rsa.pub.pem"),
        )
        .expect("the test RSA key"),
        Verifier::new(
            Algorithm::EdDSA,
            include_str!("../../src/access/jwt/testdata/ed25519.pub.pem"),
        )
        .expect("the test Ed25519 key"),
    ];
    for verifier in &verifiers {
        assert!(verifier.verify(&token).is_err(), "a forged token passed");
    }
});

/// The model of a template with one `{name}` variable (a plain name) and literals around it
/// without braces: `None` for any other selector.
fn one_variable(selector: &str, topic: &str) -> Option<bool> {
    let (prefix, rest) = selector.split_once('{')?;
    let (name, suffix) = rest.split_once('}')?;
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || prefix.contains('}')
        || suffix.contains(['{', '}'])
    {
        return None;
    }
    let Some(middle) = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
    else {
        return Some(false);
    };
    Some(
        topic.len() >= prefix.len() + suffix.len()
            && !middle.is_empty()
            && !middle.contains(['/', '?', '#']),
    )
}
