//! What the Redis backend stores and sends: key names and the message format.
//!
//! With the default prefix `tower-sse`:
//!
//! - `tower-sse:seq`, the id counter, and `tower-sse:epoch`, a random token lost with the data;
//! - `tower-sse:history:{channel}`: the channel's history, a stream whose entry ids are the
//!   sequence numbers; `tower-sse:ids:{channel}`: a hash from the publisher's ids of those
//!   events to their sequence numbers, trimmed with the stream;
//! - `tower-sse:clock`: a stream of samples of the counter, one a minute at most, for the
//!   expiry (what a channel without history may have lost);
//! - `tower-sse:pubid:{channel} {id}`: the sequence number and a digest of the last event
//!   published with that id on that channel, for a short window, so a retry is not published
//!   twice (channel names hold no space, so the key is unambiguous);
//! - the pub/sub channels `tower-sse:channel:{channel}`.
//!
//! A message is `{seq}\n{g|a}{id}\n{head}`: the sequence number, `g` and the publisher's id or
//! `a` and the assigned one, then the encoded event without its `id:` line, which
//! [`event::finish`](crate::event::finish) adds when the message is read, as for any event.

use bytes::BytesMut;
use redis::Value;

use crate::{
    backend::{Message, Replay},
    error::BoxError,
    event,
};

const PREFIX: &str = "tower-sse";

pub(super) fn seq_key() -> String {
    format!("{PREFIX}:seq")
}

pub(super) fn epoch_key() -> String {
    format!("{PREFIX}:epoch")
}

pub(super) fn history_key(channel: &str) -> String {
    format!("{PREFIX}:history:{channel}")
}

pub(super) fn ids_key(channel: &str) -> String {
    format!("{PREFIX}:ids:{channel}")
}

pub(super) fn clock_key() -> String {
    format!("{PREFIX}:clock")
}

pub(super) fn repeat_key(channel: &str, id: &str) -> String {
    format!("{PREFIX}:pubid:{channel} {id}")
}

pub(super) fn channel_key(channel: &str) -> String {
    format!("{PREFIX}:channel:{channel}")
}

/// The channel name of a pub/sub channel of ours.
pub(super) fn channel_name(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?.strip_prefix(":channel:")
}

/// Reads `{seq}\n{g|a}{id}\n{head}`.
pub(super) fn parse_message(message: &[u8]) -> Option<Message> {
    let (seq, rest) = split_line(message)?;
    let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
    let (id, head) = split_line(rest)?;
    let (given, id) = match id.split_first()? {
        (b'g', id) => (true, std::str::from_utf8(id).ok()?),
        (b'a', id) => (false, std::str::from_utf8(id).ok()?),
        _ => return None,
    };
    let mut buf = BytesMut::with_capacity(head.len() + id.len() + 6);
    buf.extend_from_slice(head);
    Some(Message {
        global: true,
        seq,
        bytes: event::finish(buf, Some(id)),
        id: given.then(|| id.into()),
    })
}

/// Reads what `replay.lua` answers, `{snapshot, complete, after, messages...}`, from `who`
/// (for the error): the counter it read, and the replay, empty for an id it did not know. An
/// event published to several of the channels is in each one's history: replayed once.
pub(super) fn read_replay(reply: &[Value], who: &str) -> Result<(u64, Replay), BoxError> {
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let (Some(snapshot), Some(complete), Some(after)) =
        (int(reply.first()), int(reply.get(1)), int(reply.get(2)))
    else {
        return Err(format!("unexpected replay reply from {who}").into());
    };
    let snapshot = u64::try_from(snapshot).unwrap_or(0);
    let Ok(after) = u64::try_from(after) else {
        return Ok((snapshot, Replay::default()));
    };
    let mut messages: Vec<_> = reply[3..]
        .iter()
        .filter_map(|v| match v {
            Value::BulkString(bytes) => parse_message(bytes),
            _ => None,
        })
        .collect();
    messages.sort_by_key(|m| m.seq);
    messages.dedup_by_key(|m| m.seq);
    let replay = Replay {
        after: Some(after),
        complete: complete == 1,
        snapshot,
        events: messages.into_iter().map(|m| (m.seq, m.bytes)).collect(),
    };
    Ok((snapshot, replay))
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(b'\n', bytes)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A value no other instance's connect picks: random keys (per process and per call), the
/// time and the process id.
pub(super) fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    format!("{:016x}{:08x}", hasher.finish(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let message = parse_message(b"12\ngabc\ndata: x\n").unwrap();
        assert_eq!(message.seq, 12);
        assert_eq!(message.id.as_deref(), Some("abc"));
        assert_eq!(message.bytes, "data: x\nid: abc\n\n");
        let message = parse_message(b"7\na7\ndata: \n").unwrap();
        assert_eq!((message.seq, message.id), (7, None));
        assert_eq!(message.bytes, "data: \nid: 7\n\n");
        assert!(parse_message(b"x\na\n").is_none());
        assert!(parse_message(b"1\nz\n").is_none());
        assert!(parse_message(b"1").is_none());
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name(&channel_key("a:b")), Some("a:b"));
        assert_eq!(channel_name("other:channel:a"), None);
    }

    #[test]
    fn repeat_keys_are_unambiguous() {
        // A channel name holds no space, an id may: the first space ends the name.
        let key = repeat_key("a:b", "c d");
        assert_eq!(key, "tower-sse:pubid:a:b c d");
        let rest = key.strip_prefix("tower-sse:pubid:").unwrap();
        assert_eq!(rest.split_once(' '), Some(("a:b", "c d")));
    }
}
