//! `GET /healthz` (liveness) and `GET /readyz` (readiness), for load balancers and
//! orchestrators.

use axum::{extract::State, http::StatusCode};

use super::state::Hub;
use tower_sse::Broker;

/// Whether the hub should get new streams ([`Broker::is_ready`]): not while it drains (after a
/// shutdown signal) or is closed, nor while its backend is unreachable. On a Redis Cluster, one
/// shard down does not make it unready: every hub of the cluster would be taken out of
/// rotation at once for the channels of one shard; its body names the shard instead
/// ([`Broker::unreachable`]). `GET /readyz` answers `200` when it is ready, else `503`, so that
/// a load balancer takes the hub out of rotation while `GET /healthz` still answers (the
/// process is alive; restarting it would not help).
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

/// `200 ready`, or `503 not ready` (see [`ready`]), followed by what the backend can't reach,
/// if anything: `ready; unreachable: Redis Cluster slot 5917 (channel room.0: ...)`.
pub(super) async fn readyz(State(hub): State<Hub>) -> (StatusCode, String) {
    let (status, mut body) = match ready(&hub.broker) {
        true => (StatusCode::OK, "ready".to_owned()),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_owned()),
    };
    let unreachable = hub.broker.unreachable();
    if !unreachable.is_empty() {
        body = format!("{body}; unreachable: {}", unreachable.join("; "));
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_says_ready_or_not() {
        let broker = Broker::new();
        let hub = Hub::new(broker.clone(), None, None);
        assert_eq!(
            readyz(State(hub.clone())).await,
            (StatusCode::OK, "ready".into())
        );
        broker.close();
        let not = (StatusCode::SERVICE_UNAVAILABLE, "not ready".into());
        assert_eq!(readyz(State(hub)).await, not);
    }
}
