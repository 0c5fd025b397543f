//! One Redis node against a 3-master Redis Cluster, both on loopback, through the library's
//! brokers (`redis::connect` and `redis::cluster::connect`), in one run: the same workload on
//! each, one markdown table with both side by side (issue 21's figures; see BENCHMARKS.md).
//!
//! Run with:
//! `cargo run --release --example redis_cluster_load --features redis` (about 10 s on 2
//! cores), or with `-- --quick` for small counts (a few seconds, a smoke run). Needs
//! `redis-server` and `redis-cli` on PATH; the servers are private children on free ports,
//! killed at the end.
//!
//! For each backend: two brokers, A (publisher) and B (subscribers), on 30 channels (spread
//! over the shards on the cluster). Each channel's history is filled first, so every measured
//! publish also trims it, as in a steady state. Then:
//!
//! 1. Fan-out: S subscriptions on B, each on one channel, read in tasks counting deliveries;
//!    M events of 100 bytes published on A round-robin over the channels by W publisher tasks
//!    (so W publishes in flight at most). Deliveries/s is every event counted at every
//!    subscription of B (one `recv` may carry several) over the wall time until the last
//!    arrived (or until none arrived for 3 s: the shortfall is printed); events/s is M over the time until the last publish
//!    returned. `INFO commandstats`, `cpu` and `errorstats` of every node are read before and
//!    after this batch (no subscriber changes during it), which gives the commands Redis ran
//!    per publish (the `EVALSHA` and the calls inside the script all count), the client round
//!    trips per publish (`EVALSHA`s, plus a `SCRIPT LOAD` and a second `EVALSHA` for each
//!    `NOSCRIPT`, the only retry the redis crate's `Script` makes) and Redis CPU per publish.
//!    The `INFO` calls themselves are left out.
//! 2. Latency, with the S subscriptions still there: events published at a fixed rate, each
//!    publish in its own task; the wall time of `publish(..).await`, and publish-to-receive at
//!    one more subscription on B over all 30 channels (the send time is in the data).
//!
//! 3. Hubs, on the cluster only: 1, then 10 brokers, each subscribing every channel (one
//!    stream each; as many hubs holding every channel), `M / 3` events published on A, and
//!    the Redis CPU per publish summed over the shards for each: what each further hub on a
//!    channel costs the shards (one more push per publish).
//! 4. One master down, on the cluster only: with one idle stream on B on each of 1,000 more
//!    channels, this process's CPU (A and B: their redis crate reconnecting, the recovery
//!    rounds) and the commands the other masters run, over a few seconds with every node up,
//!    then with the master of the first of those channels killed; then the time from its
//!    restart until its channel publishes again.
//!
//! Everything is bounded: each phase has a deadline and the run fails past it.

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "redis_cluster_load needs the `redis` feature: \
         cargo run --release --example redis_cluster_load --features redis"
    );
}

#[cfg(feature = "redis")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    load::main().await
}

#[cfg(feature = "redis")]
mod load {
    use std::{
        collections::BTreeMap,
        future::Future,
        sync::{
            Arc, LazyLock,
            atomic::{AtomicU64, AtomicUsize, Ordering},
        },
        time::{Duration, Instant},
    };

    use tokio::{sync::mpsc, task::JoinHandle};
    use tower_sse::{Broker, Event};
    use tower_sse_test_support::{
        redis_cluster::{RedisCluster, channel_key},
        redis_server::RedisServer,
    };

    type Error = Box<dyn std::error::Error>;

    const CHANNELS: usize = 30;
    const DATA: usize = 100;

    /// The clock that the latency events carry.
    static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

    struct Config {
        subscribers: usize,
        events: usize,
        window: usize,
        history: usize,
        latency_events: usize,
        latency_rate: u64,
        phase: Duration,
    }

    impl Config {
        fn new(quick: bool) -> Config {
            if quick {
                Config {
                    subscribers: 300,
                    events: 600,
                    window: 16,
                    history: 20,
                    latency_events: 100,
                    latency_rate: 200,
                    phase: Duration::from_secs(20),
                }
            } else {
                Config {
                    subscribers: 3_000,
                    events: 30_000,
                    window: 16,
                    history: 100,
                    latency_events: 500,
                    latency_rate: 200,
                    phase: Duration::from_secs(120),
                }
            }
        }
    }

