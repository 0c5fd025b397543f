//! Raw subscribers: `GET /events?channel=..` over plain TCP, the bytes scanned for `data:`
//! lines, each event counted once per subscriber.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, oneshot},
    task::JoinHandle,
    time::timeout,
};

use crate::{BoxError, histogram::Histogram, publisher};

/// Tries per subscriber to connect and get the response head.
const CONNECT_ATTEMPTS: u32 = 3;
/// Subscribers connecting at once.
const BATCH: usize = 250;
/// Hang guard for a batch of subscribers to connect.
const GUARD: Duration = Duration::from_secs(20);

/// What the subscribers of one set received, per sequence number and in total.
pub struct Tally {
    subscribers: usize,
    /// Subscribers that received each sequence number.
    pub counts: Box<[AtomicU32]>,
    pub received: AtomicU64,
    /// Deliveries expected in the current phase.
    pub target: AtomicU64,
    /// UNIX nanoseconds of the last read that brought events.
    pub last_nanos: AtomicU64,
    pub ended: AtomicUsize,
    malformed: AtomicU64,
    duplicates: AtomicU64,
    /// Connection attempts that failed and were retried.
    retries: AtomicU64,
    pub latency: Histogram,
    /// Notified when `received` reaches `target`.
    pub done: Notify,
    /// Notified when an event reached every live subscriber, or one ended.
    pub window: Notify,
}

impl Tally {
    pub fn new(subscribers: usize, events: u64) -> Tally {
        Tally {
            subscribers,
            counts: (0..events).map(|_| AtomicU32::new(0)).collect(),
            received: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            last_nanos: AtomicU64::new(0),
            ended: AtomicUsize::new(0),
            malformed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: Histogram::new(),
            done: Notify::new(),
            window: Notify::new(),
        }
    }

    /// Prints what should not happen.
    pub fn report(&self, server: &str) {
        let (malformed, duplicates) = (self.malformed.load(Relaxed), self.duplicates.load(Relaxed));
        let retries = self.retries.load(Relaxed);
        if malformed + duplicates + retries > 0 {
            eprintln!(
                "  {server}: {malformed} malformed and {duplicates} duplicate events, \
                 {retries} connections retried"
            );
        }
    }

    /// Subscribers still connected.
    pub fn live(&self) -> u32 {
        (self.subscribers - self.ended.load(Relaxed).min(self.subscribers)) as u32
    }

    /// Scans complete lines; returns the bytes consumed. Chunk-size lines of the chunked
    /// encoding never start with `data: `, and a chunk always holds whole events.
    pub fn scan(&self, bytes: &[u8], seen: &mut [u64], now: u64) -> usize {
        let mut start = 0;
        let mut events = 0;
        for end in memchr::memchr_iter(b'\n', bytes) {
            if let Some(data) = bytes[start..end].strip_prefix(b"data: ") {
                events += self.deliver(data, seen, now);
            }
            start = end + 1;
        }
        if events > 0 {
            self.last_nanos.fetch_max(now, Relaxed);
            let received = self.received.fetch_add(events, Relaxed) + events;
            if received >= self.target.load(Relaxed) {
                self.done.notify_waiters();
            }
        }
        start
    }

    /// Counts one event, once per subscriber (`seen` is its bitmap of sequence numbers).
    fn deliver(&self, data: &[u8], seen: &mut [u64], now: u64) -> u64 {
        let Some((seq, sent)) = publisher::parse(data) else {
            self.malformed.fetch_add(1, Relaxed);
            return 0;
        };
        let Some(count) = self.counts.get(seq as usize) else {
            self.malformed.fetch_add(1, Relaxed);
            return 0;
        };
        let (word, bit) = (&mut seen[seq as usize / 64], 1 << (seq % 64));
        if *word & bit != 0 {
            self.duplicates.fetch_add(1, Relaxed);
            return 0;
        }
        *word |= bit;
        if count.fetch_add(1, Relaxed) + 1 >= self.live() {
            self.window.notify_waiters();
        }
        self.latency.record(now.saturating_sub(sent) / 1000);
        1
    }
}

