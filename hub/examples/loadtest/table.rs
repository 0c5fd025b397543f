//! The markdown table: medians over the runs, the ratios to the baseline, the targets.

use std::fmt::Write as _;

use crate::phases::{Figures, Plan};

fn median(runs: &[Figures], metric: impl Fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(metric).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a row of the table must show, from the issue.
#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    /// tower-sse at least this many times the baseline.
    AtLeast(f64),
    /// tower-sse at most this many times the baseline.
    AtMost(f64),
    /// tower-sse exactly zero.
    Zero,
}

/// The markdown table of medians over the runs, with ratios and targets.
pub fn table(plan: Plan, tower: &[Figures], axum: &[Figures]) -> String {
    type Metric = fn(&Figures) -> f64;
    let (idle, subs, loss) = (plan.idle, plan.subscribers, plan.loss_events);
    let rows: [(String, Metric, Target); 20] = [
        (
            format!("deliveries/s, {idle} subscribers"),
            |f| f.burst_idle.per_sec,
            Target::AtLeast(1.5),
        ),
        (
            format!("deliveries/s, {subs} subscribers"),
            |f| f.burst.per_sec,
            Target::None,
        ),
        (
            format!("latency p50 µs, {subs} subs, 50 ev/s"),
            |f| f.latency.p50_us as f64,
            Target::None,
        ),
        (
            format!("latency p99 µs, {subs} subs, 50 ev/s"),
            |f| f.latency.p99_us as f64,
            Target::AtMost(1.0),
        ),
        (
            format!("latency max µs, {subs} subs, 50 ev/s"),
            |f| f.latency.max_us as f64,
            Target::None,
        ),
        (
            format!("latency p50 µs, {subs} subs, 200 ev/s"),
            |f| f.loss.p50_us as f64,
            Target::None,
        ),
        (
            format!("latency p99 µs, {subs} subs, 200 ev/s"),
            |f| f.loss.p99_us as f64,
            Target::None,
        ),
        (
            format!("latency max µs, {subs} subs, 200 ev/s"),
            |f| f.loss.max_us as f64,
            Target::None,
        ),
        (
            format!("events lost, {subs} subs, {loss} ev at 200/s"),
            |f| f.loss.lost as f64,
            Target::Zero,
        ),
        (
            "events lost, all phases".to_owned(),
            |f| (f.burst_idle.lost + f.latency.lost + f.loss.lost + f.burst.lost) as f64,
            Target::None,
        ),
        (
            format!("RSS bytes per idle subscriber, {idle} open"),
            |f| f.rss_per_idle,
            Target::AtMost(0.7),
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {subs} subs"),
            |f| f.burst.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server CPU ms per 1,000 deliveries, {subs} subs, 50 ev/s"),
            |f| f.latency.server_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {subs} subs"),
            |f| f.burst.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server write syscalls per 1,000 deliveries, {subs} subs, 50 ev/s"),
            |f| f.latency.server_writes_per_1k,
            Target::None,
        ),
        (
            format!("server CPU use (cores), {idle} subs, max speed"),
            |f| f.burst_idle.server_util,
            Target::None,
        ),
        (
            format!("load generator CPU ms per 1,000 deliveries, {idle} subs"),
            |f| f.burst_idle.client_cpu_per_1k_ms,
            Target::None,
        ),
        (
            format!("load generator CPU use (cores), {idle} subs, max speed"),
            |f| f.burst_idle.client_util,
            Target::None,
        ),
    ];
    let mut out = String::from(
        "| metric (median) | tower-sse | axum `Sse` | ratio | target |\n|---|---:|---:|---:|---|\n",
    );
    for (label, metric, target) in rows {
        let (t, a) = (median(tower, metric), median(axum, metric));
        let ratio = if a > 0.0 {
            format!("{:.2}x", t / a)
        } else {
            "-".to_owned()
        };
        let verdict = |met: bool| if met { "met" } else { "missed" };
        let target = match target {
            Target::None => String::new(),
            Target::AtLeast(x) => format!(">= {x}x: {}", verdict(t >= x * a)),
            Target::AtMost(x) => format!("<= {x}x: {}", verdict(t <= x * a)),
            Target::Zero => format!("0: {}", verdict(t == 0.0)),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {ratio} | {target} |",
            num(t),
            num(a)
        );
    }
    out
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
