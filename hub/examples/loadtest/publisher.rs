//! The events, and publishing them with `POST /publish?channel=..`.

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

/// Publishes to one channel over keep-alive connections.
pub struct Publisher {
    client: reqwest::Client,
    url: String,
}

impl Publisher {
    pub fn new(addr: SocketAddr, channel: &str) -> Result<Publisher, BoxError> {
        Ok(Publisher {
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(PUBLISHERS)
                .build()?,
            url: format!("http://{addr}/publish?channel={channel}"),
        })
    }

    /// Publishes event `seq`; an answer other than `200` with an `"id"` is an error.
    pub async fn publish(&self, seq: u64) -> Result<(), BoxError> {
        let res = self
            .client
            .post(&self.url)
            .body(payload(seq))
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        if !status.is_success() || memchr::memmem::find(&body, b"\"id\"").is_none() {
            let body = String::from_utf8_lossy(&body);
            return Err(format!("publish answered {status}: {body}").into());
        }
        Ok(())
    }
}
