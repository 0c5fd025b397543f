//! `GET /healthz` (liveness) and `GET /readyz` (readiness), for load balancers and
//! orchestrators.

use axum::{extract::State, http::StatusCode};

use super::state::Hub;
use tower_sse::Broker;

/// Whether the hub should get new streams ([`Broker::is_ready`]): not while it drains (after a
/// shutdown signal) or is closed, nor while its backend is unreachable, a shard of a Redis
/// Cluster included ([`Broker::unreachable`]: new streams on its channels would get `503`).
/// `GET /readyz` answers `200` when it is, else `503`, so that a load balancer takes the hub
/// out of rotation while `GET /healthz` still answers (the process is alive; restarting it
/// would not help).
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
    broker.is_ready() && broker.unreachable().is_empty()
}

/// `200 ok` while the process serves.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `200 ready`, or `503 not ready` (see [`ready`]), followed by what the backend can't reach,
/// if anything: `not ready: unreachable: Redis Cluster slot 5917 (channel room.0: ...)`.
pub(super) async fn readyz(State(hub): State<Hub>) -> (StatusCode, String) {
    not_ready(&hub.broker).map_or_else(
        || (StatusCode::OK, "ready".to_owned()),
        |why| (StatusCode::SERVICE_UNAVAILABLE, why),
    )
}

/// `None` when [`ready`], else the body of `/readyz`'s `503`.
fn not_ready(broker: &Broker) -> Option<String> {
    let unreachable = broker.unreachable();
    if broker.is_ready() && unreachable.is_empty() {
        None
    } else if unreachable.is_empty() {
        Some("not ready".to_owned())
    } else {
        Some(format!(
            "not ready: unreachable: {}",
            unreachable.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_says_why_if_it_can() {
        let broker = Broker::new();
        assert_eq!(not_ready(&broker), None);
        broker.close();
        assert_eq!(not_ready(&broker).as_deref(), Some("not ready"));
    }
}
