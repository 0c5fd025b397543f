//! [`Flask`]: the [`Feed`] of flask-sse's messages on the shared pub/sub connection.
//!
//! Channels are the plain names flask-sse publishes to (no prefix). Each message is read into
//! an event ([`message::read`]) and published in the broker as if published there, numbered by
//! it; a bad one is dropped, logged (at most once a second) and counted in
//! [`FLASK_SSE_DROPPED`](crate::metrics::FLASK_SSE_DROPPED), and the stream goes on. Pub/sub
//! keeps nothing, so there is nothing to catch up on: when the connection is lost, and when a
//! channel is subscribed anew, the broker is told that events may have passed it by
//! ([`Inbound::missed`]), so that a resume from before then reports the gap.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::message::{self, Dropped};
use crate::{
    backend::{
        Gone, Inbound,
        redis::subscriber::{Ended, Feed},
    },
    error::PublishError,
    rate_limited::RateLimited,
};

/// Dropped messages are logged at most once a second, with how many were dropped since: a
/// publisher sending garbage must not flood the log. Each is counted anyway.
static DROPS: RateLimited = RateLimited::new(Duration::from_secs(1));

/// The feed of flask-sse's messages.
#[derive(Debug, Default)]
pub(super) struct Flask;

fn dropped(channel: &str, reason: Dropped) {
    crate::metrics::flask_sse_dropped(reason.label());
    if let Some(suppressed) = DROPS.due() {
        tracing::warn!(
            channel,
            reason = reason.label(),
            suppressed,
            "flask-sse message dropped"
        );
    }
}

impl Feed for Flask {
    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    fn name<'k>(&self, key: &'k str) -> Option<&'k str> {
        Some(key)
    }

    /// What was published before the subscription is not here: a resume from before it (on a
    /// channel whose entry was made for it) is incomplete.
    async fn subscribed<I: Inbound>(
        &mut self,
        names: &[Arc<str>],
        inbound: &I,
    ) -> Result<u64, String> {
        // A broker gone is seen by the next step that needs it.
        let _ = inbound.missed(names);
        Ok(0)
    }

    /// Nothing kept to catch up on: [`Flask::disconnected`] marked the gap.
    async fn connected<I: Inbound>(
        &mut self,
        _active: &mut HashMap<Arc<str>, u64>,
        _inbound: &I,
    ) -> Result<(), Ended> {
        Ok(())
    }

    fn disconnected(
        &mut self,
        active: &HashMap<Arc<str>, u64>,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        if active.is_empty() {
            return Ok(());
        }
        let names: Vec<Arc<str>> = active.keys().cloned().collect();
        inbound.missed(&names)
    }

    fn message(
        &mut self,
        name: &str,
        payload: &[u8],
        _mark: &mut u64,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        let event = match message::read(payload) {
            Ok(event) => event,
            Err(reason) => {
                dropped(name, reason);
                return Ok(());
            }
        };
        match inbound.publish(name, &event)? {
            Ok(_) => {}
            Err(PublishError::IdTooLong { .. } | PublishError::Event(_)) => {
                dropped(name, Dropped::Id);
            }
            // Closed: the streams are ending.
            Err(_) => {}
        }
        Ok(())
    }
}
