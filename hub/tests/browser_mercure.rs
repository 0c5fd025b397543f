//! The hub's Mercure protocol (`/.well-known/mercure`) in a real browser: pages on the hub's
//! own origin (the binary as shipped, in a child process, with `--jwt-key`) open Chromium's
//! `EventSource`s with topic selectors and publish with `fetch` and a publisher JWT in the
//! `Authorization` header. It shows that:
//!
//! - a URI-template selector (`https://example.com/books/{id}`) gets the update on
//!   `https://example.com/books/1` and not the one on `https://example.com/books/1/reviews`;
//! - an update with an alternate topic reaches a subscriber of the alternate, and a subscriber
//!   of both its topics once;
//! - a private update reaches the `EventSource` of a page whose `mercureAuthorization` cookie
//!   holds a subscriber JWT for its topic, and not an anonymous one (another browser, no
//!   cookie) subscribed to the same topic, which still gets the public update after it;
//! - a selector that matches nothing published gets nothing;
//! - data with an empty line (`"a\n\nb"`) arrives intact.
//!
//! Every stream also subscribes to a last topic, `https://example.com/end`, published last:
//! a stream's events arrive in publish order, so once each has its `end`, what it got is all
//! it will ever get of the others, and the test compares it whole, without sleeping.
//!
//! Those pages are the hub's own origin (`/healthz`, then scripts), so no CORS is involved.
//! The streams are split over two browsers (sessions with profiles of their own), so neither
//! opens more than Chromium's 6 HTTP/1.1 connections per origin.
//!
//! A second test puts the pages on other origins, served by the test, with the token in the
//! cookie alone: a page of a `--cors-origin` origin subscribes and publishes with credentials;
//! the hub refuses the cookie's publish from an origin not listed.
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`); without them the tests say so on stderr and pass, unless
//! `TOWER_SSE_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes them fail.

use tower_sse_test_support::chromium;
#[path = "support/hub_process.rs"]
mod hub_process;
#[path = "support/tokens.rs"]
mod tokens;
use tower_sse_test_support as support;

use std::future::IntoFuture;

use axum::{Router, response::Html, routing::get};
use chromium::{Chromedriver, browser_tools, open_browser};
use fantoccini::Client as Browser;
use hub_process::HubProcess;
use serde_json::{Value, json};
use support::guard;
use tokens::{KEY, hs256, now};
use tokio::net::TcpListener;

const BOOKS: &str = "https://example.com/books/{id}";
const BOOK_1: &str = "https://example.com/books/1";
const BOOK_2: &str = "https://example.com/books/2";
const REVIEWS: &str = "https://example.com/books/1/reviews";
const CANONICAL: &str = "https://example.com/a";
const ALIAS: &str = "https://example.com/alias";
const SECRET: &str = "https://example.com/secret";
const NOTHING: &str = "https://example.com/nothing";
/// Published last, subscribed by every stream: its arrival closes each stream's record.
const END: &str = "https://example.com/end";
const CHAT: &str = "https://example.com/chat";

/// An HS256 token, signed with [`KEY`], with the `mercure` claim `mercure` for an hour.
fn token(mercure: Value) -> String {
    hs256(KEY, &json!({"mercure": mercure, "exp": now() + 3600}))
}

/// Opens one `EventSource` per `[name, topics]` to `{hub}/.well-known/mercure?topic=...`
/// (`hub` empty: the page's origin; else with credentials), recording in `window.state`
/// which opened, which failed, and the data each got.
const OPEN: &str = r#"
    const [hub, sources, done] = arguments;
    window.state = window.state || { opened: {}, errors: {}, got: {} };
    for (const [name, topics] of sources) {
        window.state.got[name] = [];
        const query = new URLSearchParams(topics.map((topic) => ["topic", topic]));
        const source = new EventSource(hub + "/.well-known/mercure?" + query, {
            withCredentials: hub !== "",
        });
        source.onopen = () => { window.state.opened[name] = true; };
        source.onmessage = (event) => { window.state.got[name].push(event.data); };
        source.onerror = () => {
            window.state.errors[name] = (window.state.errors[name] || 0) + 1;
        };
    }
    done(null);
"#;

/// Waits, in the page, until every source named is open, or one failed; answers the state.
/// The script timeout (30 s) is the hang guard.
const UNTIL_OPEN: &str = r#"
    const [names, done] = arguments;
    const timer = setInterval(() => {
        const state = window.state;
        const failed = Object.keys(state.errors).length > 0;
        if (failed || names.every((name) => state.opened[name])) {
            clearInterval(timer);
            done(state);
        }
    }, 20);
"#;

/// Waits, in the page, until every source named got `last` as its latest data, or one
/// failed; answers the state. The script timeout (30 s) is the hang guard.
const UNTIL_LAST: &str = r#"
    const [names, last, done] = arguments;
    const timer = setInterval(() => {
        const state = window.state;
        const failed = Object.keys(state.errors).length > 0;
        const ended = (name) => state.got[name].length > 0
            && state.got[name][state.got[name].length - 1] === last;
        if (failed || names.every(ended)) {
            clearInterval(timer);
            done(state);
        }
    }, 20);
