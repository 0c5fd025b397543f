//! [`Nodes`]: which master owns which slots, and which masters answer, learned outside the
//! cluster connections.
//!
//! Why outside: the redis crate holds back every command of a cluster connection while it
//! recovers from one that failed (it maps the slots anew and connects again), so each command
//! sent for a channel whose master is down stalls the commands for every other channel on that
//! connection. A recovery round that re-subscribed the channels of a master that is down, round
//! after round, kept the subscriptions of the masters that are up from being made again
//! (measured: events on a channel of a healthy master stopped for over 30 s with 1,000
//! channels). So before a round, the masters are probed each with a connection of its own
//! (`PING`), and no command is sent for a channel whose master did not answer: it is counted
//! as failing, and a new stream on it is refused at once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError,
    RedisResult, Value, aio::MultiplexedConnection,
};
use tokio::time::timeout;

use super::keys::{channel_key, slot};
use crate::backend::redis::connection::TIMEOUT;

/// A master's address, `host:port`.
type Addr = (String, u16);

/// The cluster's masters as last seen: who owns which slots, and who did not answer.
#[derive(Debug)]
pub(super) struct Nodes {
    /// The first seed: its scheme, credentials and TLS settings are every node's.
    template: ConnectionInfo,
    seeds: Vec<Addr>,
    state: Mutex<State>,
    /// A connection to each master, for the channels' data (see [`Nodes::query`]).
    conns: Mutex<HashMap<Addr, MultiplexedConnection>>,
}

#[derive(Debug, Default)]
struct State {
    /// `(first slot, last slot, master)`, from `CLUSTER SLOTS`.
    slots: Vec<(u16, u16, Addr)>,
    down: HashSet<Addr>,
}

