//! Events whose delivery fails for reasons that are not the handler's: a
//! batch larger than the bus carries, every instance slot busy, a huge
//! error string. None of them may burn an attempt or dead-letter an event
//! whose handler is fine. Cluster mode on a nats-server with its default
//! 1 MB payload limit; failed on the code before its fix.

use std::collections::HashMap;
use std::time::Duration;
use tern_tests::{Cluster, ClusterOptions, Deliveries, guest};

/// Publishes with a plain NATS client (what any producer would do) and
/// waits for JetStream's acks.
fn publish_all(nats: &str, events: &[(String, Vec<u8>)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
        let mut acks = Vec::new();
        for (subject, data) in events {
            acks.push(js.publish(subject.clone(), data.clone().into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
}

#[test]
fn batches_past_the_bus_limit_and_a_busy_worker_never_burn_attempts() {
    let mut c = Cluster::start_opts(ClusterOptions {
        workers: 1,
        worker_args: &["--slots", "4"],
        nats_max_payload: "1MB",
        ..Default::default()
    });
    let plain = guest("plain_event");
    // One attempt each: any attempt burnt on the bus or on capacity is a
    // dead letter.
    c.tern_ok(&[
        "deploy",
        plain.to_str().unwrap(),
        "--name",
        "big",
        "--on-event",
        "big.>",
        "--max-attempts",
        "1",
    ]);

    // With the gateway down, the events wait in JetStream; when it comes
    // back it takes them all at once: 24 × 300 KiB is 7 MB, far past 1 MB
    // per message. Then 40 that nap 200 ms on a worker with 4 slots.
    c.gateway.kill();
    let mut events: Vec<(String, Vec<u8>)> =
        (0..24).map(|i| (format!("big.{i}.data"), vec![b'x'; 300 << 10])).collect();
    events.extend((0..40).map(|i| (format!("big.{i}.nap"), b"zz".to_vec())));
    publish_all(&c.nats.url(), &events);
    c.gateway.restart();
    // A new port: the cluster's client still names the old one.
    let gateway = tern_tests::Client { url: c.gateway.url.clone().unwrap(), token: c.token.clone() };
    let seen = Deliveries::follow(&gateway.url, &gateway.token, "big");

    let got = seen.wait(Duration::from_secs(60), |s| s.len() >= 64);
    let mut per_subject: HashMap<&str, Vec<u32>> = HashMap::new();
    for d in &got {
        per_subject.entry(d.subject.as_str()).or_default().push(d.attempt);
    }
    assert_eq!(per_subject.len(), 64, "every event handled: {} of 64", per_subject.len());
    for (subject, attempts) in &per_subject {
        assert_eq!(attempts[0], 1, "{subject} handled on its first attempt: {attempts:?}");
    }
    assert!(got.iter().filter(|d| d.subject.ends_with(".data")).all(|d| d.data == "<307200 bytes>"));
    let describe = gateway.describe("big");
    assert_eq!(describe["dead_letters"], 0, "{describe}");
}
