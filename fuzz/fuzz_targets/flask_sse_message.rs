//! Fuzz target `flask_sse_message`: arbitrary bytes as a message on a channel flask-sse
//! publishes to, read as the flask-sse backend reads what comes from Redis
//! (`tower_sse::redis::flask_sse`, feature `redis`). Redis carries whatever anyone `PUBLISH`es,
//! so the reader sees hostile input.
//!
//! What must hold: reading never panics; a message is either dropped with one of the counter's
//! documented reasons, or gives an event the wire format can carry (`Event::to_bytes` is
//! `Ok`); and that event, written back as `Broker::publish` writes it for flask-sse, reads back
//! to the same bytes on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse::redis::flask_sse::fuzzing::{read, write};

/// The `reason` labels of `sse_flask_sse_dropped_total` (the backend's module docs).
const REASONS: [&str; 6] = ["json", "data", "type", "id", "retry", "too_large"];

fuzz_target!(|payload: &[u8]| {
    let event = match read(payload) {
        Ok(event) => event,
        Err(reason) => {
            assert!(REASONS.contains(&reason), "undocumented reason {reason:?}");
            return;
        }
    };
    let wire = event
        .to_bytes()
        .unwrap_or_else(|err| panic!("a message read gave an event it can't send: {err}"));
    let written = write(&event);
    let again = read(&written)
        .unwrap_or_else(|reason| panic!("what was written is dropped ({reason}): {written:?}"));
    let wire_again = again.to_bytes().expect("the same fields");
    assert_eq!(
        wire_again,
        wire,
        "written as {:?}",
        String::from_utf8_lossy(&written)
    );
});
