//! Criterion benches: event encoding, publish and fan-out, body polling.
//!
//! Run with: `cargo bench --bench fanout` (add `-- encode` etc. to pick a group).

use std::{hint::black_box, pin::Pin, task::Context, time::Duration};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::task::noop_waker_ref;
use http_body::Body;
use tower::ServiceExt;
use tower_sse::{Broker, Event, SseService, Subscription};

fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("short", Event::default().event("greeting").data("Hello!")),
        ("4KiB", Event::default().data("x".repeat(4096))),
        ("many-lines", Event::default().data("line\n".repeat(200))),
        (
            "unicode",
            Event::default().data("héllo wörld ✓ 🚀 مرحبا\r\n".repeat(20)),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, event) in events() {
        group.throughput(Throughput::Bytes(event.to_bytes().unwrap().len() as u64));
        group.bench_function(name, |b| b.iter(|| black_box(&event).to_bytes().unwrap()));
    }
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn subscribers(rt: &tokio::runtime::Runtime, broker: &Broker, n: usize) -> Vec<Subscription> {
    let channels = broker.channel_rules().channels(["bench"]).unwrap();
    rt.block_on(async {
        let mut subs = Vec::with_capacity(n);
        for _ in 0..n {
            subs.push(broker.subscribe(&channels).await.unwrap());
        }
        subs
    })
}

/// Publisher cost alone, and publish plus every subscriber taking the event.
fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish");
    group.measurement_time(Duration::from_secs(5));
    for n in [1usize, 100, 10_000] {
        let broker = Broker::builder().buffer(1024).build();
        let mut subs = subscribers(&rt, &broker, n);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("publisher", n), &n, |b, _| {
            b.iter(|| rt.block_on(broker.publish("bench", Event::default().data("0123456789"))))
        });
        // Drain so the delivery bench starts from empty buffers.
        rt.block_on(async {
            for sub in &mut subs {
                while futures_util::FutureExt::now_or_never(sub.recv())
                    .flatten()
                    .is_some()
                {}
            }
        });
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("delivered", n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    broker
                        .publish("bench", Event::default().data("0123456789"))
                        .await
                        .unwrap();
                    for sub in &mut subs {
                        black_box(sub.recv().await);
                    }
                })
            })
        });
    }
    group.finish();
}

/// One poll of a stream body with many queued events: coalesced into one frame.
fn body(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("body");
    for queued in [1usize, 64, 1024] {
        let broker = Broker::builder().buffer(2048).build();
        group.throughput(Throughput::Elements(queued as u64));
        group.bench_with_input(
            BenchmarkId::new("poll_frame", queued),
            &queued,
            |b, &queued| {
                b.iter_batched(
                    || {
                        rt.block_on(async {
                            let req = http::Request::get("/?channel=bench").body(()).unwrap();
                            let res = SseService::new(broker.clone()).oneshot(req).await.unwrap();
                            for _ in 0..queued {
                                broker
                                    .publish("bench", Event::default().data("0123456789"))
                                    .await
                                    .unwrap();
                            }
                            res.into_body()
                        })
                    },
                    |mut body| {
                        // The keep-alive timer needs the runtime's clock.
                        let _clock = rt.enter();
                        let mut cx = Context::from_waker(noop_waker_ref());
                        let mut bytes = 0;
                        while let std::task::Poll::Ready(Some(Ok(frame))) =
                            Pin::new(&mut body).poll_frame(&mut cx)
                        {
                            bytes += frame.into_data().map(|d| d.len()).unwrap_or(0);
                        }
                        black_box(bytes)
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, encode, publish, body);
criterion_main!(benches);
