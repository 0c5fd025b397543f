//! `--http2`: the hub as shipped over HTTP/1.1 and over HTTP/2, side by side.
//!
//! - RSS per idle stream, N = 5,000 (a fresh hub each): HTTP/1.1 (one stream per connection,
//!   as browsers and the other phases do), HTTP/2 by prior knowledge (h2c) with one stream per
//!   connection and with 100 streams per connection, and the same two over TLS (ALPN `h2`,
//!   a self-signed certificate made here with rcgen), as browsers speak HTTP/2;
//! - fan-out deliveries/s on one hub in one run: 1,000 subscribers over HTTP/1.1, over h2c
//!   with 100 streams per connection (10 connections), and over h2c with one stream per
//!   connection, each set on its own channel, taking turns; each turn publishes a burst as
//!   fast as the slowest subscriber takes it (the same pace as the main run's burst phases),
//!   deliveries/s = events × subscribers / time to the last delivery. Medians over the turns.
//!
//! HTTP/2 subscribers are hyper's HTTP/2 client, the bytes of each stream scanned as the raw
//! HTTP/1.1 subscribers scan theirs ([`Tally::scan`]).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, task::JoinSet, time::timeout};
use tokio_rustls::{
    TlsConnector,
    rustls::{ClientConfig, RootCertStore, crypto::ring, pki_types::ServerName},
};

use crate::{
    BoxError,
    child::ChildServer,
    phases::{Pace, Phase, phase},
    proc,
    publisher::{Publisher, unix_nanos},
    subscribers::{Subscribers, Tally},
};

/// Connections opened at once.
const BATCH: usize = 250;
/// Hang guard for one connection and its streams to open.
const GUARD: std::time::Duration = std::time::Duration::from_secs(20);

/// Counts of the `--http2` run; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    idle: usize,
    subscribers: usize,
    per_connection: usize,
    events: u64,
    turns: u64,
}

impl Plan {
    pub const FULL: Plan = Plan {
        idle: 5_000,
        subscribers: 1_000,
        per_connection: 100,
        events: 1_000,
        turns: 3,
    };
    pub const QUICK: Plan = Plan {
        idle: 500,
        subscribers: 200,
        per_connection: 100,
        events: 100,
        turns: 1,
    };
}

/// How a set of subscribers reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http1,
    /// HTTP/2; this many streams per connection; over TLS or by prior knowledge.
    Http2 {
        per_connection: usize,
        tls: bool,
    },
}

impl Wire {
    fn name(self) -> String {
        match self {
            Wire::Http1 => "HTTP/1.1".to_owned(),
            Wire::Http2 {
                per_connection,
                tls,
            } => {
                let how = if tls { "TLS h2" } else { "h2c" };
                let s = if per_connection == 1 { "" } else { "s" };
                format!("HTTP/2 ({how}), {per_connection} stream{s} per connection")
            }
        }
    }
}

/// A self-signed certificate for 127.0.0.1 in a temporary folder, and a client trusting it.
struct Cert {
    dir: std::path::PathBuf,
    client: Arc<ClientConfig>,
}

impl Cert {
    fn new() -> Result<Cert, BoxError> {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        let dir = std::env::temp_dir().join(format!("tower-sse-loadtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), made.cert.pem())?;
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem())?;
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone())?;
        #[allow(deprecated)] // the hub's own provider (src/tls.rs says why)
        let mut client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Cert {
            dir,
            client: Arc::new(client),
        })
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects `n` subscribers of `channel` over `wire`, counting events `0..events`; returns
/// once every stream has its response head (the hub has subscribed it).
async fn connect(
    addr: SocketAddr,
    wire: Wire,
    tls: Option<&Cert>,
    channel: &str,
    n: usize,
    events: u64,
) -> Result<Subscribers, BoxError> {
    let Wire::Http2 { per_connection, .. } = wire else {
        return Subscribers::connect(addr, channel, n, events).await;
    };
    let tally = Arc::new(Tally::new(n, events));
    let connector = tls.map(|cert| TlsConnector::from(cert.client.clone()));
    let path: Arc<str> = format!("http://{addr}/events?channel={channel}").into();
    let connections = n.div_ceil(per_connection);
    let mut tasks = Vec::with_capacity(n);
    for first in (0..connections).step_by(BATCH) {
        let mut opening = JoinSet::new();
        for c in first..connections.min(first + BATCH) {
            let streams = per_connection.min(n - c * per_connection);
            let (connector, path, tally) = (connector.clone(), path.clone(), tally.clone());
            opening.spawn(timeout(
                GUARD,
                connection(addr, connector, path, streams, tally),
            ));
        }
        while let Some(opened) = opening.join_next().await {
            tasks.extend(opened?.map_err(|_| format!("no HTTP/2 streams in {GUARD:?}"))??);
        }
    }
    Ok(Subscribers::from_parts(tally, tasks))
}

/// One HTTP/2 connection with `streams` event streams, each read by a task of its own.
async fn connection(
    addr: SocketAddr,
    connector: Option<TlsConnector>,
    url: Arc<str>,
    streams: usize,
    tally: Arc<Tally>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let builder = http2::Builder::new(TokioExecutor::new());
    let mut send = match connector {
        None => {
            let (send, conn) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            send
        }
        Some(connector) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = connector.connect(name, tcp).await?;
            let (send, conn) = builder.handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            send
        }
    };
    let mut heads = JoinSet::new();
    for _ in 0..streams {
        send.ready().await?;
        let req = Request::get(&*url).body(Empty::<Bytes>::new())?;
        heads.spawn(send.send_request(req));
    }
    let mut tasks = Vec::with_capacity(streams);
    while let Some(res) = heads.join_next().await {
        let res = res??;
        if res.status() != StatusCode::OK {
            return Err(format!("GET {url} answered {}", res.status()).into());
        }
        tasks.push(tokio::spawn(read(res.into_body(), tally.clone())));
    }
    Ok(tasks)
}

