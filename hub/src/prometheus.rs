//! `GET /metrics`: the process's metrics in Prometheus text format.

use std::sync::OnceLock;

use axum::{
    extract::{Request, State},
    http::header,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{auth::authorize, state::Hub};

/// The process's Prometheus recorder, installed on the first call. Call it before building
/// the broker: the broker takes its metric handles when it is built. No series per channel
/// (the broker's default): the label values stay bounded whatever names clients make up.
///
/// ```
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// let handle = hub::metrics();
/// let broker = Broker::new();
/// assert!(handle.render().contains("sse_subscribers"));
/// ```
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if let Err(err) = ::metrics::set_global_recorder(recorder) {
                tracing::warn!(%err, "another metrics recorder is installed");
            }
            handle
        })
        .clone()
}

/// With a token, the scrape needs it too: metric labels name channels. With a publisher JWT
/// key instead, a publisher token that may publish to every channel (`*`).
pub(super) async fn scrape(State(hub): State<Hub>, req: Request) -> Response {
    if let Some(token) = &hub.token {
        if let Err(denied) = authorize(token, req.headers(), req.uri().query()) {
            return denied.into_response();
        }
    }
    if let Some(rights) = &hub.rights {
        let (parts, _) = req.into_parts();
        if let Err(denied) = rights.may_scrape(&parts) {
            return denied.into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}
