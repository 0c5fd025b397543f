//! The routes with subscribers, on this hub and on every hub of the same broker: what a
//! publish matches its topics against (see [`layout`](super::layout)).
//!
//! A hub holds a count of its own subscribers per route. The first one announces the route on
//! a control channel of the broker, and every hub on that broker (one process, or every
//! instance on one Redis) listens to it and learns the route, so that its publishes reach
//! that route's channel; each hub announces its routes again every [`REFRESH`], and a route
//! no hub announced for [`EXPIRY`] is forgotten. A hub that starts listening asks the others
//! for theirs (an empty announcement), so it knows them before its first publish. So a publish costs one match per distinct
//! route (per distinct selector of the subscribers, not per subscriber), and nothing is
//! stored per subscriber but its count.
//!
//! On a broker of one process there is no other hub: nothing is announced, and the routes are
//! this hub's own. On a shared one, each hub holds one stream of its own on the control
//! channel (counted in `sse_subscribers`).
//!
//! A route is known here before its first subscriber's stream starts, and on the other hubs
//! about one Redis round trip after: an update published on another hub within that moment
//! may not reach a route that was just made. Routes stay known for [`EXPIRY`] after their last
//! subscriber left, so a reconnecting `EventSource` resumes from the route's history.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::time::Instant;
use tower_sse::{Broker, Event};

use super::layout::{Route, RouteKey};

/// The channel routes are announced on; under `private.`, so the hub's own `/events` guards
/// it.
pub(super) const CONTROL: &str = "private.mercure.routes";

/// How often a hub announces its routes again.
pub(super) const REFRESH: Duration = Duration::from_secs(30);

/// How long a route nobody announced is kept.
pub(super) const EXPIRY: Duration = Duration::from_secs(95);

/// The most distinct routes a hub keeps: a new route past it is refused (`503`), an
/// announced one ignored.
pub(super) const MAX_ROUTES: usize = 10_000;

/// Routes announced in one event at most.
const PER_ANNOUNCEMENT: usize = 256;

/// The routes known, and this hub's subscribers of each.
#[derive(Debug)]
pub(super) struct Registry {
    broker: Broker,
    known: DashMap<RouteKey, Known>,
    local: DashMap<RouteKey, usize>,
    started: OnceLock<()>,
}

#[derive(Debug)]
struct Known {
    route: Arc<Route>,
    seen: Instant,
}

/// Too many routes: the subscription is refused.
#[derive(Debug)]
pub(super) struct Full;

impl Registry {
    pub(super) fn new(broker: Broker) -> Arc<Registry> {
        Arc::new(Registry {
            broker,
            known: DashMap::new(),
            local: DashMap::new(),
            started: OnceLock::new(),
        })
    }

    /// Starts announcing this hub's routes and forgetting expired ones, and on a
    /// [shared](Broker::is_shared) broker listening for other hubs' announcements; once,
    /// inside the runtime. In one process there is no other hub to listen to (and the
    /// listening stream would count as a subscriber).
    pub(super) fn start(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            if self.broker.is_shared() {
                tokio::spawn(listen(Arc::downgrade(self), self.broker.clone()));
            }
            tokio::spawn(refresh(Arc::downgrade(self)));
        });
    }

    /// The channels of the routes an update with `topics` goes to, besides its topics' own.
    pub(super) fn channels(&self, topics: &[String], private: bool, out: &mut Vec<Arc<str>>) {
        for known in self.known.iter() {
            if known.route.matches(topics, private) {
                out.push(known.route.channel.clone());
            }
        }
    }

    /// Counts a subscriber of each of `routes` until the [`Held`] is dropped; announces the
    /// routes that had none here.
    pub(super) async fn hold(self: &Arc<Self>, routes: Vec<Route>) -> Result<Held, Full> {
        let mut new = Vec::new();
        // Given back on drop, also when one is refused below.
        let mut held = Held {
            registry: self.clone(),
            keys: Vec::with_capacity(routes.len()),
        };
        for route in routes {
            let mut count = self.local.entry(route.key.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                new.push(route.key.clone());
            }
            drop(count);
            held.keys.push(route.key.clone());
            if !self.know(route) {
                return Err(Full);
            }
        }
        if !new.is_empty() {
            self.announce(&new).await;
        }
        Ok(held)
    }

    /// Adds or refreshes a route; `false` when it is new and there are too many, even
    /// without the expired ones.
    fn know(&self, route: Route) -> bool {
        let now = Instant::now();
        if let Some(mut known) = self.known.get_mut(&route.key) {
            known.seen = now;
            return true;
        }
        if self.known.len() >= MAX_ROUTES {
            self.expire();
            if self.known.len() >= MAX_ROUTES {
                return false;
            }
        }
        let key = route.key.clone();
        self.known.entry(key).or_insert(Known {
            route: Arc::new(route),
            seen: now,
        });
        true
    }

    /// Publishes `keys` on the control channel, in events of [`PER_ANNOUNCEMENT`].
    async fn announce(&self, keys: &[RouteKey]) {
        if !self.broker.is_shared() {
            return;
        }
        for chunk in keys.chunks(PER_ANNOUNCEMENT) {
            let list: Vec<Vec<&str>> = chunk.iter().map(RouteKey::selectors).collect();
            let data = serde_json::to_string(&list).unwrap_or_default();
            if let Err(err) = self
                .broker
                .publish(CONTROL, Event::default().data(data))
                .await
            {
                tracing::warn!(%err, "could not announce Mercure routes");
            }
        }
    }

    /// Takes an announcement's data; `true` when it is a new hub's request for every hub's
    /// routes (an empty list).
    fn announced(&self, data: &str) -> bool {
        let Ok(list) = serde_json::from_str::<Vec<Vec<String>>>(data) else {
            tracing::debug!("not an announcement of routes");
            return false;
        };
        if list.is_empty() {
            return true;
        }
        for selectors in list {
            if let Some(route) =
                RouteKey::from_selectors(&selectors).and_then(|k| Route::new(k).ok())
            {
                self.know(route);
            }
        }
        false
    }

    /// Announces every route with subscribers here.
    async fn announce_all(&self) {
        let keys: Vec<RouteKey> = self.local.iter().map(|e| e.key().clone()).collect();
        if !keys.is_empty() {
            self.announce(&keys).await;
        }
    }

    /// Forgets the routes that had no subscriber here and that no hub announced for
    /// [`EXPIRY`].
    fn expire(&self) {
        let now = Instant::now();
        self.known.retain(|key, known| {
            if self.local.contains_key(key) {
                // In use here: it expires from when its last subscriber leaves.
                known.seen = now;
                return true;
            }
            now.duration_since(known.seen) < EXPIRY
        });
    }

    #[cfg(test)]
    pub(super) fn known(&self) -> usize {
        self.known.len()
    }
}

