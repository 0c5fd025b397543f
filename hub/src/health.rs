//! `GET /healthz` (liveness) and `GET /readyz` (readiness), for load balancers and
//! orchestrators.

use axum::{extract::State, http::StatusCode};

use super::state::Hub;
use tower_sse::Broker;

/// Whether the hub should get new streams ([`Broker::is_ready`]): not while it drains (after a
/// shutdown signal) or is closed, nor while its backend is unreachable. `GET /readyz` answers `200`
/// when it is, else `503`, so that a load balancer takes the hub out of rotation while
/// `GET /healthz` still answers (the process is alive; restarting it would not help).
///
/// ```
/// use tower_sse::Broker;
/// use tower_sse_hub as hub;
///
/// let broker = Broker::new();
/// assert!(hub::ready(&broker));
/// broker.close();
/// assert!(!hub::ready(&broker));
/// ```
pub fn ready(broker: &Broker) -> bool {
    broker.is_ready()
}

/// `200 ok` while the process serves.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `200 ready`, or `503 not ready` (see [`ready`]).
pub(super) async fn readyz(State(hub): State<Hub>) -> (StatusCode, &'static str) {
    if ready(&hub.broker) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
