//! Issue 19: a real Mercure client publishes to the hub as shipped (the binary, `--jwt-key`),
//! and subscribers of `/.well-known/mercure` get the update. The client is mercure-publisher
//! from PyPI (`tests/mercure/requirements.txt`, pinned): its `MercurePublisher.publish()`
//! (`tests/mercure/publish.py`) mints its own HS256 publisher token (`mercure.publish` set to
//! the topics it is configured with) and POSTs the form (`topic`, `data`, `private=on`, `id`,
//! `type`, `retry`) with `Authorization: Bearer`; subscribers read the streams as `EventSource`
//! would, on an exact topic and on a URI template, with a subscriber token for private updates.
//! A real subscriber too: pymercure's `Consumer` from PyPI (`tests/mercure/subscribe.py`), on a
//! topic and a template that both match, gets each update once.
//!
//! Needs the venv of `bash .ci/python mercure` (`TOWER_SSE_MERCURE_PYTHON`, default
//! `~/.cache/tower-sse/mercure-venv/bin/python`); without it, each test says so on stderr and
//! passes, unless `TOWER_SSE_REQUIRE_MERCURE=1`.

#[path = "support/hub_process.rs"]
mod hub_process;
#[path = "support/tokens.rs"]
mod tokens;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use hub_process::HubProcess;
use serde_json::{Value, json};
use tokens::{KEY, hs256, now};
use tokio::{
    io::{AsyncBufReadExt, Lines},
    process::{Child, ChildStdout},
};
use tower_sse_test_support::{events::Events, guard, venv::Venv};

const REQUIRE: &str = "TOWER_SSE_REQUIRE_MERCURE";
const BOOK: &str = "https://example.com/books/1";
const BOOKS: &str = "https://example.com/books/{id}";
const AUTHOR: &str = "https://example.com/authors/1";

/// The python of the venv `.ci/python mercure` makes, with `tests/mercure/requirements.txt`.
struct Client {
    python: PathBuf,
}

impl Client {
    /// The venv's python, or `None` (after saying so, for `test`) when it can't import
    /// mercure-publisher and pymercure and `TOWER_SSE_REQUIRE_MERCURE` is not `1`.
    fn find(test: &str) -> Option<Client> {
        let venv = Venv {
            var: "TOWER_SSE_MERCURE_PYTHON",
            home_dir: ".cache/tower-sse/mercure-venv",
            imports: "import mercure_publisher, pymercure.consumer",
            what: "mercure-publisher and pymercure",
            install: "bash .ci/python mercure",
            require: REQUIRE,
        };
        let python = venv.python(test)?;
        Some(Client { python })
    }

