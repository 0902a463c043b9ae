//! `events-bench NATS_URL N`: two rates on one nats-server, in one run.
//!
//! - raw: a stream and a durable pull consumer of its own; N messages
//!   published (acks pipelined), pulled and acked one by one, as Tern's
//!   triggers do. The clock runs from the first publish to the last ack.
//! - tern: N events published the same way on `bench.quiet` (the handler
//!   returns at once), then on `bench.item` (it also prints a log line,
//!   which Tern ships to the scheduler), both taken by a Tern event
//!   function (`--on-event 'bench.*'`); the clock runs from
//!   the first publish until the trigger's consumer has acked them all
//!   (every event delivered to the function through the gateway and the
//!   worker, handled, and acked).
//!
//! Prints both rates and their ratio.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Publishes N messages with up to 1,000 acks outstanding.
async fn publish_all(js: &jetstream::Context, subject: &str, n: usize) -> Result<()> {
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        pending.push_back(js.publish(subject.to_string(), format!("event {i}").into()).await?);
        if pending.len() >= 1000 {
            pending.pop_front().unwrap().await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    Ok(())
}

async fn raw(js: &jetstream::Context, n: usize) -> Result<f64> {
    let _ = js.delete_stream("RAW_BENCH").await;
    let stream = js
        .create_stream(stream::Config {
            name: "RAW_BENCH".into(),
            subjects: vec!["rawbench.>".into()],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.stream().max_messages_per_batch(256).messages().await?;
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish_all(&js, "rawbench.item", n).await })
    };
    let mut acked = 0;
    while acked < n {
        let msg = messages.next().await.ok_or("raw consumer ended")??;
        msg.ack().await?;
        acked += 1;
    }
    publisher.await??;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("RAW_BENCH").await?;
    Ok(rate)
}

async fn tern(js: &jetstream::Context, n: usize, subject: &str) -> Result<f64> {
    let stream = js.get_stream("TERN_EVENTS").await?;
    let mut name = None;
    let mut infos = stream.consumers();
    while let Some(info) = infos.next().await {
        let info = info?;
        if info.config.filter_subject == "bench.*" {
            name = Some(info.name);
        }
    }
    let name = name.ok_or("no Tern trigger on bench.* (deploy the function first)")?;
    let start_floor = stream.consumer_info(&name).await?.ack_floor.stream_sequence;
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        let subject = subject.to_string();
        tokio::spawn(async move { publish_all(&js, &subject, n).await })
    };
    // Done when the trigger has acked everything published: nothing left
    // to deliver, nothing awaiting an ack.
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let info = stream.consumer_info(&name).await?;
        if publisher.is_finished() && info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("not done after 300 s: {info:?}").into());
        }
    }
    publisher.await??;
    let floor = stream.consumer_info(&name).await?.ack_floor.stream_sequence;
    if floor < start_floor + n as u64 {
        return Err(format!("ack floor {floor} short of {}", start_floor + n as u64).into());
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: events-bench NATS_URL N")?;
    let n: usize = args.next().ok_or("usage: events-bench NATS_URL N")?.parse()?;
    let js = jetstream::new(async_nats::connect(&url).await?);
    // Warm both paths (the function's first instance, the consumers).
    raw(&js, 1000).await?;
    tern(&js, 1000, "bench.quiet").await?;
    let raw_rate = raw(&js, n).await?;
    let quiet = tern(&js, n, "bench.quiet").await?;
    let logging = tern(&js, n, "bench.item").await?;
    println!("raw JetStream publish + consume + ack:          {raw_rate:>8.0} events/s");
    println!(
        "tern end to end, handler prints nothing:         {quiet:>8.0} events/s  ({:.2} of raw)",
        quiet / raw_rate
    );
    println!(
        "tern end to end, handler prints a log line each: {logging:>8.0} events/s  ({:.2} of raw)",
        logging / raw_rate
    );
    Ok(())
}