"#;

/// `POST {hub}/.well-known/mercure` from the page with `fetch`: the form `fields` (`[key,
/// value]` pairs), with the publisher token in the header, or (`token` null) with credentials,
/// the cookie's; answers the status, type and body, or how the browser refused.
const PUBLISH: &str = r#"
    const [hub, token, fields, done] = arguments;
    const headers = { "Content-Type": "application/x-www-form-urlencoded" };
    if (token !== null) headers["Authorization"] = "Bearer " + token;
    fetch(hub + "/.well-known/mercure", {
        method: "POST",
        credentials: "include",
        headers,
        body: new URLSearchParams(fields),
    })
        .then(async (res) => done({
            status: res.status,
            type: res.headers.get("content-type"),
            body: await res.text(),
        }))
        .catch((err) => done({ rejected: err.name }));
"#;

/// Opens the `sources` (`(name, topics)`) of `hub` (empty: the page's origin) in the page
/// and waits until they all are open.
async fn open(browser: &Browser, hub: &str, sources: &[(&str, &[&str])]) {
    let opened = browser.execute_async(OPEN, vec![json!(hub), json!(sources)]);
    guard("open the EventSources", opened).await.unwrap();
    let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
    let state = browser.execute_async(UNTIL_OPEN, vec![json!(names)]);
    let state = guard("the EventSources open", state)
        .await
        .unwrap_or_else(|err| panic!("waiting for {names:?} to open: {err}"));
    assert_eq!(state["errors"], json!({}), "{state}");
}

/// Waits until every source of the page got `last`; answers what each got.
async fn until_last(browser: &Browser, names: &[&str], last: &str) -> Value {
    let state = browser.execute_async(UNTIL_LAST, vec![json!(names), json!(last)]);
    let state = guard("the last update", state)
        .await
        .unwrap_or_else(|err| panic!("waiting for {last:?} in {names:?}: {err}"));
    assert_eq!(state["errors"], json!({}), "{state}");
    state["got"].clone()
}

/// Publishes the update `fields` with `id` to `hub` (empty: the page's origin) from the page,
/// authorized by `publisher` in the header, else by the cookie; answers what the page saw.
async fn try_publish(
    browser: &Browser,
    hub: &str,
    publisher: Option<&str>,
    id: &str,
    fields: &[(&str, &str)],
) -> Value {
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("id", id));
    let args = vec![json!(hub), json!(publisher), json!(form)];
    guard("publish", browser.execute_async(PUBLISH, args))
        .await
        .unwrap()
}

/// As [`try_publish`], and asserts the hub's answer: `200`, `text/plain`, the id.
async fn publish(
    browser: &Browser,
    hub: &str,
    publisher: Option<&str>,
    id: &str,
    fields: &[(&str, &str)],
) {
    let answer = try_publish(browser, hub, publisher, id, fields).await;
    assert_eq!(answer["status"], 200, "{fields:?}: {answer}");
    let kind = answer["type"].as_str().unwrap_or_default();
    assert!(kind.starts_with("text/plain"), "{fields:?}: {answer}");
    assert_eq!(answer["body"], id, "{fields:?}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sources_get_the_mercure_updates_their_selectors_and_token_allow() {
    let Some(chromedriver) = browser_tools("tests/browser_mercure.rs") else {
        return;
    };
    let hub = HubProcess::start(&["--jwt-key", KEY]).await;
    let driver = Chromedriver::start(&chromedriver).await;
    let home = format!("http://{}/healthz", hub.addr());

    // The anonymous browser: no cookie, ever.
    let anonymous = open_browser(&driver).await;
    guard("page load", anonymous.goto(&home)).await.unwrap();
    let streams: &[(&str, &[&str])] = &[
        ("template", &[BOOKS, END]),
        ("alias", &[ALIAS, END]),
        ("both", &[CANONICAL, ALIAS, END]),
        ("anonymous", &[SECRET, END]),
        ("unmatched", &[NOTHING, END]),
    ];
    open(&anonymous, "", streams).await;

    // The subscriber's browser: its cookie holds a token that may read `SECRET`'s private
    // updates, set on the hub's origin before its stream opens. It publishes too, with a
    // publisher token in the header (which the hub reads before the cookie).
    let subscriber = open_browser(&driver).await;
    guard("page load", subscriber.goto(&home)).await.unwrap();
    set_cookie(&subscriber, &token(json!({"subscribe": [SECRET]}))).await;
    open(&subscriber, "", &[("private", &[SECRET, END])]).await;

    let publisher = token(json!({"publish": ["*"]}));
    let updates: &[(&str, &[(&str, &str)])] = &[
        ("book-1", &[("topic", BOOK_1), ("data", "book 1")]),
        ("reviews", &[("topic", REVIEWS), ("data", "reviews of 1")]),
        (
            "aliased",
            &[("topic", CANONICAL), ("topic", ALIAS), ("data", "aliased")],
        ),
        (
            "secret",
            &[("topic", SECRET), ("data", "private"), ("private", "on")],
        ),
        ("public", &[("topic", SECRET), ("data", "public")]),
        ("book-2", &[("topic", BOOK_2), ("data", "a\n\nb")]),
        ("end", &[("topic", END), ("data", "end")]),
    ];
    for (id, fields) in updates {
        publish(&subscriber, "", Some(&publisher), id, fields).await;
    }

    let names: Vec<&str> = streams.iter().map(|(name, _)| *name).collect();
    let got = until_last(&anonymous, &names, "end").await;
    let expected = json!({
        // `{id}` matches `1` and `2`, not `1/reviews` (a `/` is not in a simple expansion).
        "template": ["book 1", "a\n\nb", "end"],
        // The alternate topic alone, and both topics: the update once.
        "alias": ["aliased", "end"],
        "both": ["aliased", "end"],
        // No token: the public update of the topic, not the private one before it.
        "anonymous": ["public", "end"],
        // Nothing published matched, though all the rest arrived before `end`.
        "unmatched": ["end"],
    });
    assert_eq!(got, expected);
    let got = until_last(&subscriber, &["private"], "end").await;
    assert_eq!(got, json!({"private": ["private", "public", "end"]}));

    guard("close the browser", anonymous.close()).await.unwrap();
    guard("close the browser", subscriber.close())
        .await
        .unwrap();
    drop(driver);
}

/// A page of our own on a free loopback port, in a task of its own; its origin.
async fn page_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>page</title>") }),
    );
    tokio::spawn(axum::serve(listener, page).into_future());
    format!("http://127.0.0.1:{port}")
}

