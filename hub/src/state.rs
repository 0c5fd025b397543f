//! What the hub's handlers share: their router's state.

use std::sync::Arc;

use tower_sse::Broker;

/// The state of the hub's routes: the broker, and the token that guards publishing, the
/// `private.*` channels and the metrics. Cloned per request (two `Arc`s).
#[derive(Clone, Debug)]
pub(super) struct Hub {
    pub(super) broker: Broker,
    pub(super) token: Option<Arc<str>>,
}

impl Hub {
    pub(super) fn new(broker: Broker, token: Option<String>) -> Hub {
        let token = token.map(Arc::from);
        Hub { broker, token }
    }
}
