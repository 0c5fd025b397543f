//! A fixed workload for instruction counts, which repeat exactly whatever else the machine is
//! doing (unlike timings on shared cores): compare two commits by building this at each.
//!
//! Run with:
//! `cargo build --release --example icount && valgrind --tool=callgrind target/release/examples/icount fanout`
//! (`fanout`: 20,000 events to 100 subscribers that each take every one; `publish`: 200,000
//! events to a channel with one idle subscriber). See BENCHMARKS.md.

use tower_sse::{Broker, Event};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fanout = std::env::args().nth(1).as_deref() == Some("fanout");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let broker = Broker::builder().buffer(1024).build();
        let channels = broker.channel_rules().channels(["bench"])?;
        let mut subscriptions = Vec::new();
        for _ in 0..if fanout { 100 } else { 1 } {
            subscriptions.push(broker.subscribe(&channels).await?);
        }
        for _ in 0..if fanout { 20_000 } else { 200_000 } {
            let event = Event::default().data("0123456789");
            broker.publish("bench", event).await?;
            if fanout {
                for subscription in &mut subscriptions {
                    std::hint::black_box(subscription.recv().await);
                }
            }
        }
        Ok(())
    })
}