/// Sets the `mercureAuthorization` cookie to `token` on the page's host, `path=/`.
async fn set_cookie(browser: &Browser, token: &str) {
    let script = format!(
        "document.cookie = 'mercureAuthorization={token}; path=/'; return document.cookie;"
    );
    let set = guard("set the cookie", browser.execute(&script, vec![]))
        .await
        .unwrap();
    assert!(
        set.as_str().unwrap().contains("mercureAuthorization="),
        "{set}"
    );
}

/// Pages on other origins than the hub's, with the token in the `mercureAuthorization`
/// cookie alone: a page of a `--cors-origin` origin subscribes to a private topic and
/// publishes to it, and gets its update; a page of an origin not listed publishes with the
/// same cookie, and the hub refuses it. Its `fetch` is a form `POST` without a header of its
/// own, which the browser sends without asking first (no preflight): the refusal is the
/// hub's, seen in the listed page's stream, which gets the listed page's update alone.
///
/// Cookies do not tell ports apart: set by a page on `127.0.0.1:A`, the cookie goes to the
/// hub on `127.0.0.1:B` too, and the two are the same site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_publishes_from_a_listed_origin_only() {
    let Some(chromedriver) = browser_tools("tests/browser_mercure.rs") else {
        return;
    };
    let (listed, other) = (page_origin().await, page_origin().await);
    let hub = HubProcess::start(&["--jwt-key", KEY, "--cors-origin", &listed]).await;
    let base = hub.url("");
    let driver = Chromedriver::start(&chromedriver).await;
    let cookie = token(json!({"publish": [CHAT], "subscribe": [CHAT]}));

    let on_listed = open_browser(&driver).await;
    guard("page load", on_listed.goto(&format!("{listed}/")))
        .await
        .unwrap();
    set_cookie(&on_listed, &cookie).await;
    open(&on_listed, &base, &[("chat", &[CHAT])]).await;

    let on_other = open_browser(&driver).await;
    guard("page load", on_other.goto(&format!("{other}/")))
        .await
        .unwrap();
    set_cookie(&on_other, &cookie).await;
    let private = [("topic", CHAT), ("private", "on")];
    let fields = [&private[..], &[("data", "from the other origin")]].concat();
    let refused = try_publish(&on_other, &base, None, "other", &fields).await;
    // No `Access-Control-Allow-Origin` for it: the page may not read the answer.
    assert_eq!(refused, json!({"rejected": "TypeError"}));

    let fields = [&private[..], &[("data", "from the listed origin")]].concat();
    publish(&on_listed, &base, None, "listed", &fields).await;
    let got = until_last(&on_listed, &["chat"], "from the listed origin").await;
    assert_eq!(
        got,
        json!({"chat": ["from the listed origin"]}),
        "hub's log:\n{}",
        hub.stdout()
    );

    guard("close the browser", on_listed.close()).await.unwrap();
    guard("close the browser", on_other.close()).await.unwrap();
    drop(driver);
}
