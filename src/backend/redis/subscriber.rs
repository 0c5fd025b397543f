//! The task that holds an instance's one Redis pub/sub connection.
//!
//! It subscribes a channel when its first local subscriber arrives ([`Control::Ensure`]) and
//! unsubscribes it when the last leaves ([`Control::Release`]), feeds every message into the
//! broker through its [`Inbound`] handle, and after a lost connection reconnects with backoff,
//! subscribes again and backfills from the histories what was published meanwhile.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::{aio::ConnectionManager, AsyncCommands, Client, Script};
use tokio::sync::{mpsc, oneshot};

use super::{
    wire::{channel_key, channel_name, epoch_key, history_key, parse_message, seq_key, token},
    TIMEOUT,
};
use crate::backend::{Gone, Inbound, Message};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A request from the broker's side.
pub(super) enum Control {
    /// Make sure these channels have a Redis subscription, then answer.
    Ensure(Vec<Arc<str>>, oneshot::Sender<Result<(), String>>),
    /// This channel lost its last local subscriber.
    Release(Arc<str>),
}

/// One entry of an `XRANGE` reply: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// The subscription task's state; [`Subscriber::spawn`] starts it.
pub(crate) struct Subscriber {
    client: Client,
    conn: ConnectionManager,
    requests: mpsc::UnboundedReceiver<Control>,
    /// Channels subscribed in Redis, with the last sequence number delivered on each.
    active: HashMap<Arc<str>, u64>,
    /// The highest sequence number this instance has seen, shared with the backend.
    seen: Arc<AtomicU64>,
    /// The `epoch` key's value at the last connect.
    epoch: Option<String>,
    restore: Script,
}

/// Why a session with Redis ended.
enum Ended {
    BrokerGone,
    Disconnected(String),
}

impl From<Gone> for Ended {
    fn from(Gone: Gone) -> Self {
        Ended::BrokerGone
    }
}

impl Subscriber {
    pub(super) fn new(
        client: Client,
        conn: ConnectionManager,
        requests: mpsc::UnboundedReceiver<Control>,
        seen: Arc<AtomicU64>,
    ) -> Subscriber {
        Subscriber {
            client,
            conn,
            requests,
            active: HashMap::new(),
            seen,
            epoch: None,
            restore: Script::new(include_str!("restore.lua")),
        }
    }

    /// Runs the task until the broker behind `inbound` is gone.
    pub(crate) fn spawn(self, inbound: impl Inbound) {
        tokio::spawn(self.run(inbound));
    }

