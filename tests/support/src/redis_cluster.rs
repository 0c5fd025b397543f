//! A private Redis Cluster on loopback, for the tests of the Redis Cluster backend (issue 21):
//! `redis-server` child processes in cluster mode on free ports (client port and cluster bus
//! port both picked, so nothing assumes `port + 10000` is free), joined with
//! `redis-cli --cluster create`, without persistence but with each node's `nodes.conf` in a
//! temporary folder, so that a killed node restarts as the same node and rejoins. A test can
//! kill a node (`SIGKILL`), wait for a replica to take over its slots, restart it and wait for
//! the cluster to settle again. Every node is killed by PID and the folder removed on drop.
//!
//! Every wait is bounded ([`SETTLE`]) and panics with the last state it saw: a cluster that
//! does not settle is a broken harness or a broken machine, never a slow test. Without
//! `redis-server` or `redis-cli` on PATH the tests say so on stderr and pass, unless
//! `TOWER_SSE_REQUIRE_REDIS=1` (see [`redis_cluster!`](crate::redis_cluster!)).

#![allow(dead_code)] // each test uses its part

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::redis_server::{REQUIRE, ping};

/// How long the cluster may take to form, fail over or take a node back: a failover is a
/// node timeout (2 s) plus gossip and an election (about 1 s) on an idle machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// How long one command to one node may take (a killed node refuses at once; this is for a
/// stuck one).
const COMMAND: Duration = Duration::from_secs(2);