    /// The venv's python in `tests/mercure`, writing no `__pycache__` into the source tree.
    fn command(&self) -> tokio::process::Command {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mercure");
        let mut command = tokio::process::Command::new(&self.python);
        command
            .current_dir(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            // httpx and requests would take a proxy from these; the hub is on loopback.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// pymercure's `Consumer` on `topics`, which exits after `count` updates; it has
    /// subscribed once this returns (the hub has answered it).
    async fn consume(&self, hub: &HubProcess, topics: &[&str], count: usize) -> Consumer {
        let mut child = self
            .command()
            .arg("subscribe.py")
            .arg(hub.url("/.well-known/mercure"))
            .arg(count.to_string())
            .args(topics)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start subscribe.py");
        let stdout = child.stdout.take().unwrap();
        let mut consumer = Consumer {
            lines: tokio::io::BufReader::new(stdout).lines(),
            child,
        };
        assert_eq!(
            consumer.next().await,
            Some(json!({"ready": true})),
            "subscribe.py subscribed"
        );
        consumer
    }

    /// Publishes `updates` in order with one `MercurePublisher` configured with the hub's URL,
    /// `key` and `publish_topics`; returns what the client reported for each: `{"id": ...}`,
    /// the hub's answer, or `{"status": ..., "body": ...}` when it raised MercurePublishError.
    async fn publish(
        &self,
        hub: &HubProcess,
        key: &str,
        publish_topics: &[&str],
        updates: &[Value],
    ) -> Vec<Value> {
        let config = json!({
            "hub_url": hub.url("/.well-known/mercure"),
            "key": key,
            "publish_topics": publish_topics,
        });
        let mut command = self.command();
        command
            .arg("publish.py")
            .arg(config.to_string())
            .args(updates.iter().map(Value::to_string));
        let output = guard("publish.py", command.output())
            .await
            .expect("run publish.py");
        assert!(
            output.status.success(),
            "publish.py {updates:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let answers: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(answers.len(), updates.len(), "one answer per update");
        answers
    }
}

/// pymercure's `Consumer` in `subscribe.py`, killed on drop.
struct Consumer {
    lines: Lines<tokio::io::BufReader<ChildStdout>>,
    child: Child,
}

impl Consumer {
    /// The next line it printed, as JSON; `None` once it has exited.
    async fn next(&mut self) -> Option<Value> {
        let line = guard("a line from subscribe.py", self.lines.next_line()).await;
        let line = line.expect("read subscribe.py's output")?;
        Some(serde_json::from_str(&line).expect("a JSON line"))
    }

    /// Waits for it to exit, as it does after its count of updates; checks it succeeded.
    async fn exited(mut self) {
        assert_eq!(self.next().await, None, "nothing more from subscribe.py");
        let status = guard("subscribe.py exits", self.child.wait()).await;
        assert!(
            status.expect("wait for subscribe.py").success(),
            "subscribe.py failed"
        );
    }
}

/// A subscriber token (HS256, signed with `KEY`) for `selectors`, for an hour.
fn subscriber_token(selectors: &[&str]) -> String {
    hs256(
        KEY,
        &json!({"mercure": {"subscribe": selectors}, "exp": now() + 3600}),
    )
}

/// `GET /.well-known/mercure?topic=...` for each of `topics`, with `token` as the bearer if
/// given. The response has come, so the subscription exists.
async fn subscribe(hub: &HubProcess, topics: &[&str], token: Option<&str>) -> Events {
    let query: Vec<(&str, &str)> = topics.iter().map(|topic| ("topic", *topic)).collect();
    let mut request = hub
        .client
        .get(hub.url("/.well-known/mercure"))
        .query(&query);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Events::open(request).await
}

/// The id the client reported for an update the hub took.
fn id(answer: &Value) -> &str {
    answer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the hub refused the client's update: {answer}"))
}

/// Reads the next event of `events` and checks it is the update: `data`, `id`, `type`
/// (`message` when none was given) and `retry`.
async fn expect_update(
    events: &mut Events,
    who: &str,
    data: &str,
    id: &str,
    kind: &str,
    retry: Option<Duration>,
) {
    let event = events.expect().await;
    assert_eq!(
        (
            event.data.as_str(),
            event.id.as_str(),
            event.event.as_str(),
            event.retry
        ),
        (data, id, kind, retry),
        "{who}"
    );
}

/// mercure-publisher publishes an update to two topics with its own id, event type and
/// retry, then one with no id (the hub's `urn:uuid:` is what `publish()` returns), with JSON
/// and multi-line data: subscribers of the exact topic and of a URI template that matches get
/// each once, exactly as sent; a subscriber of another topic gets neither (its first event is
/// the update published to it after them).
#[tokio::test]
async fn mercure_publisher_updates_reach_subscribers() {
    let Some(client) = Client::find("mercure_publisher_updates_reach_subscribers") else {
        return;
    };
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut exact = subscribe(&hub, &[BOOK], None).await;
    let mut template = subscribe(&hub, &[BOOKS], None).await;
    let mut other = subscribe(&hub, &[AUTHOR], None).await;

    let updates = [
        json!({
            "topic": [BOOK, "https://example.com/catalog"],
            "data": {"stock": 3, "title": "Dune"},
            "id": "book-1-v2",
            "type": "book.updated",
            "retry": 2500,
        }),
        json!({"topic": BOOK, "data": "line one\nline two\n\nafter a blank line"}),
        json!({"topic": AUTHOR, "data": "author"}),
    ];
    let answers = client.publish(&hub, KEY, &["*"], &updates).await;
    assert_eq!(id(&answers[0]), "book-1-v2", "the hub answers the given id");
    let uuid = id(&answers[1]);
    assert!(uuid.starts_with("urn:uuid:"), "{uuid}");

    // The client serializes a dict with json.dumps(), keys in the order given (serde_json
    // passes them sorted).
    let json = r#"{"stock": 3, "title": "Dune"}"#;
    let retry = Some(Duration::from_millis(2500));
    for (who, events) in [("exact", &mut exact), ("template", &mut template)] {
        expect_update(events, who, json, "book-1-v2", "book.updated", retry).await;
        let data = "line one\nline two\n\nafter a blank line";
        expect_update(events, who, data, uuid, "message", None).await;
    }
    let author = id(&answers[2]);
    expect_update(&mut other, "other topic", "author", author, "message", None).await;
}

/// A private update from mercure-publisher (`private=on`) reaches a subscriber whose token's
/// `mercure.subscribe` matches the topic, on the topic or a template, and not an anonymous
/// subscriber of the same topic: its first event is the public update published after.
#[tokio::test]
async fn mercure_publisher_private_updates() {
    let Some(client) = Client::find("mercure_publisher_private_updates") else {
        return;
    };
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let token = subscriber_token(&[BOOKS]);
    let mut allowed = subscribe(&hub, &[BOOK], Some(&token)).await;
    let mut allowed_template = subscribe(&hub, &[BOOKS], Some(&token)).await;
    let mut anonymous = subscribe(&hub, &[BOOK], None).await;
    let other_token = subscriber_token(&[AUTHOR]);
    let mut not_allowed = subscribe(&hub, &[BOOK], Some(&other_token)).await;

    let updates = [
        json!({"topic": BOOK, "data": "secret", "private": true, "id": "private-1"}),
        json!({"topic": BOOK, "data": "public", "id": "public-1"}),
    ];
    let answers = client.publish(&hub, KEY, &[BOOKS], &updates).await;
    assert_eq!(id(&answers[0]), "private-1");
    assert_eq!(id(&answers[1]), "public-1");

    for (who, events) in [
        ("allowed", &mut allowed),
        ("allowed, on the template", &mut allowed_template),
    ] {
        expect_update(events, who, "secret", "private-1", "message", None).await;
        expect_update(events, who, "public", "public-1", "message", None).await;
    }
    for (who, events) in [
        ("anonymous", &mut anonymous),
        ("a token for other topics", &mut not_allowed),
    ] {
        expect_update(events, who, "public", "public-1", "message", None).await;
    }
}

/// The hub's refusals, as the client reports them: a token whose `mercure.publish` selectors
/// don't match the topic is a 403, one signed with another key a 401, and subscribers get
/// neither update.
#[tokio::test]
async fn mercure_publisher_refused() {
    let Some(client) = Client::find("mercure_publisher_refused") else {
        return;
    };
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut events = subscribe(&hub, &[BOOK], None).await;

    let update = [json!({"topic": BOOK, "data": "refused"})];
    let answers = client.publish(&hub, KEY, &[AUTHOR], &update).await;
    assert_eq!(answers[0]["status"], 403, "{}", answers[0]);
    let answers = client
        .publish(&hub, "another key, not the hub's: 401", &["*"], &update)
        .await;
    assert_eq!(answers[0]["status"], 401, "{}", answers[0]);

    let update = [json!({"topic": BOOK, "data": "taken"})];
    let answers = client.publish(&hub, KEY, &[BOOK], &update).await;
    let taken = id(&answers[0]);
    expect_update(&mut events, "subscriber", "taken", taken, "message", None).await;
}

/// pymercure's `Consumer`, a real Mercure subscriber, on a topic and a URI template that both
/// match the updates mercure-publisher publishes: its callback gets each once, with its data,
/// id and type, and nothing from another topic.
#[tokio::test]
async fn pymercure_consumer_gets_the_updates() {
    let Some(client) = Client::find("pymercure_consumer_gets_the_updates") else {
        return;
    };
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let mut consumer = client.consume(&hub, &[BOOK, BOOKS], 3).await;
    let updates = [
        json!({"topic": BOOK, "data": "first", "id": "book-1-v1", "type": "book.updated"}),
        json!({"topic": AUTHOR, "data": "not for the consumer"}),
        json!({"topic": "https://example.com/books/2", "data": "second"}),
        json!({"topic": BOOK, "data": "line one\nline two"}),
    ];
    let answers = client.publish(&hub, KEY, &["*"], &updates).await;
    let expected = [
        json!({"data": "first", "id": "book-1-v1", "type": "book.updated"}),
        json!({"data": "second", "id": id(&answers[2]), "type": "message"}),
        json!({"data": "line one\nline two", "id": id(&answers[3]), "type": "message"}),
    ];
    for update in expected {
        assert_eq!(consumer.next().await, Some(update), "pymercure's Consumer");
    }
    consumer.exited().await;
}
