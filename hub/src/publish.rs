//! `POST /publish?channel=A&event=TYPE&id=ID&retry=MS`: the body is the event's data.

use std::time::Duration;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{auth::authorize, jwt::Publisher, state::Hub};
use tower_sse::{
    Event,
    access::Denied,
    channel::{form_decode, query_pairs},
};

/// The largest event data `POST /publish` takes: 1 MiB. A larger body is a `413`, told by its
/// `Content-Length` before any of it is read, or once 1 MiB has been read of a body without
/// one. The hub discards what it did not read as it closes the connection, so that a client
/// that sends the whole body before it reads gets the `413` rather than a reset (see
/// [`Server`](super::Server)).
///
/// ```
/// assert_eq!(tower_sse_hub::MAX_BODY, 1024 * 1024);
/// ```
pub const MAX_BODY: usize = 1024 * 1024;

/// Answers `200` with `{"id": "..."}`, or the reason nothing was published.
pub(super) async fn publish(State(hub): State<Hub>, req: Request) -> Response {
    match try_publish(&hub, req).await {
        Ok(id) => Json(serde_json::json!({ "id": id })).into_response(),
        Err(res) if res.status().is_server_error() => {
            tracing::warn!(status = %res.status(), "publish failed");
            res
        }
        Err(res) => {
            tracing::debug!(status = %res.status(), "publish refused");
            res
        }
    }
}

/// The publisher's credentials, as `--token` or the JWT rights ask: `401` without valid ones.
/// `Ok(None)` when no JWT is needed (no key; the token, if any, was checked).
pub(super) fn publisher(hub: &Hub, parts: &Parts) -> Result<Option<Publisher>, Denied> {
    if let Some(token) = &hub.token {
        authorize(token, &parts.headers, parts.uri.query())?;
    }
    match &hub.rights {
        Some(rights) => rights.publisher_token(parts),
        None => Ok(None),
    }
}

/// `403` unless the publisher's token (if one is needed) may publish to `channel`.
pub(super) fn may_publish(
    hub: &Hub,
    publisher: Option<&Publisher>,
    parts: &Parts,
    channel: &str,
) -> Result<(), Denied> {
    match (&hub.rights, publisher) {
        (Some(rights), Some(publisher)) => rights.may_publish(publisher, parts, channel),
        _ => Ok(()),
    }
}

async fn try_publish(hub: &Hub, req: Request) -> Result<String, Response> {
    let (parts, body) = req.into_parts();
    // The token first (401), then the query (400), then the token's rights on its channel
    // (403): an unauthenticated client learns nothing of what a token may do.
    let publisher = publisher(hub, &parts).map_err(Denied::into_response)?;
    let params = PublishParams::parse(parts.uri.query().unwrap_or("")).map_err(bad_request)?;
    let channel = params.channel.as_deref().unwrap_or("sse");
    may_publish(hub, publisher.as_ref(), &parts, channel).map_err(Denied::into_response)?;
    // Reading the body after the checks: a refused request costs no buffering.
    let body = read_body(body).await?;
    let data = String::from_utf8(body.into()).map_err(|_| bad_request("body is not UTF-8"))?;
    let mut event = Event::default().data(data);
    if let Some(kind) = params.event {
        event = event.event(kind);
    }
    if let Some(id) = params.id {
        event = event.id(id);
    }
    if let Some(retry) = params.retry {
        event = event.retry(retry);
    }
    hub.broker
        .publish(channel, event)
        .await
        .map_err(|err| (err.status(), err.to_string()).into_response())
}

/// The query of `POST /publish`. Unknown or repeated parameters are errors, so a typo
/// (`chanel=`) can't publish to the default channel.
#[derive(Debug, Default, PartialEq)]
struct PublishParams {
    channel: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
}

impl PublishParams {
    fn parse(query: &str) -> Result<PublishParams, String> {
        let (mut params, mut retry) = (PublishParams::default(), None);
        for (key, value) in query_pairs(query) {
            let slot = match &*form_decode(key).map_err(|err| err.to_string())? {
                "channel" => &mut params.channel,
                "event" => &mut params.event,
                "id" => &mut params.id,
                "retry" => &mut retry,
                // The tokens: --token's, and a JWT's (read by `Token::from_request`).
                "access_token" | "authorization" => continue,
                _ => return Err("unknown parameter (expected channel, event, id, retry)".into()),
            };
            if slot
                .replace(form_decode(value).map_err(|err| err.to_string())?)
                .is_some()
            {
                return Err("parameter given twice".into());
            }
        }
        params.retry = retry.as_deref().map(parse_retry).transpose()?;
        Ok(params)
    }
}

/// A `retry` parameter: milliseconds, decimal digits only.
pub(super) fn parse_retry(ms: &str) -> Result<Duration, String> {
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return Err("retry is not a number of milliseconds".into());
    }
    let ms = ms.parse().map_err(|_| "retry is too large".to_owned())?;
    Ok(Duration::from_millis(ms))
}

/// The body, up to [`MAX_BODY`] bytes; past it, a `413`.
pub(super) async fn read_body(body: Body) -> Result<Bytes, Response> {
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, "body is over 1 MiB").into_response();
    // Content-Length: refused before anything is read.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        // The client went away, or sent a malformed chunk.
        Err(err) => Err(bad_request(format!("body could not be read: {err}"))),
    }
}

pub(super) fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, reason.into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decoded_once_each() {
        let params = PublishParams::parse(
            "%63hannel=a%2Eb&event=x+y&retry=3000&access_token=t&authorization=j",
        );
        let expected = PublishParams {
            channel: Some("a.b".into()),
            event: Some("x y".into()),
            id: None,
            retry: Some(Duration::from_secs(3)),
        };
        assert_eq!(params, Ok(expected));
        for bad in [
            "chanel=a",
            "id=1&id=2",
            "retry=",
            "retry=-1",
            "retry=1e3",
            "id=%zz",
        ] {
            assert!(PublishParams::parse(bad).is_err(), "{bad}");
        }
    }
}
