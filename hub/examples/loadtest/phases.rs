//! One run on one server: idle subscribers, then a set of subscribers through phases of
//! events at set rates or as fast as they are taken; what each phase measured.

use std::{
    ops::Range,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::{sync::Notify, time::timeout};

use crate::{
    BoxError,
    child::ChildServer,
    proc,
    publisher::{self, PUBLISHERS, Publisher},
    subscribers::Subscribers,
};

/// Events in flight in the throughput phases; below the buffer of both servers (256 events
/// for the baseline, the hub's history of 1,000 for the hub).
const WINDOW: u64 = 128;
/// Hang guard: a phase ends when no event arrived for this long (lost events never do).
const STALL: Duration = Duration::from_secs(3);

/// Counts for one run; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub idle: usize,
    idle_events: u64,
    pub subscribers: usize,
    warmup: u64,
    latency_events: u64,
    pub loss_events: u64,
    burst_events: u64,
}

impl Plan {
    pub const FULL: Plan = Plan {
        idle: 10_000,
        idle_events: 1_000,
        subscribers: 1_000,
        warmup: 20,
        latency_events: 500,
        loss_events: 1_000,
        burst_events: 5_000,
    };
    pub const QUICK: Plan = Plan {
        idle: 1_000,
        idle_events: 50,
        subscribers: 200,
        warmup: 10,
        latency_events: 50,
        loss_events: 200,
        burst_events: 300,
    };
}

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Events per second.
    Rate(u32),
    /// As fast as the slowest subscriber takes them, [`WINDOW`] in flight.
    Window,
}

/// Figures of one phase on one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub deliveries: u64,
    pub lost: u64,
    pub disconnected: usize,
    pub per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub server_cpu_per_1k_ms: f64,
    pub server_writes_per_1k: f64,
    pub client_cpu_per_1k_ms: f64,
    pub server_util: f64,
    pub client_util: f64,
}

/// One server's figures in one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub rss_per_idle: f64,
    pub burst_idle: Phase,
    pub latency: Phase,
    pub loss: Phase,
    pub burst: Phase,
}

impl Figures {
    /// One line for the progress log.
    pub fn summary(&self) -> String {
        let phase = |p: &Phase| {
            format!(
                "{} delivered, {} lost, {} disconnected, {:.0}/s, p99 {} µs",
                p.deliveries, p.lost, p.disconnected, p.per_sec, p.p99_us
            )
        };
        format!(
            "RSS/idle {:.0} B; idle burst: {}; 50/s: {}; 200/s: {}; burst: {}",
            self.rss_per_idle,
            phase(&self.burst_idle),
            phase(&self.latency),
            phase(&self.loss),
            phase(&self.burst)
        )
    }
}

/// Runs `plan` on `server`.
pub async fn measure(server: &mut ChildServer, plan: Plan) -> Result<Figures, BoxError> {
    let name = server.name();
    let before = proc::usage(server.pid)?;
    eprintln!("  {name}: {} idle subscribers", plan.idle);
    let idle = Subscribers::connect(server.addr, "idle", plan.idle, plan.idle_events).await?;
    let after = proc::usage(server.pid)?;
    let rss_per_idle = after.rss.saturating_sub(before.rss) as f64 / plan.idle as f64;
    eprintln!("  {name}: {} events to them, max speed", plan.idle_events);
    let publisher = Publisher::new(server.addr, "idle")?;
    let burst_idle = phase(server, &idle, &publisher, 0..plan.idle_events, Pace::Window).await?;
    idle.tally.report(name);
    drop(idle);

    let p = plan;
    let mut at = 0;
    let mut next = |n: u64| {
        at += n;
        at - n..at
    };
    let (warmup, latency) = (next(p.warmup), next(p.latency_events));
    let (loss, burst) = (next(p.loss_events), next(p.burst_events));
    eprintln!("  {name}: {} subscribers", p.subscribers);
    let subs = Subscribers::connect(server.addr, "load", p.subscribers, burst.end).await?;
    let publisher = Publisher::new(server.addr, "load")?;
    phase(server, &subs, &publisher, warmup, Pace::Rate(200)).await?;
    eprintln!("  {name}: {} events at 50/s", p.latency_events);
    let latency = phase(server, &subs, &publisher, latency, Pace::Rate(50)).await?;
    eprintln!("  {name}: {} events at 200/s", p.loss_events);
    let loss = phase(server, &subs, &publisher, loss, Pace::Rate(200)).await?;
    eprintln!("  {name}: {} events, max speed", p.burst_events);
    let burst = phase(server, &subs, &publisher, burst, Pace::Window).await?;
    subs.tally.report(name);
    server.check()?;
    Ok(Figures {
        rss_per_idle,
        burst_idle,
        latency,
        loss,
        burst,
    })
}

