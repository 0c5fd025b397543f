//! The Python side of `tests/flask_sse.rs`: flask-sse as published on PyPI, in the quickstart
//! app of `tests/flask/`, run by the python of a venv that `.ci/python` makes
//! (`$TOWER_SSE_PYTHON`, default `~/.cache/tower-sse/venv/bin/python`): its `sse.publish()`
//! (`publish.py`), its `sse.messages()` (`consume.py`), and the app under gunicorn with gevent
//! workers, serving flask-sse's own `/stream` and the quickstart page. Without that python the
//! tests say so on stderr and pass, unless `TOWER_SSE_REQUIRE_PYTHON=1`.

#![allow(dead_code)] // each test uses its part

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, Lines};
use tower_sse_test_support::{guard, venv::Venv};

pub const REQUIRE: &str = "TOWER_SSE_REQUIRE_PYTHON";

/// The python of the venv `.ci/python` makes, with `hub/tests/flask/requirements.txt`.
pub struct Python {
    python: PathBuf,
    /// `hub/tests/flask`, where the app and the scripts are.
    dir: PathBuf,
}

impl Python {
    /// The venv's python, or `None` (after saying so, for `test`) when it can't import
    /// flask-sse and gunicorn's gevent worker and `TOWER_SSE_REQUIRE_PYTHON` is not `1`.
    pub fn find(test: &str) -> Option<Python> {
        let venv = Venv {
            var: "TOWER_SSE_PYTHON",
            home_dir: ".cache/tower-sse/venv",
            imports: "import flask_sse, gunicorn.workers.ggevent",
            what: "flask-sse, Flask and gunicorn with gevent",
            install: "bash .ci/python",
            require: REQUIRE,
        };
        let python = venv.python(test)?;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flask");
        Some(Python { python, dir })
    }

    /// The python in `tests/flask`, with the app's `REDIS_URL`, writing no `__pycache__`
    /// into the source tree.
    fn command(&self, redis_url: &str) -> Command {
        let mut command = Command::new(&self.python);
        command
            .current_dir(&self.dir)
            .env("REDIS_URL", redis_url)
            .env_remove("SSE_REDIS_URL")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null());
        command
    }

    /// Calls flask-sse's `sse.publish(**message)` for each message in order, in the app's
    /// context; returns what each returned, the number of Redis subscriptions that got it.
    pub async fn publish(&self, redis_url: &str, messages: &[Value]) -> Vec<u64> {
        let mut command = self.command(redis_url);
        command.arg("publish.py");
        command.args(messages.iter().map(Value::to_string));
        let output = guard(
            "publish.py",
            tokio::process::Command::from(command).output(),
        )
        .await
        .expect("run publish.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "publish.py {messages:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .map(|line| line.parse().expect("a number of receivers"))
            .collect()
    }

    /// A consumer of flask-sse's own `sse.messages(channel)`, which exits after `count`
    /// messages. It has subscribed once `PUBSUB NUMSUB` counts it.
    pub fn consume(&self, redis_url: &str, channel: &str, count: usize) -> Consumer {
        let mut command = tokio::process::Command::from(self.command(redis_url));
        let mut child = command
            .args(["consume.py", channel, &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start consume.py");
        let stdout = child.stdout.take().unwrap();
        Consumer {
            lines: tokio::io::BufReader::new(stdout).lines(),
            _child: child,
        }
    }

    /// The quickstart app (`tests/flask/app.py`) under gunicorn with one gevent worker, as
    /// flask-sse says to run it, on a free port.
    pub async fn gunicorn(&self, redis_url: &str) -> Gunicorn {
        let mut command = self.command(redis_url);
        command
            .args(["-m", "gunicorn", "app:app", "--worker-class", "gevent"])
            .args(["--workers", "1", "--bind", "127.0.0.1:0"])
            // Its default control socket is one path for every gunicorn of the user.
            .arg("--no-control-socket")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The worker goes with the master: killed as a group on drop.
            .process_group(0);
        let mut child = command.spawn().expect("start gunicorn");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (found, address) = tokio::sync::oneshot::channel();
        let tail = log.clone();
        // Read to the end, so that a full pipe never stalls it.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap();
                tail.push_str(&line);
                tail.push('\n');
                // `[INFO] Listening at: http://127.0.0.1:PORT (PID)`
                let url = line
                    .split_once("Listening at: ")
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                if let Some(url) = url {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.to_owned());
                    }
                }
            }
        });
        let mut gunicorn = Gunicorn {
            child,
            url: String::new(),
            log,
        };
        match guard("gunicorn logs its address or exits", address).await {
            Ok(url) => gunicorn.url = url,
            Err(_) => panic!("gunicorn exited:\n{}", gunicorn.log()),
        }
        gunicorn
    }
}

/// A consumer of `sse.messages()` (`consume.py`), killed on drop.
pub struct Consumer {
    lines: Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Consumer {
    /// The next message, as `{"data", "type", "id", "retry", "text"}`: flask-sse's `Message`,
    /// and `str(message)`, what its `/stream` sends.
    pub async fn next(&mut self) -> Value {
        let line = guard("a message from sse.messages()", self.lines.next_line())
            .await
            .expect("read consume.py")
            .expect("consume.py ended (its error is above)");
        serde_json::from_str(&line).expect("a line of JSON")
    }
}

/// The quickstart app under gunicorn, master and worker killed on drop.
pub struct Gunicorn {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Gunicorn {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `http://127.0.0.1:PORT`, the app's origin.
    pub fn origin(&self) -> &str {
        &self.url
    }

    /// What gunicorn logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let group = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: `kill` has no memory effects; the group is the one `process_group(0)` made
        // for our child, not yet reaped.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
