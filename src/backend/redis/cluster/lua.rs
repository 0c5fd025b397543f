//! [`Lua`]: a script run on the master that owns its keys ([`Nodes::query`]), `EVALSHA`
//! first and `EVAL` on `NOSCRIPT`.
//!
//! Not the redis crate's `Script::invoke_async`: after a `NOSCRIPT` (a node that never ran the
//! script, restarted, or a replica just promoted) it sends `SCRIPT LOAD`, which a cluster
//! connection sends to every master, so with one master down it fails on all the others: the
//! first publish on a healthy shard failed while another master was down. `EVAL` goes by the
//! script's keys, to one shard, and caches the script there as `SCRIPT LOAD` would.

use redis::{ErrorKind, FromRedisValue, RedisResult, ToRedisArgs};

use super::nodes::Nodes;

/// A Lua script and its SHA1.
#[derive(Debug)]
pub(super) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    pub(super) fn new(code: &'static str) -> Lua {
        let hash = redis::Script::new(code).get_hash().to_owned();
        Lua { code, hash }
    }

    /// A call, starting with its first key.
    pub(super) fn key(&self, key: impl ToRedisArgs) -> Call<'_> {
        let mut call = Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        };
        call.key(key);
        call
    }
}

/// One call of a [`Lua`] script: its keys and arguments.
pub(super) struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs it on the master of `channel`, whose keys these are: `EVALSHA`, then `EVAL` if
    /// the node has not the script.
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        nodes: &Nodes,
        channel: &str,
    ) -> RedisResult<T> {
        let evalsha = self.command("EVALSHA", &self.lua.hash);
        match nodes.query(channel, &evalsha).await {
            Err(err) if err.kind() == ErrorKind::NoScriptError => {
                nodes
                    .query(channel, &self.command("EVAL", self.lua.code))
                    .await
            }
            done => done,
        }
    }
}
