//! A server in a child process on 127.0.0.1, so that `/proc/<pid>` gives its own memory and
//! CPU: the hub as shipped (its binary, default flags), or any command that prints its address.

#![allow(dead_code)] // each example uses its part

use std::{
    env,
    error::Error,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    time::timeout,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// How long a server may take to start.
const START: Duration = Duration::from_secs(20);

/// The hub's binary, `tower-sse-hub`, where cargo builds binaries: `target/<profile>/`, the
/// parent of this executable's folder (`target/<profile>/examples/`). The one place that
/// knows where the hub is built. `cargo run` of an example does not build it, nor rebuild it
/// after a change.
///
/// # Errors
///
/// It is not there: the error says which command builds it.
pub fn hub_binary() -> Result<PathBuf, BoxError> {
    let exe = env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("this example is not in target/<profile>/examples/")?;
    let hub = profile.join("tower-sse-hub");
    if hub.is_file() {
        return Ok(hub);
    }
    let release = exe.components().any(|part| part.as_os_str() == "release");
    let build = if release {
        "cargo build --release -p tower-sse-hub --bin tower-sse-hub"
    } else {
        "cargo build -p tower-sse-hub --bin tower-sse-hub"
    };
    let hub = hub.display();
    Err(format!("no hub binary at {hub}; build it with the same profile: {build}").into())
}

/// A server child process, killed (SIGKILL to its PID) when dropped.
#[derive(Debug)]
pub struct ChildServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for `/proc/<pid>`.
    pub pid: u32,
    name: &'static str,
    child: Child,
}

impl ChildServer {
    /// The hub as shipped: [`hub_binary`] with its default flags but `--bind` (a free port),
    /// and its default log level (`RUST_LOG` unset). Its logs go nowhere, its errors to our
    /// stderr. Ready once `GET /healthz` answers `200`.
    ///
    /// # Errors
    ///
    /// No hub binary, or the hub exited or did not answer within 20 s.
    pub async fn hub() -> Result<ChildServer, BoxError> {
        ChildServer::hub_with(&[]).await
    }

    /// The hub with `args` added; ready once `GET /healthz` answers `200`, or, when `args`
    /// include `--tls-cert` (HTTPS, which this check doesn't speak), once it accepts a
    /// connection.
    ///
    /// # Errors
    ///
    /// As [`hub`](ChildServer::hub).
    pub async fn hub_with(args: &[&str]) -> Result<ChildServer, BoxError> {
        let binary = hub_binary()?;
        let https = args.contains(&"--tls-cert");
        // The port is free when we look; if another process takes it first, the hub exits
        // ("address in use") and we try another.
        let mut tries = 3;
        loop {
            let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await?
                .local_addr()?;
            let mut command = Command::new(&binary);
            command
                .arg("--bind")
                .arg(addr.to_string())
                .args(args)
                .env_remove("RUST_LOG");
            command.stdout(Stdio::null());
            let mut server = ChildServer::spawn("hub", command, addr)?;
            match server.until_healthy(https).await {
                Ok(()) => return Ok(server),
                Err(err) if tries == 1 => return Err(err),
                Err(_) => tries -= 1,
            }
        }
    }

    /// Runs `command`, which must print the address it listens on as its first line.
    ///
    /// # Errors
    ///
    /// It could not start, or printed no address within 20 s.
    pub async fn printing_addr(
        name: &'static str,
        mut command: Command,
    ) -> Result<ChildServer, BoxError> {
        command.stdout(Stdio::piped());
        let mut server = ChildServer::spawn(name, command, (Ipv4Addr::LOCALHOST, 0).into())?;
        let stdout = server.child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        timeout(START, BufReader::new(stdout).read_line(&mut line)).await??;
        server.addr = line
            .trim()
            .parse()
            .map_err(|_| format!("{name} server printed {line:?}, not an address"))?;
        Ok(server)
    }

    fn spawn(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
    ) -> Result<ChildServer, BoxError> {
        // Killed when dropped; and when this process ends, its end of stdin closes (which ends
        // a server that watches it) and, on Linux, the kernel kills the child.
        command.stdin(Stdio::piped()).kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. The signal comes
        // when the thread that spawned the child ends: a runtime's worker, which lives as long
        // as the runtime.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| format!("{name} server exited at once"))?;
        Ok(ChildServer {
            addr,
            pid,
            name,
            child,
        })
    }

    /// Asks `GET /healthz` until it answers `200` (or, `https`, until it accepts a
    /// connection), for at most 20 s.
    async fn until_healthy(&mut self, https: bool) -> Result<(), BoxError> {
        let deadline = Instant::now() + START;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        loop {
            self.check()?;
            if let Ok(mut stream) = TcpStream::connect(self.addr).await {
                if https {
                    return Ok(());
                }
                let mut answer = Vec::new();
                stream.write_all(request.as_bytes()).await?;
                timeout(START, stream.read_to_end(&mut answer)).await??;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{} on {} not healthy in {START:?}", self.name, self.addr).into(),
                );
            }
            // Nothing to wait on but the process starting up: look again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it was started as: `hub`, or the name given.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Ok` while it runs.
    ///
    /// # Errors
    ///
    /// It exited.
    pub fn check(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            Some(status) => Err(format!("{} server exited: {status}", self.name).into()),
            None => Ok(()),
        }
    }
}