    #[derive(Default)]
    struct Figures {
        fill_secs: f64,
        publish_secs: f64,
        deliver_secs: f64,
        deliveries: u64,
        dropped: u64,
        process_cpu_ms: f64,
        publish_p50: f64,
        publish_p99: f64,
        receive_p50: f64,
        receive_p99: f64,
        received: usize,
        commands: BTreeMap<String, u64>,
        noscript: u64,
        redis_cpu: Vec<f64>,
        shards: Vec<usize>,
    }

    pub async fn main() -> Result<(), Error> {
        let quick = std::env::args().any(|arg| arg == "--quick");
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let config = Config::new(quick);
        LazyLock::force(&BASE);
        let names: Vec<String> = (0..CHANNELS).map(|i| format!("load.{i}")).collect();

        eprintln!("single node: starting redis-server");
        let Some(server) = RedisServer::start().await else {
            return Err("redis-server is not installed".into());
        };
        let url = server.url();
        let a = tower_sse::redis::connect(builder(&config), &url).await?;
        let b = tower_sse::redis::connect(builder(&config), &url).await?;
        let mut single = run(&config, &a, &b, &names, std::slice::from_ref(&url)).await?;
        single.shards = vec![CHANNELS];
        a.close();
        b.close();
        drop(server);

        eprintln!("cluster: starting 3 masters");
        let Some(mut cluster) = RedisCluster::start(3, 0).await else {
            return Err("redis-server or redis-cli is not installed".into());
        };
        let urls = cluster.urls();
        let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
        let a = tower_sse::redis::cluster::connect(builder(&config), &seeds).await?;
        let b = tower_sse::redis::cluster::connect(builder(&config), &seeds).await?;
        let mut on_cluster = run(&config, &a, &b, &names, &urls).await?;
        let masters = cluster.masters().await;
        let mut shards = vec![0; masters.len()];
        for name in &names {
            let owner = cluster
                .node_for_slot(RedisCluster::slot_of(channel_key(name)))
                .await;
            if let Some(i) = masters.iter().position(|m| *m == owner) {
                shards[i] += 1;
            }
        }
        on_cluster.shards = shards;
        let hubs = per_hub(&config, &a, &names, &seeds, &urls).await?;
        let outage = outage(&config, &a, &b, &mut cluster).await?;
        a.close();
        b.close();
        drop(cluster);

        print(&config, quick, &single, &on_cluster);
        print_hubs(&hubs);
        outage.print();
        Ok(())
    }

    /// Redis CPU per publish, summed over the shards, with `hubs` brokers each holding every
    /// channel (one stream each): what each further hub on a channel costs the shards.
    struct PerHub {
        hubs: usize,
        events: usize,
        cpu_us: f64,
        busiest_us: f64,
    }

