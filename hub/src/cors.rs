//! CORS: pages on other origins subscribing and publishing with credentials.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS policy of `--cors-origin`: pages on exactly these origins may subscribe
/// (`EventSource(url, {withCredentials: true})`, `GET`) and publish (`fetch(url, {method:
/// 'POST', credentials: 'include'})`), sending `Authorization`, `Content-Type` and
/// `Last-Event-ID`. Credentials are allowed, so the origins are exact, never `*` (browsers
/// refuse a wildcard with credentials: [Fetch, CORS protocol and credentials]); preflights
/// are cached for 10 minutes. Pages on other origins get no CORS headers, so their browser
/// refuses the answers.
///
/// `origins` are as `Origin` headers read, `scheme://host[:port]`; the flag checks them. A
/// `*` among them panics (tower-http refuses it); an empty list allows no origin.
///
/// [Fetch, CORS protocol and credentials]: https://fetch.spec.whatwg.org/#cors-protocol-and-credentials
///
/// ```
/// use http::HeaderValue;
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// let origins = [HeaderValue::from_static("https://app.example.com")];
/// let app = hub::app(Broker::new(), None, None).layer(hub::cors(&origins));
/// ```
pub fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        // Mercure's response header, read by clients that resume with `fetch`.
        .expose_headers([HeaderName::from_static("last-event-id")])
        .max_age(Duration::from_secs(600))
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, nothing after.
pub(super) fn origin(value: &str) -> Result<HeaderValue, String> {
    if value == "*" {
        return Err(
            "no wildcard: the hub allows credentials, and browsers refuse `*` with \
                    credentials; name each origin, as scheme://host[:port]"
                .into(),
        );
    }
    if value == "null" {
        return Err("not \"null\": sandboxed pages and files of any site send it".into());
    }
    let rest = ["http://", "https://"]
        .into_iter()
        .find_map(|scheme| value.strip_prefix(scheme))
        .ok_or_else(|| format!("{value:?}: an origin starts with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ', ',']) {
        return Err(format!(
            "{value:?}: an origin is scheme://host[:port], without a path, a trailing `/` or \
             a wildcard"
        ));
    }
    HeaderValue::from_str(value).map_err(|_| format!("{value:?}: not a header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_exact_only() {
        for good in [
            "http://127.0.0.1:8000",
            "https://example.com",
            "http://[::1]:80",
        ] {
            assert_eq!(origin(good).unwrap(), good);
        }
        for bad in [
            "*",
            "null",
            "example.com",
            "http://",
            "https://example.com/",
            "https://example.com/app",
            "https://*.example.com",
            "ftp://example.com",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        assert!(origin("*").unwrap_err().contains("wildcard"));
    }
}