/// Counts the events of one stream, as the HTTP/1.1 subscribers do.
async fn read(mut body: Incoming, tally: Arc<Tally>) {
    let mut buf = Vec::new();
    let mut seen = vec![0; tally.counts.len().div_ceil(64)];
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            let used = tally.scan(&buf, &mut seen, unix_nanos());
            buf.drain(..used);
        }
    }
    tally
        .ended
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tally.window.notify_waiters();
}

/// RSS per idle stream over `wire`, on a fresh hub.
async fn rss_per_stream(plan: Plan, wire: Wire, cert: &Cert) -> Result<f64, BoxError> {
    let tls = matches!(wire, Wire::Http2 { tls: true, .. });
    let (cert_file, key_file) = (cert.file("cert.pem"), cert.file("key.pem"));
    let args = ["--tls-cert", &cert_file, "--tls-key", &key_file];
    let mut hub = ChildServer::hub_with(if tls { &args } else { &[] }).await?;
    let before = proc::usage(hub.pid)?.rss;
    let started = Instant::now();
    let subs = connect(hub.addr, wire, tls.then_some(cert), "idle", plan.idle, 1).await?;
    let after = proc::usage(hub.pid)?.rss;
    hub.check()?;
    let per = after.saturating_sub(before) as f64 / plan.idle as f64;
    eprintln!(
        "  {}: {} streams in {:.1} s, RSS {:.1} -> {:.1} MiB, {per:.0} B per stream",
        wire.name(),
        plan.idle,
        started.elapsed().as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    drop(subs);
    Ok(per)
}

/// The `--http2` run: prints a markdown table.
pub async fn run(plan: Plan) -> Result<(), BoxError> {
    let started = Instant::now();
    let load_before = proc::loadavg();
    let cert = Cert::new()?;
    let per_connection = plan.per_connection;
    let idle_wires = [
        Wire::Http1,
        Wire::Http2 {
            per_connection: 1,
            tls: false,
        },
        Wire::Http2 {
            per_connection,
            tls: false,
        },
        Wire::Http2 {
            per_connection: 1,
            tls: true,
        },
        Wire::Http2 {
            per_connection,
            tls: true,
        },
    ];
    let mut rss = Vec::new();
    for wire in idle_wires {
        rss.push((wire, rss_per_stream(plan, wire, &cert).await?));
    }

    let fan_wires = [
        Wire::Http1,
        Wire::Http2 {
            per_connection,
            tls: false,
        },
        Wire::Http2 {
            per_connection: 1,
            tls: false,
        },
    ];
    let mut hub = ChildServer::hub().await?;
    let events = plan.events * plan.turns;
    let mut sets = Vec::new();
    for (i, wire) in fan_wires.into_iter().enumerate() {
        let channel = format!("fan{i}");
        let subs = connect(hub.addr, wire, None, &channel, plan.subscribers, events).await?;
        sets.push((
            wire,
            subs,
            Publisher::new(hub.addr, &channel)?,
            Vec::<Phase>::new(),
        ));
    }
    for turn in 0..plan.turns {
        let seqs = turn * plan.events..(turn + 1) * plan.events;
        // Each set first once, over the turns.
        for k in 0..sets.len() {
            let i = (k + turn as usize) % sets.len();
            let (wire, subs, publisher, phases) = &mut sets[i];
            let measured = phase(&mut hub, subs, publisher, seqs.clone(), Pace::Window).await?;
            eprintln!(
                "  turn {}: {}: {} delivered, {} lost, {:.0}/s; hub CPU {:.0}%, load generator {:.0}%",
                turn + 1,
                wire.name(),
                measured.deliveries,
                measured.lost,
                measured.per_sec,
                measured.server_util * 100.0,
                measured.client_util * 100.0,
            );
            phases.push(measured);
        }
    }
    for (wire, subs, _, _) in &sets {
        subs.tally.report(&wire.name());
    }

    println!(
        "tower-sse hub over HTTP/1.1 and HTTP/2, {} s; load average {load_before} before, {} \
         after; {} cores\n",
        started.elapsed().as_secs(),
        proc::loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| RSS per idle stream, {} streams | bytes |", plan.idle);
    println!("|---|---:|");
    for (wire, per) in &rss {
        println!("| {} | {per:.0} |", wire.name());
    }
    let (subs, events) = (plan.subscribers, plan.events);
    println!(
        "\n| fan-out, {subs} subscribers, bursts of {events} events | deliveries/s (median of {}) | lost | hub CPU ms per 1,000 deliveries |",
        plan.turns
    );
    println!("|---|---:|---:|---:|");
    let http1 = median(&sets[0].3, |p| p.per_sec);
    for (wire, _, _, phases) in &sets {
        let per_sec = median(phases, |p| p.per_sec);
        let lost: u64 = phases.iter().map(|p| p.lost).sum();
        let cpu = median(phases, |p| p.server_cpu_per_1k_ms);
        let ratio = if *wire == Wire::Http1 {
            String::new()
        } else {
            format!(" ({:.2}× HTTP/1.1)", per_sec / http1)
        };
        println!(
            "| {} | {per_sec:.0}{ratio} | {lost} | {cpu:.2} |",
            wire.name()
        );
    }
    hub.check()
}

fn median(phases: &[Phase], metric: impl Fn(&Phase) -> f64) -> f64 {
    let mut values: Vec<f64> = phases.iter().map(metric).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
