//! The short `text/plain` responses of this crate: a refusal's status and its reason.
//!
//! Its own module, below both [`service`](crate::service) and [`access`](crate::access), so
//! that neither names the other to answer a bad request.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// A `text/plain; charset=utf-8` response with `status` and `reason` as its body, in any body
/// type made from [`Bytes`].
pub(crate) fn plain<B: From<Bytes>>(status: StatusCode, reason: String) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from(reason)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_type_and_reason() {
        let res: Response<Bytes> = plain(StatusCode::BAD_REQUEST, "no".to_owned());
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers().len(), 1);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(res.body(), "no");
    }
}
