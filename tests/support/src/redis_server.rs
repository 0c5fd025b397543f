//! A private `redis-server` child process on a free loopback port, without persistence, killed
//! on drop, that a test can kill, restart empty, or lock with a password; and [`Stopped`], a
//! server paused with `SIGSTOP`. For every test file that needs Redis (`tests/redis.rs`,
//! `tests/redis_faults.rs`, `tests/trust.rs`, through `#[path]`). Without
//! `redis-server` on PATH the tests say so on stderr and pass, unless
//! `TOWER_SSE_REQUIRE_REDIS=1`.

#![allow(dead_code)] // each test uses its part

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::guard;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub const REQUIRE: &str = "TOWER_SSE_REQUIRE_REDIS";

/// A private `redis-server` child process, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// `None` (after a loud message) when `redis-server` is not installed.
    pub async fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var(REQUIRE).as_deref() == Ok("1") {
                panic!("{REQUIRE}=1 but `redis-server` is not on PATH: install redis-server");
            }
            // Straight to the file descriptor: the test harness captures `eprintln!`.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "\n**********\n** SKIPPED: `redis-server` is not on PATH, so this Redis \
                     test did not run.\n** Install redis-server, or set {REQUIRE}=1 to make \
                     this an error.\n**********\n"
                )
                .as_bytes(),
            );
            return None;
        }
        // The port is free when picked, but something else may take it before the server
        // binds: then try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let mut server = RedisServer { port, child: None };
            if server.spawn(&[]).await {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the server on `self.port`; `false` if it exited (port taken).
    async fn spawn(&mut self, extra: &[&str]) -> bool {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let child = self.child.insert(child);
        let port = self.port;
        let up = guard("redis-server answers PING", async {
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                if ping(port).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if !up {
            self.child = None;
        }
        up
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port: empty, as there is no persistence.
    pub async fn restart(&mut self, extra: &[&str]) {
        assert!(self.spawn(extra).await, "port {} was taken", self.port);
    }

    /// Kills the server and starts it again empty and with a password, so that instances
    /// connected to [`Self::url`] can't resubscribe until [`Self::unlock`]. Returns a URL with
    /// the password.
    pub async fn restart_locked(&mut self) -> String {
        self.kill();
        self.restart(&["--requirepass", "pw"]).await;
        format!("redis://:pw@127.0.0.1:{}/", self.port)
    }

    pub async fn unlock(&self, locked: &str) {
        let mut conn = self.admin(locked).await;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("")
            .query_async(&mut conn)
            .await
            .expect("CONFIG SET requirepass");
    }

    pub async fn admin(&self, url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a server answers on `port` (`-NOAUTH` counts: it is up, with a password).
pub async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0; 64];
    match stream.read(&mut buf).await {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// Starts a server, or skips the test.
#[macro_export]
macro_rules! redis_server {
    () => {
        match $crate::redis_server::RedisServer::start().await {
            Some(server) => server,
            None => return,
        }
    };
}
pub use redis_server;

/// A process stopped with `SIGSTOP`, as a partition or a stuck node would leave a server (TCP
/// up, nothing answers); continued with `SIGCONT` on drop (also when the test fails), so that
/// its owner can kill it.
pub struct Stopped(u32);

impl Stopped {
    /// Stops `pid` and waits until the kernel reports it stopped.
    pub async fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        let stopped = Stopped(pid);
        guard("the process is stopped", async {
            while !is_stopped(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: `kill` has no memory effects; the pid is our own child's, not yet reaped.
    let done = unsafe { libc::kill(pid, signal) };
    assert_eq!(done, 0, "kill({pid}, {signal})");
}

/// State `T` (stopped) in `/proc/PID/stat`: the field after the parenthesised name.
fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_some_and(|state| state.starts_with('T'))
}
