//! Fuzz target `redis_message`: arbitrary bytes as a message of tower-sse's own Redis format
//! (`{seq}\n{g|a}{id}\n{head}`), read as both Redis backends read what comes from a pub/sub
//! channel, a history or a replay (`tower_sse::redis`, feature `redis`; the cluster backend
//! reads the same format). Anyone who can `PUBLISH` or `SPUBLISH` to the channels can send
//! anything, so the reader sees hostile input.
//!
//! What must hold: reading never panics; a message read has the sequence number its first line
//! spells, and an encoded event that ends its frame (`\n\n`) and whose `id:` line is the
//! publisher's id (`g`) or the number (`a`); and the message, written as `publish.lua` writes
//! it from what was read, reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse::redis::fuzzing::read;

fuzz_target!(|message: &[u8]| {
    let Some((seq, given, bytes)) = read(message) else {
        return;
    };
    let first = message.split(|b| *b == b'\n').next().unwrap_or_default();
    assert_eq!(
        std::str::from_utf8(first).ok().and_then(|s| s.parse().ok()),
        Some(seq)
    );
    assert!(bytes.ends_with(b"\n\n"), "{bytes:?}");
    let id = given.clone().unwrap_or_else(|| {
        let line = message.split(|b| *b == b'\n').nth(1).unwrap_or_default();
        String::from_utf8_lossy(&line[1..]).into_owned()
    });
    let id_line = format!("id: {id}\n\n");
    assert!(
        bytes.ends_with(id_line.as_bytes()),
        "{bytes:?} without {id_line:?}"
    );
    // Written again as the script writes it: the head is the frame without its id line.
    let head = &bytes[..bytes.len() - id_line.len()];
    let flag = if given.is_some() { "g" } else { "a" };
    let mut again = format!("{seq}\n{flag}{id}\n").into_bytes();
    again.extend_from_slice(head);
    assert_eq!(read(&again), Some((seq, given, bytes)));
});
