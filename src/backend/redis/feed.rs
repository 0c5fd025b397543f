//! [`Numbered`]: the [`Feed`] of tower-sse's own format on Redis, whose messages carry Redis's
//! sequence numbers and whose histories fill every gap.
//!
//! A new channel's mark is the counter read once Redis confirmed its subscription; each
//! message's sequence number moves it, and a message at or below it was delivered already
//! (by the subscription or a backfill: both may carry it). A new connection restores the
//! counter if Redis lost its data, then backfills every active channel from its history,
//! from its mark on, so a reconnect loses nothing the histories keep.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use redis::{AsyncCommands, Script, aio::ConnectionManager};

use super::{
    subscriber::{Ended, Feed, bounded, setup},
    wire::{channel_key, channel_name, epoch_key, history_key, parse_message, seq_key, token},
};
use crate::backend::{Gone, Inbound, Message};

/// One entry of an `XRANGE` reply: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// The feed of tower-sse's format: messages numbered by Redis, gaps backfilled.
pub(super) struct Numbered {
    conn: ConnectionManager,
    /// The highest sequence number this instance has seen, shared with the backend.
    seen: Arc<AtomicU64>,
    /// The `epoch` key's value at the last connect.
    epoch: Option<String>,
    restore: Script,
}

impl Numbered {
    pub(super) fn new(conn: ConnectionManager, seen: Arc<AtomicU64>) -> Numbered {
        Numbered {
            conn,
            seen,
            epoch: None,
            restore: Script::new(include_str!("restore.lua")),
        }
    }

    /// Checks whether Redis lost its data since the last connect, and if so makes the backfill
    /// take the histories from their start: they hold only events published since the loss,
    /// with sequence numbers that may be lower than the ones seen before it. Returns whether
    /// it did.
    async fn restore(&mut self, active: &mut HashMap<Arc<str>, u64>) -> Result<bool, Ended> {
        let script = self.restore.clone();
        let seen = self.seen.load(Ordering::Relaxed);
        let mut conn = self.conn.clone();
        let epoch: String = setup("restore", async move {
            script
                .key(seq_key())
                .key(epoch_key())
                .arg(seen)
                .arg(token())
                .invoke_async(&mut conn)
                .await
        })
        .await?;
        let lost = self.epoch.as_ref().is_some_and(|old| *old != epoch);
        if lost {
            tracing::warn!("Redis lost its data; replaying the histories from their start");
            for last in active.values_mut() {
                *last = 0;
            }
        }
        self.epoch = Some(epoch);
        Ok(lost)
    }

    /// Delivers an event unless it was delivered already (its sequence number is at or below
    /// the channel's mark `last`).
    fn deliver(
        &self,
        name: &str,
        message: Message,
        last: &mut u64,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        if message.seq <= *last {
            return Ok(());
        }
        *last = message.seq;
        self.seen.fetch_max(message.seq, Ordering::Relaxed);
        inbound.deliver(name, message)
    }

    /// After a reconnect: delivers, in sequence order, what every active channel missed.
    async fn backfill(
        &mut self,
        active: &mut HashMap<Arc<str>, u64>,
        inbound: &impl Inbound,
    ) -> Result<(), Ended> {
        let names: Vec<Arc<str>> = active.keys().cloned().collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in &names {
            let from = format!("{}-0", active[name] + 1);
            pipe.cmd("XRANGE").arg(history_key(name)).arg(from).arg("+");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<StreamEntry>> =
            setup("backfill", async move { pipe.query_async(&mut conn).await }).await?;
        let mut missed: Vec<(Arc<str>, Message)> = Vec::new();
        for (name, entries) in names.iter().zip(replies) {
            for (_, fields) in entries {
                if let Some(message) = fields.get("m").and_then(|m| parse_message(m)) {
                    missed.push((name.clone(), message));
                }
            }
        }
        missed.sort_by_key(|(_, m)| m.seq);
        tracing::info!(events = missed.len(), "backfilled from Redis history");
        for (name, message) in missed {
            if let Some(last) = active.get_mut(&name) {
                self.deliver(&name, message, last, inbound)?;
            }
        }
        Ok(())
    }
}

impl Feed for Numbered {
    fn key(&self, name: &str) -> String {
        channel_key(name)
    }

    fn name<'k>(&self, key: &'k str) -> Option<&'k str> {
        channel_name(key)
    }

    /// Reads the counter: events up to it were published before these subscriptions were
    /// answered, so before any local subscriber of these channels got its response.
    async fn subscribed<I: Inbound>(
        &mut self,
        _names: &[Arc<str>],
        _inbound: &I,
    ) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let seq: Option<u64> = bounded("GET", conn.get(seq_key())).await?;
        let seq = seq.unwrap_or(0);
        self.seen.fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
    }

    async fn connected<I: Inbound>(
        &mut self,
        active: &mut HashMap<Arc<str>, u64>,
        inbound: &I,
    ) -> Result<(), Ended> {
        if self.restore(active).await? {
            inbound.data_lost()?;
        }
        if !active.is_empty() {
            self.backfill(active, inbound).await?;
        }
        Ok(())
    }

    /// Nothing to do: the next connection backfills.
    fn disconnected(
        &mut self,
        _active: &HashMap<Arc<str>, u64>,
        _inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        Ok(())
    }

    fn message(
        &mut self,
        name: &str,
        payload: &[u8],
        last: &mut u64,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        let Some(parsed) = parse_message(payload) else {
            tracing::warn!(channel = name, "unreadable message from Redis");
            return Ok(());
        };
        self.deliver(name, parsed, last, inbound)
    }
}
