//! `--mercure`: the hub's Mercure endpoint against its own API, in one run of the hub as
//! shipped (default flags, no key).
//!
//! 1. Fan-out: the same subscribers and events on four kinds of stream, each on a fresh hub:
//!    `/events?channel=T` fed by `POST /publish`, and `/.well-known/mercure` fed by Mercure
//!    forms, with an exact topic (a channel), a URI template and `*` (routes): deliveries/s,
//!    publishers going as fast as the slowest subscriber allows; then latency p50/p99 at a
//!    fixed rate.
//! 2. Routes: publish latency p50/p99 and the hub's CPU per publish with 0, then many,
//!    distinct template selectors open (one idle stream each, none matching), so that what a
//!    publish pays per distinct selector shows.

use std::{fmt::Write as _, net::SocketAddr};

use crate::{
    BoxError,
    child::ChildServer,
    phases::{Pace, Phase, phase},
    proc,
    publisher::Publisher,
    subscribers::Subscribers,
};

/// Counts for one run; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    subscribers: usize,
    burst_events: u64,
    latency_events: u64,
    routes: [usize; 3],
}

impl Plan {
    pub const FULL: Plan = Plan {
        subscribers: 1_000,
        burst_events: 3_000,
        latency_events: 500,
        routes: [0, 1_000, 5_000],
    };
    pub const QUICK: Plan = Plan {
        subscribers: 100,
        burst_events: 200,
        latency_events: 50,
        routes: [0, 100, 300],
    };

    /// The most streams open at once.
    pub fn streams(self) -> usize {
        self.subscribers.max(self.routes[2] + 100)
    }
}

const TOPIC: &str = "https://example.com/books/1";

/// The kinds of stream compared.
const KINDS: [(&str, &str); 4] = [
    (
        "/events, POST /publish",
        "/events?channel=https%3A%2F%2Fexample.com%2Fbooks%2F1",
    ),
    (
        "Mercure, exact topic",
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1",
    ),
    (
        "Mercure, URI template",
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D",
    ),
    ("Mercure, `*`", "/.well-known/mercure?topic=*"),
];

fn publisher(kind: usize, addr: SocketAddr) -> Result<Publisher, BoxError> {
    match kind {
        0 => Publisher::new(addr, "https%3A%2F%2Fexample.com%2Fbooks%2F1"),
        _ => Publisher::mercure(addr, TOPIC),
    }
}

pub async fn run(plan: Plan) -> Result<(), BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "| stream | deliveries/s ({} subscribers) | p50 / p99 at 200/s (µs) | hub CPU ms per 1k deliveries | lost |",
        plan.subscribers
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let mut base = None;
    for (kind, (name, path)) in KINDS.iter().enumerate() {
        let mut hub = ChildServer::hub().await?;
        let events = 10 + plan.burst_events + plan.latency_events;
        let subs = Subscribers::connect_to(hub.addr, path, plan.subscribers, events).await?;
        let publisher = publisher(kind, hub.addr)?;
        phase(&mut hub, &subs, &publisher, 0..10, Pace::Rate(200)).await?;
        let burst = 10..10 + plan.burst_events;
        let burst = phase(&mut hub, &subs, &publisher, burst.clone(), Pace::Window).await?;
        let latency = 10 + plan.burst_events..events;
        let latency = phase(&mut hub, &subs, &publisher, latency, Pace::Rate(200)).await?;
        let ratio = match base {
            None => {
                base = Some(burst.per_sec);
                String::new()
            }
            Some(base) => format!(" ({:.2}x)", burst.per_sec / base),
        };
        eprintln!("  {name}: {:.0} deliveries/s", burst.per_sec);
        writeln!(
            out,
            "| {name} | {:.0}{ratio} | {} / {} | {:.1} | {} |",
            burst.per_sec,
            latency.p50_us,
            latency.p99_us,
            burst.server_cpu_per_1k_ms,
            burst.lost + latency.lost,
        )?;
    }
    writeln!(
        out,
        "\n| distinct template selectors open | publish-to-receive p50 / p99 at 200/s (µs) | hub CPU ms per publish |"
    )?;
    writeln!(out, "|---|---|---|")?;
    let mut hub = ChildServer::hub().await?;
    let subs =
        Subscribers::connect_to(hub.addr, KINDS[1].1, 100, 10 * plan.latency_events + 10).await?;
    let publisher = publisher(1, hub.addr)?;
    phase(&mut hub, &subs, &publisher, 0..10, Pace::Rate(200)).await?;
    let mut open = Vec::new();
    let mut next = 10;
    for routes in plan.routes {
        // Idle streams, each with a template of its own that no update matches.
        let have: usize = open.iter().map(|s: &(usize, Subscribers)| s.0).sum();
        for first in (have..routes).step_by(500) {
            let last = routes.min(first + 500);
            for i in first..last {
                let path = format!(
                    "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fr{i}%2F%7Bid%7D"
                );
                open.push((1, Subscribers::connect_to(hub.addr, &path, 1, 1).await?));
            }
        }
        let seqs = next..next + plan.latency_events;
        next = seqs.end;
        let measured: Phase = phase(&mut hub, &subs, &publisher, seqs, Pace::Rate(200)).await?;
        let per_publish = measured.server_cpu_per_1k_ms * 100.0 / 1e3;
        eprintln!("  {routes} routes: p50 {} µs", measured.p50_us);
        writeln!(
            out,
            "| {routes} | {} / {} | {per_publish:.3} |",
            measured.p50_us, measured.p99_us
        )?;
    }
    println!(
        "Mercure endpoint vs the hub's own API, one hub per row, load average {}\n",
        proc::loadavg()
    );
    print!("{out}");
    Ok(())
}
