//! The events, and publishing them with `POST /publish?channel=..` (or as Mercure updates).

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::BoxError;

/// Bytes of event data.
const PAYLOAD: usize = 100;
/// Concurrent publishers in the throughput phases: keep-alive connections kept open.
pub const PUBLISHERS: usize = 4;

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The event data: sequence number (10 digits), a space, send time in UNIX nanoseconds (20
/// digits), a space, padding to [`PAYLOAD`] bytes.
fn payload(seq: u64) -> String {
    let data = format!("{seq:010} {:020} ", unix_nanos());
    let pad = PAYLOAD - data.len();
    data + &"x".repeat(pad)
}

/// The sequence number and send time of an event's data, as [`payload`] wrote them.
pub fn parse(data: &[u8]) -> Option<(u64, u64)> {
    Some((digits(data.get(..10))?, digits(data.get(11..31))?))
}

fn digits(bytes: Option<&[u8]>) -> Option<u64> {
    let bytes = bytes?;
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10) + u64::from(b - b'0'))
    })
}

/// Publishes to one channel over keep-alive connections: with `POST /publish`, or as a
/// Mercure update (`POST /.well-known/mercure`, a form) to one topic.
pub struct Publisher {
    client: reqwest::Client,
    url: String,
    /// The Mercure topic, for a Mercure publisher.
    topic: Option<String>,
}

impl Publisher {
    pub fn new(addr: SocketAddr, channel: &str) -> Result<Publisher, BoxError> {
        Ok(Publisher {
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(PUBLISHERS)
                .build()?,
            url: format!("http://{addr}/publish?channel={channel}"),
            topic: None,
        })
    }

    /// A Mercure publisher of updates to `topic` (on a hub that needs no token).
    pub fn mercure(addr: SocketAddr, topic: &str) -> Result<Publisher, BoxError> {
        Ok(Publisher {
            url: format!("http://{addr}/.well-known/mercure"),
            topic: Some(topic.to_owned()),
            ..Publisher::new(addr, "")?
        })
    }

    /// Publishes event `seq`; an answer other than `200` with an id (`"id"`, or Mercure's
    /// `urn:uuid:`) is an error.
    pub async fn publish(&self, seq: u64) -> Result<(), BoxError> {
        let req = self.client.post(&self.url);
        let req = match &self.topic {
            None => req.body(payload(seq)),
            Some(topic) => req.form(&[("topic", topic.as_str()), ("data", &payload(seq))]),
        };
        let res = req.send().await?;
        let status = res.status();
        let body = res.bytes().await?;
        let id: &[u8] = match self.topic {
            None => b"\"id\"",
            Some(_) => b"urn:uuid:",
        };
        if !status.is_success() || memchr::memmem::find(&body, id).is_none() {
            let body = String::from_utf8_lossy(&body);
            return Err(format!("publish answered {status}: {body}").into());
        }
        Ok(())
    }
}