impl Nodes {
    /// From the seeds' URLs (already accepted by the redis crate).
    pub(super) fn new(seeds: &[&str]) -> redis::RedisResult<Nodes> {
        let mut infos = seeds.iter().map(|seed| seed.into_connection_info());
        let template = infos.next().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed"))
        })??;
        let mut addrs = vec![address(&template)];
        for info in infos {
            addrs.push(address(&info?));
        }
        Ok(Nodes {
            template,
            seeds: addrs.into_iter().flatten().collect(),
            state: Mutex::new(State::default()),
            conns: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The master of `channel` as last mapped, if known.
    pub(super) fn owner(&self, channel: &str) -> Option<(String, u16)> {
        let slot = slot(&channel_key(channel));
        let state = self.state();
        state
            .slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, owner)| owner.clone())
    }

    /// The master of `channel`, when it is known to be down.
    pub(super) fn down_for(&self, channel: &str) -> Option<String> {
        let owner = self.owner(channel)?;
        self.state()
            .down
            .contains(&owner)
            .then(|| format!("{}:{}", owner.0, owner.1))
    }

    /// Maps the slots again (`CLUSTER SLOTS` from the first master or seed that answers) and
    /// probes every master; returns how many are down.
    pub(super) async fn refresh(&self) -> usize {
        let known: Vec<Addr> = {
            let state = self.state();
            let mut known: Vec<Addr> = state.slots.iter().map(|(_, _, a)| a.clone()).collect();
            known.extend(self.seeds.iter().cloned());
            // Each tried once, the masters as last mapped first.
            let mut seen = HashSet::new();
            known.retain(|addr| seen.insert(addr.clone()));
            known
        };
        let mut slots = None;
        for node in &known {
            if let Some(found) = self.cluster_slots(node).await {
                slots = Some(found);
                break;
            }
        }
        let Some(slots) = slots else {
            // No node answers: every master is down, as far as this instance can tell.
            let mut state = self.state();
            state.down = known.into_iter().collect();
            return state.down.len();
        };
        let mut masters: Vec<Addr> = slots.iter().map(|(_, _, a)| a.clone()).collect();
        masters.sort();
        masters.dedup();
        let mut down = HashSet::new();
        for master in masters {
            if !self.ping(&master).await {
                down.insert(master);
            }
        }
        let mut state = self.state();
        state.slots = slots;
        state.down = down;
        state.down.len()
    }

    /// Runs `cmd`, whose keys are all `channel`'s (one slot), on the master that owns it, over
    /// a connection to that master alone: a master down fails only its own channels' commands
    /// (the redis crate's cluster connection held back every command while it tried the node
    /// again, and then answered `MOVED` for the others' for seconds). Follows one `MOVED` or
    /// `ASK` (a slot moved or moving), and maps the slots again after a `MOVED`. Bounded by
    /// [`TIMEOUT`] a try.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        channel: &str,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        let owner = match self.owner(channel) {
            Some(owner) => owner,
            None => {
                self.refresh().await;
                self.owner(channel)
                    .ok_or_else(|| failure("no master owns its slot"))?
            }
        };
        if self.state().down.contains(&owner) {
            return Err(failure(&format!(
                "its master {}:{} is down",
                owner.0, owner.1
            )));
        }
        match self.query_on(&owner, cmd, false).await {
            Err(err) if matches!(err.kind(), ErrorKind::Moved | ErrorKind::Ask) => {
                let Some(to) = err
                    .redirect_node()
                    .and_then(|(addr, _)| addr.rsplit_once(':'))
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                else {
                    return Err(err);
                };
                let asking = err.kind() == ErrorKind::Ask;
                if !asking {
                    self.refresh().await;
                }
                self.query_on(&to, cmd, asking).await
            }
            done => done,
        }
    }

    /// `cmd` on `node`'s connection (`ASKING` first when asked); a connection that failed is
    /// dropped, to be made again by the next command.
    async fn query_on<T: FromRedisValue>(
        &self,
        node: &Addr,
        cmd: &redis::Cmd,
        asking: bool,
    ) -> RedisResult<T> {
        let cached = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned();
        let mut conn = match cached {
            Some(conn) => conn,
            None => {
                let conn = self
                    .connect(node)
                    .await
                    .ok_or_else(|| failure(&format!("no connection to {}:{}", node.0, node.1)))?;
                self.conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(node.clone(), conn.clone());
                conn
            }
        };
        let reply = if asking {
            let mut pipe = redis::pipe();
            pipe.cmd("ASKING").ignore().add_command(cmd.clone());
            timeout(TIMEOUT, pipe.query_async::<(T,)>(&mut conn))
                .await
                .map(|reply| reply.map(|(value,)| value))
        } else {
            timeout(TIMEOUT, cmd.query_async::<T>(&mut conn)).await
        };
        let reply = reply.unwrap_or_else(|_| Err(failure("no answer within 2 s")));
        match reply {
            Err(err) if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() => {
                self.conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(node);
                // Which master, for the refusal and `/readyz`.
                Err(failure(&format!("master {}:{}: {err}", node.0, node.1)))
            }
            reply => reply,
        }
    }

    /// A connection of its own to `node`, with the seeds' credentials and TLS.
    async fn connect(&self, node: &Addr) -> Option<redis::aio::MultiplexedConnection> {
        let mut info = self.template.clone();
        info.addr = match &info.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: node.0.clone(),
                port: node.1,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(node.0.clone(), node.1),
        };
        let client = redis::Client::open(info).ok()?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT);
        timeout(
            TIMEOUT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .ok()?
        .ok()
    }

    async fn ping(&self, node: &Addr) -> bool {
        let Some(mut conn) = self.connect(node).await else {
            return false;
        };
        let ping = redis::cmd("PING");
        matches!(
            timeout(TIMEOUT, ping.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }

    async fn cluster_slots(&self, node: &Addr) -> Option<Vec<(u16, u16, Addr)>> {
        let mut conn = self.connect(node).await?;
        let mut command = redis::cmd("CLUSTER");
        command.arg("SLOTS");
        let reply = timeout(TIMEOUT, command.query_async::<Value>(&mut conn)).await;
        let Ok(Ok(Value::Array(ranges))) = reply else {
            return None;
        };
        let slots: Vec<(u16, u16, Addr)> = ranges.iter().filter_map(read_range).collect();
        (!slots.is_empty()).then_some(slots)
    }
}

/// One range of a `CLUSTER SLOTS` reply: `[first, last, [host, port, ...], replicas...]`.
fn read_range(range: &Value) -> Option<(u16, u16, Addr)> {
    let Value::Array(parts) = range else {
        return None;
    };
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => u16::try_from(*n).ok(),
        _ => None,
    };
    let (first, last) = (int(parts.first())?, int(parts.get(1))?);
    let Some(Value::Array(master)) = parts.get(2) else {
        return None;
    };
    let host = match master.first()? {
        Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
        Value::SimpleString(host) => host.clone(),
        _ => return None,
    };
    Some((first, last, (host, int(master.get(1))?)))
}

/// The `host:port` of a TCP connection's info.
fn address(info: &ConnectionInfo) -> Option<Addr> {
    match &info.addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        ConnectionAddr::Unix(_) => None,
    }
}

/// An I/O error saying `why` (the caller adds the channel).
fn failure(why: &str) -> RedisError {
    RedisError::from(std::io::Error::other(why.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_slots_range_reads() {
        let range = Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![
                Value::BulkString(b"10.0.0.1".to_vec()),
                Value::Int(7000),
                Value::BulkString(b"id".to_vec()),
            ]),
            Value::Array(vec![
                Value::BulkString(b"10.0.0.4".to_vec()),
                Value::Int(7000),
            ]),
        ]);
        assert_eq!(
            read_range(&range),
            Some((0, 5460, ("10.0.0.1".to_owned(), 7000)))
        );
        // Not a range: a slot out of bounds, a master without a port, not an array.
        for bad in [
            Value::Array(vec![
                Value::Int(0),
                Value::Int(70_000),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                Value::Array(vec![Value::BulkString(b"h".to_vec())]),
            ]),
            Value::Int(3),
        ] {
            assert_eq!(read_range(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_channel_of_a_master_found_down_is_refused() {
        let nodes = Nodes::new(&["redis://127.0.0.1:1"]).unwrap();
        assert_eq!(nodes.down_for("a"), None, "nothing known yet");
        let owner = ("127.0.0.1".to_owned(), 7001);
        {
            let mut state = nodes.state();
            state.slots = vec![(0, 16_383, owner.clone())];
            state.down.insert(owner);
        }
        assert_eq!(nodes.down_for("a").as_deref(), Some("127.0.0.1:7001"));
    }
}