/// A subscriber's routes, counted until it is dropped (with the stream).
#[derive(Debug)]
pub(super) struct Held {
    registry: Arc<Registry>,
    keys: Vec<RouteKey>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for key in &self.keys {
            self.registry.local.remove_if_mut(key, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

/// Reads the control channel until the broker closes or the registry goes.
async fn listen(registry: std::sync::Weak<Registry>, broker: Broker) {
    let Ok(channels) = broker.channel_rules().channels([CONTROL]) else {
        return;
    };
    while !broker.is_closed() && registry.strong_count() > 0 {
        let mut subscription = match broker.subscribe(&channels).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::debug!(%err, "Mercure routes: subscribe failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Listening now: ask the other hubs for their routes.
        if let Err(err) = broker.publish(CONTROL, Event::default().data("[]")).await {
            tracing::debug!(%err, "Mercure routes: could not ask for the routes");
        }
        while let Some(next) = subscription.next().await {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            // A lag lost announcements: the next refresh brings them again.
            if let Ok(bytes) = next {
                let mut asked = false;
                for data in event_data(&bytes) {
                    asked |= registry.announced(&data);
                }
                if asked {
                    registry.announce_all().await;
                }
            }
        }
    }
}

/// Announces this hub's routes every [`REFRESH`], and forgets the expired ones.
async fn refresh(registry: std::sync::Weak<Registry>) {
    let mut every = tokio::time::interval(REFRESH);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if registry.broker.is_closed() {
            return;
        }
        registry.announce_all().await;
        registry.expire();
    }
}

/// The data of each event in `bytes` (as the broker encodes them: `data: ` lines, events
/// ended by an empty line; comments and other fields passed over).
fn event_data(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        if line.is_empty() {
            events.extend(data.take());
        } else if let Some(value) = line.strip_prefix("data: ") {
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_of_several_events() {
        let bytes = b"data: [[\"*\"]]\nid: 1\n\n: keep-alive\n\ndata: a\ndata: b\nid: 2\n\n";
        assert_eq!(event_data(bytes), ["[[\"*\"]]", "a\nb"]);
    }

    #[tokio::test]
    async fn routes_are_counted_and_expire() {
        tokio::time::pause();
        let hub = Registry::new(Broker::new());
        let key = RouteKey::Public("books/{id}".into());
        let route = || vec![Route::new(key.clone()).unwrap()];
        let held = hub.hold(route()).await.unwrap();
        let again = hub.hold(route()).await.unwrap();
        assert_eq!(hub.local.get(&key).map(|c| *c), Some(2));
        let mut out = Vec::new();
        hub.channels(&["books/1".into()], false, &mut out);
        assert_eq!(out, [Arc::from("mercure:books/{id}")]);
        drop(held);
        assert_eq!(hub.local.get(&key).map(|c| *c), Some(1));
        // Kept while it has a subscriber here, whatever the time.
        tokio::time::advance(EXPIRY + Duration::from_secs(1)).await;
        hub.expire();
        assert_eq!(hub.known(), 1);
        drop(again);
        assert!(hub.local.is_empty());
        // Kept for the expiry after its last subscriber left (a reconnect finds its history).
        tokio::time::advance(EXPIRY / 2).await;
        hub.expire();
        assert_eq!(hub.known(), 1);
        // Then no hub announced it for the expiry: gone.
        tokio::time::advance(EXPIRY + Duration::from_secs(1)).await;
        hub.expire();
        assert_eq!(hub.known(), 0);
    }
}