    /// HUB_COUNTS brokers (the hubs) each subscribe every channel; `events` published on A;
    /// every node's `INFO cpu` around it.
    async fn per_hub(
        config: &Config,
        a: &Broker,
        names: &[String],
        seeds: &[&str],
        nodes: &[String],
    ) -> Result<Vec<PerHub>, Error> {
        const HUB_COUNTS: [usize; 2] = [1, 10];
        let events = config.events / 3;
        let mut admins = admins(nodes).await?;
        let mut figures = Vec::new();
        for hubs in HUB_COUNTS {
            let delivered = Arc::new(AtomicU64::new(0));
            let mut brokers = Vec::new();
            let mut tasks: Vec<JoinHandle<()>> = Vec::new();
            for _ in 0..hubs {
                let hub = tower_sse::redis::cluster::connect(builder(config), seeds).await?;
                for name in names {
                    let mut subscription = hub
                        .subscribe(&hub.channel_rules().channels([name])?)
                        .await?;
                    let delivered = delivered.clone();
                    tasks.push(tokio::spawn(async move {
                        while let Some(frames) = subscription.recv().await {
                            delivered.fetch_add(frames_in(&frames), Ordering::Relaxed);
                        }
                    }));
                }
                brokers.push(hub);
            }
            let before = snapshot(&mut admins).await?;
            bounded(
                "publishing to the hubs",
                config.phase,
                publish_all(a, names, events, config.window),
            )
            .await??;
            let target = (events * hubs) as u64;
            settled(&delivered, target).await;
            let after = snapshot(&mut admins).await?;
            let cpu: Vec<f64> = before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.cpu - b.cpu)
                .collect();
            let missing = target.saturating_sub(delivered.load(Ordering::Relaxed));
            if missing > 0 {
                return Err(format!("{hubs} hubs: {missing} deliveries missing").into());
            }
            figures.push(PerHub {
                hubs,
                events,
                cpu_us: cpu.iter().sum::<f64>() * 1e6 / events as f64,
                // Each shard's share of the events is about its share of the channels: the
                // busiest per publish it took, as above.
                busiest_us: cpu.iter().copied().fold(0.0, f64::max) * 1e6 / events as f64,
            });
            for task in tasks {
                task.abort();
            }
            for hub in brokers {
                hub.close();
            }
        }
        Ok(figures)
    }

    fn print_hubs(hubs: &[PerHub]) {
        println!(
            "\n| hubs holding every channel (cluster) | Redis CPU per publish, all shards, µs | busiest shard's CPU per publish in all, µs |"
        );
        println!("|---:|---:|---:|");
        for row in hubs {
            println!(
                "| {} ({} events) | {:.1} | {:.1} |",
                row.hubs, row.events, row.cpu_us, row.busiest_us
            );
        }
        if let [one, many] = hubs {
            println!(
                "\nEach further hub on a channel: {:.2} µs of Redis CPU per publish (({:.1} - {:.1}) / {}).",
                (many.cpu_us - one.cpu_us) / (many.hubs - one.hubs) as f64,
                many.cpu_us,
                one.cpu_us,
                many.hubs - one.hubs,
            );
        }
    }

    /// What one master down costs this process, and the masters still up, and how long its
    /// channels take to publish again once it is back.
    struct Outage {
        idle: Window,
        down: Window,
        /// Publish-to-receive on a channel of another master, ms: p50, p99, count.
        quiet: (f64, f64, usize),
        pressed: (f64, f64, usize),
        /// Each new stream on the master's channels: refused, and how long it took, ms.
        refused: Vec<(bool, f64)>,
        back_after: Duration,
        resumed_after: Duration,
        dead_channels: usize,
        streams: usize,
    }

    /// One window of the outage phase: this process's CPU, in cores, and the commands the
    /// masters that stay up ran, by command.
    struct Window {
        secs: f64,
        cpu: f64,
        commands: BTreeMap<String, u64>,
    }

    impl Window {
        fn per_second(&self) -> f64 {
            self.commands.values().sum::<u64>() as f64 / self.secs
        }

        /// The eight commands run most, per second.
        fn breakdown(&self) -> String {
            let mut top: Vec<_> = self.commands.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = top
                .iter()
                .take(8)
                .map(|(command, calls)| format!("{command} {:.0}", **calls as f64 / self.secs))
                .collect();
            top.join(", ")
        }
    }

    impl Outage {
        fn print(&self) {
            println!(
                "\nOne master down (no replica), {} idle streams on B, one per channel \
                 ({:.0} s windows):\n\n\
                 | | all up | one master down |\n|---|---:|---:|\n\
                 | this process (A + B), % of a core | {:.1} | {:.1} |\n\
                 | commands/s on the masters still up | {:.0} | {:.0} |\n\
                 | of which, per second | {} | {} |\n\n\
                 While it was down, events on a channel of another master took {:.2} ms \
                 (p50) / {:.2} ms (p99) from publish to B's stream ({} events); with {} tasks \
                 opening new streams on its channels meanwhile ({} tries, {} refused, each \
                 answered in {:.0} ms p50 / {:.0} ms p99), {:.2} / {:.2} ms ({} events).\n\n\
                 Once restarted, its channels published again after {:.1} s, and B's streams on \
                 all {} of its channels had their next event {:.1} s after the restart.",
                self.streams,
                self.idle.secs,
                self.idle.cpu * 100.0,
                self.down.cpu * 100.0,
                self.idle.per_second(),
                self.down.per_second(),
                self.idle.breakdown(),
                self.down.breakdown(),
                self.quiet.0,
                self.quiet.1,
                self.quiet.2,
                PRESSURE,
                self.refused.len(),
                self.refused.iter().filter(|(refused, _)| *refused).count(),
                percentiles(self.refused.iter().map(|(_, ms)| *ms).collect()).0,
                percentiles(self.refused.iter().map(|(_, ms)| *ms).collect()).1,
                self.pressed.0,
                self.pressed.1,
                self.pressed.2,
                self.back_after.as_secs_f64(),
                self.dead_channels,
                self.resumed_after.as_secs_f64(),
            );
        }
    }

    /// Tasks opening new streams on the master's channels while it is down.
    const PRESSURE: usize = 4;

    /// Publish-to-receive, ms (p50, p99, count), of events published on `channel` every 20 ms
    /// for `window`, read from `stream`.
    async fn healthy_latency(
        a: &Broker,
        channel: &str,
        stream: &mut tower_sse::Subscription,
        window: Duration,
    ) -> Result<(f64, f64, usize), Error> {
        let mut took = Vec::new();
        let end = Instant::now() + window;
        while Instant::now() < end {
            let start = Instant::now();
            a.publish(channel, Event::default().data(data('H'))).await?;
            bounded(
                "an event on a healthy channel",
                Duration::from_secs(30),
                stream.recv(),
            )
            .await?
            .ok_or("the stream ended")?;
            took.push(start.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let count = took.len();
        let (p50, p99) = percentiles(took);
        Ok((p50, p99, count))
    }

    /// This process's CPU and the commands of the nodes of `admins` over `window`.
    async fn observe(
        window: Duration,
        admins: &mut [redis::aio::MultiplexedConnection],
    ) -> Result<Window, Error> {
        let before = (process_cpu(), snapshot(admins).await?);
        tokio::time::sleep(window).await;
        let after = (process_cpu(), snapshot(admins).await?);
        let mut commands = BTreeMap::new();
        for (b, a) in before.1.iter().zip(&after.1) {
            for (name, calls) in &a.calls {
                let delta = calls - b.calls.get(name).copied().unwrap_or(0);
                if delta > 0 {
                    *commands.entry(name.clone()).or_default() += delta;
                }
            }
        }
        Ok(Window {
            secs: window.as_secs_f64(),
            cpu: (after.0 - before.0) / window.as_secs_f64(),
            commands,
        })
    }

    /// Channels of the outage phase, one stream each on B: enough that what the recovery
    /// costs per channel shows.
    const OUTAGE_CHANNELS: usize = 1_000;

    async fn outage(
        config: &Config,
        a: &Broker,
        b: &Broker,
        cluster: &mut RedisCluster,
    ) -> Result<Outage, Error> {
        let window = if config.subscribers < 1_000 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        let names: Vec<String> = (0..OUTAGE_CHANNELS)
            .map(|i| format!("outage.{i}"))
            .collect();
        let mut streams = Vec::new();
        for name in &names {
            streams.push(b.subscribe(&b.channel_rules().channels([name])?).await?);
        }
        let master = cluster
            .node_for_slot(RedisCluster::slot_of(channel_key(&names[0])))
            .await;
        let mut dead = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let owner = cluster
                .node_for_slot(RedisCluster::slot_of(channel_key(name)))
                .await;
            if owner == master {
                dead.push(i);
            }
        }
        let mut admins = Vec::new();
        for node in cluster.masters().await {
            if node != master {
                admins.push(
                    redis::Client::open(format!("redis://{node}"))?
                        .get_multiplexed_async_connection()
                        .await?,
                );
            }
        }
        // The subscriptions' backfills done.
        tokio::time::sleep(window).await;
        let idle = observe(window, &mut admins).await?;
        eprintln!("cluster: killing master {master}");
        cluster.kill(master);
        // Its connections are found closed, and the recovery starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let down = observe(window, &mut admins).await?;
        // Streams on a healthy channel while new streams on the master's channels are refused.
        let healthy = (0..names.len())
            .find(|i| !dead.contains(i))
            .ok_or("no channel on another master")?;
        let mut doomed = Vec::new();
        for k in 0.. {
            let name = format!("refused.{k}");
            if cluster
                .node_for_slot(RedisCluster::slot_of(channel_key(&name)))
                .await
                == master
            {
                doomed.push(name);
            }
            if doomed.len() == 400 {
                break;
            }
        }
        eprintln!(
            "cluster: a healthy channel, {}, while the master is down",
            names[healthy]
        );
        let quiet = healthy_latency(a, &names[healthy], &mut streams[healthy], window).await?;
        eprintln!("cluster: the same, with new streams on the master's channels refused");
        let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
        let pressing = Arc::new(AtomicUsize::new(0));
        let mut pressure = Vec::new();
        for worker in 0..PRESSURE {
            let (b, doomed, refused, pressing) =
                (b.clone(), doomed.clone(), refused.clone(), pressing.clone());
            pressure.push(tokio::spawn(async move {
                let mut k = worker;
                while k < doomed.len() && pressing.load(Ordering::Relaxed) == 0 {
                    let start = Instant::now();
                    let channels = b.channel_rules().channels([&doomed[k]]).expect("a name");
                    let outcome = b.subscribe(&channels).await;
                    let took = start.elapsed().as_secs_f64() * 1000.0;
                    refused.lock().unwrap().push((outcome.is_err(), took));
                    k += PRESSURE;
                }
            }));
        }
        let pressed = healthy_latency(a, &names[healthy], &mut streams[healthy], window).await?;
        pressing.store(1, Ordering::Relaxed);
        for task in pressure {
            bounded("the new streams", config.phase, task).await??;
        }
        let refused = std::mem::take(&mut *refused.lock().unwrap());
        cluster.restart(master).await;
        let back = Instant::now();
        bounded(
            "the master's channel publishing again",
            config.phase,
            async {
                while a
                    .publish(&names[0], Event::default().data(data('R')))
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await?;
        let back_after = back.elapsed();
        // An event on each of its channels; each of B's streams there gets it once its
        // subscription is back (the event itself, or the backfill that follows it).
        bounded(
            "B's streams on its channels resuming",
            config.phase,
            async {
                for &i in &dead {
                    while a
                        .publish(&names[i], Event::default().data(data('R')))
                        .await
                        .is_err()
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                for &i in &dead {
                    streams[i].recv().await;
                }
            },
        )
        .await?;
        Ok(Outage {
            idle,
            down,
            quiet,
            pressed,
            refused,
            back_after,
            resumed_after: back.elapsed(),
            dead_channels: dead.len(),
            streams: streams.len(),
        })
    }

    fn builder(config: &Config) -> tower_sse::BrokerBuilder {
        // A buffer for every event of a channel in the batch: a slow reader is not cut off
        // (the default buffer is 256).
        Broker::builder()
            .history(config.history)
            .buffer(config.events / CHANNELS + 64)
    }

    async fn bounded<T>(
        what: &str,
        limit: Duration,
        future: impl Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(limit, future)
            .await
            .map_err(|_| format!("{what}: not done within {limit:?}").into())
    }

    /// 100 bytes: a tag, the send time in microseconds, padding.
    fn data(tag: char) -> String {
        let micros = BASE.elapsed().as_micros();
        let mut data = format!("{tag}{micros:020}-");
        data.extend(std::iter::repeat_n('x', DATA - data.len()));
        data
    }

    /// Publishes `count` events round-robin over `names`, `window` at a time; the time until
    /// the last publish returned.
    async fn publish_all(
        a: &Broker,
        names: &[String],
        count: usize,
        window: usize,
    ) -> Result<Duration, Error> {
        let start = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let mut publishers = Vec::new();
        for _ in 0..window {
            let (a, names, next) = (a.clone(), names.to_vec(), next.clone());
            publishers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), String>(());
                    }
                    let event = Event::default().data(data('F'));
                    a.publish(&names[i % names.len()], event)
                        .await
                        .map_err(|err| err.to_string())?;
                }
            }));
        }
        for publisher in publishers {
            publisher.await??;
        }
        Ok(start.elapsed())
    }

    /// Deliveries expected at B for `count` events round-robin over the channels, with the
    /// subscriptions `i` on channel `i % CHANNELS`.
    fn expected(subscribers: usize, count: usize) -> u64 {
        (0..count)
            .map(|event| {
                let channel = event % CHANNELS;
                (subscribers + CHANNELS - 1 - channel) / CHANNELS
            })
            .sum::<usize>() as u64
    }

    /// The events in a delivery: each frame ends with a blank line, and the data has no
    /// line break.
    fn frames_in(frames: &[u8]) -> u64 {
        frames.windows(2).filter(|pair| pair == b"\n\n").count() as u64
    }

    async fn wait_for(counter: &AtomicU64, target: u64) {
        while counter.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until `counter` reaches `target`, or stays put for 3 s (deliveries missing);
    /// when it last moved.
    async fn settled(counter: &AtomicU64, target: u64) -> Instant {
        let (mut seen, mut last) = (counter.load(Ordering::Relaxed), Instant::now());
        while seen < target && last.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = counter.load(Ordering::Relaxed);
            if now != seen {
                (seen, last) = (now, Instant::now());
            }
        }
        last
    }

    async fn run(
        config: &Config,
        a: &Broker,
        b: &Broker,
        names: &[String],
        nodes: &[String],
    ) -> Result<Figures, Error> {
        let mut figures = Figures::default();
        let mut admins = admins(nodes).await?;

        // Histories filled: every measured publish trims one event, as in a steady state.
        let fill = config.history * CHANNELS;
        let took = bounded(
            "filling the histories",
            config.phase,
            publish_all(a, names, fill, config.window),
        )
        .await??;
        figures.fill_secs = took.as_secs_f64();

        // The subscribers, and a check that every one is live.
        let delivered = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for i in 0..config.subscribers {
            let channels = b.channel_rules().channels([&names[i % CHANNELS]])?;
            let mut subscription = b.subscribe(&channels).await?;
            let (delivered, dropped) = (delivered.clone(), dropped.clone());
            tasks.push(tokio::spawn(async move {
                // One delivery may carry several events (whatever waited): one frame each.
                while let Some(frames) = subscription.recv().await {
                    delivered.fetch_add(frames_in(&frames), Ordering::Relaxed);
                }
                dropped.fetch_add(1, Ordering::Relaxed);
            }));
        }
        let (latencies, mut received) = mpsc::unbounded_channel();
        let mut probe = b.subscribe(&b.channel_rules().channels(names)?).await?;
        tasks.push(tokio::spawn(async move {
            while let Some(frames) = probe.recv().await {
                let now = BASE.elapsed().as_micros();
                for frame in frames.split(|&b| b == b'\n') {
                    let Some(data) = frame.strip_prefix(b"data: L") else {
                        continue;
                    };
                    let sent: u128 = std::str::from_utf8(&data[..20])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(now);
                    let _ = latencies.send(now.saturating_sub(sent));
                }
            }
        }));
        publish_all(a, names, CHANNELS, 1).await?;
        let ready = expected(config.subscribers, CHANNELS);
        bounded(
            "the first event on each channel to reach every subscriber",
            config.phase,
            wait_for(&delivered, ready),
        )
        .await?;

        // 1 and 3: fan-out, with the nodes' counters read around it.
        let before = snapshot(&mut admins).await?;
        let cpu = process_cpu();
        let start = Instant::now();
        let target = ready + expected(config.subscribers, config.events);
        let publishing = publish_all(a, names, config.events, config.window);
        let (published, last) = bounded("fan-out", config.phase, async {
            tokio::join!(publishing, settled(&delivered, target))
        })
        .await?;
        figures.publish_secs = published?.as_secs_f64();
        figures.deliver_secs = (last - start).as_secs_f64();
        figures.process_cpu_ms = (process_cpu() - cpu) * 1000.0;
        figures.deliveries = delivered.load(Ordering::Relaxed) - ready;
        let after = snapshot(&mut admins).await?;
        for (b, a) in before.iter().zip(&after) {
            for (name, calls) in &a.calls {
                let delta = calls - b.calls.get(name).copied().unwrap_or(0);
                if delta > 0 {
                    *figures.commands.entry(name.clone()).or_default() += delta;
                }
            }
            figures.noscript += a.noscript - b.noscript;
            figures.redis_cpu.push(a.cpu - b.cpu);
        }

        // 2: latency at a fixed rate.
        while received.try_recv().is_ok() {}
        let mut ticks =
            tokio::time::interval(Duration::from_micros(1_000_000 / config.latency_rate));
        let mut publishes = Vec::new();
        for i in 0..config.latency_events {
            ticks.tick().await;
            let (a, name) = (a.clone(), names[i % CHANNELS].clone());
            publishes.push(tokio::spawn(async move {
                let event = Event::default().data(data('L'));
                let start = Instant::now();
                a.publish(&name, event)
                    .await
                    .map_err(|err| err.to_string())?;
                Ok::<f64, String>(start.elapsed().as_secs_f64() * 1000.0)
            }));
        }
        let mut took = Vec::new();
        for publish in publishes {
            took.push(bounded("a publish", config.phase, publish).await???);
        }
        (figures.publish_p50, figures.publish_p99) = percentiles(took);
        let mut arrived = Vec::new();
        let _ = bounded("the latency events", Duration::from_secs(10), async {
            while arrived.len() < config.latency_events {
                match received.recv().await {
                    Some(micros) => arrived.push(micros as f64 / 1000.0),
                    None => break,
                }
            }
        })
        .await;
        figures.received = arrived.len();
        (figures.receive_p50, figures.receive_p99) = percentiles(arrived);
        figures.dropped = dropped.load(Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        Ok(figures)
    }

    fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
        if values.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        values.sort_by(f64::total_cmp);
        let at =
            |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        (at(0.50), at(0.99))
    }

    /// This process's CPU time (user + system), in seconds, from `/proc/self/stat`.
    fn process_cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15, the 12th and 13th after the name; in ticks
        // of 1/100 s on Linux.
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        ticks(11).unwrap_or(0.0) / 100.0 + ticks(12).unwrap_or(0.0) / 100.0
    }

    /// A connection to each of `nodes` (URLs), for `INFO`.
    async fn admins(nodes: &[String]) -> Result<Vec<redis::aio::MultiplexedConnection>, Error> {
        let mut admins = Vec::new();
        for url in nodes {
            admins.push(
                redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        Ok(admins)
    }

    struct Snapshot {
        calls: BTreeMap<String, u64>,
        noscript: u64,
        cpu: f64,
    }

    /// `INFO commandstats cpu errorstats` of every node (the `INFO` calls left out).
    async fn snapshot(
        admins: &mut [redis::aio::MultiplexedConnection],
    ) -> Result<Vec<Snapshot>, Error> {
        let mut all = Vec::new();
        for conn in admins {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .arg("cpu")
                .arg("errorstats")
                .query_async(conn)
                .await?;
            let mut snapshot = Snapshot {
                calls: BTreeMap::new(),
                noscript: 0,
                cpu: 0.0,
            };
            for line in info.lines() {
                let Some((key, value)) = line.trim().split_once(':') else {
                    continue;
                };
                let field = |name: &str| {
                    value.split(',').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k == name).then(|| v.parse::<u64>().ok()).flatten()
                    })
                };
                if let Some(command) = key.strip_prefix("cmdstat_") {
                    if command != "info" {
                        snapshot
                            .calls
                            .insert(command.to_owned(), field("calls").unwrap_or(0));
                    }
                } else if key == "errorstat_NOSCRIPT" {
                    snapshot.noscript = field("count").unwrap_or(0);
                } else if key == "used_cpu_sys" || key == "used_cpu_user" {
                    snapshot.cpu += value.parse::<f64>().unwrap_or(0.0);
                }
            }
            all.push(snapshot);
        }
        Ok(all)
    }

    fn print(config: &Config, quick: bool, single: &Figures, cluster: &Figures) {
        let events = config.events as f64;
        let per = |f: &Figures, names: &[&str]| {
            names
                .iter()
                .map(|n| f.commands.get(*n).copied().unwrap_or(0))
                .sum::<u64>() as f64
                / events
        };
        let total = |f: &Figures| f.commands.values().sum::<u64>() as f64 / events;
        let trips = |f: &Figures| per(f, &["evalsha", "script|load"]);
        let redis_us = |f: &Figures| f.redis_cpu.iter().sum::<f64>() * 1e6 / events;
        let busiest_us =
            |f: &Figures| f.redis_cpu.iter().copied().fold(0.0, f64::max) * 1e6 / events;
        let shards = |f: &Figures| {
            f.shards
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/")
        };
        let rows: Vec<(String, f64, f64, usize)> = vec![
            (
                "publish, events/s".into(),
                events / single.publish_secs,
                events / cluster.publish_secs,
                0,
            ),
            (
                "fan-out, deliveries/s at B".into(),
                single.deliveries as f64 / single.deliver_secs,
                cluster.deliveries as f64 / cluster.deliver_secs,
                0,
            ),
            (
                "fan-out wall time, s".into(),
                single.deliver_secs,
                cluster.deliver_secs,
                2,
            ),
            (
                "filling the histories, events/s".into(),
                (config.history * CHANNELS) as f64 / single.fill_secs,
                (config.history * CHANNELS) as f64 / cluster.fill_secs,
                0,
            ),
            (
                "this process's CPU (A + B), ms per 1,000 deliveries".into(),
                single.process_cpu_ms * 1000.0 / single.deliveries as f64,
                cluster.process_cpu_ms * 1000.0 / cluster.deliveries as f64,
                2,
            ),
            (
                format!("publish latency p50, ms ({}/s)", config.latency_rate),
                single.publish_p50,
                cluster.publish_p50,
                2,
            ),
            (
                "publish latency p99, ms".into(),
                single.publish_p99,
                cluster.publish_p99,
                2,
            ),
            (
                "publish-to-receive p50, ms".into(),
                single.receive_p50,
                cluster.receive_p50,
                2,
            ),
            (
                "publish-to-receive p99, ms".into(),
                single.receive_p99,
                cluster.receive_p99,
                2,
            ),
            (
                "Redis commands per publish (as Redis counts them)".into(),
                total(single),
                total(cluster),
                2,
            ),
            (
                "  of which EVALSHA".into(),
                per(single, &["evalsha"]),
                per(cluster, &["evalsha"]),
                2,
            ),
            (
                "  of which PUBLISH / SPUBLISH (in the script)".into(),
                per(single, &["publish", "spublish"]),
                per(cluster, &["publish", "spublish"]),
                2,
            ),
            (
                "  of which XADD (in the script)".into(),
                per(single, &["xadd"]),
                per(cluster, &["xadd"]),
                2,
            ),
            (
                "client round trips per publish (EVALSHA + SCRIPT LOAD)".into(),
                trips(single),
                trips(cluster),
                2,
            ),
            (
                "NOSCRIPT replies in the batch".into(),
                single.noscript as f64,
                cluster.noscript as f64,
                0,
            ),
            (
                "Redis CPU per publish, all nodes, µs".into(),
                redis_us(single),
                redis_us(cluster),
                1,
            ),
            (
                "Redis CPU per publish, busiest node, µs".into(),
                busiest_us(single),
                busiest_us(cluster),
                1,
            ),
        ];
        println!(
            "\n{} subscribers on B ({} per channel), {} channels ({} channels per node), {} \
             events of {} bytes by {} publisher tasks, history {} per channel (full, so each \
             publish trims); latency: {} events at {}/s.{}\n",
            config.subscribers,
            config.subscribers / CHANNELS,
            CHANNELS,
            format_args!("single {}, cluster {}", shards(single), shards(cluster)),
            config.events,
            DATA,
            config.window,
            config.history,
            config.latency_events,
            config.latency_rate,
            if quick { " Quick mode." } else { "" },
        );
        println!("| | single node | 3-master cluster | cluster / single |");
        println!("|---|---:|---:|---:|");
        for (name, s, c, decimals) in rows {
            let ratio = if s > 0.0 {
                format!("{:.2}x", c / s)
            } else {
                "-".into()
            };
            println!("| {name} | {s:.decimals$} | {c:.decimals$} | {ratio} |");
        }
        println!(
            "\nLost: single {} deliveries short, {} subscriptions ended, {}/{} latency events \
             received; cluster {} short, {} ended, {}/{} received.",
            expected(config.subscribers, config.events) - single.deliveries,
            single.dropped,
            single.received,
            config.latency_events,
            expected(config.subscribers, config.events) - cluster.deliveries,
            cluster.dropped,
            cluster.received,
            config.latency_events,
        );
        for (name, f) in [("single node", single), ("cluster", cluster)] {
            let breakdown: Vec<String> = f
                .commands
                .iter()
                .map(|(command, calls)| format!("{command} {:.2}", *calls as f64 / events))
                .collect();
            println!(
                "Commands per publish, {name}: {}; Redis CPU per node, s: {:?}.",
                breakdown.join(", "),
                f.redis_cpu
                    .iter()
                    .map(|s| (s * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
    }
}