/// N raw subscribers of one channel of one server; aborted when dropped.
pub struct Subscribers {
    pub tally: Arc<Tally>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    /// Connects `n` subscribers to `channel`, [`BATCH`] at a time, each counting events
    /// `0..events`; returns once every one has its response head.
    pub async fn connect(
        addr: SocketAddr,
        channel: &str,
        n: usize,
        events: u64,
    ) -> Result<Subscribers, BoxError> {
        let path = format!("/events?channel={channel}");
        Subscribers::connect_to(addr, &path, n, events).await
    }

    /// As [`Subscribers::connect`], to `path` (with its query): another endpoint's streams.
    pub async fn connect_to(
        addr: SocketAddr,
        path: &str,
        n: usize,
        events: u64,
    ) -> Result<Subscribers, BoxError> {
        let request: Arc<str> = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\
             Accept: text/event-stream\r\n\r\n"
        )
        .into();
        let mut set = Subscribers {
            tally: Arc::new(Tally::new(n, events)),
            tasks: Vec::with_capacity(n),
        };
        for first in (0..n).step_by(BATCH) {
            let mut ready = Vec::with_capacity(BATCH);
            for _ in first..n.min(first + BATCH) {
                let (tx, rx) = oneshot::channel();
                let (request, tally) = (request.clone(), set.tally.clone());
                set.tasks
                    .push(tokio::spawn(subscriber(addr, request, tally, tx)));
                ready.push(rx);
            }
            for (i, rx) in ready.into_iter().enumerate() {
                let what = format!("subscriber {} of {n} could not connect", first + i + 1);
                match timeout(GUARD, rx).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(err))) => return Err(format!("{what}: {err}").into()),
                    Ok(Err(_)) => return Err(format!("{what}: task failed").into()),
                    Err(_) => return Err(format!("{what}: no response in {GUARD:?}").into()),
                }
            }
        }
        Ok(set)
    }
}

impl Subscribers {
    /// Subscribers of another kind (`http2.rs`): their tally, and their tasks, aborted when
    /// dropped.
    pub fn from_parts(tally: Arc<Tally>, tasks: Vec<JoinHandle<()>>) -> Subscribers {
        Subscribers { tally, tasks }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// One subscriber: sends the request, reports the response head, then counts events.
async fn subscriber(
    addr: SocketAddr,
    request: Arc<str>,
    tally: Arc<Tally>,
    ready: oneshot::Sender<io::Result<()>>,
) {
    let mut buf = vec![0; 8 * 1024];
    let mut attempt = 1;
    let (mut stream, mut filled) = loop {
        match handshake(addr, &request, &mut buf).await {
            Ok(ok) => {
                let _ = ready.send(Ok(()));
                break ok;
            }
            // A connection reset while 10,000 others connect is retried, and counted.
            Err(err) if attempt < CONNECT_ATTEMPTS => {
                tally.retries.fetch_add(1, Relaxed);
                eprintln!("  retrying a subscriber: {err}");
                attempt += 1;
            }
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        }
    };
    let mut seen = vec![0; tally.counts.len().div_ceil(64)];
    let mut now = publisher::unix_nanos();
    loop {
        let used = tally.scan(&buf[..filled], &mut seen, now);
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            tally.malformed.fetch_add(1, Relaxed);
            break;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        now = publisher::unix_nanos();
    }
    tally.ended.fetch_add(1, Relaxed);
    tally.window.notify_waiters();
}

/// Connects, sends the request and reads the response head: the server has subscribed
/// before it answers. Returns the stream and how many body bytes are already in `buf`.
async fn handshake(
    addr: SocketAddr,
    request: &str,
    buf: &mut [u8],
) -> io::Result<(TcpStream, usize)> {
    let mut stream = TcpStream::connect(addr).await?;
    // Reset on close, so 20,000 closed streams leave no TIME_WAIT holding ports.
    stream.set_zero_linger()?;
    stream.write_all(request.as_bytes()).await?;
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 || filled + n == buf.len() {
            return Err(io::Error::other("no response head"));
        }
        filled += n;
        if let Some(end) = memchr::memmem::find(&buf[..filled], b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                let line = buf[..filled].split(|&b| b == b'\r').next().unwrap_or(&[]);
                let line = String::from_utf8_lossy(line).into_owned();
                return Err(io::Error::other(format!("answered {line}")));
            }
            buf.copy_within(end + 4..filled, 0);
            return Ok((stream, filled - end - 4));
        }
    }
}