/// Publishes events `seqs` at `pace` and waits until every live subscriber has them (or
/// [`STALL`] passes without one).
pub async fn phase(
    server: &mut ChildServer,
    subs: &Subscribers,
    publisher: &Publisher,
    seqs: Range<u64>,
    pace: Pace,
) -> Result<Phase, BoxError> {
    let tally = &subs.tally;
    let (live, ended) = (tally.live(), tally.ended.load(Relaxed));
    tally.latency.reset();
    let received0 = tally.received.load(Relaxed);
    let target = received0 + u64::from(live) * (seqs.end - seqs.start);
    tally.target.store(target, Relaxed);
    let pids = (server.pid, std::process::id());
    let usage = || Ok::<_, BoxError>((proc::usage(pids.0)?, proc::usage(pids.1)?));
    let (server0, client0) = usage()?;
    let (start, start_nanos) = (Instant::now(), publisher::unix_nanos());
    match pace {
        Pace::Rate(rate) => {
            // On the clock, without waiting for answers: a slow answer must not lower the rate.
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
            let (mut seqs, mut in_flight) = (seqs, FuturesUnordered::new());
            loop {
                tokio::select! {
                    _ = ticks.tick(), if !seqs.is_empty() => {
                        in_flight.extend(seqs.next().map(|seq| publisher.publish(seq)));
                    }
                    Some(published) = in_flight.next() => published?,
                    else => break,
                }
            }
        }
        Pace::Window => {
            // Several publishers, so that publishing keeps up with fan-out; each waits until
            // the event WINDOW before its own reached every subscriber.
            let next = AtomicU64::new(seqs.start);
            let publish = || async {
                loop {
                    let seq = next.fetch_add(1, Relaxed);
                    if seq >= seqs.end {
                        return Ok::<_, BoxError>(());
                    }
                    if let Some(before) = seq.checked_sub(WINDOW).filter(|s| *s >= seqs.start) {
                        let count = &tally.counts[before as usize];
                        wait(&tally.window, || count.load(Relaxed) >= tally.live()).await;
                    }
                    publisher.publish(seq).await?;
                }
            };
            futures_util::future::try_join_all((0..PUBLISHERS).map(|_| publish())).await?;
        }
    }
    wait(&tally.done, || tally.received.load(Relaxed) >= target).await;
    let (server1, client1) = usage()?;
    server.check()?;
    let deliveries = tally.received.load(Relaxed) - received0;
    let secs = (tally.last_nanos.load(Relaxed).saturating_sub(start_nanos) as f64 / 1e9).max(1e-3);
    let per_1k = |cpu: Duration| cpu.as_secs_f64() * 1e3 / (deliveries.max(1) as f64 / 1e3);
    let wall = start.elapsed().as_secs_f64();
    Ok(Phase {
        deliveries,
        lost: target - received0 - deliveries.min(target - received0),
        disconnected: tally.ended.load(Relaxed) - ended,
        per_sec: deliveries as f64 / secs,
        p50_us: tally.latency.quantile(0.50),
        p99_us: tally.latency.quantile(0.99),
        max_us: tally.latency.max(),
        server_cpu_per_1k_ms: per_1k(server1.cpu - server0.cpu),
        server_writes_per_1k: (server1.writes - server0.writes) as f64 * 1e3
            / deliveries.max(1) as f64,
        client_cpu_per_1k_ms: per_1k(client1.cpu - client0.cpu),
        server_util: (server1.cpu - server0.cpu).as_secs_f64() / wall,
        client_util: (client1.cpu - client0.cpu).as_secs_f64() / wall,
    })
}

/// Waits until `ready()`, re-checking on each notification; gives up after [`STALL`] without
/// one (events that were lost never come).
async fn wait(notify: &Notify, ready: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a notification in between is not missed.
        notified.as_mut().enable();
        if ready() || timeout(STALL, notified).await.is_err() {
            return;
        }
    }
}