/// The slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One `redis-server --cluster-enabled yes` child process.
struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// A private Redis Cluster: every node killed, and its folder removed, on drop.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// One cluster at a time in a test process: several at once, with their elections, on a
    /// busy 2-core machine, make a failover take longer than [`SETTLE`].
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Whose turn it is to run a cluster.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl RedisCluster {
    /// Starts `masters` (at least 3, as `redis-cli --cluster create` wants) masters with
    /// `replicas_per_master` replicas each, and waits until the cluster is settled
    /// ([`Self::wait_ok`]). `None` (after a loud message) when `redis-server` or `redis-cli` is
    /// not installed; panics if the cluster does not form.
    pub async fn start(masters: usize, replicas_per_master: usize) -> Option<RedisCluster> {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        for program in ["redis-server", "redis-cli"] {
            if !installed(program) {
                if std::env::var(REQUIRE).as_deref() == Ok("1") {
                    panic!("{REQUIRE}=1 but `{program}` is not on PATH: install redis-server");
                }
                // Straight to the file descriptor: the test harness captures `eprintln!`.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "\n**********\n** SKIPPED: `{program}` is not on PATH, so this Redis \
                         Cluster test did not run.\n** Install redis-server (it brings \
                         redis-cli), or set {REQUIRE}=1 to make this an error.\n**********\n"
                    )
                    .as_bytes(),
                );
                return None;
            }
        }
        let count = masters * (1 + replicas_per_master);
        // The ports are free when picked, but something else may take one before its node
        // binds: then start over on others.
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!(
                "tower-sse-redis-cluster-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&dir).expect("create the cluster's folder");
            let ports = free_ports(2 * count);
            let mut cluster = RedisCluster {
                _turn: TURN.lock().await,
                dir,
                nodes: (0..count)
                    .map(|i| Node {
                        port: ports[2 * i],
                        bus_port: ports[2 * i + 1],
                        child: None,
                    })
                    .collect(),
            };
            let mut up = true;
            for i in 0..count {
                up = up && cluster.spawn(i).await;
            }
            if !up {
                continue; // dropped: the nodes started are killed, the folder removed
            }
            cluster.create(replicas_per_master).await;
            cluster.wait_ok().await;
            return Some(cluster);
        }
        panic!("the Redis Cluster did not start on 3 sets of free ports");
    }

    /// Every node, `127.0.0.1:port`, killed or not: the seeds for a cluster client.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| addr(node.port)).collect()
    }

    /// `redis://127.0.0.1:port` of every node, killed or not.
    pub fn urls(&self) -> Vec<String> {
        self.nodes().into_iter().map(url).collect()
    }

    /// The nodes running now (not killed).
    pub fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| addr(node.port))
            .collect()
    }

    /// The live nodes that say they are a master now (`ROLE`), in port order.
    pub async fn masters(&self) -> Vec<SocketAddr> {
        self.with_role("master").await
    }

    /// The live nodes that say they are a replica now (`ROLE`), in port order.
    pub async fn replicas(&self) -> Vec<SocketAddr> {
        self.with_role("slave").await
    }

    async fn with_role(&self, role: &str) -> Vec<SocketAddr> {
        let mut found = Vec::new();
        for node in self.live() {
            let reply: Option<redis::Value> = query(node, &redis::cmd("ROLE")).await;
            let is = match reply {
                Some(redis::Value::Array(items)) => matches!(
                    items.first(),
                    Some(redis::Value::BulkString(name)) if name == role.as_bytes()
                ),
                _ => false,
            };
            if is {
                found.push(node);
            }
        }
        found
    }

    /// The master that serves `slot` now, as the first live node that answers sees it.
    pub async fn node_for_slot(&self, slot: u16) -> SocketAddr {
        for node in self.live() {
            if let Some(view) = view(node).await {
                return view
                    .owner(slot)
                    .unwrap_or_else(|| panic!("no master serves slot {slot}: {view:?}"));
            }
        }
        panic!("no live node of the cluster answers");
    }

    /// One channel per master: `(name, slot, master)`, each named `{prefix}{i}` for the first
    /// `i` whose sharded channel lands on that master; each is shown on stderr.
    pub async fn one_channel_per_shard(&self, prefix: &str) -> Vec<(String, u16, SocketAddr)> {
        let masters = self.masters().await;
        let mut found: Vec<(String, u16, SocketAddr)> = Vec::new();
        for i in 0.. {
            let name = format!("{prefix}{i}");
            let slot = RedisCluster::slot_of(channel_key(&name));
            let owner = self.node_for_slot(slot).await;
            if !found.iter().any(|(_, _, m)| *m == owner) {
                eprintln!("channel {name}: slot {slot}, on {owner}");
                found.push((name, slot, owner));
            }
            if found.len() == masters.len() {
                break;
            }
        }
        found
    }

    /// The slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the bytes between
    /// the first `{` and the next `}`, if any), modulo 16384, as `CLUSTER KEYSLOT` computes it.
    pub fn slot_of(key: impl AsRef<[u8]>) -> u16 {
        let key = key.as_ref();
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16(hashed) % SLOTS
    }

    /// Kills the node at `addr` (`SIGKILL`: no goodbye) and waits until it is gone; its port,
    /// `nodes.conf` and identity are kept for [`Self::restart`].
    pub fn kill(&mut self, addr: SocketAddr) {
        let node = self.node_mut(addr);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{addr} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the killed node at `addr` again, on the same ports with the same `nodes.conf`, so
    /// that it rejoins as the node it was (a replica, if a replica took over its slots); waits
    /// until it answers `PING`, not until it has rejoined: see [`Self::wait_ok`].
    pub async fn restart(&mut self, addr: SocketAddr) {
        let i = self.index(addr);
        assert!(self.nodes[i].child.is_none(), "{addr} is running");
        assert!(
            self.spawn(i).await,
            "{addr} did not start again (port taken?)"
        );
    }

    /// Moves `slot`, with its keys, to master `to` (a reshard of one slot, as
    /// `redis-cli --cluster reshard` does it: `IMPORTING`/`MIGRATING`, `MIGRATE` of its keys,
    /// then `SETSLOT ... NODE` on every master), and waits until the cluster is settled.
    pub async fn move_slot(&self, slot: u16, to: SocketAddr) {
        let from = self.node_for_slot(slot).await;
        let id = |addr: SocketAddr| async move {
            query::<String>(addr, redis::cmd("CLUSTER").arg("MYID"))
                .await
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let setslot = |state: &'static str, node: String| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
            cmd
        };
        let _: Option<()> = query(to, &setslot("IMPORTING", from_id.clone())).await;
        let _: Option<()> = query(from, &setslot("MIGRATING", to_id.clone())).await;
        loop {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("GETKEYSINSLOT").arg(slot).arg(100);
            let keys: Vec<String> = query(from, &cmd).await.expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg(to.ip().to_string())
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let _: Option<String> = query(from, &migrate).await;
        }
        for master in self.masters().await {
            let _: Option<()> = query(master, &setslot("NODE", to_id.clone())).await;
        }
        self.wait_ok().await;
    }

    /// Waits until the cluster is settled: every live node says `cluster_state:ok`, sees all
    /// 16384 slots served by live masters and the same slot map as the others, flags no live
    /// node as failing, and every live replica's link to its master is up. Panics after
    /// [`SETTLE`] with the last state seen (for instance while a master without a replica is
    /// killed, as its slots are served by no one).
    pub async fn wait_ok(&self) {
        self.wait("the cluster to settle", None).await;
    }

    /// Waits until a replica took over the slots of `old_master` (killed) and the cluster is
    /// settled again ([`Self::wait_ok`]); panics after [`SETTLE`].
    pub async fn wait_failover(&self, old_master: SocketAddr) {
        self.wait(
            &format!("a replica to take over {old_master}"),
            Some(old_master),
        )
        .await;
    }

    async fn wait(&self, what: &str, old_master: Option<SocketAddr>) {
        let start = Instant::now();
        loop {
            let last = match self.settled(old_master).await {
                Ok(()) => return,
                Err(why) => why,
            };
            if start.elapsed() > SETTLE {
                panic!("waited {SETTLE:?} for {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Ok` when settled, else what is not.
    async fn settled(&self, old_master: Option<SocketAddr>) -> Result<(), String> {
        let live = self.live();
        let mut first: Option<(SocketAddr, SlotMap)> = None;
        for &node in &live {
            let view = view(node)
                .await
                .ok_or_else(|| format!("{node} does not answer CLUSTER INFO/NODES"))?;
            if !view.ok {
                return Err(format!("{node} says the cluster is not ok"));
            }
            let map = view.slot_map();
            let covered: usize = map
                .iter()
                .map(|&(from, to, _)| usize::from(to - from) + 1)
                .sum();
            if covered != usize::from(SLOTS) {
                return Err(format!("{node} sees {covered} slots served: {map:?}"));
            }
            if let Some(&(_, _, owner)) = map.iter().find(|(_, _, owner)| !live.contains(owner)) {
                return Err(format!("{node} sees slots served by {owner}, not running"));
            }
            if let Some(old) = old_master {
                if map.iter().any(|&(_, _, owner)| owner == old) {
                    return Err(format!("{node} sees slots still served by {old}"));
                }
            }
            if let Some(flagged) = view
                .nodes
                .iter()
                .find(|line| line.failing && line.addr.is_some_and(|a| live.contains(&a)))
            {
                return Err(format!("{node} flags {flagged:?}"));
            }
            match &first {
                None => first = Some((node, map)),
                Some((other, other_map)) if *other_map != map => {
                    return Err(format!(
                        "{node} sees slots {map:?}, {other} sees {other_map:?}"
                    ));
                }
                Some(_) => {}
            }
            let me = view
                .nodes
                .iter()
                .find(|line| line.myself)
                .ok_or_else(|| format!("{node} has no `myself` line"))?;
            if !me.master {
                let info: String = query(node, redis::cmd("INFO").arg("replication"))
                    .await
                    .ok_or_else(|| format!("{node} does not answer INFO"))?;
                if !info.contains("master_link_status:up") {
                    return Err(format!("{node}'s link to its master is not up"));
                }
            }
        }
        Ok(())
    }

    /// Creates the cluster out of the running nodes: the first `count / (1 + replicas)` are
    /// the masters, as `redis-cli` assigns them.
    async fn create(&self, replicas: usize) {
        let mut command = tokio::process::Command::new("redis-cli");
        command
            .arg("--cluster")
            .arg("create")
            .args(self.nodes().iter().map(ToString::to_string))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(SETTLE, command.output())
            .await
            .unwrap_or_else(|_| panic!("`redis-cli --cluster create` took over {SETTLE:?}"))
            .expect("run redis-cli");
        assert!(
            output.status.success(),
            "`redis-cli --cluster create` failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts node `i` on its ports; `false` if it exited (a port taken).
    async fn spawn(&mut self, i: usize) -> bool {
        let dir = self.dir.clone();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "already running");
        let port = node.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &node.bus_port.to_string()])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-allow-reads-when-down", "yes"])
            // Any replica may take over, however long since it last heard from its master.
            .args(["--cluster-replica-validity-factor", "0"])
            // A replica (re)joining syncs at once, not after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join(format!("redis-{port}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let child = node.child.insert(child);
        let port = node.port;
        let start = Instant::now();
        let up = loop {
            if child.try_wait().ok().flatten().is_some() {
                break false;
            }
            if ping(port).await {
                break true;
            }
            if start.elapsed() > SETTLE {
                panic!("redis-server on port {port} did not answer PING in {SETTLE:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if !up {
            node.child = None;
        }
        up
    }

    fn index(&self, addr: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|node| self::addr(node.port) == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    fn node_mut(&mut self, addr: SocketAddr) -> &mut Node {
        let i = self.index(addr);
        &mut self.nodes[i]
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a Redis Cluster of `masters` masters with `replicas` replicas each (settled), or
/// skips the test: returns from it after a loud message, unless `TOWER_SSE_REQUIRE_REDIS=1`.
#[macro_export]
macro_rules! redis_cluster {
    ($masters:expr, $replicas:expr) => {
        match $crate::redis_cluster::RedisCluster::start($masters, $replicas).await {
            Some(cluster) => cluster,
            None => return,
        }
    };
}
pub use redis_cluster;

/// The sharded pub/sub channel of tower-sse's channel `channel` on a cluster (the library's
/// `redis::cluster` docs: the hash tag is the 64-bit FNV-1a of the name, in hex), to find the
/// shard it lives on: `node_for_slot(RedisCluster::slot_of(channel_key(name)))`.
pub fn channel_key(channel: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("tower-sse:{{{hash:016x}}}:channel:{channel}")
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn url(addr: SocketAddr) -> String {
    format!("redis://{addr}/")
}

/// A plain (not cluster-aware) connection to one node: it answers `MOVED` for the slots it
/// does not serve.
pub async fn connect(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    tokio::time::timeout(
        COMMAND,
        redis::Client::open(url(addr))
            .expect("url")
            .get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {addr} took over {COMMAND:?}"))
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// `cmd` on a new connection to `addr`, bounded in time; `None` if it does not answer or
/// answers an error.
pub async fn query<T: redis::FromRedisValue>(addr: SocketAddr, cmd: &redis::Cmd) -> Option<T> {
    tokio::time::timeout(COMMAND, async {
        let client = redis::Client::open(url(addr)).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async(&mut conn).await.ok()
    })
    .await
    .ok()
    .flatten()
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `n` distinct loopback ports, free when picked (all bound at once, so distinct).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the hash of Redis Cluster.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// What one node says of the cluster: `CLUSTER INFO` and `CLUSTER NODES`.
#[derive(Debug)]
struct View {
    ok: bool,
    nodes: Vec<NodeLine>,
}

/// Slot ranges (first, last) and the master that serves them, sorted.
type SlotMap = Vec<(u16, u16, SocketAddr)>;

/// A line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    addr: Option<SocketAddr>,
    myself: bool,
    master: bool,
    /// `fail` or `fail?`.
    failing: bool,
    slots: Vec<(u16, u16)>,
}

impl View {
    /// Slot ranges and their masters, sorted, as this node sees them.
    fn slot_map(&self) -> SlotMap {
        let mut map: BTreeSet<(u16, u16, SocketAddr)> = BTreeSet::new();
        for line in self.nodes.iter().filter(|line| line.master) {
            if let Some(addr) = line.addr {
                map.extend(line.slots.iter().map(|&(from, to)| (from, to, addr)));
            }
        }
        map.into_iter().collect()
    }

    fn owner(&self, slot: u16) -> Option<SocketAddr> {
        self.slot_map()
            .into_iter()
            .find(|&(from, to, _)| (from..=to).contains(&slot))
            .map(|(_, _, addr)| addr)
    }
}

async fn view(node: SocketAddr) -> Option<View> {
    let info: String = query(node, redis::cmd("CLUSTER").arg("INFO")).await?;
    let nodes: String = query(node, redis::cmd("CLUSTER").arg("NODES")).await?;
    Some(View {
        ok: info.lines().any(|line| line.trim() == "cluster_state:ok"),
        nodes: nodes.lines().filter_map(parse_line).collect(),
    })
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
fn parse_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = fields[1]
        .split(['@', ','])
        .next()
        .and_then(|a| a.parse().ok());
    let flags: Vec<&str> = fields[2].split(',').collect();
    let slots = fields[8..]
        .iter()
        .filter(|slot| !slot.starts_with('[')) // migrating, importing
        .filter_map(|slot| match slot.split_once('-') {
            Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
            None => slot.parse().ok().map(|s| (s, s)),
        })
        .collect();
    Some(NodeLine {
        addr,
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        failing: flags.contains(&"fail") || flags.contains(&"fail?"),
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_of_follows_hash_tags() {
        // Known values (the Redis Cluster specification: CRC16 of "123456789" is 0x31C3).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(RedisCluster::slot_of("foo"), 12182);
        assert_eq!(RedisCluster::slot_of("{user1000}.following"), 3443);
        assert_eq!(
            RedisCluster::slot_of("{user1000}.followers"),
            RedisCluster::slot_of("user1000")
        );
        // An empty tag, or none closed, hashes the whole key.
        assert_eq!(RedisCluster::slot_of("foo{}{bar}"), 8363);
        assert_eq!(RedisCluster::slot_of("foo{"), crc16(b"foo{") % SLOTS);
        assert_eq!(RedisCluster::slot_of("foo{{bar}}zap"), 4015);
    }

    /// The local slot computation agrees with `CLUSTER KEYSLOT`; a key set on its master is
    /// read back there, and another master answers `MOVED`.
    #[tokio::test(flavor = "multi_thread")]
    async fn starts_settled_and_routes_keys() {
        let started = Instant::now();
        let cluster = redis_cluster!(3, 1);
        eprintln!(
            "3 masters, 1 replica each: settled in {:?}",
            started.elapsed()
        );
        assert_eq!(cluster.masters().await.len(), 3);
        assert_eq!(cluster.replicas().await.len(), 3);
        assert_eq!(cluster.urls().len(), 6);
        let any = cluster.nodes()[0];
        for key in [
            "foo",
            "bar",
            "{user1000}.following",
            "foo{}{bar}",
            "a{b}c",
            "",
            "é",
        ] {
            let slot: u16 = query(any, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await
                .expect("CLUSTER KEYSLOT");
            assert_eq!(RedisCluster::slot_of(key), slot, "slot of {key:?}");
        }
        let slot = RedisCluster::slot_of("k");
        let owner = cluster.node_for_slot(slot).await;
        assert!(cluster.masters().await.contains(&owner));
        let mut conn = connect(owner).await;
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
        let got: String = redis::cmd("GET")
            .arg("k")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(got, "v");
        let other = cluster
            .masters()
            .await
            .into_iter()
            .find(|&m| m != owner)
            .unwrap();
        let err = redis::cmd("GET")
            .arg("k")
            .query_async::<String>(&mut connect(other).await)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("MOVED") || err.code() == Some("MOVED"),
            "{err}"
        );
    }

    /// A master killed: its replica takes over its slots with the data; the old master
    /// restarted rejoins as a replica.
    #[tokio::test(flavor = "multi_thread")]
    async fn fails_over_and_takes_the_old_master_back() {
        let mut cluster = redis_cluster!(3, 1);
        let slot = RedisCluster::slot_of("k");
        let old = cluster.node_for_slot(slot).await;
        let mut conn = connect(old).await;
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(acked, 1, "the replica has the key");
        drop(conn);

        cluster.kill(old);
        let killed = Instant::now();
        cluster.wait_failover(old).await;
        eprintln!("failover in {:?}", killed.elapsed());
        let new = cluster.node_for_slot(slot).await;
        assert_ne!(new, old);
        assert_eq!(cluster.masters().await.len(), 3);
        let got: String = redis::cmd("GET")
            .arg("k")
            .query_async(&mut connect(new).await)
            .await
            .unwrap();
        assert_eq!(got, "v");

        let restarted = Instant::now();
        cluster.restart(old).await;
        cluster.wait_ok().await;
        eprintln!("rejoined in {:?}", restarted.elapsed());
        assert!(cluster.replicas().await.contains(&old));
        assert_eq!(cluster.node_for_slot(slot).await, new);
        assert_eq!(cluster.live().len(), 6);
    }
}
