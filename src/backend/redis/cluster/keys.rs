//! Key names on a cluster. Every key of a channel, and its sharded pub/sub channel, carry the
//! same hash tag, so the one script that numbers, stores and publishes an event runs on the one
//! shard that owns the channel. The tag is a hash of the channel's name (64-bit FNV-1a, in
//! hex), not the name itself, so that short or similar names (`a`, `b`, `user.1`, `user.2`)
//! spread over the slots as any other keys do. The name follows the tag in each key, so two
//! names with one tag never share a key.
//!
//! With the prefix `tower-sse` and `T` the tag of channel `c`: `tower-sse:{T}:seq:c` (the
//! channel's counter), `tower-sse:{T}:epoch:c` (a random token, lost with the shard's data),
//! `tower-sse:{T}:lost:c` (the counter when a loss was found),
//! `tower-sse:{T}:clock:c`, `tower-sse:{T}:history:c`,
//! `tower-sse:{T}:ids:c`, `tower-sse:{T}:pubid:c ID` and the sharded channel
//! `tower-sse:{T}:channel:c`.

const PREFIX: &str = "tower-sse";

/// The hash tag of `channel`, braces included.
pub(super) fn tag(channel: &str) -> String {
    let hash = crate::fnv::fnv1a([channel.as_bytes()]);
    format!("{{{hash:016x}}}")
}

fn key(kind: &str, channel: &str) -> String {
    format!("{PREFIX}:{}:{kind}:{channel}", tag(channel))
}

pub(super) fn seq_key(channel: &str) -> String {
    key("seq", channel)
}

pub(super) fn epoch_key(channel: &str) -> String {
    key("epoch", channel)
}

/// The highest number the channel had when its shard was found to have lost its data: a
/// resume from at or below it is incomplete.
pub(super) fn lost_key(channel: &str) -> String {
    key("lost", channel)
}

pub(super) fn clock_key(channel: &str) -> String {
    key("clock", channel)
}

pub(super) fn history_key(channel: &str) -> String {
    key("history", channel)
}

pub(super) fn ids_key(channel: &str) -> String {
    key("ids", channel)
}

pub(super) fn repeat_key(channel: &str, id: &str) -> String {
    format!("{} {id}", key("pubid", channel))
}

pub(super) fn channel_key(channel: &str) -> String {
    key("channel", channel)
}

/// The channel name of a sharded pub/sub channel of ours.
pub(super) fn channel_name(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(":{")?;
    let (_tag, rest) = rest.split_once("}:")?;
    rest.strip_prefix("channel:")
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key without
/// one, modulo 16,384, as Redis computes it.
pub(super) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_channel_is_on_one_slot() {
        for channel in ["a", "news", "https://example.com/books/1", "x:{y}"] {
            let slots = [
                slot(&seq_key(channel)),
                slot(&clock_key(channel)),
                slot(&epoch_key(channel)),
                slot(&lost_key(channel)),
                slot(&history_key(channel)),
                slot(&ids_key(channel)),
                slot(&repeat_key(channel, "id 1")),
                slot(&channel_key(channel)),
            ];
            assert!(slots.iter().all(|s| *s == slots[0]), "{channel}: {slots:?}");
            assert_eq!(channel_name(&channel_key(channel)), Some(channel));
        }
        // Redis's own example.
        assert_eq!(slot("123456789"), 12_739);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn short_and_similar_names_spread_over_three_shards() {
        // Slots split in three, as `redis-cli --cluster create` does for three masters.
        let mut shards = [0; 3];
        for i in 0..300 {
            let slot = usize::from(slot(&channel_key(&format!("user.{i}"))));
            shards[slot * 3 / 16_384] += 1;
        }
        assert!(shards.iter().all(|n| *n >= 70), "{shards:?}");
        let mut shards = [0; 3];
        for c in b'a'..=b'z' {
            let slot = usize::from(slot(&channel_key(&(c as char).to_string())));
            shards[slot * 3 / 16_384] += 1;
        }
        assert!(shards.iter().all(|n| *n >= 4), "{shards:?}");
    }
}
