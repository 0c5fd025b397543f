//! Run with: cargo build --release -p tower-sse-hub --bin tower-sse-hub &&
//! cargo run --release -p tower-sse-hub --example loadtest -- [--quick] [--runs 3]
//!
//! (The hub is measured as built: build it first, with the same profile.)
//!
//! With `--http2` (and `--quick`), another run: the hub alone over HTTP/1.1 and over HTTP/2,
//! RSS per idle stream and fan-out deliveries/s ([`http2`]). With `--mercure`, the hub's
//! Mercure endpoint against its own API ([`mercure`]).
//!
//! A side-by-side load run of the tower-sse hub as shipped (the `tower-sse-hub` binary with its
//! default flags: history 1,000, keep-alive 15 s, metrics and request logs on) against an
//! idiomatic axum baseline (`DashMap` of `tokio::sync::broadcast` senders, axum `Sse` with the
//! default `KeepAlive`, broadcast capacity 256 like tower-sse's default buffer), so that the
//! crate's performance claims are measured, not assumed (see BENCHMARKS.md).
//!
//! Each server runs in its own child process on its own `127.0.0.1` port, so that `/proc/<pid>`
//! gives its own RSS and CPU time: the hub binary, found where cargo builds it (`cargo build
//! -p tower-sse-hub --bin tower-sse-hub`), with `--bind` a free port and nothing else; the baseline is
//! this binary again (hidden `serve` subcommand), served as the hub serves
//! (`router.into_make_service()`, a listen backlog of 1,024). The parent opens raw TCP
//! subscribers (`GET /events?channel=..`, bytes scanned for `data:` lines) and publishes
//! 100-byte events with `POST /publish?channel=..`; each event carries its sequence number and
//! its send time (UNIX nanoseconds). Per server and run:
//!
//! - RSS per idle subscriber: (RSS with N idle streams - RSS before) / N, N = 10,000;
//! - deliveries/s at 10,000 (1,000 events) and 1,000 subscribers (5,000 events), 4 publishers
//!   going as fast as the slowest subscriber allows (at most 128 events in flight, so no
//!   subscriber falls 256 behind);
//! - publish-to-receive latency p50/p99/max at 1,000 subscribers, 500 events at 50/s and 1,000
//!   at 200/s (published on the clock, not waiting for answers);
//! - events lost (expected minus distinct received), in every phase;
//! - CPU time and write system calls per 1,000 deliveries, of the server; CPU time of this load
//!   generator too, to see whether it is the bottleneck.
//!
//! It prints a markdown table of medians over `--runs` runs and the ratios to the baseline.
//! Everything is bounded; the children are killed by PID at the end. `--quick` (under 30 s) is a
//! smoke check: it exits 0 when everything ran, nonzero if a server failed or subscribers could
//! not connect.
//!
//! One file per concern: [`baseline`] (the axum server), [`phases`] (what a run does and
//! measures), [`subscribers`] and [`publisher`] (the two ends of the load), [`histogram`]
//! (latencies), [`table`] (the report); the child processes and `/proc` are shared with other
//! examples in `examples/support/`, the listen backlog is the hub's (`tower_sse_hub::listen`).

#[path = "../support/child.rs"]
mod child;
#[path = "../support/proc.rs"]
mod proc;

mod baseline;
mod histogram;
mod http2;
mod mercure;
mod phases;
mod publisher;
mod subscribers;
mod table;

use std::{error::Error, io, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};
use tokio::process::Command;

use child::ChildServer;
use phases::Plan;

type BoxError = Box<dyn Error + Send + Sync>;

/// Side-by-side load test of the tower-sse hub and an axum `Sse` baseline on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Small counts, under 30 s: a smoke check whose figures mean little.
    #[arg(long)]
    quick: bool,
    /// The hub over HTTP/1.1 and HTTP/2 instead: RSS per idle stream, fan-out deliveries/s.
    #[arg(long)]
    http2: bool,
    /// The hub's Mercure endpoint against its own API instead: fan-out by kind of topic
    /// selector, and publish latency with many distinct selectors open.
    #[arg(long, conflicts_with = "http2")]
    mercure: bool,
    /// Runs per server; the table shows medians (default 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    runs: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the baseline on 127.0.0.1 and print its address (run by the load test).
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

/// The one runtime setting the baseline and the load generator share (`tower_sse_hub::main`
/// builds the same).
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The two servers, fresh processes: the hub as shipped, and the baseline.
async fn start() -> Result<[ChildServer; 2], BoxError> {
    let mut baseline = Command::new(std::env::current_exe()?);
    baseline.args(["serve", "--port", "0"]);
    let baseline = ChildServer::printing_addr("axum", baseline).await?;
    Ok([ChildServer::hub().await?, baseline])
}

async fn run(args: Args) -> Result<(), BoxError> {
    if args.http2 {
        let plan = if args.quick {
            http2::Plan::QUICK
        } else {
            http2::Plan::FULL
        };
        // Every stream of the run at once, some slack; the hub child inherits the limit.
        proc::raise_open_files(5_000 + 2_100 + 100)?;
        eprintln!("hub: {}", child::hub_binary()?.display());
        return http2::run(plan).await;
    }
    if args.mercure {
        let plan = if args.quick {
            mercure::Plan::QUICK
        } else {
            mercure::Plan::FULL
        };
        proc::raise_open_files(plan.streams() as u64 + 200)?;
        eprintln!("hub: {}", child::hub_binary()?.display());
        return mercure::run(plan).await;
    }
    let plan = if args.quick { Plan::QUICK } else { Plan::FULL };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }) as usize;
    // The children inherit the limit.
    proc::raise_open_files(plan.idle as u64 + 100)?;
    eprintln!("hub: {}", child::hub_binary()?.display());
    let started = Instant::now();
    let load_before = proc::loadavg();
    let (mut tower, mut axum) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Fresh processes each run, so RSS starts from scratch; alternate who goes first.
        let [mut hub, mut baseline] = start().await?;
        let mut order = [(&mut hub, &mut tower), (&mut baseline, &mut axum)];
        if run % 2 == 1 {
            order.reverse();
        }
        for (server, figures) in order {
            eprintln!(
                "run {}/{runs}: {} on {}",
                run + 1,
                server.name(),
                server.addr
            );
            let measured = phases::measure(server, plan).await?;
            eprintln!("  {}", measured.summary());
            figures.push(measured);
        }
    }
    println!(
        "tower-sse hub vs axum `Sse` baseline, {runs} run(s){}, {} s; load average {load_before} \
         before, {} after; {} cores\n",
        if args.quick { ", --quick" } else { "" },
        started.elapsed().as_secs(),
        proc::loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!("{}", table::table(plan, &tower, &axum));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = runtime()
        .map_err(BoxError::from)
        .and_then(|rt| match args.command {
            Some(Cmd::Serve { port }) => rt.block_on(baseline::serve(port)),
            None => rt.block_on(run(args)),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::FAILURE
        }
    }
}
