//! What the Redis backend stores and sends: key names and the message format.
//!
//! With the default prefix `tower-sse`: `tower-sse:seq` (the id counter), `tower-sse:epoch`
//! (a random token, lost with the data), `tower-sse:history:{channel}` (streams, entry id =
//! sequence number) and the pub/sub channels `tower-sse:channel:{channel}`.
//!
//! A message is `{seq}\n{g|a}{id}\n{head}`: the sequence number, `g` and the publisher's id or
//! `a` and the assigned one, then the encoded event without its `id:` line, which
//! [`event::finish`](crate::event::finish) adds when the message is read, as for any event.

use bytes::BytesMut;

use crate::{backend::Message, event};

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
        seq,
        bytes: event::finish(buf, Some(id)),
        id: given.then(|| id.into()),
    })
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
}
