//! Event triggers in cluster mode: JetStream durable consumers behind
//! separate scheduler, worker and gateway processes on a real nats-server.
//! Events come from a plain NATS client as well as the API; two gateways
//! share each trigger; a worker killed with -9 mid-stream loses nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};
use tern_tests::{Cluster, Delivered, Deliveries, Role, eventually, guest, publish};

fn ids(seen: &[Delivered]) -> HashSet<String> {
    seen.iter().map(|d| d.id.clone()).collect()
}

fn deploy(c: &Cluster, name: &str, extra: &[&str]) {
    let path = guest("plain_event");
    let mut args = vec!["deploy", path.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    c.tern_ok(&args);
}

#[test]
fn cluster_triggers_deliver_from_any_nats_client_retry_dead_letter_and_fire_cron_once() {
    let c = Cluster::start(1);
    // A second gateway: both pull every trigger, and each event is
    // handled by one of them.
    let second =
        Role::start("gateway", &c.nats.url(), &c.dir.path().join("gateway2"), &["--listen", "127.0.0.1:0"]);
    deploy(&c, "orders", &["--on-event", "orders.>"]);
    let seen = Deliveries::follow(&c.url, &c.token, "orders");

    // Any NATS client publishing on the subject (JetStream acks it).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats_seq = rt.block_on(async {
        let client = async_nats::connect(c.nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.publish("orders.eu.created", "from a NATS client".into()).await.unwrap().await.unwrap().sequence
    });
    let api_id = publish(&c.url, &c.token, "orders.us.created", "from the API").unwrap();
    let got = seen.wait(Duration::from_secs(15), |s| s.len() >= 2);
    let nats = got.iter().find(|d| d.subject == "orders.eu.created").expect("the NATS client's event");
    assert_eq!((nats.data.as_str(), nats.attempt), ("from a NATS client", 1));
    assert_eq!(nats.id, format!("js-{nats_seq}"), "an id stable across redeliveries");
    assert!(got.iter().any(|d| d.id == api_id && d.data == "from the API"));

    // Both gateways pull; 200 events, each handled once.
    let token2 = std::fs::read_to_string(second.data_dir.join("admin-token")).unwrap().trim().to_string();
    let url2 = second.url.clone().unwrap();
    let mut published = HashSet::new();
    for i in 0..200 {
        let (url, token) =
            if i % 2 == 0 { (c.url.clone(), c.token.clone()) } else { (url2.clone(), token2.clone()) };
        published.insert(publish(&url, &token, "orders.bulk", &i.to_string()).unwrap());
    }
    let got = seen.wait(Duration::from_secs(20), |s| ids(s).is_superset(&published));
    assert!(
        ids(&got).is_superset(&published),
        "{} of 200 handled",
        ids(&got).intersection(&published).count()
    );
    std::thread::sleep(Duration::from_millis(500));
    let handled: Vec<_> = seen.all().into_iter().filter(|d| published.contains(&d.id)).collect();
    assert_eq!(handled.len(), 200, "each handled exactly once across two gateways");

    // Always failing: exactly max-attempts tries spaced by the backoff
    // (JetStream NakWithDelay), then one dead letter; replay delivers it.
    let fail = publish(&c.url, &c.token, "orders.x.fail", "bad").unwrap();
    deploy(&c, "strict", &["--on-event", "jobs.*", "--max-attempts", "3", "--backoff", "300ms"]);
    let strict = Deliveries::follow(&c.url, &c.token, "strict");
    let job = publish(&c.url, &c.token, "jobs.fail", "nope").unwrap();
    let got = strict.wait(Duration::from_secs(15), |s| s.len() >= 3);
    let tries: Vec<&Delivered> = got.iter().filter(|d| d.id == job).collect();
    assert_eq!(tries.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 2, 3], "{got:?}");
    let gaps: Vec<u64> = tries.windows(2).map(|w| w[1].ts_ms - w[0].ts_ms).collect();
    assert!(gaps[0] >= 280 && gaps[0] < 900, "backoff 300ms: gaps {gaps:?}");
    assert!(gaps[1] >= 580 && gaps[1] < 1500, "then 600ms: gaps {gaps:?}");
    let list = || -> Vec<serde_json::Value> {
        serde_json::from_str(&c.tern_ok(&["dlq", "list", "strict", "--json"])).unwrap()
    };
    assert!(eventually(Duration::from_secs(5), || list().len() == 1));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(strict.all().iter().filter(|d| d.id == job).count(), 3, "no fourth try");
    let letters = list();
    assert_eq!(
        (letters.len(), letters[0]["id"].as_str(), letters[0]["attempts"].as_u64()),
        (1, Some(job.as_str()), Some(3))
    );
    assert_eq!(letters[0]["error"], "always fails (attempt 3)");
    let d: serde_json::Value = serde_json::from_str(&c.tern_ok(&["describe", "strict", "--json"])).unwrap();
    assert_eq!(
        (d["dead_letters"].as_u64(), d["triggers"][0]["filter"].as_str()),
        (Some(1), Some("jobs.*")),
        "{d}"
    );
    assert!(!c.tern(&["dlq", "replay", "strict"]).status.success(), "it fails again");
    assert!(
        strict.wait(Duration::from_secs(5), |s| s.iter().any(|d| d.id == job && d.attempt == 4)).len() == 4
    );
    assert_eq!(list().len(), 1, "kept after a failed replay");
    // The default is 5 attempts.
    let got = seen.wait(Duration::from_secs(40), |s| s.iter().filter(|d| d.id == fail).count() >= 5);
    assert_eq!(got.iter().filter(|d| d.id == fail).map(|d| d.attempt).max(), Some(5));

    // Cron: once per tick, though two gateways pull the trigger.
    deploy(&c, "tick", &["--schedule", "*/2 * * * * *"]);
    let ticks = Deliveries::follow(&c.url, &c.token, "tick");
    let got = ticks.wait(Duration::from_secs(12), |s| s.len() >= 3);
    let mut seen_ticks: Vec<u64> = got
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(&d.data).unwrap()["tick"].as_u64().unwrap())
        .collect();
    assert!(seen_ticks.len() >= 3, "{got:?}");
    let n = seen_ticks.len();
    seen_ticks.dedup();
    assert_eq!(seen_ticks.len(), n, "a tick fired twice: {got:?}");
    assert!(seen_ticks.windows(2).all(|w| w[1] - w[0] == 2), "{seen_ticks:?}");
    drop(second);
}

