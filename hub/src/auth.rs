//! The bearer token: in `Authorization: Bearer ...`, or in the `access_token` query parameter
//! for `EventSource`, which can't set headers ([RFC 6750 §2.3]).
//!
//! [RFC 6750 §2.3]: https://www.rfc-editor.org/rfc/rfc6750#section-2.3

use http::{HeaderMap, StatusCode, header};

use tower_sse::{
    access::Denied,
    channel::{form_decode, query_pairs},
};

/// Checks the bearer token: `Authorization: Bearer ...`, else the `access_token` parameter.
/// Missing: `401`; wrong: `403`; `access_token` malformed or given twice: `400`.
pub(super) fn authorize(
    expected: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), Denied> {
    let token = match bearer(headers) {
        Some(token) => Some(token.to_owned()),
        None => access_token(query.unwrap_or(""))?,
    };
    match token {
        None => Err(Denied::unauthorized("bearer token required")),
        Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Denied::forbidden("wrong token")),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn access_token(query: &str) -> Result<Option<String>, Denied> {
    let mut token = None;
    for (key, value) in query_pairs(query) {
        if form_decode(key).as_deref() != Ok("access_token") {
            continue;
        }
        let value = form_decode(value)
            .map_err(|err| Denied::new(StatusCode::BAD_REQUEST, err.to_string()))?;
        if token.replace(value).is_some() {
            return Err(Denied::new(
                StatusCode::BAD_REQUEST,
                "access_token given twice",
            ));
        }
    }
    Ok(token)
}

/// Compares in time that depends on the expected token's length only, not on where the
/// first difference is.
fn same(given: &[u8], expected: &[u8]) -> bool {
    let diff = expected.iter().enumerate().fold(0, |diff, (i, b)| {
        diff | (given.get(i).copied().unwrap_or(!b) ^ b)
    });
    diff == 0 && given.len() == expected.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_only_for_equal_bytes() {
        assert!(same(b"s3cret", b"s3cret"));
        for given in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"s3cres"] {
            assert!(!same(given, b"s3cret"), "{given:?}");
        }
    }

    #[test]
    fn header_first_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            authorize("t", &headers, None).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(authorize("t", &headers, Some("access_token=t")).is_ok());
        headers.insert(header::AUTHORIZATION, "bearer  t".parse().unwrap());
        assert!(authorize("t", &headers, Some("access_token=wrong")).is_ok());
        headers.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(
            authorize("t", &headers, None).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        let twice = authorize(
            "t",
            &HeaderMap::new(),
            Some("access_token=t&access_token=t"),
        );
        assert_eq!(twice.unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