    async fn run(mut self, inbound: impl Inbound) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let err = match self.session(&inbound, &mut backoff).await {
                Ended::BrokerGone => return,
                Ended::Disconnected(err) => err,
            };
            tracing::warn!(%err, retry_in = ?backoff, "Redis subscription lost");
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => match request {
                        None => return,
                        Some(request) => if self.offline(request, &inbound).is_err() {
                            return;
                        },
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// While disconnected: channels already subscribed stay (they are resubscribed on
    /// reconnect); new ones are refused, so their clients get a 503 and retry.
    fn offline(&mut self, request: Control, inbound: &impl Inbound) -> Result<(), Gone> {
        match request {
            Control::Ensure(names, reply) => {
                let known = names.iter().all(|n| self.active.contains_key(n));
                let _ = reply.send(if known {
                    Ok(())
                } else {
                    Err("Redis is unreachable".to_owned())
                });
            }
            Control::Release(name) => {
                if !inbound.has_channel(&name)? {
                    self.active.remove(&name);
                }
            }
        }
        Ok(())
    }

    async fn session(&mut self, inbound: &impl Inbound, backoff: &mut Duration) -> Ended {
        let pubsub = match tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => return Ended::Disconnected(err.to_string()),
            Err(_) => return Ended::Disconnected("connect timed out".to_owned()),
        };
        let (mut sink, mut stream) = pubsub.split();
        if !self.active.is_empty() {
            let keys: Vec<String> = self.active.keys().map(|n| channel_key(n)).collect();
            if let Err(err) = sink.subscribe(&keys).await {
                return Ended::Disconnected(err.to_string());
            }
        }
        // After subscribing, so what is published from now on is either in the backfill or
        // in the subscription (or both: `active` drops the second copy).
        match self.restore().await {
            Ok(true) => {
                if let Err(gone) = inbound.data_lost() {
                    return gone.into();
                }
            }
            Ok(false) => {}
            Err(err) => return Ended::Disconnected(err.to_string()),
        }
        if !self.active.is_empty() {
            match self.backfill(inbound).await {
                Ok(Ok(())) => {}
                Ok(Err(gone)) => return gone.into(),
                Err(err) => return Ended::Disconnected(err.to_string()),
            }
            tracing::info!(channels = self.active.len(), "Redis subscription restored");
        }
        *backoff = MIN_BACKOFF;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        if let Err(gone) = self.on_message(&message, inbound) {
                            return gone.into();
                        }
                    }
                    None => return Ended::Disconnected("connection closed".to_owned()),
                },
                request = self.requests.recv() => match request {
                    None => return Ended::BrokerGone,
                    Some(Control::Ensure(names, reply)) => {
                        let result = self.subscribe(&mut sink, names).await;
                        let failed = result.as_ref().err().map(|e| e.to_string());
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                        if let Some(err) = failed {
                            return Ended::Disconnected(err);
                        }
                    }
                    Some(Control::Release(name)) => {
                        match inbound.has_channel(&name) {
                            Err(gone) => return gone.into(),
                            Ok(true) => continue, // a subscriber came back meanwhile
                            Ok(false) => {}
                        }
                        if self.active.remove(&name).is_some() {
                            if let Err(err) = sink.unsubscribe(channel_key(&name)).await {
                                return Ended::Disconnected(err.to_string());
                            }
                        }
                    }
                },
            }
        }
    }

    async fn subscribe(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        names: Vec<Arc<str>>,
    ) -> redis::RedisResult<()> {
        let new: Vec<Arc<str>> = names
            .into_iter()
            .filter(|n| !self.active.contains_key(n))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = new.iter().map(|n| channel_key(n)).collect();
        sink.subscribe(&keys).await?;
        // Events up to the counter read now were published before this subscription was
        // answered, so before any local subscriber of these channels got its response.
        let mut conn = self.conn.clone();
        let seq: u64 = conn.get::<_, Option<u64>>(seq_key()).await?.unwrap_or(0);
        self.seen.fetch_max(seq, Ordering::Relaxed);
        for name in new {
            self.active.insert(name, seq);
        }
        Ok(())
    }

    /// Checks whether Redis lost its data since the last connect, and if so makes the backfill
    /// take the histories from their start: they hold only events published since the loss,
    /// with sequence numbers that may be lower than the ones seen before it. Returns whether
    /// it did.
    async fn restore(&mut self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let epoch: String = self
            .restore
            .key(seq_key())
            .key(epoch_key())
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(token())
            .invoke_async(&mut conn)
            .await?;
        let lost = self.epoch.as_ref().is_some_and(|old| *old != epoch);
        if lost {
            tracing::warn!("Redis lost its data; replaying the histories from their start");
            for last in self.active.values_mut() {
                *last = 0;
            }
        }
        self.epoch = Some(epoch);
        Ok(lost)
    }

    fn on_message(&mut self, message: &redis::Msg, inbound: &impl Inbound) -> Result<(), Gone> {
        let Some(name) = channel_name(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(parsed) = parse_message(message.get_payload_bytes()) else {
            tracing::warn!(channel = name, "unreadable message from Redis");
            return Ok(());
        };
        self.deliver(name, parsed, inbound)
    }

    /// Delivers an event of an active channel unless it was delivered already (by the
    /// subscription or a backfill: both may carry it).
    fn deliver(
        &mut self,
        name: &str,
        message: Message,
        inbound: &impl Inbound,
    ) -> Result<(), Gone> {
        let Some(last) = self.active.get_mut(name) else {
            return Ok(()); // unsubscribed meanwhile
        };
        if message.seq <= *last {
            return Ok(());
        }
        *last = message.seq;
        self.seen.fetch_max(message.seq, Ordering::Relaxed);
        inbound.deliver(name, message)
    }

    /// After a reconnect: delivers, in sequence order, what every active channel missed.
    async fn backfill(&mut self, inbound: &impl Inbound) -> redis::RedisResult<Result<(), Gone>> {
        let names: Vec<Arc<str>> = self.active.keys().cloned().collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in &names {
            let from = format!("{}-0", self.active[name] + 1);
            pipe.cmd("XRANGE").arg(history_key(name)).arg(from).arg("+");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<StreamEntry>> = pipe.query_async(&mut conn).await?;
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
            if let Err(gone) = self.deliver(&name, message, inbound) {
                return Ok(Err(gone));
            }
        }
        Ok(Ok(()))
    }
}