#[test]
fn kill_9_of_a_worker_during_a_stream_of_10000_events_loses_none() {
    let c = Cluster::start(2);
    // On both workers from the start; a short timeout so deliveries to the
    // dead worker fail fast and are retried on the other.
    deploy(
        &c,
        "stream",
        &[
            "--on-event",
            "stream.*",
            "--min-scale",
            "2",
            "--timeout",
            "1s",
            "--backoff",
            "200ms",
            "--max-attempts",
            "10",
        ],
    );
    assert!(eventually(Duration::from_secs(10), || c.replicas("stream").len() == 2), "{:?}", c.status());
    let seen = Deliveries::follow(&c.url, &c.token, "stream");
    let n = 10_000;
    let nats = c.nats.url();
    let started = Instant::now();
    // A plain NATS client publishes, waiting for each JetStream ack in
    // batches: every acked event must be handled.
    let publisher = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
            let mut acked = Vec::new();
            for batch in 0..(n / 500) {
                let mut acks = Vec::new();
                for i in 0..500 {
                    let subject = if i % 10 == 0 { "stream.nap" } else { "stream.item" };
                    acks.push(js.publish(subject, format!("{batch}-{i}").into()).await.unwrap());
                }
                for a in acks {
                    acked.push(a.await.unwrap().sequence);
                }
            }
            acked
        })
    });
    // Kill a worker while the stream is being handled.
    assert!(eventually(Duration::from_secs(30), || seen.all().len() > 1000), "the stream did not start");
    let mut c = c;
    c.workers[0].kill();
    let killed_at = seen.all().len();
    let acked: HashSet<String> = publisher.join().unwrap().into_iter().map(|s| format!("js-{s}")).collect();
    assert_eq!(acked.len(), n);
    let got = seen.wait(Duration::from_secs(60), |s| ids(s).is_superset(&acked));
    let handled = ids(&got);
    let lost: Vec<_> = acked.difference(&handled).take(5).collect();
    if !lost.is_empty() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(c.nats.url()).await.unwrap());
            let mut stream = js.get_stream("TERN_EVENTS").await.unwrap();
            eprintln!("stream: {:?}", stream.info().await.unwrap().state);
            let mut consumers = stream.consumers();
            use futures::StreamExt;
            while let Some(Ok(info)) = consumers.next().await {
                eprintln!(
                    "consumer {}: pending {} ack_pending {} redelivered {} delivered {:?} ack_floor {:?}",
                    info.name,
                    info.num_pending,
                    info.num_ack_pending,
                    info.num_redelivered,
                    info.delivered,
                    info.ack_floor
                );
            }
        });
        eprintln!(
            "killed at {killed_at}; gateway log:\n{}",
            c.gateway.log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        for w in &c.workers {
            eprintln!(
                "worker log tail:\n{}",
                w.log_text().lines().rev().take(10).collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert!(lost.is_empty(), "{} of {n} events lost, e.g. {lost:?}", acked.difference(&handled).count());
    assert!(killed_at < n, "the worker died after the stream was handled; the test proves nothing");
    eprintln!(
        "10,000 events, worker killed after {killed_at} deliveries: all handled in {:?}, {} duplicates (at least once)",
        started.elapsed(),
        got.len() - handled.len()
    );
}
