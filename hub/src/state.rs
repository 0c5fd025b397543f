//! What the hub's handlers share: their router's state.

use std::sync::Arc;

use tower_sse::Broker;

use super::jwt::Rights;

/// The state of the hub's routes: the broker, the token that guards publishing, the
/// `private.*` channels and the metrics, and the JWT rights that guard them instead when a
/// key is set (never both: see [`rights`](super::rights)). Cloned per request (three `Arc`s).
#[derive(Clone, Debug)]
pub(super) struct Hub {
    pub(super) broker: Broker,
    pub(super) token: Option<Arc<str>>,
    pub(super) rights: Option<Arc<Rights>>,
}

impl Hub {
    pub(super) fn new(broker: Broker, token: Option<String>, rights: Option<Rights>) -> Hub {
        let token = token.map(Arc::from);
        let rights = rights.map(Arc::new);
        Hub {
            broker,
            token,
            rights,
        }
    }
}
