//! [`Positions`]: where a stream over several channels is in each of them, when each channel
//! counts its own ids (Redis Cluster, whose channels live on several shards: no one counter
//! orders them all).
//!
//! There one event id can't say where such a stream is: `7` on one channel is not `7` on the
//! other. So after each batch of events, the stream sends an id of its own that names every
//! channel's position, in a frame with no data:
//!
//! ```text
//! data: hello
//! id: 12
//!
//! id: ~4f1c9a2b.12.0.57
//!
//! ```
//!
//! An `EventSource` dispatches no event for the second frame, but takes its id as its last
//! event id (the WHATWG spec sets it at every blank line, data or not): so the app's
//! `event.lastEventId` is each event's own id, and a reconnect sends the positions back in
//! `Last-Event-ID`. A resume from them replays each channel from its own history, after its own
//! position, on any instance: nothing lost and nothing twice, within the history.
//!
//! The id is `~`, then 8 hex digits that hash the channel names in the stream's order (a
//! reconnect asks for the same list), then each channel's position (the last id of its own
//! numbering sent, `0` for none) after a `.`. An id for another list of channels, or spelled
//! otherwise, is unknown ([`Resume::Unknown`](super::Resume::Unknown)). A stream whose
//! longest positions id could exceed the broker's
//! [`max_id_len`](super::BrokerBuilder::max_id_len) sends none (so a reconnect is told of the
//! gap, never refused).

use std::{fmt::Write, sync::Arc};

use bytes::BytesMut;

use super::resume::Skip;
use crate::fnv::fnv1a;

/// What starts a positions id.
const MARK: char = '~';

/// The longest positions id of `channels` channels: the mark, the tag, and a `.` and a `u64`
/// each.
fn longest(channels: usize) -> usize {
    1 + 8 + channels * (1 + 20)
}

/// Whether a stream over `channels` channels can send its positions in an id of at most
/// `max_id_len` bytes.
pub(super) fn fits(channels: usize, max_id_len: usize) -> bool {
    longest(channels) <= max_id_len
}

/// The tag of a list of channel names, in its order.
fn tag(names: &[Arc<str>]) -> u32 {
    let hash = fnv1a(names.iter().map(|name| name.as_bytes()));
    // The high half: FNV's low bits mix least.
    (hash >> 32) as u32
}

/// Reads a positions id of `names`: each channel's position, in their order. `None` for any
/// other id (not one, another list of channels, a number spelled otherwise).
pub(super) fn parse(id: &str, names: &[Arc<str>]) -> Option<Vec<u64>> {
    let rest = id.strip_prefix(MARK)?;
    let mut parts = rest.split('.');
    let hex = parts.next()?;
    if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if u32::from_str_radix(hex, 16).ok()? != tag(names) {
        return None;
    }
    let positions = parts
        .map(|part| match part {
            "0" => Some(0),
            _ if part.starts_with('0') || !part.bytes().all(|b| b.is_ascii_digit()) => None,
            _ => part.parse().ok(),
        })
        .collect::<Option<Vec<u64>>>()?;
    (positions.len() == names.len()).then_some(positions)
}

/// A stream's position in each of its channels, and what its resume skips of each.
#[derive(Debug)]
pub(super) struct Positions {
    tag: u32,
    /// Per cursor, the last id of its channel's own numbering sent (or the one it started
    /// after).
    pub(super) origins: Vec<u64>,
    /// Per cursor, the ring entries its replay (or its start) covered already.
    pub(super) skips: Vec<Skip>,
    /// Whether the stream has sent its positions since they last changed.
    pub(super) told: bool,
}

impl Positions {
    pub(super) fn new(names: &[Arc<str>], origins: Vec<u64>, skips: Vec<Skip>) -> Positions {
        Positions {
            tag: tag(names),
            origins,
            skips,
            told: false,
        }
    }

    /// The positions id.
    pub(super) fn id(&self) -> String {
        let mut id = String::with_capacity(longest(self.origins.len()));
        self.write_id(&mut id);
        id
    }

    fn write_id(&self, out: &mut impl Write) {
        let _ = write!(out, "{MARK}{:08x}", self.tag);
        for origin in &self.origins {
            let _ = write!(out, ".{origin}");
        }
    }

    /// Appends the frame that tells the positions: `id: ...` and a blank line, written
    /// straight into the batch's buffer (one per batch, no string of its own).
    pub(super) fn write_frame(&mut self, buf: &mut BytesMut) {
        buf.extend_from_slice(b"id: ");
        self.write_id(buf);
        buf.extend_from_slice(b"\n\n");
        self.told = true;
    }

    /// The most bytes [`write_frame`](Positions::write_frame) appends.
    pub(super) fn frame_len(&self) -> usize {
        4 + longest(self.origins.len()) + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|name| Arc::from(*name)).collect()
    }

    fn skip() -> Skip {
        Skip { until: 0, after: 0 }
    }

    #[test]
    fn an_id_reads_back_for_its_own_channels_only() {
        let ab = names(&["a", "b"]);
        let positions = Positions::new(&ab, vec![12, 0], vec![skip(); 2]);
        let id = positions.id();
        assert!(id.starts_with('~') && id.ends_with(".12.0"), "{id}");
        assert_eq!(parse(&id, &ab), Some(vec![12, 0]));
        // Another order, another list, one more channel: unknown.
        assert_eq!(parse(&id, &names(&["b", "a"])), None);
        assert_eq!(parse(&id, &names(&["a", "c"])), None);
        assert_eq!(parse(&format!("{id}.3"), &ab), None);
        let most = Positions::new(&ab, vec![u64::MAX; 2], vec![skip(); 2]);
        assert_eq!(most.id().len(), longest(2));
        assert_eq!(parse(&most.id(), &ab), Some(vec![u64::MAX; 2]));
        let mut buf = BytesMut::new();
        let mut told = Positions::new(&ab, vec![1, 2], vec![skip(); 2]);
        let len = told.frame_len();
        told.write_frame(&mut buf);
        assert!(told.told && buf.len() <= len);
        assert_eq!(&buf[..], format!("id: {}\n\n", told.id()).as_bytes());
    }

    #[test]
    fn other_spellings_are_other_ids() {
        let ab = names(&["a", "b"]);
        let good = Positions::new(&ab, vec![1, 2], vec![skip(); 2]).id();
        let hex = &good[1..9];
        for bad in [
            "1",
            "~",
            &format!("~{hex}"),
            &format!("~{hex}.1"),
            &format!("~{hex}.01.2"),
            &format!("~{hex}.+1.2"),
            &format!("~{hex}.1.-2"),
            &format!("~{hex}.1.2."),
            &format!("~{hex}..2"),
            &format!("~{hex}.1.18446744073709551616"),
            &format!("~{}.1.2", hex.to_uppercase()),
            &format!("#{hex}.1.2"),
        ] {
            if bad == good {
                continue;
            }
            assert_eq!(parse(bad, &ab), None, "{bad}");
        }
    }

    #[test]
    fn the_default_limits_fit() {
        // 32 channels a stream and 1,024-byte ids, the defaults.
        assert!(fits(32, 1024));
        assert!(!fits(64, 1024));
    }
}
