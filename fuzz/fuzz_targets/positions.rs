//! Fuzz target `positions`: a reconnecting client's `Last-Event-ID` read as the positions id
//! of a stream over several channels on a Redis Cluster (`~{tag}.{id}.{id}...`, see
//! `redis::cluster`), for a list of channel names. The id is untrusted: any client sends any.
//!
//! The input is the channel names, one per line, a NUL byte, then the id (both read as UTF-8,
//! lossily). What must hold: reading never panics; an id read gives one position per channel,
//! and is exactly the id a stream at those positions sends (one spelling per positions, so no
//! two ids resume alike by accident); and the id a stream sends at any positions (here, ones
//! made from the input's bytes) reads back as those positions, and not for another list of
//! channels.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tower_sse::broker::fuzzing::{positions_id, read_positions};

fuzz_target!(|input: &[u8]| {
    let (names, id) = match input.iter().position(|b| *b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let names: Vec<Arc<str>> = String::from_utf8_lossy(names)
        .split('\n')
        .map(Arc::from)
        .collect();
    let id = String::from_utf8_lossy(id);
    if let Some(positions) = read_positions(&id, &names) {
        assert_eq!(positions.len(), names.len());
        assert_eq!(positions_id(&names, positions), id);
    }
    // Positions from the id's bytes, 8 at a time (the last one shorter): from 0 to u64::MAX.
    let mut positions: Vec<u64> = id
        .as_bytes()
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect();
    positions.resize(names.len(), u64::MAX);
    let sent = positions_id(&names, positions.clone());
    assert_eq!(read_positions(&sent, &names), Some(positions));
    // One channel fewer or one more: another list.
    assert_eq!(read_positions(&sent, &names[1..]), None);
    let mut more = names.clone();
    more.push(Arc::from("one more"));
    assert_eq!(read_positions(&sent, &more), None);
});
